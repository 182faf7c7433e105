//! What every reconcile shares: the API client, the one events recorder of the process,
//! the operator's defaults, counters, and the per-object retry backoff.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::build::{Defaults, MANAGER, generate_token};

/// First retry delay of a transient error; doubled on each further failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest delay between retries of a transient error.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

pub struct Context {
    pub client: Client,
    /// One recorder for the process, so repeated events are aggregated into series.
    pub recorder: Recorder,
    pub defaults: Defaults,
    pub metrics: Metrics,
    /// Makes the token of a new credentials Secret (fixed in tests).
    pub new_token: fn() -> String,
    /// Consecutive transient failures per `namespace/name`, reset by a success.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// `instance` identifies this operator process in events (its pod name).
    pub fn new(client: Client, defaults: Defaults, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            defaults,
            metrics: Metrics::default(),
            new_token: generate_token,
            failures: Mutex::default(),
        }
    }

    /// Records one more transient failure of `key` and returns how long to wait.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock");
        let n = failures.entry(key.to_owned()).or_insert(0);
        let delay = backoff_delay(*n);
        *n = n.saturating_add(1);
        delay
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

/// Counters of the controller (exported by a /metrics endpoint later).
#[derive(Debug, Default)]
pub struct Metrics {
    pub reconciles: AtomicU64,
    pub failures: AtomicU64,
    pub children_applied: AtomicU64,
    pub status_writes: AtomicU64,
}

impl Metrics {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
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
