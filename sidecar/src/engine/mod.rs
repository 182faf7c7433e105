//! The queue model: queues, messages, visibility, delays, dead letters and rewind.
//! No I/O: time comes from a `Clock` and durable changes leave as `Record`s through a
//! `Journal`. Each queue has its own lock, so queues never wait on one another.

pub mod attrs;
pub mod clock;
mod error;
pub mod ids;
mod pubsub;
pub mod queue;
pub mod record;
mod seqmap;
pub mod topic;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use attrs::{DeadLetterPolicy, QueueAttributes, QueueAttributesPatch, validate_name};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::EngineError;
pub use pubsub::{
    Published, PushTarget, SubscriptionInfo, SubscriptionPatch, TopicInfo, TopicMessage,
};
pub use queue::SegmentUse;
pub use queue::{NewMessage, QueueStats};
pub use record::{Journal, LateJournal, MemoryJournal, Record, Snapshot};
pub use topic::{
    ContentFormat, FilterType, NotifyStrategy, SubscriptionSpec, TopicAttributes,
    TopicAttributesPatch, TopicDeclaration,
};

use queue::Content;
use record::BodyLoc;

use ids::IdCodec;
use queue::{DeadLetters, Delivery, QueueState, ReplayedMessage};

/// Longest long poll, in seconds.
pub const MAX_WAIT_SECONDS: u32 = 30;
/// Default and ceiling of messages per send, receive and delete call.
pub const DEFAULT_MAX_BATCH: usize = 16;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This server's StatefulSet ordinal (0 when standalone); carried in ids and handles.
    pub replica: u16,
    /// Most items in one batch call.
    pub max_batch: usize,
    /// Key that signs message ids; kept with the data so ids stay stable.
    pub id_key: [u8; 32],
}

impl EngineConfig {
    pub fn new(replica: u16) -> Self {
        Self {
            replica,
            max_batch: DEFAULT_MAX_BATCH,
            id_key: rand::random(),
        }
    }
}

/// Running totals since start, for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub deleted: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub expired: AtomicU64,
    pub published: AtomicU64,
}

struct Queue {
    state: Mutex<QueueState>,
    /// Long-pollers wait here; woken one per visible message, first come first served.
    visible: Notify,
    /// Tells the timer task that an earlier timer exists, or that the queue closed.
    rearm: Notify,
}

impl Queue {
    fn new(state: QueueState) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(state),
            visible: Notify::new(),
            rearm: Notify::new(),
        })
    }
}

/// An operation on one queue's state at `now`: it may record durable changes and hand
/// out messages to move to the dead-letter queue.
trait QueueOp<R>:
    FnOnce(&mut QueueState, u64, &mut Vec<Record>, &mut DeadLetters) -> Result<R, EngineError>
{
}

impl<R, F> QueueOp<R> for F where
    F: FnOnce(&mut QueueState, u64, &mut Vec<Record>, &mut DeadLetters) -> Result<R, EngineError>
{
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub name: String,
    pub attrs: QueueAttributes,
    pub managed: bool,
    pub created_ms: u64,
    pub modified_ms: u64,
    pub stats: QueueStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    AlreadyExisted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub id: String,
    pub receipt_handle: String,
    pub body: Bytes,
    pub tags: Vec<String>,
    pub enqueued_ms: u64,
    pub first_dequeue_ms: u64,
    pub dequeue_count: u32,
    pub next_visible_ms: u64,
}

/// Who asks for a change: the API, or the configuration file's declarations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Api,
    Declaration,
}

pub struct Engine {
    queues: RwLock<HashMap<String, Arc<Queue>>>,
    /// Locked after `queues` when both are needed.
    topics: Mutex<std::collections::BTreeMap<String, topic::Topic>>,
    /// Serializes topic changes, so a change that fails to be durable can be undone.
    topic_changes: tokio::sync::Mutex<()>,
    clock: Arc<dyn Clock>,
    journal: Arc<dyn Journal>,
    ids: IdCodec,
    max_batch: usize,
    shutdown: CancellationToken,
    counters: Counters,
}

/// Waiters to wake after a change, outside the queue's lock.
struct Wake {
    waiters: usize,
    rearm: bool,
}

impl Wake {
    fn fire(self, queue: &Queue) {
        for _ in 0..self.waiters {
            queue.visible.notify_one();
        }
        if self.rearm {
            queue.rearm.notify_one();
        }
    }
}

struct Outcome<R> {
    result: Result<R, EngineError>,
    dead: DeadLetters,
    dead_letter_queue: Option<String>,
    durable: Option<record::Durable>,
}

impl Engine {
    pub fn new(config: EngineConfig, clock: Arc<dyn Clock>, journal: Arc<dyn Journal>) -> Self {
        Self {
            queues: RwLock::new(HashMap::new()),
            topics: Mutex::new(Default::default()),
            topic_changes: tokio::sync::Mutex::new(()),
            clock,
            journal,
            // Receipt handles are signed with a key of this process alone: in-flight state
            // does not survive a restart, so neither may the handles that name it.
            ids: IdCodec::new(config.replica, config.id_key, rand::random()),
            max_batch: config.max_batch.max(1),
            shutdown: CancellationToken::new(),
            counters: Counters::default(),
        }
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Releases every long poll with what it has (usually nothing); used at shutdown.
    pub fn release_waiters(&self) {
        self.shutdown.cancel();
    }

    fn queue(&self, name: &str) -> Result<Arc<Queue>, EngineError> {
        self.queues
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::QueueNotFound(name.to_string()))
    }

    fn check_dead_letter_target(
        queues: &HashMap<String, Arc<Queue>>,
        attrs: &QueueAttributes,
    ) -> Result<(), EngineError> {
        match &attrs.dead_letter {
            Some(policy) if !queues.contains_key(&policy.queue) => {
                Err(EngineError::DeadLetterQueueNotFound(policy.queue.clone()))
            }
            _ => Ok(()),
        }
    }

    /// Waits until records are durable; returns where their bodies lie.
    async fn settle(durable: Option<record::Durable>) -> Result<Vec<Option<BodyLoc>>, EngineError> {
        match durable {
            Some(durable) => durable.await.map_err(|e| match e.kind {
                record::JournalErrorKind::Full => EngineError::StorageFull(e.message),
                _ => EngineError::Storage(e.message),
            }),
            None => Ok(Vec::new()),
        }
    }

    /// Why the journal refuses writes, if it does.
    pub fn storage_failure(&self) -> Option<String> {
        self.journal.failure()
    }

    /// Wakes one waiter per newly visible message (and one more to pass on what a
    /// receive left), and tells the timer task about an earlier timer.
    fn wake(&self, state: &mut QueueState, active_before: u64) -> Wake {
        let active = state.stats().active;
        let wake = (active.saturating_sub(active_before) as usize)
            .min(self.max_batch)
            .max(usize::from(active > 0));
        let rearm = match state.next_timer() {
            Some(next) if state.armed_ms.is_none_or(|armed| next < armed) => {
                state.armed_ms = Some(next);
                true
            }
            _ => false,
        };
        Wake {
            waiters: wake,
            rearm,
        }
    }

    pub async fn create_queue(
        &self,
        name: &str,
        attrs: QueueAttributes,
        origin: Origin,
    ) -> Result<Created, EngineError> {
        validate_name(name)?;
        self.create_queue_named(name, attrs, origin).await
    }

    /// Creates a queue whose name is already known to be acceptable: a user's, or an
    /// internal one (pending pushes) whose name no user can give.
    async fn create_queue_named(
        &self,
        name: &str,
        attrs: QueueAttributes,
        origin: Origin,
    ) -> Result<Created, EngineError> {
        attrs.validate(name)?;
        let now = self.clock.now_ms();
        let (durable, uid) = {
            let mut queues = self.queues.write();
            if let Some(existing) = queues.get(name) {
                let state = existing.state.lock();
                return if state.attrs == attrs {
                    Ok(Created::AlreadyExisted)
                } else {
                    Err(EngineError::QueueExists(name.to_string()))
                };
            }
            Self::check_dead_letter_target(&queues, &attrs)?;
            let uid: u64 = rand::random();
            let managed = origin == Origin::Declaration;
            let durable = self.journal.append(vec![Record::QueueCreated {
                name: name.to_string(),
                uid,
                attrs: attrs.clone(),
                managed,
                at_ms: now,
            }]);
            let queue = Queue::new(QueueState::new(name.to_string(), uid, attrs, managed, now));
            tokio::spawn(run_timers(queue.clone(), self.clock.clone()));
            queues.insert(name.to_string(), queue);
            (durable, uid)
        };
        if let Err(error) = Self::settle(Some(durable)).await {
            // Not durable: the queue must not exist, or what it accepts would be lost at
            // the next restart.
            let mut queues = self.queues.write();
            if let Some(queue) = queues.get(name).cloned() {
                let mut state = queue.state.lock();
                if state.uid == uid {
                    state.closed = true;
                    drop(state);
                    queues.remove(name);
                    queue.visible.notify_waiters();
                    queue.rearm.notify_one();
                }
            }
            return Err(error);
        }
        tracing::info!(queue = name, ?origin, "queue created");
        Ok(Created::New)
    }

    pub async fn update_queue(
        &self,
        name: &str,
        patch: &QueueAttributesPatch,
        origin: Origin,
    ) -> Result<QueueAttributes, EngineError> {
        self.change_queue(name, patch, origin, origin == Origin::Declaration)
            .await
    }

    /// Applies `patch` and sets whether the queue is managed by a declaration.
    async fn change_queue(
        &self,
        name: &str,
        patch: &QueueAttributesPatch,
        origin: Origin,
        managed: bool,
    ) -> Result<QueueAttributes, EngineError> {
        let now = self.clock.now_ms();
        let (attrs, durable) = {
            let queues = self.queues.read();
            let queue = queues
                .get(name)
                .ok_or_else(|| EngineError::QueueNotFound(name.to_string()))?;
            let mut state = queue.state.lock();
            if state.managed && origin == Origin::Api {
                return Err(EngineError::QueueManaged(name.to_string()));
            }
            let attrs = patch.apply_to(&state.attrs);
            attrs.validate(name)?;
            Self::check_dead_letter_target(&queues, &attrs)?;
            if attrs == state.attrs && managed == state.managed {
                return Ok(attrs);
            }
            state.attrs = attrs.clone();
            state.managed = managed;
            state.modified_ms = now;
            let durable = self.journal.append(vec![Record::QueueUpdated {
                name: name.to_string(),
                attrs: attrs.clone(),
                managed,
                at_ms: now,
            }]);
            (attrs, durable)
        };
        Self::settle(Some(durable)).await?;
        Ok(attrs)
    }

    pub async fn delete_queue(&self, name: &str, origin: Origin) -> Result<(), EngineError> {
        if origin == Origin::Api && topic::is_internal_queue(name) {
            return Err(EngineError::QueueNotFound(name.to_string()));
        }
        let (queue, durable) = {
            let mut queues = self.queues.write();
            let queue = queues
                .get(name)
                .cloned()
                .ok_or_else(|| EngineError::QueueNotFound(name.to_string()))?;
            if queue.state.lock().managed && origin == Origin::Api {
                return Err(EngineError::QueueManaged(name.to_string()));
            }
            let mut users: Vec<&String> = queues
                .iter()
                .filter(|(other, q)| {
                    *other != name
                        && q.state
                            .lock()
                            .attrs
                            .dead_letter
                            .as_ref()
                            .is_some_and(|p| p.queue == name)
                })
                .map(|(other, _)| other)
                .collect();
            users.sort();
            if let Some(used_by) = users.first() {
                return Err(EngineError::QueueInUse {
                    queue: name.to_string(),
                    used_by: used_by.to_string(),
                });
            }
            if let Some((topic, subscription)) = self.queue_subscriber(name) {
                return Err(EngineError::QueueSubscribed {
                    queue: name.to_string(),
                    topic,
                    subscription,
                });
            }
            queues.remove(name);
            let mut state = queue.state.lock();
            state.closed = true;
            let durable = self.journal.append(vec![Record::QueueDeleted {
                name: name.to_string(),
            }]);
            drop(state);
            (queue, durable)
        };
        queue.visible.notify_waiters();
        queue.rearm.notify_one();
        tracing::info!(queue = name, ?origin, "queue deleted");
        Self::settle(Some(durable)).await.map(drop)
    }

    async fn run<R>(&self, queue: &Queue, op: impl QueueOp<R>) -> Result<R, EngineError> {
        let (result, durable) = self.run_durable(queue, op).await?;
        durable.map(|_| result)
    }

    /// Runs `op` on a queue after applying what time has decided, hands its records to the
    /// journal while the lock is held, wakes waiters, then moves dead letters and waits
    /// until the records are durable (receive counts alone are not waited for). Returns
    /// `op`'s result and where the journal put the records' bodies.
    async fn run_durable<R>(
        &self,
        queue: &Queue,
        op: impl QueueOp<R>,
    ) -> Result<(R, Result<Vec<Option<BodyLoc>>, EngineError>), EngineError> {
        let now = self.clock.now_ms();
        let (outcome, source, wake) = {
            let mut state = queue.state.lock();
            let mut records = Vec::new();
            let active_before = state.stats().active;
            let mut dead = state.tick(now, &mut records);
            let result = op(&mut state, now, &mut records, &mut dead);
            for record in &records {
                if let Record::Expired { seqs, .. } = record {
                    self.counters
                        .expired
                        .fetch_add(seqs.len() as u64, Ordering::Relaxed);
                }
            }
            let must_wait = records
                .iter()
                .any(|r| !matches!(r, Record::Received { .. }));
            let appended = (!records.is_empty()).then(|| self.journal.append(records));
            let durable = appended.filter(|_| must_wait);
            let wake = self.wake(&mut state, active_before);
            let outcome = Outcome {
                result,
                dead,
                dead_letter_queue: state.attrs.dead_letter.as_ref().map(|p| p.queue.clone()),
                durable,
            };
            (outcome, state.name.clone(), wake)
        };
        wake.fire(queue);
        if !outcome.dead.is_empty() {
            self.forward_dead_letters(queue, &source, outcome.dead_letter_queue, outcome.dead)
                .await?;
        }
        let durable = Self::settle(outcome.durable).await;
        outcome.result.map(|result| (result, durable))
    }

    async fn forward_dead_letters(
        &self,
        source: &Queue,
        source_name: &str,
        target_name: Option<String>,
        dead: DeadLetters,
    ) -> Result<(), EngineError> {
        let target = target_name.as_deref().map(|t| self.queue(t));
        let Some(Ok(target)) = target else {
            // The policy went away between the decision and the move: keep the messages.
            tracing::warn!(queue = source_name, target = ?target_name, count = dead.len(),
                "dead-letter queue missing; messages stay in their queue");
            let mut state = source.state.lock();
            for message in dead {
                state.restore(message);
            }
            return Ok(());
        };
        let now = self.clock.now_ms();
        let moved = dead.len();
        let durable = {
            let mut state = target.state.lock();
            if state.closed {
                // Deleted meanwhile: keep the messages. One queue lock at a time, so the
                // lock order stays registry → one queue.
                drop(state);
                let mut source_state = source.state.lock();
                for message in dead {
                    source_state.restore(message);
                }
                return Ok(());
            }
            let mut records = Vec::with_capacity(moved);
            let mut seqs = Vec::with_capacity(moved);
            for message in dead.iter().cloned() {
                if let Ok(seq) = state.accept_dead_letter(now, message, source_name, &mut records) {
                    seqs.push(seq);
                }
            }
            (seqs, self.journal.append(records))
        };
        let (seqs, durable) = durable;
        match Self::settle(Some(durable)).await {
            Ok(_) => {
                let wake = {
                    let mut state = target.state.lock();
                    let active_before = state.stats().active;
                    state.commit(self.clock.now_ms(), &seqs, &[]);
                    self.wake(&mut state, active_before)
                };
                wake.fire(&target);
                self.counters
                    .dead_lettered
                    .fetch_add(moved as u64, Ordering::Relaxed);
                tracing::info!(queue = source_name, target = ?target_name, count = moved, "moved to dead-letter queue");
                Ok(())
            }
            Err(error) => {
                // The move is not durable: the messages go back where the log has them.
                target.state.lock().abort(&seqs);
                let mut state = source.state.lock();
                for message in dead {
                    state.restore(message);
                }
                Err(error)
            }
        }
    }

    pub async fn get_queue(&self, name: &str) -> Result<QueueInfo, EngineError> {
        let queue = self.queue(name)?;
        self.run(&queue, |state, _, _, _| {
            if state.closed {
                return Err(EngineError::QueueNotFound(name.to_string()));
            }
            Ok(QueueInfo {
                name: state.name.clone(),
                attrs: state.attrs.clone(),
                managed: state.managed,
                created_ms: state.created_ms,
                modified_ms: state.modified_ms,
                stats: state.stats(),
            })
        })
        .await
    }

    /// Queues whose name starts with `prefix`, sorted by name, from `offset`, at most
    /// `limit`; with the total number that match.
    pub async fn list_queues(
        &self,
        prefix: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<QueueInfo>, usize), EngineError> {
        let mut names: Vec<String> = self
            .queues
            .read()
            .keys()
            .filter(|name| name.starts_with(prefix) && !topic::is_internal_queue(name))
            .cloned()
            .collect();
        names.sort();
        let total = names.len();
        let mut page = Vec::new();
        for name in names.into_iter().skip(offset).take(limit) {
            match self.get_queue(&name).await {
                Ok(info) => page.push(info),
                Err(EngineError::QueueNotFound(_)) => {} // deleted meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok((page, total))
    }

    pub async fn purge_queue(&self, name: &str) -> Result<u64, EngineError> {
        let queue = self.queue(name)?;
        self.run(&queue, |state, _, records, dead| {
            dead.clear(); // purging drops what time had decided to move, too
            state.purge(records)
        })
        .await
    }

    pub async fn rewind_queue(&self, name: &str, from_ms: u64) -> Result<u64, EngineError> {
        let queue = self.queue(name)?;
        self.run(&queue, |state, now, records, _| {
            state.rewind(now, from_ms, records)
        })
        .await
    }

    /// Enqueues a batch atomically: every message is accepted, or none.
    pub async fn send(
        &self,
        name: &str,
        batch: Vec<NewMessage>,
    ) -> Result<Vec<String>, EngineError> {
        let queue = self.queue(name)?;
        let max_batch = self.max_batch;
        let ((uid, seqs), durable) = self
            .run_durable(&queue, |state, now, records, _| {
                Ok((state.uid, state.send(now, batch, max_batch, records)?))
            })
            .await?;
        // The messages become receivable only now that their records are durable.
        match durable {
            Ok(locs) => {
                let wake = {
                    let mut state = queue.state.lock();
                    let active_before = state.stats().active;
                    let first = locs.len().saturating_sub(seqs.len());
                    state.commit(self.clock.now_ms(), &seqs, &locs[first..]);
                    self.wake(&mut state, active_before)
                };
                wake.fire(&queue);
            }
            Err(error) => {
                queue.state.lock().abort(&seqs);
                return Err(error);
            }
        }
        self.counters
            .sent
            .fetch_add(seqs.len() as u64, Ordering::Relaxed);
        Ok(seqs
            .into_iter()
            .map(|seq| self.ids.message_id(uid, seq))
            .collect())
    }

    /// Receives up to `max` messages, waiting up to `wait_seconds` (the queue's default
    /// when `None`) for the first one. Returns as soon as any message is visible.
    pub async fn receive(
        &self,
        name: &str,
        max: usize,
        wait_seconds: Option<u32>,
    ) -> Result<Vec<ReceivedMessage>, EngineError> {
        if max == 0 || max > self.max_batch {
            return Err(EngineError::InvalidRequest(format!(
                "max {max} is outside 1..={}",
                self.max_batch
            )));
        }
        if let Some(wait) = wait_seconds
            && wait > MAX_WAIT_SECONDS
        {
            return Err(EngineError::InvalidRequest(format!(
                "waitSeconds {wait} is outside 0..={MAX_WAIT_SECONDS}"
            )));
        }
        let queue = self.queue(name)?;
        let wait = match wait_seconds {
            Some(wait) => wait,
            None => queue.state.lock().attrs.polling_wait_seconds,
        };
        let deadline = self.clock.now_ms() + u64::from(wait) * 1_000;
        loop {
            let visible = queue.visible.notified();
            tokio::pin!(visible);
            visible.as_mut().enable();
            let (uid, deliveries) = self
                .run(&queue, |state, now, records, dead| {
                    let (deliveries, moved) = state.receive(now, max, records)?;
                    dead.extend(moved);
                    Ok((state.uid, deliveries))
                })
                .await?;
            if !deliveries.is_empty() {
                self.counters
                    .received
                    .fetch_add(deliveries.len() as u64, Ordering::Relaxed);
                let mut contents = self.read_contents(&deliveries).into_iter();
                return deliveries
                    .into_iter()
                    .map(|d| {
                        let (body, tags) = contents.next().unwrap_or_else(|| {
                            Err(EngineError::Storage("a message body was not read".into()))
                        })?;
                        Ok(ReceivedMessage {
                            id: self.ids.message_id(uid, d.seq),
                            receipt_handle: self.ids.receipt_handle(d.receipt),
                            body,
                            tags,
                            enqueued_ms: d.enqueued_ms,
                            first_dequeue_ms: d.first_dequeue_ms,
                            dequeue_count: d.dequeue_count,
                            next_visible_ms: d.next_visible_ms,
                        })
                    })
                    .collect();
            }
            if self.clock.now_ms() >= deadline || self.shutdown.is_cancelled() {
                return Ok(Vec::new());
            }
            tokio::select! {
                _ = &mut visible => {}
                _ = self.clock.sleep_until(deadline) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }

    /// The body and tags of each delivery, in order; stored ones read in one pass.
    fn read_contents(
        &self,
        deliveries: &[Delivery],
    ) -> Vec<Result<(Bytes, Vec<String>), EngineError>> {
        let stored: Vec<BodyLoc> = deliveries
            .iter()
            .filter_map(|d| match &d.content {
                Content::Stored(loc) => Some(*loc),
                Content::Inline(_) => None,
            })
            .collect();
        let mut read = self.journal.read_messages(&stored).into_iter();
        deliveries
            .iter()
            .map(|d| match &d.content {
                Content::Inline(inline) => Ok((inline.body.clone(), inline.tags.clone())),
                Content::Stored(_) => match read.next() {
                    Some(answer) => answer.map_err(|e| EngineError::Storage(e.message)),
                    None => Err(EngineError::Storage("a message body was not read".into())),
                },
            })
            .collect()
    }

    /// Deletes by receipt handle; one result per handle, in order.
    pub async fn delete_messages(
        &self,
        name: &str,
        handles: &[String],
    ) -> Result<Vec<Result<(), EngineError>>, EngineError> {
        if handles.is_empty() {
            return Err(EngineError::EmptyBatch);
        }
        if handles.len() > self.max_batch {
            return Err(EngineError::BatchTooLarge {
                size: handles.len(),
                max: self.max_batch,
            });
        }
        let queue = self.queue(name)?;
        let receipts: Vec<_> = handles
            .iter()
            .map(|h| self.ids.parse_receipt_handle(h))
            .collect();
        let results = self
            .run(&queue, |state, _, records, _| {
                if state.closed {
                    return Err(EngineError::QueueNotFound(name.to_string()));
                }
                Ok(receipts
                    .into_iter()
                    .map(|receipt| receipt.and_then(|r| state.delete(r, records)))
                    .collect::<Vec<_>>())
            })
            .await?;
        let deleted = results.iter().filter(|r| r.is_ok()).count();
        self.counters
            .deleted
            .fetch_add(deleted as u64, Ordering::Relaxed);
        Ok(results)
    }

    /// Changes how long an in-flight message stays hidden; returns when it becomes visible.
    pub async fn change_visibility(
        &self,
        name: &str,
        handle: &str,
        seconds: u32,
    ) -> Result<u64, EngineError> {
        let queue = self.queue(name)?;
        let receipt = self.ids.parse_receipt_handle(handle)?;
        self.run(&queue, |state, now, _, _| {
            state.change_visibility(now, receipt, seconds)
        })
        .await
    }

    /// Applies one record read back from the journal at start-up. Records that name a
    /// queue or message that no longer exists (after a repair dropped damage) are skipped.
    pub fn replay(&self, record: Record) {
        let now = self.clock.now_ms();
        let mut queues = self.queues.write();
        let with = |name: &str, apply: &mut dyn FnMut(&mut QueueState)| {
            if let Some(queue) = queues.get(name) {
                apply(&mut queue.state.lock());
            }
        };
        match record {
            Record::Checkpoint(snapshot) => {
                queues.clear();
                *self.topics.lock() = snapshot
                    .topics
                    .into_iter()
                    .map(|topic| (topic.name.clone(), topic))
                    .collect();
                for queue in snapshot.queues {
                    let name = queue.name.clone();
                    let state = QueueState::from_snapshot(now, queue);
                    queues.insert(name, Queue::new(state));
                }
            }
            Record::Enqueued {
                queue,
                seq,
                enqueued_ms,
                visible_at_ms,
                tags,
                body,
            } => {
                let mut message = Some(ReplayedMessage {
                    seq,
                    body,
                    tags,
                    enqueued_ms,
                    visible_at_ms,
                });
                with(&queue, &mut |state| {
                    if let Some(message) = message.take() {
                        state.replay_enqueued(now, message);
                    }
                });
            }
            Record::Deleted { queue, seqs } => {
                with(&queue, &mut |state| state.replay_removed(&seqs, true))
            }
            Record::Expired { queue, seqs } => {
                with(&queue, &mut |state| state.replay_removed(&seqs, false))
            }
            Record::Received { queue, counts } => {
                with(&queue, &mut |state| state.replay_received(&counts))
            }
            Record::Rewound { queue, from_ms } => with(&queue, &mut |state| {
                state.reopen_deleted_since(now, from_ms);
            }),
            Record::QueuePurged { name } => with(&name, &mut |state| {
                let _ = state.purge(&mut Vec::new());
            }),
            Record::DeadLettered {
                from,
                seq,
                to,
                to_seq,
                at_ms,
                stored,
            } => {
                let mut moved = None;
                with(&from, &mut |state| {
                    moved = state.replay_take(seq).map(|m| m.content)
                });
                // The source may be gone (deleted while the move was under way): the
                // record says where the message lies.
                let mut content = moved.or(stored.map(Content::Stored));
                with(&to, &mut |state| {
                    if let Some(content) = content.take() {
                        state.replay_dead_letter(to_seq, at_ms, content);
                    }
                });
            }
            Record::QueueCreated {
                name,
                uid,
                attrs,
                managed,
                at_ms,
            } => {
                let state = QueueState::new(name.clone(), uid, attrs, managed, at_ms);
                queues.insert(name, Queue::new(state));
            }
            Record::QueueUpdated {
                name,
                attrs,
                managed,
                at_ms,
            } => with(&name, &mut |state| {
                state.attrs = attrs.clone();
                state.managed = managed;
                state.modified_ms = at_ms;
            }),
            Record::QueueDeleted { name } => {
                queues.remove(&name);
            }
            Record::TopicPut(topic) => {
                self.topics.lock().insert(topic.name.clone(), *topic);
            }
            Record::TopicDeleted { name } => {
                self.topics.lock().remove(&name);
            }
        }
    }

    /// Captures the durable state for a checkpoint. Every queue is locked at once (a
    /// short pause for all of them) so the state and the log's mark agree exactly: the
    /// records before the mark are in the state, the ones after are not.
    pub fn capture(&self) -> (Snapshot, record::Mark) {
        let queues = self.queues.write();
        let mut names: Vec<&String> = queues.keys().collect();
        names.sort();
        let guards: Vec<_> = names
            .iter()
            .filter_map(|name| queues.get(*name))
            .map(|queue| queue.state.lock())
            .collect();
        let topics = self.topics.lock();
        let snapshot = Snapshot {
            queues: guards.iter().map(|state| state.snapshot()).collect(),
            topics: topics.values().cloned().collect(),
        };
        let mark = self.journal.mark();
        drop(topics);
        drop(guards);
        drop(queues);
        (snapshot, mark)
    }

    /// Per log segment, how many stored messages (live or kept for a rewind) it holds
    /// and their bytes, over all queues.
    pub fn segment_use(&self) -> HashMap<u32, SegmentUse> {
        let queues: Vec<Arc<Queue>> = self.queues.read().values().cloned().collect();
        let mut total: HashMap<u32, SegmentUse> = HashMap::new();
        for queue in queues {
            for (segment, usage) in queue.state.lock().segment_use() {
                let entry = total.entry(*segment).or_default();
                entry.messages += usage.messages;
                entry.bytes += usage.bytes;
            }
        }
        total
    }

    /// Copies the live messages stored in `segment` to the end of the log, so the
    /// segment can be removed. Returns how many were copied.
    pub async fn copy_forward(&self, segment: u32) -> Result<u64, EngineError> {
        let queues: Vec<Arc<Queue>> = self.queues.read().values().cloned().collect();
        let mut copied = 0;
        for queue in queues {
            let stored = queue.state.lock().stored_in(segment);
            for chunk in stored.chunks(64) {
                let mut read = Vec::with_capacity(chunk.len());
                for (seq, loc) in chunk {
                    let (body, tags) = self
                        .journal
                        .read_message(*loc)
                        .map_err(|e| EngineError::Storage(e.message))?;
                    read.push((*seq, *loc, body, tags));
                }
                let (moved, durable) = {
                    let state = queue.state.lock();
                    let mut moved = Vec::new();
                    let mut records = Vec::new();
                    for (seq, loc, body, tags) in read {
                        if let Some(record) = state.copy_record(seq, loc, body, tags) {
                            moved.push((seq, loc));
                            records.push(record);
                        }
                    }
                    if records.is_empty() {
                        continue;
                    }
                    (moved, self.journal.append(records))
                };
                let locs = Self::settle(Some(durable)).await?;
                let mut state = queue.state.lock();
                for ((seq, from), to) in moved.iter().zip(locs) {
                    if let Some(to) = to {
                        state.relocate(*seq, *from, to);
                        copied += 1;
                    }
                }
            }
        }
        Ok(copied)
    }

    /// Starts the timers of the queues that `replay` rebuilt.
    pub fn start_replayed(&self) {
        for queue in self.queues.read().values() {
            tokio::spawn(run_timers(queue.clone(), self.clock.clone()));
        }
    }

    /// Every queue with its counts, for metrics (internal queues left out).
    pub fn snapshot(&self) -> Vec<(String, QueueStats)> {
        let queues: Vec<Arc<Queue>> = self
            .queues
            .read()
            .iter()
            .filter(|(name, _)| !topic::is_internal_queue(name))
            .map(|(_, queue)| queue.clone())
            .collect();
        let mut out: Vec<(String, QueueStats)> = queues
            .iter()
            .map(|q| {
                let state = q.state.lock();
                (state.name.clone(), state.stats())
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Makes the declared queues exist with exactly the declared attributes, marks them
    /// managed, and releases queues that are no longer declared (they keep their messages).
    pub async fn apply_declarations(
        &self,
        declared: &[(String, QueueAttributes)],
    ) -> Result<(), EngineError> {
        for (name, attrs) in declared {
            validate_name(name)?;
            attrs.validate(name)?;
            // Refuse the whole declaration before changing anything.
            if let Some(policy) = &attrs.dead_letter {
                let declared_target = declared.iter().any(|(d, _)| *d == policy.queue);
                if !declared_target && !self.queues.read().contains_key(&policy.queue) {
                    return Err(EngineError::DeadLetterQueueNotFound(policy.queue.clone()));
                }
            }
        }
        // First make every declared queue exist (without its dead-letter policy, whose
        // target may be declared later), then give each its full attributes.
        for (name, attrs) in declared {
            let bare = QueueAttributes {
                dead_letter: None,
                ..attrs.clone()
            };
            match self.create_queue(name, bare, Origin::Declaration).await {
                Ok(_) | Err(EngineError::QueueExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        for (name, attrs) in declared {
            self.update_queue(name, &full_patch(attrs), Origin::Declaration)
                .await?;
        }
        let undeclared: Vec<Arc<Queue>> = self
            .queues
            .read()
            .iter()
            .filter(|(name, _)| !declared.iter().any(|(d, _)| d == *name))
            .map(|(_, q)| q.clone())
            .collect();
        for queue in undeclared {
            let name = {
                let state = queue.state.lock();
                if !state.managed || state.closed {
                    continue;
                }
                state.name.clone()
            };
            tracing::info!(queue = %name, "no longer declared; it stays, managed through the API from now on");
            self.change_queue(
                &name,
                &QueueAttributesPatch::default(),
                Origin::Declaration,
                false,
            )
            .await?;
        }
        Ok(())
    }
}

fn full_patch(attrs: &QueueAttributes) -> QueueAttributesPatch {
    QueueAttributesPatch {
        visibility_timeout_seconds: Some(attrs.visibility_timeout_seconds),
        polling_wait_seconds: Some(attrs.polling_wait_seconds),
        max_message_bytes: Some(attrs.max_message_bytes),
        retention_seconds: Some(attrs.retention_seconds),
        delay_seconds: Some(attrs.delay_seconds),
        max_backlog: Some(attrs.max_backlog),
        rewind_seconds: Some(attrs.rewind_seconds),
        dead_letter: Some(attrs.dead_letter.clone()),
    }
}

/// Makes delayed and in-flight messages visible when their time comes and wakes one
/// waiter per message. One task per queue; it ends when the queue is deleted.
async fn run_timers(queue: Arc<Queue>, clock: Arc<dyn Clock>) {
    loop {
        let rearm = queue.rearm.notified();
        tokio::pin!(rearm);
        rearm.as_mut().enable();
        let (promoted, next) = {
            let mut state = queue.state.lock();
            if state.closed {
                return;
            }
            let promoted = state.promote_due(clock.now_ms());
            state.armed_ms = state.next_timer();
            (promoted, state.armed_ms)
        };
        for _ in 0..promoted.min(1_024) {
            queue.visible.notify_one();
        }
        match next {
            Some(at) => {
                tokio::select! {
                    _ = clock.sleep_until(at) => {}
                    _ = &mut rearm => {}
                }
            }
            None => rearm.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::BodyRef;

    fn engine() -> Engine {
        Engine::new(
            EngineConfig::new(0),
            Arc::new(ManualClock::new(1_000_000)),
            Arc::new(MemoryJournal),
        )
    }

    /// A journal whose disk is full.
    struct FullJournal;

    impl Journal for FullJournal {
        fn append(&self, _records: Vec<Record>) -> record::Durable {
            Box::pin(std::future::ready(Err(record::JournalError::full(
                "disk full",
            ))))
        }
        fn read_message(
            &self,
            _loc: BodyLoc,
        ) -> Result<(Bytes, Vec<String>), record::JournalError> {
            Err(record::JournalError::unavailable("nothing stored"))
        }
    }

    #[tokio::test]
    async fn a_queue_whose_creation_is_not_durable_does_not_exist() {
        let engine = Engine::new(
            EngineConfig::new(0),
            Arc::new(ManualClock::new(1_000_000)),
            Arc::new(FullJournal),
        );
        let created = engine
            .create_queue("orders", QueueAttributes::default(), Origin::Api)
            .await;
        assert!(
            matches!(created, Err(EngineError::StorageFull(_))),
            "{created:?}"
        );
        assert_eq!(
            engine.get_queue("orders").await,
            Err(EngineError::QueueNotFound("orders".into()))
        );
    }

    #[tokio::test]
    async fn replay_moves_a_dead_letter_whose_source_was_deleted_meanwhile() {
        let engine = engine();
        let loc = BodyLoc {
            segment: 1,
            offset: 100,
            len: 60,
        };
        let created = |name: &str| Record::QueueCreated {
            name: name.into(),
            uid: 7,
            attrs: QueueAttributes::default(),
            managed: false,
            at_ms: 1,
        };
        for record in [
            created("a"),
            created("dlq"),
            Record::Enqueued {
                queue: "a".into(),
                seq: 1,
                enqueued_ms: 2,
                visible_at_ms: 2,
                tags: vec![],
                body: BodyRef::Stored(loc),
            },
            Record::QueueDeleted { name: "a".into() },
            Record::DeadLettered {
                from: "a".into(),
                seq: 1,
                to: "dlq".into(),
                to_seq: 1,
                at_ms: 3,
                stored: Some(loc),
            },
        ] {
            engine.replay(record);
        }
        engine.start_replayed();
        assert_eq!(engine.get_queue("dlq").await.unwrap().stats.active, 1);
    }

    #[tokio::test]
    async fn undeclared_queue_is_released_to_the_api() {
        let engine = engine();
        let declared = vec![("orders".to_string(), QueueAttributes::default())];
        engine.apply_declarations(&declared).await.unwrap();
        let patch = QueueAttributesPatch {
            delay_seconds: Some(5),
            ..Default::default()
        };
        assert_eq!(
            engine.update_queue("orders", &patch, Origin::Api).await,
            Err(EngineError::QueueManaged("orders".into()))
        );
        engine.apply_declarations(&[]).await.unwrap();
        let info = engine.get_queue("orders").await.unwrap();
        assert!(!info.managed);
        engine
            .update_queue("orders", &patch, Origin::Api)
            .await
            .unwrap();
        assert_eq!(
            engine
                .get_queue("orders")
                .await
                .unwrap()
                .attrs
                .delay_seconds,
            5
        );
    }

    #[tokio::test]
    async fn declared_dead_letter_target_may_come_later_in_the_list() {
        let engine = engine();
        let orders = QueueAttributes {
            dead_letter: Some(DeadLetterPolicy {
                queue: "z-dlq".into(),
                max_receive_count: Some(2),
                max_time_to_live_seconds: None,
            }),
            ..QueueAttributes::default()
        };
        let declared = vec![
            ("orders".to_string(), orders.clone()),
            ("z-dlq".to_string(), QueueAttributes::default()),
        ];
        engine.apply_declarations(&declared).await.unwrap();
        assert_eq!(engine.get_queue("orders").await.unwrap().attrs, orders);
        assert_eq!(
            engine.delete_queue("z-dlq", Origin::Declaration).await,
            Err(EngineError::QueueInUse {
                queue: "z-dlq".into(),
                used_by: "orders".into()
            })
        );
    }
}
