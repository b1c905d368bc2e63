//! The store the worker and the API run on: Redis in production, memory in
//! dev mode. An enum rather than a trait object keeps the async methods
//! plain (no boxing) and the two implementations side by side.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::memory::MemoryStore;
use super::{Applied, ApplyOp, Loaded, OutboxEvent, RedisStore, StoreError};
use crate::domain::{DeviceRef, Record};

#[derive(Clone)]
pub enum AnyStore {
    Redis(RedisStore),
    Memory(MemoryStore),
}

impl From<RedisStore> for AnyStore {
    fn from(store: RedisStore) -> Self {
        AnyStore::Redis(store)
    }
}

impl From<MemoryStore> for AnyStore {
    fn from(store: MemoryStore) -> Self {
        AnyStore::Memory(store)
    }
}

impl AnyStore {
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Redis(s) => s.ping().await,
            AnyStore::Memory(_) => Ok(()),
        }
    }

    pub async fn load(
        &self,
        devices: &[DeviceRef],
        inputs: &[(DeviceRef, Uuid)],
    ) -> Result<(HashMap<DeviceRef, Loaded>, HashSet<(DeviceRef, Uuid)>), StoreError> {
        match self {
            AnyStore::Redis(s) => s.load(devices, inputs).await,
            AnyStore::Memory(s) => Ok(s.load(devices, inputs)),
        }
    }

    pub async fn get(&self, device: &DeviceRef) -> Result<Option<Record>, StoreError> {
        let (mut records, _) = self.load(std::slice::from_ref(device), &[]).await?;
        Ok(records.remove(device).and_then(|l| l.record))
    }

    pub async fn apply(
        &self,
        ops: &[ApplyOp],
        now: DateTime<Utc>,
    ) -> Result<Vec<Applied>, StoreError> {
        match self {
            AnyStore::Redis(s) => s.apply(ops, now).await,
            AnyStore::Memory(s) => Ok(s.apply(ops, now)),
        }
    }

    pub async fn due_deadlines(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        match self {
            AnyStore::Redis(s) => s.due_deadlines(now, limit).await,
            AnyStore::Memory(s) => Ok(s.due_deadlines(now, limit)),
        }
    }

    pub async fn forget_deadlines(&self, members: &[String]) -> Result<(), StoreError> {
        match self {
            AnyStore::Redis(s) => s.forget_deadlines(members).await,
            AnyStore::Memory(s) => {
                s.forget_deadlines(members);
                Ok(())
            }
        }
    }

    pub async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        match self {
            AnyStore::Redis(s) => s.claim_outbox(now, limit).await,
            AnyStore::Memory(s) => Ok(s.claim_outbox(now, limit)),
        }
    }

    pub async fn ack_outbox(&self, published: &[(u16, Uuid)]) -> Result<(), StoreError> {
        match self {
            AnyStore::Redis(s) => s.ack_outbox(published).await,
            AnyStore::Memory(s) => {
                s.ack_outbox(published);
                Ok(())
            }
        }
    }

    pub async fn counts(&self) -> Result<(u64, u64), StoreError> {
        match self {
            AnyStore::Redis(s) => s.counts().await,
            AnyStore::Memory(s) => Ok(s.counts()),
        }
    }

    pub fn shard_of(&self, device: &DeviceRef) -> u16 {
        match self {
            AnyStore::Redis(s) => s.shard_of(device),
            AnyStore::Memory(s) => s.shard_of(device),
        }
    }
}
