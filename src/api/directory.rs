//! The device directory: which type a device is. The API asks it before it
//! publishes a LogRequest, since only MOBILE devices can be asked for logs.
//! Two implementations: the platform's devices endpoint over HTTP (answers
//! cached briefly, so a burst of requests costs one lookup), and a static
//! table from the configuration (dev mode, tests).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Deserialize;

use crate::config::{parse_device_key, DeviceSettings};
use crate::domain::DeviceRef;

/// Most cached directory answers.
const CACHE_CAP: usize = 100_000;

#[derive(Debug, thiserror::Error)]
#[error("device directory unavailable")]
pub struct DirectoryError(#[source] pub reqwest::Error);

#[derive(Clone)]
pub enum Directory {
    Static(Arc<HashMap<DeviceRef, String>>),
    Http(Arc<HttpDirectory>),
}

pub struct HttpDirectory {
    settings: DeviceSettings,
    client: reqwest::Client,
    cache: Mutex<HashMap<DeviceRef, (Instant, Option<String>)>>,
}

#[derive(Deserialize)]
struct DeviceBody {
    #[serde(rename = "type")]
    kind: String,
}

impl Directory {
    /// The HTTP directory when `api.devices.endpoint` is set, else the static one.
    pub fn from_settings(settings: &DeviceSettings) -> Self {
        if settings.endpoint.is_empty() {
            return Directory::Static(Arc::new(
                settings
                    .static_devices
                    .iter()
                    .filter_map(|(k, v)| parse_device_key(k).map(|d| (d, v.clone())))
                    .collect(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .unwrap_or_default();
        Directory::Http(Arc::new(HttpDirectory {
            settings: settings.clone(),
            client,
            cache: Mutex::new(HashMap::new()),
        }))
    }

    /// The device's type, `None` if the directory does not know the device.
    /// `authorization` is the caller's header, passed on to the platform.
    pub async fn device_type(
        &self,
        device: &DeviceRef,
        authorization: &str,
    ) -> Result<Option<String>, DirectoryError> {
        match self {
            Directory::Static(devices) => Ok(devices.get(device).cloned()),
            Directory::Http(http) => http.device_type(device, authorization).await,
        }
    }
}

impl HttpDirectory {
    async fn device_type(
        &self,
        device: &DeviceRef,
        authorization: &str,
    ) -> Result<Option<String>, DirectoryError> {
        let cached = self.lock().get(device).cloned();
        if let Some((at, kind)) = cached {
            if at.elapsed() < self.settings.cache_ttl {
                return Ok(kind);
            }
        }
        let url = format!(
            "{}/environments/{}/users/{}/devices/{}",
            self.settings.endpoint.trim_end_matches('/'),
            device.environment,
            device.user,
            device.device
        );
        let response = self
            .client
            .get(url)
            .header("Authorization", authorization)
            .send()
            .await
            .map_err(DirectoryError)?;
        let kind = if response.status() == reqwest::StatusCode::NOT_FOUND {
            None
        } else {
            let body: DeviceBody = response
                .error_for_status()
                .map_err(DirectoryError)?
                .json()
                .await
                .map_err(DirectoryError)?;
            Some(body.kind)
        };
        let mut cache = self.lock();
        // Bounded: drop stale answers before the cache grows past its cap.
        if cache.len() >= CACHE_CAP {
            let ttl = self.settings.cache_ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= CACHE_CAP {
                cache.clear();
            }
        }
        cache.insert(*device, (Instant::now(), kind.clone()));
        Ok(kind)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceRef, (Instant, Option<String>)>> {
        // The cache holds no invariants a panic could break.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}
