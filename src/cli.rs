//! The subcommands of the `device-logs` binary.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

use crate::config::Settings;
use crate::domain::{DeviceRef, LogRequest, LogsUploaded, MOBILE};
use crate::kafka::{self, EventProducer};
use crate::metrics::Metrics;
use crate::payload;
use crate::store::{AnyStore, RedisStore};

#[derive(Debug, Parser)]
#[command(
    name = "device-logs",
    version,
    about = "Owns the MFA device logs request state machine: Kafka in, Redis state, Kafka out"
)]
pub struct Cli {
    /// Configuration file (TOML); environment variables DEVICE_LOGS__* override it.
    #[arg(long, global = true, env = "DEVICE_LOGS_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker until SIGTERM or SIGINT.
    Run,
    /// Run the HTTP API (stateless; any number of replicas) until SIGTERM or SIGINT.
    Api,
    /// Run the whole system in one process with nothing installed: an
    /// in-process broker, an in-memory store, the worker and the API.
    Dev {
        /// How long a request stays PENDING (e.g. 30s to try expiry).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Address of the API.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig,
    /// Create the four topics (idempotent).
    CreateTopics,
    /// Print a device's log request in the API response shape.
    Status(DeviceArgs),
    /// Publish a LogRequest command for a device.
    Request {
        #[command(flatten)]
        device: DeviceArgs,
        /// Device type (only MOBILE is accepted by the worker).
        #[arg(long, default_value = MOBILE)]
        device_type: String,
        /// Command id (default: random).
        #[arg(long)]
        id: Option<Uuid>,
        /// requestedAt, RFC 3339 (default: now).
        #[arg(long)]
        requested_at: Option<DateTime<Utc>>,
    },
    /// Publish a LogsUploaded event for a device.
    Upload {
        #[command(flatten)]
        device: DeviceArgs,
        /// The cycle the upload answers (optional).
        #[arg(long)]
        request_id: Option<Uuid>,
        /// Event id (default: random).
        #[arg(long)]
        id: Option<Uuid>,
        /// uploadedAt, RFC 3339 (default: now).
        #[arg(long)]
        uploaded_at: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Args)]
pub struct DeviceArgs {
    #[arg(long)]
    pub environment: Uuid,
    #[arg(long)]
    pub user: Uuid,
    #[arg(long)]
    pub device: Uuid,
}

impl DeviceArgs {
    fn device_ref(&self) -> DeviceRef {
        DeviceRef {
            environment: self.environment,
            user: self.user,
            device: self.device,
        }
    }
}

/// Runs a subcommand other than `run` (which `main` drives with signals).
/// Returns the process exit code.
pub async fn execute(settings: Settings, command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Run | Command::Api | Command::Dev { .. } => {
            unreachable!("main runs the long-running commands")
        }
        Command::CheckConfig => {
            print!("{}", settings.to_redacted_toml());
            Ok(0)
        }
        Command::CreateTopics => {
            for (topic, created) in kafka::create_topics(&settings.kafka).await? {
                println!("{topic}: {}", if created { "created" } else { "exists" });
            }
            Ok(0)
        }
        Command::Status(args) => {
            let store = RedisStore::connect(
                &settings.redis,
                settings.logs.retention,
                settings.outbox.lease,
                Metrics::new(&[], &[]),
            )
            .await?;
            let store = AnyStore::from(store);
            let device = args.device_ref();
            match store.get(&device).await? {
                Some(record) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&payload::api_response(
                            &record,
                            &settings.logs.links_base_url
                        ))?
                    );
                    Ok(0)
                }
                None => {
                    eprintln!(
                        "not found: no log request for environment {} user {} device {}",
                        device.environment, device.user, device.device
                    );
                    Ok(1)
                }
            }
        }
        Command::Request {
            device,
            device_type,
            id,
            requested_at,
        } => {
            let request = LogRequest {
                id: id.unwrap_or_else(Uuid::new_v4),
                device: device.device_ref(),
                device_type,
                status: "PENDING".into(),
                requested_at: requested_at.unwrap_or_else(Utc::now),
            };
            let body = payload::log_request_json(&request);
            publish(
                &settings,
                &settings.kafka.topics.requests,
                "devicelogs.logrequest.v1",
                &request.device,
                request.id,
                &body,
            )
            .await?;
            println!("{body}");
            Ok(0)
        }
        Command::Upload {
            device,
            request_id,
            id,
            uploaded_at,
        } => {
            let upload = LogsUploaded {
                id: id.unwrap_or_else(Uuid::new_v4),
                device: device.device_ref(),
                request_id,
                uploaded_at: uploaded_at.unwrap_or_else(Utc::now),
            };
            let body = payload::logs_uploaded_json(&upload);
            publish(
                &settings,
                &settings.kafka.topics.uploads,
                "devicelogs.logsuploaded.v1",
                &upload.device,
                upload.id,
                &body,
            )
            .await?;
            println!("{body}");
            Ok(0)
        }
    }
}

/// Produces one input keyed by device id and waits for the broker.
async fn publish(
    settings: &Settings,
    topic: &str,
    event_type: &str,
    device: &DeviceRef,
    id: Uuid,
    body: &serde_json::Value,
) -> anyhow::Result<()> {
    let producer = EventProducer::new(&settings.kafka)?;
    producer
        .publish_input(
            topic,
            event_type,
            device,
            id,
            &body.to_string(),
            Duration::from_secs(30),
        )
        .await?;
    Ok(())
}
