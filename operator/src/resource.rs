//! The `MessageQueue` custom resource: its spec, its status, and the validation the API
//! server applies at `kubectl apply` time (OpenAPI ranges and patterns, plus CEL rules for
//! what crosses fields).
//!
//! Queue attributes mirror the sidecar's (`queuelet::engine::QueueAttributes`, camelCase,
//! same ranges); leaving one out keeps the sidecar's default.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, PodTemplateSpec, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The queue server's HTTP port, inside the pod.
pub const SERVER_PORT: i32 = 8080;
/// Size of each replica's volume when `storage.size` is left out.
pub const DEFAULT_STORAGE_SIZE: &str = "1Gi";

/// Upper bounds that keep the CEL rules' estimated cost within the API server's budget
/// (the subscription-target rule walks topics × subscriptions × queues). Raising them later
/// is compatible; lowering them would not be.
pub const MAX_QUEUES: usize = 128;
pub const MAX_TOPICS: usize = 32;
pub const MAX_SUBSCRIPTIONS: usize = 16;
const _: () = assert!(MAX_TOPICS * MAX_SUBSCRIPTIONS * MAX_QUEUES <= 65_536);

/// A durable message queue: a StatefulSet of queuelet servers, each with its own volume,
/// serving the declared queues over HTTP.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "queuelet.dev",
    version = "v1alpha1",
    kind = "MessageQueue",
    namespaced,
    status = "MessageQueueStatus",
    shortname = "mq",
    category = "queuelet",
    derive = "PartialEq",
    cel,
    doc = "A durable message queue: a StatefulSet of queuelet servers serving the declared queues.",
    validation = Rule::new("self.metadata.name.size() <= 52 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS label (lowercase letters, digits and '-', starting with a letter) of at most 52 characters: it names the StatefulSet and the Services"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas", description = "Desired queue pods"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas", description = "Queue pods ready"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    )
)]
#[x_kube(
    validation = Rule::new("!(has(self.storage) && has(self.ephemeral) && self.ephemeral)")
        .message("storage and ephemeral: true exclude each other: an ephemeral queue keeps its data in an emptyDir"),
    validation = Rule::new("!has(self.queues) || self.queues.all(q, !has(q.deadLetter) || self.queues.exists(d, d.name == q.deadLetter.queue))")
        .message("every deadLetter.queue must name a queue declared in spec.queues")
        .field_path(".queues"),
    validation = Rule::new("!has(self.topics) || self.topics.all(t, !has(t.subscriptions) || t.subscriptions.all(s, !has(s.queue) || (has(self.queues) && self.queues.exists(q, q.name == s.queue))))")
        .message("every subscription's queue must name a queue declared in spec.queues")
        .field_path(".topics"),
    validation = Rule::new("(has(self.ephemeral) && self.ephemeral) == (has(oldSelf.ephemeral) && oldSelf.ephemeral)")
        .message("ephemeral cannot be changed: the volumes of existing queue pods cannot be converted")
        .field_path(".ephemeral"),
    validation = Rule::new("quantity(has(self.storage) && has(self.storage.size) ? self.storage.size : '1Gi').compareTo(quantity(has(oldSelf.storage) && has(oldSelf.storage.size) ? oldSelf.storage.size : '1Gi')) >= 0")
        .message("storage.size can only grow: shrinking a volume that holds messages is not possible")
        .field_path(".storage.size"),
    validation = Rule::new("(has(self.storage) && has(self.storage.storageClassName) ? self.storage.storageClassName : '') == (has(oldSelf.storage) && has(oldSelf.storage.storageClassName) ? oldSelf.storage.storageClassName : '')")
        .message("storage.storageClassName cannot be changed once the volumes exist")
        .field_path(".storage.storageClassName"),
)]
#[serde(rename_all = "camelCase")]
pub struct MessageQueueSpec {
    /// Queue pods; each holds its own partition of every queue (at least 1).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self >= 1").message("replicas must be at least 1"))]
    pub replicas: i32,

    /// Container image of the queue server; the operator's default when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Each replica's persistent volume (default: 1Gi of the default storage class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,

    /// Keep the queues in an emptyDir instead of a persistent volume: every message is
    /// lost when a pod is deleted or rescheduled. Cannot be changed after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<bool>,

    /// When sends and deletes are acknowledged (default: fsync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durability: Option<Durability>,

    /// Declared queues, ensured on every replica; changes reach running pods without a
    /// restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_QUEUES))]
    #[x_kube(
        merge_strategy = ListMerge::Map(vec!["name".into()]),
        validation = Rule::new("self.all(q, self.exists_one(p, p.name == q.name))")
            .message("queue names must be unique")
    )]
    pub queues: Vec<QueueSpec>,

    /// Topics fanning published messages out to subscriptions: queues of this resource or
    /// HTTP endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TOPICS))]
    #[x_kube(
        merge_strategy = ListMerge::Map(vec!["name".into()]),
        validation = Rule::new("self.all(t, self.exists_one(u, u.name == t.name))")
            .message("topic names must be unique")
    )]
    pub topics: Vec<TopicSpec>,

    /// A workload that runs beside the queue server in every queue pod and consumes over
    /// http://127.0.0.1:8080.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<Consumer>,

    /// Credentials of the HTTP API (default: the operator creates `<name>-credentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,

    /// CA certificates the queue servers trust for https:// push endpoints, besides
    /// those of their image (e.g. a cluster's private CA): PEM in a ConfigMap of the same
    /// namespace, re-read by the servers when it changes. The pods start once it exists.
    #[serde(default, rename = "pushCA", skip_serializing_if = "Option::is_none")]
    pub push_ca: Option<PushCa>,

    /// The client Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSettings>,

    /// Scheduling, resources and metadata of the queue pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodSettings>,
}

fn default_replicas() -> i32 {
    1
}

/// Each replica's persistent volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Volume size, e.g. `1Gi` (default). It can grow, never shrink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_string")]
    pub size: Option<Quantity>,

    /// Storage class of the volume claims (default: the cluster's default class).
    /// Cannot be changed after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,

    /// Delete the volume claims (and the messages on them) when the MessageQueue is
    /// deleted. Scaling down never deletes a claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_claims_on_delete: Option<bool>,
}

/// A Kubernetes quantity, as a string: CEL's `quantity()` needs a string, and the
/// apiserver checks the format before the rules run.
fn quantity_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "description": "Volume size, e.g. `1Gi` (default). It can grow, never shrink.",
        "maxLength": 64,
        "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
    })
}

/// When sends and deletes are acknowledged.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.intervalMs) || self.mode == 'interval'")
    .message("intervalMs applies only to mode: interval"))]
#[serde(rename_all = "camelCase")]
pub struct Durability {
    /// `fsync`: after the record is synced to disk (default). `interval`: once written,
    /// syncing every intervalMs; a machine crash can lose up to one interval.
    #[serde(default)]
    pub mode: DurabilityMode,

    /// Sync period of mode `interval`, in milliseconds (1–10000, default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000))]
    pub interval_ms: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DurabilityMode {
    #[default]
    Fsync,
    Interval,
}

impl DurabilityMode {
    /// The value of the sidecar's `--durability` flag.
    pub fn as_flag(self) -> &'static str {
        match self {
            DurabilityMode::Fsync => "fsync",
            DurabilityMode::Interval => "interval",
        }
    }
}

/// A declared queue: its name and the attributes that differ from the defaults.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.rewindSeconds) || self.rewindSeconds <= (has(self.retentionSeconds) ? self.retentionSeconds : 345600)")
        .message("rewindSeconds cannot exceed retentionSeconds (default 345600)")
        .field_path(".rewindSeconds"),
    validation = Rule::new("!has(self.deadLetter) || self.deadLetter.queue != self.name")
        .message("a queue cannot be its own dead-letter queue")
        .field_path(".deadLetter.queue"),
    validation = Rule::new("!has(self.deadLetter) || !has(self.deadLetter.maxTimeToLiveSeconds) || self.deadLetter.maxTimeToLiveSeconds < (has(self.retentionSeconds) ? self.retentionSeconds : 345600)")
        .message("deadLetter.maxTimeToLiveSeconds must be less than retentionSeconds (default 345600)")
        .field_path(".deadLetter.maxTimeToLiveSeconds"),
)]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// Queue name: a letter, then letters, digits, `-` or `_`; at most 64 characters.
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
    )]
    pub name: String,

    /// Seconds a received message stays hidden before it is visible again (1–43200, default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 43_200))]
    pub visibility_timeout_seconds: Option<i32>,

    /// Default long-poll wait of a receive that names none (0–30, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 30))]
    pub polling_wait_seconds: Option<i32>,

    /// Largest accepted message body in bytes (1024–1048576, default 65536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1_024, max = 1_048_576))]
    pub max_message_bytes: Option<i32>,

    /// Seconds a message is kept before it expires (60–1296000, default 345600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 1_296_000))]
    pub retention_seconds: Option<i32>,

    /// Default delay of a new message in seconds (0–3600, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3_600))]
    pub delay_seconds: Option<i32>,

    /// Most messages the queue holds on each replica; sends beyond it are refused
    /// (1–1000000000, default 10000000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub max_backlog: Option<i64>,

    /// How far back (seconds) a rewind may reach; 0 disables rewind (0–retentionSeconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_296_000))]
    pub rewind_seconds: Option<i32>,

    /// Where messages go that are received too often or live too long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetter>,
}

impl QueueSpec {
    /// A queue with every attribute left to its default.
    pub fn named(name: impl Into<String>) -> Self {
        QueueSpec {
            name: name.into(),
            visibility_timeout_seconds: None,
            polling_wait_seconds: None,
            max_message_bytes: None,
            retention_seconds: None,
            delay_seconds: None,
            max_backlog: None,
            rewind_seconds: None,
            dead_letter: None,
        }
    }
}

/// A dead-letter policy: at least one of maxReceiveCount and maxTimeToLiveSeconds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.maxReceiveCount) || has(self.maxTimeToLiveSeconds)")
    .message("deadLetter needs maxReceiveCount, maxTimeToLiveSeconds or both"))]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The queue (declared in this MessageQueue) that receives the dead letters.
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
    )]
    pub queue: String,

    /// Move a message once it has been received this many times without a delete (1–1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000))]
    pub max_receive_count: Option<i32>,

    /// Move a message still undeleted this many seconds after it was sent (300–43200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 300, max = 43_200))]
    pub max_time_to_live_seconds: Option<i32>,
}

/// A topic and its subscriptions. It filters by tags, or by routing keys when its
/// subscriptions give `bindingKeys`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!(self.subscriptions.exists(s, has(s.filterTags)) && self.subscriptions.exists(s, has(s.bindingKeys)))")
    .message("a topic filters by tags or by routing keys: its subscriptions give filterTags or bindingKeys, not both"))]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// Topic name: a letter, then letters, digits, `-` or `_`; at most 64 characters.
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
    )]
    pub name: String,

    /// Where published messages are delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_SUBSCRIPTIONS))]
    #[x_kube(
        merge_strategy = ListMerge::Map(vec!["name".into()]),
        validation = Rule::new("self.all(s, self.exists_one(r, r.name == s.name))")
            .message("subscription names must be unique within a topic")
    )]
    pub subscriptions: Vec<Subscription>,
}

/// A subscription delivers to a queue of this MessageQueue or to an HTTP endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.queue) != has(self.endpoint)")
    .message("a subscription needs exactly one of queue and endpoint"))]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Subscription name, unique within its topic.
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
    )]
    pub name: String,

    /// A queue declared in this MessageQueue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
    )]
    pub queue: Option<String>,

    /// An http:// or https:// URL messages are POSTed to. An https endpoint's
    /// certificate must chain to a CA the queue server's image trusts, or to one in
    /// pushCA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 512), regex(pattern = r"^https?://[^/?#\s]+"))]
    pub endpoint: Option<String>,

    /// Deliver only messages carrying one of these tags (at most 5, 1–16 characters each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5), inner(length(min = 1, max = 16)))]
    pub filter_tags: Vec<String>,

    /// Deliver only messages whose routing key matches one of these patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5), inner(length(min = 1, max = 64)))]
    pub binding_keys: Vec<String>,

    /// Retry policy of endpoint pushes (default: backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RetryPolicy {
    /// Retry with a fixed backoff.
    Backoff,
    /// Retry with exponentially growing pauses.
    Exponential,
}

/// A workload that runs beside the queue server in every queue pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Consumer {
    /// Pod template of the consumer: its containers run beside the queue server (a native
    /// sidecar) with QUEUELET_URL, QUEUELET_TOKEN and QUEUELET_SOCKET (the server's Unix
    /// socket, cheaper per request than the URL) in their environment.
    #[schemars(schema_with = "pod_template_schema")]
    pub template: PodTemplateSpec,
}

/// Credentials of the HTTP API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// An existing Secret in the same namespace whose `token` key holds the bearer token;
    /// the operator then creates none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
}

/// A key of a ConfigMap holding PEM CA certificates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushCa {
    /// The ConfigMap's name.
    #[schemars(length(min = 1, max = 253))]
    pub config_map_name: String,

    /// The key holding the certificates (default `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

/// The client Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSettings {
    /// Service type (default ClusterIP).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,

    /// Service port (default 8080).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65_535))]
    pub port: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Scheduling, resources and metadata of the queue pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodSettings {
    /// Resources of the queue server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,

    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Affinity of the queue pods (default: spread over nodes when possible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "affinity_schema")]
    pub affinity: Option<Affinity>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "tolerations_schema")]
    pub tolerations: Vec<Toleration>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,

    /// Extra labels of the queue pods (the operator's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Extra annotations of the queue pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What the operator observed, written by the controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MessageQueueStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Queue pods that exist.
    #[serde(default)]
    pub replicas: i32,

    /// Queue pods ready to serve.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Label selector of the queue pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// URL of the client Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// The Secret holding the bearer token (key `token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,

    /// Ready, Progressing and Degraded, in the standard Condition shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Message counts per declared queue, summed over the replicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub queues: Vec<QueueStatus>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Running,
    Degraded,
    Draining,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    pub name: String,
    /// Visible messages.
    #[serde(default)]
    pub active: i64,
    /// Received messages not yet deleted nor visible again.
    #[serde(default)]
    pub inactive: i64,
    /// Messages whose delay has not ended.
    #[serde(default)]
    pub delayed: i64,
}

// Embedded Kubernetes types keep their structure and validation markers but not their
// (long) descriptions, so the CRD stays small enough for client-side `kubectl apply`.

fn pod_template_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    embedded::<PodTemplateSpec>(generator)
}

fn resources_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    embedded::<ResourceRequirements>(generator)
}

fn affinity_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    embedded::<Affinity>(generator)
}

fn tolerations_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    embedded::<Vec<Toleration>>(generator)
}

fn embedded<T: JsonSchema>(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut value = generator.subschema_for::<T>().to_value();
    strip_descriptions(&mut value);
    schemars::Schema::try_from(value).expect("a stripped schema is still a schema")
}

fn strip_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("description");
            // `properties` maps field names to schemas: a field called "description" stays.
            for (key, child) in map.iter_mut() {
                if key == "properties" {
                    if let serde_json::Value::Object(props) = child {
                        props.values_mut().for_each(strip_descriptions);
                    }
                } else {
                    strip_descriptions(child);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    //! Every CEL rule of the schema, evaluated without a cluster by the kube `cel` feature
    //! (`validate_cel` for creation rules, `validate_cel_update` for transition rules).

    use super::*;

    fn parse(yaml: &str) -> MessageQueue {
        serde_saphyr::from_str(yaml).expect("test input is a MessageQueue")
    }

    fn with_spec(spec: &str) -> MessageQueue {
        let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
        parse(&format!(
            "apiVersion: queuelet.dev/v1alpha1\nkind: MessageQueue\n\
             metadata: {{name: orders, namespace: shop}}\nspec:\n{indented}"
        ))
    }

    /// The CRD's schema with its rules compiled once: evaluating it is what the generated
    /// `validate_cel`/`validate_cel_update` do, without regenerating the CRD every call
    /// (`generated_methods_and_compiled_schema_agree` checks they give the same answers).
    fn compiled() -> &'static kube::core::cel::CompiledSchema {
        static COMPILED: std::sync::OnceLock<kube::core::cel::CompiledSchema> =
            std::sync::OnceLock::new();
        COMPILED.get_or_init(|| {
            let crd = <MessageQueue as kube::CustomResourceExt>::crd();
            let schema = crd.spec.versions[0].schema.as_ref().unwrap();
            let schema = serde_json::to_value(schema.open_api_v3_schema.as_ref().unwrap()).unwrap();
            let compiled = kube::core::cel::compile_schema(&schema);
            assert!(
                !compiled.has_errors(),
                "{:?}",
                compiled.compilation_errors()
            );
            compiled
        })
    }

    fn messages(result: Result<(), kube::core::cel::ValidationErrors>) -> Vec<String> {
        match result {
            Ok(()) => vec![],
            Err(errors) => {
                let mut messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                messages.sort();
                messages
            }
        }
    }

    /// Messages of the failed rules on creation; empty when the resource is accepted.
    fn refusals(mq: &MessageQueue) -> Vec<String> {
        let object = serde_json::to_value(mq).unwrap();
        messages(kube::core::cel::Validator::new().validate_compiled(compiled(), &object, None))
    }

    /// Messages of the failed rules on an update from `old` to `new`.
    fn update_refusals(old: &MessageQueue, new: &MessageQueue) -> Vec<String> {
        let object = serde_json::to_value(new).unwrap();
        let old = serde_json::to_value(old).unwrap();
        messages(kube::core::cel::Validator::new().validate_compiled(
            compiled(),
            &object,
            Some(&old),
        ))
    }

    /// Every rule with the schema node it is declared on.
    fn rules(
        node: &'static kube::core::cel::CompiledSchema,
        out: &mut Vec<(String, &'static kube::core::cel::CompiledSchema)>,
    ) {
        for rule in node.validations.iter().flatten() {
            out.push((rule.rule.rule.clone(), node));
        }
        let children = node
            .properties
            .values()
            .chain(node.items.as_deref())
            .chain(node.additional_properties.as_deref());
        for child in children {
            rules(child, out);
        }
    }

    #[test]
    fn every_rule_is_bounded_and_within_the_cost_budget() {
        let mut all = Vec::new();
        rules(compiled(), &mut all);
        assert_eq!(
            all.len(),
            18,
            "{:#?}",
            all.iter().map(|(r, _)| r).collect::<Vec<_>>()
        );
        for (rule, node) in all {
            // kube-cel's scope check mistakes comprehension variables for free ones, so
            // only its cost estimate (budget and missing maxItems/maxLength) is asked.
            let mut warnings = kube::core::cel::estimate_rule_cost(&rule, node);
            if rule.contains("t.subscriptions.all(") {
                // The estimate cannot see the bound of a list reached through a
                // comprehension variable (t.subscriptions) and assumes 1000 items; the
                // API server's estimator sees maxItems. Bound the iterations here instead.
                warnings.retain(|w| w.kind != kube::core::cel::WarningKind::CostExceeded);
                // (bounded at compile time next to MAX_QUEUES)
            }
            assert!(warnings.is_empty(), "{rule}: {warnings:#?}");
        }
    }

    #[test]
    fn generated_methods_and_compiled_schema_agree() {
        let valid =
            with_spec("queues: [{name: a, deadLetter: {queue: b, maxReceiveCount: 2}}, {name: b}]");
        let invalid = with_spec(
            "replicas: 0
queues: [{name: a}, {name: a}]",
        );
        assert_eq!(messages(valid.validate_cel()), refusals(&valid));
        assert_eq!(messages(invalid.validate_cel()), refusals(&invalid));
        assert_eq!(refusals(&invalid).len(), 2, "{:?}", refusals(&invalid));
        let grown = with_spec("storage: {size: 2Gi}");
        let shrunk = with_spec("storage: {size: 1Mi}");
        assert_eq!(
            messages(shrunk.validate_cel_update(&grown)),
            update_refusals(&grown, &shrunk)
        );
        assert_eq!(update_refusals(&grown, &shrunk).len(), 1);
        assert_eq!(
            messages(grown.validate_cel_update(&shrunk)),
            vec![] as Vec<String>
        );
    }

    #[track_caller]
    fn assert_refused(refusals: Vec<String>, expected: &str) {
        assert!(
            refusals.iter().any(|r| r.contains(expected)),
            "expected a refusal containing {expected:?}, got {refusals:#?}"
        );
    }

    #[test]
    fn a_complete_valid_resource_passes_every_rule() {
        let mq = with_spec(
            r#"replicas: 3
storage: {size: 2Gi, storageClassName: fast}
durability: {mode: interval, intervalMs: 20}
queues:
  - {name: orders, retentionSeconds: 86400, rewindSeconds: 3600,
     deadLetter: {queue: orders-dlq, maxReceiveCount: 5, maxTimeToLiveSeconds: 3600}}
  - {name: orders-dlq}
topics:
  - name: events
    subscriptions:
      - {name: to-orders, queue: orders, filterTags: [paid]}
      - {name: audit, endpoint: "http://audit.shop.svc/hook", retry: exponential}
"#,
        );
        assert_eq!(refusals(&mq), Vec::<String>::new());
        assert_eq!(update_refusals(&mq, &mq), Vec::<String>::new());
    }

    #[test]
    fn an_empty_spec_is_valid() {
        assert_eq!(refusals(&with_spec("{}")), Vec::<String>::new());
    }

    #[test]
    fn replicas_below_one_are_refused() {
        assert_refused(
            refusals(&with_spec("replicas: 0")),
            "replicas must be at least 1",
        );
        assert_refused(
            refusals(&with_spec("replicas: -2")),
            "replicas must be at least 1",
        );
    }

    #[test]
    fn duplicate_queue_names_are_refused() {
        let mq = with_spec("queues: [{name: orders}, {name: billing}, {name: orders}]");
        assert_refused(refusals(&mq), "queue names must be unique");
    }

    #[test]
    fn duplicate_topic_names_are_refused() {
        let mq = with_spec("topics: [{name: events}, {name: events}]");
        assert_refused(refusals(&mq), "topic names must be unique");
    }

    #[test]
    fn duplicate_subscription_names_in_a_topic_are_refused() {
        let mq = with_spec(
            "queues: [{name: a}]\ntopics: [{name: t, subscriptions: [{name: s, queue: a}, {name: s, queue: a}]}]",
        );
        assert_refused(refusals(&mq), "subscription names must be unique");
    }

    #[test]
    fn dead_letter_queue_must_be_declared_in_the_same_resource() {
        let mq =
            with_spec("queues: [{name: orders, deadLetter: {queue: missing, maxReceiveCount: 3}}]");
        assert_refused(
            refusals(&mq),
            "every deadLetter.queue must name a queue declared",
        );
        let declared = with_spec(
            "queues: [{name: orders, deadLetter: {queue: dlq, maxReceiveCount: 3}}, {name: dlq}]",
        );
        assert_eq!(refusals(&declared), Vec::<String>::new());
    }

    #[test]
    fn a_queue_cannot_be_its_own_dead_letter_queue() {
        let mq =
            with_spec("queues: [{name: orders, deadLetter: {queue: orders, maxReceiveCount: 3}}]");
        assert_refused(refusals(&mq), "cannot be its own dead-letter queue");
    }

    #[test]
    fn a_dead_letter_policy_needs_a_trigger() {
        let mq = with_spec("queues: [{name: orders, deadLetter: {queue: dlq}}, {name: dlq}]");
        assert_refused(
            refusals(&mq),
            "deadLetter needs maxReceiveCount, maxTimeToLiveSeconds or both",
        );
    }

    #[test]
    fn dead_letter_time_to_live_must_be_shorter_than_retention() {
        let mq = with_spec(
            "queues: [{name: a, retentionSeconds: 600, deadLetter: {queue: d, maxTimeToLiveSeconds: 600}}, {name: d}]",
        );
        assert_refused(
            refusals(&mq),
            "maxTimeToLiveSeconds must be less than retentionSeconds",
        );
        let within_default = with_spec(
            "queues: [{name: a, deadLetter: {queue: d, maxTimeToLiveSeconds: 43200}}, {name: d}]",
        );
        assert_eq!(refusals(&within_default), Vec::<String>::new());
    }

    #[test]
    fn rewind_cannot_reach_past_retention() {
        let mq = with_spec("queues: [{name: a, retentionSeconds: 600, rewindSeconds: 601}]");
        assert_refused(
            refusals(&mq),
            "rewindSeconds cannot exceed retentionSeconds",
        );
        let default_retention = with_spec("queues: [{name: a, rewindSeconds: 345601}]");
        assert_refused(
            refusals(&default_retention),
            "rewindSeconds cannot exceed retentionSeconds",
        );
        let ok = with_spec("queues: [{name: a, rewindSeconds: 345600}]");
        assert_eq!(refusals(&ok), Vec::<String>::new());
    }

    #[test]
    fn subscription_queue_must_be_declared() {
        let mq = with_spec(
            "queues: [{name: orders}]\ntopics: [{name: t, subscriptions: [{name: s, queue: nowhere}]}]",
        );
        assert_refused(
            refusals(&mq),
            "every subscription's queue must name a queue declared",
        );
        let no_queues = with_spec("topics: [{name: t, subscriptions: [{name: s, queue: orders}]}]");
        assert_refused(
            refusals(&no_queues),
            "every subscription's queue must name a queue declared",
        );
    }

    #[test]
    fn a_topic_filters_by_tags_or_by_routing_keys() {
        let both = with_spec(
            "queues: [{name: a}, {name: b}]\ntopics: [{name: t, subscriptions: [{name: s, queue: a, filterTags: [x]}, {name: u, queue: b, bindingKeys: ['x.*']}]}]",
        );
        assert_refused(refusals(&both), "filterTags or bindingKeys, not both");
        let keys = with_spec(
            "queues: [{name: a}]\ntopics: [{name: t, subscriptions: [{name: s, queue: a, bindingKeys: ['x.#']}]}]",
        );
        assert_eq!(refusals(&keys), Vec::<String>::new());
    }

    #[test]
    fn a_subscription_needs_exactly_one_target() {
        let neither = with_spec("topics: [{name: t, subscriptions: [{name: s}]}]");
        assert_refused(refusals(&neither), "exactly one of queue and endpoint");
        let both = with_spec(
            "queues: [{name: q}]\ntopics: [{name: t, subscriptions: [{name: s, queue: q, endpoint: 'http://x.example/h'}]}]",
        );
        assert_refused(refusals(&both), "exactly one of queue and endpoint");
    }

    #[test]
    fn interval_settings_need_interval_mode() {
        let mq = with_spec("durability: {mode: fsync, intervalMs: 50}");
        assert_refused(refusals(&mq), "intervalMs applies only to mode: interval");
    }

    #[test]
    fn storage_and_ephemeral_exclude_each_other() {
        let mq = with_spec("ephemeral: true\nstorage: {size: 1Gi}");
        assert_refused(refusals(&mq), "exclude each other");
        assert_eq!(
            refusals(&with_spec("ephemeral: false\nstorage: {size: 1Gi}")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn resource_name_must_fit_the_children_names() {
        let mut mq = with_spec("{}");
        mq.metadata.name = Some("a".repeat(53));
        assert_refused(refusals(&mq), "metadata.name must be a DNS label");
        mq.metadata.name = Some("orders.v2".into());
        assert_refused(refusals(&mq), "metadata.name must be a DNS label");
        mq.metadata.name = Some("a".repeat(52));
        assert_eq!(refusals(&mq), Vec::<String>::new());
    }

    #[test]
    fn storage_size_can_grow() {
        let old = with_spec("storage: {size: 1Gi}");
        assert_eq!(
            update_refusals(&old, &with_spec("storage: {size: 1536Mi}")),
            Vec::<String>::new()
        );
        assert_eq!(
            update_refusals(&old, &with_spec("storage: {size: 1Gi}")),
            Vec::<String>::new()
        );
        // An omitted size is the default 1Gi.
        assert_eq!(
            update_refusals(&with_spec("{}"), &with_spec("storage: {size: 5Gi}")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn storage_size_cannot_shrink() {
        let old = with_spec("storage: {size: 2Gi}");
        assert_refused(
            update_refusals(&old, &with_spec("storage: {size: 1Gi}")),
            "storage.size can only grow",
        );
        assert_refused(
            update_refusals(&old, &with_spec("storage: {size: 2000Mi}")),
            "storage.size can only grow",
        );
        assert_refused(
            update_refusals(&old, &with_spec("{}")),
            "storage.size can only grow",
        );
        assert_refused(
            update_refusals(&with_spec("{}"), &with_spec("storage: {size: 512Mi}")),
            "storage.size can only grow",
        );
    }

    #[test]
    fn storage_class_is_immutable() {
        let old = with_spec("storage: {size: 1Gi, storageClassName: fast}");
        let changed = with_spec("storage: {size: 1Gi, storageClassName: slow}");
        assert_refused(
            update_refusals(&old, &changed),
            "storageClassName cannot be changed",
        );
        assert_refused(
            update_refusals(&old, &with_spec("storage: {size: 1Gi}")),
            "storageClassName cannot be changed",
        );
    }

    #[test]
    fn ephemeral_is_immutable() {
        let old = with_spec("ephemeral: true");
        assert_refused(
            update_refusals(&old, &with_spec("{}")),
            "ephemeral cannot be changed",
        );
        assert_refused(
            update_refusals(&with_spec("{}"), &old),
            "ephemeral cannot be changed",
        );
        assert_eq!(
            update_refusals(&old, &with_spec("ephemeral: true\nreplicas: 2")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn transition_rules_do_not_fire_on_creation() {
        // validate_cel has no old object: only creation rules run.
        assert_eq!(
            refusals(&with_spec("storage: {size: 1Mi}")),
            Vec::<String>::new()
        );
    }
}
