//! device-logs: the worker that owns the "send MFA device logs" state machine.
//!
//! Inputs (LogRequest commands, LogsUploaded device events) arrive on Kafka;
//! state lives in Redis; every transition publishes one StatusChanged event.
//!
//! Modules, from the inside out:
//! - [`domain`]: the pure state machine: `(record, input, now) -> decision`. No I/O.
//! - [`payload`]: wire formats of SPEC §3, JSON Schema validation of inputs,
//!   the events and dead letters the worker writes.
//! - [`config`]: settings from `config/*.toml` plus `DEVICE_LOGS__*` overrides.
//! - [`store`]: Redis adapter: key layout, atomic apply script, deadline index,
//!   outbox; the in-memory store of the same contract; [`store::AnyStore`]
//!   over both.
//! - [`kafka`]: client configuration, the consumer context, the producer of
//!   events and dead letters, topic administration.
//! - [`worker`]: the batch loop that turns polled inputs into applied decisions
//!   and stored offsets; [`worker::run`] is the whole worker.
//! - [`sweeper`]: expiry of overdue PENDING requests and the outbox drain.
//! - [`metrics`]: the Prometheus registry; [`http`]: `/metrics`, `/livez`, `/readyz`.
//! - [`api`]: the HTTP API (`device-logs api`): PUT/GET of the log request
//!   resource, JWT auth, device directory, platform error shape.
//! - [`dev`]: `device-logs dev`, everything in one process on a mock broker.
//! - [`cli`]: the subcommands of the `device-logs` binary.

pub mod api;
pub mod cli;
pub mod config;
pub mod dev;
pub mod domain;
pub mod failpoint;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod payload;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod worker;
