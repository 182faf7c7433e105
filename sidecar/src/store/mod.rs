//! Durable storage: a data directory holding the write-ahead log of the engine's
//! records, read back at start-up to rebuild the engine.
//!
//! ```text
//! <data-dir>/LOCK       held while a server uses the directory
//! <data-dir>/identity   the key that signs message ids (stable across restarts)
//! <data-dir>/log/       segments 0000000001.qlog, 0000000002.qlog, …
//! ```

pub mod checkpoint;
pub mod file;
pub mod frame;
pub mod log;
pub mod log_stats;
pub mod recovery;
pub mod repair;
pub mod stepwise;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::record::{
    BodyLoc, Durable, Journal, JournalError, LogPosition, Mark, ReadMessage, Record, Snapshot,
};
use file::LogFs;
pub use log::Durability;
use log::{Log, LogOptions, Tail};
pub use recovery::Recovered;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error(
        "the log is damaged in {file} at offset {offset}: {reason}. Nothing was changed; \
         run `queuelet repair --data-dir <dir>` to keep every valid record and drop the damage"
    )]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("data directory {0} is in use by another queuelet process")]
    Locked(PathBuf),
}

impl StoreError {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

pub struct Store {
    log: Log,
    log_dir: PathBuf,
    checkpoint: parking_lot::Mutex<Option<LogPosition>>,
    _lock: File,
}

/// Takes the directory's lock, so two servers never write one log.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::io(format!("locking {}", path.display()), e))
        }
    }
}

/// The directory's id-signing key, created on first use.
pub fn identity_key(dir: &Path) -> Result<[u8; 32], StoreError> {
    let path = dir.join("identity");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut key = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut key).map_err(|e| {
                StoreError::io(
                    format!("reading {}", path.display()),
                    io::Error::new(io::ErrorKind::InvalidData, e),
                )
            })?;
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            let temp = dir.join("identity.tmp");
            let write = || -> io::Result<()> {
                let mut file = File::create(&temp)?;
                file.write_all(hex::encode(key).as_bytes())?;
                file.sync_all()?;
                std::fs::rename(&temp, &path)?;
                File::open(dir)?.sync_all()
            };
            write().map_err(|e| StoreError::io(format!("writing {}", path.display()), e))?;
            Ok(key)
        }
        Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
    }
}

impl Store {
    /// Opens (or creates) the data directory, replays the log into `apply`, and starts
    /// the writer after the last valid record.
    pub fn open(
        data_dir: &Path,
        options: LogOptions,
        fs: Arc<dyn LogFs>,
        apply: &mut dyn FnMut(Record),
    ) -> Result<(Store, Recovered), StoreError> {
        let log_dir = data_dir.join("log");
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| StoreError::io(format!("creating {}", log_dir.display()), e))?;
        let lock = lock_dir(data_dir)?;
        let from = match checkpoint::read(&log_dir)? {
            Some((snapshot, position)) => {
                apply(Record::Checkpoint(Box::new(snapshot)));
                Some(position)
            }
            None => None,
        };
        let recovered = recovery::recover(&log_dir, from, apply)?;
        let tail = match recovered.segments.last() {
            Some(&segment) => Tail {
                segment,
                len: recovered.tail_len,
                next_lsn: recovered.next_lsn,
            },
            None => Tail {
                segment: 1,
                len: 0,
                next_lsn: 1,
            },
        };
        let log = Log::start(&log_dir, fs, options, &recovered.segments, tail)
            .map_err(|e| StoreError::io(format!("starting the log in {}", log_dir.display()), e))?;
        Ok((
            Store {
                log,
                log_dir,
                checkpoint: parking_lot::Mutex::new(from),
                _lock: lock,
            },
            recovered,
        ))
    }

    /// Why the store refuses writes, if it does.
    pub fn failure(&self) -> Option<String> {
        self.log.failure()
    }

    /// Replaces the checkpoint with `snapshot`, taken at `position` of the log.
    pub fn write_checkpoint(
        &self,
        snapshot: &Snapshot,
        position: LogPosition,
    ) -> Result<(), StoreError> {
        checkpoint::write(&self.log_dir, snapshot, position)?;
        *self.checkpoint.lock() = Some(position);
        Ok(())
    }

    /// Where the newest checkpoint was taken, if there is one.
    pub fn checkpoint(&self) -> Option<LogPosition> {
        *self.checkpoint.lock()
    }

    /// The log's segments, oldest first; the last one takes appends.
    pub fn segments(&self) -> Vec<u32> {
        self.log.segments()
    }

    /// Size of a segment file in bytes.
    pub fn segment_len(&self, id: u32) -> u64 {
        std::fs::metadata(log::segment_path(&self.log_dir, id))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Deletes a segment older than the checkpoint that holds no needed message.
    pub fn remove_segment(&self, id: u32) -> Result<(), StoreError> {
        let allowed = self.checkpoint().is_some_and(|c| id < c.segment);
        if !allowed {
            return Err(StoreError::io(
                format!("removing segment {id}"),
                io::Error::other("only segments before the checkpoint may be removed"),
            ));
        }
        self.log
            .remove_segment(id)
            .map_err(|e| StoreError::io(format!("removing segment {id}"), e))
    }

    /// Syncs what is written and stops the writer.
    pub fn close(&self) {
        self.log.close();
    }
}

/// Stored messages closer than this are read with one call, gap included.
const READ_GAP: u32 = 4 << 10;
/// Most bytes one coalesced read takes.
const READ_SPAN: u32 = 256 << 10;

/// Verifies the frame read from `loc` and returns its message.
fn decode_at(loc: BodyLoc, frame: &[u8]) -> ReadMessage {
    frame::decode_stored(frame).ok_or_else(|| {
        tracing::error!(
            segment = loc.segment,
            offset = loc.offset,
            "stored message fails its checksum"
        );
        JournalError::unavailable(format!(
            "the stored message in segment {} at offset {} is damaged (checksum mismatch)",
            loc.segment, loc.offset
        ))
    })
}

fn read_error(error: io::Error) -> JournalError {
    JournalError::unavailable(format!("reading a message body: {error}"))
}

impl Journal for Store {
    fn append(&self, records: Vec<Record>) -> Durable {
        self.log.append(records)
    }

    fn read_message(&self, loc: BodyLoc) -> ReadMessage {
        let bytes = self.log.read(loc).map_err(read_error)?;
        decode_at(loc, &bytes)
    }

    /// Messages sent together lie side by side in the log: one positional read per run
    /// of neighbours instead of one per message.
    fn read_messages(&self, locs: &[BodyLoc]) -> Vec<ReadMessage> {
        let mut order: Vec<usize> = (0..locs.len()).collect();
        order.sort_unstable_by_key(|&i| (locs[i].segment, locs[i].offset));
        let mut out: Vec<Option<ReadMessage>> = vec![None; locs.len()];
        let mut rest = order.as_slice();
        while let Some((&first, _)) = rest.split_first() {
            let start = locs[first];
            let mut end = start.offset + start.len;
            let run = rest
                .iter()
                .take_while(|&&i| {
                    let loc = locs[i];
                    let next_end = loc.offset + loc.len;
                    let joins = loc.segment == start.segment
                        && loc.offset <= end.saturating_add(READ_GAP)
                        && next_end.max(end) - start.offset <= READ_SPAN;
                    if joins {
                        end = end.max(next_end);
                    }
                    joins
                })
                .count()
                .max(1);
            let (members, later) = rest.split_at(run);
            rest = later;
            let span = BodyLoc {
                segment: start.segment,
                offset: start.offset,
                len: end - start.offset,
            };
            match self.log.read(span) {
                Ok(bytes) => {
                    for &i in members {
                        let at = (locs[i].offset - span.offset) as usize;
                        out[i] = Some(decode_at(locs[i], &bytes[at..at + locs[i].len as usize]));
                    }
                }
                Err(error) => {
                    let error = read_error(error);
                    for &i in members {
                        out[i] = Some(Err(error.clone()));
                    }
                }
            }
        }
        out.into_iter()
            .map(|answer| {
                answer.unwrap_or_else(|| Err(JournalError::unavailable("a read was skipped")))
            })
            .collect()
    }

    fn failure(&self) -> Option<String> {
        self.log.failure()
    }

    fn mark(&self) -> Mark {
        self.log.mark()
    }
}
