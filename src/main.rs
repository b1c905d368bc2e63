//! `device-logs`: parse the command line, load the configuration, run.

use std::process::ExitCode;

use clap::Parser;
use device_logs::cli::{self, Cli, Command};
use device_logs::config::{LogFormat, Settings};
use device_logs::dev::{self, DevOptions};
use device_logs::{api, telemetry, worker};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("device-logs: {e}");
            return ExitCode::from(2);
        }
    };
    let mut log = settings.log.clone();
    if matches!(cli.command, Command::Dev { .. }) {
        // Dev mode is read by a person at a terminal.
        log.format = LogFormat::Text;
    }
    telemetry::init(&log);
    match cli.command {
        Command::Run => {
            let code = match worker::run(settings, shutdown_signal()).await {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(error = %e, cause = ?std::error::Error::source(&e).map(|s| s.to_string()), "worker failed");
                    1
                }
            };
            // Exit here rather than return: dropping the runtime would wait
            // without limit for blocking tasks (a librdkafka close can hang
            // on an unreachable broker), breaking the shutdown bound.
            std::process::exit(code)
        }
        Command::Api => exit(api::run(settings, shutdown_signal()).await, "api"),
        Command::Dev { ttl, listen } => exit(
            dev::run(settings, DevOptions { ttl, listen }, shutdown_signal()).await,
            "dev",
        ),
        command => match cli::execute(settings, command).await {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => {
                eprintln!("device-logs: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn exit(result: anyhow::Result<()>, what: &str) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{what} failed");
            eprintln!("device-logs {what}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return interrupt.await.unwrap_or(()),
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
