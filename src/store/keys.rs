//! Every Redis key the worker uses, built in one place.
//!
//! Layout, for prefix `device-logs` and shard 7 (of `redis.shards`):
//!
//! | key | type | content |
//! |---|---|---|
//! | `device-logs:{7}:rec:<env>:<user>:<device>` | hash | `ver` (id of the event that made the state), `json` (the record) |
//! | `device-logs:{7}:seen:<input id>` | string | dedup marker of an applied input, expires after the retention |
//! | `device-logs:{7}:deadlines` | zset | member `<env>:<user>:<device>`, score expiresAt (Unix ms) of each PENDING record |
//! | `device-logs:{7}:outbox` | zset | member event id, score: when the event may be (re)published (Unix ms) |
//! | `device-logs:{7}:outbox:events` | hash | event id -> event JSON |
//!
//! The `{7}` hash tag puts all keys of one shard in one Redis Cluster slot, so
//! a script may touch a device's record together with its shard's index and
//! outbox. A device's shard is a stable hash of its ids. Ids enter keys only as
//! parsed UUIDs, never as raw input text.

use uuid::Uuid;

use crate::domain::DeviceRef;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    shards: u16,
}

impl Keys {
    pub fn new(prefix: &str, shards: u16) -> Self {
        Keys {
            prefix: prefix.to_string(),
            shards: shards.max(1),
        }
    }

    pub fn shards(&self) -> u16 {
        self.shards
    }

    /// The shard of a device: FNV-1a over its three ids, stable across builds.
    pub fn shard_of(&self, device: &DeviceRef) -> u16 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for id in [device.environment, device.user, device.device] {
            for byte in id.as_bytes() {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        (hash % u64::from(self.shards)) as u16
    }

    fn base(&self, shard: u16) -> String {
        format!("{}:{{{shard}}}", self.prefix)
    }

    pub fn record(&self, device: &DeviceRef) -> String {
        format!(
            "{}:rec:{}",
            self.base(self.shard_of(device)),
            device_member(device)
        )
    }

    pub fn seen(&self, device: &DeviceRef, input_id: Uuid) -> String {
        format!("{}:seen:{input_id}", self.base(self.shard_of(device)))
    }

    pub fn deadlines(&self, shard: u16) -> String {
        format!("{}:deadlines", self.base(shard))
    }

    pub fn outbox(&self, shard: u16) -> String {
        format!("{}:outbox", self.base(shard))
    }

    pub fn outbox_events(&self, shard: u16) -> String {
        format!("{}:outbox:events", self.base(shard))
    }
}

/// A device as a deadline-index member: `<env>:<user>:<device>`.
pub fn device_member(device: &DeviceRef) -> String {
    format!("{}:{}:{}", device.environment, device.user, device.device)
}

/// Parses a deadline-index member back; `None` for anything else.
pub fn parse_device_member(member: &str) -> Option<DeviceRef> {
    let mut parts = member.split(':');
    let device = DeviceRef {
        environment: parts.next()?.parse().ok()?,
        user: parts.next()?.parse().ok()?,
        device: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: u128) -> DeviceRef {
        DeviceRef {
            environment: Uuid::from_u128(n),
            user: Uuid::from_u128(n + 1),
            device: Uuid::from_u128(n + 2),
        }
    }

    /// The hash tag as Redis Cluster computes it: the text between the first
    /// `{` and the next `}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = open + key[open..].find('}').unwrap();
        &key[open + 1..close]
    }

    #[test]
    fn all_keys_of_a_device_share_its_shard_tag() {
        let keys = Keys::new("device-logs", 16);
        for n in 0..200 {
            let d = device(n * 7);
            let shard = keys.shard_of(&d);
            let tag = hash_tag(&keys.deadlines(shard)).to_string();
            for key in [
                keys.record(&d),
                keys.seen(&d, Uuid::new_v4()),
                keys.outbox(shard),
                keys.outbox_events(shard),
            ] {
                assert_eq!(hash_tag(&key), tag, "{key}");
            }
        }
    }

    #[test]
    fn devices_spread_over_all_shards() {
        let keys = Keys::new("p", 16);
        let mut seen = [false; 16];
        for _ in 0..1000 {
            let d = DeviceRef {
                environment: Uuid::new_v4(),
                user: Uuid::new_v4(),
                device: Uuid::new_v4(),
            };
            seen[keys.shard_of(&d) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn device_members_round_trip_and_reject_garbage() {
        let d = device(42);
        assert_eq!(parse_device_member(&device_member(&d)), Some(d));
        for bad in ["", "a:b:c", "x", &format!("{}:extra", device_member(&d))] {
            assert_eq!(parse_device_member(bad), None, "{bad}");
        }
    }
}
