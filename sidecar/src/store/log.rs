//! The segmented append-only log and its writer thread.
//!
//! Request handlers append while holding their queue's lock, so the log's order is the
//! order the engine applied them. In the `fsync` mode they hand records over a channel
//! to the writer thread (group commit): it drains everything queued, encodes it into one
//! buffer, writes it with one call and syncs once, then completes every waiter of that
//! batch. In the `interval` mode an append is acknowledged once written, so the caller
//! writes it itself (a positional write into the page cache, which a process crash
//! keeps) and no thread hand-over is paid; the writer thread then only syncs, every
//! interval, without stopping the appends meanwhile.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use super::file::{LogFile, LogFs};
use super::frame;
use super::log_stats::LogStats;
use super::stepwise;
use crate::engine::record::{BodyLoc, Durable, JournalError, LogPosition, Mark, Record};

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After its batch is written and `fdatasync` returned.
    Fsync,
    /// After the caller wrote it; a sync follows within the interval (or once the sync
    /// running at the time ends). A machine crash (not a process crash) can lose up to
    /// one interval, plus a sync's duration, of acknowledged records.
    Interval(Duration),
}

#[derive(Debug, Clone)]
pub struct LogOptions {
    pub durability: Durability,
    /// A segment is closed once it holds at least this many bytes.
    pub segment_bytes: u64,
    /// Most bytes one group commit writes.
    pub max_batch_bytes: usize,
    /// Where the writer reports its syncs and commits.
    pub stats: LogStats,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Fsync,
            segment_bytes: 64 << 20,
            max_batch_bytes: 8 << 20,
            stats: LogStats::default(),
        }
    }
}

pub fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:010}.qlog"))
}

/// Segment ids found in `dir`, in order.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u32>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name.strip_suffix(".qlog").and_then(|s| s.parse().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

type Completion = oneshot::Sender<Result<Vec<Option<BodyLoc>>, JournalError>>;

enum Request {
    Append(Vec<Record>, Completion),
    Mark(oneshot::Sender<Result<LogPosition, JournalError>>),
    Close(mpsc::Sender<()>),
}

/// Where appends go next.
pub struct Tail {
    pub segment: u32,
    pub len: u64,
    pub next_lsn: u64,
}

struct Shared {
    dir: PathBuf,
    readers: RwLock<HashMap<u32, Arc<File>>>,
    /// Set once a sync failed: the log refuses writes from then on.
    failed: Mutex<Option<String>>,
}

impl Shared {
    fn open_reader(&self, id: u32) -> io::Result<()> {
        let file = File::open(segment_path(&self.dir, id))?;
        self.readers.write().insert(id, Arc::new(file));
        Ok(())
    }
}

pub struct Log {
    tx: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    /// Written by the writer thread, and in the interval mode by appends too.
    writer: Arc<Mutex<Writer>>,
    /// The interval mode: appends write on the caller's thread.
    direct: bool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Log {
    /// Starts the writer after recovery left the tail at `tail`.
    pub fn start(
        dir: &Path,
        fs: Arc<dyn LogFs>,
        options: LogOptions,
        existing: &[u32],
        tail: Tail,
    ) -> io::Result<Log> {
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            readers: RwLock::new(HashMap::new()),
            failed: Mutex::new(None),
        });
        let path = segment_path(dir, tail.segment);
        let file = if existing.contains(&tail.segment) {
            fs.open_append(&path, tail.len)?
        } else {
            fs.create(&path)?
        };
        for id in existing.iter().copied().chain([tail.segment]) {
            shared.open_reader(id)?;
        }
        let (tx, rx) = mpsc::channel();
        let direct = matches!(options.durability, Durability::Interval(_));
        let writer = Arc::new(Mutex::new(Writer {
            fs,
            options,
            shared: shared.clone(),
            file,
            segment: tail.segment,
            len: tail.len,
            next_lsn: tail.next_lsn,
            unsynced: false,
            last_sync: Instant::now(),
            buf: Vec::new(),
            failed_since_mark: false,
            closed: false,
        }));
        let thread_writer = writer.clone();
        let handle = std::thread::Builder::new()
            .name("queuelet-log".into())
            .spawn(move || run(&thread_writer, &rx))?;
        Ok(Log {
            tx,
            shared,
            writer,
            direct,
            thread: Mutex::new(Some(handle)),
        })
    }

    pub fn append(&self, records: Vec<Record>) -> Durable {
        if let Some(reason) = self.shared.failed.lock().clone() {
            return Box::pin(std::future::ready(Err(JournalError::read_only(reason))));
        }
        if self.direct {
            let written = self
                .writer
                .lock()
                .commit(std::slice::from_ref(&records), false)
                .map(|mut locs| locs.pop().unwrap_or_default());
            return Box::pin(std::future::ready(written));
        }
        let (done, wait) = oneshot::channel();
        if self.tx.send(Request::Append(records, done)).is_err() {
            return Box::pin(std::future::ready(Err(JournalError::unavailable(
                "the log is closed",
            ))));
        }
        Box::pin(async move {
            wait.await
                .unwrap_or_else(|_| Err(JournalError::unavailable("the log writer stopped")))
        })
    }

    pub fn read(&self, loc: BodyLoc) -> io::Result<Bytes> {
        let open = self.shared.readers.read().get(&loc.segment).cloned();
        let file = match open {
            Some(file) => file,
            None => {
                self.shared.open_reader(loc.segment)?;
                self.shared
                    .readers
                    .read()
                    .get(&loc.segment)
                    .cloned()
                    .ok_or_else(|| {
                        io::Error::other(format!("segment {} is not open", loc.segment))
                    })?
            }
        };
        let mut buf = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut buf, u64::from(loc.offset))?;
        Ok(Bytes::from(buf))
    }

    /// See `Journal::mark`.
    pub fn mark(&self) -> Mark {
        let (reply, wait) = oneshot::channel();
        if self.tx.send(Request::Mark(reply)).is_err() {
            return Box::pin(std::future::ready(Err(JournalError::unavailable(
                "the log is closed",
            ))));
        }
        Box::pin(async move {
            wait.await
                .unwrap_or_else(|_| Err(JournalError::unavailable("the log writer stopped")))
        })
    }

    /// The segments on disk, oldest first; the last one takes appends.
    pub fn segments(&self) -> Vec<u32> {
        list_segments(&self.shared.dir).unwrap_or_default()
    }

    /// Deletes a segment that no record still needed lies in, in steps that never make a
    /// sync of the active segment wait long (see `stepwise`).
    pub fn remove_segment(&self, id: u32) -> io::Result<()> {
        self.shared.readers.write().remove(&id);
        stepwise::remove(&segment_path(&self.shared.dir, id))
    }

    /// Why the log refuses writes, if it does.
    pub fn failure(&self) -> Option<String> {
        self.shared.failed.lock().clone()
    }

    /// Writes and syncs everything queued, then stops the writer.
    pub fn close(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Request::Close(tx)).is_ok() {
            let _ = rx.recv();
        }
        if let Some(handle) = self.thread.lock().take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.close();
    }
}

struct Writer {
    fs: Arc<dyn LogFs>,
    options: LogOptions,
    shared: Arc<Shared>,
    file: Box<dyn LogFile>,
    segment: u32,
    len: u64,
    next_lsn: u64,
    unsynced: bool,
    last_sync: Instant,
    buf: Vec<u8>,
    /// A batch failed since the last mark: a checkpoint now could hold its records.
    failed_since_mark: bool,
    /// Closed: synced and sealed, takes no more appends.
    closed: bool,
}

fn approx_size(record: &Record) -> usize {
    match record {
        Record::Enqueued { body, tags, .. } => {
            64 + tags.iter().map(|t| t.len() + 4).sum::<usize>() + body.len()
        }
        Record::Deleted { seqs, .. } | Record::Expired { seqs, .. } => 48 + seqs.len() * 8,
        Record::Received { counts, .. } => 48 + counts.len() * 12,
        Record::TopicPut(topic) => 256 + topic.subscriptions.len() * 256,
        _ => 256,
    }
}

fn io_error(context: &str, error: &io::Error) -> JournalError {
    if error.raw_os_error() == Some(28) || error.kind() == io::ErrorKind::StorageFull {
        JournalError::full(format!("{context}: disk full ({error})"))
    } else {
        JournalError::unavailable(format!("{context}: {error}"))
    }
}

/// The writer thread: group commits in the fsync mode; in the interval mode, where
/// appends write themselves, the timed syncs. Marks and the close come to it in both.
fn run(writer: &Mutex<Writer>, rx: &mpsc::Receiver<Request>) {
    let (interval, max_batch_bytes) = {
        let writer = writer.lock();
        let interval = match writer.options.durability {
            Durability::Interval(every) => Some(every),
            Durability::Fsync => None,
        };
        (interval, writer.options.max_batch_bytes)
    };
    loop {
        let first = match interval {
            Some(every) => {
                let due = {
                    let writer = writer.lock();
                    // With nothing to sync (or a failed sync, which retrying would not
                    // undo) it looks again one interval later: a deadline already past
                    // would make it spin.
                    if writer.unsynced && writer.shared.failed.lock().is_none() {
                        every.saturating_sub(writer.last_sync.elapsed())
                    } else {
                        every
                    }
                };
                match rx.recv_timeout(due) {
                    Ok(request) => request,
                    Err(RecvTimeoutError::Timeout) => {
                        sync_beside_appends(writer, every);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            None => match rx.recv() {
                Ok(request) => request,
                Err(_) => break,
            },
        };
        let mut batch = Vec::new();
        let mut close = None;
        let mut mark = None;
        let mut queued_bytes = 0usize;
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Append(records, done) => {
                    queued_bytes += records.iter().map(approx_size).sum::<usize>();
                    batch.push((records, done));
                }
                Request::Close(ack) => {
                    close = Some(ack);
                    break;
                }
                Request::Mark(reply) => {
                    mark = Some(reply);
                    break;
                }
            }
            if queued_bytes >= max_batch_bytes {
                break;
            }
            next = rx.try_recv().ok();
        }
        let mut writer = writer.lock();
        if !batch.is_empty() {
            writer.commit_batch(batch);
        }
        if let Some(reply) = mark {
            let _ = reply.send(writer.mark());
        }
        if let Some(ack) = close {
            writer.finish();
            let _ = ack.send(());
            return;
        }
    }
    writer.lock().finish();
}

/// The interval mode's timed sync. The `fdatasync` runs outside the writer's lock, so
/// appends go on meanwhile: they are the next sync's.
fn sync_beside_appends(writer: &Mutex<Writer>, every: Duration) {
    let (syncer, synced_to, started) = {
        let writer = writer.lock();
        if !writer.unsynced
            || writer.closed
            || writer.last_sync.elapsed() < every
            // Once a sync failed the log is read-only and retrying proves nothing.
            || writer.shared.failed.lock().is_some()
        {
            return;
        }
        (
            writer.file.syncer(),
            (writer.segment, writer.len),
            Instant::now(),
        )
    };
    let result = syncer.and_then(|syncer| syncer.sync());
    writer.lock().synced(result, synced_to, started);
}

impl Writer {
    /// A checkpoint taken at the mark must not point past what a machine crash keeps:
    /// what is written but unsynced (the interval mode's last moments, delivery counts
    /// nobody waited for) is synced first.
    fn mark(&mut self) -> Result<LogPosition, JournalError> {
        if std::mem::take(&mut self.failed_since_mark) {
            Err(JournalError::unavailable(
                "a write failed since the previous mark",
            ))
        } else if self.unsynced && !self.sync() {
            Err(JournalError::read_only(
                self.shared.failed.lock().clone().unwrap_or_default(),
            ))
        } else {
            Ok(LogPosition {
                lsn: self.next_lsn,
                segment: self.segment,
                offset: self.len,
            })
        }
    }

    /// Syncs what is written and trims the zeros ahead of it: a log closed cleanly ends
    /// exactly after its last record.
    fn finish(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.unsynced && !self.sync() {
            return;
        }
        if let Err(error) = self.file.seal() {
            tracing::warn!(segment = self.segment, %error, "cannot trim the log at close");
        }
    }

    fn sync(&mut self) -> bool {
        let started = Instant::now();
        let result = self.file.sync();
        self.synced(result, (self.segment, self.len), started)
    }

    /// Takes note of a sync, started at `started` when the log ended at `synced_to`.
    fn synced(&mut self, result: io::Result<()>, synced_to: (u32, u64), started: Instant) -> bool {
        self.options.stats.synced(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                // Appends made while it ran are left for the next sync, which falls due
                // one interval after this one started.
                if (self.segment, self.len) == synced_to {
                    self.unsynced = false;
                }
                self.last_sync = started;
                true
            }
            Err(error) => {
                // The kernel may have dropped the dirty pages: a later successful sync
                // would prove nothing. Refuse all writes from now on.
                let reason = format!(
                    "fdatasync of segment {} failed ({error}); the log is read-only until restart",
                    synced_to.0
                );
                tracing::error!(%reason, "log sync failed");
                *self.shared.failed.lock() = Some(reason);
                false
            }
        }
    }

    /// Commits the appends the writer thread collected and completes their waiters.
    fn commit_batch(&mut self, batch: Vec<(Vec<Record>, Completion)>) {
        // A receive hands its delivery counts over and does not wait for them: when no
        // one waits on this batch, its sync is left to the next batch that needs one.
        let awaited = batch.iter().any(|(_, done)| !done.is_closed());
        let (appends, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        match self.commit(&appends, awaited) {
            Ok(locs) => {
                for (done, locs) in waiters.into_iter().zip(locs) {
                    let _ = done.send(Ok(locs));
                }
            }
            Err(error) => {
                for done in waiters {
                    let _ = done.send(Err(error.clone()));
                }
            }
        }
    }

    /// Writes `appends` with one call, then in the fsync mode syncs when `awaited`.
    /// Returns, per append, where each of its `Enqueued` records' bodies lies.
    fn commit(
        &mut self,
        appends: &[Vec<Record>],
        awaited: bool,
    ) -> Result<Vec<Vec<Option<BodyLoc>>>, JournalError> {
        let result = self.write(appends, awaited);
        if result.is_err() {
            self.failed_since_mark = true;
        }
        result
    }

    fn write(
        &mut self,
        appends: &[Vec<Record>],
        awaited: bool,
    ) -> Result<Vec<Vec<Option<BodyLoc>>>, JournalError> {
        if self.closed {
            return Err(JournalError::unavailable("the log is closed"));
        }
        if let Some(reason) = self.shared.failed.lock().clone() {
            return Err(JournalError::read_only(reason));
        }
        self.buf.clear();
        let first_lsn = self.next_lsn;
        // (frame start in `buf`, frame length) of each `Enqueued` record
        let mut relative: Vec<Vec<Option<(usize, usize)>>> = Vec::with_capacity(appends.len());
        for records in appends {
            let mut spans = Vec::with_capacity(records.len());
            for (i, record) in records.iter().enumerate() {
                let frame_start = self.buf.len();
                let more = i + 1 < records.len();
                let stored = frame::encode(record, self.next_lsn, more, &mut self.buf);
                self.next_lsn += 1;
                spans.push(stored.map(|len| (frame_start, len)));
            }
            relative.push(spans);
        }
        if self.len > 0
            && self.len + self.buf.len() as u64 > self.options.segment_bytes
            && let Err(error) = self.roll()
        {
            self.next_lsn = first_lsn;
            return Err(error);
        }
        if let Err(error) = self.file.append(&self.buf) {
            self.next_lsn = first_lsn;
            let journal_error = io_error("writing the log", &error);
            tracing::error!(error = %journal_error, "log write failed; undoing it");
            if let Err(undo) = self.file.truncate(self.len) {
                let reason = format!(
                    "a failed write could not be undone ({undo}); the log is read-only until restart"
                );
                tracing::error!(%reason, "log truncate failed");
                *self.shared.failed.lock() = Some(reason);
            }
            return Err(journal_error);
        }
        let base = self.len;
        self.len += self.buf.len() as u64;
        self.options
            .stats
            .committed((self.next_lsn - first_lsn) as usize, self.buf.len());
        self.unsynced = true;
        // The interval mode acknowledges once written, by its contract; its sync comes
        // from the writer thread's timer.
        if self.options.durability == Durability::Fsync && awaited && !self.sync() {
            let reason = self.shared.failed.lock().clone().unwrap_or_default();
            return Err(JournalError::read_only(reason));
        }
        Ok(relative
            .into_iter()
            .map(|spans| {
                spans
                    .into_iter()
                    .map(|span| {
                        span.map(|(at, len)| BodyLoc {
                            segment: self.segment,
                            offset: (base + at as u64) as u32,
                            len: len as u32,
                        })
                    })
                    .collect()
            })
            .collect())
    }

    fn roll(&mut self) -> Result<(), JournalError> {
        if self.unsynced && !self.sync() {
            let reason = self.shared.failed.lock().clone().unwrap_or_default();
            return Err(JournalError::read_only(reason));
        }
        if let Err(error) = self.file.seal() {
            // Only the zeros ahead of the appends stay: recovery reads them as the end.
            tracing::warn!(segment = self.segment, %error, "cannot trim the closed segment");
        }
        let next = self.segment + 1;
        let path = segment_path(&self.shared.dir, next);
        let file = match self.fs.create(&path) {
            // Left by a roll that failed after creating it: nothing was written there.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.fs.open_append(&path, 0),
            other => other,
        }
        .map_err(|e| io_error("creating a log segment", &e))?;
        if let Err(error) = self.shared.open_reader(next) {
            // Reads open it on demand; appends need not wait for that.
            tracing::warn!(segment = next, %error, "cannot open the new segment for reading yet");
        }
        self.file = file;
        self.segment = next;
        self.len = 0;
        tracing::debug!(segment = next, "log segment started");
        Ok(())
    }
}
