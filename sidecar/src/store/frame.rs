//! The on-disk form of a record: a frame that can be verified on its own.
//!
//! ```text
//! header (17 bytes): payload length u32 | kind u8 | lsn u64 | crc32c u32
//! kind: the record's kind, with the high bit set when more records of the same request
//!       follow (a request's records are kept or dropped together)
//! payload: the record's fields, little-endian
//! ```
//! The CRC32C covers the first 13 header bytes and the payload, so a torn write,
//! a stale tail and a flipped bit all fail it. An all-zero header ends a segment.

use bytes::Bytes;

use crate::engine::QueueAttributes;
use crate::engine::record::{BodyLoc, BodyRef, Record};
use crate::engine::topic::Topic;

pub const HEADER_LEN: usize = 17;
/// Set in the kind byte of every record of a request but its last.
pub const MORE: u8 = 0x80;
/// Largest payload a frame may claim; anything larger is damage, not data.
pub const MAX_PAYLOAD: u32 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    QueueCreated = 1,
    QueueUpdated = 2,
    QueueDeleted = 3,
    QueuePurged = 4,
    Enqueued = 5,
    Deleted = 6,
    Expired = 7,
    DeadLettered = 8,
    Rewound = 9,
    Received = 10,
    TopicPut = 11,
    TopicDeleted = 12,
}

impl Kind {
    fn from_u8(value: u8) -> Option<Self> {
        use Kind::*;
        Some(match value {
            1 => QueueCreated,
            2 => QueueUpdated,
            3 => QueueDeleted,
            4 => QueuePurged,
            5 => Enqueued,
            6 => Deleted,
            7 => Expired,
            8 => DeadLettered,
            9 => Rewound,
            10 => Received,
            11 => TopicPut,
            12 => TopicDeleted,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub kind: u8,
    pub lsn: u64,
    pub crc: u32,
}

impl Header {
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Self {
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&bytes[5..13]);
        Header {
            len: u32_at(0),
            kind: bytes[4],
            lsn: u64::from_le_bytes(lsn),
            crc: u32_at(13),
        }
    }

    /// The record's kind, without the `MORE` bit.
    pub fn record_kind(&self) -> u8 {
        self.kind & !MORE
    }

    /// More records of the same request follow this one.
    pub fn more(&self) -> bool {
        self.kind & MORE != 0
    }

    pub fn is_zero(&self) -> bool {
        self.len == 0 && self.kind == 0 && self.lsn == 0 && self.crc == 0
    }

    pub fn checksum_ok(&self, header_bytes: &[u8; HEADER_LEN], payload: &[u8]) -> bool {
        crc32c::crc32c_append(crc32c::crc32c(&header_bytes[..13]), payload) == self.crc
    }
}

pub(super) struct Writer<'a>(pub(super) &'a mut Vec<u8>);

impl Writer<'_> {
    pub(super) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(super) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    pub(super) fn string(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    /// A message's tags: a count (at most 255 are kept), then each string.
    pub(super) fn tags(&mut self, tags: &[String]) {
        self.u8(tags.len().min(255) as u8);
        for tag in tags.iter().take(255) {
            self.string(tag);
        }
    }
    pub(super) fn seqs(&mut self, v: &[u64]) {
        self.u32(v.len() as u32);
        for s in v {
            self.u64(*s);
        }
    }
    pub(super) fn attrs(&mut self, attrs: &QueueAttributes) {
        self.json(attrs);
    }
    /// A topic's whole definition, as JSON like queue attributes.
    pub(super) fn topic(&mut self, topic: &Topic) {
        self.json(topic);
    }
    fn json<T: serde::Serialize>(&mut self, value: &T) {
        // Metadata changes rarely: JSON keeps it readable and easy to evolve.
        let json = serde_json::to_vec(value).unwrap_or_default();
        self.bytes(&json);
    }
}

pub(super) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }
    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(super) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(super) fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
    pub(super) fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    pub(super) fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    pub(super) fn tags(&mut self) -> Option<Vec<String>> {
        let n = self.u8()?;
        (0..n).map(|_| self.string()).collect()
    }
    pub(super) fn seqs(&mut self) -> Option<Vec<u64>> {
        let n = self.u32()? as usize;
        if n > self.buf.len() / 8 {
            return None;
        }
        (0..n).map(|_| self.u64()).collect()
    }
    pub(super) fn attrs(&mut self) -> Option<QueueAttributes> {
        serde_json::from_slice(self.bytes()?).ok()
    }
    pub(super) fn topic(&mut self) -> Option<Topic> {
        serde_json::from_slice(self.bytes()?).ok()
    }
    pub(super) fn done(&self) -> bool {
        self.at == self.buf.len()
    }
}

/// Appends the frame of `record` (numbered `lsn`) to `out`; `more` says that more
/// records of the same request follow. For an `Enqueued` record, returns the frame's
/// length: the message is read back by its whole frame, so every read is checked
/// against the frame's checksum.
pub fn encode(record: &Record, lsn: u64, more: bool, out: &mut Vec<u8>) -> Option<usize> {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    let mut stored = false;
    let mut w = Writer(out);
    let kind = match record {
        Record::Checkpoint(_) => {
            // Never appended: checkpoints have their own file.
            out.truncate(start);
            return None;
        }
        Record::QueueCreated {
            name,
            uid,
            attrs,
            managed,
            at_ms,
        } => {
            w.string(name);
            w.u64(*uid);
            w.attrs(attrs);
            w.u8(u8::from(*managed));
            w.u64(*at_ms);
            Kind::QueueCreated
        }
        Record::QueueUpdated {
            name,
            attrs,
            managed,
            at_ms,
        } => {
            w.string(name);
            w.attrs(attrs);
            w.u8(u8::from(*managed));
            w.u64(*at_ms);
            Kind::QueueUpdated
        }
        Record::QueueDeleted { name } => {
            w.string(name);
            Kind::QueueDeleted
        }
        Record::QueuePurged { name } => {
            w.string(name);
            Kind::QueuePurged
        }
        Record::Enqueued {
            queue,
            seq,
            enqueued_ms,
            visible_at_ms,
            tags,
            body,
        } => {
            w.string(queue);
            w.u64(*seq);
            w.u64(*enqueued_ms);
            w.u64(*visible_at_ms);
            w.tags(tags);
            let bytes: &[u8] = match body {
                BodyRef::Bytes(bytes) => bytes,
                BodyRef::Stored(_) => &[],
            };
            w.u32(bytes.len() as u32);
            w.0.extend_from_slice(bytes);
            stored = true;
            Kind::Enqueued
        }
        Record::Deleted { queue, seqs } => {
            w.string(queue);
            w.seqs(seqs);
            Kind::Deleted
        }
        Record::Expired { queue, seqs } => {
            w.string(queue);
            w.seqs(seqs);
            Kind::Expired
        }
        Record::DeadLettered {
            from,
            seq,
            to,
            to_seq,
            at_ms,
            stored,
        } => {
            w.string(from);
            w.u64(*seq);
            w.string(to);
            w.u64(*to_seq);
            w.u64(*at_ms);
            match stored {
                Some(loc) => {
                    w.u8(1);
                    w.u32(loc.segment);
                    w.u32(loc.offset);
                    w.u32(loc.len);
                }
                None => w.u8(0),
            }
            Kind::DeadLettered
        }
        Record::Rewound { queue, from_ms } => {
            w.string(queue);
            w.u64(*from_ms);
            Kind::Rewound
        }
        Record::Received { queue, counts } => {
            w.string(queue);
            w.u32(counts.len() as u32);
            for (seq, count) in counts {
                w.u64(*seq);
                w.u32(*count);
            }
            Kind::Received
        }
        Record::TopicPut(topic) => {
            w.topic(topic);
            Kind::TopicPut
        }
        Record::TopicDeleted { name } => {
            w.string(name);
            Kind::TopicDeleted
        }
    };
    let len = (out.len() - start - HEADER_LEN) as u32;
    let header = &mut out[start..start + HEADER_LEN];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4] = kind as u8 | if more { MORE } else { 0 };
    header[5..13].copy_from_slice(&lsn.to_le_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&out[start..start + 13]),
        &out[start + HEADER_LEN..],
    );
    out[start + 13..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    stored.then_some(out.len() - start)
}

/// Verifies a whole `Enqueued` frame read back from disk and returns its body and tags;
/// `None` when the bytes are damaged or not such a frame.
pub fn decode_stored(frame: &[u8]) -> Option<(Bytes, Vec<String>)> {
    let mut array = [0u8; HEADER_LEN];
    array.copy_from_slice(frame.get(..HEADER_LEN)?);
    let header = Header::parse(&array);
    let payload = frame.get(HEADER_LEN..)?;
    if header.record_kind() != Kind::Enqueued as u8
        || header.len as usize != payload.len()
        || !header.checksum_ok(&array, payload)
    {
        return None;
    }
    let mut r = Reader::new(payload);
    r.bytes()?; // queue
    r.take(24)?; // seq, enqueued, visible at
    let tags = r.tags()?;
    let body = r.bytes()?;
    r.done().then(|| (Bytes::copy_from_slice(body), tags))
}

/// Decodes a verified payload. `frame` says where the whole frame lies, so an `Enqueued`
/// record refers to its message on disk instead of copying the body.
pub fn decode(kind: u8, payload: &[u8], frame: BodyLoc) -> Option<Record> {
    let mut r = Reader::new(payload);
    let record = match Kind::from_u8(kind)? {
        Kind::QueueCreated => Record::QueueCreated {
            name: r.string()?,
            uid: r.u64()?,
            attrs: r.attrs()?,
            managed: r.u8()? != 0,
            at_ms: r.u64()?,
        },
        Kind::QueueUpdated => Record::QueueUpdated {
            name: r.string()?,
            attrs: r.attrs()?,
            managed: r.u8()? != 0,
            at_ms: r.u64()?,
        },
        Kind::QueueDeleted => Record::QueueDeleted { name: r.string()? },
        Kind::QueuePurged => Record::QueuePurged { name: r.string()? },
        Kind::Enqueued => {
            let queue = r.string()?;
            let seq = r.u64()?;
            let enqueued_ms = r.u64()?;
            let visible_at_ms = r.u64()?;
            let tags = r.tags()?;
            r.bytes()?;
            Record::Enqueued {
                queue,
                seq,
                enqueued_ms,
                visible_at_ms,
                tags,
                body: BodyRef::Stored(frame),
            }
        }
        Kind::Deleted => Record::Deleted {
            queue: r.string()?,
            seqs: r.seqs()?,
        },
        Kind::Expired => Record::Expired {
            queue: r.string()?,
            seqs: r.seqs()?,
        },
        Kind::DeadLettered => Record::DeadLettered {
            from: r.string()?,
            seq: r.u64()?,
            to: r.string()?,
            to_seq: r.u64()?,
            at_ms: r.u64()?,
            stored: match r.u8()? {
                0 => None,
                1 => Some(BodyLoc {
                    segment: r.u32()?,
                    offset: r.u32()?,
                    len: r.u32()?,
                }),
                _ => return None,
            },
        },
        Kind::Rewound => Record::Rewound {
            queue: r.string()?,
            from_ms: r.u64()?,
        },
        Kind::Received => {
            let queue = r.string()?;
            let n = r.u32()? as usize;
            if n > payload.len() / 12 {
                return None;
            }
            let counts = (0..n)
                .map(|_| Some((r.u64()?, r.u32()?)))
                .collect::<Option<Vec<_>>>()?;
            Record::Received { queue, counts }
        }
        Kind::TopicPut => Record::TopicPut(Box::new(r.topic()?)),
        Kind::TopicDeleted => Record::TopicDeleted { name: r.string()? },
    };
    r.done().then_some(record)
}
