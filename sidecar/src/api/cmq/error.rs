//! CMQ's error shape: HTTP 200 with `{code, message: "(module)text", requestId}`, and
//! the codes CMQ gives each refusal.

use crate::engine::EngineError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmqError {
    pub code: u32,
    /// CMQ's finer "module" code, shown in the message as `(module)`.
    pub module: u32,
    pub text: String,
}

impl CmqError {
    pub fn new(code: u32, module: u32, text: impl Into<String>) -> Self {
        Self {
            code,
            module,
            text: text.into(),
        }
    }

    /// A parameter is missing or invalid.
    pub fn param(text: impl Into<String>) -> Self {
        Self::new(4000, 10110, text)
    }

    pub fn message(&self) -> String {
        format!("({}){}", self.module, self.text)
    }

    /// The queue is empty after the long poll: CMQ's 7000 "no message".
    pub fn no_message() -> Self {
        Self::new(7000, 10200, "no message")
    }
}

impl From<EngineError> for CmqError {
    fn from(error: EngineError) -> Self {
        use EngineError::*;
        let (code, module) = match &error {
            InvalidName(_) => (4000, 10020),
            InvalidAttribute { .. } | InvalidMessage(_) | InvalidRequest(_) | EmptyBatch => {
                (4000, 10110)
            }
            QueueNotFound(_) | DeadLetterQueueNotFound(_) => (4440, 10100),
            TopicNotFound(_) => (4440, 10600),
            SubscriptionNotFound { .. } => (4440, 10700),
            QueueExists(_) => (4460, 10160),
            TopicExists(_) => (4460, 10550),
            SubscriptionExists { .. } => (4490, 10470),
            TopicInUse(_) => (4000, 10540),
            QueueManaged(_) | TopicManaged(_) | QueueInUse { .. } | QueueSubscribed { .. } => {
                (4000, 10110)
            }
            MessageTooLarge { .. } => (4400, 10230),
            QueueFull { .. } => (4410, 10240),
            BatchTooLarge { .. } => (4470, 10300),
            LimitExceeded(_) => (4500, 10480),
            InvalidReceiptHandle => (4000, 10470),
            StaleReceiptHandle | WrongReplica(_) => (4430, 10260),
            RewindRefused(_) => (6050, 10670),
            Storage(_) | StorageFull(_) => (6000, 10050),
        };
        Self::new(code, module, error.to_string())
    }
}
