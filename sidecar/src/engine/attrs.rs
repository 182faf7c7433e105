//! Queue attributes, their defaults and their allowed ranges (the CMQ model's).

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::EngineError;

pub const VISIBILITY_TIMEOUT_SECONDS: (u32, u32) = (1, 43_200);
pub const POLLING_WAIT_SECONDS: (u32, u32) = (0, 30);
pub const MAX_MESSAGE_BYTES: (u32, u32) = (1_024, 1_048_576);
pub const RETENTION_SECONDS: (u32, u32) = (60, 1_296_000);
pub const DELAY_SECONDS: (u32, u32) = (0, 3_600);
pub const MAX_BACKLOG: (u64, u64) = (1, 1_000_000_000);
pub const MAX_RECEIVE_COUNT: (u32, u32) = (1, 1_000);
pub const MAX_TIME_TO_LIVE_SECONDS: (u32, u32) = (300, 43_200);
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_TAGS: usize = 5;
pub const MAX_TAG_LEN: usize = 16;

/// The settings of one queue. Every field has a default, so `{}` is a valid queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueAttributes {
    /// Seconds a received message stays hidden before it becomes visible again (1–43200).
    pub visibility_timeout_seconds: u32,
    /// Default long-poll wait of a receive that names none (0–30).
    pub polling_wait_seconds: u32,
    /// Largest accepted message body in bytes (1024–1048576).
    pub max_message_bytes: u32,
    /// Seconds a message is kept before it expires (60–1296000).
    pub retention_seconds: u32,
    /// Default delay of a new message in seconds (0–3600).
    pub delay_seconds: u32,
    /// Most messages the queue holds; sends beyond it are refused (1–1000000000).
    pub max_backlog: u64,
    /// How far back (seconds) a rewind may reach; 0 disables rewind (0–retentionSeconds).
    pub rewind_seconds: u32,
    /// Where messages go that are received too often or live too long.
    pub dead_letter: Option<DeadLetterPolicy>,
}

impl Default for QueueAttributes {
    fn default() -> Self {
        Self {
            visibility_timeout_seconds: 30,
            polling_wait_seconds: 0,
            max_message_bytes: 65_536,
            retention_seconds: 345_600,
            delay_seconds: 0,
            max_backlog: 10_000_000,
            rewind_seconds: 0,
            dead_letter: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeadLetterPolicy {
    /// The queue (on the same server) that receives the dead letters.
    pub queue: String,
    /// Move a message once it has been received this many times without a delete (1–1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_receive_count: Option<u32>,
    /// Move a message still undeleted this many seconds after it was sent (300–43200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_time_to_live_seconds: Option<u32>,
}

/// A partial update: fields left out keep their value; `deadLetter: null` removes the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueAttributesPatch {
    pub visibility_timeout_seconds: Option<u32>,
    pub polling_wait_seconds: Option<u32>,
    pub max_message_bytes: Option<u32>,
    pub retention_seconds: Option<u32>,
    pub delay_seconds: Option<u32>,
    pub max_backlog: Option<u64>,
    pub rewind_seconds: Option<u32>,
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<DeadLetterPolicy>)]
    pub dead_letter: Option<Option<DeadLetterPolicy>>,
}

/// Tells "absent" (outer `None`, through `default`) from "null" (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    de: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(de).map(Some)
}

impl QueueAttributesPatch {
    pub fn apply_to(&self, attrs: &QueueAttributes) -> QueueAttributes {
        let mut out = attrs.clone();
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { out.$field = v; } )* };
        }
        take!(
            visibility_timeout_seconds,
            polling_wait_seconds,
            max_message_bytes,
            retention_seconds,
            delay_seconds,
            max_backlog,
            rewind_seconds
        );
        if let Some(dead_letter) = &self.dead_letter {
            out.dead_letter = dead_letter.clone();
        }
        out
    }
}

pub(crate) fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &'static str,
    value: T,
    (min, max): (T, T),
) -> Result<(), EngineError> {
    if value < min || value > max {
        return Err(EngineError::InvalidAttribute {
            field,
            reason: format!("{value} is outside {min}..={max}"),
        });
    }
    Ok(())
}

impl QueueAttributes {
    /// Checks every range and the relations between fields; the dead-letter target's
    /// existence is checked by the engine, which knows the other queues.
    pub fn validate(&self, queue_name: &str) -> Result<(), EngineError> {
        check_range(
            "visibilityTimeoutSeconds",
            self.visibility_timeout_seconds,
            VISIBILITY_TIMEOUT_SECONDS,
        )?;
        check_range(
            "pollingWaitSeconds",
            self.polling_wait_seconds,
            POLLING_WAIT_SECONDS,
        )?;
        check_range("maxMessageBytes", self.max_message_bytes, MAX_MESSAGE_BYTES)?;
        check_range(
            "retentionSeconds",
            self.retention_seconds,
            RETENTION_SECONDS,
        )?;
        check_range("delaySeconds", self.delay_seconds, DELAY_SECONDS)?;
        check_range("maxBacklog", self.max_backlog, MAX_BACKLOG)?;
        check_range(
            "rewindSeconds",
            self.rewind_seconds,
            (0, self.retention_seconds),
        )?;
        if let Some(policy) = &self.dead_letter {
            validate_name(&policy.queue).map_err(|e| EngineError::InvalidAttribute {
                field: "deadLetter.queue",
                reason: e.to_string(),
            })?;
            if policy.queue == queue_name {
                return Err(EngineError::InvalidAttribute {
                    field: "deadLetter.queue",
                    reason: "a queue cannot be its own dead-letter queue".into(),
                });
            }
            if policy.max_receive_count.is_none() && policy.max_time_to_live_seconds.is_none() {
                return Err(EngineError::InvalidAttribute {
                    field: "deadLetter",
                    reason: "set maxReceiveCount, maxTimeToLiveSeconds or both".into(),
                });
            }
            if let Some(count) = policy.max_receive_count {
                check_range("deadLetter.maxReceiveCount", count, MAX_RECEIVE_COUNT)?;
            }
            if let Some(ttl) = policy.max_time_to_live_seconds {
                check_range(
                    "deadLetter.maxTimeToLiveSeconds",
                    ttl,
                    MAX_TIME_TO_LIVE_SECONDS,
                )?;
                if ttl >= self.retention_seconds {
                    return Err(EngineError::InvalidAttribute {
                        field: "deadLetter.maxTimeToLiveSeconds",
                        reason: format!(
                            "{ttl} must be less than retentionSeconds ({})",
                            self.retention_seconds
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// CMQ's naming rule: a letter first, then letters, digits, `-` or `_`; at most 64 characters.
pub fn validate_name(name: &str) -> Result<(), EngineError> {
    let mut chars = name.chars();
    let valid = name.len() <= MAX_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(EngineError::InvalidName(name.chars().take(80).collect()))
    }
}

pub fn validate_tags(tags: &[String]) -> Result<(), EngineError> {
    if tags.len() > MAX_TAGS {
        return Err(EngineError::InvalidMessage(format!(
            "{} tags given, at most {MAX_TAGS} allowed",
            tags.len()
        )));
    }
    if let Some(bad) = tags
        .iter()
        .find(|t| t.is_empty() || t.chars().count() > MAX_TAG_LEN)
    {
        return Err(EngineError::InvalidMessage(format!(
            "tag {bad:?} must be 1 to {MAX_TAG_LEN} characters"
        )));
    }
    Ok(())
}
