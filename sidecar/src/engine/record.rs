//! Durable state changes. Every change the engine must not forget is described by a
//! `Record`, handed to the `Journal` while the queue's lock is held (so records reach
//! the journal in the order they were applied), and acknowledged to the caller only
//! once the journal says it is durable. Receive-side visibility is soft state and
//! never journaled.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use super::attrs::QueueAttributes;

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
        body: Bytes,
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
    },
    /// Deleted messages enqueued at or after `from_ms` are consumable again.
    Rewound {
        queue: String,
        from_ms: u64,
    },
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct JournalError(pub String);

pub type Durable = Pin<Box<dyn Future<Output = Result<(), JournalError>> + Send>>;

/// Where records go. `append` is called with the queue lock held and must only
/// enqueue; the returned future completes when the records are durable.
pub trait Journal: Send + Sync + 'static {
    fn append(&self, records: Vec<Record>) -> Durable;
}

/// Keeps nothing: the engine runs purely in memory.
#[derive(Debug, Default)]
pub struct MemoryJournal;

impl Journal for MemoryJournal {
    fn append(&self, _records: Vec<Record>) -> Durable {
        Box::pin(std::future::ready(Ok(())))
    }
}
