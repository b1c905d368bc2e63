//! The `[api]` section: the HTTP API process (`device-logs api`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ConfigError;
use crate::domain::DeviceRef;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    pub auth: AuthSettings,
    pub devices: DeviceSettings,
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub jwks_url: String,
    pub public_key_file: String,
    pub audience: String,
    pub environment_claim: String,
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
    pub allow_hs256: bool,
    pub hs256_secret: String,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("jwks_url", &self.jwks_url)
            .field("public_key_file", &self.public_key_file)
            .field("audience", &self.audience)
            .field("environment_claim", &self.environment_claim)
            .field("leeway", &self.leeway)
            .field("jwks_refresh", &self.jwks_refresh)
            .field("allow_hs256", &self.allow_hs256)
            .field("hs256_secret", &super::secret_debug(&self.hs256_secret))
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSettings {
    pub endpoint: String,
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// `"<env>/<user>/<device>" = "<type>"`.
    #[serde(default, rename = "static")]
    pub static_devices: BTreeMap<String, String>,
}

/// Parses a static directory key, `<env>/<user>/<device>`.
pub fn parse_device_key(key: &str) -> Option<DeviceRef> {
    let mut parts = key.split('/').map(Uuid::parse_str);
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Ok(environment)), Some(Ok(user)), Some(Ok(device)), None) => Some(DeviceRef {
            environment,
            user,
            device,
        }),
        _ => None,
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl ApiSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 {
            return Err(invalid("api.max_body_bytes", "must be positive"));
        }
        if self.publish_timeout.is_zero() {
            return Err(invalid("api.publish_timeout", "must be positive"));
        }
        let a = &self.auth;
        let http_url = |s: &str| {
            url::Url::parse(s).is_ok_and(|u| u.scheme() == "http" || u.scheme() == "https")
        };
        if !a.jwks_url.is_empty() && !http_url(&a.jwks_url) {
            return Err(invalid(
                "api.auth.jwks_url",
                "must be empty or an http(s) URL",
            ));
        }
        if a.audience.trim().is_empty() {
            return Err(invalid("api.auth.audience", "must not be empty"));
        }
        if a.environment_claim.trim().is_empty() {
            return Err(invalid("api.auth.environment_claim", "must not be empty"));
        }
        if a.jwks_refresh < Duration::from_secs(1) {
            return Err(invalid("api.auth.jwks_refresh", "must be at least 1s"));
        }
        if !a.hs256_secret.is_empty() && !a.allow_hs256 {
            return Err(invalid(
                "api.auth.hs256_secret",
                "is set but api.auth.allow_hs256 is false (HS256 is for development only)",
            ));
        }
        if a.allow_hs256 && a.hs256_secret.len() < 32 {
            return Err(invalid(
                "api.auth.hs256_secret",
                "must be at least 32 bytes when api.auth.allow_hs256 is true",
            ));
        }
        let d = &self.devices;
        if !d.endpoint.is_empty() && !http_url(&d.endpoint) {
            return Err(invalid(
                "api.devices.endpoint",
                "must be empty or an http(s) URL",
            ));
        }
        if d.timeout.is_zero() {
            return Err(invalid("api.devices.timeout", "must be positive"));
        }
        for (key, kind) in &d.static_devices {
            if parse_device_key(key).is_none() || kind.trim().is_empty() {
                return Err(invalid(
                    "api.devices.static",
                    format!("entry {key:?} must be \"<env uuid>/<user uuid>/<device uuid>\" = \"<device type>\""),
                ));
            }
        }
        Ok(())
    }

    /// Whether any key source is configured (the `api` command needs one).
    pub fn has_key_source(&self) -> bool {
        let a = &self.auth;
        !a.jwks_url.is_empty() || !a.public_key_file.is_empty() || a.allow_hs256
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, Settings};

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(
            None,
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn invalid_key(pairs: &[(&str, &str)]) -> &'static str {
        match load(pairs) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid setting, got {other:?}"),
        }
    }

    #[test]
    fn invalid_api_settings_name_their_key() {
        let secret = (
            "DEVICE_LOGS__API__AUTH__HS256_SECRET",
            "s3cret-s3cret-s3cret-s3cret-s3cret",
        );
        assert_eq!(invalid_key(&[secret]), "api.auth.hs256_secret");
        let short = ("DEVICE_LOGS__API__AUTH__HS256_SECRET", "short");
        let allow = ("DEVICE_LOGS__API__AUTH__ALLOW_HS256", "true");
        assert_eq!(invalid_key(&[allow, short]), "api.auth.hs256_secret");
        assert_eq!(
            invalid_key(&[("DEVICE_LOGS__API__AUTH__AUDIENCE", "")]),
            "api.auth.audience"
        );
        assert_eq!(
            invalid_key(&[("DEVICE_LOGS__API__AUTH__JWKS_URL", "ftp://x")]),
            "api.auth.jwks_url"
        );
        assert_eq!(
            invalid_key(&[("DEVICE_LOGS__API__DEVICES__ENDPOINT", "nope")]),
            "api.devices.endpoint"
        );
        assert_eq!(
            invalid_key(&[("DEVICE_LOGS__API__MAX_BODY_BYTES", "0")]),
            "api.max_body_bytes"
        );
        assert!(load(&[allow, secret]).is_ok());
    }

    #[test]
    fn hs256_secret_is_redacted_and_static_devices_round_trip() {
        let secret = "s3cret-s3cret-s3cret-s3cret-s3cret";
        let mut s = load(&[
            ("DEVICE_LOGS__API__AUTH__ALLOW_HS256", "true"),
            ("DEVICE_LOGS__API__AUTH__HS256_SECRET", secret),
        ])
        .unwrap();
        let key = format!(
            "{}/{}/{}",
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4()
        );
        s.api
            .devices
            .static_devices
            .insert(key.clone(), "MOBILE".into());
        let printed = s.to_redacted_toml();
        assert!(!printed.contains(secret), "{printed}");
        assert!(!format!("{:?}", s.redacted()).contains(secret));
        // The printed static directory loads back as it was.
        let printed = printed.replace("allow_hs256 = true", "allow_hs256 = false");
        let printed = printed.replace("hs256_secret = \"<redacted>\"", "hs256_secret = \"\"");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("printed.toml");
        std::fs::write(&path, printed).unwrap();
        let reloaded = Settings::load_from(Some(&path), Vec::<(String, String)>::new()).unwrap();
        assert_eq!(
            reloaded
                .api
                .devices
                .static_devices
                .get(&key)
                .map(String::as_str),
            Some("MOBILE")
        );
    }
}
