//! The operator's Prometheus metrics: reconciles by result and their durations, writes
//! to the API server, and whether this replica leads. Served by `http` at `/metrics`.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Result {
    Success,
    TransientError,
    PermanentError,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: Result,
}

fn duration_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    durations: Family<ResultLabels, Histogram, fn() -> Histogram>,
    pub children_applied: Counter,
    pub status_writes: Counter,
    pub leader: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("queuelet_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let durations: Family<ResultLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        let children_applied = Counter::default();
        let status_writes = Counter::default();
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "reconciles",
            "MessageQueue reconciles by result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of MessageQueue reconciles by result",
            durations.clone(),
        );
        registry.register(
            "children_applied",
            "Child objects applied with server-side apply",
            children_applied.clone(),
        );
        registry.register(
            "status_writes",
            "MessageQueue status writes (only changed statuses are written)",
            status_writes.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (or runs without leader election)",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            durations,
            children_applied,
            status_writes,
            leader,
        }
    }
}

impl Metrics {
    /// Counts one reconcile that ended with `result` after `took`.
    pub fn reconciled(&self, result: Result, took: Duration) {
        let labels = ResultLabels { result };
        self.reconciles.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Reconciles that ended with `result` so far.
    pub fn reconciles(&self, result: Result) -> u64 {
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .get()
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_durations_and_leadership() {
        let metrics = Metrics::default();
        metrics.reconciled(Result::Success, Duration::from_millis(3));
        metrics.reconciled(Result::PermanentError, Duration::from_millis(40));
        metrics.children_applied.inc_by(7);
        metrics.leader.set(1);
        let text = metrics.render();
        for line in [
            "queuelet_operator_reconciles_total{result=\"Success\"} 1",
            "queuelet_operator_reconciles_total{result=\"PermanentError\"} 1",
            "queuelet_operator_reconcile_duration_seconds_count{result=\"Success\"} 1",
            "queuelet_operator_children_applied_total 7",
            "queuelet_operator_leader 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(metrics.reconciles(Result::Success), 1);
    }
}
