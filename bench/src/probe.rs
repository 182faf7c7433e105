//! The disk's raw durable-write rate, measured in the same run as the queues: 4 KiB
//! appended to a growing file and `fdatasync`ed, one writer, in a loop. Every durable
//! queue is bounded by it, so each row can be read as a multiple of it.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Appends + `fdatasync`s per second in `dir`, measured for `duration`.
pub fn fdatasync_rate(dir: &Path, duration: Duration) -> Result<f64> {
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    let block = [7u8; 4096];
    let started = Instant::now();
    let mut syncs = 0u64;
    while started.elapsed() < duration {
        file.write_all(&block).context("append to the probe file")?;
        file.sync_data().context("fdatasync the probe file")?;
        syncs += 1;
    }
    let rate = syncs as f64 / started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
    Ok(rate)
}
