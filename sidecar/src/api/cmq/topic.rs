//! CMQ topic and subscription actions onto the engine: CreateTopic,
//! SetTopicAttributes, GetTopicAttributes, ListTopic, DeleteTopic, PublishMessage,
//! BatchPublishMessage, Subscribe, SetSubscriptionAttributes,
//! GetSubscriptionAttributes, ListSubscriptionByTopic, Unsubscribe and
//! ClearSubscriptionFilterTags.

use bytes::Bytes;
use serde_json::{Value, json};

use super::error::CmqError;
use super::params::Params;
use super::queue::MAX_BATCH;
use super::{Fields, fields};
use crate::engine::attrs::{MAX_MESSAGE_BYTES, MAX_TAGS};
use crate::engine::topic::MAX_BINDING_KEYS;
use crate::engine::{
    ContentFormat, Created, Engine, FilterType, NotifyStrategy, Origin, SubscriptionPatch,
    SubscriptionSpec, TopicAttributes, TopicAttributesPatch, TopicMessage, validate_name,
};

const LIST_TOPICS: (usize, usize) = (20, 50);
const LIST_SUBSCRIPTIONS: (usize, usize) = (20, 100);

fn name<'a>(params: &'a Params, key: &str) -> Result<&'a str, CmqError> {
    let value = params.required(key)?;
    validate_name(value).map_err(|e| CmqError::new(4000, 10590, e.to_string()))?;
    Ok(value)
}

fn filter_type(value: Option<u32>) -> Result<FilterType, CmqError> {
    match value {
        None | Some(0) | Some(1) => Ok(FilterType::Tag),
        Some(2) => Ok(FilterType::RoutingKey),
        Some(other) => Err(CmqError::param(format!(
            "filterType {other} is neither 1 (tag) nor 2 (routing key)"
        ))),
    }
}

fn filter_type_number(filter_type: FilterType) -> u32 {
    match filter_type {
        FilterType::Tag => 1,
        FilterType::RoutingKey => 2,
    }
}

fn strategy(value: &str) -> Result<NotifyStrategy, CmqError> {
    match value {
        "BACKOFF_RETRY" => Ok(NotifyStrategy::BackoffRetry),
        "EXPONENTIAL_DECAY_RETRY" => Ok(NotifyStrategy::ExponentialDecayRetry),
        _ => Err(CmqError::new(
            4000,
            10520,
            format!("unknown notifyStrategy {value:?}"),
        )),
    }
}

fn strategy_name(strategy: NotifyStrategy) -> &'static str {
    match strategy {
        NotifyStrategy::BackoffRetry => "BACKOFF_RETRY",
        NotifyStrategy::ExponentialDecayRetry => "EXPONENTIAL_DECAY_RETRY",
    }
}

fn format(value: &str) -> Result<ContentFormat, CmqError> {
    match value {
        "JSON" => Ok(ContentFormat::Json),
        "SIMPLIFIED" => Ok(ContentFormat::Simplified),
        _ => Err(CmqError::new(
            4000,
            10530,
            format!("unknown notifyContentFormat {value:?}"),
        )),
    }
}

fn format_name(format: ContentFormat) -> &'static str {
    match format {
        ContentFormat::Json => "JSON",
        ContentFormat::Simplified => "SIMPLIFIED",
    }
}

/// `name.N` values, or `None` when none is given.
fn optional_list(params: &Params, key: &str, max: usize) -> Result<Option<Vec<String>>, CmqError> {
    let values = params.list(key, max)?;
    Ok((!values.is_empty()).then_some(values))
}

fn max_message_size(params: &Params) -> Result<Option<u32>, CmqError> {
    params.number("maxMsgSize", MAX_MESSAGE_BYTES)
}

pub async fn handle(engine: &Engine, action: &str, params: &Params) -> Result<Fields, CmqError> {
    Ok(match action {
        "ListTopic" => {
            let (topics, _) = engine.list_topics("", 0, usize::MAX);
            let (total, page) = params.page(topics.into_iter().map(|t| t.name), LIST_TOPICS)?;
            let list: Vec<Value> = page
                .iter()
                .map(|name| json!({"topicId": topic_id(name), "topicName": name}))
                .collect();
            fields(json!({"totalCount": total, "topicList": list}))
        }
        "CreateTopic" => {
            let topic = name(params, "topicName")?;
            let attrs = TopicAttributes {
                max_message_bytes: max_message_size(params)?
                    .unwrap_or(TopicAttributes::default().max_message_bytes),
                filter_type: filter_type(params.number("filterType", (0, u32::MAX))?)?,
                ..TopicAttributes::default()
            };
            match engine.create_topic(topic, attrs, Origin::Api).await? {
                Created::New => fields(json!({"topicId": topic_id(topic)})),
                Created::AlreadyExisted => {
                    return Err(CmqError::new(
                        4460,
                        10550,
                        format!("topic {topic:?} already exists"),
                    ));
                }
            }
        }
        "SetTopicAttributes" => {
            let patch = TopicAttributesPatch {
                max_message_bytes: max_message_size(params)?,
                ..TopicAttributesPatch::default()
            };
            engine
                .update_topic(name(params, "topicName")?, &patch, Origin::Api)
                .await?;
            Fields::new()
        }
        "GetTopicAttributes" => {
            let info = engine.get_topic(name(params, "topicName")?)?;
            let pending = engine.topic_pending_pushes(&info.name).await?;
            fields(json!({
                "topicName": info.name,
                // Messages delivered to queues are counted there; what the topic still
                // holds are its pushes waiting for their endpoints.
                "msgCount": pending,
                "maxMsgSize": info.attrs.max_message_bytes,
                "msgRetentionSeconds": info.attrs.retention_seconds,
                "createTime": info.created_ms / 1_000,
                "lastModifyTime": info.modified_ms / 1_000,
                "filterType": filter_type_number(info.attrs.filter_type),
            }))
        }
        "DeleteTopic" => {
            engine
                .delete_topic(name(params, "topicName")?, Origin::Api)
                .await?;
            Fields::new()
        }
        "PublishMessage" | "BatchPublishMessage" => {
            let topic = name(params, "topicName")?;
            let bodies = if action == "PublishMessage" {
                vec![params.required("msgBody")?.to_string()]
            } else {
                params.list("msgBody", MAX_BATCH)?
            };
            if bodies.is_empty() || bodies.iter().any(String::is_empty) {
                return Err(CmqError::new(4000, 10120, "msgBody is empty"));
            }
            let tags = params.list("msgTag", MAX_TAGS)?;
            // The SDKs send an empty routingKey when there is none.
            let routing_key = params.get("routingKey").filter(|k| !k.is_empty());
            let messages = bodies
                .into_iter()
                .map(|body| TopicMessage {
                    body: Bytes::from(body),
                    tags: tags.clone(),
                    routing_key: routing_key.map(str::to_string),
                })
                .collect();
            let published = engine.publish(topic, messages).await?;
            if published.subscriptions == 0 {
                return Err(CmqError::new(6030, 10650, "the topic has no subscription"));
            }
            if published.deliveries == 0 {
                return Err(CmqError::new(
                    6030,
                    10730,
                    "no subscription matches the message",
                ));
            }
            let mut ids = published.ids.into_iter();
            if action == "PublishMessage" {
                fields(json!({"msgId": ids.next().unwrap_or_default()}))
            } else {
                let list: Vec<Value> = ids.map(|id| json!({"msgId": id})).collect();
                fields(json!({"msgList": list}))
            }
        }
        _ => return subscription(engine, action, params).await,
    })
}

async fn subscription(engine: &Engine, action: &str, params: &Params) -> Result<Fields, CmqError> {
    let topic = name(params, "topicName")?;
    if action == "ListSubscriptionByTopic" {
        let (all, _) = engine.list_subscriptions(topic, "", 0, usize::MAX)?;
        let (total, page) = params.page(all.iter().map(|s| s.name.clone()), LIST_SUBSCRIPTIONS)?;
        let list: Vec<Value> = all
            .iter()
            .filter(|s| page.contains(&s.name))
            .map(|s| {
                let (protocol, endpoint) = target(&s.spec);
                json!({"subscriptionId": subscription_id(topic, &s.name),
                       "subscriptionName": s.name, "protocol": protocol, "endpoint": endpoint})
            })
            .collect();
        return Ok(fields(
            json!({"totalCount": total, "subscriptionList": list}),
        ));
    }
    let subscription = name(params, "subscriptionName")?;
    Ok(match action {
        "Subscribe" => {
            let spec = subscription_spec(params)?;
            match engine
                .subscribe(topic, subscription, spec, Origin::Api)
                .await?
            {
                Created::New => {
                    fields(json!({"subscriptionId": subscription_id(topic, subscription)}))
                }
                Created::AlreadyExisted => {
                    return Err(CmqError::new(
                        4490,
                        10470,
                        format!("subscription {subscription:?} already exists"),
                    ));
                }
            }
        }
        "SetSubscriptionAttributes" | "ClearSubscriptionFilterTags" => {
            let patch = if action == "ClearSubscriptionFilterTags" {
                SubscriptionPatch {
                    filter_tags: Some(Vec::new()),
                    ..SubscriptionPatch::default()
                }
            } else {
                SubscriptionPatch {
                    filter_tags: optional_list(params, "filterTag", MAX_TAGS)?,
                    binding_keys: optional_list(params, "bindingKey", MAX_BINDING_KEYS)?,
                    notify_strategy: params.get("notifyStrategy").map(strategy).transpose()?,
                    notify_content_format: params
                        .get("notifyContentFormat")
                        .map(format)
                        .transpose()?,
                }
            };
            engine
                .update_subscription(topic, subscription, &patch, Origin::Api)
                .await?;
            Fields::new()
        }
        "GetSubscriptionAttributes" => {
            let info = engine.get_subscription(topic, subscription)?;
            let pending = engine.pending_pushes(topic, subscription).await?;
            let (protocol, endpoint) = target(&info.spec);
            fields(json!({
                "topicOwner": "",
                "endpoint": endpoint,
                "protocol": protocol,
                // The Python SDK reads this misspelling.
                "protocal": protocol,
                "notifyStrategy": strategy_name(info.spec.notify_strategy),
                "notifyContentFormat": format_name(info.spec.notify_content_format),
                "createTime": info.created_ms / 1_000,
                "lastModifyTime": info.modified_ms / 1_000,
                "msgCount": pending,
                "filterTag": info.spec.filter_tags,
                "filterTags": info.spec.filter_tags,
                "bindingKey": info.spec.binding_keys,
            }))
        }
        "Unsubscribe" => {
            engine.unsubscribe(topic, subscription, Origin::Api).await?;
            Fields::new()
        }
        _ => {
            return Err(CmqError::new(
                4000,
                10000,
                format!("unknown Action {action}"),
            ));
        }
    })
}

/// Subscribe's parameters as the engine's subscription.
fn subscription_spec(params: &Params) -> Result<SubscriptionSpec, CmqError> {
    let endpoint = params.required("endpoint")?.to_string();
    let notify_content_format = params
        .get("notifyContentFormat")
        .map(format)
        .transpose()?
        .unwrap_or_default();
    let (queue, endpoint) = match params.required("protocol")? {
        "queue" => {
            if notify_content_format != ContentFormat::Simplified {
                return Err(CmqError::new(
                    4000,
                    10640,
                    "a queue subscription needs notifyContentFormat SIMPLIFIED",
                ));
            }
            (Some(endpoint), None)
        }
        "http" | "https" => (None, Some(endpoint)),
        other => {
            return Err(CmqError::new(
                4000,
                10510,
                format!("unknown protocol {other:?}"),
            ));
        }
    };
    Ok(SubscriptionSpec {
        queue,
        endpoint,
        filter_tags: params.list("filterTag", MAX_TAGS)?,
        binding_keys: params.list("bindingKey", MAX_BINDING_KEYS)?,
        notify_strategy: params
            .get("notifyStrategy")
            .map(strategy)
            .transpose()?
            .unwrap_or_default(),
        notify_content_format,
    })
}

/// CMQ's protocol and endpoint of a subscription.
fn target(spec: &SubscriptionSpec) -> (&'static str, String) {
    match (&spec.queue, &spec.endpoint) {
        (Some(queue), _) => ("queue", queue.clone()),
        (None, Some(url)) if url.starts_with("https://") => ("https", url.clone()),
        (None, endpoint) => ("http", endpoint.clone().unwrap_or_default()),
    }
}

fn topic_id(name: &str) -> String {
    format!("topic-{name}")
}

fn subscription_id(topic: &str, name: &str) -> String {
    format!("subscription-{topic}-{name}")
}
