//! Storage figures: sends/s through the engine and the write-ahead log in `fsync` and
//! `interval` modes with 1, 8 and 64 producers (batches of 1 and 16), next to the raw
//! `fdatasync` rate of the same disk measured by a simple loop in the same run; memory
//! per queued message; recovery time from the log and from a checkpoint; the pause a
//! checkpoint imposes.
//!
//!     cargo run --release -p queuelet --example storage_bench -- [DIR] [--quick]
//!
//! DIR (default: a temporary directory) must be on the disk to measure. `--quick` runs
//! small sizes only. Figures, not assertions: compare them within one run.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
#[path = "../benches/support/durable_engine.rs"]
mod durable_engine;

use durable_engine::open;
use queuelet::compaction::compact_once;
use queuelet::engine::{Engine, NewMessage, Origin, QueueAttributes};
use queuelet::store::Durability;

fn raw_fdatasync_rate(dir: &Path, seconds: f64) -> anyhow::Result<f64> {
    let path = dir.join("raw-fsync-probe");
    let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
    let block = vec![7u8; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        file.write_all(&block)?;
        file.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

fn queue_attrs() -> QueueAttributes {
    QueueAttributes {
        max_backlog: 1_000_000_000,
        ..QueueAttributes::default()
    }
}

/// Sends/s with `producers` tasks sending batches of `batch` for `seconds`.
async fn send_rate(
    dir: &Path,
    durability: Durability,
    producers: usize,
    batch: usize,
    seconds: f64,
) -> anyhow::Result<f64> {
    let (engine, store) = open(dir, durability)?;
    engine
        .create_queue("bench", queue_attrs(), Origin::Api)
        .await?;
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let body = Bytes::from(vec![b'x'; 256]);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let (engine, sent, stop, body) = (engine.clone(), sent.clone(), stop.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let messages = (0..batch)
                    .map(|_| NewMessage {
                        body: body.clone(),
                        ..NewMessage::default()
                    })
                    .collect();
                if engine.send("bench", messages).await.is_ok() {
                    sent.fetch_add(batch as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    let rate = sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    store.close();
    Ok(rate)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// Fills a queue with `count` messages of `size` bytes through 16 producers.
async fn fill(engine: &Arc<Engine>, count: usize, size: usize) -> anyhow::Result<()> {
    let body = Bytes::from(vec![b'y'; size]);
    let per_task = count / 16;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (engine, body) = (engine.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut left = per_task;
            while left > 0 {
                let n = left.min(16);
                let messages = (0..n)
                    .map(|_| NewMessage {
                        body: body.clone(),
                        ..NewMessage::default()
                    })
                    .collect();
                engine.send("bench", messages).await?;
                left -= n;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let temp = tempfile::tempdir()?;
    let base = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&base)?;
    let seconds = if quick { 0.5 } else { 3.0 };
    let mut run = 0;
    let mut fresh = || {
        run += 1;
        let dir = base.join(format!("run-{run}"));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    };

    let raw = raw_fdatasync_rate(&base, seconds)?;
    println!("raw 4 KiB append + fdatasync loop: {raw:.0}/s\n");
    println!("| mode | producers | batch | sends/s | sends per raw fdatasync |");
    println!("|---|---|---|---|---|");
    for (label, durability) in [
        ("fsync", Durability::Fsync),
        (
            "interval 10 ms",
            Durability::Interval(Duration::from_millis(10)),
        ),
    ] {
        for producers in [1, 8, 64] {
            for batch in [1, 16] {
                let rate = send_rate(&fresh(), durability, producers, batch, seconds).await?;
                println!(
                    "| {label} | {producers} | {batch} | {rate:.0} | {:.1} |",
                    rate / raw
                );
            }
        }
    }

    let (count, size) = if quick {
        (100_000, 1024)
    } else {
        (1_000_000, 1024)
    };
    let dir = fresh();
    let (engine, store) = open(&dir, Durability::Interval(Duration::from_millis(10)))?;
    engine
        .create_queue("bench", queue_attrs(), Origin::Api)
        .await?;
    let before = rss_bytes();
    fill(&engine, count, size).await?;
    let after = rss_bytes();
    println!(
        "\nmemory: {count} queued {size}-byte messages grew the resident set by {:.1} MiB: {:.0} bytes per message",
        (after.saturating_sub(before)) as f64 / (1 << 20) as f64,
        after.saturating_sub(before) as f64 / count as f64
    );
    store.close();
    drop(engine);
    drop(store);

    let (count, size) = if quick {
        (100_000, 256)
    } else {
        (1_000_000, 256)
    };
    let dir = fresh();
    {
        let (engine, store) = open(&dir, Durability::Interval(Duration::from_millis(10)))?;
        engine
            .create_queue("bench", queue_attrs(), Origin::Api)
            .await?;
        fill(&engine, count, size).await?;
        store.close();
    }
    let started = Instant::now();
    let (engine, store) = open(&dir, Durability::Fsync)?;
    let elapsed = started.elapsed();
    let stats = engine.get_queue("bench").await?.stats;
    println!(
        "recovery from the log alone: {} queued {size}-byte messages rebuilt in {:.2} s",
        stats.active,
        elapsed.as_secs_f64()
    );
    let round = compact_once(&engine, &store, &mut Default::default()).await?;
    println!(
        "checkpoint of {} messages: every queue paused for {:.1} ms",
        stats.active,
        round.pause.as_secs_f64() * 1e3
    );
    store.close();
    drop(engine);
    drop(store);
    let started = Instant::now();
    let (engine, store) = open(&dir, Durability::Fsync)?;
    let elapsed = started.elapsed();
    let stats = engine.get_queue("bench").await?.stats;
    println!(
        "recovery from the checkpoint: {} queued {size}-byte messages rebuilt in {:.2} s",
        stats.active,
        elapsed.as_secs_f64()
    );
    store.close();
    Ok(())
}
