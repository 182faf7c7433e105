//! The checkpoint file: the engine's whole durable state at one point of the log, so
//! start-up replays only the records after it and compaction may remove older segments.
//!
//! ```text
//! "QLCKPT01" | crc32c u32 of the rest | body length u64 | body
//! ```
//! It is written beside the log as `checkpoint.tmp`, synced, then renamed over
//! `checkpoint`: a crash leaves the old checkpoint or the new one, never a torn one (and
//! perhaps a `checkpoint.tmp` or `checkpoint.prev`, removed by the next write).

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::StoreError;
use super::frame::{Reader, Writer};
use super::stepwise;
use crate::engine::record::{
    BodyLoc, BodyRef, LogPosition, MessageSnapshot, QueueSnapshot, Snapshot,
};

const MAGIC: &[u8; 8] = b"QLCKPT01";
pub const FILE: &str = "checkpoint";

fn put_message(w: &mut Writer<'_>, m: &MessageSnapshot) {
    w.u64(m.seq);
    match &m.body {
        BodyRef::Stored(loc) => {
            w.u8(0);
            w.u32(loc.segment);
            w.u32(loc.offset);
            w.u32(loc.len);
        }
        BodyRef::Bytes(bytes) => {
            w.u8(1);
            w.tags(&m.tags);
            w.bytes(bytes);
        }
    }
    w.u64(m.enqueued_ms);
    w.u64(m.visible_at_ms);
    w.u64(m.first_dequeue_ms);
    w.u32(m.dequeue_count);
}

fn get_message(r: &mut Reader<'_>) -> Option<MessageSnapshot> {
    let seq = r.u64()?;
    let (body, tags) = match r.u8()? {
        0 => (
            BodyRef::Stored(BodyLoc {
                segment: r.u32()?,
                offset: r.u32()?,
                len: r.u32()?,
            }),
            Vec::new(),
        ),
        1 => {
            let tags = r.tags()?;
            (
                BodyRef::Bytes(bytes::Bytes::copy_from_slice(r.bytes()?)),
                tags,
            )
        }
        _ => return None,
    };
    Some(MessageSnapshot {
        seq,
        body,
        tags,
        enqueued_ms: r.u64()?,
        visible_at_ms: r.u64()?,
        first_dequeue_ms: r.u64()?,
        dequeue_count: r.u32()?,
    })
}

pub fn encode(snapshot: &Snapshot, position: LogPosition) -> Vec<u8> {
    let mut body = Vec::new();
    let mut w = Writer(&mut body);
    w.u64(position.lsn);
    w.u32(position.segment);
    w.u64(position.offset);
    w.u32(snapshot.queues.len() as u32);
    for queue in &snapshot.queues {
        w.string(&queue.name);
        w.u64(queue.uid);
        w.attrs(&queue.attrs);
        w.u8(u8::from(queue.managed));
        w.u64(queue.created_ms);
        w.u64(queue.modified_ms);
        w.u64(queue.next_seq);
        for list in [&queue.messages, &queue.deleted] {
            w.u64(list.len() as u64);
            for m in list {
                put_message(&mut w, m);
            }
        }
    }
    // Topics follow the queues; a checkpoint written before topics existed ends here.
    w.u32(snapshot.topics.len() as u32);
    for topic in &snapshot.topics {
        w.topic(topic);
    }
    let mut out = Vec::with_capacity(body.len() + 20);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

pub fn decode(bytes: &[u8]) -> Option<(Snapshot, LogPosition)> {
    if bytes.get(..8)? != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?);
    let len = u64::from_le_bytes(bytes.get(12..20)?.try_into().ok()?) as usize;
    let body = bytes.get(20..)?;
    if body.len() != len || crc32c::crc32c(body) != crc {
        return None;
    }
    let mut r = Reader::new(body);
    let position = LogPosition {
        lsn: r.u64()?,
        segment: r.u32()?,
        offset: r.u64()?,
    };
    let count = r.u32()? as usize;
    let mut queues = Vec::with_capacity(count.min(100_000));
    for _ in 0..count {
        let name = r.string()?;
        let uid = r.u64()?;
        let attrs = r.attrs()?;
        let managed = r.u8()? != 0;
        let created_ms = r.u64()?;
        let modified_ms = r.u64()?;
        let next_seq = r.u64()?;
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let n = r.u64()? as usize;
            list.reserve(n.min(body.len() / 32));
            for _ in 0..n {
                list.push(get_message(&mut r)?);
            }
        }
        let [messages, deleted] = lists;
        queues.push(QueueSnapshot {
            name,
            uid,
            attrs,
            managed,
            created_ms,
            modified_ms,
            next_seq,
            messages,
            deleted,
        });
    }
    let mut topics = Vec::new();
    if !r.done() {
        let count = r.u32()? as usize;
        topics.reserve(count.min(100_000));
        for _ in 0..count {
            topics.push(r.topic()?);
        }
    }
    r.done().then_some((Snapshot { queues, topics }, position))
}

/// Replaces the checkpoint in `dir` atomically. The checkpoint of a large backlog is tens
/// of MiB: it is written, and the one it replaces removed, in steps (see `stepwise`).
pub fn write(dir: &Path, snapshot: &Snapshot, position: LogPosition) -> Result<(), StoreError> {
    let bytes = encode(snapshot, position);
    let temp = dir.join("checkpoint.tmp");
    let previous = dir.join("checkpoint.prev");
    let path = dir.join(FILE);
    let write = || -> io::Result<()> {
        remove_leftover(&temp, &path)?;
        remove_leftover(&previous, &path)?;
        let mut file = File::create(&temp)?;
        stepwise::write_all(&mut file, &bytes)?;
        file.sync_all()?;
        // The old checkpoint keeps a second name while the new one takes its place, so
        // the rename frees none of its blocks; they are freed in steps after.
        let kept = match std::fs::hard_link(&path, &previous) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        std::fs::rename(&temp, &path)?;
        File::open(dir)?.sync_all()?;
        // The new checkpoint stands: a failure here only leaves the old one for the
        // next write to remove.
        if kept && let Err(error) = stepwise::remove(&previous) {
            tracing::warn!(file = %previous.display(), %error, "cannot remove the previous checkpoint");
        }
        Ok(())
    };
    write().map_err(|e| StoreError::io(format!("writing {}", path.display()), e))
}

/// Removes what a crash left: a `checkpoint.tmp`, or a `checkpoint.prev` — which may
/// still be the current checkpoint's second name, and must then only be unlinked.
fn remove_leftover(leftover: &Path, current: &Path) -> io::Result<()> {
    let found = match std::fs::metadata(leftover) {
        Ok(found) => found,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let same_file = std::fs::metadata(current)
        .is_ok_and(|current| (current.dev(), current.ino()) == (found.dev(), found.ino()));
    if same_file {
        std::fs::remove_file(leftover)
    } else {
        stepwise::remove(leftover)
    }
}

/// The checkpoint in `dir`, if there is one. A damaged one stops the start.
pub fn read(dir: &Path) -> Result<Option<(Snapshot, LogPosition)>, StoreError> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(format!("reading {}", path.display()), e)),
    };
    decode(&bytes).map(Some).ok_or(StoreError::Corrupt {
        file: path,
        offset: 0,
        reason: "the checkpoint fails its checksum or does not decode".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(lsn: u64) -> LogPosition {
        LogPosition {
            lsn,
            segment: 1,
            offset: 0,
        }
    }

    fn snapshot(topics: usize) -> Snapshot {
        Snapshot {
            queues: Vec::new(),
            topics: (0..topics)
                .map(|i| crate::engine::topic::Topic {
                    name: format!("t{i}"),
                    attrs: Default::default(),
                    managed: false,
                    created_ms: 0,
                    modified_ms: 0,
                    subscriptions: Default::default(),
                })
                .collect(),
        }
    }

    fn read_lsn(dir: &Path) -> u64 {
        read(dir).unwrap().expect("a checkpoint").1.lsn
    }

    #[test]
    fn each_write_replaces_the_previous_and_leaves_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        for lsn in 1..=3 {
            write(dir.path(), &snapshot(lsn as usize), position(lsn)).unwrap();
            assert_eq!(read_lsn(dir.path()), lsn);
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE]);
    }

    #[test]
    fn leftovers_of_a_crash_never_damage_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join(FILE);
        write(dir.path(), &snapshot(2), position(7)).unwrap();
        // A crash between linking the old checkpoint aside and renaming the new one over
        // it: `checkpoint.prev` is the current checkpoint under a second name.
        let previous = dir.path().join("checkpoint.prev");
        std::fs::hard_link(&current, &previous).unwrap();
        std::fs::write(dir.path().join("checkpoint.tmp"), b"half a checkpoint").unwrap();
        // Clearing them away must not shrink the current checkpoint through its second name.
        remove_leftover(&previous, &current).unwrap();
        remove_leftover(&dir.path().join("checkpoint.tmp"), &current).unwrap();
        assert_eq!(read_lsn(dir.path()), 7);
        assert!(!previous.exists());

        // And a write over such leftovers succeeds.
        std::fs::hard_link(&current, &previous).unwrap();
        write(dir.path(), &snapshot(1), position(8)).unwrap();
        assert_eq!(read_lsn(dir.path()), 8);
        assert!(!previous.exists());
    }
}
