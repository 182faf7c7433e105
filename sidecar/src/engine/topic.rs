//! Topics and their subscriptions: attributes, validation and message filtering (tags
//! or routing keys against binding-key patterns). Pure data and rules; the engine keeps
//! the topics and fans published messages out to the subscribed queues.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::EngineError;
use super::attrs::{MAX_MESSAGE_BYTES, check_range, validate_name, validate_tags};

/// How long a push to an HTTP endpoint is retried, by default (CMQ's fixed one day).
pub const PUSH_RETENTION_SECONDS: (u32, u32) = (60, 86_400);
pub const MAX_SUBSCRIPTIONS: usize = 500;
pub const MAX_BINDING_KEYS: usize = 5;
pub const MAX_KEY_BYTES: usize = 64;
pub const MAX_KEY_DOTS: usize = 15;
pub const MAX_ENDPOINT_BYTES: usize = 512;

/// What a subscription's filter is matched against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum FilterType {
    /// The message's tags against the subscription's `filterTags`.
    #[default]
    Tag,
    /// The message's routing key against the subscription's `bindingKeys` patterns.
    RoutingKey,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TopicAttributes {
    /// Largest accepted message body in bytes (1024–1048576).
    pub max_message_bytes: u32,
    /// How long an undelivered push to an HTTP endpoint is retried, in seconds (60–86400).
    pub retention_seconds: u32,
    /// `tag` (default) or `routingKey`; fixed once the topic exists.
    pub filter_type: FilterType,
}

impl Default for TopicAttributes {
    fn default() -> Self {
        Self {
            max_message_bytes: 65_536,
            retention_seconds: 86_400,
            filter_type: FilterType::Tag,
        }
    }
}

impl TopicAttributes {
    pub fn validate(&self) -> Result<(), EngineError> {
        check_range("maxMessageBytes", self.max_message_bytes, MAX_MESSAGE_BYTES)?;
        check_range(
            "retentionSeconds",
            self.retention_seconds,
            PUSH_RETENTION_SECONDS,
        )
    }
}

/// A partial update; `filterType` may be given only with its current value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TopicAttributesPatch {
    pub max_message_bytes: Option<u32>,
    pub retention_seconds: Option<u32>,
    pub filter_type: Option<FilterType>,
}

impl TopicAttributesPatch {
    pub fn apply_to(&self, attrs: &TopicAttributes) -> Result<TopicAttributes, EngineError> {
        if let Some(filter_type) = self.filter_type
            && filter_type != attrs.filter_type
        {
            return Err(EngineError::InvalidAttribute {
                field: "filterType",
                reason: "a topic's filter type cannot change".into(),
            });
        }
        Ok(TopicAttributes {
            max_message_bytes: self.max_message_bytes.unwrap_or(attrs.max_message_bytes),
            retention_seconds: self.retention_seconds.unwrap_or(attrs.retention_seconds),
            filter_type: attrs.filter_type,
        })
    }
}

/// CMQ's two retry strategies for pushes to an HTTP endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum NotifyStrategy {
    /// A fixed interval between tries, a bounded number of tries.
    BackoffRetry,
    /// 1, 2, 4, 8 … seconds between tries until the topic's retention ends.
    #[default]
    ExponentialDecayRetry,
}

/// How a push carries the message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum ContentFormat {
    /// A JSON envelope with the topic, subscription, message id and body.
    #[default]
    Json,
    /// The raw message body.
    Simplified,
}

/// Where a subscription delivers, and what it lets through. Exactly one of `queue` and
/// `endpoint` is given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// A queue on this server: each matching message is enqueued there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// An http:// URL that each matching message is POSTed to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Tag filter (tag topics): a message with any of these tags is delivered; none = all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filter_tags: Vec<String>,
    /// Routing-key patterns (routing-key topics): `*` one word, `#` zero or more; none = all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub binding_keys: Vec<String>,
    /// Retries of an HTTP push.
    pub notify_strategy: NotifyStrategy,
    /// Body of an HTTP push.
    pub notify_content_format: ContentFormat,
}

/// Where a subscription's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    Queue(&'a str),
    Endpoint(&'a str),
}

impl SubscriptionSpec {
    pub fn target(&self) -> Result<Target<'_>, EngineError> {
        match (&self.queue, &self.endpoint) {
            (Some(queue), None) => Ok(Target::Queue(queue)),
            (None, Some(endpoint)) => Ok(Target::Endpoint(endpoint)),
            _ => Err(EngineError::InvalidAttribute {
                field: "queue/endpoint",
                reason: "give exactly one of queue and endpoint".into(),
            }),
        }
    }

    pub fn validate(&self, filter_type: FilterType) -> Result<(), EngineError> {
        match self.target()? {
            Target::Queue(queue) => validate_name(queue)?,
            Target::Endpoint(url) => validate_endpoint(url)?,
        }
        validate_tags(&self.filter_tags).map_err(|e| EngineError::InvalidAttribute {
            field: "filterTags",
            reason: e.to_string(),
        })?;
        if self.binding_keys.len() > MAX_BINDING_KEYS {
            return Err(EngineError::InvalidAttribute {
                field: "bindingKeys",
                reason: format!(
                    "{} given, at most {MAX_BINDING_KEYS}",
                    self.binding_keys.len()
                ),
            });
        }
        for key in &self.binding_keys {
            validate_key("bindingKeys", key)?;
        }
        let misplaced = match filter_type {
            FilterType::Tag => (!self.binding_keys.is_empty()).then_some("bindingKeys"),
            FilterType::RoutingKey => (!self.filter_tags.is_empty()).then_some("filterTags"),
        };
        if let Some(field) = misplaced {
            return Err(EngineError::InvalidAttribute {
                field,
                reason: format!("does not apply to a topic whose filter type is {filter_type:?}"),
            });
        }
        Ok(())
    }

    /// Whether a message with these tags and routing key reaches this subscription.
    pub fn accepts(
        &self,
        filter_type: FilterType,
        tags: &[String],
        routing_key: Option<&str>,
    ) -> bool {
        match filter_type {
            FilterType::Tag => {
                self.filter_tags.is_empty() || self.filter_tags.iter().any(|t| tags.contains(t))
            }
            FilterType::RoutingKey => {
                self.binding_keys.is_empty()
                    || self
                        .binding_keys
                        .iter()
                        .any(|pattern| routing_key.is_some_and(|k| routing_key_matches(pattern, k)))
            }
        }
    }
}

/// An `http://` or `https://` URL naming a host, of at most `MAX_ENDPOINT_BYTES`.
fn validate_endpoint(url: &str) -> Result<(), EngineError> {
    let uri = if url.len() <= MAX_ENDPOINT_BYTES {
        url.parse::<http::Uri>().ok()
    } else {
        None
    };
    match uri {
        Some(uri)
            if matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.host().is_some_and(|host| !host.is_empty()) =>
        {
            Ok(())
        }
        _ => Err(EngineError::InvalidAttribute {
            field: "endpoint",
            reason: format!(
                "{url:?} is not an http:// or https:// URL of at most {MAX_ENDPOINT_BYTES} bytes"
            ),
        }),
    }
}

/// A routing key or binding key: at most 64 bytes and 15 dots.
pub fn validate_key(field: &'static str, key: &str) -> Result<(), EngineError> {
    let dots = key.matches('.').count();
    if key.is_empty() || key.len() > MAX_KEY_BYTES || dots > MAX_KEY_DOTS {
        return Err(EngineError::InvalidAttribute {
            field,
            reason: format!(
                "{key:?} must be 1 to {MAX_KEY_BYTES} bytes with at most {MAX_KEY_DOTS} dots"
            ),
        });
    }
    Ok(())
}

/// Matches a dot-separated routing key against a binding-key pattern where `*` stands
/// for exactly one word and `#` for zero or more words.
pub fn routing_key_matches(pattern: &str, key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = key.split('.').collect();
    // matches[i][j]: pattern[i..] matches key[j..]; filled from the ends.
    let mut matches = vec![vec![false; key.len() + 1]; pattern.len() + 1];
    matches[pattern.len()][key.len()] = true;
    for i in (0..pattern.len()).rev() {
        for j in (0..=key.len()).rev() {
            matches[i][j] = match pattern[i] {
                "#" => matches[i + 1][j] || (j < key.len() && matches[i][j + 1]),
                "*" => j < key.len() && matches[i + 1][j + 1],
                word => j < key.len() && key[j] == word && matches[i + 1][j + 1],
            };
        }
    }
    matches[0][0]
}

/// Pending pushes of an HTTP subscription wait, on disk, in an internal queue whose
/// name no user can give (user names hold no `$` or `.`).
pub fn push_queue_name(topic: &str, subscription: &str) -> String {
    format!("$push.{topic}.{subscription}")
}

pub fn is_internal_queue(name: &str) -> bool {
    name.starts_with('$')
}

/// Most pushes one HTTP subscription keeps waiting; beyond it new ones are dropped, so a
/// dead endpoint costs bounded memory and disk and never blocks a publisher.
pub const MAX_PENDING_PUSHES: u64 = 100_000;
/// BACKOFF_RETRY: seconds between tries, and how many tries in all.
pub const BACKOFF_INTERVAL_SECONDS: u32 = 10;
pub const BACKOFF_TRIES: u32 = 3;
/// EXPONENTIAL_DECAY_RETRY: the longest wait between two tries.
pub const MAX_DECAY_SECONDS: u32 = 512;

/// Seconds to wait before the next try of a push that failed `tries` times, or `None`
/// when the strategy gives up (an exponential decay also gives up at the topic's
/// retention, which the caller checks).
pub fn retry_delay(strategy: NotifyStrategy, tries: u32) -> Option<u32> {
    match strategy {
        NotifyStrategy::BackoffRetry => (tries < BACKOFF_TRIES).then_some(BACKOFF_INTERVAL_SECONDS),
        NotifyStrategy::ExponentialDecayRetry => Some(
            1u32.checked_shl(tries.saturating_sub(1))
                .unwrap_or(MAX_DECAY_SECONDS)
                .min(MAX_DECAY_SECONDS),
        ),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub spec: SubscriptionSpec,
    pub created_ms: u64,
    pub modified_ms: u64,
}

/// A topic's whole durable definition: every change journals it whole (topics and
/// their subscriptions are small metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Topic {
    pub name: String,
    pub attrs: TopicAttributes,
    /// Declared in the configuration file: changes only there.
    pub managed: bool,
    pub created_ms: u64,
    pub modified_ms: u64,
    pub subscriptions: BTreeMap<String, Subscription>,
}

/// A topic as the configuration file declares it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TopicDeclaration {
    pub max_message_bytes: Option<u32>,
    pub retention_seconds: Option<u32>,
    pub filter_type: Option<FilterType>,
    pub subscriptions: BTreeMap<String, SubscriptionSpec>,
}

impl TopicDeclaration {
    pub fn attributes(&self) -> TopicAttributes {
        let defaults = TopicAttributes::default();
        TopicAttributes {
            max_message_bytes: self.max_message_bytes.unwrap_or(defaults.max_message_bytes),
            retention_seconds: self.retention_seconds.unwrap_or(defaults.retention_seconds),
            filter_type: self.filter_type.unwrap_or_default(),
        }
    }
}

/// Checks a message's tags and routing key before it is published.
pub fn validate_publish(tags: &[String], routing_key: Option<&str>) -> Result<(), EngineError> {
    validate_tags(tags)?;
    if let Some(key) = routing_key {
        validate_key("routingKey", key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_is_one_word_and_hash_is_zero_or_more() {
        let cases = [
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a.c", false),
            ("a.*.c", "a.b.b.c", false),
            ("a.#.c", "a.c", true),
            ("a.#.c", "a.b.b.c", true),
            ("1.#.0", "1.0", true),
            ("#", "anything.at.all", true),
            ("#", "x", true),
            ("*", "x", true),
            ("*", "x.y", false),
            ("a.#", "a", true),
            ("#.b", "a.b", true),
            ("a.b", "a.b", true),
            ("a.b", "a.c", false),
            ("*.#", "a", true),
            ("*.*", "a", false),
        ];
        for (pattern, key, want) in cases {
            assert_eq!(routing_key_matches(pattern, key), want, "{pattern} ~ {key}");
        }
    }

    #[test]
    fn retry_schedules_follow_the_two_strategies() {
        let decay: Vec<Option<u32>> = (1..=11)
            .map(|t| retry_delay(NotifyStrategy::ExponentialDecayRetry, t))
            .collect();
        let want: Vec<Option<u32>> = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 512]
            .into_iter()
            .map(Some)
            .collect();
        assert_eq!(decay, want);
        assert_eq!(
            retry_delay(NotifyStrategy::ExponentialDecayRetry, 100),
            Some(512)
        );
        let backoff: Vec<Option<u32>> = (1..=4)
            .map(|t| retry_delay(NotifyStrategy::BackoffRetry, t))
            .collect();
        assert_eq!(backoff, [Some(10), Some(10), None, None]);
    }

    #[test]
    fn tag_filters_need_any_common_tag_and_none_means_all() {
        let spec = |tags: &[&str]| SubscriptionSpec {
            queue: Some("q".into()),
            filter_tags: tags.iter().map(|t| t.to_string()).collect(),
            ..SubscriptionSpec::default()
        };
        let tags = vec!["paid".to_string(), "vip".to_string()];
        assert!(spec(&[]).accepts(FilterType::Tag, &tags, None));
        assert!(spec(&[]).accepts(FilterType::Tag, &[], None));
        assert!(spec(&["vip", "x"]).accepts(FilterType::Tag, &tags, None));
        assert!(!spec(&["x"]).accepts(FilterType::Tag, &tags, None));
        assert!(!spec(&["x"]).accepts(FilterType::Tag, &[], None));
    }

    #[test]
    fn subscription_needs_exactly_one_target_and_filters_of_its_topic_kind() {
        let both = SubscriptionSpec {
            queue: Some("q".into()),
            endpoint: Some("http://x".into()),
            ..Default::default()
        };
        assert!(both.validate(FilterType::Tag).is_err());
        assert!(
            SubscriptionSpec::default()
                .validate(FilterType::Tag)
                .is_err()
        );
        let keys = SubscriptionSpec {
            queue: Some("q".into()),
            binding_keys: vec!["a.*".into()],
            ..Default::default()
        };
        assert!(keys.validate(FilterType::RoutingKey).is_ok());
        assert!(keys.validate(FilterType::Tag).is_err());
        let bad_url = SubscriptionSpec {
            endpoint: Some("ftp://x".into()),
            ..Default::default()
        };
        assert!(bad_url.validate(FilterType::Tag).is_err());
        for url in ["https://x/hook", "http://x:8080/h?a=1", "http://10.0.0.1/"] {
            let ok = SubscriptionSpec {
                endpoint: Some(url.into()),
                ..Default::default()
            };
            assert!(ok.validate(FilterType::Tag).is_ok(), "{url}");
        }
        let long = format!("http://x/{}", "a".repeat(MAX_ENDPOINT_BYTES));
        for url in [
            "http://",
            "https:///hook",
            "http://x y/",
            "hook",
            long.as_str(),
        ] {
            let bad = SubscriptionSpec {
                endpoint: Some(url.into()),
                ..Default::default()
            };
            assert!(bad.validate(FilterType::Tag).is_err(), "{url}");
        }
        let too_deep = SubscriptionSpec {
            queue: Some("q".into()),
            binding_keys: vec![vec!["a"; 17].join(".")],
            ..Default::default()
        };
        assert!(too_deep.validate(FilterType::RoutingKey).is_err());
    }
}
