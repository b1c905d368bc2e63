//! Settings: a TOML file (default `config/default.toml`, embedded in the binary)
//! layered under `DEVICE_LOGS__SECTION__KEY` environment variables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod api;
pub use api::{parse_device_key, ApiSettings, AuthSettings, DeviceSettings};

/// The configuration file shipped with the binary; every key is documented there.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Shown instead of a secret wherever settings are printed or logged.
const REDACTED: &str = "<redacted>";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid setting `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub redis: RedisSettings,
    pub logs: LogsSettings,
    pub input: InputSettings,
    pub expiry: ExpirySettings,
    pub outbox: OutboxSettings,
    pub http: HttpSettings,
    pub log: LogSettings,
    pub shutdown: ShutdownSettings,
    pub api: ApiSettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group_id: String,
    pub client_id: String,
    pub security_protocol: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub batch_size: usize,
    #[serde(with = "humantime_serde")]
    pub batch_linger: Duration,
    pub sasl: SaslSettings,
    pub topics: Topics,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SaslSettings {
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Topics {
    pub requests: String,
    pub uploads: String,
    pub status: String,
    pub dead_letters: String,
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: String,
    pub username: String,
    pub password: String,
    pub key_prefix: String,
    pub shards: u16,
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogsSettings {
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    pub links_base_url: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSettings {
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpirySettings {
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    pub batch_size: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSettings {
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// Shown for a secret in Debug output: whether it is set, never its value.
pub(crate) fn secret_debug(value: &str) -> &'static str {
    if value.is_empty() {
        ""
    } else {
        REDACTED
    }
}

// Debug by hand for the structs that hold secrets, so `{:?}` of the settings
// (a panic message, a stray log line) cannot print them.
impl std::fmt::Debug for SaslSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslSettings")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &secret_debug(&self.password))
            .finish()
    }
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = match url::Url::parse(&self.url) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some(REDACTED));
                url.to_string()
            }
            _ => self.url.clone(),
        };
        f.debug_struct("RedisSettings")
            .field("url", &url)
            .field("username", &self.username)
            .field("password", &secret_debug(&self.password))
            .field("key_prefix", &self.key_prefix)
            .field("shards", &self.shards)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

impl Settings {
    /// Loads the embedded defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given explicitly (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("DEVICE_LOGS__"))
            .collect();
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("DEVICE_LOGS")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(env)),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                message: message.into(),
            }
        }
        let k = &self.kafka;
        if let Some(owned) = k
            .properties
            .keys()
            .find(|p| OWNED_PROPERTIES.contains(&p.to_ascii_lowercase().as_str()))
        {
            return Err(invalid(
                "kafka.properties",
                format!("`{owned}` is set by the worker and cannot be overridden"),
            ));
        }
        for (key, duration) in [
            ("kafka.batch_linger", k.batch_linger),
            ("redis.command_timeout", self.redis.command_timeout),
            ("logs.ttl", self.logs.ttl),
            ("logs.retention", self.logs.retention),
            ("logs.max_clock_skew", self.logs.max_clock_skew),
            ("expiry.sweep_interval", self.expiry.sweep_interval),
            ("outbox.lease", self.outbox.lease),
            ("shutdown.timeout", self.shutdown.timeout),
        ] {
            if duration > MAX_DURATION {
                return Err(invalid(key, "must be at most 3650d"));
            }
        }
        if self.logs.retention < Duration::from_secs(1) {
            return Err(invalid(
                "logs.retention",
                "must be at least 1s (it is also the dedup window)",
            ));
        }
        if k.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must not be empty"));
        }
        if k.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        let protocols = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
        if !protocols.contains(&k.security_protocol.to_ascii_lowercase().as_str()) {
            return Err(invalid(
                "kafka.security_protocol",
                format!("must be one of {protocols:?}"),
            ));
        }
        if k.partitions < 1 {
            return Err(invalid("kafka.partitions", "must be at least 1"));
        }
        if k.replication_factor < 1 {
            return Err(invalid("kafka.replication_factor", "must be at least 1"));
        }
        if k.batch_size == 0 {
            return Err(invalid("kafka.batch_size", "must be at least 1"));
        }
        let mechanisms = ["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];
        if !mechanisms.contains(&k.sasl.mechanism.as_str()) {
            return Err(invalid(
                "kafka.sasl.mechanism",
                format!("must be one of {mechanisms:?}"),
            ));
        }
        for (key, topic) in [
            ("kafka.topics.requests", &k.topics.requests),
            ("kafka.topics.uploads", &k.topics.uploads),
            ("kafka.topics.status", &k.topics.status),
            ("kafka.topics.dead_letters", &k.topics.dead_letters),
        ] {
            let legal = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
            if topic.is_empty() || topic.len() > 249 || !topic.chars().all(legal) {
                return Err(invalid(key, "must be a legal Kafka topic name"));
            }
        }
        match url::Url::parse(&self.redis.url) {
            Ok(u) if u.scheme() == "redis" || u.scheme() == "rediss" => {}
            _ => return Err(invalid("redis.url", "must be a redis:// or rediss:// URL")),
        }
        if self.redis.shards == 0 {
            return Err(invalid("redis.shards", "must be at least 1"));
        }
        let prefix_ok = |c: char| c.is_ascii_alphanumeric() || "._-:".contains(c);
        if self.redis.key_prefix.is_empty() || !self.redis.key_prefix.chars().all(prefix_ok) {
            return Err(invalid(
                "redis.key_prefix",
                "must be non-empty [A-Za-z0-9._:-]",
            ));
        }
        if self.redis.command_timeout.is_zero() {
            return Err(invalid("redis.command_timeout", "must be positive"));
        }
        if self.logs.ttl.is_zero() {
            return Err(invalid("logs.ttl", "must be positive"));
        }
        if self.logs.retention.is_zero() {
            return Err(invalid("logs.retention", "must be positive"));
        }
        match url::Url::parse(&self.logs.links_base_url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => return Err(invalid("logs.links_base_url", "must be an http(s) URL")),
        }
        if self.input.max_bytes == 0 {
            return Err(invalid("input.max_bytes", "must be positive"));
        }
        if self.expiry.sweep_interval.is_zero() {
            return Err(invalid("expiry.sweep_interval", "must be positive"));
        }
        if self.expiry.batch_size == 0 {
            return Err(invalid("expiry.batch_size", "must be at least 1"));
        }
        if self.outbox.lease < Duration::from_millis(100) {
            return Err(invalid("outbox.lease", "must be at least 100ms"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid("log.level", "is not a valid tracing filter"));
        }
        if self.shutdown.timeout.is_zero() {
            return Err(invalid("shutdown.timeout", "must be positive"));
        }
        self.api.validate()
    }

    /// The settings with every secret replaced, for printing and logging.
    pub fn redacted(&self) -> Settings {
        let mut s = self.clone();
        let hide = |v: &mut String| {
            if !v.is_empty() {
                *v = REDACTED.to_string();
            }
        };
        hide(&mut s.kafka.sasl.password);
        hide(&mut s.redis.password);
        hide(&mut s.api.auth.hs256_secret);
        for (key, value) in s.kafka.properties.iter_mut() {
            if is_secret_property(key) {
                hide(value);
            }
        }
        if let Ok(mut url) = url::Url::parse(&s.redis.url) {
            if url.password().is_some() && url.set_password(Some(REDACTED)).is_ok() {
                s.redis.url = url.to_string();
            }
        }
        s
    }

    /// The effective settings as TOML, secrets redacted (`check-config`).
    pub fn to_redacted_toml(&self) -> String {
        toml_string(&self.redacted())
    }
}

fn toml_string(settings: &Settings) -> String {
    // Durations print as humantime strings through their serde adapter, so the
    // output is itself a valid configuration file.
    let value = serde_json::to_value(settings).unwrap_or_default();
    let mut out = String::new();
    write_toml_table(&mut out, "", &value);
    out
}

/// Minimal TOML writer for the settings tree (tables of scalars and tables).
fn write_toml_table(out: &mut String, path: &str, value: &serde_json::Value) {
    let Some(map) = value.as_object() else { return };
    if !path.is_empty() {
        out.push_str(&format!("\n[{path}]\n"));
    }
    for (key, v) in map {
        if !v.is_object() {
            out.push_str(&format!("{} = {}\n", toml_key(key), v));
        }
    }
    for (key, v) in map {
        if v.is_object() {
            let child = if path.is_empty() {
                toml_key(key)
            } else {
                format!("{path}.{}", toml_key(key))
            };
            write_toml_table(out, &child, v);
        }
    }
}

fn toml_key(key: &str) -> String {
    if key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        format!("{:?}", key)
    }
}

/// librdkafka properties that carry secrets.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("passphrase")
        || key.contains("secret")
        || key.ends_with(".key.pem")
        || key.contains("token")
        || key == "sasl.oauthbearer.config"
}

/// librdkafka properties the worker's guarantees rest on: overriding them
/// through `kafka.properties` would silently drop at-least-once delivery,
/// deduplicated producing or the start-from-earliest rule.
const OWNED_PROPERTIES: [&str; 7] = [
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "group.id",
];

/// Longest duration any setting accepts (ten years): beyond it, timestamp
/// arithmetic would overflow.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_load_and_validate() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.kafka.topics.requests, "device-logs.requests.v1");
        assert_eq!(s.logs.ttl, Duration::from_secs(24 * 3600));
        assert_eq!(s.logs.retention, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(s.expiry.sweep_interval, Duration::from_secs(1));
        assert_eq!(s.shutdown.timeout, Duration::from_secs(10));
        assert_eq!(s.input.max_bytes, 64 * 1024);
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let s = Settings::load_from(
            None,
            env(&[
                ("DEVICE_LOGS__KAFKA__BROKERS", "10.0.0.1:9092"),
                ("DEVICE_LOGS__LOGS__TTL", "2s"),
                ("DEVICE_LOGS__KAFKA__TOPICS__STATUS", "custom.status"),
                ("DEVICE_LOGS__REDIS__PASSWORD", "hunter2"),
            ]),
        )
        .unwrap();
        assert_eq!(s.kafka.brokers, "10.0.0.1:9092");
        assert_eq!(s.logs.ttl, Duration::from_secs(2));
        assert_eq!(s.kafka.topics.status, "custom.status");
        assert_eq!(s.redis.password, "hunter2");
    }

    #[test]
    fn file_layer_keeps_dotted_librdkafka_properties() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[kafka.properties]\n\"ssl.ca.location\" = \"/etc/ca.pem\"\n\"sasl.oauthbearer.client.secret\" = \"s3cr3t\"\n",
        )
        .unwrap();
        let s = Settings::load_from(Some(&path), env(&[])).unwrap();
        assert_eq!(
            s.kafka
                .properties
                .get("ssl.ca.location")
                .map(String::as_str),
            Some("/etc/ca.pem")
        );
        let printed = s.to_redacted_toml();
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("/etc/ca.pem"), "{printed}");
    }

    #[test]
    fn guarantee_bearing_kafka_properties_and_huge_durations_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[kafka.properties]\n\"enable.auto.offset.store\" = \"true\"\n",
        )
        .unwrap();
        let err = Settings::load_from(Some(&path), env(&[])).unwrap_err();
        assert!(
            err.to_string().contains("enable.auto.offset.store"),
            "{err}"
        );
        let err =
            Settings::load_from(None, env(&[("DEVICE_LOGS__LOGS__TTL", "20000d")])).unwrap_err();
        assert!(err.to_string().contains("logs.ttl"), "{err}");
        let err = Settings::load_from(None, env(&[("DEVICE_LOGS__LOGS__RETENTION", "10ms")]))
            .unwrap_err();
        assert!(err.to_string().contains("logs.retention"), "{err}");
        assert!(
            is_secret_property("ssl.key.password")
                && is_secret_property("sasl.oauthbearer.assertion.private.key.passphrase")
        );
    }

    #[test]
    fn invalid_setting_names_its_key() {
        let err =
            Settings::load_from(None, env(&[("DEVICE_LOGS__REDIS__URL", "http://x")])).unwrap_err();
        assert!(err.to_string().contains("redis.url"), "{err}");
        let err =
            Settings::load_from(None, env(&[("DEVICE_LOGS__LOGS__TTL", "soon")])).unwrap_err();
        assert!(err.to_string().contains("ttl"), "{err}");
        let err = Settings::load_from(None, env(&[("DEVICE_LOGS__KAFKA__TOPICS__STATUS", "a b")]))
            .unwrap_err();
        assert!(err.to_string().contains("kafka.topics.status"), "{err}");
    }

    #[test]
    fn redaction_hides_every_secret_and_round_trips() {
        let s = Settings::load_from(
            None,
            env(&[
                ("DEVICE_LOGS__REDIS__PASSWORD", "redis-pw-1"),
                (
                    "DEVICE_LOGS__REDIS__URL",
                    "rediss://user:url-pw-2@redis.example:6380/0",
                ),
                ("DEVICE_LOGS__KAFKA__SASL__PASSWORD", "sasl-pw-3"),
            ]),
        )
        .unwrap();
        let printed = s.to_redacted_toml();
        for secret in ["redis-pw-1", "url-pw-2", "sasl-pw-3"] {
            assert!(!printed.contains(secret), "{secret} leaked:\n{printed}");
        }
        let debug = format!("{s:?}");
        for secret in ["redis-pw-1", "url-pw-2", "sasl-pw-3"] {
            assert!(!debug.contains(secret), "{secret} leaked through Debug");
        }
        // The printed form is itself a loadable configuration file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("printed.toml");
        std::fs::write(&path, &printed).unwrap();
        let reloaded = Settings::load_from(Some(&path), env(&[])).unwrap();
        assert_eq!(reloaded.logs.ttl, s.logs.ttl);
        assert_eq!(reloaded.redis.key_prefix, s.redis.key_prefix);
    }
}
