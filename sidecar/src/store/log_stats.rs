//! What the log's writer measures, for the metrics endpoint: how long each `fdatasync`
//! takes (the disk's health, and the floor of a durable send's latency), how many records
//! each group commit carries, and how many bytes reach the log.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Cheap to clone: every clone feeds the same figures.
#[derive(Debug, Clone)]
pub struct LogStats {
    sync_seconds: Histogram,
    commit_records: Histogram,
    written_bytes: Counter,
}

impl Default for LogStats {
    fn default() -> Self {
        Self {
            // 50 µs to 1.6 s: an idle disk here syncs in 0.2 ms, a busy one in tens.
            sync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            // 1 to 4096 records.
            commit_records: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            written_bytes: Counter::default(),
        }
    }
}

impl LogStats {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "log_sync_duration_seconds",
            "Time each fdatasync of the log took",
            self.sync_seconds.clone(),
        );
        registry.register(
            "log_commit_records",
            "Records written by each group commit of the log",
            self.commit_records.clone(),
        );
        registry.register(
            "log_written_bytes",
            "Bytes of records written to the log",
            self.written_bytes.clone(),
        );
    }

    pub(super) fn synced(&self, seconds: f64) {
        self.sync_seconds.observe(seconds);
    }

    pub(super) fn committed(&self, records: usize, bytes: usize) {
        self.commit_records.observe(records as f64);
        self.written_bytes.inc_by(bytes as u64);
    }
}
