//! The engine's topics: their life cycle, subscriptions, declarations, and publishing,
//! which fans a message out to every matching subscribed queue before it is
//! acknowledged. Every topic change journals the topic's whole definition.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::QueueAttributes;
use super::topic::{
    ContentFormat, MAX_PENDING_PUSHES, MAX_SUBSCRIPTIONS, NotifyStrategy, Subscription,
    SubscriptionSpec, Target, Topic, TopicAttributes, TopicAttributesPatch, TopicDeclaration,
    push_queue_name, validate_publish,
};
use super::{Created, Engine, EngineError, NewMessage, Origin, Queue, Record, validate_name};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub attrs: TopicAttributes,
    pub managed: bool,
    pub created_ms: u64,
    pub modified_ms: u64,
    pub subscriptions: usize,
}

impl From<&Topic> for TopicInfo {
    fn from(topic: &Topic) -> Self {
        Self {
            name: topic.name.clone(),
            attrs: topic.attrs.clone(),
            managed: topic.managed,
            created_ms: topic.created_ms,
            modified_ms: topic.modified_ms,
            subscriptions: topic.subscriptions.len(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    pub topic: String,
    pub name: String,
    pub spec: SubscriptionSpec,
    pub created_ms: u64,
    pub modified_ms: u64,
}

/// A partial update of a subscription; its target never changes.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionPatch {
    pub filter_tags: Option<Vec<String>>,
    pub binding_keys: Option<Vec<String>>,
    pub notify_strategy: Option<super::topic::NotifyStrategy>,
    pub notify_content_format: Option<super::topic::ContentFormat>,
}

/// A message published to a topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicMessage {
    pub body: bytes::Bytes,
    pub tags: Vec<String>,
    /// Matched against binding keys on a routing-key topic.
    pub routing_key: Option<String>,
}

/// What a publish did: one id per message, and how many deliveries it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub ids: Vec<String>,
    /// Subscriptions of the topic when the messages were published.
    pub subscriptions: usize,
    /// Messages enqueued into subscribed queues, over all messages.
    pub deliveries: usize,
}

/// An HTTP subscription and the internal queue its pending pushes wait in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    pub topic: String,
    pub subscription: String,
    pub queue: String,
    pub endpoint: String,
    pub strategy: NotifyStrategy,
    pub format: ContentFormat,
    /// How long a push is retried at most, in seconds.
    pub retention_seconds: u32,
}

/// What a topic change does to the stored definition.
enum Next {
    Keep,
    Put(Topic),
    Delete,
}

impl Engine {
    /// Applies a change to one topic: decides under the topics lock (after the queues'
    /// lock, the engine's lock order), journals the topic's new definition, and waits
    /// until it is durable; puts the previous definition back if it is not. Changes are
    /// serialized, so that restore cannot undo a later change.
    async fn change_topic<R>(
        &self,
        name: &str,
        origin: Origin,
        change: impl FnOnce(
            Option<&Topic>,
            &HashMap<String, Arc<Queue>>,
        ) -> Result<(Next, R), EngineError>,
    ) -> Result<R, EngineError> {
        let _serial = self.topic_changes.lock().await;
        let (previous, durable, result) = {
            let queues = self.queues.read();
            let mut topics = self.topics.lock();
            let current = topics.get(name);
            let managed = current.is_some_and(|t| t.managed);
            let (next, result) = change(current, &queues)?;
            if managed && origin == Origin::Api && !matches!(next, Next::Keep) {
                return Err(EngineError::TopicManaged(name.to_string()));
            }
            let (previous, record) = match next {
                Next::Keep => return Ok(result),
                Next::Put(topic) => {
                    let record = Record::TopicPut(Box::new(topic.clone()));
                    (topics.insert(name.to_string(), topic), record)
                }
                Next::Delete => (
                    topics.remove(name),
                    Record::TopicDeleted {
                        name: name.to_string(),
                    },
                ),
            };
            (previous, self.journal.append(vec![record]), result)
        };
        if let Err(error) = Self::settle(Some(durable)).await {
            let mut topics = self.topics.lock();
            match previous {
                Some(topic) => topics.insert(name.to_string(), topic),
                None => topics.remove(name),
            };
            return Err(error);
        }
        Ok(result)
    }

    pub async fn create_topic(
        &self,
        name: &str,
        attrs: TopicAttributes,
        origin: Origin,
    ) -> Result<Created, EngineError> {
        validate_name(name)?;
        attrs.validate()?;
        let now = self.clock.now_ms();
        let created = self
            .change_topic(name, origin, |current, _| match current {
                Some(topic) if topic.attrs == attrs => Ok((Next::Keep, Created::AlreadyExisted)),
                Some(_) => Err(EngineError::TopicExists(name.to_string())),
                None => Ok((
                    Next::Put(Topic {
                        name: name.to_string(),
                        attrs,
                        managed: origin == Origin::Declaration,
                        created_ms: now,
                        modified_ms: now,
                        subscriptions: BTreeMap::new(),
                    }),
                    Created::New,
                )),
            })
            .await?;
        if created == Created::New {
            tracing::info!(topic = name, ?origin, "topic created");
        }
        Ok(created)
    }

    pub async fn update_topic(
        &self,
        name: &str,
        patch: &TopicAttributesPatch,
        origin: Origin,
    ) -> Result<TopicAttributes, EngineError> {
        let now = self.clock.now_ms();
        self.change_topic(name, origin, |current, _| {
            let topic = current.ok_or_else(|| EngineError::TopicNotFound(name.to_string()))?;
            let attrs = patch.apply_to(&topic.attrs)?;
            attrs.validate()?;
            if attrs == topic.attrs {
                return Ok((Next::Keep, attrs));
            }
            let mut next = topic.clone();
            next.attrs = attrs.clone();
            next.modified_ms = now;
            Ok((Next::Put(next), attrs))
        })
        .await
    }

    /// Deletes a topic; refused while it has subscriptions.
    pub async fn delete_topic(&self, name: &str, origin: Origin) -> Result<(), EngineError> {
        self.change_topic(name, origin, |current, _| {
            let topic = current.ok_or_else(|| EngineError::TopicNotFound(name.to_string()))?;
            if !topic.subscriptions.is_empty() {
                return Err(EngineError::TopicInUse(name.to_string()));
            }
            Ok((Next::Delete, ()))
        })
        .await?;
        tracing::info!(topic = name, ?origin, "topic deleted");
        Ok(())
    }

    pub fn get_topic(&self, name: &str) -> Result<TopicInfo, EngineError> {
        self.topics
            .lock()
            .get(name)
            .map(TopicInfo::from)
            .ok_or_else(|| EngineError::TopicNotFound(name.to_string()))
    }

    /// Topics whose name starts with `prefix`, sorted by name, from `offset`, at most
    /// `limit`; with the total number that match.
    pub fn list_topics(
        &self,
        prefix: &str,
        offset: usize,
        limit: usize,
    ) -> (Vec<TopicInfo>, usize) {
        let topics = self.topics.lock();
        let matching = topics.values().filter(|t| t.name.starts_with(prefix));
        let total = matching.clone().count();
        let page = matching
            .skip(offset)
            .take(limit)
            .map(TopicInfo::from)
            .collect();
        (page, total)
    }

    /// Subscribes `subscription` to `topic`; the same settings again are harmless.
    pub async fn subscribe(
        &self,
        topic: &str,
        subscription: &str,
        spec: SubscriptionSpec,
        origin: Origin,
    ) -> Result<Created, EngineError> {
        validate_name(subscription)?;
        if let Ok(Target::Endpoint(_)) = spec.target() {
            let retention = self.get_topic(topic)?.attrs.retention_seconds;
            self.ensure_push_queue(topic, subscription, retention)
                .await?;
        }
        let now = self.clock.now_ms();
        let created = self
            .change_topic(topic, origin, |current, queues| {
                let current =
                    current.ok_or_else(|| EngineError::TopicNotFound(topic.to_string()))?;
                spec.validate(current.attrs.filter_type)?;
                check_target(&spec, queues)?;
                match current.subscriptions.get(subscription) {
                    Some(existing) if existing.spec == spec => {
                        return Ok((Next::Keep, Created::AlreadyExisted));
                    }
                    Some(_) => {
                        return Err(EngineError::SubscriptionExists {
                            topic: topic.to_string(),
                            subscription: subscription.to_string(),
                        });
                    }
                    None => {}
                }
                if current.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                    return Err(EngineError::LimitExceeded(format!(
                        "topic {topic:?} has {MAX_SUBSCRIPTIONS} subscriptions, the most allowed"
                    )));
                }
                let mut next = current.clone();
                next.subscriptions.insert(
                    subscription.to_string(),
                    Subscription {
                        spec,
                        created_ms: now,
                        modified_ms: now,
                    },
                );
                Ok((Next::Put(next), Created::New))
            })
            .await?;
        if created == Created::New {
            tracing::info!(topic, subscription, ?origin, "subscribed");
        }
        Ok(created)
    }

    pub async fn update_subscription(
        &self,
        topic: &str,
        subscription: &str,
        patch: &SubscriptionPatch,
        origin: Origin,
    ) -> Result<SubscriptionInfo, EngineError> {
        let now = self.clock.now_ms();
        self.change_topic(topic, origin, |current, _| {
            let current = current.ok_or_else(|| EngineError::TopicNotFound(topic.to_string()))?;
            let existing = current
                .subscriptions
                .get(subscription)
                .ok_or_else(|| subscription_not_found(topic, subscription))?;
            let mut spec = existing.spec.clone();
            if let Some(tags) = &patch.filter_tags {
                spec.filter_tags = tags.clone();
            }
            if let Some(keys) = &patch.binding_keys {
                spec.binding_keys = keys.clone();
            }
            spec.notify_strategy = patch.notify_strategy.unwrap_or(spec.notify_strategy);
            spec.notify_content_format = patch
                .notify_content_format
                .unwrap_or(spec.notify_content_format);
            spec.validate(current.attrs.filter_type)?;
            let mut changed = existing.clone();
            let keep = changed.spec == spec;
            changed.spec = spec;
            if keep {
                return Ok((Next::Keep, subscription_info(topic, subscription, &changed)));
            }
            changed.modified_ms = now;
            let info = subscription_info(topic, subscription, &changed);
            let mut next = current.clone();
            next.subscriptions.insert(subscription.to_string(), changed);
            Ok((Next::Put(next), info))
        })
        .await
    }

    pub async fn unsubscribe(
        &self,
        topic: &str,
        subscription: &str,
        origin: Origin,
    ) -> Result<(), EngineError> {
        let removed = self
            .change_topic(topic, origin, |current, _| {
                let current =
                    current.ok_or_else(|| EngineError::TopicNotFound(topic.to_string()))?;
                let mut next = current.clone();
                let removed = next
                    .subscriptions
                    .remove(subscription)
                    .ok_or_else(|| subscription_not_found(topic, subscription))?;
                Ok((Next::Put(next), removed))
            })
            .await?;
        tracing::info!(topic, subscription, ?origin, "unsubscribed");
        if removed.spec.endpoint.is_some() {
            // Its pending pushes go with it.
            match self
                .delete_queue(&push_queue_name(topic, subscription), Origin::Declaration)
                .await
            {
                Ok(()) | Err(EngineError::QueueNotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    pub fn get_subscription(
        &self,
        topic: &str,
        subscription: &str,
    ) -> Result<SubscriptionInfo, EngineError> {
        let topics = self.topics.lock();
        let current = topics
            .get(topic)
            .ok_or_else(|| EngineError::TopicNotFound(topic.to_string()))?;
        current
            .subscriptions
            .get(subscription)
            .map(|s| subscription_info(topic, subscription, s))
            .ok_or_else(|| subscription_not_found(topic, subscription))
    }

    /// Pushes waiting for a subscription's endpoint (none for a queue subscription).
    pub async fn pending_pushes(
        &self,
        topic: &str,
        subscription: &str,
    ) -> Result<u64, EngineError> {
        if self
            .get_subscription(topic, subscription)?
            .spec
            .endpoint
            .is_none()
        {
            return Ok(0);
        }
        self.push_backlog(topic, subscription).await
    }

    /// Pushes waiting over all of a topic's endpoint subscriptions.
    pub async fn topic_pending_pushes(&self, topic: &str) -> Result<u64, EngineError> {
        let endpoints: Vec<String> = self
            .topics
            .lock()
            .get(topic)
            .ok_or_else(|| EngineError::TopicNotFound(topic.to_string()))?
            .subscriptions
            .iter()
            .filter(|(_, s)| s.spec.endpoint.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        let mut pending = 0;
        for subscription in endpoints {
            pending += self.push_backlog(topic, &subscription).await?;
        }
        Ok(pending)
    }

    /// The messages in an endpoint subscription's internal queue.
    async fn push_backlog(&self, topic: &str, subscription: &str) -> Result<u64, EngineError> {
        match self.get_queue(&push_queue_name(topic, subscription)).await {
            Ok(queue) => Ok(queue.stats.active + queue.stats.inactive + queue.stats.delayed),
            // Unsubscribed meanwhile.
            Err(EngineError::QueueNotFound(_)) => Ok(0),
            Err(error) => Err(error),
        }
    }

    /// A topic's subscriptions whose name starts with `prefix`, sorted by name, paged;
    /// with the total number that match.
    pub fn list_subscriptions(
        &self,
        topic: &str,
        prefix: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<SubscriptionInfo>, usize), EngineError> {
        let topics = self.topics.lock();
        let current = topics
            .get(topic)
            .ok_or_else(|| EngineError::TopicNotFound(topic.to_string()))?;
        let matching = current
            .subscriptions
            .iter()
            .filter(|(name, _)| name.starts_with(prefix));
        let total = matching.clone().count();
        let page = matching
            .skip(offset)
            .take(limit)
            .map(|(name, s)| subscription_info(topic, name, s))
            .collect();
        Ok((page, total))
    }

    /// Publishes messages: each is enqueued durably into every
    /// subscribed queue whose filter it passes (once per matching subscription) before
    /// this returns. A failure part-way may leave some queues with the messages: the
    /// caller retries, and consumers deduplicate (at-least-once).
    pub async fn publish(
        &self,
        topic: &str,
        messages: Vec<TopicMessage>,
    ) -> Result<Published, EngineError> {
        if messages.is_empty() {
            return Err(EngineError::EmptyBatch);
        }
        if messages.len() > self.max_batch {
            return Err(EngineError::BatchTooLarge {
                size: messages.len(),
                max: self.max_batch,
            });
        }
        let (attrs, subscriptions) = {
            let topics = self.topics.lock();
            let current = topics
                .get(topic)
                .ok_or_else(|| EngineError::TopicNotFound(topic.to_string()))?;
            let specs: Vec<(String, SubscriptionSpec)> = current
                .subscriptions
                .iter()
                .map(|(name, s)| (name.clone(), s.spec.clone()))
                .collect();
            (current.attrs.clone(), specs)
        };
        for message in &messages {
            validate_publish(&message.tags, message.routing_key.as_deref())?;
            if message.body.len() > attrs.max_message_bytes as usize {
                return Err(EngineError::MessageTooLarge {
                    size: message.body.len(),
                    max: attrs.max_message_bytes,
                });
            }
        }
        // Per target queue: its messages, and whether it holds pending pushes.
        let mut per_queue: BTreeMap<String, (bool, Vec<NewMessage>)> = BTreeMap::new();
        let mut deliveries = 0;
        for message in &messages {
            for (name, spec) in &subscriptions {
                let routing_key = message.routing_key.as_deref();
                if !spec.accepts(attrs.filter_type, &message.tags, routing_key) {
                    continue;
                }
                let (queue, push) = match spec.target() {
                    Ok(Target::Queue(queue)) => (queue.to_string(), false),
                    Ok(Target::Endpoint(_)) => (push_queue_name(topic, name), true),
                    Err(_) => continue,
                };
                deliveries += 1;
                let entry = per_queue.entry(queue).or_insert((push, Vec::new()));
                entry.1.push(NewMessage {
                    body: message.body.clone(),
                    delay_seconds: None,
                    tags: message.tags.clone(),
                });
            }
        }
        let sends = per_queue.iter().flat_map(|(queue, (push, batch))| {
            batch.chunks(self.max_batch).map(move |chunk| async move {
                (queue, *push, self.send(queue, chunk.to_vec()).await)
            })
        });
        for (queue, push, result) in futures_util::future::join_all(sends).await {
            match result {
                Ok(_) => {}
                // A dead endpoint must not block publishers: its oldest pushes stay,
                // new ones are dropped.
                Err(EngineError::QueueFull { .. }) if push => {
                    tracing::warn!(topic, queue = %queue, "pending pushes full; dropped new ones");
                }
                Err(error) => return Err(error),
            }
        }
        self.counters
            .published
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        let ids = messages
            .iter()
            .map(|_| self.ids.message_id(rand::random(), rand::random()))
            .collect();
        Ok(Published {
            ids,
            subscriptions: subscriptions.len(),
            deliveries,
        })
    }

    /// Creates the internal queue of an HTTP subscription's pending pushes.
    async fn ensure_push_queue(
        &self,
        topic: &str,
        subscription: &str,
        retention_seconds: u32,
    ) -> Result<(), EngineError> {
        let attrs = QueueAttributes {
            retention_seconds: retention_seconds.max(60),
            max_backlog: MAX_PENDING_PUSHES,
            max_message_bytes: super::attrs::MAX_MESSAGE_BYTES.1,
            ..QueueAttributes::default()
        };
        let name = push_queue_name(topic, subscription);
        match self
            .create_queue_named(&name, attrs, Origin::Declaration)
            .await
        {
            Ok(_) | Err(EngineError::QueueExists(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Deletes the pending pushes of HTTP subscriptions that no longer exist (a
    /// declaration dropped them).
    async fn drop_orphan_push_queues(&self) -> Result<(), EngineError> {
        let live: Vec<String> = self.push_targets().into_iter().map(|t| t.queue).collect();
        let orphans: Vec<String> = self
            .queues
            .read()
            .keys()
            .filter(|name| super::topic::is_internal_queue(name) && !live.contains(name))
            .cloned()
            .collect();
        for name in orphans {
            tracing::info!(queue = %name, "subscription gone; its pending pushes are dropped");
            match self.delete_queue(&name, Origin::Declaration).await {
                Ok(()) | Err(EngineError::QueueNotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Every HTTP subscription, with the queue of its pending pushes.
    pub fn push_targets(&self) -> Vec<PushTarget> {
        let topics = self.topics.lock();
        topics
            .values()
            .flat_map(|topic| {
                topic.subscriptions.iter().filter_map(|(name, s)| {
                    let endpoint = s.spec.endpoint.clone()?;
                    Some(PushTarget {
                        topic: topic.name.clone(),
                        subscription: name.clone(),
                        queue: push_queue_name(&topic.name, name),
                        endpoint,
                        strategy: s.spec.notify_strategy,
                        format: s.spec.notify_content_format,
                        retention_seconds: topic.attrs.retention_seconds,
                    })
                })
            })
            .collect()
    }

    /// The first subscription (topic, name) that delivers into `queue`, if any.
    pub(super) fn queue_subscriber(&self, queue: &str) -> Option<(String, String)> {
        let topics = self.topics.lock();
        topics.values().find_map(|topic| {
            topic
                .subscriptions
                .iter()
                .find(|(_, s)| s.spec.queue.as_deref() == Some(queue))
                .map(|(name, _)| (topic.name.clone(), name.clone()))
        })
    }

    /// Makes the declared topics exist with exactly the declared attributes and
    /// subscriptions, marks them managed, and releases topics no longer declared. Call
    /// after the queue declarations, which the subscriptions may name.
    pub async fn apply_topic_declarations(
        &self,
        declared: &[(String, TopicDeclaration)],
    ) -> Result<(), EngineError> {
        for (name, declaration) in declared {
            validate_name(name)?;
            let attrs = declaration.attributes();
            attrs.validate()?;
            for (subscription, spec) in &declaration.subscriptions {
                validate_name(subscription)?;
                spec.validate(attrs.filter_type)?;
                check_target(spec, &self.queues.read())?;
            }
            if let Some(existing) = self.topics.lock().get(name)
                && existing.attrs.filter_type != attrs.filter_type
            {
                return Err(EngineError::InvalidAttribute {
                    field: "filterType",
                    reason: format!("topic {name:?} exists with another filter type"),
                });
            }
        }
        let now = self.clock.now_ms();
        for (name, declaration) in declared {
            for (subscription, spec) in &declaration.subscriptions {
                if spec.endpoint.is_some() {
                    let retention = declaration.attributes().retention_seconds;
                    self.ensure_push_queue(name, subscription, retention)
                        .await?;
                }
            }
            self.change_topic(name, Origin::Declaration, |current, _| {
                let mut subscriptions = BTreeMap::new();
                for (sub, spec) in &declaration.subscriptions {
                    let kept = current
                        .and_then(|t| t.subscriptions.get(sub))
                        .filter(|s| s.spec == *spec);
                    let subscription = kept.cloned().unwrap_or(Subscription {
                        spec: spec.clone(),
                        created_ms: now,
                        modified_ms: now,
                    });
                    subscriptions.insert(sub.clone(), subscription);
                }
                let attrs = declaration.attributes();
                let next = Topic {
                    name: name.clone(),
                    managed: true,
                    created_ms: current.map_or(now, |t| t.created_ms),
                    modified_ms: current.map_or(now, |t| t.modified_ms),
                    attrs,
                    subscriptions,
                };
                match current {
                    Some(topic) if *topic == next => Ok((Next::Keep, ())),
                    _ => Ok((
                        Next::Put(Topic {
                            modified_ms: now,
                            ..next
                        }),
                        (),
                    )),
                }
            })
            .await?;
        }
        self.drop_orphan_push_queues().await?;
        let released: Vec<String> = self
            .topics
            .lock()
            .values()
            .filter(|t| t.managed && !declared.iter().any(|(d, _)| *d == t.name))
            .map(|t| t.name.clone())
            .collect();
        for name in released {
            tracing::info!(topic = %name, "no longer declared; it stays, managed through the API from now on");
            self.change_topic(&name, Origin::Declaration, |current, _| match current {
                Some(topic) => Ok((
                    Next::Put(Topic {
                        managed: false,
                        ..topic.clone()
                    }),
                    (),
                )),
                None => Ok((Next::Keep, ())),
            })
            .await?;
        }
        Ok(())
    }
}

/// A queue subscription needs its queue.
fn check_target(
    spec: &SubscriptionSpec,
    queues: &HashMap<String, Arc<Queue>>,
) -> Result<(), EngineError> {
    match spec.target()? {
        Target::Queue(queue) if !queues.contains_key(queue) => {
            Err(EngineError::QueueNotFound(queue.to_string()))
        }
        Target::Queue(_) | Target::Endpoint(_) => Ok(()),
    }
}

fn subscription_not_found(topic: &str, subscription: &str) -> EngineError {
    EngineError::SubscriptionNotFound {
        topic: topic.to_string(),
        subscription: subscription.to_string(),
    }
}

fn subscription_info(topic: &str, name: &str, subscription: &Subscription) -> SubscriptionInfo {
    SubscriptionInfo {
        topic: topic.to_string(),
        name: name.to_string(),
        spec: subscription.spec.clone(),
        created_ms: subscription.created_ms,
        modified_ms: subscription.modified_ms,
    }
}
