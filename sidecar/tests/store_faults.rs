//! The store under faults: a machine crash that loses the page cache, torn tails, flipped
//! bits, a full disk (simulated, and a real tmpfs when the machine lets us mount one) and a
//! failed fsync. Every log write goes through the `LogFs` seam, so a fault-injecting file
//! system wrapping real files in a temporary directory decides what "reaches the disk".

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use queuelet::engine::record::{BodyLoc, BodyRef, Journal, JournalErrorKind, Record};
use queuelet::engine::{
    Engine, EngineConfig, EngineError, LateJournal, NewMessage, Origin, QueueAttributes,
    SystemClock,
};
use queuelet::store::file::{LogFile, LogFs, RealFs, Syncer, ZERO_AHEAD};
use queuelet::store::log::{LogOptions, segment_path};
use queuelet::store::repair::repair;
use queuelet::store::{Durability, Recovered, Store, StoreError};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tempfile::TempDir;
use tokio::task::JoinSet;

const ENOSPC: i32 = 28;
const EIO: i32 = 5;

// ---------------------------------------------------------------------------------------
// The fault-injecting file system.

/// What one segment file holds: bytes written, and how many of them a sync made durable.
#[derive(Debug, Clone, Copy, Default)]
struct FileState {
    len: u64,
    synced: u64,
}

/// The simulated disk, shared by the file system and every file it opened. Each operation
/// runs under its lock, so a crash happens between two operations, never inside one.
#[derive(Debug, Default)]
struct Disk {
    /// The machine crashed: every later operation fails.
    crashed: bool,
    /// Syncs (and the syncing truncate) fail with EIO while set.
    fail_sync: bool,
    /// Most bytes the tracked files may hold together; appends beyond fail with ENOSPC
    /// after writing what still fits.
    budget: Option<u64>,
    /// How long a sync takes; a crash during it loses what it was syncing.
    sync_delay: Duration,
    files: BTreeMap<PathBuf, FileState>,
    syncs: u64,
    failed_syncs: u64,
}

impl Disk {
    fn used(&self) -> u64 {
        self.files.values().map(|f| f.len).sum()
    }
}

/// What a machine crash left of one file.
#[derive(Debug, Clone, Copy)]
struct Image {
    written: u64,
    synced: u64,
    kept: u64,
}

#[derive(Clone, Default)]
struct FaultFs {
    disk: Arc<Mutex<Disk>>,
}

fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl FaultFs {
    /// Lets the files grow by `room` more bytes (`None`: no limit).
    fn set_room(&self, room: Option<u64>) {
        let mut disk = self.disk.lock();
        disk.budget = room.map(|room| disk.used() + room);
    }

    fn set_fail_sync(&self, fail: bool) {
        self.disk.lock().fail_sync = fail;
    }

    fn used(&self) -> u64 {
        self.disk.lock().used()
    }

    /// The newest segment written through this file system: its id and length.
    fn newest(&self) -> (u32, u64) {
        let disk = self.disk.lock();
        let (path, file) = disk.files.last_key_value().expect("a segment");
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok());
        (id.expect("a segment name"), file.len)
    }

    fn file(&self, path: &Path) -> FileState {
        self.disk
            .lock()
            .files
            .get(path)
            .copied()
            .unwrap_or_default()
    }

    /// The machine loses power now: nothing more is written or synced, and each file
    /// keeps what was synced plus, when `torn`, a random prefix of what was not.
    fn crash(&self, torn: bool, rng: &mut SmallRng) -> BTreeMap<PathBuf, Image> {
        let mut disk = self.disk.lock();
        disk.crashed = true;
        let mut images = BTreeMap::new();
        for (path, file) in &disk.files {
            let kept = if torn {
                rng.random_range(file.synced..=file.len)
            } else {
                file.synced
            };
            OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(kept))
                .expect("cutting a file back to what reached the disk");
            images.insert(
                path.clone(),
                Image {
                    written: file.len,
                    synced: file.synced,
                    kept,
                },
            );
        }
        images
    }
}

struct FaultFile {
    path: PathBuf,
    file: File,
    disk: Arc<Mutex<Disk>>,
}

impl LogFile for FaultFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut disk = self.disk.lock();
        if disk.crashed {
            return Err(os_error(EIO));
        }
        let room = disk
            .budget
            .map_or(u64::MAX, |budget| budget.saturating_sub(disk.used()));
        let fits = (buf.len() as u64).min(room) as usize;
        self.file.write_all(&buf[..fits])?;
        disk.files.entry(self.path.clone()).or_default().len += fits as u64;
        if fits < buf.len() {
            return Err(os_error(ENOSPC));
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.syncer()?.sync()
    }

    fn syncer(&self) -> io::Result<Box<dyn Syncer>> {
        Ok(Box::new(FaultSyncer {
            path: self.path.clone(),
            disk: self.disk.clone(),
        }))
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut disk = self.disk.lock();
        if disk.crashed || disk.fail_sync {
            return Err(os_error(EIO));
        }
        self.file.set_len(len)?;
        // Like the real file, a truncate is synced.
        let file = disk.files.entry(self.path.clone()).or_default();
        file.len = len;
        file.synced = len;
        Ok(())
    }
}

struct FaultSyncer {
    path: PathBuf,
    disk: Arc<Mutex<Disk>>,
}

impl Syncer for FaultSyncer {
    /// Makes durable what was written when it began; appends may go on meanwhile.
    fn sync(&self) -> io::Result<()> {
        let (delay, written) = {
            let mut disk = self.disk.lock();
            if disk.crashed || disk.fail_sync {
                disk.failed_syncs += 1;
                return Err(os_error(EIO));
            }
            let written = disk.files.get(&self.path).map_or(0, |file| file.len);
            (disk.sync_delay, written)
        };
        std::thread::sleep(delay);
        let mut disk = self.disk.lock();
        if disk.crashed {
            disk.failed_syncs += 1;
            return Err(os_error(EIO));
        }
        disk.syncs += 1;
        let file = disk.files.entry(self.path.clone()).or_default();
        // A truncate meanwhile (a failed write undone) may have cut the file shorter.
        file.synced = file.synced.max(written.min(file.len));
        Ok(())
    }
}

impl LogFs for FaultFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let mut disk = self.disk.lock();
        if disk.crashed {
            return Err(os_error(EIO));
        }
        if disk.budget.is_some_and(|budget| disk.used() >= budget) {
            return Err(os_error(ENOSPC));
        }
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)?;
        disk.files.insert(path.to_path_buf(), FileState::default());
        Ok(Box::new(FaultFile {
            path: path.to_path_buf(),
            file,
            disk: self.disk.clone(),
        }))
    }

    fn open_append(&self, path: &Path, len: u64) -> io::Result<Box<dyn LogFile>> {
        let mut disk = self.disk.lock();
        if disk.crashed {
            return Err(os_error(EIO));
        }
        let file = OpenOptions::new().append(true).open(path)?;
        if file.metadata()?.len() != len {
            file.set_len(len)?;
        }
        // What recovery read back is on the disk already.
        disk.files
            .insert(path.to_path_buf(), FileState { len, synced: len });
        Ok(Box::new(FaultFile {
            path: path.to_path_buf(),
            file,
            disk: self.disk.clone(),
        }))
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// A unique body: the id, then pseudo-random bytes of a length chosen by the id.
fn body_for(id: u64) -> Bytes {
    let mut rng = SmallRng::seed_from_u64(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x51);
    let len = rng.random_range(0..300usize);
    let mut body = id.to_le_bytes().to_vec();
    body.resize(8 + len, 0);
    rng.fill(&mut body[8..]);
    Bytes::from(body)
}

fn enqueued(id: u64, body: Bytes) -> Record {
    Record::Enqueued {
        queue: "faults".into(),
        seq: id,
        enqueued_ms: 1_000 + id,
        visible_at_ms: 1_000 + id,
        tags: vec![format!("t{}", id % 3)],
        body: BodyRef::Bytes(body),
    }
}

/// The id and stored body of a replayed record.
fn stored(record: Record) -> (u64, BodyLoc) {
    match record {
        Record::Enqueued {
            seq,
            body: BodyRef::Stored(loc),
            ..
        } => (seq, loc),
        other => panic!("unexpected record replayed: {other:?}"),
    }
}

fn real() -> Arc<dyn LogFs> {
    Arc::new(RealFs)
}

fn options(durability: Durability, segment_bytes: u64) -> LogOptions {
    LogOptions {
        durability,
        segment_bytes,
        ..LogOptions::default()
    }
}

/// `Store::open`, waiting a little while the directory is locked: a subprocess forked by a
/// concurrent test (mount, umount) holds a copy of every descriptor, the lock's too,
/// until it execs.
fn open_store(
    data_dir: &Path,
    options: LogOptions,
    fs: Arc<dyn LogFs>,
    apply: &mut dyn FnMut(Record),
) -> Result<(Store, Recovered), StoreError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Store::open(data_dir, options.clone(), fs.clone(), apply) {
            Err(StoreError::Locked(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            result => return result,
        }
    }
}

/// A reopened store, what recovery reports, and what it replayed as (id, location).
type Opened = (Store, Recovered, Vec<(u64, BodyLoc)>);

/// Opens the store and collects what it replays.
fn open(data_dir: &Path, options: LogOptions, fs: Arc<dyn LogFs>) -> Result<Opened, StoreError> {
    let mut replayed = Vec::new();
    let (store, recovered) = open_store(data_dir, options, fs, &mut |record| {
        replayed.push(stored(record));
    })?;
    assert_eq!(recovered.records, replayed.len() as u64);
    Ok((store, recovered, replayed))
}

/// Checks every replayed message against the one written under its id.
fn check_bodies(store: &Store, replayed: &[(u64, BodyLoc)]) {
    for &(id, loc) in replayed {
        let (body, tags) = store
            .read_message(loc)
            .unwrap_or_else(|e| panic!("reading message {id} at {loc:?}: {e}"));
        assert_eq!(body, body_for(id), "body of record {id} differs");
        assert_eq!(
            tags,
            vec![format!("t{}", id % 3)],
            "tags of record {id} differ"
        );
    }
}

fn ids(replayed: &[(u64, BodyLoc)]) -> Vec<u64> {
    replayed.iter().map(|(id, _)| *id).collect()
}

/// Appends one record and waits until it is acknowledged.
async fn append_one(store: &Store, id: u64) -> Result<BodyLoc, JournalErrorKind> {
    match store.append(vec![enqueued(id, body_for(id))]).await {
        Ok(locs) => Ok(locs[0].expect("an enqueued body is stored")),
        Err(e) => Err(e.kind),
    }
}

/// Where the frame of a stored message ends (its location may name the whole frame, or
/// just the body, which is the frame's last field).
fn frame_end(loc: &BodyLoc) -> u64 {
    u64::from(loc.offset) + u64::from(loc.len)
}

/// Copies the log of `from` into a fresh data directory.
fn copy_data_dir(from: &Path) -> TempDir {
    let to = tempfile::tempdir().expect("temporary directory");
    std::fs::create_dir(to.path().join("log")).expect("log directory");
    for entry in std::fs::read_dir(from.join("log")).expect("listing the log") {
        let entry = entry.expect("directory entry");
        std::fs::copy(entry.path(), to.path().join("log").join(entry.file_name()))
            .expect("copying a segment");
    }
    to
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .expect("truncating a segment");
}

/// One frame of the log, located from the acknowledgement of its record.
#[derive(Debug, Clone, Copy)]
struct Frame {
    id: u64,
    segment: u32,
    start: u64,
    end: u64,
}

/// The frames of records appended one by one, in log order.
fn frames(written: &[(u64, BodyLoc)]) -> Vec<Frame> {
    let mut out: Vec<Frame> = Vec::new();
    for &(id, loc) in written {
        let start = match out.last() {
            Some(prev) if prev.segment == loc.segment => prev.end,
            _ => 0,
        };
        out.push(Frame {
            id,
            segment: loc.segment,
            start,
            end: frame_end(&loc),
        });
    }
    out
}

/// Writes `count` records one append at a time into a fresh store, closes it, and
/// returns the directory and the frames.
async fn write_log(count: u64, segment_bytes: u64) -> (TempDir, Vec<Frame>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (store, _, replayed) = open(
        dir.path(),
        options(Durability::Fsync, segment_bytes),
        real(),
    )
    .expect("opening a fresh store");
    assert!(replayed.is_empty());
    let mut written = Vec::new();
    for id in 0..count {
        let loc = append_one(&store, id).await.expect("append");
        written.push((id, loc));
    }
    store.close();
    drop(store);
    let frames = frames(&written);
    // The frames tile every segment exactly.
    let log = dir.path().join("log");
    let mut segments: Vec<u32> = frames.iter().map(|f| f.segment).collect();
    segments.dedup();
    for segment in segments {
        let end = frames.iter().rfind(|f| f.segment == segment).unwrap().end;
        let len = std::fs::metadata(segment_path(&log, segment))
            .unwrap()
            .len();
        assert_eq!(end, len, "frames of segment {segment} do not tile it");
    }
    (dir, frames)
}

// ---------------------------------------------------------------------------------------
// 1. Machine crash.

struct CrashRound {
    acked: usize,
    lost: usize,
    /// Some file held written but unsynced bytes when the machine crashed.
    unsynced_at_crash: bool,
}

/// Many appenders run until the machine crashes at a random moment; the log is then
/// reopened with the real file system and checked against what was acknowledged.
async fn crash_round(seed: u64, durability: Durability, torn: bool) -> CrashRound {
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temporary directory");
    let log_dir = dir.path().join("log");
    let fs = FaultFs::default();
    // A slow sync widens the window in which written bytes are not yet durable, and lets
    // appends pile up into group commits.
    fs.disk.lock().sync_delay = Duration::from_micros(300);
    let options = options(durability, 16 << 10);
    let (store, _, replayed) =
        open(dir.path(), options.clone(), Arc::new(fs.clone())).expect("opening");
    assert!(replayed.is_empty());
    let store = Arc::new(store);
    let next_id = Arc::new(AtomicU64::new(0));
    // Acknowledged appends, one list of (id, location) per request.
    let acked = Arc::new(Mutex::new(Vec::<Vec<(u64, BodyLoc)>>::new()));
    let mut appenders = JoinSet::new();
    for _ in 0..12 {
        let (store, next_id, acked) = (store.clone(), next_id.clone(), acked.clone());
        let per_append = rng.random_range(1..=3u64);
        appenders.spawn(async move {
            loop {
                let ids: Vec<u64> = (0..per_append)
                    .map(|_| next_id.fetch_add(1, Ordering::SeqCst))
                    .collect();
                let records = ids.iter().map(|&id| enqueued(id, body_for(id))).collect();
                match store.append(records).await {
                    Ok(locs) => {
                        assert_eq!(locs.len(), ids.len());
                        acked.lock().push(
                            ids.iter()
                                .zip(locs)
                                .map(|(&id, loc)| (id, loc.expect("stored body")))
                                .collect(),
                        );
                    }
                    Err(_) => return,
                }
                // An interval-mode append is ready at once: yield as a request handler
                // does at its I/O, or the appenders keep every worker to themselves.
                tokio::task::yield_now().await;
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.lock().iter().map(Vec::len).sum::<usize>() < 10 {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: appends are not acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
    let images = fs.crash(torn, &mut rng);
    // Every append fails from the crash on, so the appenders stop by themselves.
    while let Some(result) = appenders.join_next().await {
        result.expect("appender task");
    }
    let issued = next_id.load(Ordering::SeqCst);
    tokio::task::spawn_blocking(move || drop(store))
        .await
        .expect("dropping the crashed store");
    let acked = std::mem::take(&mut *acked.lock());

    let (store, recovered, replayed) =
        open(dir.path(), options, real()).expect("recovery after a machine crash");
    if !torn {
        assert_eq!(
            recovered.truncated, None,
            "seed {seed}: synced data ends on a record boundary"
        );
    }
    let mut seen = HashSet::new();
    for &(id, _) in &replayed {
        assert!(id < issued, "seed {seed}: record {id} was never appended");
        assert!(seen.insert(id), "seed {seed}: record {id} replayed twice");
    }
    check_bodies(&store, &replayed);
    let mut lost = 0;
    for request in &acked {
        // A request's records share one segment and are kept or dropped together: they
        // survive exactly when the request's last frame wholly reached the disk.
        let Some(&(_, last)) = request.last() else {
            continue;
        };
        let image = images
            .get(&segment_path(&log_dir, last.segment))
            .copied()
            .expect("every segment was written through the fault fs");
        let survives = frame_end(&last) <= image.kept;
        for (id, loc) in request {
            assert_eq!(
                loc.segment, last.segment,
                "seed {seed}: a request spans segments"
            );
            assert!(frame_end(loc) <= image.written);
            if durability == Durability::Fsync {
                assert!(
                    frame_end(loc) <= image.synced,
                    "seed {seed}: record {id} was acknowledged before it was synced"
                );
            }
            assert_eq!(
                seen.contains(id),
                survives,
                "seed {seed}: record {id} at {loc:?} (request ending at {}), disk kept {image:?}",
                frame_end(&last)
            );
            lost += usize::from(!survives);
        }
    }
    // Recovery left the log appendable.
    let loc = append_one(&store, u64::MAX / 2).await;
    assert!(loc.is_ok(), "seed {seed}: append after recovery: {loc:?}");
    CrashRound {
        acked: acked.iter().map(Vec::len).sum(),
        lost,
        unsynced_at_crash: images.values().any(|i| i.written > i.synced),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsynced_writes_are_lost_but_nothing_acknowledged_is() {
    // Fsync: an acknowledgement means synced, so a crash loses nothing acknowledged,
    // torn unsynced tail or not.
    let mut unsynced_at_crash = 0;
    for seed in 0..8 {
        let round = crash_round(seed, Durability::Fsync, seed % 2 == 1).await;
        assert_eq!(round.lost, 0, "seed {seed}");
        unsynced_at_crash += usize::from(round.unsynced_at_crash);
    }
    assert!(
        unsynced_at_crash > 0,
        "no crash ever caught a write before its sync"
    );

    // Interval: acknowledged once written, so a crash before the next sync may lose
    // acknowledged records — exactly those whose frames lay beyond the synced length.
    let mut lost = 0;
    for seed in 100..104 {
        let round = crash_round(
            seed,
            Durability::Interval(Duration::from_secs(3600)),
            seed % 2 == 1,
        )
        .await;
        assert!(round.lost <= round.acked);
        lost += round.lost;
    }
    assert!(lost > 0, "the interval mode lost nothing: was it synced?");
    for seed in 200..202 {
        crash_round(seed, Durability::Interval(Duration::from_millis(3)), false).await;
    }

    // Deterministically: with no sync due, the records after the last segment roll (which
    // syncs) are acknowledged and lost; once the interval has passed, nothing is.
    for (interval, expect_loss) in [
        (Duration::from_secs(3600), true),
        (Duration::from_millis(20), false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultFs::default();
        let options = options(Durability::Interval(interval), 2048);
        let (store, _, _) = open(dir.path(), options.clone(), Arc::new(fs.clone())).unwrap();
        let mut acked = Vec::new();
        for id in 0..60 {
            acked.push((id, append_one(&store, id).await.unwrap()));
        }
        if !expect_loss {
            // The writer syncs by itself once the interval has passed.
            let deadline = Instant::now() + Duration::from_secs(10);
            while fs.disk.lock().files.values().any(|f| f.synced < f.len) {
                assert!(Instant::now() < deadline, "no sync after the interval");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let images = fs.crash(false, &mut SmallRng::seed_from_u64(1));
        drop(store);
        let last = acked.last().unwrap().1.segment;
        let (store, recovered, replayed) = open(dir.path(), options, real()).unwrap();
        assert_eq!(recovered.truncated, None);
        check_bodies(&store, &replayed);
        let expected: Vec<u64> = acked
            .iter()
            .filter(|(_, loc)| !expect_loss || loc.segment < last)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(ids(&replayed), expected, "interval {interval:?}");
        let image = images[&segment_path(&dir.path().join("log"), last)];
        if expect_loss {
            assert!(expected.len() < acked.len());
            assert_eq!(image.synced, 0, "the newest segment was never synced");
        } else {
            assert_eq!(image.synced, image.written);
        }
    }
}

/// In the interval mode appends write on the caller's thread and the timer's sync runs
/// beside them: a slow sync holds no append up, and what was appended meanwhile is left
/// for the next sync, not counted as synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_appends_go_on_while_a_sync_runs() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::default();
    fs.disk.lock().sync_delay = Duration::from_secs(3);
    let options = options(Durability::Interval(Duration::from_millis(5)), 1 << 20);
    let (store, _, _) = open(dir.path(), options, Arc::new(fs.clone())).unwrap();
    append_one(&store, 0).await.unwrap();
    // The timer's sync starts within the interval and then takes 3 s.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before_sync = fs.newest().1;
    for id in 1..=20 {
        append_one(&store, id).await.unwrap();
    }
    let (segment, written) = fs.newest();
    assert!(written > before_sync);
    assert_eq!(
        fs.disk.lock().syncs,
        0,
        "the appends waited for the sync that was running"
    );
    let path = segment_path(&dir.path().join("log"), segment);
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs.disk.lock().syncs == 0 {
        assert!(Instant::now() < deadline, "the first sync never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = fs.file(&path).synced;
    assert!(
        first >= before_sync && first < written,
        "the first sync covered {first} bytes: it began at {before_sync}, {written} were written"
    );
    // The next sync, one interval later, takes the rest.
    while fs.file(&path).synced < written {
        assert!(
            Instant::now() < deadline,
            "what was appended meanwhile was never synced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fs.disk.lock().sync_delay = Duration::ZERO;
}

// ---------------------------------------------------------------------------------------
// 2. Torn tails.

/// Reading many stored messages at once (a receive's batch) answers each in the order
/// asked, across segments and gaps, like reading them one by one; a damaged one fails
/// alone.
#[tokio::test]
async fn reading_many_messages_at_once_matches_reading_each() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = open(dir.path(), options(Durability::Fsync, 8 << 10), real()).unwrap();
    let mut locs = Vec::new();
    for id in 0..60 {
        locs.push(append_one(&store, id).await.unwrap());
    }
    assert!(
        locs.iter().any(|l| l.segment != locs[0].segment),
        "needs two segments"
    );
    let asked: Vec<u64> = vec![59, 3, 4, 5, 10, 30, 31, 0, 58, 57, 12, 11];
    let wanted: Vec<BodyLoc> = asked.iter().map(|&id| locs[id as usize]).collect();
    let answers = store.read_messages(&wanted);
    assert_eq!(answers.len(), asked.len());
    for ((id, loc), answer) in asked.iter().zip(&wanted).zip(answers) {
        let (body, tags) = answer.unwrap_or_else(|e| panic!("message {id}: {e}"));
        assert_eq!(body, body_for(*id), "body of message {id}");
        assert_eq!((body, tags), store.read_message(*loc).unwrap());
    }

    // Flip the last byte of message 4's frame (its body).
    let damaged = locs[4];
    let path = segment_path(&dir.path().join("log"), damaged.segment);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let at = u64::from(damaged.offset + damaged.len - 1);
    let mut byte = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, at).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[byte[0] ^ 0x40], at).unwrap();
    let answers = store.read_messages(&[locs[3], locs[4], locs[5]]);
    assert_eq!(answers[0].as_ref().unwrap().0, body_for(3));
    let error = answers[1].as_ref().unwrap_err();
    assert!(error.message.contains("damaged"), "{error}");
    assert_eq!(answers[2].as_ref().unwrap().0, body_for(5));
    store.close();
}

/// While the log is open its newest segment runs zeroed space ahead of the appends (so a
/// sync does not journal a new file size); a closed segment ends at its last record; a
/// copy taken while open (what a crash leaves) reads the zeros as the clean end.
#[tokio::test]
async fn zeros_ahead_of_the_appends_read_as_the_clean_end() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(Durability::Fsync, 8 << 10);
    let (store, _, _) = open(dir.path(), opts.clone(), real()).unwrap();
    let mut written = Vec::new();
    for id in 0..40 {
        written.push((id, append_one(&store, id).await.unwrap()));
    }
    let frames = frames(&written);
    let log = dir.path().join("log");
    let last = frames.last().unwrap();
    let len = |segment| {
        std::fs::metadata(segment_path(&log, segment))
            .unwrap()
            .len()
    };
    assert!(last.segment > 1, "the test needs a closed segment");
    let bytes = std::fs::read(segment_path(&log, last.segment)).unwrap();
    let ahead = &bytes[last.end as usize..];
    assert!(
        !ahead.is_empty() && ahead.len() as u64 <= ZERO_AHEAD,
        "{} bytes ahead of the appends",
        ahead.len()
    );
    assert!(
        ahead.iter().all(|b| *b == 0),
        "only zeros ahead of the appends"
    );
    let closed = frames.iter().rfind(|f| f.segment == 1).unwrap();
    assert_eq!(
        len(1),
        closed.end,
        "a closed segment ends at its last record"
    );

    let copy = copy_data_dir(dir.path());
    let (reopened, recovered, replayed) = open(copy.path(), opts.clone(), real()).unwrap();
    assert_eq!(recovered.truncated, None);
    assert_eq!(recovered.tail_len, last.end);
    assert_eq!(ids(&replayed), (0..40).collect::<Vec<_>>());
    check_bodies(&reopened, &replayed);
    append_one(&reopened, 40).await.unwrap();
    reopened.close();
    drop(reopened);
    let (_, _, replayed) = open(copy.path(), opts, real()).unwrap();
    assert_eq!(ids(&replayed), (0..=40).collect::<Vec<_>>());
    store.close();
}

/// Appends nobody waits for (a receive's delivery counts) are written but not synced on
/// their own: the next awaited append's sync covers them.
#[tokio::test]
async fn appends_nobody_awaits_ride_on_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::default();
    let (store, _, _) = open(
        dir.path(),
        options(Durability::Fsync, 1 << 20),
        Arc::new(fs.clone()),
    )
    .unwrap();
    let store = Arc::new(store);
    fs.disk.lock().sync_delay = Duration::from_millis(300);
    let first = tokio::spawn({
        let store = store.clone();
        async move { append_one(&store, 0).await }
    });
    // Once the first record is written the writer is busy with its batch (the sync takes
    // 300 ms): these queue behind it and are dropped unawaited.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs.used() == 0 {
        assert!(
            Instant::now() < deadline,
            "the first append was never written"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let written_first = fs.used();
    for id in 1..=20 {
        drop(store.append(vec![enqueued(id, body_for(id))]));
    }
    first.await.unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs.used() == written_first {
        assert!(
            Instant::now() < deadline,
            "the unawaited records were never written"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let newest = |fs: &FaultFs| {
        let (segment, len) = fs.newest();
        (
            fs.file(&segment_path(&dir.path().join("log"), segment)),
            len,
        )
    };
    let (file, len) = newest(&fs);
    assert_eq!(
        fs.disk.lock().syncs,
        1,
        "the unawaited batch was synced alone"
    );
    assert!(
        file.synced < len,
        "the unawaited records are written: {file:?}, {len}"
    );

    fs.disk.lock().sync_delay = Duration::ZERO;
    append_one(&store, 21).await.unwrap();
    let (file, len) = newest(&fs);
    assert_eq!(fs.disk.lock().syncs, 2);
    assert_eq!(
        file.synced, len,
        "the awaited append's sync covers everything before it"
    );

    // A mark (where a checkpoint starts) never points past the synced log.
    drop(store.append(vec![enqueued(22, body_for(22))]));
    let position = store.mark().await.unwrap();
    let (file, len) = newest(&fs);
    assert_eq!(fs.disk.lock().syncs, 3);
    assert_eq!((file.synced, len), (position.offset, position.offset));
    tokio::task::spawn_blocking(move || drop(store))
        .await
        .unwrap();
    let (_, _, replayed) = open(dir.path(), options(Durability::Fsync, 1 << 20), real()).unwrap();
    assert_eq!(ids(&replayed), (0..=22).collect::<Vec<_>>());
}

#[tokio::test]
async fn torn_tail_at_any_offset_recovers_cleanly() {
    let mut rng = SmallRng::seed_from_u64(2);
    let (pristine, frames) = write_log(60, 4096).await;
    let last = frames.last().unwrap().segment;
    assert!(last >= 2, "several segments expected");
    let tail: Vec<Frame> = frames
        .iter()
        .filter(|f| f.segment == last)
        .copied()
        .collect();
    assert!(tail.len() >= 3);
    let last_frame = *tail.last().unwrap();
    let len = last_frame.end;
    let bytes = std::fs::read(segment_path(&pristine.path().join("log"), last)).unwrap();
    // Every offset inside the last record, and random ones across the segment.
    let mut cuts: BTreeSet<u64> = (last_frame.start..len).collect();
    let inside_last = cuts.len();
    while cuts.len() < inside_last + 40 {
        cuts.insert(rng.random_range(0..len));
    }
    let opts = options(Durability::Fsync, 4096);
    let mut truncations = 0;
    for cut in cuts {
        let dir = copy_data_dir(pristine.path());
        let path = segment_path(&dir.path().join("log"), last);
        set_len(&path, cut);

        let (store, recovered, replayed) = open(dir.path(), opts.clone(), real())
            .unwrap_or_else(|e| panic!("cut at {cut}: recovery refused: {e}"));
        let mut expected: Vec<u64> = frames
            .iter()
            .filter(|f| f.segment < last || f.end <= cut)
            .map(|f| f.id)
            .collect();
        assert_eq!(ids(&replayed), expected, "cut at {cut}");
        check_bodies(&store, &replayed);
        let torn = tail.iter().find(|f| f.start < cut && cut < f.end);
        let expect_truncated = torn.and_then(|f| {
            let stray = &bytes[f.start as usize..cut as usize];
            // Fewer zero bytes than a header are an ordinary end of data.
            (!stray.iter().all(|b| *b == 0)).then(|| (path.clone(), f.start, cut - f.start))
        });
        truncations += usize::from(expect_truncated.is_some());
        assert_eq!(recovered.truncated, expect_truncated, "cut at {cut}");
        let boundary = torn.map_or(cut, |f| f.start);
        assert_eq!(recovered.tail_len, boundary, "cut at {cut}");

        // New appends land after the cut and survive a restart.
        let news: Vec<u64> = (1_000..1_003).collect();
        let records = news.iter().map(|&id| enqueued(id, body_for(id))).collect();
        store
            .append(records)
            .await
            .unwrap_or_else(|e| panic!("cut at {cut}: append after recovery: {e}"));
        drop(store);
        let (store, recovered, replayed) = open(dir.path(), opts.clone(), real())
            .unwrap_or_else(|e| panic!("cut at {cut}: second recovery refused: {e}"));
        assert_eq!(recovered.truncated, None, "cut at {cut}");
        expected.extend(&news);
        assert_eq!(ids(&replayed), expected, "cut at {cut}");
        check_bodies(&store, &replayed);
    }
    assert!(truncations >= inside_last - 2);
}

// ---------------------------------------------------------------------------------------
// 3. Bit flips.

#[tokio::test]
async fn bit_flip_in_the_middle_refuses_to_start_and_repair_salvages_the_rest() {
    let mut rng = SmallRng::seed_from_u64(3);
    let (pristine, frames) = write_log(50, 1024).await;
    let segments: BTreeSet<u32> = frames.iter().map(|f| f.segment).collect();
    assert!(segments.len() >= 4, "several segments expected");
    let newest = *segments.last().unwrap();
    let in_segment = |segment: u32| -> Vec<Frame> {
        frames
            .iter()
            .filter(|f| f.segment == segment)
            .copied()
            .collect()
    };
    let newest_frames = in_segment(newest);
    assert!(newest_frames.len() >= 3, "{newest_frames:?}");
    let older = in_segment(newest - 2);
    let first = in_segment(*segments.first().unwrap());
    let targets = [
        // in the middle of the newest segment: a valid record follows, so not a torn tail
        newest_frames[newest_frames.len() / 2],
        newest_frames[newest_frames.len() - 2],
        // inside an older segment, including its last record: never a torn tail
        older[older.len() / 2],
        *older.last().unwrap(),
        first[0],
    ];
    let opts = options(Durability::Fsync, 1024);
    for target in targets {
        for _ in 0..3 {
            let dir = copy_data_dir(pristine.path());
            let log = dir.path().join("log");
            let path = segment_path(&log, target.segment);
            let mut bytes = std::fs::read(&path).unwrap();
            let at = rng.random_range(target.start..target.end) as usize;
            let bit = rng.random_range(0..8u32);
            bytes[at] ^= 1 << bit;
            std::fs::write(&path, &bytes).unwrap();
            let what = format!("bit {bit} of byte {at} in {target:?}");

            match open(dir.path(), opts.clone(), real()) {
                Err(StoreError::Corrupt { file, offset, .. }) => {
                    assert_eq!(file, path, "{what}");
                    assert_eq!(offset, target.start, "{what}");
                }
                Err(e) => panic!("{what}: expected corruption, got {e}"),
                Ok((_, recovered, _)) => panic!("{what}: opened anyway: {recovered:?}"),
            }
            // Refusing changed nothing.
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}");
            let message = open(dir.path(), opts.clone(), real())
                .err()
                .unwrap()
                .to_string();
            assert!(message.contains("repair"), "{message}");

            let report = repair(&log).unwrap_or_else(|e| panic!("{what}: repair: {e}"));
            assert_eq!(report.kept_records, frames.len() as u64 - 1, "{what}");
            assert_eq!(
                report.dropped,
                vec![(path.clone(), target.start, target.end - target.start)],
                "{what}"
            );
            let damaged = report.damaged_copy.expect("the damaged log is kept");
            assert_eq!(
                std::fs::read(segment_path(&damaged, target.segment)).unwrap(),
                bytes
            );

            let (store, recovered, replayed) = open(dir.path(), opts.clone(), real())
                .unwrap_or_else(|e| panic!("{what}: open after repair: {e}"));
            assert_eq!(recovered.truncated, None);
            let expected: Vec<u64> = frames
                .iter()
                .filter(|f| f.id != target.id)
                .map(|f| f.id)
                .collect();
            assert_eq!(ids(&replayed), expected, "{what}");
            check_bodies(&store, &replayed);
            // The repaired log takes appends and keeps them.
            append_one(&store, 999).await.unwrap();
            drop(store);
            let (store, _, replayed) = open(dir.path(), opts.clone(), real()).unwrap();
            assert_eq!(replayed.len(), frames.len());
            assert_eq!(replayed.last().unwrap().0, 999);
            check_bodies(&store, &replayed);
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. Disk full, simulated.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_fails_cleanly_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let fs = FaultFs::default();
    let opts = options(Durability::Fsync, 4096);
    let (store, _, _) = open(dir.path(), opts.clone(), Arc::new(fs.clone())).unwrap();
    let mut acked = Vec::new();
    let mut next = 0u64;
    for _ in 0..10 {
        acked.push((next, append_one(&store, next).await.unwrap()));
        next += 1;
    }

    // A batch of five runs out of space in its middle: part of it is written, then undone.
    let batch: Vec<u64> = (next..next + 5).collect();
    next += 5;
    let records: Vec<Record> = batch.iter().map(|&id| enqueued(id, body_for(id))).collect();
    let room = 100;
    fs.set_room(Some(room));
    let used = fs.used();
    let error = store.append(records).await.unwrap_err();
    assert_eq!(error.kind, JournalErrorKind::Full, "{error}");
    assert!(error.message.contains("disk full"), "{error}");
    assert_eq!(fs.used(), used, "the partial write was undone");
    let segment = acked.last().unwrap().1.segment;
    let path = segment_path(&log, segment);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), fs.file(&path).len);
    assert_eq!(
        store.failure(),
        None,
        "a full disk is not a permanent failure"
    );

    // Whatever still fits is written; then nothing does.
    loop {
        let id = next;
        next += 1;
        match append_one(&store, id).await {
            Ok(loc) => acked.push((id, loc)),
            Err(kind) => {
                assert_eq!(kind, JournalErrorKind::Full);
                break;
            }
        }
    }
    fs.set_room(Some(0));
    let mut waiting = JoinSet::new();
    let store = Arc::new(store);
    for id in next..next + 8 {
        let store = store.clone();
        waiting.spawn(async move { append_one(&store, id).await });
    }
    next += 8;
    while let Some(result) = waiting.join_next().await {
        assert_eq!(result.unwrap(), Err(JournalErrorKind::Full));
    }
    // Reads go on while the disk is full.
    for &(id, loc) in &acked {
        assert_eq!(store.read_body(loc).unwrap(), body_for(id));
    }

    // Fill the segment up to its roll, then fail the roll itself: first creating the
    // next segment fails, then (with a little room) writing into it does.
    fs.set_room(None);
    // What a frame holds besides its body (the first record starts segment 1).
    let overhead = frame_end(&acked[0].1) - body_for(0).len() as u64;
    let (segment, mut end) = fs.newest();
    while end == 0 || end + overhead + body_for(next).len() as u64 <= 4096 {
        let loc = append_one(&store, next).await.unwrap();
        assert_eq!(
            loc.segment, segment,
            "rolled before the test could fail the roll"
        );
        acked.push((next, loc));
        next += 1;
        end = frame_end(&loc);
    }
    fs.set_room(Some(0));
    assert_eq!(append_one(&store, next).await, Err(JournalErrorKind::Full));
    let rolled = segment_path(&log, segment + 1);
    assert!(!rolled.exists(), "no room for a new segment");
    fs.set_room(Some(20));
    assert_eq!(append_one(&store, next).await, Err(JournalErrorKind::Full));
    assert_eq!(
        std::fs::metadata(&rolled).unwrap().len(),
        0,
        "undone in the new segment"
    );
    next += 1;

    // Space returns: appends work again without a restart.
    fs.set_room(None);
    for _ in 0..20 {
        acked.push((next, append_one(&store, next).await.unwrap()));
        next += 1;
    }
    assert_eq!(acked.last().unwrap().1.segment, segment + 1);
    for &(id, loc) in &acked {
        assert_eq!(store.read_body(loc).unwrap(), body_for(id));
    }
    tokio::task::spawn_blocking(move || drop(store))
        .await
        .unwrap();

    // The log holds exactly what was acknowledged, undamaged.
    let (store, recovered, replayed) = open(dir.path(), opts, real()).unwrap();
    assert_eq!(recovered.truncated, None);
    assert_eq!(ids(&replayed), ids(&acked));
    check_bodies(&store, &replayed);
}

fn message(body: &str) -> NewMessage {
    NewMessage {
        body: Bytes::copy_from_slice(body.as_bytes()),
        ..NewMessage::default()
    }
}

/// An engine whose journal is a store opened on `fs`, like the server builds it.
fn engine_on(dir: &Path, fs: Arc<dyn LogFs>) -> (Arc<Engine>, Arc<Store>) {
    let journal = Arc::new(LateJournal::default());
    let engine = Arc::new(Engine::new(
        EngineConfig::new(0),
        Arc::new(SystemClock::default()),
        journal.clone(),
    ));
    let replay = engine.clone();
    let (store, _) = open_store(dir, LogOptions::default(), fs, &mut |record| {
        replay.replay(record)
    })
    .expect("opening the store");
    let store = Arc::new(store);
    journal.set(store.clone());
    engine.start_replayed();
    (engine, store)
}

async fn bodies(engine: &Engine, queue: &str) -> Vec<Bytes> {
    let mut out: Vec<Bytes> = engine
        .receive(queue, 16, Some(0))
        .await
        .expect("receive")
        .into_iter()
        .map(|m| m.body)
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_through_the_engine_is_storage_full() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::default();
    let (engine, store) = engine_on(dir.path(), Arc::new(fs.clone()));
    engine
        .create_queue("jobs", QueueAttributes::default(), Origin::Api)
        .await
        .unwrap();
    engine.send("jobs", vec![message("one")]).await.unwrap();

    fs.set_room(Some(10));
    let error = engine
        .send("jobs", vec![message("two"), message("two-b")])
        .await
        .unwrap_err();
    assert!(matches!(error, EngineError::StorageFull(_)), "{error:?}");
    assert_eq!(engine.storage_failure(), None);
    let stats = engine.get_queue("jobs").await.unwrap().stats;
    assert_eq!(stats.active, 1, "{stats:?}");
    assert_eq!(stats.delayed, 0, "{stats:?}");
    // Receiving (and reading the stored body) works while full; the refused send is not there.
    assert_eq!(bodies(&engine, "jobs").await, vec![Bytes::from("one")]);

    fs.set_room(None);
    engine.send("jobs", vec![message("three")]).await.unwrap();
    assert_eq!(bodies(&engine, "jobs").await, vec![Bytes::from("three")]);
    engine.release_waiters();
    // The engine holds the store through its journal: drop both to release the lock.
    tokio::task::spawn_blocking(move || drop((engine, store)))
        .await
        .unwrap();

    // After a restart the refused message is still absent.
    let (engine, store) = engine_on(dir.path(), real());
    let stats = engine.get_queue("jobs").await.unwrap().stats;
    assert_eq!(stats.active, 2, "{stats:?}");
    assert_eq!(
        bodies(&engine, "jobs").await,
        vec![Bytes::from("one"), Bytes::from("three")]
    );
    engine.release_waiters();
    // The engine holds the store through its journal: drop both to release the lock.
    tokio::task::spawn_blocking(move || drop((engine, store)))
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// 5. Failed fsync.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fsync_makes_the_store_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::default();
    let opts = options(Durability::Fsync, 4096);
    let (store, _, _) = open(dir.path(), opts.clone(), Arc::new(fs.clone())).unwrap();
    let store = Arc::new(store);
    let mut acked = Vec::new();
    for id in 0..30 {
        acked.push((id, append_one(&store, id).await.unwrap()));
    }
    assert_eq!(store.failure(), None);

    fs.set_fail_sync(true);
    let mut failing = JoinSet::new();
    for id in 30..36 {
        let store = store.clone();
        failing.spawn(async move { append_one(&store, id).await });
    }
    while let Some(result) = failing.join_next().await {
        let kind = result.unwrap().unwrap_err();
        assert_eq!(kind, JournalErrorKind::ReadOnly);
    }
    assert!(fs.disk.lock().failed_syncs >= 1);
    let failure = store.failure().expect("the store records its failure");
    assert!(failure.contains("read-only"), "{failure}");

    // Syncs would work again; the store still refuses.
    fs.set_fail_sync(false);
    let syncs = fs.disk.lock().syncs;
    for id in 36..40 {
        assert_eq!(
            append_one(&store, id).await,
            Err(JournalErrorKind::ReadOnly)
        );
    }
    let error = store
        .append(vec![enqueued(40, body_for(40))])
        .await
        .unwrap_err();
    assert!(error.message.contains("read-only"), "{error}");
    assert_eq!(
        fs.disk.lock().syncs,
        syncs,
        "nothing was written after the failure"
    );
    for &(id, loc) in &acked {
        assert_eq!(store.read_body(loc).unwrap(), body_for(id));
    }
    tokio::task::spawn_blocking(move || drop(store))
        .await
        .unwrap();

    // A restart recovers everything acknowledged; whether the batch whose sync failed made
    // it is unknown (it was written), but nothing else appears.
    let (store, recovered, replayed) = open(dir.path(), opts.clone(), real()).unwrap();
    assert_eq!(recovered.truncated, None);
    let got = ids(&replayed);
    assert_eq!(got[..acked.len()], ids(&acked)[..]);
    assert!(
        got[acked.len()..].iter().all(|id| (30..36).contains(id)),
        "{got:?}"
    );
    check_bodies(&store, &replayed);
    append_one(&store, 100).await.unwrap();
    drop(store);

    // In the interval mode the failing sync is the timer's: the next append is refused.
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::default();
    let opts = options(Durability::Interval(Duration::from_millis(5)), 4096);
    let (store, _, _) = open(dir.path(), opts.clone(), Arc::new(fs.clone())).unwrap();
    fs.set_fail_sync(true);
    let acked = vec![(0, append_one(&store, 0).await.unwrap())];
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.failure().is_none() {
        assert!(Instant::now() < deadline, "the interval sync never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The failed log does not keep retrying the sync.
    let failed = fs.disk.lock().failed_syncs;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let retried = fs.disk.lock().failed_syncs - failed;
    assert!(
        retried <= 2,
        "the writer retried a failed sync {retried} times in 100 ms"
    );
    fs.set_fail_sync(false);
    assert_eq!(append_one(&store, 1).await, Err(JournalErrorKind::ReadOnly));
    drop(store);
    let (_, _, replayed) = open(dir.path(), opts, real()).unwrap();
    assert_eq!(ids(&replayed), ids(&acked));

    // Through the engine, read-only storage is "unavailable", not "full".
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::default();
    let (engine, store) = engine_on(dir.path(), Arc::new(fs.clone()));
    engine
        .create_queue("jobs", QueueAttributes::default(), Origin::Api)
        .await
        .unwrap();
    fs.set_fail_sync(true);
    let error = engine.send("jobs", vec![message("x")]).await.unwrap_err();
    assert!(matches!(error, EngineError::Storage(_)), "{error:?}");
    fs.set_fail_sync(false);
    let error = engine.send("jobs", vec![message("y")]).await.unwrap_err();
    assert!(matches!(error, EngineError::Storage(_)), "{error:?}");
    assert!(engine.storage_failure().is_some());
    assert_eq!(engine.get_queue("jobs").await.unwrap().stats.active, 0);
    engine.release_waiters();
    // The engine holds the store through its journal: drop both to release the lock.
    tokio::task::spawn_blocking(move || drop((engine, store)))
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// 6. A real full disk: a small tmpfs.

/// A tmpfs mounted for one test, unmounted when dropped (even when the test fails).
struct TmpfsMount {
    dir: TempDir,
}

impl TmpfsMount {
    fn new(size: &str) -> Result<TmpfsMount, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(TmpfsMount { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let unmount = |lazy: bool| {
            let mut command = std::process::Command::new("umount");
            if lazy {
                command.arg("-l");
            }
            command
                .arg(self.dir.path())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !unmount(false) && !unmount(true) {
            eprintln!("could not unmount {}", self.dir.path().display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tmpfs_disk_full() {
    let mount = match TmpfsMount::new("2m") {
        Ok(mount) => mount,
        Err(e) => {
            println!("skipping the real disk-full test: cannot mount a tmpfs ({e})");
            return;
        }
    };
    let filler = mount.path().join("filler");
    std::fs::write(&filler, vec![7u8; 384 << 10]).unwrap();
    let data_dir = mount.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let opts = options(Durability::Fsync, 256 << 10);
    let (store, _, _) = open(&data_dir, opts.clone(), real()).unwrap();
    let store = Arc::new(store);

    // Bodies of a few kilobytes, so a batch ends part-way through a page.
    let big = |id: u64| -> Record {
        let mut body = body_for(id).to_vec();
        body.resize(3_000 + (id as usize % 700), (id % 251) as u8);
        enqueued(id, Bytes::from(body))
    };
    let mut acked: Vec<(u64, BodyLoc, Bytes)> = Vec::new();
    let mut next = 0u64;
    let error = loop {
        let ids: Vec<u64> = (next..next + 1 + next % 3).collect();
        next = *ids.last().unwrap() + 1;
        let records: Vec<Record> = ids.iter().map(|&id| big(id)).collect();
        let bodies: Vec<Bytes> = records
            .iter()
            .map(|r| match r {
                Record::Enqueued {
                    body: BodyRef::Bytes(b),
                    ..
                } => b.clone(),
                _ => unreachable!(),
            })
            .collect();
        match store.append(records).await {
            Ok(locs) => {
                for ((id, loc), body) in ids.into_iter().zip(locs).zip(bodies) {
                    acked.push((id, loc.unwrap(), body));
                }
            }
            Err(error) => break error,
        }
        assert!(next < 10_000, "the tmpfs never filled up");
    };
    assert_eq!(error.kind, JournalErrorKind::Full, "{error}");
    assert!(acked.len() > 100, "only {} records fit", acked.len());
    let mut concurrent = JoinSet::new();
    for id in next..next + 6 {
        let store = store.clone();
        let record = big(id);
        concurrent.spawn(async move { store.append(vec![record]).await });
    }
    next += 6;
    while let Some(result) = concurrent.join_next().await {
        let error = result.unwrap().unwrap_err();
        assert_eq!(error.kind, JournalErrorKind::Full, "{error}");
    }
    assert_eq!(store.failure(), None);
    for (_, loc, body) in &acked {
        assert_eq!(&store.read_body(*loc).unwrap(), body);
    }

    // Free space: appends work again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    for id in next..next + 40 {
        let record = big(id);
        let Record::Enqueued {
            body: BodyRef::Bytes(body),
            ..
        } = &record
        else {
            unreachable!()
        };
        let body = body.clone();
        let locs = store.append(vec![record]).await.unwrap();
        acked.push((id, locs[0].unwrap(), body));
    }
    tokio::task::spawn_blocking(move || drop(store))
        .await
        .unwrap();

    let mut replayed = Vec::new();
    let (store, recovered) = open_store(&data_dir, opts, real(), &mut |record| {
        replayed.push(stored(record));
    })
    .unwrap();
    assert_eq!(recovered.truncated, None);
    assert_eq!(
        ids(&replayed),
        acked.iter().map(|(id, _, _)| *id).collect::<Vec<_>>()
    );
    for ((_, loc), (id, _, body)) in replayed.iter().zip(&acked) {
        assert_eq!(&store.read_body(*loc).unwrap(), body, "record {id}");
    }
    drop(store);
    drop(mount);
}

/// The records of one request (a batch send) are kept or dropped together: a write torn
/// anywhere inside the batch's frames, even exactly between two of them, drops the
/// whole batch at recovery, and the log goes on after the last whole request.
#[tokio::test]
async fn a_batch_torn_anywhere_is_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(Durability::Fsync, 1 << 20);
    let (single, between) = {
        let (store, _, _) = open(dir.path(), opts.clone(), real()).unwrap();
        let single = append_one(&store, 1).await.unwrap();
        let batch: Vec<Record> = (2..=17).map(|id| enqueued(id, body_for(id))).collect();
        let locs = store.append(batch).await.unwrap();
        assert_eq!(locs.len(), 16);
        store.close();
        // Cuts exactly between two frames of the batch.
        let between: Vec<u64> = locs[..15].iter().flatten().map(frame_end).collect();
        (single, between)
    };
    let log = dir.path().join("log").join("0000000001.qlog");
    let full = std::fs::metadata(&log).unwrap().len();
    let batch_start = frame_end(&single);
    assert_eq!(between.len(), 15);
    for cut in (batch_start + 1..full)
        .step_by(97)
        .chain([full - 1])
        .chain(between)
    {
        let copy = copy_data_dir(dir.path());
        set_len(&copy.path().join("log").join("0000000001.qlog"), cut);
        let (store, recovered, replayed) = open(copy.path(), opts.clone(), real()).unwrap();
        assert_eq!(ids(&replayed), vec![1], "cut at {cut} of {full}");
        assert_eq!(recovered.tail_len, batch_start, "cut at {cut}");
        check_bodies(&store, &replayed);
        // The log goes on cleanly after the dropped batch.
        append_one(&store, 99).await.unwrap();
        store.close();
        drop(store);
        let (store, _, replayed) = open(copy.path(), opts.clone(), real()).unwrap();
        assert_eq!(ids(&replayed), vec![1, 99], "cut at {cut}");
        store.close();
    }
    // Uncut, the whole batch comes back.
    let (store, _, replayed) = open(dir.path(), opts, real()).unwrap();
    assert_eq!(ids(&replayed), (1..=17).collect::<Vec<_>>());
    store.close();
}
