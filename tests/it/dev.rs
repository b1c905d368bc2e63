//! `device-logs dev` as a newcomer runs it: the binary as a child, spoken to
//! over HTTP with the reference cURL request, the CLI `upload`, and a second
//! device left to expire; then Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use device_logs::dev::{DEVICES, ENVIRONMENT, USER};
use serde_json::Value;

use crate::api_support::*;
use crate::helpers::*;

struct Dev {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Dev {
    fn start(port: u16, ttl: &str) -> Dev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_device-logs"))
            .args([
                "dev",
                "--ttl",
                ttl,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Dev { child, lines }
    }

    fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The value after `prefix` on the first line that starts with it.
    fn find(&self, prefix: &str) -> Option<String> {
        self.output()
            .iter()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

async fn get(url: &str, token: &str) -> (u16, Value) {
    call("GET", url, Some(token), None, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_runs_the_documented_request_end_to_end() {
    let port = free_port();
    let mut dev = Dev::start(port, "8s");
    wait_until(Duration::from_secs(60), "dev to be ready", || {
        let ready = dev.find("device-logs dev: ready").is_some();
        async move { ready.then_some(()) }
    })
    .await;
    let token = dev
        .find("export TOKEN=")
        .unwrap()
        .trim_matches('\'')
        .to_string();
    let brokers = dev.find("broker:").unwrap();
    let api = format!("http://127.0.0.1:{port}/v1");
    let contract = Contract::load();
    let (mobile, second, sms) = (DEVICES[0].0, DEVICES[1].0, DEVICES[2].0);
    let url =
        |d: uuid::Uuid| format!("{api}/environments/{ENVIRONMENT}/users/{USER}/devices/{d}/logs");

    let (status, body) = reference_curl(&api, ENVIRONMENT, USER, mobile, &token);
    contract.check(LOGS_ROUTE, "PUT", status, &body);
    assert_eq!(status, 200, "{body}");
    let expires = assert_record(&body, &api, ENVIRONMENT, USER, mobile, "PENDING");
    let pending = wait_until(Duration::from_secs(20), "PENDING stored", || async {
        let got = get(&url(mobile), &token).await;
        (got.0 == 200).then_some(got)
    })
    .await;
    assert_eq!(
        assert_record(&pending.1, &api, ENVIRONMENT, USER, mobile, "PENDING"),
        expires
    );

    // The second device is asked and left alone: it expires after the ttl.
    let (status, body) = reference_curl(&api, ENVIRONMENT, USER, second, &token);
    assert_eq!(status, 200, "{body}");

    let upload = Command::new(env!("CARGO_BIN_EXE_device-logs"))
        .args([
            "upload",
            "--environment",
            &ENVIRONMENT.to_string(),
            "--user",
            &USER.to_string(),
        ])
        .args(["--device", &mobile.to_string()])
        .env("DEVICE_LOGS__KAFKA__BROKERS", &brokers)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        upload.status.success(),
        "{}",
        String::from_utf8_lossy(&upload.stderr)
    );
    let received = wait_until(Duration::from_secs(20), "RECEIVED", || async {
        let got = get(&url(mobile), &token).await;
        (got.1["status"] == "RECEIVED").then_some(got)
    })
    .await;
    contract.expect(&received, "GET", 200, None);
    assert_eq!(
        assert_record(&received.1, &api, ENVIRONMENT, USER, mobile, "RECEIVED"),
        Value::Null
    );

    let expired = wait_until(Duration::from_secs(30), "EXPIRED", || async {
        let got = get(&url(second), &token).await;
        (got.1["status"] == "EXPIRED").then_some(got)
    })
    .await;
    contract.expect(&expired, "GET", 200, None);
    assert_eq!(
        assert_record(&expired.1, &api, ENVIRONMENT, USER, second, "EXPIRED"),
        Value::Null
    );

    common_error_cases(&api, &token, ENVIRONMENT, USER, sms).await;

    // Each status event is printed as it is published.
    wait_until(
        Duration::from_secs(10),
        "three status events printed",
        || {
            let events: Vec<String> = dev
                .output()
                .into_iter()
                .filter(|l| l.starts_with("status event: "))
                .collect();
            let all = ["\"PENDING\"", "\"RECEIVED\"", "\"EXPIRED\""]
                .iter()
                .all(|s| {
                    events
                        .iter()
                        .any(|e| e.contains(&format!("\"status\":{s}")))
                });
            async move { all.then_some(()) }
        },
    )
    .await;

    // Ctrl-C stops it cleanly.
    let pid = dev.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let exited = wait_until(Duration::from_secs(20), "dev to exit", || {
        let status = dev.child.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(exited.success(), "dev exited with {exited}");
    assert!(
        dev.find("device-logs dev: stopped").is_some(),
        "{:?}",
        dev.output()
    );
}
