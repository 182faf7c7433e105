//! How long a log's syncs stall while a large file is written or removed beside it: the
//! figures behind `store::stepwise`. One thread appends 1 KiB and `fdatasync`s in a loop
//! (a log whose syncs need journal commits); meanwhile 64 MiB files are written and
//! removed, at once and in steps.
//!
//!     cargo run --release -p queuelet --example beside_the_log -- [DIR] [ROUNDS]
//!
//! DIR (default: a temporary directory) must be on the disk to measure. Figures, not
//! assertions: compare the rows of one run.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use queuelet::store::stepwise;

const FILE_BYTES: usize = 64 << 20;

/// (when the sync started, how long it took)
type Syncs = Arc<Mutex<Vec<(Instant, Duration)>>>;

fn sync_loop(path: &Path, stop: Arc<AtomicBool>, syncs: Syncs) -> std::io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    let record = [7u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        syncs.lock().push((started, started.elapsed()));
    }
    Ok(())
}

fn write_at_once(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn write_in_steps(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    stepwise::write_all(&mut file, bytes)?;
    file.sync_all()
}

fn remove_at_once(path: &Path) -> std::io::Result<()> {
    std::fs::remove_file(path)?;
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let temp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(4);
    let dir = dir.join("beside-the-log");
    std::fs::create_dir_all(&dir)?;
    let bytes: Vec<u8> = (0..FILE_BYTES).map(|i| (i % 251) as u8).collect();
    let big = dir.join("big");

    let stop = Arc::new(AtomicBool::new(false));
    let syncs: Syncs = Arc::default();
    let logger = {
        let (path, stop, syncs) = (dir.join("log"), stop.clone(), syncs.clone());
        std::thread::spawn(move || sync_loop(&path, stop, syncs))
    };
    std::thread::sleep(Duration::from_millis(300));

    type Step = fn(&Path, &[u8]) -> std::io::Result<()>;
    let steps: [(&str, Step); 4] = [
        ("write 64 MiB, one sync", write_at_once),
        ("unlink it", |path, _| remove_at_once(path)),
        ("write 64 MiB in synced steps", write_in_steps),
        ("remove it in synced steps", |path, _| {
            stepwise::remove(path)
        }),
    ];
    println!(
        "| operation beside the log | its time, ms | longest log sync meanwhile, ms (each round) |"
    );
    println!("|---|---|---|");
    let mut rows: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); steps.len()];
    for _ in 0..rounds {
        for ((_, step), (took, longest)) in steps.iter().zip(rows.iter_mut()) {
            std::thread::sleep(Duration::from_millis(300));
            let started = Instant::now();
            step(&big, &bytes)?;
            let ended = Instant::now();
            std::thread::sleep(Duration::from_millis(100));
            let worst = syncs
                .lock()
                .iter()
                .filter(|(at, took)| *at + *took >= started && *at <= ended)
                .map(|(_, took)| *took)
                .max()
                .unwrap_or_default();
            took.push((ended - started).as_secs_f64() * 1e3);
            longest.push(worst.as_secs_f64() * 1e3);
        }
    }
    stop.store(true, Ordering::Relaxed);
    logger
        .join()
        .map_err(|_| anyhow::anyhow!("the sync loop panicked"))??;
    let show = |values: &[f64]| {
        values
            .iter()
            .map(|v| format!("{v:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for ((label, _), (took, longest)) in steps.iter().zip(&rows) {
        println!("| {label} | {} | {} |", show(took), show(longest));
    }
    let mut all: Vec<Duration> = syncs.lock().iter().map(|(_, took)| *took).collect();
    all.sort();
    if let Some(median) = all.get(all.len() / 2) {
        println!(
            "\n{} log syncs in all; median {:.3} ms",
            all.len(),
            median.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
