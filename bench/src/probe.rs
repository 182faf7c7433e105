//! The disk's raw durable-write rate and the spread of one sync's duration, measured in
//! the same run as the queues: 4 KiB appended to a growing file and `fdatasync`ed, one
//! writer, in a loop. Every durable queue is bounded by the rate, and its latency tail
//! by the tail of the syncs.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

/// What one probe measured.
pub struct Syncs {
    pub per_second: f64,
    /// Durations of one append + `fdatasync`, in microseconds.
    durations: Histogram<u64>,
}

impl fmt::Display for Syncs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |q: f64| self.durations.value_at_quantile(q) as f64 / 1_000.0;
        write!(
            f,
            "{:.0}/s, one sync p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.per_second,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.durations.max() as f64 / 1_000.0
        )
    }
}

/// Appends + `fdatasync`s in `dir` for `duration`.
pub fn fdatasync(dir: &Path, duration: Duration) -> Result<Syncs> {
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // From 1 µs to a minute, 3 significant digits.
    let mut durations =
        Histogram::new_with_bounds(1, 60_000_000, 3).context("sync duration histogram")?;
    let block = [7u8; 4096];
    let started = Instant::now();
    while started.elapsed() < duration {
        let sync_started = Instant::now();
        file.write_all(&block).context("append to the probe file")?;
        file.sync_data().context("fdatasync the probe file")?;
        let micros = u64::try_from(sync_started.elapsed().as_micros()).unwrap_or(u64::MAX);
        durations.saturating_record(micros.max(1));
    }
    let per_second = durations.len() as f64 / started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
    Ok(Syncs {
        per_second,
        durations,
    })
}
