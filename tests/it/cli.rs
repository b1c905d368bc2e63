//! The operator commands, run as the real binary.

use std::process::{Command, Output};
use std::time::Duration;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(60);

fn device_logs<A: AsRef<std::ffi::OsStr>>(
    world: &World,
    args: &[A],
    extra_env: &[(&str, &str)],
) -> Output {
    Command::new(env!("CARGO_BIN_EXE_device-logs"))
        .args(args)
        .arg("--config")
        .arg(world.config_path())
        .envs(world.vars.iter().cloned())
        .envs(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .output()
        .unwrap()
}

/// A CLI command for one device: `COMMAND --environment E --user U --device D`.
fn device_command(command: &str, d: &device_logs::domain::DeviceRef) -> Vec<String> {
    let ids = [
        ("--environment", d.environment),
        ("--user", d.user),
        ("--device", d.device),
    ];
    std::iter::once(command.to_string())
        .chain(
            ids.iter()
                .flat_map(|(flag, id)| [flag.to_string(), id.to_string()]),
        )
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_prints_redacted_settings_and_names_a_bad_key() {
    let world = World::new("24h").await;
    let ok = device_logs(
        &world,
        &["check-config"],
        &[
            ("DEVICE_LOGS__REDIS__PASSWORD", "redis-secret-pw"),
            ("DEVICE_LOGS__KAFKA__SASL__PASSWORD", "sasl-secret-pw"),
        ],
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let printed = text(&ok.stdout);
    assert!(
        printed.contains(&format!("requests = \"{}\"", world.topic("requests"))),
        "{printed}"
    );
    assert!(
        !printed.contains("redis-secret-pw") && !printed.contains("sasl-secret-pw"),
        "{printed}"
    );
    assert!(printed.contains("<redacted>"));

    let bad = device_logs(
        &world,
        &["check-config"],
        &[("DEVICE_LOGS__EXPIRY__SWEEP_INTERVAL", "often")],
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("sweep_interval"),
        "{}",
        text(&bad.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_is_idempotent() {
    let world = World::new("24h").await; // created the four topics already
    let again = device_logs(&world, &["create-topics"], &[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let out = text(&again.stdout);
    for name in ["requests", "uploads", "status", "dlq"] {
        assert!(
            out.contains(&format!("{}: exists", world.topic(name))),
            "{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_upload_and_status_commands_drive_the_flow_through_the_worker() {
    let world = World::new("24h").await;
    let worker = world.start_in_process();
    let status = world.reader("status");
    let d = device();
    let args = |command: &str| device_command(command, &d);

    let missing = device_logs(&world, &args("status"), &[]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("not found"),
        "{}",
        text(&missing.stderr)
    );

    let sent = device_logs(&world, &args("request"), &[]);
    assert!(sent.status.success(), "{}", text(&sent.stderr));
    status
        .wait_for(1, WAIT, |m| m.body["status"] == "PENDING")
        .await;
    let pending: serde_json::Value =
        serde_json::from_slice(&device_logs(&world, &args("status"), &[]).stdout).unwrap();
    assert_eq!(pending["status"], "PENDING");
    assert!(
        pending["expiresAt"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z') && s.len() == 24),
        "{pending}"
    );
    assert!(pending["_links"]["self"]["href"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/devices/{}/logs", d.device)));

    let uploaded = device_logs(&world, &args("upload"), &[]);
    assert!(uploaded.status.success(), "{}", text(&uploaded.stderr));
    status
        .wait_for(1, WAIT, |m| m.body["status"] == "RECEIVED")
        .await;
    let received: serde_json::Value =
        serde_json::from_slice(&device_logs(&world, &args("status"), &[]).stdout).unwrap();
    assert_eq!(received["status"], "RECEIVED");
    assert_eq!(received["expiresAt"], serde_json::Value::Null);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_authenticates_to_redis_with_acl_credentials_and_never_logs_them() {
    let world = World::new("24h").await;
    let user = format!("it-{}", world.suffix);
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let mut conn = world.redis().await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(format!(">{password}"))
        .arg("~*")
        .arg("+@all")
        .query_async(&mut conn)
        .await
        .unwrap();
    let status = world.reader("status");
    let producer = world.producer();
    let mut worker = world.spawn_child(&[
        ("DEVICE_LOGS__REDIS__USERNAME", user.as_str()),
        ("DEVICE_LOGS__REDIS__PASSWORD", password.as_str()),
        ("DEVICE_LOGS__KAFKA__SASL__PASSWORD", "sasl-never-logged"),
        ("RUST_LOG", "debug"),
    ]);
    let d = device();
    world
        .send(
            &producer,
            "requests",
            &d,
            &request_json(uuid::Uuid::new_v4(), &d, "MOBILE", chrono::Utc::now()),
        )
        .await;
    status.wait_for(1, WAIT, |_| true).await;
    terminate(&worker);
    assert!(worker.wait().unwrap().success());
    let logs = world.child_logs();
    assert!(logs.contains("offsets committed"), "worker ran");
    assert!(
        !logs.contains(&password),
        "the Redis password leaked into the logs"
    );
    assert!(
        !logs.contains("sasl-never-logged"),
        "the SASL password leaked into the logs"
    );
    let _: () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reaches_redis_over_tls_with_a_trusted_ca_only() {
    let world = World::new("24h").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let port = free_port();
    let _redis = KillOnDrop(
        Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--tls-auth-clients",
                "no",
            ])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
        None,
    );
    wait_until(WAIT, "tls redis", || async {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    })
    .await;
    let d = device();
    let args = device_command("status", &d);
    let url = format!("rediss://127.0.0.1:{port}");
    let cert_file = cert.to_string_lossy().to_string();
    // Trusting the server's certificate: the TLS connection works and the
    // answer is the store's ("not found", exit 1).
    let trusted = device_logs(
        &world,
        &args,
        &[
            ("DEVICE_LOGS__REDIS__URL", url.as_str()),
            ("SSL_CERT_FILE", cert_file.as_str()),
        ],
    );
    assert_eq!(trusted.status.code(), Some(1), "{}", text(&trusted.stderr));
    assert!(
        text(&trusted.stderr).contains("not found"),
        "{}",
        text(&trusted.stderr)
    );
    // Without the CA the certificate is refused: TLS verification is real.
    let untrusted = device_logs(&world, &args, &[("DEVICE_LOGS__REDIS__URL", url.as_str())]);
    assert!(!untrusted.status.success());
    assert!(
        !text(&untrusted.stderr).contains("not found"),
        "{}",
        text(&untrusted.stderr)
    );
}
