//! In-memory store: the same contract as the Redis store (apply.lua,
//! claim.lua, forget.lua), for dev mode and as the reference model of the
//! store property test. One mutex makes each call atomic, as one script is
//! in Redis; record and dedup-marker lifetimes are judged by the injected
//! clock, where Redis uses its own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::keys::{self, Keys};
use super::{Applied, ApplyOp, Loaded, OutboxEvent};
use crate::domain::{DeviceRef, Record, Status};
use crate::worker::engine::Clock;

fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

#[derive(Debug, Clone, PartialEq)]
struct Stored {
    version: String,
    record: Record,
    /// Unix ms after which the record is gone (PEXPIREAT).
    expire_at: i64,
}

#[derive(Debug, Default)]
struct Shard {
    /// member -> deadline (Unix ms).
    deadlines: BTreeMap<String, i64>,
    /// event id -> visibility (Unix ms).
    outbox: BTreeMap<String, i64>,
    events: HashMap<String, String>,
    /// input id -> marker expiry (Unix ms).
    seen: HashMap<Uuid, i64>,
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<DeviceRef, Stored>,
    shards: Vec<Shard>,
}

/// A snapshot of the whole store, for comparing it with the Redis store.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub records: BTreeMap<String, (String, Option<Record>)>,
    pub deadlines: Vec<(u16, String, i64)>,
    pub outbox: Vec<(u16, String, String)>,
}

#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    keys: Keys,
    retention: Duration,
    lease: Duration,
    clock: Arc<dyn Clock>,
}

/// Members sorted as ZRANGEBYSCORE returns them: by score, then by member.
fn due(index: &BTreeMap<String, i64>, now: i64, limit: usize) -> Vec<String> {
    let mut due: Vec<(&i64, &String)> = index
        .iter()
        .filter(|(_, s)| **s <= now)
        .map(|(m, s)| (s, m))
        .collect();
    due.sort();
    due.into_iter()
        .take(limit)
        .map(|(_, m)| m.clone())
        .collect()
}

impl MemoryStore {
    pub fn new(shards: u16, retention: Duration, lease: Duration, clock: Arc<dyn Clock>) -> Self {
        let keys = Keys::new("memory", shards);
        let inner = Inner {
            records: HashMap::new(),
            shards: (0..keys.shards()).map(|_| Shard::default()).collect(),
        };
        MemoryStore {
            inner: Arc::new(Mutex::new(inner)),
            keys,
            retention,
            lease,
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied op: each
        // op validates before it writes, so the data is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> i64 {
        ms(self.clock.now())
    }

    pub fn shard_of(&self, device: &DeviceRef) -> u16 {
        self.keys.shard_of(device)
    }

    fn live<'a>(inner: &'a Inner, device: &DeviceRef, now: i64) -> Option<&'a Stored> {
        inner.records.get(device).filter(|s| s.expire_at > now)
    }

    fn seen(&self, inner: &Inner, device: &DeviceRef, id: Uuid, now: i64) -> bool {
        let shard = &inner.shards[usize::from(self.shard_of(device))];
        shard.seen.get(&id).is_some_and(|at| *at > now)
    }

    pub fn load(
        &self,
        devices: &[DeviceRef],
        inputs: &[(DeviceRef, Uuid)],
    ) -> (HashMap<DeviceRef, Loaded>, HashSet<(DeviceRef, Uuid)>) {
        let now = self.now_ms();
        let inner = self.lock();
        let records = devices
            .iter()
            .map(|d| {
                let loaded = Self::live(&inner, d, now)
                    .map(|s| Loaded {
                        version: s.version.clone(),
                        record: Some(s.record.clone()),
                    })
                    .unwrap_or_default();
                (*d, loaded)
            })
            .collect();
        let seen = inputs
            .iter()
            .filter(|(d, id)| self.seen(&inner, d, *id, now))
            .copied()
            .collect();
        (records, seen)
    }

    pub fn apply(&self, ops: &[ApplyOp], now: DateTime<Utc>) -> Vec<Applied> {
        let retention =
            chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::days(7));
        let lease = chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(5));
        let clock_now = self.now_ms();
        let mut inner = self.lock();
        ops.iter()
            .map(|op| {
                let record = &op.transition.record;
                let device = record.device;
                if let Some(id) = op.input_id {
                    if self.seen(&inner, &device, id, clock_now) {
                        return Applied::Duplicate;
                    }
                }
                let version = Self::live(&inner, &device, clock_now)
                    .map(|s| s.version.as_str())
                    .unwrap_or("");
                if version != op.expected_version {
                    return Applied::Conflict;
                }
                let event_id = record.event_id().to_string();
                let expire_at = ms(record.expires_at.unwrap_or(record.changed_at) + retention);
                inner.records.insert(
                    device,
                    Stored {
                        version: event_id.clone(),
                        record: record.clone(),
                        expire_at,
                    },
                );
                let shard = &mut inner.shards[usize::from(self.shard_of(&device))];
                let member = keys::device_member(&device);
                match (record.status, record.expires_at) {
                    (Status::Pending, Some(at)) => {
                        shard.deadlines.insert(member, ms(at));
                    }
                    _ => {
                        shard.deadlines.remove(&member);
                    }
                }
                shard.outbox.insert(event_id.clone(), ms(now + lease));
                shard.events.insert(event_id, op.event.clone());
                if let Some(id) = op.input_id {
                    shard
                        .seen
                        .insert(id, clock_now + self.retention.as_millis() as i64);
                }
                Applied::Applied
            })
            .collect()
    }

    pub fn due_deadlines(&self, now: DateTime<Utc>, limit: usize) -> Vec<String> {
        let inner = self.lock();
        inner
            .shards
            .iter()
            .flat_map(|s| due(&s.deadlines, ms(now), limit))
            .collect()
    }

    pub fn forget_deadlines(&self, members: &[String]) {
        let now = self.now_ms();
        let mut inner = self.lock();
        for member in members {
            match keys::parse_device_member(member) {
                Some(device) => {
                    if Self::live(&inner, &device, now).is_none() {
                        let shard = usize::from(self.shard_of(&device));
                        inner.shards[shard].deadlines.remove(member);
                    }
                }
                None => inner.shards.iter_mut().for_each(|s| {
                    s.deadlines.remove(member);
                }),
            }
        }
    }

    pub fn claim_outbox(&self, now: DateTime<Utc>, limit: usize) -> Vec<OutboxEvent> {
        let visible_again = ms(now) + self.lease.as_millis() as i64;
        let mut inner = self.lock();
        let mut claimed = Vec::new();
        for (index, shard) in inner.shards.iter_mut().enumerate() {
            for id in due(&shard.outbox, ms(now), limit) {
                match (shard.events.get(&id), id.parse::<Uuid>()) {
                    (Some(payload), Ok(uuid)) => {
                        claimed.push(OutboxEvent {
                            shard: index as u16,
                            id: uuid,
                            payload: payload.clone(),
                        });
                        shard.outbox.insert(id, visible_again);
                    }
                    (Some(_), Err(_)) => {
                        shard.outbox.insert(id, visible_again);
                    }
                    (None, _) => {
                        shard.outbox.remove(&id);
                    }
                }
            }
        }
        claimed
    }

    pub fn ack_outbox(&self, published: &[(u16, Uuid)]) {
        let mut inner = self.lock();
        for (shard, id) in published {
            if let Some(shard) = inner.shards.get_mut(usize::from(*shard)) {
                shard.outbox.remove(&id.to_string());
                shard.events.remove(&id.to_string());
            }
        }
    }

    pub fn counts(&self) -> (u64, u64) {
        let inner = self.lock();
        let pending = inner.shards.iter().map(|s| s.deadlines.len() as u64).sum();
        let outbox = inner.shards.iter().map(|s| s.outbox.len() as u64).sum();
        (pending, outbox)
    }

    /// Records (by device member), deadline entries and outbox events, sorted.
    pub fn snapshot(&self) -> Snapshot {
        let now = self.now_ms();
        let inner = self.lock();
        let mut snapshot = Snapshot::default();
        for (device, stored) in inner.records.iter().filter(|(_, s)| s.expire_at > now) {
            snapshot.records.insert(
                keys::device_member(device),
                (stored.version.clone(), Some(stored.record.clone())),
            );
        }
        for (index, shard) in inner.shards.iter().enumerate() {
            for (member, score) in &shard.deadlines {
                snapshot
                    .deadlines
                    .push((index as u16, member.clone(), *score));
            }
            for id in shard.outbox.keys() {
                let payload = shard.events.get(id).cloned().unwrap_or_default();
                snapshot.outbox.push((index as u16, id.clone(), payload));
            }
        }
        snapshot.deadlines.sort();
        snapshot.outbox.sort();
        snapshot
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
