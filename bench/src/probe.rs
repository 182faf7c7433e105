//! The disk's raw durable-write rate and the spread of one sync's duration, measured in
//! the same run as the queues: 4 KiB appended to a growing file and `fdatasync`ed, one
//! writer, in a loop. A durable queue's acknowledgement waits for at least one sync, so
//! its latency is at least a sync's, and its rate at most the syncs' rate times what one
//! sync carries. Optionally with threads that keep every core busy meanwhile: on the
//! development machine (2 cores, a virtual disk) that made one sync's p99 about 8 times
//! as long (0.5 to 4 ms), for a cause not pinned down. A server and its load generator
//! keep the cores busy too, if not all of the time.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

use crate::workload::histogram;

/// What one probe measured.
pub struct Syncs {
    per_second: f64,
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

/// Appends + `fdatasync`s in `dir` for `duration`, while `busy` threads spin.
pub fn fdatasync(dir: &Path, duration: Duration, busy: usize) -> Result<Syncs> {
    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..busy)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let measured = measure(dir, duration);
    stop.store(true, Ordering::Relaxed);
    for spinner in spinners {
        // A spinner cannot fail; a join error would only repeat a panic already printed.
        let _ = spinner.join();
    }
    measured
}

fn measure(dir: &Path, duration: Duration) -> Result<Syncs> {
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    let mut durations = histogram()?;
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
