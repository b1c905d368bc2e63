//! Test world: real Redis and broker from scripts/test.sh, fresh topics, key
//! prefix and consumer group per test; the worker in-process or as a child.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use device_logs::config::Settings;
use device_logs::domain::DeviceRef;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub const PARTITIONS: i32 = 3;

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the suite with scripts/test.sh, which starts Redis and the broker")
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Polls `check` until it returns Some or `timeout` passes.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn device() -> DeviceRef {
    DeviceRef {
        environment: Uuid::new_v4(),
        user: Uuid::new_v4(),
        device: Uuid::new_v4(),
    }
}

pub fn request_json(id: Uuid, d: &DeviceRef, device_type: &str, at: DateTime<Utc>) -> Value {
    json!({
        "id": id, "environment": {"id": d.environment}, "user": {"id": d.user},
        "device": {"id": d.device, "type": device_type}, "status": "PENDING",
        "requestedAt": device_logs::domain::timestamp(at),
    })
}

pub fn upload_json(id: Uuid, d: &DeviceRef, request_id: Option<Uuid>, at: DateTime<Utc>) -> Value {
    let mut v = json!({
        "id": id, "environment": {"id": d.environment}, "user": {"id": d.user},
        "device": {"id": d.device}, "uploadedAt": device_logs::domain::timestamp(at),
    });
    if let Some(r) = request_id {
        v["requestId"] = json!(r);
    }
    v
}

/// The id of an event, or the error id of a dead letter.
pub fn message_id(body: &Value) -> String {
    body.get("id").unwrap_or(&body["error"]["id"]).to_string()
}

/// A message read back from an output topic.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Value,
    pub headers: HashMap<String, String>,
    pub key: Option<String>,
    pub partition: i32,
    pub offset: i64,
}

/// Reads a topic from the beginning into memory, in the background.
/// Every message read is checked against its schema (and, for status
/// events, its CloudEvents headers) whenever a test looks at it, so every
/// message the worker publishes in the integration tests is validated.
pub struct TopicReader {
    seen: Arc<Mutex<Vec<Received>>>,
    /// How many of `seen` have been checked.
    checked: Mutex<usize>,
    kind: device_logs::payload::Kind,
    task: JoinHandle<()>,
}

impl TopicReader {
    pub fn all(&self) -> Vec<Received> {
        let all = self.seen.lock().unwrap().clone();
        // Each message is checked once, the first time a test looks at it.
        let mut checked = self.checked.lock().unwrap();
        for message in &all[*checked..] {
            let violations = self.kind.violations(&message.body);
            assert!(
                violations.is_empty(),
                "published message violates its schema: {}: {violations:?}",
                message.body
            );
            if self.kind == device_logs::payload::Kind::StatusChanged {
                assert_valid_event(message);
            }
        }
        *checked = all.len();
        all
    }

    /// Messages with distinct ids (a re-published event carries the id of
    /// its first publication; the contract allows it), in topic order.
    pub fn distinct(&self) -> Vec<Received> {
        let mut ids = std::collections::HashSet::new();
        self.all()
            .into_iter()
            .filter(|m| ids.insert(message_id(&m.body)))
            .collect()
    }

    /// Waits until at least `n` messages match `filter`, returns those.
    pub async fn wait_for(
        &self,
        n: usize,
        timeout: Duration,
        filter: impl Fn(&Received) -> bool,
    ) -> Vec<Received> {
        wait_until(timeout, &format!("{n} messages"), || {
            let matching: Vec<Received> =
                self.distinct().into_iter().filter(|m| filter(m)).collect();
            async move { (matching.len() >= n).then_some(matching) }
        })
        .await
    }

    /// Messages about one device, in topic order.
    pub fn for_device(&self, d: &DeviceRef) -> Vec<Received> {
        let id = d.device.to_string();
        self.all()
            .into_iter()
            .filter(|m| m.key.as_deref() == Some(id.as_str()))
            .collect()
    }
}

impl Drop for TopicReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct World {
    pub redis_url: String,
    pub brokers: String,
    pub suffix: String,
    pub config_dir: tempfile::TempDir,
    pub vars: Vec<(String, String)>,
}

impl World {
    /// A world with its own topics, group and key prefix; `ttl` as in config.
    pub async fn new(ttl: &str) -> World {
        let redis_url = required("DEVICE_LOGS_TEST_REDIS");
        let brokers = required("DEVICE_LOGS_TEST_BROKERS");
        let suffix = Uuid::new_v4().simple().to_string()[..10].to_string();
        let config_dir = tempfile::tempdir().unwrap();
        // Group timeouts: short enough that a killed worker's partitions move on
        // within seconds, long enough for the test broker's coordinator under load.
        std::fs::write(
            config_dir.path().join("test.toml"),
            "[kafka.properties]\n\"session.timeout.ms\" = \"15000\"\n\"heartbeat.interval.ms\" = \"3000\"\n\"topic.metadata.refresh.interval.ms\" = \"5000\"\n",
        )
        .unwrap();
        let vars = [
            ("KAFKA__BROKERS", brokers.clone()),
            ("KAFKA__GROUP_ID", format!("it-{suffix}")),
            ("KAFKA__PARTITIONS", PARTITIONS.to_string()),
            ("KAFKA__TOPICS__REQUESTS", format!("it-{suffix}.requests")),
            ("KAFKA__TOPICS__UPLOADS", format!("it-{suffix}.uploads")),
            ("KAFKA__TOPICS__STATUS", format!("it-{suffix}.status")),
            ("KAFKA__TOPICS__DEAD_LETTERS", format!("it-{suffix}.dlq")),
            ("REDIS__URL", redis_url.clone()),
            ("REDIS__KEY_PREFIX", format!("it-{suffix}")),
            ("LOGS__TTL", ttl.to_string()),
            (
                "LOGS__LINKS_BASE_URL",
                "https://api.test.example/v1".to_string(),
            ),
            ("EXPIRY__SWEEP_INTERVAL", "200ms".to_string()),
            ("LOG__FORMAT", "json".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("DEVICE_LOGS__{k}"), v))
        .collect();
        let world = World {
            redis_url,
            brokers,
            suffix,
            config_dir,
            vars,
        };
        let created = device_logs::kafka::create_topics(&world.settings().kafka)
            .await
            .unwrap();
        assert!(
            created.iter().all(|(_, new)| *new),
            "fresh topics expected: {created:?}"
        );
        world
    }

    /// Worker logs outlive the test (under the harness's work directory) so
    /// a failure can be read after the run.
    pub fn log_dir(&self) -> PathBuf {
        let base = std::env::var("DEVICE_LOGS_TEST_WORKDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| std::env::temp_dir());
        let dir = base.join("logs").join(&self.suffix);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn config_path(&self) -> PathBuf {
        self.config_dir.path().join("test.toml")
    }

    /// Sets a librdkafka property of later workers (the config file's
    /// `[kafka.properties]`), e.g. a longer session timeout under load.
    pub fn set_kafka_property(&self, key: &str, value: &str) {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).unwrap();
        let line_start = format!("\"{key}\" = ");
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with(&line_start))
            .map(str::to_owned)
            .collect();
        lines.push(format!("{line_start}\"{value}\""));
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }

    /// Overrides one setting (e.g. `("OUTBOX__LEASE", "30s")`) for later workers.
    pub fn set(&mut self, key: &str, value: &str) {
        let key = format!("DEVICE_LOGS__{key}");
        self.vars.retain(|(k, _)| *k != key);
        self.vars.push((key, value.to_string()));
    }

    pub fn settings(&self) -> Settings {
        Settings::load_from(Some(&self.config_path()), self.vars.clone()).unwrap()
    }

    pub fn topic(&self, name: &str) -> String {
        format!("it-{}.{name}", self.suffix)
    }

    /// Starts the worker in this process; stop it with [`InProcess::stop`].
    pub fn start_in_process(&self) -> InProcess {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut settings = self.settings();
        settings.log.format = device_logs::config::LogFormat::Text;
        device_logs::telemetry::init(&settings.log);
        let port = free_port();
        settings.http.listen = ([127, 0, 0, 1], port).into();
        let handle = tokio::spawn(async move {
            device_logs::worker::run(settings, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        InProcess {
            port,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// Starts the worker binary as a child process.
    pub fn spawn_child(&self, extra_env: &[(&str, &str)]) -> KillOnDrop {
        let log_path = self
            .log_dir()
            .join(format!("worker-{}.log", Uuid::new_v4()));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_device-logs"));
        cmd.arg("run")
            .arg("--config")
            .arg(self.config_path())
            .envs(self.vars.iter().cloned())
            .env(
                "DEVICE_LOGS__HTTP__LISTEN",
                format!("127.0.0.1:{}", free_port()),
            );
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        KillOnDrop(cmd.spawn().unwrap(), Some(log_path))
    }

    /// The stderr logs of every child started so far.
    pub fn child_logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.log_dir()).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with("worker-") {
                out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        out
    }

    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "10")
            .create()
            .unwrap()
    }

    /// Produces raw bytes keyed by `key` and waits for the broker.
    pub async fn send_raw(
        &self,
        producer: &FutureProducer,
        topic: &str,
        key: &str,
        payload: &[u8],
    ) {
        let topic = self.topic(topic);
        producer
            .send(
                FutureRecord::to(&topic).key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    /// Sends a valid LogRequest for a MOBILE device, stamped now.
    pub async fn send_request(&self, producer: &FutureProducer, d: &DeviceRef, id: Uuid) {
        self.send(
            producer,
            "requests",
            d,
            &request_json(id, d, "MOBILE", Utc::now()),
        )
        .await;
    }

    pub async fn send(&self, producer: &FutureProducer, topic: &str, d: &DeviceRef, body: &Value) {
        self.send_raw(
            producer,
            topic,
            &d.device.to_string(),
            body.to_string().as_bytes(),
        )
        .await;
    }

    /// Reads `name` ("status" or "dlq") from the beginning.
    pub fn reader(&self, name: &str) -> TopicReader {
        let topic = self.topic(name);
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("reader-{}", Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok(m) = consumer.recv().await else {
                    continue;
                };
                let mut headers = HashMap::new();
                if let Some(h) = m.headers() {
                    for header in h.iter() {
                        let value = header
                            .value
                            .map(|v| String::from_utf8_lossy(v).to_string())
                            .unwrap_or_default();
                        headers.insert(header.key.to_string(), value);
                    }
                }
                let body =
                    serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or(Value::Null);
                let key = m.key().map(|k| String::from_utf8_lossy(k).to_string());
                sink.lock().unwrap().push(Received {
                    body,
                    headers,
                    key,
                    partition: m.partition(),
                    offset: m.offset(),
                });
            }
        });
        let kind = if name == "status" {
            device_logs::payload::Kind::StatusChanged
        } else {
            device_logs::payload::Kind::DeadLetter
        };
        TopicReader {
            seen,
            checked: Mutex::new(0),
            kind,
            task,
        }
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    pub fn keys(&self) -> device_logs::store::Keys {
        let s = self.settings();
        device_logs::store::Keys::new(&s.redis.key_prefix, s.redis.shards)
    }

    /// The stored record JSON of a device (`None` if absent).
    pub async fn stored(&self, d: &DeviceRef) -> Option<Value> {
        let mut conn = self.redis().await;
        let json: Option<String> = redis::cmd("HGET")
            .arg(self.keys().record(d))
            .arg("json")
            .query_async(&mut conn)
            .await
            .unwrap();
        json.map(|j| serde_json::from_str(&j).unwrap())
    }
}

pub struct InProcess {
    /// Port of its /metrics, /livez, /readyz.
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl InProcess {
    /// Stops the worker the way SIGTERM does and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("worker stops in time")
                .unwrap();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

/// Asserts `event` is a StatusChanged valid against its schema, with its headers.
pub fn assert_valid_event(event: &Received) {
    let violations = device_logs::payload::Kind::StatusChanged.violations(&event.body);
    assert!(
        violations.is_empty(),
        "invalid event {}: {violations:?}",
        event.body
    );
    let id = event.body["id"].as_str().unwrap();
    assert_eq!(event.headers.get("ce_id").map(String::as_str), Some(id));
    assert_eq!(
        event.headers.get("ce_specversion").map(String::as_str),
        Some("1.0")
    );
    assert_eq!(
        event.headers.get("ce_type").map(String::as_str),
        Some(device_logs::payload::STATUS_CHANGED_TYPE)
    );
    assert_eq!(
        event.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert!(event.headers.contains_key("ce_source") && event.headers.contains_key("ce_time"));
    assert!(event
        .headers
        .get("ce_subject")
        .is_some_and(|s| s.ends_with(event.body["device"]["id"].as_str().unwrap())));
    assert_eq!(event.key.as_deref(), event.body["device"]["id"].as_str());
}

pub fn statuses(events: &[Received]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.body["status"].as_str().unwrap_or_default().to_string())
        .collect()
}

pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}

/// A child process that is killed when the test lets go of it, so a failed
/// test leaves no worker or server behind to load the machine.
pub struct KillOnDrop(pub Child, pub Option<PathBuf>);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl KillOnDrop {
    /// This worker's log so far.
    pub fn logs(&self) -> String {
        self.1
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// The partitions of this worker's latest assignment.
    pub fn assignment(&self) -> Vec<String> {
        let logs = self.logs();
        let latest = logs.lines().rfind(|l| l.contains("partitions assigned"));
        latest
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
            .and_then(|v| {
                v["fields"]["partitions"].as_str().map(|p| {
                    p.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
            })
            .unwrap_or_default()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill(&mut self.0);
    }
}
