//! Redis adapter. Each decision is applied by one atomic script
//! (`apply.lua`): record, deadline index, outbox and dedup marker change
//! together or not at all. Reads and writes are pipelined per batch.
//!
//! Concurrency is optimistic: a decision carries the version (`ver`, the id
//! of the event that made the state) of the record it was made on, and the
//! script refuses it if the record has changed since; the caller re-reads
//! and decides again. Two workers racing on one device, or two sweepers on
//! one deadline, therefore apply a transition once.

mod any;
pub mod keys;
pub mod memory;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use uuid::Uuid;

use crate::config::RedisSettings;
use crate::domain::{DeviceRef, Record, Status, Transition};
use crate::metrics::Metrics;
use crate::payload::StoredRecord;
pub use any::AnyStore;
pub use keys::Keys;
pub use memory::MemoryStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis connection failed")]
    Connect(#[source] redis::RedisError),
    #[error("redis {operation} failed")]
    Redis {
        operation: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("invalid redis url")]
    Url,
}

/// A device's stored state as read: its version and record (both empty when
/// the device has none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    pub version: String,
    pub record: Option<Record>,
}

/// One transition to write.
#[derive(Debug, Clone)]
pub struct ApplyOp {
    /// Version of the record the decision was made on.
    pub expected_version: String,
    pub transition: Transition,
    /// The input id to remember as applied; `None` for expiries.
    pub input_id: Option<Uuid>,
    /// The event JSON to put in the outbox.
    pub event: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// The record changed since it was read: read again and decide again.
    Conflict,
    /// The input id was applied before (by another worker, or before a crash).
    Duplicate,
}

/// An event waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    pub shard: u16,
    pub id: Uuid,
    pub payload: String,
}

const APPLY: &str = include_str!("apply.lua");
const CLAIM: &str = include_str!("claim.lua");
const FORGET: &str = include_str!("forget.lua");

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    keys: Keys,
    retention: Duration,
    lease: Duration,
    apply: std::sync::Arc<Script>,
    claim: std::sync::Arc<Script>,
    forget: std::sync::Arc<Script>,
    metrics: Metrics,
}

fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// The URL with the configured credentials filled in.
pub fn connection_url(settings: &RedisSettings) -> Result<String, StoreError> {
    let mut url = url::Url::parse(&settings.url).map_err(|_| StoreError::Url)?;
    if !settings.username.is_empty() {
        url.set_username(&settings.username)
            .map_err(|_| StoreError::Url)?;
    }
    if !settings.password.is_empty() {
        url.set_password(Some(&settings.password))
            .map_err(|_| StoreError::Url)?;
    }
    Ok(url.to_string())
}

impl RedisStore {
    pub async fn connect(
        settings: &RedisSettings,
        retention: Duration,
        lease: Duration,
        metrics: Metrics,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(connection_url(settings)?).map_err(StoreError::Connect)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(settings.command_timeout))
            .set_connection_timeout(Some(settings.command_timeout));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(StoreError::Connect)?;
        Ok(RedisStore {
            conn,
            keys: Keys::new(&settings.key_prefix, settings.shards),
            retention,
            lease,
            apply: std::sync::Arc::new(Script::new(APPLY)),
            claim: std::sync::Arc::new(Script::new(CLAIM)),
            forget: std::sync::Arc::new(Script::new(FORGET)),
            metrics,
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Runs `pipe`, timing it and counting its errors under `operation`.
    /// A NOSCRIPT answer (Redis restarted and lost its script cache) loads
    /// the scripts and runs the pipeline once more: none of it ran.
    async fn run(
        &self,
        operation: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<Vec<Value>, StoreError> {
        let started = Instant::now();
        let mut conn = self.conn.clone();
        let mut result = pipe.query_async::<Vec<Value>>(&mut conn).await;
        if matches!(&result, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
        {
            result = match self.load_scripts().await {
                Ok(()) => pipe.query_async::<Vec<Value>>(&mut conn).await,
                Err(e) => Err(e),
            };
        }
        self.metrics.redis_duration(operation, started.elapsed());
        result.map_err(|source| {
            self.metrics.redis_error(&source);
            StoreError::Redis { operation, source }
        })
    }

    async fn load_scripts(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        for script in [&self.apply, &self.claim, &self.forget] {
            script.prepare_invoke().load_async(&mut conn).await?;
        }
        Ok(())
    }

    fn evalsha(pipe: &mut redis::Pipeline, script: &Script, keys: &[&str], args: &[String]) {
        let cmd = pipe.cmd("EVALSHA").arg(script.get_hash()).arg(keys.len());
        for key in keys {
            cmd.arg(*key);
        }
        for arg in args {
            cmd.arg(arg.as_str());
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PING");
        self.run("ping", &pipe).await.map(|_| ())
    }

    /// Reads the records of `devices` and which of `inputs` were applied
    /// before, in one round trip.
    pub async fn load(
        &self,
        devices: &[DeviceRef],
        inputs: &[(DeviceRef, Uuid)],
    ) -> Result<(HashMap<DeviceRef, Loaded>, HashSet<(DeviceRef, Uuid)>), StoreError> {
        let mut pipe = redis::pipe();
        for device in devices {
            pipe.cmd("HMGET")
                .arg(self.keys.record(device))
                .arg("ver")
                .arg("json");
        }
        for (device, id) in inputs {
            pipe.cmd("EXISTS").arg(self.keys.seen(device, *id));
        }
        if devices.is_empty() && inputs.is_empty() {
            return Ok(Default::default());
        }
        let values = self.run("load", &pipe).await?;
        let mut values = values.into_iter();
        let mut records = HashMap::with_capacity(devices.len());
        for device in devices {
            let (version, json): (Option<String>, Option<String>) = values
                .next()
                .and_then(|v| redis::from_redis_value(v).ok())
                .unwrap_or_default();
            let record = json.as_deref().and_then(|j| decode_record(j, *device));
            records.insert(
                *device,
                Loaded {
                    version: version.unwrap_or_default(),
                    record,
                },
            );
        }
        let mut seen = HashSet::new();
        for (device, id) in inputs {
            let exists: i64 = values
                .next()
                .and_then(|v| redis::from_redis_value(v).ok())
                .unwrap_or(0);
            if exists == 1 {
                seen.insert((*device, *id));
            }
        }
        Ok((records, seen))
    }

    /// Applies `ops` in order, one script each, in one round trip.
    pub async fn apply(
        &self,
        ops: &[ApplyOp],
        now: DateTime<Utc>,
    ) -> Result<Vec<Applied>, StoreError> {
        if ops.is_empty() {
            return Ok(vec![]);
        }
        let retention =
            chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::days(7));
        let visible_at =
            now + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(5));
        let mut pipe = redis::pipe();
        for op in ops {
            let record = &op.transition.record;
            let device = &record.device;
            let shard = self.keys.shard_of(device);
            // A PENDING record outlives its deadline by the retention, so an
            // expiry that fell due while no worker ran is still emitted.
            let expire_at = record.expires_at.unwrap_or(record.changed_at) + retention;
            let (record_key, seen_key) = (
                self.keys.record(device),
                self.keys.seen(device, op.input_id.unwrap_or_default()),
            );
            let (deadlines, outbox, events) = (
                self.keys.deadlines(shard),
                self.keys.outbox(shard),
                self.keys.outbox_events(shard),
            );
            let json =
                serde_json::to_string(&StoredRecord::from_record(record)).unwrap_or_default();
            let args = [
                op.expected_version.clone(),
                record.event_id().to_string(),
                json,
                ms(expire_at).to_string(),
                keys::device_member(device),
                match (record.status, record.expires_at) {
                    (Status::Pending, Some(at)) => ms(at).to_string(),
                    _ => String::new(),
                },
                op.event.clone(),
                ms(visible_at).to_string(),
                match op.input_id {
                    Some(_) => self.retention.as_millis().to_string(),
                    None => "0".to_string(),
                },
            ];
            Self::evalsha(
                &mut pipe,
                &self.apply,
                &[&record_key, &seen_key, &deadlines, &outbox, &events],
                &args,
            );
        }
        let values = self.run("apply", &pipe).await?;
        Ok(values
            .into_iter()
            .map(|v| match redis::from_redis_value::<i64>(v) {
                Ok(1) => Applied::Applied,
                Ok(-1) => Applied::Duplicate,
                _ => Applied::Conflict,
            })
            .collect())
    }

    /// Devices whose deadline is at or before `now`, up to `limit` per shard,
    /// across all shards in one round trip.
    pub async fn due_deadlines(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut pipe = redis::pipe();
        for shard in 0..self.keys.shards() {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(self.keys.deadlines(shard))
                .arg("-inf")
                .arg(ms(now))
                .arg("LIMIT")
                .arg(0)
                .arg(limit);
        }
        let values = self.run("sweep", &pipe).await?;
        Ok(values
            .into_iter()
            .flat_map(|v| redis::from_redis_value::<Vec<String>>(v).unwrap_or_default())
            .collect())
    }

    /// Drops deadline entries of devices that have no record any more.
    pub async fn forget_deadlines(&self, members: &[String]) -> Result<(), StoreError> {
        if members.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for member in members {
            let device = keys::parse_device_member(member);
            let shard = device.map(|d| self.keys.shard_of(&d));
            match (device, shard) {
                (Some(device), Some(shard)) => {
                    let (record, deadlines) =
                        (self.keys.record(&device), self.keys.deadlines(shard));
                    Self::evalsha(
                        &mut pipe,
                        &self.forget,
                        &[&record, &deadlines],
                        std::slice::from_ref(member),
                    );
                }
                // Not ours (hand-written garbage): it cannot be routed to a
                // shard, so remove it from every shard's index.
                _ => {
                    for shard in 0..self.keys.shards() {
                        pipe.cmd("ZREM").arg(self.keys.deadlines(shard)).arg(member);
                    }
                }
            }
        }
        self.run("sweep", &pipe).await.map(|_| ())
    }

    /// Leases up to `limit` due outbox events per shard.
    pub async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let mut pipe = redis::pipe();
        for shard in 0..self.keys.shards() {
            let (outbox, events) = (self.keys.outbox(shard), self.keys.outbox_events(shard));
            let args = [
                ms(now).to_string(),
                self.lease.as_millis().to_string(),
                limit.to_string(),
            ];
            Self::evalsha(&mut pipe, &self.claim, &[&outbox, &events], &args);
        }
        let values = self.run("outbox_claim", &pipe).await?;
        let mut claimed = Vec::new();
        for (shard, value) in values.into_iter().enumerate() {
            let flat: Vec<String> = redis::from_redis_value(value).unwrap_or_default();
            for pair in flat.chunks_exact(2) {
                if let Ok(id) = pair[0].parse() {
                    claimed.push(OutboxEvent {
                        shard: shard as u16,
                        id,
                        payload: pair[1].clone(),
                    });
                }
            }
        }
        Ok(claimed)
    }

    /// Removes published events from the outbox.
    pub async fn ack_outbox(&self, published: &[(u16, Uuid)]) -> Result<(), StoreError> {
        if published.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (shard, id) in published {
            pipe.cmd("ZREM")
                .arg(self.keys.outbox(*shard))
                .arg(id.to_string())
                .ignore();
            pipe.cmd("HDEL")
                .arg(self.keys.outbox_events(*shard))
                .arg(id.to_string())
                .ignore();
        }
        self.run("outbox_ack", &pipe).await.map(|_| ())
    }

    /// (PENDING requests, outbox depth), summed over the shards.
    pub async fn counts(&self) -> Result<(u64, u64), StoreError> {
        let mut pipe = redis::pipe();
        for shard in 0..self.keys.shards() {
            pipe.cmd("ZCARD").arg(self.keys.deadlines(shard));
            pipe.cmd("ZCARD").arg(self.keys.outbox(shard));
        }
        let values = self.run("sample", &pipe).await?;
        let counts: Vec<u64> = values
            .into_iter()
            .map(|v| redis::from_redis_value(v).unwrap_or(0))
            .collect();
        let pending = counts.iter().step_by(2).sum();
        let outbox = counts.iter().skip(1).step_by(2).sum();
        Ok((pending, outbox))
    }

    /// The shard that holds `device`'s outbox entries.
    pub fn shard_of(&self, device: &DeviceRef) -> u16 {
        self.keys.shard_of(device)
    }
}

fn decode_record(json: &str, device: DeviceRef) -> Option<Record> {
    match serde_json::from_str::<StoredRecord>(json)
        .ok()
        .and_then(|s| s.into_record(device))
    {
        Some(record) => Some(record),
        None => {
            // Only a foreign writer can produce this: decide as if the device
            // had no record; the version check still guards the overwrite.
            tracing::warn!(environment = %device.environment, user = %device.user, device = %device.device,
                "stored record cannot be decoded; treating it as absent");
            None
        }
    }
}
