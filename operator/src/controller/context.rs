//! What every reconcile shares: the API client, the one events recorder of the process,
//! the operator's defaults, its metrics, the queue pods' HTTP client, and the per-object
//! retry backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use super::sidecars::Sidecars;
use crate::build::{Defaults, MANAGER, generate_token};
use crate::metrics::Metrics;

/// First retry delay of a transient error; doubled on each further failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest delay between retries of a transient error.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Shortest time between two status writes that change only the queue counts.
pub const COUNTS_PERIOD: Duration = Duration::from_secs(30);

pub struct Context {
    pub client: Client,
    /// One recorder for the process, so repeated events are aggregated into series.
    pub recorder: Recorder,
    pub defaults: Defaults,
    /// Shared with the HTTP server that exports them.
    pub metrics: Arc<Metrics>,
    /// Reads the queue pods' counts (pointed at local servers in tests).
    pub sidecars: Sidecars,
    /// Makes the token of a new credentials Secret (fixed in tests).
    pub new_token: fn() -> String,
    /// Consecutive transient failures per `namespace/name`, reset by a success.
    failures: Mutex<HashMap<String, u32>>,
    /// When the queue counts of each `namespace/name` were last written.
    counts_written: Mutex<HashMap<String, Instant>>,
}

impl Context {
    /// `instance` identifies this operator process in events (its pod name).
    /// Fails only when no HTTP client for the queue pods can be built.
    pub fn new(
        client: Client,
        defaults: Defaults,
        instance: Option<String>,
    ) -> Result<Self, reqwest::Error> {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance,
        };
        Ok(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            defaults,
            metrics: Arc::default(),
            sidecars: Sidecars::new()?,
            new_token: generate_token,
            failures: Mutex::default(),
            counts_written: Mutex::default(),
        })
    }

    /// Records one more transient failure of `key` and returns how long to wait.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock");
        let n = failures.entry(key.to_owned()).or_insert(0);
        let delay = backoff_delay(*n);
        *n = n.saturating_add(1);
        delay
    }

    /// True when the counts of `key` were not written within `COUNTS_PERIOD`: each
    /// count-only write wakes the controller once more, so they are rationed.
    pub fn counts_due(&self, key: &str) -> bool {
        let written = self.counts_written.lock().expect("counts lock");
        written
            .get(key)
            .is_none_or(|at| at.elapsed() >= COUNTS_PERIOD)
    }

    /// Notes that the status of `key`, with its counts, was just written.
    pub fn counts_written(&self, key: &str) {
        self.counts_written
            .lock()
            .expect("counts lock")
            .insert(key.to_owned(), Instant::now());
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().expect("backoff lock").remove(key);
    }
}

/// `BACKOFF_BASE * 2^failures`, capped at `BACKOFF_MAX`.
pub fn backoff_delay(failures: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(failures.min(16)))
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff_delay(0), Duration::from_secs(5));
        assert_eq!(backoff_delay(1), Duration::from_secs(10));
        assert_eq!(backoff_delay(3), Duration::from_secs(40));
        assert_eq!(backoff_delay(6), BACKOFF_MAX);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }
}
