//! The maintenance loop, once per `expiry.sweep_interval` on every worker:
//! expire the PENDING requests whose deadline has passed, re-publish outbox
//! events whose lease ran out, sample the gauges.
//!
//! Expiry reads the deadline index (a sorted set per shard), never Redis
//! keyspace notifications: those are lost while no client listens. The first
//! sweep runs at start-up, so deadlines that fell due while no worker ran
//! are expired at once. Any number of workers may sweep the same shards: the
//! apply script's version check lets exactly one EXPIRED transition through.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::ExpirySettings;
use crate::domain::{ExpiryCheck, Input};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::store::keys::parse_device_member;
use crate::worker::engine::{Engine, EngineError, Resolution};
use crate::worker::publisher::{Publication, Publisher};

/// Sweeps per tick while deadlines keep coming back full (a backlog after
/// downtime); the rest waits for the next tick so shutdown stays prompt.
const MAX_SWEEPS_PER_TICK: usize = 20;
/// Outbox events claimed per shard per tick.
const OUTBOX_CLAIM_LIMIT: usize = 500;

pub async fn run(
    engine: Engine,
    publisher: Publisher,
    metrics: Metrics,
    settings: ExpirySettings,
    health: Arc<Health>,
    token: CancellationToken,
) {
    let mut interval = tokio::time::interval(settings.sweep_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = interval.tick() => {}
        }
        health.beat_maintenance();
        for _ in 0..MAX_SWEEPS_PER_TICK {
            match sweep(&engine, &publisher, &metrics, settings.batch_size).await {
                Ok(full) if full && !token.is_cancelled() => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "expiry sweep failed; next tick retries");
                    break;
                }
            }
        }
        match engine
            .store
            .claim_outbox(engine.clock.now(), OUTBOX_CLAIM_LIMIT)
            .await
        {
            Ok(events) if !events.is_empty() => {
                tracing::info!(
                    events = events.len(),
                    "re-publishing outbox events past their lease"
                );
                let publications = events
                    .into_iter()
                    .map(|event| Publication {
                        event,
                        stamped_at: None,
                        deadline: None,
                    })
                    .collect();
                publisher.publish(publications).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "outbox claim failed; next tick retries"),
        }
        match engine.store.counts().await {
            Ok((pending, outbox)) => metrics.set_counts(pending, outbox),
            Err(e) => tracing::debug!(error = %e, "gauge sampling failed"),
        }
    }
}

/// One pass over every shard's due deadlines. Returns whether some shard
/// had more due than one batch.
async fn sweep(
    engine: &Engine,
    publisher: &Publisher,
    metrics: &Metrics,
    limit: usize,
) -> Result<bool, EngineError> {
    let now = engine.clock.now();
    let due = engine.store.due_deadlines(now, limit).await?;
    if due.is_empty() {
        return Ok(false);
    }
    let full = due.len() >= limit;
    let (devices, garbage): (Vec<_>, Vec<_>) = due
        .into_iter()
        .partition(|m| parse_device_member(m).is_some());
    let inputs: Vec<Input> = devices
        .iter()
        .filter_map(|m| parse_device_member(m))
        .map(|device| Input::Expire(ExpiryCheck { device }))
        .collect();
    let resolutions = engine.process(&inputs).await?;
    let mut publications = Vec::new();
    let mut not_due = garbage;
    for ((member, input), resolution) in devices.iter().zip(&inputs).zip(resolutions) {
        match resolution {
            Resolution::Applied(applied) => {
                let record = &applied.transition.record;
                metrics.transition(applied.transition.previous, record.status);
                let d = input.device();
                tracing::info!(environment = %d.environment, user = %d.user, device = %d.device,
                    request_id = %record.request_id, sequence = record.sequence, "request expired");
                publications.push(Publication {
                    event: crate::store::OutboxEvent {
                        shard: engine.store.shard_of(&record.device),
                        id: record.event_id(),
                        payload: applied.event,
                    },
                    stamped_at: applied.deadline,
                    deadline: applied.deadline,
                });
            }
            // Due in the index but not PENDING-and-due in its record: only a
            // record that vanished does that; forget.lua drops such entries.
            _ => not_due.push(member.clone()),
        }
    }
    publisher.publish(publications).await;
    engine.store.forget_deadlines(&not_due).await?;
    Ok(full)
}
