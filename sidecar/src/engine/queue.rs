//! One queue's state and the rules of the message life cycle, as plain synchronous
//! code over an explicit `now`: delayed → active → inactive (in flight) → deleted,
//! expired or dead-lettered. The engine wraps it in a lock; the model test drives it
//! directly.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::seqmap::SeqMap;

use bytes::Bytes;

use super::EngineError;
use super::attrs::{DELAY_SECONDS, QueueAttributes, VISIBILITY_TIMEOUT_SECONDS, validate_tags};
use super::ids::Receipt;
use super::record::{BodyLoc, BodyRef, MessageSnapshot, QueueSnapshot, Record};

const MS: u64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Sent, but its record is not durable yet: invisible to every receive.
    Pending,
    Delayed,
    Active,
    InFlight,
}

/// A message's body and tags: on disk once its record is written (the log holds
/// both), on the heap until then, or always when the engine runs in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Stored(BodyLoc),
    Inline(Box<Inline>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inline {
    pub body: Bytes,
    pub tags: Vec<String>,
}

impl Content {
    fn inline(body: Bytes, tags: Vec<String>) -> Self {
        Content::Inline(Box::new(Inline { body, tags }))
    }
}

/// What the engine keeps in memory per queued message: small and fixed.
#[derive(Debug, Clone)]
pub struct Message {
    pub seq: u64,
    pub content: Content,
    pub enqueued_ms: u64,
    /// When it was first received; 0 while never received.
    pub first_dequeue_ms: u64,
    pub dequeue_count: u32,
    pub visible_at_ms: u64,
    generation: u32,
    phase: Phase,
}

/// A message to enqueue. `delay_seconds: None` takes the queue's default.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    pub body: Bytes,
    pub delay_seconds: Option<u32>,
    pub tags: Vec<String>,
}

/// A message read back from the journal at start-up.
#[derive(Debug, Clone)]
pub struct ReplayedMessage {
    pub seq: u64,
    pub body: BodyRef,
    /// Used only for an inline body: a stored one has its tags beside it on disk.
    pub tags: Vec<String>,
    pub enqueued_ms: u64,
    pub visible_at_ms: u64,
}

/// A message handed to a consumer by a receive.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub seq: u64,
    pub receipt: Receipt,
    pub content: Content,
    pub enqueued_ms: u64,
    pub first_dequeue_ms: u64,
    pub dequeue_count: u32,
    pub next_visible_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub active: u64,
    pub inactive: u64,
    pub delayed: u64,
    /// Deleted messages kept for a rewind.
    pub rewindable: u64,
    pub oldest_message_ms: Option<u64>,
}

#[derive(Debug)]
pub struct QueueState {
    pub name: String,
    pub uid: u64,
    pub attrs: QueueAttributes,
    pub managed: bool,
    pub created_ms: u64,
    pub modified_ms: u64,
    /// Set when the queue is deleted; every later operation answers "not found".
    pub closed: bool,
    /// The earliest timer the timer task sleeps towards, if it sleeps on one.
    pub armed_ms: Option<u64>,
    next_seq: u64,
    /// Live messages by sequence; sequence order is enqueue order.
    messages: SeqMap<Message>,
    /// Visible messages, oldest first.
    ready: BTreeSet<u64>,
    /// Delayed and in-flight messages by the time they become visible.
    timers: BTreeSet<(u64, u64)>,
    delayed: u64,
    /// Deleted messages still inside the rewind window.
    deleted: BTreeMap<u64, Message>,
    /// Stored messages (live or rewindable) per log segment: what compaction may free.
    stored: HashMap<u32, SegmentUse>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentUse {
    pub messages: u64,
    pub bytes: u64,
}

fn account(stored: &mut HashMap<u32, SegmentUse>, content: &Content, add: bool) {
    let Content::Stored(loc) = content else {
        return;
    };
    let entry = stored.entry(loc.segment).or_default();
    if add {
        entry.messages += 1;
        entry.bytes += u64::from(loc.len);
    } else {
        entry.messages = entry.messages.saturating_sub(1);
        entry.bytes = entry.bytes.saturating_sub(u64::from(loc.len));
        if entry.messages == 0 {
            stored.remove(&loc.segment);
        }
    }
}

/// What a receive produced besides deliveries: messages to move to the dead-letter queue.
pub type DeadLetters = Vec<Message>;

impl QueueState {
    pub fn new(name: String, uid: u64, attrs: QueueAttributes, managed: bool, now: u64) -> Self {
        Self {
            name,
            uid,
            attrs,
            managed,
            created_ms: now,
            modified_ms: now,
            closed: false,
            armed_ms: None,
            next_seq: 1,
            messages: SeqMap::default(),
            ready: BTreeSet::new(),
            timers: BTreeSet::new(),
            delayed: 0,
            deleted: BTreeMap::new(),
            stored: HashMap::new(),
        }
    }

    fn open(&self) -> Result<(), EngineError> {
        if self.closed {
            Err(EngineError::QueueNotFound(self.name.clone()))
        } else {
            Ok(())
        }
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    pub fn next_timer(&self) -> Option<u64> {
        self.timers.first().map(|(at, _)| *at)
    }

    pub fn backlog(&self) -> u64 {
        self.messages.len() as u64
    }

    fn place(&mut self, seq: u64, phase: Phase, visible_at_ms: u64) {
        match phase {
            Phase::Pending => {}
            Phase::Active => {
                self.ready.insert(seq);
            }
            Phase::Delayed => {
                self.delayed += 1;
                self.timers.insert((visible_at_ms, seq));
            }
            Phase::InFlight => {
                self.timers.insert((visible_at_ms, seq));
            }
        }
    }

    fn unplace(&mut self, seq: u64, phase: Phase, visible_at_ms: u64) {
        match phase {
            Phase::Pending => {}
            Phase::Active => {
                self.ready.remove(&seq);
            }
            Phase::Delayed => {
                self.delayed -= 1;
                self.timers.remove(&(visible_at_ms, seq));
            }
            Phase::InFlight => {
                self.timers.remove(&(visible_at_ms, seq));
            }
        }
    }

    fn take(&mut self, seq: u64) -> Option<Message> {
        let message = self.messages.remove(seq)?;
        self.unplace(seq, message.phase, message.visible_at_ms);
        account(&mut self.stored, &message.content, false);
        Some(message)
    }

    fn insert(&mut self, message: Message) {
        self.place(message.seq, message.phase, message.visible_at_ms);
        account(&mut self.stored, &message.content, true);
        if let Some(old) = self.messages.insert(message.seq, message) {
            account(&mut self.stored, &old.content, false);
        }
    }

    /// Keeps a deleted message for a rewind.
    fn keep_deleted(&mut self, message: Message) {
        account(&mut self.stored, &message.content, true);
        if let Some(old) = self.deleted.insert(message.seq, message) {
            account(&mut self.stored, &old.content, false);
        }
    }

    fn drop_deleted(&mut self, seq: u64) -> Option<Message> {
        let message = self.deleted.remove(&seq)?;
        account(&mut self.stored, &message.content, false);
        Some(message)
    }

    /// How many of this queue's messages (live or kept for a rewind) each log segment
    /// holds, and their bytes.
    pub fn segment_use(&self) -> &HashMap<u32, SegmentUse> {
        &self.stored
    }

    /// The live messages whose records lie in `segment` (not those kept for a rewind).
    pub fn stored_in(&self, segment: u32) -> Vec<(u64, BodyLoc)> {
        let mut out = Vec::new();
        let mut seq = self.messages.first().map(|(s, _)| s);
        while let Some(at) = seq {
            if let Some(message) = self.messages.get(at)
                && let Content::Stored(loc) = message.content
                && loc.segment == segment
            {
                out.push((at, loc));
            }
            seq = (at < self.next_seq).then_some(at + 1);
        }
        out
    }

    /// Points a live message at a copy of its record, if it still lies at `from`.
    pub fn relocate(&mut self, seq: u64, from: BodyLoc, to: BodyLoc) {
        let Some(message) = self.messages.get_mut(seq) else {
            return;
        };
        if message.content != Content::Stored(from) {
            return;
        }
        message.content = Content::Stored(to);
        account(&mut self.stored, &Content::Stored(from), false);
        account(&mut self.stored, &Content::Stored(to), true);
    }

    /// Makes delayed and in-flight messages whose time has come visible. Returns how many.
    pub fn promote_due(&mut self, now: u64) -> usize {
        let mut promoted = 0;
        while let Some(&(at, seq)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(message) = self.messages.get_mut(seq) {
                if message.phase == Phase::Delayed {
                    self.delayed -= 1;
                }
                message.phase = Phase::Active;
                self.ready.insert(seq);
                promoted += 1;
            }
        }
        promoted
    }

    /// Applies everything time decides: visibility, time-to-live dead letters, retention
    /// expiry, and the end of the rewind window. Returns the messages to dead-letter.
    pub fn tick(&mut self, now: u64, records: &mut Vec<Record>) -> DeadLetters {
        self.promote_due(now);
        let retention_ms = u64::from(self.attrs.retention_seconds) * MS;
        let ttl_ms = self
            .attrs
            .dead_letter
            .as_ref()
            .and_then(|p| p.max_time_to_live_seconds)
            .map(|s| u64::from(s) * MS);
        let mut dead = Vec::new();
        let mut expired = Vec::new();
        while let Some((seq, oldest)) = self.messages.first().map(|(seq, m)| (seq, m.enqueued_ms)) {
            if ttl_ms.is_some_and(|ttl| oldest + ttl <= now) {
                dead.extend(self.take(seq));
            } else if oldest + retention_ms <= now {
                self.take(seq);
                expired.push(seq);
            } else {
                break;
            }
        }
        if !expired.is_empty() {
            records.push(Record::Expired {
                queue: self.name.clone(),
                seqs: expired,
            });
        }
        let rewind_ms = u64::from(self.attrs.rewind_seconds) * MS;
        while let Some((&seq, m)) = self.deleted.first_key_value() {
            if m.enqueued_ms + rewind_ms.min(retention_ms) > now {
                break;
            }
            self.drop_deleted(seq);
        }
        dead
    }

    pub fn send(
        &mut self,
        now: u64,
        batch: Vec<NewMessage>,
        max_batch: usize,
        records: &mut Vec<Record>,
    ) -> Result<Vec<u64>, EngineError> {
        self.open()?;
        if batch.is_empty() {
            return Err(EngineError::EmptyBatch);
        }
        if batch.len() > max_batch {
            return Err(EngineError::BatchTooLarge {
                size: batch.len(),
                max: max_batch,
            });
        }
        for message in &batch {
            if message.body.len() > self.attrs.max_message_bytes as usize {
                return Err(EngineError::MessageTooLarge {
                    size: message.body.len(),
                    max: self.attrs.max_message_bytes,
                });
            }
            if let Some(delay) = message.delay_seconds
                && delay > DELAY_SECONDS.1
            {
                return Err(EngineError::InvalidMessage(format!(
                    "delaySeconds {delay} is outside 0..={}",
                    DELAY_SECONDS.1
                )));
            }
            validate_tags(&message.tags)?;
        }
        let backlog = self.backlog();
        if backlog + batch.len() as u64 > self.attrs.max_backlog {
            return Err(EngineError::QueueFull {
                queue: self.name.clone(),
                backlog,
                max: self.attrs.max_backlog,
            });
        }
        let mut seqs = Vec::with_capacity(batch.len());
        for NewMessage {
            body,
            delay_seconds,
            tags,
        } in batch
        {
            let seq = self.next_seq;
            self.next_seq += 1;
            let delay_ms = u64::from(delay_seconds.unwrap_or(self.attrs.delay_seconds)) * MS;
            records.push(Record::Enqueued {
                queue: self.name.clone(),
                seq,
                enqueued_ms: now,
                visible_at_ms: now + delay_ms,
                tags: tags.clone(),
                body: BodyRef::Bytes(body.clone()),
            });
            self.insert(Message {
                seq,
                content: Content::inline(body, tags),
                enqueued_ms: now,
                first_dequeue_ms: 0,
                dequeue_count: 0,
                visible_at_ms: now + delay_ms,
                generation: 0,
                phase: Phase::Pending,
            });
            seqs.push(seq);
        }
        Ok(seqs)
    }

    /// Makes sent messages receivable once their records are durable, with their bodies
    /// on disk when the journal stored them.
    pub fn commit(&mut self, now: u64, seqs: &[u64], locs: &[Option<BodyLoc>]) {
        for (i, seq) in seqs.iter().enumerate() {
            let Some(message) = self.messages.get_mut(*seq) else {
                continue; // purged or expired meanwhile
            };
            if message.phase != Phase::Pending {
                continue;
            }
            if let Some(Some(loc)) = locs.get(i) {
                message.content = Content::Stored(*loc);
                account(&mut self.stored, &Content::Stored(*loc), true);
            }
            let phase = if message.visible_at_ms > now {
                Phase::Delayed
            } else {
                Phase::Active
            };
            message.phase = phase;
            let visible_at = message.visible_at_ms;
            self.place(*seq, phase, visible_at);
        }
    }

    /// Forgets sent messages whose records could not be made durable.
    /// Returns the messages it took back.
    pub fn abort(&mut self, seqs: &[u64]) -> Vec<Message> {
        let mut taken = Vec::new();
        for seq in seqs {
            if self
                .messages
                .get(*seq)
                .is_some_and(|m| m.phase == Phase::Pending)
            {
                taken.extend(self.take(*seq));
            }
        }
        taken
    }

    /// Takes a dead letter moved here from another queue; the backlog bound does not
    /// apply, since refusing would lose the message.
    pub fn accept_dead_letter(
        &mut self,
        now: u64,
        message: Message,
        from: &str,
        records: &mut Vec<Record>,
    ) -> Result<u64, EngineError> {
        self.open()?;
        let seq = self.next_seq;
        self.next_seq += 1;
        records.push(Record::DeadLettered {
            from: from.to_string(),
            seq: message.seq,
            to: self.name.clone(),
            to_seq: seq,
            at_ms: now,
            stored: match message.content {
                Content::Stored(loc) => Some(loc),
                Content::Inline(_) => None,
            },
        });
        // Receivable once the move is durable, like a send (see `commit`).
        self.insert(Message {
            seq,
            enqueued_ms: now,
            first_dequeue_ms: 0,
            dequeue_count: 0,
            visible_at_ms: now,
            generation: 0,
            phase: Phase::Pending,
            ..message
        });
        Ok(seq)
    }

    /// Puts back a message whose dead-letter move could not happen.
    pub fn restore(&mut self, mut message: Message) {
        if self.closed {
            return;
        }
        message.phase = Phase::Active;
        self.insert(message);
    }

    /// Hands out up to `max` visible messages, oldest first. A message already received
    /// `maxReceiveCount` times goes to the dead-letter list instead. For such queues the
    /// new receive counts are recorded (see `Record::Received`).
    pub fn receive(
        &mut self,
        now: u64,
        max: usize,
        records: &mut Vec<Record>,
    ) -> Result<(Vec<Delivery>, DeadLetters), EngineError> {
        self.open()?;
        let max_receives = self
            .attrs
            .dead_letter
            .as_ref()
            .and_then(|p| p.max_receive_count);
        let visibility_ms = u64::from(self.attrs.visibility_timeout_seconds) * MS;
        let mut deliveries = Vec::new();
        let mut dead = Vec::new();
        while deliveries.len() < max {
            let Some(seq) = self.ready.pop_first() else {
                break;
            };
            let Some(message) = self.messages.get_mut(seq) else {
                continue;
            };
            if max_receives.is_some_and(|limit| message.dequeue_count >= limit) {
                dead.extend(self.take(seq));
                continue;
            }
            message.dequeue_count += 1;
            if message.first_dequeue_ms == 0 {
                message.first_dequeue_ms = now;
            }
            message.generation = message.generation.wrapping_add(1);
            message.visible_at_ms = now + visibility_ms;
            message.phase = Phase::InFlight;
            deliveries.push(Delivery {
                seq,
                receipt: Receipt {
                    queue_uid: self.uid,
                    seq,
                    generation: message.generation,
                },
                content: message.content.clone(),
                enqueued_ms: message.enqueued_ms,
                first_dequeue_ms: message.first_dequeue_ms,
                dequeue_count: message.dequeue_count,
                next_visible_ms: message.visible_at_ms,
            });
            self.timers.insert((now + visibility_ms, seq));
        }
        if max_receives.is_some() && !deliveries.is_empty() {
            records.push(Record::Received {
                queue: self.name.clone(),
                counts: deliveries
                    .iter()
                    .map(|d| (d.seq, d.dequeue_count))
                    .collect(),
            });
        }
        Ok((deliveries, dead))
    }

    /// Finds the in-flight message a receipt names, if the receipt is still its latest.
    fn in_flight(&self, receipt: Receipt) -> Result<&Message, EngineError> {
        self.open()?;
        if receipt.queue_uid != self.uid {
            return Err(EngineError::InvalidReceiptHandle);
        }
        match self.messages.get(receipt.seq) {
            Some(m) if m.phase == Phase::InFlight && m.generation == receipt.generation => Ok(m),
            _ => Err(EngineError::StaleReceiptHandle),
        }
    }

    pub fn delete(
        &mut self,
        receipt: Receipt,
        records: &mut Vec<Record>,
    ) -> Result<(), EngineError> {
        self.in_flight(receipt)?;
        if let Some(message) = self.take(receipt.seq) {
            if self.attrs.rewind_seconds > 0 {
                self.keep_deleted(message);
            }
            records.push(Record::Deleted {
                queue: self.name.clone(),
                seqs: vec![receipt.seq],
            });
        }
        Ok(())
    }

    /// Hides an in-flight message for `seconds` from now; 0 makes it visible at once.
    /// Returns when it becomes visible.
    pub fn change_visibility(
        &mut self,
        now: u64,
        receipt: Receipt,
        seconds: u32,
    ) -> Result<u64, EngineError> {
        if seconds > VISIBILITY_TIMEOUT_SECONDS.1 {
            return Err(EngineError::InvalidRequest(format!(
                "visibilityTimeoutSeconds {seconds} is outside 0..={}",
                VISIBILITY_TIMEOUT_SECONDS.1
            )));
        }
        self.in_flight(receipt)?;
        if let Some(mut message) = self.take(receipt.seq) {
            message.visible_at_ms = now + u64::from(seconds) * MS;
            if seconds == 0 {
                message.phase = Phase::Active;
            }
            let visible_at = message.visible_at_ms;
            self.insert(message);
            return Ok(visible_at);
        }
        Err(EngineError::StaleReceiptHandle)
    }

    /// Makes deleted messages enqueued at or after `from_ms` consumable again.
    pub fn rewind(
        &mut self,
        now: u64,
        from_ms: u64,
        records: &mut Vec<Record>,
    ) -> Result<u64, EngineError> {
        self.open()?;
        if self.attrs.rewind_seconds == 0 {
            return Err(EngineError::RewindRefused(format!(
                "queue {:?} has rewindSeconds 0; set it to enable rewind",
                self.name
            )));
        }
        let earliest = now.saturating_sub(u64::from(self.attrs.rewind_seconds) * MS);
        if from_ms < earliest || from_ms > now {
            return Err(EngineError::RewindRefused(format!(
                "start time {from_ms} is outside the rewind window {earliest}..={now} (ms since epoch)"
            )));
        }
        let rewound = self.reopen_deleted_since(now, from_ms);
        records.push(Record::Rewound {
            queue: self.name.clone(),
            from_ms,
        });
        Ok(rewound)
    }

    pub fn purge(&mut self, records: &mut Vec<Record>) -> Result<u64, EngineError> {
        self.open()?;
        let purged = self.backlog();
        self.messages.clear();
        self.ready.clear();
        self.timers.clear();
        self.delayed = 0;
        self.deleted.clear();
        self.stored.clear();
        records.push(Record::QueuePurged {
            name: self.name.clone(),
        });
        Ok(purged)
    }

    /// Replay: a message enqueued before the restart (its in-flight state is not kept,
    /// so it is visible again, or still delayed).
    pub fn replay_enqueued(&mut self, now: u64, message: ReplayedMessage) {
        self.next_seq = self.next_seq.max(message.seq + 1);
        let phase = if message.visible_at_ms > now {
            Phase::Delayed
        } else {
            Phase::Active
        };
        // A second record of the same message (compaction copied it forward) keeps what
        // replay learnt from the first.
        let previous = self.take(message.seq);
        let content = match message.body {
            BodyRef::Stored(loc) => Content::Stored(loc),
            BodyRef::Bytes(body) => Content::inline(body, message.tags),
        };
        self.insert(Message {
            seq: message.seq,
            content,
            enqueued_ms: message.enqueued_ms,
            first_dequeue_ms: previous.as_ref().map_or(0, |p| p.first_dequeue_ms),
            dequeue_count: previous.as_ref().map_or(0, |p| p.dequeue_count),
            visible_at_ms: message.visible_at_ms,
            generation: 0,
            phase,
        });
    }

    /// Replay: messages deleted (kept for a rewind when the queue allows one) or expired.
    pub fn replay_removed(&mut self, seqs: &[u64], deleted: bool) {
        for seq in seqs {
            if let Some(message) = self.take(*seq)
                && deleted
                && self.attrs.rewind_seconds > 0
            {
                self.keep_deleted(message);
            }
        }
    }

    /// Replay: the receive counts recorded for a dead-letter policy.
    pub fn replay_received(&mut self, counts: &[(u64, u32)]) {
        for (seq, count) in counts {
            if let Some(message) = self.messages.get_mut(*seq) {
                message.dequeue_count = message.dequeue_count.max(*count);
            }
        }
    }

    /// Replay: a message moved out to a dead-letter queue.
    pub fn replay_take(&mut self, seq: u64) -> Option<Message> {
        self.take(seq)
    }

    /// Replay: a message moved in from another queue's dead letters.
    pub fn replay_dead_letter(&mut self, seq: u64, at_ms: u64, content: Content) {
        self.next_seq = self.next_seq.max(seq + 1);
        self.insert(Message {
            seq,
            content,
            enqueued_ms: at_ms,
            first_dequeue_ms: 0,
            dequeue_count: 0,
            visible_at_ms: at_ms,
            generation: 0,
            phase: Phase::Active,
        });
    }

    /// Makes deleted messages enqueued at or after `from_ms` visible again, as fresh
    /// deliveries (receives before their delete do not count towards maxReceiveCount).
    /// Replay calls it directly: the window checks held when the rewind happened.
    pub fn reopen_deleted_since(&mut self, now: u64, from_ms: u64) -> u64 {
        let replay: Vec<u64> = self
            .deleted
            .iter()
            .filter(|(_, m)| m.enqueued_ms >= from_ms)
            .map(|(s, _)| *s)
            .collect();
        let count = replay.len() as u64;
        for seq in replay {
            if let Some(mut message) = self.drop_deleted(seq) {
                message.phase = Phase::Active;
                message.visible_at_ms = now;
                message.dequeue_count = 0;
                message.first_dequeue_ms = 0;
                self.insert(message);
            }
        }
        count
    }

    /// The queue's durable state, for a checkpoint. In-flight state is soft: such
    /// messages come back visible, as after any restart.
    pub fn snapshot(&self) -> QueueSnapshot {
        let entry = |seq: u64, m: &Message| {
            let (body, tags) = match &m.content {
                Content::Stored(loc) => (BodyRef::Stored(*loc), Vec::new()),
                Content::Inline(inline) => {
                    (BodyRef::Bytes(inline.body.clone()), inline.tags.clone())
                }
            };
            MessageSnapshot {
                seq,
                body,
                tags,
                enqueued_ms: m.enqueued_ms,
                // Hidden only by a receive: visible again after a restart.
                visible_at_ms: if m.phase == Phase::InFlight {
                    m.enqueued_ms
                } else {
                    m.visible_at_ms
                },
                first_dequeue_ms: m.first_dequeue_ms,
                dequeue_count: m.dequeue_count,
            }
        };
        QueueSnapshot {
            name: self.name.clone(),
            uid: self.uid,
            attrs: self.attrs.clone(),
            managed: self.managed,
            created_ms: self.created_ms,
            modified_ms: self.modified_ms,
            next_seq: self.next_seq,
            messages: self.messages.iter().map(|(seq, m)| entry(seq, m)).collect(),
            deleted: self.deleted.iter().map(|(seq, m)| entry(*seq, m)).collect(),
        }
    }

    /// Rebuilds a queue from a checkpoint.
    pub fn from_snapshot(now: u64, snapshot: QueueSnapshot) -> Self {
        let mut state = Self::new(
            snapshot.name,
            snapshot.uid,
            snapshot.attrs,
            snapshot.managed,
            snapshot.created_ms,
        );
        state.modified_ms = snapshot.modified_ms;
        state.next_seq = snapshot.next_seq;
        let message = |m: MessageSnapshot, phase: Phase| Message {
            seq: m.seq,
            content: match m.body {
                BodyRef::Stored(loc) => Content::Stored(loc),
                BodyRef::Bytes(body) => Content::inline(body, m.tags),
            },
            enqueued_ms: m.enqueued_ms,
            first_dequeue_ms: m.first_dequeue_ms,
            dequeue_count: m.dequeue_count,
            visible_at_ms: m.visible_at_ms,
            generation: 0,
            phase,
        };
        for m in snapshot.messages {
            let phase = if m.visible_at_ms > now {
                Phase::Delayed
            } else {
                Phase::Active
            };
            state.insert(message(m, phase));
        }
        for m in snapshot.deleted {
            state.keep_deleted(message(m, Phase::Active));
        }
        state
    }

    /// The record that copies a live message forward out of segment `from`, if it still
    /// lies there: compaction's way to empty a sparse segment.
    pub fn copy_record(
        &self,
        seq: u64,
        from: BodyLoc,
        body: Bytes,
        tags: Vec<String>,
    ) -> Option<Record> {
        let message = self.messages.get(seq)?;
        if message.content != Content::Stored(from) {
            return None;
        }
        let visible_at_ms = if message.phase == Phase::Delayed {
            message.visible_at_ms
        } else {
            message.enqueued_ms
        };
        Some(Record::Enqueued {
            queue: self.name.clone(),
            seq,
            enqueued_ms: message.enqueued_ms,
            visible_at_ms,
            tags,
            body: BodyRef::Bytes(body),
        })
    }

    pub fn stats(&self) -> QueueStats {
        let in_timers = self.timers.len() as u64;
        QueueStats {
            active: self.ready.len() as u64,
            inactive: in_timers - self.delayed,
            delayed: self.delayed,
            rewindable: self.deleted.len() as u64,
            oldest_message_ms: self.messages.first().map(|(_, m)| m.enqueued_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-message index entry stays small: the memory target is ≤ 128 bytes per
    /// queued message, ring slot and ready-set entry included.
    #[test]
    fn a_queued_message_slot_takes_64_bytes() {
        assert_eq!(std::mem::size_of::<Option<Message>>(), 64);
    }
}
