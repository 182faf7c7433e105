//! Model-based property test of the queue engine.
//!
//! Random sequences of operations (sends with delays, receives, deletes and visibility
//! changes by receipt handle — current, stale, from the other queue, forged — clock
//! advances, purges and rewinds) run against the real `Engine` (manual clock, in-memory
//! journal) and against a deliberately plain reference model: a `Vec` of messages per
//! queue. After every step the two must agree on every result and on the statistics and
//! counters of both the queue and its dead-letter queue.
//!
//! The rules the model encodes (from the engine's documentation and `docs/product.md`):
//! - a message is visible once `visible_at <= now`; a receive hands out the visible
//!   messages in send order (oldest first), at most `max`;
//! - a receive that meets a visible message already received `maxReceiveCount` times
//!   moves it to the dead-letter queue instead of delivering it, and goes on;
//! - a message older than `maxTimeToLiveSeconds` moves to the dead-letter queue, one
//!   older than `retentionSeconds` expires; both happen lazily, when the queue is next
//!   touched;
//! - only the latest receipt handle of an in-flight message deletes it or changes its
//!   visibility; a handle of another queue or a forged one is invalid;
//! - deleted messages stay rewindable while they are younger than the rewind window; a
//!   rewind from `t` makes those enqueued at or after `t` consumable again, as fresh
//!   deliveries (their receive count starts over).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use queuelet::engine::ids::{IdCodec, Receipt};
use queuelet::engine::{
    DeadLetterPolicy, Engine, EngineConfig, EngineError, ManualClock, MemoryJournal, NewMessage,
    Origin, QueueAttributes, QueueStats,
};

const MAIN: &str = "orders";
const DLQ: &str = "orders-dlq";
const START_MS: u64 = 1_700_000_000_000;
const VISIBILITY_S: u32 = 10;
const MAX_RECEIVES: u32 = 3;
const REWIND_S: u32 = 60;
const DLQ_RETENTION_S: u32 = 180;
/// The replica a forged-but-well-formed handle claims to come from.
const OTHER_REPLICA: u16 = 7;

// ---------------------------------------------------------------------------------------
// Operations

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Main,
    Dlq,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Main => MAIN,
            Which::Dlq => DLQ,
        }
    }
}

/// Which handle an operation uses.
#[derive(Debug, Clone)]
enum HandlePick {
    /// The k-th most recently issued handle (any queue).
    Recent(usize),
    /// Any handle issued so far.
    Any(usize),
    /// A string that is not a handle at all.
    Garbage(u8),
    /// A recent handle with one character changed.
    Tampered(usize),
    /// A well-formed handle that names another replica.
    OtherReplica,
}

/// Which queue a delete or visibility change goes to.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The queue that issued the first handle picked (the usual case).
    Own,
    /// A fixed queue, whichever issued the handle.
    Queue(Which),
}

#[derive(Debug, Clone)]
enum RewindFrom {
    /// This many milliseconds before now.
    Back(u64),
    /// In the future: always refused.
    Ahead(u64),
    /// Exactly the enqueue time of the nth rewindable message (now if there is none).
    Deleted(usize),
}

#[derive(Debug, Clone)]
enum Op {
    Send {
        to: Which,
        messages: Vec<(Option<u32>, String)>,
    },
    Receive {
        from: Which,
        max: usize,
    },
    Delete {
        from: Target,
        handles: Vec<HandlePick>,
    },
    ChangeVisibility {
        on: Target,
        handle: HandlePick,
        seconds: u32,
    },
    Advance {
        ms: u64,
        yield_after: bool,
    },
    /// Moves the clock exactly onto (or 1 ms short of) the `nth` next moment at which the
    /// model says something changes: a message becomes visible, dead-letters, expires, or
    /// leaves the rewind window. Hits the boundaries that random advances rarely do.
    AdvanceToEvent {
        nth: usize,
        short: bool,
    },
    Stats {
        of: Which,
    },
    Purge {
        of: Which,
    },
    Rewind {
        of: Which,
        from: RewindFrom,
    },
}

/// The two queue configurations: maxReceiveCount only, or with a time to live too
/// (which needs retention above 300 s).
#[derive(Debug, Clone, Copy)]
struct Setup {
    ttl: bool,
}

impl Setup {
    fn main_attrs(self) -> QueueAttributes {
        QueueAttributes {
            visibility_timeout_seconds: VISIBILITY_S,
            retention_seconds: if self.ttl { 400 } else { 120 },
            rewind_seconds: REWIND_S,
            dead_letter: Some(DeadLetterPolicy {
                queue: DLQ.to_string(),
                max_receive_count: Some(MAX_RECEIVES),
                max_time_to_live_seconds: self.ttl.then_some(300),
            }),
            ..QueueAttributes::default()
        }
    }

    fn dlq_attrs(self) -> QueueAttributes {
        QueueAttributes {
            visibility_timeout_seconds: VISIBILITY_S,
            retention_seconds: DLQ_RETENTION_S,
            rewind_seconds: 0,
            ..QueueAttributes::default()
        }
    }
}

fn which() -> impl Strategy<Value = Which> {
    prop_oneof![5 => Just(Which::Main), 1 => Just(Which::Dlq)]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![4 => Just(Target::Own), 1 => which().prop_map(Target::Queue)]
}

fn handle_pick() -> impl Strategy<Value = HandlePick> {
    prop_oneof![
        10 => (0usize..4).prop_map(HandlePick::Recent),
        3 => any::<usize>().prop_map(HandlePick::Any),
        1 => (0u8..3).prop_map(HandlePick::Garbage),
        1 => (0usize..4).prop_map(HandlePick::Tampered),
        1 => Just(HandlePick::OtherReplica),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let delay = prop_oneof![1 => Just(None), 4 => (0u32..=3).prop_map(Some)];
    prop_oneof![
        10 => (which(), prop::collection::vec((delay, "[a-z]{0,6}"), 1..=4))
            .prop_map(|(to, messages)| Op::Send { to, messages }),
        10 => (which(), 1usize..=4).prop_map(|(from, max)| Op::Receive { from, max }),
        8 => (target(), prop::collection::vec(handle_pick(), 1..=3))
            .prop_map(|(from, handles)| Op::Delete { from, handles }),
        4 => (target(), handle_pick(), prop_oneof![12 => 0u32..=5, 1 => Just(43_201u32)])
            .prop_map(|(on, handle, seconds)| Op::ChangeVisibility { on, handle, seconds }),
        7 => (
            prop_oneof![
                8 => 0u64..=40_000,
                6 => (0u64..=40).prop_map(|s| s * 1_000),
                1 => 60_000u64..=300_000,
            ],
            any::<bool>(),
        )
            .prop_map(|(ms, yield_after)| Op::Advance { ms, yield_after }),
        3 => (0usize..3, any::<bool>()).prop_map(|(nth, short)| Op::AdvanceToEvent { nth, short }),
        2 => which().prop_map(|of| Op::Stats { of }),
        1 => which().prop_map(|of| Op::Purge { of }),
        3 => (
            prop_oneof![5 => Just(Which::Main), 1 => Just(Which::Dlq)],
            prop_oneof![
                6 => (0u64..=80_000).prop_map(RewindFrom::Back),
                // Exactly at the edges of the rewind window, and just past the far one.
                1 => prop_oneof![
                    Just(0),
                    Just(u64::from(REWIND_S) * 1_000),
                    Just(u64::from(REWIND_S) * 1_000 + 1),
                ]
                .prop_map(RewindFrom::Back),
                1 => (1u64..=5_000).prop_map(RewindFrom::Ahead),
                3 => any::<usize>().prop_map(RewindFrom::Deleted),
            ],
        )
            .prop_map(|(of, from)| Op::Rewind { of, from }),
    ]
}

// ---------------------------------------------------------------------------------------
// The reference model

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Delayed,
    InFlight,
    Visible,
}

#[derive(Debug, Clone)]
struct MMsg {
    /// Send order within its queue.
    seq: u64,
    /// The engine's message id, once known.
    id: Option<String>,
    body: Bytes,
    enqueued_ms: u64,
    visible_at_ms: u64,
    phase: Phase,
    dequeue_count: u32,
    first_dequeue_ms: Option<u64>,
    /// The latest receipt handle handed out for it.
    handle: Option<String>,
}

#[derive(Debug)]
struct MQueue {
    visibility_ms: u64,
    retention_ms: u64,
    rewind_ms: u64,
    max_receives: Option<u32>,
    ttl_ms: Option<u64>,
    next_seq: u64,
    /// Live messages, in send order.
    messages: Vec<MMsg>,
    /// Deleted messages kept for a rewind, in send order.
    deleted: Vec<MMsg>,
}

impl MQueue {
    fn new(attrs: &QueueAttributes) -> Self {
        let policy = attrs.dead_letter.as_ref();
        Self {
            visibility_ms: u64::from(attrs.visibility_timeout_seconds) * 1_000,
            retention_ms: u64::from(attrs.retention_seconds) * 1_000,
            rewind_ms: u64::from(attrs.rewind_seconds) * 1_000,
            max_receives: policy.and_then(|p| p.max_receive_count),
            ttl_ms: policy
                .and_then(|p| p.max_time_to_live_seconds)
                .map(|s| u64::from(s) * 1_000),
            next_seq: 1,
            messages: Vec::new(),
            deleted: Vec::new(),
        }
    }

    fn push(&mut self, mut message: MMsg) {
        message.seq = self.next_seq;
        self.next_seq += 1;
        self.messages.push(message);
    }

    /// What time has decided by `now`: returns the messages to dead-letter and how many expired.
    fn tick(&mut self, now: u64) -> (Vec<MMsg>, u64) {
        for m in &mut self.messages {
            if m.phase != Phase::Visible && m.visible_at_ms <= now {
                m.phase = Phase::Visible;
            }
        }
        let mut dead = Vec::new();
        let mut expired = 0;
        let (ttl, retention) = (self.ttl_ms, self.retention_ms);
        self.messages.retain(|m| {
            if ttl.is_some_and(|ttl| m.enqueued_ms + ttl <= now) {
                dead.push(m.clone());
                false
            } else if m.enqueued_ms + retention <= now {
                expired += 1;
                false
            } else {
                true
            }
        });
        let keep = self.rewind_ms.min(self.retention_ms);
        self.deleted.retain(|m| m.enqueued_ms + keep > now);
        (dead, expired)
    }

    fn stats(&self) -> QueueStats {
        let count = |phase| self.messages.iter().filter(|m| m.phase == phase).count() as u64;
        QueueStats {
            active: count(Phase::Visible),
            inactive: count(Phase::InFlight),
            delayed: count(Phase::Delayed),
            rewindable: self.deleted.len() as u64,
            oldest_message_ms: self.messages.iter().map(|m| m.enqueued_ms).min(),
        }
    }

    /// The moments after `now` at which time changes something in this queue.
    fn events(&self, now: u64, into: &mut Vec<u64>) {
        for m in &self.messages {
            if m.phase != Phase::Visible {
                into.push(m.visible_at_ms);
            }
            into.push(m.enqueued_ms + self.retention_ms);
            into.extend(self.ttl_ms.map(|ttl| m.enqueued_ms + ttl));
        }
        let keep = self.rewind_ms.min(self.retention_ms);
        into.extend(self.deleted.iter().map(|m| m.enqueued_ms + keep));
        into.retain(|&at| at > now);
    }

    /// The in-flight message whose latest handle is `handle`.
    fn in_flight(&mut self, handle: &str) -> Option<&mut MMsg> {
        self.messages
            .iter_mut()
            .find(|m| m.phase == Phase::InFlight && m.handle.as_deref() == Some(handle))
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    sent: u64,
    received: u64,
    deleted: u64,
    dead_lettered: u64,
    expired: u64,
}

/// What a handle is, as far as the model knows.
#[derive(Debug, Clone)]
enum HandleKind {
    Issued(Which),
    Invalid,
    OtherReplica,
}

/// The outcome of one delete or visibility change, compared by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Stale,
    Invalid,
    WrongReplica(u16),
    InvalidRequest,
}

fn outcome<T>(result: &Result<T, EngineError>) -> Result<Outcome, TestCaseError> {
    match result {
        Ok(_) => Ok(Outcome::Ok),
        Err(EngineError::StaleReceiptHandle) => Ok(Outcome::Stale),
        Err(EngineError::InvalidReceiptHandle) => Ok(Outcome::Invalid),
        Err(EngineError::WrongReplica(r)) => Ok(Outcome::WrongReplica(*r)),
        Err(EngineError::InvalidRequest(_)) => Ok(Outcome::InvalidRequest),
        Err(other) => Err(TestCaseError::fail(format!("unexpected error {other:?}"))),
    }
}

struct Model {
    now: u64,
    main: MQueue,
    dlq: MQueue,
    counts: Counts,
    /// Every receipt handle the engine handed out, oldest first, with its queue.
    issued: Vec<(Which, String)>,
    seen_handles: HashSet<String>,
    bodies_sent: u64,
}

impl Model {
    fn queue(&mut self, which: Which) -> &mut MQueue {
        match which {
            Which::Main => &mut self.main,
            Which::Dlq => &mut self.dlq,
        }
    }

    /// Moves dead letters into the dead-letter queue: new position, enqueued now,
    /// visible, never received.
    fn forward(&mut self, dead: Vec<MMsg>) {
        let now = self.now;
        self.counts.dead_lettered += dead.len() as u64;
        for m in dead {
            self.dlq.push(MMsg {
                seq: 0,
                id: None,
                body: m.body,
                enqueued_ms: now,
                visible_at_ms: now,
                phase: Phase::Visible,
                dequeue_count: 0,
                first_dequeue_ms: None,
                handle: None,
            });
        }
    }

    /// Ticks a queue as every engine operation on it does; returns its dead letters
    /// (to forward, or to drop on a purge).
    fn tick(&mut self, which: Which) -> Vec<MMsg> {
        let now = self.now;
        let (dead, expired) = self.queue(which).tick(now);
        self.counts.expired += expired;
        assert!(
            which == Which::Main || dead.is_empty(),
            "the dead-letter queue has no policy"
        );
        dead
    }

    fn tick_and_forward(&mut self, which: Which) {
        let dead = self.tick(which);
        self.forward(dead);
    }

    /// The queue an operation with these handles goes to.
    fn target(target: Target, picked: &[(String, HandleKind)]) -> Which {
        match (target, picked.first()) {
            (Target::Queue(which), _) => which,
            (Target::Own, Some((_, HandleKind::Issued(which)))) => *which,
            (Target::Own, _) => Which::Main,
        }
    }

    fn resolve(&self, pick: &HandlePick) -> (String, HandleKind) {
        let recent = |k: usize| {
            (!self.issued.is_empty())
                .then(|| &self.issued[self.issued.len() - 1 - k % self.issued.len()])
        };
        match pick {
            HandlePick::Recent(k) => match recent(*k) {
                Some((w, h)) => (h.clone(), HandleKind::Issued(*w)),
                None => ("no-handle-yet".into(), HandleKind::Invalid),
            },
            HandlePick::Any(i) if !self.issued.is_empty() => {
                let (w, h) = &self.issued[i % self.issued.len()];
                (h.clone(), HandleKind::Issued(*w))
            }
            HandlePick::Any(_) => (String::new(), HandleKind::Invalid),
            HandlePick::Garbage(0) => ("not-a-handle".into(), HandleKind::Invalid),
            HandlePick::Garbage(1) => (String::new(), HandleKind::Invalid),
            HandlePick::Garbage(_) => ("!!definitely/not+base64url!!".into(), HandleKind::Invalid),
            HandlePick::Tampered(k) => match recent(*k) {
                Some((_, h)) => {
                    let mut chars: Vec<char> = h.chars().collect();
                    chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
                    (chars.into_iter().collect(), HandleKind::Invalid)
                }
                None => ("AAAA".into(), HandleKind::Invalid),
            },
            HandlePick::OtherReplica => {
                let codec = IdCodec::new(OTHER_REPLICA, [1; 32], [1; 32]);
                let handle = codec.receipt_handle(Receipt {
                    queue_uid: 1,
                    seq: 1,
                    generation: 1,
                });
                (handle, HandleKind::OtherReplica)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The test

macro_rules! check_eq {
    ($ctx:expr, $left:expr, $right:expr, $what:expr) => {
        prop_assert_eq!($left, $right, "{}: {}", $ctx, $what)
    };
}

async fn run_case(setup: Setup, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = Arc::new(ManualClock::new(START_MS));
    let engine = Engine::new(EngineConfig::new(0), clock.clone(), Arc::new(MemoryJournal));
    let created = engine
        .create_queue(DLQ, setup.dlq_attrs(), Origin::Api)
        .await;
    prop_assert!(created.is_ok(), "create {DLQ}: {created:?}");
    let created = engine
        .create_queue(MAIN, setup.main_attrs(), Origin::Api)
        .await;
    prop_assert!(created.is_ok(), "create {MAIN}: {created:?}");

    let mut model = Model {
        now: START_MS,
        main: MQueue::new(&setup.main_attrs()),
        dlq: MQueue::new(&setup.dlq_attrs()),
        counts: Counts::default(),
        issued: Vec::new(),
        seen_handles: HashSet::new(),
        bodies_sent: 0,
    };

    for (step, op) in ops.iter().enumerate() {
        let ctx = format!("step {step} at +{} ms: {op:?}", model.now - START_MS);
        prop_assert_eq!(engine.now_ms(), model.now, "{}: clock", &ctx);
        match op {
            Op::Send { to, messages } => {
                let batch: Vec<NewMessage> = messages
                    .iter()
                    .map(|(delay, text)| {
                        model.bodies_sent += 1;
                        NewMessage {
                            body: Bytes::from(format!("{}:{text}", model.bodies_sent)),
                            delay_seconds: *delay,
                            tags: Vec::new(),
                        }
                    })
                    .collect();
                let result = engine.send(to.name(), batch.clone()).await;
                let ids = match result {
                    Ok(ids) => ids,
                    Err(e) => {
                        return Err(TestCaseError::fail(format!("{ctx}: send failed: {e:?}")));
                    }
                };
                check_eq!(&ctx, ids.len(), batch.len(), "ids per message");
                model.tick_and_forward(*to);
                let now = model.now;
                let queue = model.queue(*to);
                for (message, id) in batch.into_iter().zip(ids) {
                    let delay_ms = u64::from(message.delay_seconds.unwrap_or(0)) * 1_000;
                    queue.push(MMsg {
                        seq: 0,
                        id: Some(id),
                        body: message.body,
                        enqueued_ms: now,
                        visible_at_ms: now + delay_ms,
                        phase: if delay_ms == 0 {
                            Phase::Visible
                        } else {
                            Phase::Delayed
                        },
                        dequeue_count: 0,
                        first_dequeue_ms: None,
                        handle: None,
                    });
                }
                model.counts.sent += messages.len() as u64;
            }

            Op::Receive { from, max } => {
                let got = engine.receive(from.name(), *max, Some(0)).await;
                let got = match got {
                    Ok(got) => got,
                    Err(e) => {
                        return Err(TestCaseError::fail(format!("{ctx}: receive failed: {e:?}")));
                    }
                };
                let mut dead = model.tick(*from);
                let now = model.now;
                let queue = model.queue(*from);
                let (visibility_ms, max_receives) = (queue.visibility_ms, queue.max_receives);
                let mut delivered = Vec::new();
                let mut i = 0;
                while delivered.len() < *max && i < queue.messages.len() {
                    if queue.messages[i].phase != Phase::Visible {
                        i += 1;
                        continue;
                    }
                    if max_receives.is_some_and(|limit| queue.messages[i].dequeue_count >= limit) {
                        dead.push(queue.messages.remove(i));
                        continue;
                    }
                    let m = &mut queue.messages[i];
                    m.dequeue_count += 1;
                    m.first_dequeue_ms.get_or_insert(now);
                    m.visible_at_ms = now + visibility_ms;
                    m.phase = Phase::InFlight;
                    delivered.push(i);
                    i += 1;
                }
                let bodies = |v: &[Bytes]| {
                    v.iter()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .collect::<Vec<_>>()
                };
                let expected: Vec<Bytes> = delivered
                    .iter()
                    .map(|&i| queue.messages[i].body.clone())
                    .collect();
                let actual: Vec<Bytes> = got.iter().map(|m| m.body.clone()).collect();
                check_eq!(&ctx, bodies(&actual), bodies(&expected), "received bodies");
                let mut new_handles = Vec::new();
                for (&i, received) in delivered.iter().zip(&got) {
                    let m = &mut queue.messages[i];
                    check_eq!(
                        &ctx,
                        received.dequeue_count,
                        m.dequeue_count,
                        "dequeue count"
                    );
                    check_eq!(&ctx, received.enqueued_ms, m.enqueued_ms, "enqueue time");
                    check_eq!(
                        &ctx,
                        Some(received.first_dequeue_ms),
                        m.first_dequeue_ms,
                        "first dequeue time"
                    );
                    check_eq!(
                        &ctx,
                        received.next_visible_ms,
                        m.visible_at_ms,
                        "next visible time"
                    );
                    match &m.id {
                        Some(id) => check_eq!(&ctx, &received.id, id, "message id"),
                        None => m.id = Some(received.id.clone()),
                    }
                    m.handle = Some(received.receipt_handle.clone());
                    new_handles.push(received.receipt_handle.clone());
                }
                model.counts.received += got.len() as u64;
                for handle in new_handles {
                    prop_assert!(
                        model.seen_handles.insert(handle.clone()),
                        "{}: receipt handle handed out twice",
                        &ctx
                    );
                    model.issued.push((*from, handle));
                }
                model.forward(dead);
            }

            Op::Delete { from, handles } => {
                let picked: Vec<(String, HandleKind)> =
                    handles.iter().map(|p| model.resolve(p)).collect();
                let from = &Model::target(*from, &picked);
                let texts: Vec<String> = picked.iter().map(|(h, _)| h.clone()).collect();
                let results = match engine.delete_messages(from.name(), &texts).await {
                    Ok(results) => results,
                    Err(e) => {
                        return Err(TestCaseError::fail(format!("{ctx}: delete failed: {e:?}")));
                    }
                };
                check_eq!(&ctx, results.len(), picked.len(), "results per handle");
                model.tick_and_forward(*from);
                for (n, ((handle, kind), result)) in picked.iter().zip(&results).enumerate() {
                    let expected = match kind {
                        HandleKind::Invalid => Outcome::Invalid,
                        HandleKind::OtherReplica => Outcome::WrongReplica(OTHER_REPLICA),
                        HandleKind::Issued(w) if w != from => Outcome::Invalid,
                        HandleKind::Issued(_) => {
                            let queue = model.queue(*from);
                            match queue.messages.iter().position(|m| {
                                m.phase == Phase::InFlight && m.handle.as_deref() == Some(handle)
                            }) {
                                Some(at) => {
                                    let m = queue.messages.remove(at);
                                    if queue.rewind_ms > 0 {
                                        let at = queue.deleted.partition_point(|d| d.seq < m.seq);
                                        queue.deleted.insert(at, m);
                                    }
                                    model.counts.deleted += 1;
                                    Outcome::Ok
                                }
                                None => Outcome::Stale,
                            }
                        }
                    };
                    check_eq!(
                        &ctx,
                        outcome(result)?,
                        expected,
                        format!("delete result #{n}")
                    );
                }
            }

            Op::ChangeVisibility {
                on,
                handle,
                seconds,
            } => {
                let (text, kind) = model.resolve(handle);
                let on = &Model::target(*on, &[(text.clone(), kind.clone())]);
                let result = engine.change_visibility(on.name(), &text, *seconds).await;
                let expected = match kind {
                    // Refused while parsing, before the queue is touched.
                    HandleKind::Invalid => Err(Outcome::Invalid),
                    HandleKind::OtherReplica => Err(Outcome::WrongReplica(OTHER_REPLICA)),
                    HandleKind::Issued(w) => {
                        model.tick_and_forward(*on);
                        let now = model.now;
                        let queue = model.queue(*on);
                        if *seconds > 43_200 {
                            Err(Outcome::InvalidRequest)
                        } else if w != *on {
                            Err(Outcome::Invalid)
                        } else {
                            match queue.in_flight(&text) {
                                Some(m) => {
                                    m.visible_at_ms = now + u64::from(*seconds) * 1_000;
                                    if *seconds == 0 {
                                        m.phase = Phase::Visible;
                                    }
                                    Ok(m.visible_at_ms)
                                }
                                None => Err(Outcome::Stale),
                            }
                        }
                    }
                };
                match (&result, expected) {
                    (Ok(at), Ok(want)) => check_eq!(&ctx, *at, want, "visible again at"),
                    (_, Err(want)) => check_eq!(&ctx, outcome(&result)?, want, "visibility result"),
                    (Err(e), Ok(_)) => {
                        return Err(TestCaseError::fail(format!(
                            "{ctx}: change_visibility failed: {e:?}, model says ok"
                        )));
                    }
                }
            }

            Op::Advance { ms, yield_after } => {
                clock.advance(Duration::from_millis(*ms));
                model.now += ms;
                if *yield_after {
                    // Lets the timer task run; what it promotes must change nothing observable.
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                }
            }

            Op::AdvanceToEvent { nth, short } => {
                let mut events = Vec::new();
                model.main.events(model.now, &mut events);
                model.dlq.events(model.now, &mut events);
                events.sort_unstable();
                events.dedup();
                if !events.is_empty() {
                    let at = events[nth % events.len()] - u64::from(*short);
                    let by = at.saturating_sub(model.now);
                    clock.advance(Duration::from_millis(by));
                    model.now += by;
                }
            }

            Op::Stats { of } => {
                // Checked after every step anyway; this one checks the attributes too.
                let info = engine.get_queue(of.name()).await;
                let info = match info {
                    Ok(info) => info,
                    Err(e) => return Err(TestCaseError::fail(format!("{ctx}: get_queue: {e:?}"))),
                };
                let attrs = match of {
                    Which::Main => setup.main_attrs(),
                    Which::Dlq => setup.dlq_attrs(),
                };
                check_eq!(&ctx, &info.attrs, &attrs, "attributes");
                model.tick_and_forward(*of);
                check_eq!(&ctx, info.stats, model.queue(*of).stats(), "stats");
            }

            Op::Purge { of } => {
                let purged = engine.purge_queue(of.name()).await;
                // Purging drops what time had decided to dead-letter, too.
                let _dropped = model.tick(*of);
                let queue = model.queue(*of);
                let expected = queue.messages.len() as u64;
                queue.messages.clear();
                queue.deleted.clear();
                check_eq!(&ctx, purged, Ok(expected), "purged");
            }

            Op::Rewind { of, from } => {
                let from_ms = match from {
                    RewindFrom::Back(ms) => model.now.saturating_sub(*ms),
                    RewindFrom::Ahead(ms) => model.now + ms,
                    RewindFrom::Deleted(nth) => {
                        let deleted = &model.queue(*of).deleted;
                        match deleted.len() {
                            0 => model.now,
                            len => deleted[nth % len].enqueued_ms,
                        }
                    }
                };
                let result = engine.rewind_queue(of.name(), from_ms).await;
                model.tick_and_forward(*of);
                let now = model.now;
                let queue = model.queue(*of);
                let earliest = now.saturating_sub(queue.rewind_ms);
                if queue.rewind_ms == 0 || from_ms < earliest || from_ms > now {
                    prop_assert!(
                        matches!(result, Err(EngineError::RewindRefused(_))),
                        "{}: rewind should be refused, got {:?}",
                        &ctx,
                        result
                    );
                } else {
                    let (replay, keep): (Vec<MMsg>, Vec<MMsg>) = std::mem::take(&mut queue.deleted)
                        .into_iter()
                        .partition(|m| m.enqueued_ms >= from_ms);
                    queue.deleted = keep;
                    let count = replay.len() as u64;
                    for mut m in replay {
                        m.phase = Phase::Visible;
                        m.visible_at_ms = now;
                        m.dequeue_count = 0;
                        m.first_dequeue_ms = None;
                        queue.messages.push(m);
                    }
                    queue.messages.sort_by_key(|m| m.seq);
                    check_eq!(&ctx, result, Ok(count), "rewound");
                }
            }
        }

        // After every step: both queues' statistics and the engine's counters.
        for which in [Which::Main, Which::Dlq] {
            let info = engine.get_queue(which.name()).await;
            let stats = match info {
                Ok(info) => info.stats,
                Err(e) => return Err(TestCaseError::fail(format!("{ctx}: get_queue: {e:?}"))),
            };
            model.tick_and_forward(which);
            check_eq!(
                &ctx,
                stats,
                model.queue(which).stats(),
                format!("stats of {}", which.name())
            );
        }
        let c = engine.counters();
        let counts = Counts {
            sent: c.sent.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            deleted: c.deleted.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
        };
        check_eq!(&ctx, counts, model.counts, "counters");
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, TestCaseError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TestCaseError::fail(format!("runtime: {e}")))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_agrees_with_model(
        ttl in any::<bool>(),
        ops in prop::collection::vec(op(), 1..=60),
    ) {
        runtime()?.block_on(run_case(Setup { ttl }, ops))?;
    }
}

// ---------------------------------------------------------------------------------------
// A few fixed scenarios that spell out the rules the model relies on.

async fn scenario_engine() -> Result<(Arc<ManualClock>, Engine), EngineError> {
    let clock = Arc::new(ManualClock::new(START_MS));
    let engine = Engine::new(EngineConfig::new(0), clock.clone(), Arc::new(MemoryJournal));
    let setup = Setup { ttl: false };
    engine
        .create_queue(DLQ, setup.dlq_attrs(), Origin::Api)
        .await?;
    engine
        .create_queue(MAIN, setup.main_attrs(), Origin::Api)
        .await?;
    Ok((clock, engine))
}

fn message(body: &str) -> NewMessage {
    NewMessage {
        body: Bytes::from(body.to_string()),
        ..NewMessage::default()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn message_moves_to_dead_letter_queue_on_the_receive_after_the_last_allowed()
-> Result<(), EngineError> {
    let (clock, engine) = scenario_engine().await?;
    engine.send(MAIN, vec![message("poison")]).await?;
    for attempt in 1..=MAX_RECEIVES {
        let got = engine.receive(MAIN, 1, Some(0)).await?;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].dequeue_count, attempt);
        clock.advance(Duration::from_secs(u64::from(VISIBILITY_S)));
    }
    // The fourth attempt moves it instead of delivering it.
    assert!(engine.receive(MAIN, 1, Some(0)).await?.is_empty());
    assert_eq!(engine.get_queue(MAIN).await?.stats, QueueStats::default());
    let dead = engine.receive(DLQ, 1, Some(0)).await?;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, Bytes::from("poison"));
    assert_eq!(dead[0].dequeue_count, 1);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn rewound_message_is_delivered_again_not_dead_lettered() -> Result<(), EngineError> {
    let (clock, engine) = scenario_engine().await?;
    let sent_at = engine.now_ms();
    engine.send(MAIN, vec![message("job")]).await?;
    // Processed successfully only on the last allowed attempt.
    let mut last = Vec::new();
    for _ in 0..MAX_RECEIVES {
        clock.advance(Duration::from_secs(u64::from(VISIBILITY_S)));
        last = engine.receive(MAIN, 1, Some(0)).await?;
        assert_eq!(last.len(), 1);
    }
    let handles: Vec<String> = last.iter().map(|m| m.receipt_handle.clone()).collect();
    assert_eq!(engine.delete_messages(MAIN, &handles).await?, vec![Ok(())]);
    assert_eq!(engine.get_queue(MAIN).await?.stats.rewindable, 1);

    assert_eq!(engine.rewind_queue(MAIN, sent_at).await?, 1);
    let again = engine.receive(MAIN, 1, Some(0)).await?;
    assert_eq!(again.len(), 1, "a rewound message is consumable again");
    assert_eq!(again[0].body, Bytes::from("job"));
    assert_eq!(again[0].dequeue_count, 1);
    assert_eq!(again[0].enqueued_ms, sent_at);
    assert_eq!(engine.get_queue(DLQ).await?.stats, QueueStats::default());
    Ok(())
}
