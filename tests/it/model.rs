//! The in-memory store is the reference model of the Redis store: random
//! sequences of requests, uploads, duplicates, clock advances, sweeps and
//! outbox claims run through the engine on both (Redis for real) must give
//! identical resolutions, events and state.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use device_logs::domain::{DeviceRef, ExpiryCheck, Input, LogRequest, LogsUploaded, Policy};
use device_logs::store::memory::Snapshot;
use device_logs::store::{AnyStore, MemoryStore, RedisStore};
use device_logs::worker::engine::{Engine, Resolution};
use device_logs::worker::Clock;
use proptest::prelude::*;
use uuid::Uuid;

const SHARDS: u16 = 4;
const LEASE: Duration = Duration::from_secs(5);
const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

struct TestClock(Mutex<DateTime<Utc>>);

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// device, id slot (small pool: repeats are duplicates), offset of requestedAt (s)
    Request(usize, usize, i64),
    /// device, id slot, whether to name the current cycle, offset of uploadedAt (s)
    Upload(usize, usize, bool, i64),
    /// Replays the n-th input sent so far.
    Replay(usize),
    Advance(u64),
    Sweep,
    Claim,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 0..6usize, -40..6i64).prop_map(|(d, i, o)| Step::Request(d, i, o)),
        4 => (0..3usize, 0..6usize, any::<bool>(), -3..3i64).prop_map(|(d, i, m, o)| Step::Upload(d, i, m, o)),
        2 => (0..50usize).prop_map(Step::Replay),
        3 => (0..20u64).prop_map(Step::Advance),
        2 => Just(Step::Sweep),
        1 => Just(Step::Claim),
    ]
}

fn describe(resolutions: Vec<Resolution>) -> Vec<String> {
    resolutions
        .into_iter()
        .map(|r| match r {
            Resolution::Applied(a) => format!("applied {}", a.event),
            Resolution::Ignored(i) => format!("ignored {i:?}"),
            Resolution::Rejected(r) => format!("rejected {:?} {:?}", r.reason, r.details),
        })
        .collect()
}

async fn redis_snapshot(
    url: &str,
    prefix: &str,
    devices: &[DeviceRef],
    store: &AnyStore,
) -> Snapshot {
    let mut snapshot = Snapshot::default();
    let (loaded, _) = store.load(devices, &[]).await.unwrap();
    for (device, l) in loaded.into_iter().filter(|(_, l)| !l.version.is_empty()) {
        snapshot.records.insert(
            device_logs::store::keys::device_member(&device),
            (l.version, l.record),
        );
    }
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for shard in 0..SHARDS {
        let deadlines: Vec<(String, i64)> = redis::cmd("ZRANGE")
            .arg(format!("{prefix}:{{{shard}}}:deadlines"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .unwrap();
        snapshot
            .deadlines
            .extend(deadlines.into_iter().map(|(m, s)| (shard, m, s)));
        let events: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(format!("{prefix}:{{{shard}}}:outbox:events"))
            .query_async(&mut conn)
            .await
            .unwrap();
        snapshot
            .outbox
            .extend(events.into_iter().map(|(id, e)| (shard, id, e)));
    }
    snapshot.deadlines.sort();
    snapshot.outbox.sort();
    snapshot
}

async fn run_case(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let url =
        std::env::var("DEVICE_LOGS_TEST_REDIS").expect("DEVICE_LOGS_TEST_REDIS (scripts/test.sh)");
    let prefix = format!("model-{}", Uuid::new_v4().simple());
    let clock = Arc::new(TestClock(Mutex::new(Utc::now().trunc_subsecs(3))));
    let mut redis_settings = device_logs::config::Settings::load_from(None, Vec::new())
        .unwrap()
        .redis;
    (
        redis_settings.url,
        redis_settings.key_prefix,
        redis_settings.shards,
    ) = (url.clone(), prefix.clone(), SHARDS);
    let redis: AnyStore = RedisStore::connect(
        &redis_settings,
        RETENTION,
        LEASE,
        device_logs::metrics::Metrics::new(&[], &[]),
    )
    .await
    .unwrap()
    .into();
    let memory: AnyStore = MemoryStore::new(SHARDS, RETENTION, LEASE, clock.clone()).into();
    let policy = Policy {
        ttl: chrono::Duration::seconds(30),
        max_clock_skew: chrono::Duration::seconds(5),
    };
    let engine = |store: &AnyStore| Engine {
        store: store.clone(),
        policy,
        links_base_url: "https://api.test.example/v1".into(),
        clock: clock.clone(),
    };
    let (on_redis, on_memory) = (engine(&redis), engine(&memory));
    let devices: Vec<DeviceRef> = (0..3)
        .map(|_| DeviceRef {
            environment: Uuid::new_v4(),
            user: Uuid::new_v4(),
            device: Uuid::new_v4(),
        })
        .collect();
    let ids: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let mut sent: Vec<Input> = Vec::new();
    for step in steps {
        let now = clock.now();
        let at = |o: i64| now + chrono::Duration::seconds(o);
        let inputs = match step {
            Step::Request(d, i, o) => vec![Input::Request(LogRequest {
                id: ids[i],
                device: devices[d],
                device_type: "MOBILE".into(),
                status: "PENDING".into(),
                requested_at: at(o),
            })],
            Step::Upload(d, i, m, o) => {
                let current = memory.get(&devices[d]).await.unwrap();
                let request_id = if m {
                    current.map(|r| r.request_id)
                } else {
                    None
                };
                vec![Input::Upload(LogsUploaded {
                    id: ids[i],
                    device: devices[d],
                    request_id,
                    uploaded_at: at(o),
                })]
            }
            Step::Replay(n) if !sent.is_empty() => vec![sent[n % sent.len()].clone()],
            Step::Replay(_) => vec![],
            Step::Advance(s) => {
                *clock.0.lock().unwrap() = now + chrono::Duration::seconds(s as i64);
                vec![]
            }
            Step::Sweep => {
                let (due_r, due_m) = (
                    redis.due_deadlines(now, 100).await.unwrap(),
                    memory.due_deadlines(now, 100).await.unwrap(),
                );
                prop_assert_eq!(&due_r, &due_m);
                due_m
                    .iter()
                    .filter_map(|m| device_logs::store::keys::parse_device_member(m))
                    .map(|device| Input::Expire(ExpiryCheck { device }))
                    .collect()
            }
            Step::Claim => {
                let (r, m) = (
                    redis.claim_outbox(now, 100).await.unwrap(),
                    memory.claim_outbox(now, 100).await.unwrap(),
                );
                let key = |e: &device_logs::store::OutboxEvent| (e.shard, e.id);
                let (mut r, mut m) = (r, m);
                r.sort_by_key(key);
                m.sort_by_key(key);
                prop_assert_eq!(&r, &m);
                // Acknowledge half of what was claimed: the rest stays leased.
                let acks: Vec<(u16, Uuid)> = m.iter().step_by(2).map(key).collect();
                redis.ack_outbox(&acks).await.unwrap();
                memory.ack_outbox(&acks).await.unwrap();
                vec![]
            }
        };
        if inputs.is_empty() {
            continue;
        }
        sent.extend(inputs.iter().filter(|i| i.id().is_some()).cloned());
        let r = describe(on_redis.process(&inputs).await.unwrap());
        let m = describe(on_memory.process(&inputs).await.unwrap());
        prop_assert_eq!(r, m);
        let (sr, sm) = (
            redis_snapshot(&url, &prefix, &devices, &redis).await,
            memory_snapshot(&memory),
        );
        prop_assert_eq!(sr, sm);
    }
    Ok(())
}

fn memory_snapshot(store: &AnyStore) -> Snapshot {
    match store {
        AnyStore::Memory(m) => m.snapshot(),
        AnyStore::Redis(_) => unreachable!(),
    }
}

#[test]
fn memory_store_matches_redis_store() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(steps in proptest::collection::vec(step(), 1..40))| {
        runtime.block_on(run_case(steps))?;
    });
}
