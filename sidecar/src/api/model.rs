//! The native API's wire types, shared by the server and the typed client.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::engine::{
    QueueAttributes, QueueInfo, SubscriptionInfo, SubscriptionSpec, TopicAttributes, TopicInfo,
};

/// How a message body travels in JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    /// UTF-8 text, as is.
    #[default]
    Text,
    /// Standard base64 (with padding), for binary bodies.
    Base64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatsView {
    /// Visible messages, ready to be received.
    pub active: u64,
    /// Received messages hidden until their visibility timeout ends.
    pub inactive: u64,
    /// Messages waiting for their delay to pass.
    pub delayed: u64,
    /// Deleted messages a rewind can bring back.
    pub rewindable: u64,
    /// Enqueue time of the oldest message (ms since the Unix epoch).
    pub oldest_message_time_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueView {
    pub name: String,
    pub attributes: QueueAttributes,
    /// Declared in the configuration file: attributes change only there.
    pub managed: bool,
    pub created_time_ms: u64,
    pub modified_time_ms: u64,
    pub stats: QueueStatsView,
}

impl From<QueueInfo> for QueueView {
    fn from(info: QueueInfo) -> Self {
        Self {
            name: info.name,
            attributes: info.attrs,
            managed: info.managed,
            created_time_ms: info.created_ms,
            modified_time_ms: info.modified_ms,
            stats: QueueStatsView {
                active: info.stats.active,
                inactive: info.stats.inactive,
                delayed: info.stats.delayed,
                rewindable: info.stats.rewindable,
                oldest_message_time_ms: info.stats.oldest_message_ms,
            },
        }
    }
}

/// The paging of the queue list (the same as every list's).
pub type ListQueuesQuery = ListQuery;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueList {
    pub queues: Vec<QueueView>,
    /// Queues matching the prefix, over all pages.
    pub total: usize,
    /// Offset of the next page, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendMessage {
    pub body: String,
    #[serde(default)]
    pub encoding: BodyEncoding,
    /// Overrides the queue's delaySeconds (0–3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<u32>,
    /// Up to 5 tags of 1–16 characters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl SendMessage {
    /// A UTF-8 text message with the queue's default delay and no tags.
    pub fn text(body: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            encoding: BodyEncoding::Text,
            delay_seconds: None,
            tags: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendBatch {
    pub messages: Vec<SendMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentMessage {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentBatch {
    pub messages: Vec<SentMessage>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReceiveRequest {
    /// Most messages to return, 1–16 by default (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<usize>,
    /// Long-poll up to this many seconds (0–30) for a first message; default: the queue's
    /// pollingWaitSeconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_seconds: Option<u32>,
    /// How to return bodies; text bodies that are not UTF-8 come back as base64.
    #[serde(default)]
    pub encoding: BodyEncoding,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedMessage {
    pub id: String,
    /// Deletes the message or changes its visibility; only the latest one is valid.
    pub receipt_handle: String,
    pub body: String,
    pub encoding: BodyEncoding,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub enqueue_time_ms: u64,
    pub first_dequeue_time_ms: u64,
    pub dequeue_count: u32,
    pub next_visible_time_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedMessages {
    pub messages: Vec<ReceivedMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteBatch {
    pub receipt_handles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResult {
    pub receipt_handle: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResults {
    pub results: Vec<DeleteResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangeVisibility {
    pub receipt_handle: String,
    /// Seconds from now until the message is visible again (0–43200; 0 = now).
    pub visibility_timeout_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VisibilityChanged {
    pub next_visible_time_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RewindRequest {
    /// Deleted messages enqueued at or after this time (ms since the Unix epoch) become
    /// consumable again; it must lie within the queue's rewind window.
    pub start_time_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rewound {
    pub rewound: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Purged {
    pub purged: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only names that start with this.
    pub prefix: Option<String>,
    /// How many matching items to skip (default 0).
    pub offset: Option<usize>,
    /// Most items to return, 1–1000 (default 100).
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicView {
    pub name: String,
    pub attributes: TopicAttributes,
    /// Declared in the configuration file: the topic and its subscriptions change only there.
    pub managed: bool,
    pub created_time_ms: u64,
    pub modified_time_ms: u64,
    /// How many subscriptions the topic has.
    pub subscriptions: usize,
}

impl From<TopicInfo> for TopicView {
    fn from(info: TopicInfo) -> Self {
        Self {
            name: info.name,
            attributes: info.attrs,
            managed: info.managed,
            created_time_ms: info.created_ms,
            modified_time_ms: info.modified_ms,
            subscriptions: info.subscriptions,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicList {
    pub topics: Vec<TopicView>,
    /// Topics matching the prefix, over all pages.
    pub total: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    pub name: String,
    pub topic: String,
    pub settings: SubscriptionSpec,
    pub created_time_ms: u64,
    pub modified_time_ms: u64,
}

impl From<SubscriptionInfo> for SubscriptionView {
    fn from(info: SubscriptionInfo) -> Self {
        Self {
            name: info.name,
            topic: info.topic,
            settings: info.spec,
            created_time_ms: info.created_ms,
            modified_time_ms: info.modified_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionList {
    pub subscriptions: Vec<SubscriptionView>,
    /// Subscriptions matching the prefix, over all pages.
    pub total: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
}

/// One message published to a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishMessage {
    pub body: String,
    #[serde(default)]
    pub encoding: BodyEncoding,
    /// Up to 5 tags of 1–16 characters, matched against subscriptions' filterTags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Matched against subscriptions' bindingKeys on a routingKey topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
}

/// Up to 16 messages, published together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishBatch {
    pub messages: Vec<PublishMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedMessages {
    /// One id per message, in order.
    pub messages: Vec<SentMessage>,
    /// Messages enqueued into subscribed queues (one per message and matching subscription).
    pub deliveries: usize,
}

/// Every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Machine-readable, stable: e.g. `queue_not_found`, `message_too_large`.
    pub code: String,
    /// For people.
    pub message: String,
    pub request_id: String,
}
