//! Crash-test failpoints, enabled only by the `DEVICE_LOGS_FAILPOINT`
//! environment variable (never set in production).
//!
//! `DEVICE_LOGS_FAILPOINT=after_apply`: after a batch's Redis write returned
//! and before its events are published or its offsets stored, print
//! `failpoint after_apply reached` to stderr and stop that loop for good,
//! so a test can SIGKILL the process at exactly that point.

use std::sync::OnceLock;

const VARIABLE: &str = "DEVICE_LOGS_FAILPOINT";

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var(VARIABLE).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// Parks the calling task forever if failpoint `name` is armed.
pub async fn hit(name: &str) {
    if armed() == Some(name) {
        eprintln!("failpoint {name} reached");
        std::future::pending::<()>().await;
    }
}
