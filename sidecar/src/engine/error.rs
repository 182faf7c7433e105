use thiserror::Error;

/// Everything the engine refuses, each with enough context to tell the caller why.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum EngineError {
    #[error(
        "invalid queue name {0:?}: start with a letter, then letters, digits, '-' or '_', at most 64 characters"
    )]
    InvalidName(String),
    #[error("invalid {field}: {reason}")]
    InvalidAttribute { field: &'static str, reason: String },
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("queue {0:?} does not exist")]
    QueueNotFound(String),
    #[error("queue {0:?} already exists with different attributes")]
    QueueExists(String),
    #[error("queue {0:?} is managed by its declaration in the configuration file; change it there")]
    QueueManaged(String),
    #[error("queue {queue:?} is the dead-letter queue of {used_by:?}; change that policy first")]
    QueueInUse { queue: String, used_by: String },
    #[error(
        "queue {queue:?} is subscribed to topic {topic:?} by {subscription:?}; unsubscribe first"
    )]
    QueueSubscribed {
        queue: String,
        topic: String,
        subscription: String,
    },
    #[error("topic {0:?} does not exist")]
    TopicNotFound(String),
    #[error("topic {0:?} already exists with different attributes")]
    TopicExists(String),
    #[error("topic {0:?} is managed by its declaration in the configuration file; change it there")]
    TopicManaged(String),
    #[error("topic {0:?} still has subscriptions; unsubscribe them first")]
    TopicInUse(String),
    #[error("subscription {subscription:?} of topic {topic:?} does not exist")]
    SubscriptionNotFound { topic: String, subscription: String },
    #[error(
        "subscription {subscription:?} of topic {topic:?} already exists with different settings"
    )]
    SubscriptionExists { topic: String, subscription: String },
    #[error("limit reached: {0}")]
    LimitExceeded(String),
    #[error("dead-letter queue {0:?} does not exist")]
    DeadLetterQueueNotFound(String),
    #[error("message of {size} bytes exceeds the queue's maxMessageBytes ({max})")]
    MessageTooLarge { size: usize, max: u32 },
    #[error("batch of {size} exceeds the limit of {max}")]
    BatchTooLarge { size: usize, max: usize },
    #[error("empty batch: give at least one item")]
    EmptyBatch,
    #[error("queue {queue:?} is full: {backlog} messages of at most {max}")]
    QueueFull {
        queue: String,
        backlog: u64,
        max: u64,
    },
    #[error("malformed receipt handle")]
    InvalidReceiptHandle,
    #[error(
        "receipt handle is no longer valid: the message was deleted, received again, or became visible again"
    )]
    StaleReceiptHandle,
    #[error("receipt handle belongs to replica {0}, not this one")]
    WrongReplica(u16),
    #[error("rewind is not possible: {0}")]
    RewindRefused(String),
    #[error("storage unavailable: {0}")]
    Storage(String),
    #[error("storage full: {0}")]
    StorageFull(String),
}
