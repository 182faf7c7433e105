//! The checkpoint file: the engine's whole durable state at one point of the log, so
//! start-up replays only the records after it and compaction may remove older segments.
//!
//! ```text
//! "QLCKPT01" | crc32c u32 of the rest | body length u64 | body
//! ```
//! It is written beside the log as `checkpoint.tmp`, synced, then renamed over
//! `checkpoint`: a crash leaves the old checkpoint or the new one, never a torn one.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::StoreError;
use super::frame::{Reader, Writer};
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

/// Replaces the checkpoint in `dir` atomically.
pub fn write(dir: &Path, snapshot: &Snapshot, position: LogPosition) -> Result<(), StoreError> {
    let bytes = encode(snapshot, position);
    let temp = dir.join("checkpoint.tmp");
    let path = dir.join(FILE);
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&temp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| StoreError::io(format!("writing {}", path.display()), e))
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
