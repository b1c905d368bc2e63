//! `device-logs dev`: the whole system in one process, with nothing
//! installed: an in-process Kafka-protocol broker (librdkafka's mock
//! cluster, on a loopback port other clients can use), the in-memory store,
//! the worker and the API, over a static device directory. It prints a dev
//! token and the curl lines to try, and each status event as it is published.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::Message as _;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Settings;
use crate::store::MemoryStore;
use crate::worker::{self, Clock, SystemClock};

/// The seeded directory: fixed ids, so the printed curl lines stay valid
/// from one run to the next.
pub const ENVIRONMENT: Uuid = Uuid::from_u128(0xabfba8f6_49eb_49f5_a5d9_80ad5c98f9f6);
pub const USER: Uuid = Uuid::from_u128(0x7d40a771_8776_4de4_b69b_ef8dba75fd70);
pub const DEVICES: [(Uuid, &str); 3] = [
    (
        Uuid::from_u128(0x588b1e0c_3387_45ed_a1c2_ebb16b8a6dad),
        "MOBILE",
    ),
    (
        Uuid::from_u128(0x2c1f7b0e_5a0d_4c55_9a51_6c1b4d0e9f21),
        "MOBILE",
    ),
    (
        Uuid::from_u128(0x9e6f3d2a_1b7c_4e8f_8a3d_5f4e2c1b0a99),
        "SMS",
    ),
];
const PARTITIONS: i32 = 3;

pub struct DevOptions {
    pub ttl: Option<Duration>,
    pub listen: SocketAddr,
}

/// An HS256 token for `environment`, valid 24 hours.
pub fn mint_token(settings: &Settings, environment: Uuid) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let auth = &settings.api.auth;
    let claims = json!({
        "sub": "device-logs-dev", "aud": auth.audience, "iat": now, "nbf": now,
        "exp": now + 24 * 3600, auth.environment_claim.as_str(): environment,
    });
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(auth.hs256_secret.as_bytes()),
    )?)
}

pub async fn run(
    mut settings: Settings,
    options: DevOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let cluster = MockCluster::new(1)?;
    let brokers = cluster.bootstrap_servers();
    let topics = settings.kafka.topics.clone();
    for topic in [
        &topics.requests,
        &topics.uploads,
        &topics.status,
        &topics.dead_letters,
    ] {
        cluster.create_topic(topic, PARTITIONS, 1)?;
    }
    settings.kafka.brokers = brokers.clone();
    settings.kafka.partitions = PARTITIONS;
    if let Some(ttl) = options.ttl {
        settings.logs.ttl = ttl;
    }
    // The worker's /metrics on any free port: dev mode must start whatever
    // else runs on the machine.
    settings.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.api.auth.allow_hs256 = true;
    settings.api.auth.hs256_secret =
        format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    settings.api.devices.endpoint = String::new();
    settings.api.devices.static_devices = DEVICES
        .iter()
        .map(|(device, kind)| (format!("{ENVIRONMENT}/{USER}/{device}"), kind.to_string()))
        .collect::<BTreeMap<_, _>>();
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.listen))?;
    let addr = listener.local_addr()?;
    let api_url = format!("http://{addr}");
    settings.logs.links_base_url = format!("{api_url}/v1");
    let token = mint_token(&settings, ENVIRONMENT)?;

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = MemoryStore::new(
        settings.redis.shards,
        settings.logs.retention,
        settings.outbox.lease,
        clock.clone(),
    );
    let state = crate::api::state(settings.clone(), store.clone().into(), clock.clone())?;
    print_banner(&settings, &brokers, &api_url, &token);

    let stop = CancellationToken::new();
    let tail = tokio::spawn(tail_status(settings.clone(), stop.clone()));
    let api = tokio::spawn(crate::api::serve(
        listener,
        state,
        stop.clone().cancelled_owned(),
    ));
    let worker_stop = stop.clone();
    let worker = worker::run_with(
        settings.clone(),
        store.into(),
        worker::worker_metrics(&settings),
        clock,
        async move { worker_stop.cancelled().await },
    );
    let watcher = async {
        shutdown.await;
        tracing::info!("dev: stopping");
        stop.cancel();
    };
    let (result, ()) = tokio::join!(worker, watcher);
    let _ = api.await;
    let _ = tail.await;
    drop(cluster);
    result?;
    println!("device-logs dev: stopped");
    Ok(())
}

fn print_banner(settings: &Settings, brokers: &str, api: &str, token: &str) {
    let path = |device: &Uuid| {
        format!("{api}/v1/environments/{ENVIRONMENT}/users/{USER}/devices/{device}/logs")
    };
    let (mobile, second, other) = (&DEVICES[0].0, &DEVICES[1].0, &DEVICES[2].0);
    println!(
        "device-logs dev: the whole system in one process (in-memory store, in-process broker)"
    );
    println!("  api:     {api}");
    println!("  broker:  {brokers}");
    println!(
        "  ttl:     {}",
        humantime::format_duration(settings.logs.ttl)
    );
    println!("  devices: {mobile} MOBILE, {second} MOBILE, {other} SMS (environment {ENVIRONMENT}, user {USER})");
    println!();
    println!("export TOKEN='{token}'");
    println!();
    println!("# ask the MOBILE device for its logs");
    println!(
        "curl --request PUT '{}' --header 'Content-Type: application/json' --header \"Authorization: Bearer $TOKEN\" --data '{{\"status\": \"PENDING\"}}'",
        path(mobile)
    );
    println!("# read the request's status");
    println!(
        "curl '{}' --header \"Authorization: Bearer $TOKEN\"",
        path(mobile)
    );
    println!("# the app sends its logs (status becomes RECEIVED)");
    println!(
        "DEVICE_LOGS__KAFKA__BROKERS={brokers} cargo run -- upload --environment {ENVIRONMENT} --user {USER} --device {mobile}"
    );
    println!();
    println!("device-logs dev: ready (Ctrl-C stops)");
}

/// Prints every status event as the worker publishes it.
async fn tail_status(settings: Settings, stop: CancellationToken) {
    let consumer: StreamConsumer = match rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka.brokers)
        .set(
            "group.id",
            format!("device-logs-dev-tail-{}", Uuid::new_v4()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
    {
        Ok(consumer) => consumer,
        Err(e) => return tracing::warn!(error = %e, "dev: cannot tail the status topic"),
    };
    if let Err(e) = consumer.subscribe(&[settings.kafka.topics.status.as_str()]) {
        return tracing::warn!(error = %e, "dev: cannot tail the status topic");
    }
    let mut stream = consumer.stream();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            message = stream.next() => match message {
                Some(Ok(m)) => {
                    let text = m.payload().map(String::from_utf8_lossy).unwrap_or_default();
                    println!("status event: {text}");
                }
                Some(Err(e)) => tracing::debug!(error = %e, "dev: status tail"),
                None => break,
            },
        }
    }
}
