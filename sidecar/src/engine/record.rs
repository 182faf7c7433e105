//! Durable state changes. Every change the engine must not forget is described by a
//! `Record`, handed to the `Journal` while the queue's lock is held (so records reach
//! the journal in the order they were applied), and acknowledged to the caller only
//! once the journal says it is durable. Receive-side visibility is soft state and
//! never journaled.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use super::attrs::QueueAttributes;
use super::topic::Topic;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    QueueCreated {
        name: String,
        uid: u64,
        attrs: QueueAttributes,
        managed: bool,
        at_ms: u64,
    },
    QueueUpdated {
        name: String,
        attrs: QueueAttributes,
        managed: bool,
        at_ms: u64,
    },
    QueueDeleted {
        name: String,
    },
    QueuePurged {
        name: String,
    },
    Enqueued {
        queue: String,
        seq: u64,
        enqueued_ms: u64,
        visible_at_ms: u64,
        tags: Vec<String>,
        body: BodyRef,
    },
    Deleted {
        queue: String,
        seqs: Vec<u64>,
    },
    /// Dropped at the end of their retention.
    Expired {
        queue: String,
        seqs: Vec<u64>,
    },
    /// Moved from `from` to `to`, where it is known by `to_seq`.
    DeadLettered {
        from: String,
        seq: u64,
        to: String,
        to_seq: u64,
        at_ms: u64,
        /// Where the message's record lies, so replay can move it even when `from` was
        /// deleted while the move was under way.
        stored: Option<BodyLoc>,
    },
    /// Deleted messages enqueued at or after `from_ms` are consumable again.
    Rewound {
        queue: String,
        from_ms: u64,
    },
    /// Receive counts, kept so a poison message still reaches its dead-letter queue
    /// after restarts. Written only for queues whose policy counts receives, and never
    /// waited for: a crash may lose the last few increments.
    Received {
        queue: String,
        counts: Vec<(u64, u32)>,
    },
    /// A topic created or changed: its whole definition, subscriptions included.
    TopicPut(Box<Topic>),
    TopicDeleted {
        name: String,
    },
    /// The whole state as of a checkpoint. Never appended: recovery hands it to the
    /// engine before the records that follow the checkpoint.
    Checkpoint(Box<Snapshot>),
}

/// The engine's durable state at one point of the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub queues: Vec<QueueSnapshot>,
    pub topics: Vec<Topic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSnapshot {
    pub name: String,
    pub uid: u64,
    pub attrs: QueueAttributes,
    pub managed: bool,
    pub created_ms: u64,
    pub modified_ms: u64,
    pub next_seq: u64,
    pub messages: Vec<MessageSnapshot>,
    /// Deleted messages kept for a rewind.
    pub deleted: Vec<MessageSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSnapshot {
    pub seq: u64,
    /// Stored, or (for a send not yet written when the checkpoint was taken) the bytes.
    pub body: BodyRef,
    /// Tags of an unstored message; a stored one keeps them in its record.
    pub tags: Vec<String>,
    pub enqueued_ms: u64,
    pub visible_at_ms: u64,
    pub first_dequeue_ms: u64,
    pub dequeue_count: u32,
}

/// A point in the log: the number of the next record and where it will be written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogPosition {
    pub lsn: u64,
    pub segment: u32,
    pub offset: u64,
}

pub type Mark = Pin<Box<dyn Future<Output = Result<LogPosition, JournalError>> + Send>>;

/// Where a stored message lies: a segment of the log, and the offset and length of its
/// record's whole frame (so every read is checked against the frame's checksum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLoc {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

/// A message body: in memory, or on disk once its record is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRef {
    Bytes(Bytes),
    Stored(BodyLoc),
}

impl BodyRef {
    pub fn len(&self) -> usize {
        match self {
            BodyRef::Bytes(bytes) => bytes.len(),
            BodyRef::Stored(loc) => loc.len as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalErrorKind {
    /// No space left: the write was undone; it may work again once space returns.
    Full,
    /// The write failed or the log is closed.
    Unavailable,
    /// A sync failed earlier; the log takes no more writes until restart.
    ReadOnly,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct JournalError {
    pub kind: JournalErrorKind,
    pub message: String,
}

impl JournalError {
    pub fn full(message: impl Into<String>) -> Self {
        Self {
            kind: JournalErrorKind::Full,
            message: message.into(),
        }
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            kind: JournalErrorKind::Unavailable,
            message: message.into(),
        }
    }
    pub fn read_only(message: impl Into<String>) -> Self {
        Self {
            kind: JournalErrorKind::ReadOnly,
            message: message.into(),
        }
    }
}

/// A stored message read back: its body and tags.
pub type ReadMessage = Result<(Bytes, Vec<String>), JournalError>;

/// Completes when the records are durable, with where each `Enqueued` body now lies.
pub type Durable = Pin<Box<dyn Future<Output = Result<Vec<Option<BodyLoc>>, JournalError>> + Send>>;

/// Where records go. `append` is called with the queue lock held and must only
/// enqueue; the returned future completes when the records are durable.
pub trait Journal: Send + Sync + 'static {
    fn append(&self, records: Vec<Record>) -> Durable;
    /// Reads the body and tags of a message that `append` reported stored.
    fn read_message(&self, loc: BodyLoc) -> ReadMessage;
    /// Reads several stored messages, answering in the order of `locs`. A journal on
    /// disk reads neighbouring ones together.
    fn read_messages(&self, locs: &[BodyLoc]) -> Vec<ReadMessage> {
        locs.iter().map(|loc| self.read_message(*loc)).collect()
    }
    /// Reads only the body of a stored message.
    fn read_body(&self, loc: BodyLoc) -> Result<Bytes, JournalError> {
        self.read_message(loc).map(|(body, _)| body)
    }
    /// Why the journal refuses writes, if it does.
    fn failure(&self) -> Option<String> {
        None
    }
    /// Marks the current end of the stream of appended records: the future yields the
    /// position the next record will take, once everything before it is written and
    /// synced — or an error if anything before it failed since the previous mark.
    fn mark(&self) -> Mark {
        Box::pin(std::future::ready(Err(JournalError::unavailable(
            "this journal keeps no checkpoints",
        ))))
    }
}

/// Keeps nothing: the engine runs purely in memory and bodies stay on the heap.
#[derive(Debug, Default)]
pub struct MemoryJournal;

impl Journal for MemoryJournal {
    fn append(&self, records: Vec<Record>) -> Durable {
        Box::pin(std::future::ready(Ok(vec![None; records.len()])))
    }

    fn read_message(&self, loc: BodyLoc) -> ReadMessage {
        Err(JournalError::unavailable(format!(
            "no stored bodies in memory mode ({loc:?})"
        )))
    }
}

/// A journal chosen after the engine exists: start-up replays the log into the engine
/// before the log can take new records. Until `set`, every append fails.
#[derive(Default)]
pub struct LateJournal {
    inner: std::sync::OnceLock<std::sync::Arc<dyn Journal>>,
}

impl LateJournal {
    pub fn set(&self, journal: std::sync::Arc<dyn Journal>) {
        let _ = self.inner.set(journal);
    }

    fn get(&self) -> Result<&std::sync::Arc<dyn Journal>, JournalError> {
        self.inner
            .get()
            .ok_or_else(|| JournalError::unavailable("the store is still opening"))
    }
}

impl Journal for LateJournal {
    fn append(&self, records: Vec<Record>) -> Durable {
        match self.get() {
            Ok(journal) => journal.append(records),
            Err(error) => Box::pin(std::future::ready(Err(error))),
        }
    }

    fn read_message(&self, loc: BodyLoc) -> ReadMessage {
        self.get()?.read_message(loc)
    }

    fn read_messages(&self, locs: &[BodyLoc]) -> Vec<ReadMessage> {
        match self.get() {
            Ok(journal) => journal.read_messages(locs),
            Err(error) => vec![Err(error); locs.len()],
        }
    }

    fn failure(&self) -> Option<String> {
        self.inner.get().and_then(|journal| journal.failure())
    }

    fn mark(&self) -> Mark {
        match self.get() {
            Ok(journal) => journal.mark(),
            Err(error) => Box::pin(std::future::ready(Err(error))),
        }
    }
}
