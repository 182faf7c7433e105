//! Crash tests against the real binary: SIGKILL at random instants under concurrent
//! traffic (a Jepsen-style check that every acknowledged send and delete survives),
//! graceful and abrupt restarts that must keep queues, attributes and messages, receive
//! counts that must carry a poison message to its dead-letter queue across crashes, and
//! the `interval` durability mode under a process kill.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use queuelet::api::model::{
    BodyEncoding, ListQueuesQuery, QueueStatsView, QueueView, ReceiveRequest, ReceivedMessage,
    SendMessage,
};
use queuelet::client::{Client, ClientError};
use queuelet::engine::{DeadLetterPolicy, QueueAttributes, QueueAttributesPatch};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use support::Server;
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Starts the server on an existing data directory without blocking the runtime.
async fn start(dir: &Path, args: &[&str]) -> Server {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start_in(&dir, &args)
    })
    .await
    .expect("start task")
}

/// SIGKILLs the server and waits until it is gone.
async fn kill9(server: Server) -> ExitStatus {
    let status = tokio::task::spawn_blocking(move || server.kill9())
        .await
        .expect("kill task");
    assert!(!status.success(), "a SIGKILLed server exits unsuccessfully");
    status
}

/// SIGTERMs the server and waits for its clean exit.
async fn terminate(server: Server) {
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .expect("terminate task");
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
}

fn receive_request(max: usize, wait_seconds: u32, encoding: BodyEncoding) -> ReceiveRequest {
    ReceiveRequest {
        max: Some(max),
        wait_seconds: Some(wait_seconds),
        encoding,
    }
}

/// The body's bytes, whichever encoding the server chose; `None` if not valid base64.
fn body_of(message: &ReceivedMessage) -> Option<Vec<u8>> {
    match message.encoding {
        BodyEncoding::Text => Some(message.body.clone().into_bytes()),
        BodyEncoding::Base64 => STANDARD.decode(message.body.as_bytes()).ok(),
    }
}

fn binary_message(bytes: &[u8]) -> SendMessage {
    SendMessage {
        body: STANDARD.encode(bytes),
        encoding: BodyEncoding::Base64,
        delay_seconds: None,
        tags: Vec::new(),
    }
}

/// Receives every visible message (wait 0, 16 at a time) until none is left.
async fn drain(client: &Client, queue: &str, encoding: BodyEncoding) -> Vec<ReceivedMessage> {
    let mut all = Vec::new();
    loop {
        let batch = client
            .receive(queue, &receive_request(16, 0, encoding))
            .await
            .unwrap_or_else(|e| panic!("draining {queue}: {e}"));
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

/// Makes received messages visible again at once (changeVisibility 0), 16 at a time.
async fn release_all(client: &Client, queue: &str, handles: Vec<String>) {
    let mut tasks = JoinSet::new();
    for handle in handles {
        while tasks.len() >= 16 {
            tasks.join_next().await.expect("a task").expect("release");
        }
        let client = client.clone();
        let queue = queue.to_string();
        tasks.spawn(async move {
            client
                .change_visibility(&queue, &handle, 0)
                .await
                .unwrap_or_else(|e| panic!("releasing a message of {queue}: {e}"));
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("release");
    }
}

async fn queue_views(client: &Client) -> Vec<QueueView> {
    client
        .list_queues(&ListQueuesQuery {
            limit: Some(1000),
            ..ListQueuesQuery::default()
        })
        .await
        .expect("list queues")
        .queues
}

/// The views without their live counts, which a restart legitimately changes.
fn without_stats(views: &[QueueView]) -> Vec<QueueView> {
    views
        .iter()
        .cloned()
        .map(|mut view| {
            view.stats = QueueStatsView {
                active: 0,
                inactive: 0,
                delayed: 0,
                rewindable: 0,
                oldest_message_time_ms: None,
            };
            view
        })
        .collect()
}

fn view<'a>(views: &'a [QueueView], name: &str) -> &'a QueueView {
    views
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("queue {name} missing from {views:?}"))
}

// ---------------------------------------------------------------------------------------
// 1. Jepsen-style SIGKILL torture
// ---------------------------------------------------------------------------------------

const TORTURE_QUEUE: &str = "torture";
const ROUNDS: usize = 24;
const SENDERS: usize = 8;
const CONSUMERS: usize = 4;
/// How long a traffic request may wait for an answer (the longest receive polls 1 s). A
/// request that outlives it is as unanswered as one the kill cut, so whatever keeps a
/// request open after the server is gone cannot hold up a round.
const TRAFFIC_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_SEED: u64 = 0x5EED_0C0F_FEE0_2024;
const MAX_BODY: usize = 65_536;
/// Every body starts with `K<10 digits>|`, naming the send attempt that produced it.
const KEY_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendState {
    /// Sent without an answer yet; once the server is killed, indeterminate.
    Unanswered,
    Acked,
    /// The server answered with a 4xx: it must never appear.
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeleteState {
    NotAttempted,
    /// Asked for without a success answer: indeterminate until a verification settles it.
    Unanswered,
    Acked,
    /// An unanswered delete that a verification found to have taken effect.
    TookEffect,
}

struct Attempt {
    body: Vec<u8>,
    send: SendState,
    id: Option<String>,
    /// Known to be in the log: acknowledged, or seen by some receive.
    durable: bool,
    /// Not durable and absent at a verification: the send never took effect.
    never: bool,
    delete: DeleteState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Anomaly {
    Lost,
    Resurrected,
    Corrupted,
    Unexpected,
}

#[derive(Debug, Default)]
struct Tally {
    acked_sends: u64,
    acked_batches: u64,
    acked_deletes: u64,
    refused_sends: u64,
    refused_deletes: u64,
    indeterminate_deletes_took_effect: u64,
    indeterminate_deletes_did_not: u64,
    /// Unanswered batches of which only some messages took effect.
    partial_batches: u64,
    lost: u64,
    resurrected: u64,
    corrupted: u64,
    unexpected: u64,
}

/// What the clients know: every send attempt (indexed by the key in its body), the
/// ids the server gave, and every acknowledged or unanswered delete.
#[derive(Default)]
struct Model {
    attempts: Vec<Attempt>,
    /// The keys of each `send_batch` call.
    batches: Vec<Vec<usize>>,
    /// Batches settled by a verification so far.
    batches_judged: usize,
    by_id: HashMap<String, usize>,
    /// Ids handed to consumers since the server started: none may come twice.
    delivered: HashSet<String>,
    tally: Tally,
    problems: Vec<String>,
    /// Anomalies already counted for a send, so each is counted once however often a
    /// verification sees it again.
    reported: HashSet<(Anomaly, usize)>,
}

fn parse_key(body: &[u8]) -> Option<usize> {
    let prefix = body.get(..KEY_LEN)?;
    if prefix[0] != b'K' || prefix[KEY_LEN - 1] != b'|' {
        return None;
    }
    std::str::from_utf8(&prefix[1..KEY_LEN - 1])
        .ok()?
        .parse()
        .ok()
}

const TEXT_PIECES: &[&str] = &[
    "a", "b", "q", "z", "0", "7", " ", "-", "é", "ß", "日本", "🦀", "\"", "\\", "\n", "\t", "{}",
    "<&>", "\u{0}", "\u{7f}",
];

impl Model {
    fn anomaly(&mut self, kind: Anomaly, detail: String) {
        match kind {
            Anomaly::Lost => self.tally.lost += 1,
            Anomaly::Resurrected => self.tally.resurrected += 1,
            Anomaly::Corrupted => self.tally.corrupted += 1,
            Anomaly::Unexpected => self.tally.unexpected += 1,
        }
        if self.problems.len() < 50 {
            self.problems.push(format!("{kind:?}: {detail}"));
        }
    }

    /// An anomaly of the message of send #`key`, counted once per kind.
    fn anomaly_about(&mut self, kind: Anomaly, key: usize, detail: String) {
        if self.reported.insert((kind, key)) {
            self.anomaly(kind, detail);
        }
    }

    /// Registers a new send attempt with a unique body; returns its key and message.
    fn new_attempt(&mut self, rng: &mut StdRng) -> (usize, SendMessage) {
        let key = self.attempts.len();
        let prefix = format!("K{key:010}|");
        let size = match rng.random_range(0..100u32) {
            0..=59 => rng.random_range(KEY_LEN..=200),
            60..=92 => rng.random_range(201..=4_096),
            93..=98 => rng.random_range(4_097..MAX_BODY),
            _ => MAX_BODY,
        };
        let (body, message) = if rng.random_bool(0.4) {
            let mut bytes = prefix.into_bytes();
            let mut rest = vec![0u8; size - KEY_LEN];
            rng.fill(&mut rest[..]);
            bytes.extend_from_slice(&rest);
            let message = binary_message(&bytes);
            (bytes, message)
        } else {
            let mut text = prefix;
            while text.len() < size {
                let piece = TEXT_PIECES[rng.random_range(0..TEXT_PIECES.len())];
                if text.len() + piece.len() <= size {
                    text.push_str(piece);
                } else {
                    text.push('x');
                }
            }
            (text.clone().into_bytes(), SendMessage::text(text))
        };
        self.attempts.push(Attempt {
            body,
            send: SendState::Unanswered,
            id: None,
            durable: false,
            never: false,
            delete: DeleteState::NotAttempted,
        });
        (key, message)
    }

    fn ack_send(&mut self, key: usize, id: String) {
        self.tally.acked_sends += 1;
        let attempt = &mut self.attempts[key];
        attempt.send = SendState::Acked;
        attempt.durable = true;
        let mismatch = match &attempt.id {
            Some(known) if *known != id => Some(known.clone()),
            Some(_) => None,
            None => {
                attempt.id = Some(id.clone());
                None
            }
        };
        if let Some(known) = mismatch {
            self.anomaly_about(
                Anomaly::Unexpected,
                key,
                format!("send #{key} was acknowledged as {id} but received as {known}"),
            );
        }
        if let Some(other) = self.by_id.insert(id.clone(), key)
            && other != key
        {
            self.anomaly_about(
                Anomaly::Unexpected,
                key,
                format!("id {id} was given to sends #{other} and #{key}"),
            );
        }
    }

    /// Checks one message a receive returned against what was sent; returns its key.
    fn observe(&mut self, id: &str, body: Option<Vec<u8>>, context: &str) -> Option<usize> {
        let known_owner = self.by_id.get(id).copied();
        let Some(body) = body else {
            self.anomaly(
                Anomaly::Corrupted,
                format!("{context}: message {id} came back with a body that is not base64"),
            );
            return None;
        };
        let Some(key) = parse_key(&body).filter(|key| *key < self.attempts.len()) else {
            let kind = if known_owner.is_some() {
                Anomaly::Corrupted
            } else {
                Anomaly::Unexpected
            };
            let start = String::from_utf8_lossy(&body[..body.len().min(24)]).into_owned();
            self.anomaly(
                kind,
                format!(
                    "{context}: message {id} (send {known_owner:?}) has a body no send produced \
                     ({} bytes, starting {start:?})",
                    body.len()
                ),
            );
            return None;
        };
        if let Some(owner) = known_owner
            && owner != key
        {
            self.anomaly_about(
                Anomaly::Corrupted,
                owner,
                format!("{context}: message {id} of send #{owner} came back with the body of send #{key}"),
            );
            return None;
        }
        let attempt = &mut self.attempts[key];
        let mut found = Vec::new();
        if attempt.body != body {
            let first_difference = attempt
                .body
                .iter()
                .zip(&body)
                .position(|(a, b)| a != b)
                .unwrap_or(attempt.body.len().min(body.len()));
            found.push((
                Anomaly::Corrupted,
                key,
                format!(
                    "{context}: message {id} (send #{key}) has {} bytes where {} were sent, \
                     first difference at byte {first_difference}",
                    body.len(),
                    attempt.body.len()
                ),
            ));
        }
        match &attempt.id {
            Some(known) if known != id => found.push((
                Anomaly::Unexpected,
                key,
                format!("{context}: send #{key} appeared as {id} besides {known}"),
            )),
            Some(_) => {}
            None => {
                attempt.id = Some(id.to_string());
                self.by_id.insert(id.to_string(), key);
            }
        }
        if attempt.send == SendState::Refused {
            found.push((
                Anomaly::Unexpected,
                key,
                format!("{context}: send #{key} was refused, yet message {id} exists"),
            ));
        }
        if attempt.never {
            found.push((
                Anomaly::Unexpected,
                key,
                format!(
                    "{context}: send #{key} was absent after an earlier restart, yet {id} appeared"
                ),
            ));
        }
        attempt.durable = true;
        let clean = found.is_empty();
        for (kind, key, detail) in found {
            self.anomaly_about(kind, key, detail);
        }
        clean.then_some(key)
    }

    /// Settles every attempt against the complete set of live messages after a restart.
    fn reconcile(&mut self, present: &HashSet<usize>, context: &str) {
        let mut found = Vec::new();
        for (key, attempt) in self.attempts.iter_mut().enumerate() {
            let here = present.contains(&key);
            let id = attempt.id.as_deref().unwrap_or("?");
            match (here, attempt.delete) {
                (true, DeleteState::Acked | DeleteState::TookEffect) => found.push((
                    Anomaly::Resurrected,
                    key,
                    format!("{context}: message {id} (send #{key}) is back after its delete"),
                )),
                (true, DeleteState::Unanswered) => {
                    attempt.delete = DeleteState::NotAttempted;
                    self.tally.indeterminate_deletes_did_not += 1;
                }
                (true, DeleteState::NotAttempted) => {}
                (false, DeleteState::NotAttempted) => {
                    if attempt.durable {
                        found.push((
                            Anomaly::Lost,
                            key,
                            format!(
                                "{context}: message {id} (send #{key}, {:?}) is missing",
                                attempt.send
                            ),
                        ));
                    } else {
                        attempt.never = true;
                    }
                }
                (false, DeleteState::Unanswered) => {
                    attempt.delete = DeleteState::TookEffect;
                    self.tally.indeterminate_deletes_took_effect += 1;
                }
                (false, DeleteState::Acked | DeleteState::TookEffect) => {}
            }
        }
        for (kind, key, detail) in found {
            self.anomaly_about(kind, key, detail);
        }
        // A batch is accepted whole or not at all, also when the answer never came. Every
        // member is settled now (durable, or never); each batch is judged once.
        while self.batches_judged < self.batches.len() {
            let keys = &self.batches[self.batches_judged];
            self.batches_judged += 1;
            let durable = keys.iter().filter(|k| self.attempts[**k].durable).count();
            if durable > 0 && durable < keys.len() {
                self.tally.partial_batches += 1;
                let detail = format!(
                    "{context}: only {durable} of the {} messages of an unanswered batch \
                     (sends #{}..=#{}) took effect",
                    keys.len(),
                    keys[0],
                    keys[keys.len() - 1]
                );
                self.problems.push(detail);
            }
        }
    }
}

type Shared = Arc<Mutex<Model>>;

fn lock(model: &Shared) -> std::sync::MutexGuard<'_, Model> {
    model.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends unique messages, one at a time or in batches, until the server dies.
async fn sender(client: Client, model: Shared, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::SeqCst) {
        let count = match rng.random_range(0..10u32) {
            0..=6 => 1,
            7 => 16,
            _ => rng.random_range(2..=15),
        };
        let (keys, mut messages): (Vec<usize>, Vec<SendMessage>) = {
            let mut model = lock(&model);
            let (keys, messages): (Vec<usize>, Vec<SendMessage>) =
                (0..count).map(|_| model.new_attempt(&mut rng)).unzip();
            if count > 1 {
                model.batches.push(keys.clone());
            }
            (keys, messages)
        };
        let result = if count == 1 {
            let message = messages.pop().expect("one message");
            client
                .send(TORTURE_QUEUE, &message)
                .await
                .map(|id| vec![id])
        } else {
            client.send_batch(TORTURE_QUEUE, messages).await
        };
        match result {
            Ok(ids) => {
                let mut model = lock(&model);
                if ids.len() != keys.len() {
                    model.anomaly(
                        Anomaly::Unexpected,
                        format!(
                            "a batch of {} was acknowledged with {} ids",
                            keys.len(),
                            ids.len()
                        ),
                    );
                }
                if count > 1 {
                    model.tally.acked_batches += 1;
                }
                for (key, id) in keys.into_iter().zip(ids) {
                    model.ack_send(key, id);
                }
            }
            Err(ClientError::Api { status, code, .. }) if status < 500 => {
                let mut model = lock(&model);
                model
                    .problems
                    .push(format!("a send was refused: {status} {code}"));
                for key in keys {
                    model.attempts[key].send = SendState::Refused;
                    model.tally.refused_sends += 1;
                }
                return;
            }
            // The kill: whatever was in flight is indeterminate.
            Err(_) => return,
        }
        if rng.random_bool(0.3) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..3))).await;
        }
    }
}

/// Receives, checks and (mostly) deletes messages until the server dies; now and then
/// it abandons a message, which comes back only after the next restart.
async fn consumer(client: Client, model: Shared, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::SeqCst) {
        let encoding = if rng.random_bool(0.5) {
            BodyEncoding::Base64
        } else {
            BodyEncoding::Text
        };
        let wait = u32::from(rng.random_bool(0.7));
        let request = receive_request(rng.random_range(1..=16), wait, encoding);
        let Ok(messages) = client.receive(TORTURE_QUEUE, &request).await else {
            return;
        };
        if messages.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let mut to_delete = Vec::new();
        {
            let mut model = lock(&model);
            for message in &messages {
                if !model.delivered.insert(message.id.clone()) {
                    model.anomaly(
                        Anomaly::Unexpected,
                        format!(
                            "message {} was delivered twice within its visibility timeout",
                            message.id
                        ),
                    );
                    continue;
                }
                let Some(key) = model.observe(&message.id, body_of(message), "receive") else {
                    continue;
                };
                match model.attempts[key].delete {
                    DeleteState::Acked | DeleteState::TookEffect => {
                        model.anomaly_about(
                            Anomaly::Resurrected,
                            key,
                            format!("receive: message {} came back after its delete", message.id),
                        );
                        continue;
                    }
                    DeleteState::Unanswered | DeleteState::NotAttempted => {}
                }
                if rng.random_bool(0.92) {
                    model.attempts[key].delete = DeleteState::Unanswered;
                    to_delete.push((key, message.receipt_handle.clone()));
                }
            }
        }
        if to_delete.is_empty() {
            continue;
        }
        if to_delete.len() > 1 && rng.random_bool(0.7) {
            let handles = to_delete.iter().map(|(_, h)| h.clone()).collect();
            let Ok(results) = client.delete_batch(TORTURE_QUEUE, handles).await else {
                return;
            };
            let mut model = lock(&model);
            for ((key, _), result) in to_delete.iter().zip(results) {
                if result.ok {
                    model.attempts[*key].delete = DeleteState::Acked;
                    model.tally.acked_deletes += 1;
                } else {
                    model.tally.refused_deletes += 1;
                    model
                        .problems
                        .push(format!("a delete was refused: {:?}", result.code));
                }
            }
        } else {
            for (key, handle) in to_delete {
                match client.delete(TORTURE_QUEUE, &handle).await {
                    Ok(()) => {
                        let mut model = lock(&model);
                        model.attempts[key].delete = DeleteState::Acked;
                        model.tally.acked_deletes += 1;
                    }
                    Err(ClientError::Api { status, code, .. }) if status < 500 => {
                        let mut model = lock(&model);
                        model.tally.refused_deletes += 1;
                        model
                            .problems
                            .push(format!("a delete was refused: {status} {code}"));
                    }
                    Err(_) => return,
                }
            }
        }
    }
}

/// After a restart: reads the complete set of live messages (nothing is in flight after
/// a restart, so all are visible), settles the model against it, then makes them all
/// visible again for the next round. Returns how many are live.
async fn verify(client: &Client, model: &Shared, encoding: BodyEncoding, context: &str) -> usize {
    let before = client
        .get_queue(TORTURE_QUEUE)
        .await
        .unwrap_or_else(|e| panic!("{context}: the queue after a restart: {e}"));
    let drained = drain(client, TORTURE_QUEUE, encoding).await;
    let after = client.get_queue(TORTURE_QUEUE).await.expect("queue");
    assert_eq!(
        (before.stats.inactive, before.stats.delayed),
        (0, 0),
        "{context}: nothing is in flight or delayed right after a restart"
    );
    assert_eq!(
        before.stats.active as usize,
        drained.len(),
        "{context}: the drain received every visible message"
    );
    assert_eq!(
        (after.stats.active, after.stats.inactive as usize),
        (0, drained.len()),
        "{context}: after the drain every message is in flight"
    );
    let mut present = HashSet::new();
    {
        let mut model = lock(model);
        let mut ids = HashSet::new();
        for message in &drained {
            if !ids.insert(message.id.as_str()) {
                model.anomaly(
                    Anomaly::Unexpected,
                    format!("{context}: message {} came twice in one drain", message.id),
                );
                continue;
            }
            if let Some(key) = model.observe(&message.id, body_of(message), context)
                && !present.insert(key)
            {
                model.anomaly_about(
                    Anomaly::Unexpected,
                    key,
                    format!("{context}: send #{key} is live twice"),
                );
            }
        }
        model.reconcile(&present, context);
        model.delivered.clear();
    }
    let handles = drained.into_iter().map(|m| m.receipt_handle).collect();
    release_all(client, TORTURE_QUEUE, handles).await;
    present.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_torture_keeps_every_acknowledged_send_and_delete() {
    let seed = std::env::var("QUEUELET_TORTURE_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(DEFAULT_SEED);
    println!("torture: seed {seed:#x} (replay with QUEUELET_TORTURE_SEED={seed:x})");
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("data directory");
    // Small segments and frequent compaction, so crashes also land around segment rolls,
    // checkpoints, segment removals and messages copied forward.
    let args = ["--segment-bytes", "262144", "--compact-interval-ms", "100"];
    let model: Shared = Arc::default();

    for round in 1..=ROUNDS {
        let server = start(dir.path(), &args).await;
        let client = server.client();
        let live = if round == 1 {
            let attrs = QueueAttributes {
                visibility_timeout_seconds: 600,
                max_backlog: 100_000_000,
                ..QueueAttributes::default()
            };
            client
                .create_queue(TORTURE_QUEUE, &attrs)
                .await
                .expect("create the queue");
            0
        } else {
            let encoding = if round % 2 == 0 {
                BodyEncoding::Base64
            } else {
                BodyEncoding::Text
            };
            verify(&client, &model, encoding, &format!("round {round}")).await
        };
        let (sends_before, deletes_before) = {
            let model = lock(&model);
            (model.tally.acked_sends, model.tally.acked_deletes)
        };

        let stop = Arc::new(AtomicBool::new(false));
        let mut traffic = JoinSet::new();
        // Traffic requests give up; verification waits as long as it takes.
        let bounded = server.client_with_timeout(TRAFFIC_REQUEST_TIMEOUT);
        for _ in 0..SENDERS {
            let seed = rng.random();
            traffic.spawn(sender(bounded.clone(), model.clone(), stop.clone(), seed));
        }
        for _ in 0..CONSUMERS {
            let seed = rng.random();
            traffic.spawn(consumer(bounded.clone(), model.clone(), stop.clone(), seed));
        }
        let kill_after = rng.random_range(50..=600u64);
        tokio::time::sleep(Duration::from_millis(kill_after)).await;
        kill9(server).await;
        stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(joined) = traffic.join_next().await {
                joined.expect("a traffic task panicked");
            }
        })
        .await
        .expect("the traffic stops once the server is dead");

        let model = lock(&model);
        println!(
            "round {round:2}: {live:5} live after restart; killed after {kill_after:3} ms with \
             {:4} sends and {:4} deletes acknowledged",
            model.tally.acked_sends - sends_before,
            model.tally.acked_deletes - deletes_before,
        );
    }

    let server = start(dir.path(), &args).await;
    let live = verify(&server.client(), &model, BodyEncoding::Base64, "final").await;
    terminate(server).await;

    let model = lock(&model);
    let t = &model.tally;
    let unanswered: Vec<&Attempt> = model
        .attempts
        .iter()
        .filter(|a| a.send == SendState::Unanswered)
        .collect();
    let came_through = unanswered.iter().filter(|a| a.durable).count();
    println!(
        "torture: seed {seed:#x}, {ROUNDS} SIGKILLs in {:.1} s, {live} messages live at the end",
        started.elapsed().as_secs_f64()
    );
    println!(
        "  acknowledged sends:    {} ({} in batches of 2-16)",
        t.acked_sends, t.acked_batches
    );
    println!("  acknowledged deletes:  {}", t.acked_deletes);
    println!(
        "  indeterminate sends:   {} ({came_through} took effect, {} did not)",
        unanswered.len(),
        unanswered.len() - came_through
    );
    println!(
        "  indeterminate deletes: {} ({} took effect, {} did not)",
        t.indeterminate_deletes_took_effect + t.indeterminate_deletes_did_not,
        t.indeterminate_deletes_took_effect,
        t.indeterminate_deletes_did_not
    );
    println!(
        "  refused sends: {}, refused deletes: {}",
        t.refused_sends, t.refused_deletes
    );
    println!(
        "  partial batches (unanswered batches that took effect only in part): {}",
        t.partial_batches
    );
    println!(
        "  lost: {}  resurrected: {}  corrupted: {}  unexpected: {}",
        t.lost, t.resurrected, t.corrupted, t.unexpected
    );
    for problem in &model.problems {
        println!("  ! {problem}");
    }
    assert!(
        t.acked_sends > 0 && t.acked_deletes > 0,
        "the test ran traffic"
    );
    assert_eq!(
        (t.lost, t.resurrected, t.corrupted, t.unexpected),
        (0, 0, 0, 0),
        "lost, resurrected, corrupted, unexpected (seed {seed:#x}); see the problems above"
    );
    assert_eq!(
        (t.refused_sends, t.refused_deletes),
        (0, 0),
        "no send or delete of a fresh handle is refused"
    );
    // A SIGKILL during the group commit's write(2) can leave a short write; recovery
    // drops a request whose records are cut short as a whole, so a batch is all or nothing.
    assert_eq!(
        t.partial_batches, 0,
        "an unanswered batch came back in part (seed {seed:#x})"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Restarts keep queues, attributes and messages
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Kept {
    body: Vec<u8>,
    tags: Vec<String>,
    enqueue_time_ms: u64,
}

fn kept(message: &ReceivedMessage) -> (String, Kept) {
    (
        message.id.clone(),
        Kept {
            body: body_of(message).expect("valid body"),
            tags: message.tags.clone(),
            enqueue_time_ms: message.enqueue_time_ms,
        },
    )
}

fn kept_map(messages: &[ReceivedMessage]) -> BTreeMap<String, Kept> {
    let map: BTreeMap<String, Kept> = messages.iter().map(kept).collect();
    assert_eq!(map.len(), messages.len(), "no message twice: {messages:?}");
    map
}

fn subset(all: &BTreeMap<String, Kept>, ids: &[&String]) -> BTreeMap<String, Kept> {
    ids.iter()
        .map(|id| ((*id).clone(), all[*id].clone()))
        .collect()
}

const DELAY_SECONDS: u32 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_preserves_queues_attributes_and_messages() {
    let dir = tempfile::tempdir().expect("data directory");
    let server = start(dir.path(), &[]).await;
    let client = server.client();

    // Queues with non-default attributes, one updated after creation, one deleted.
    let dlq_attrs = QueueAttributes {
        visibility_timeout_seconds: 20,
        retention_seconds: 7_200,
        max_message_bytes: 2_048,
        ..QueueAttributes::default()
    };
    let orders_attrs = QueueAttributes {
        visibility_timeout_seconds: 45,
        polling_wait_seconds: 1,
        max_message_bytes: 131_072,
        retention_seconds: 86_400,
        max_backlog: 5_000,
        rewind_seconds: 3_600,
        ..QueueAttributes::default()
    };
    let payments_attrs = QueueAttributes {
        visibility_timeout_seconds: 90,
        rewind_seconds: 600,
        dead_letter: Some(DeadLetterPolicy {
            queue: "audit-dlq".into(),
            max_receive_count: Some(2),
            max_time_to_live_seconds: Some(43_200),
        }),
        ..QueueAttributes::default()
    };
    client.create_queue("audit-dlq", &dlq_attrs).await.unwrap();
    client.create_queue("orders", &orders_attrs).await.unwrap();
    client
        .create_queue("payments", &payments_attrs)
        .await
        .unwrap();
    client
        .create_queue("patched", &QueueAttributes::default())
        .await
        .unwrap();
    client
        .create_queue("scratch", &QueueAttributes::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await; // a later modified time
    client
        .update_queue(
            "patched",
            &QueueAttributesPatch {
                delay_seconds: Some(3),
                polling_wait_seconds: Some(2),
                ..QueueAttributesPatch::default()
            },
        )
        .await
        .unwrap();
    client.delete_queue("scratch").await.unwrap();

    // Messages: tagged, binary, large, a batch, and one delayed.
    let binary: Vec<u8> = (0..300u32).map(|i| (i * 37 % 256) as u8).collect();
    let large = "L".repeat(100_000);
    let send = |body: SendMessage, tags: &[&str]| SendMessage {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..body
    };
    let a = client
        .send(
            "orders",
            &send(SendMessage::text("alpha: ünïcødé ✓"), &["vip", "eu"]),
        )
        .await
        .unwrap();
    let b = client
        .send("orders", &send(binary_message(&binary), &["bin"]))
        .await
        .unwrap();
    let c = client.send_text("orders", &large).await.unwrap();
    let batch = client
        .send_batch(
            "orders",
            vec![
                send(SendMessage::text("delta"), &["x"]),
                binary_message(&[0, 159, 146, 150, 255]),
                SendMessage::text("gamma stays in flight"),
            ],
        )
        .await
        .unwrap();
    let (d, e, g) = (&batch[0], &batch[1], &batch[2]);
    let f_sent_from = now_ms();
    let f = client
        .send(
            "orders",
            &SendMessage {
                delay_seconds: Some(DELAY_SECONDS),
                ..send(SendMessage::text("foxtrot, later"), &["later"])
            },
        )
        .await
        .unwrap();
    let f_visible_from = f_sent_from + u64::from(DELAY_SECONDS) * 1_000;
    let f_still_delayed = || now_ms() + 500 < f_visible_from;

    // Receive all six visible ones; delete d and e, release a, b, c; g stays in flight.
    let received = drain(&client, "orders", BodyEncoding::Text).await;
    let all = kept_map(&received);
    let want: BTreeMap<String, Kept> = [
        (
            a.clone(),
            b"alpha: \xc3\xbcn\xc3\xafc\xc3\xb8d\xc3\xa9 \xe2\x9c\x93".to_vec(),
            vec!["vip", "eu"],
        ),
        (b.clone(), binary.clone(), vec!["bin"]),
        (c.clone(), large.clone().into_bytes(), vec![]),
        (d.clone(), b"delta".to_vec(), vec!["x"]),
        (e.clone(), vec![0, 159, 146, 150, 255], vec![]),
        (g.clone(), b"gamma stays in flight".to_vec(), vec![]),
    ]
    .into_iter()
    .map(|(id, body, tags)| {
        let enqueue_time_ms = all.get(&id).map(|k| k.enqueue_time_ms).unwrap_or_default();
        let tags = tags.into_iter().map(String::from).collect();
        (
            id,
            Kept {
                body,
                tags,
                enqueue_time_ms,
            },
        )
    })
    .collect();
    assert_eq!(all, want, "the six visible messages, as sent");
    let handle = |id: &String| {
        received
            .iter()
            .find(|m| &m.id == id)
            .map(|m| m.receipt_handle.clone())
            .expect("received")
    };
    client.delete("orders", &handle(d)).await.unwrap();
    let results = client
        .delete_batch("orders", vec![handle(e)])
        .await
        .unwrap();
    assert!(results[0].ok, "{results:?}");
    release_all(&client, "orders", vec![handle(&a), handle(&b), handle(&c)]).await;

    // payments: one receive counted (maxReceiveCount 2), left in flight.
    let p = client
        .send("payments", &send(SendMessage::text("payment 42"), &["pay"]))
        .await
        .unwrap();
    let got = client
        .receive("payments", &receive_request(1, 0, BodyEncoding::Text))
        .await
        .unwrap();
    assert_eq!((got[0].id.as_str(), got[0].dequeue_count), (p.as_str(), 1));

    let views = queue_views(&client).await;
    let names: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["audit-dlq", "orders", "patched", "payments"]);
    let oldest_a = all[&a].enqueue_time_ms;

    // ---- phase 1: graceful restart ----
    terminate(server).await;
    let server = start(dir.path(), &[]).await;
    let client = server.client();
    let after = queue_views(&client).await;
    assert_eq!(
        without_stats(&after),
        without_stats(&views),
        "phase 1: queues and attributes"
    );
    let orders = &view(&after, "orders").stats;
    assert_eq!(
        (
            orders.inactive,
            orders.rewindable,
            orders.oldest_message_time_ms
        ),
        (0, 2, Some(oldest_a)),
        "phase 1: orders stats {orders:?}"
    );
    assert_eq!(orders.active + orders.delayed, 5, "phase 1: {orders:?}");
    if f_still_delayed() {
        assert_eq!(
            orders.delayed, 1,
            "phase 1: the delayed message is still delayed"
        );
    }
    let payments = &view(&after, "payments").stats;
    assert_eq!(
        (payments.active, payments.inactive),
        (1, 0),
        "phase 1: {payments:?}"
    );
    assert_eq!(view(&after, "audit-dlq").stats.active, 0);

    let received = drain(&client, "orders", BodyEncoding::Base64).await;
    let mut now_live = kept_map(&received);
    let f_early = now_live.remove(&f);
    assert!(
        f_early.is_none() || !f_still_delayed(),
        "phase 1: f is delayed"
    );
    assert_eq!(
        now_live,
        subset(&want, &[&a, &b, &c, g]),
        "phase 1: orders' messages"
    );
    release_all(
        &client,
        "orders",
        received.into_iter().map(|m| m.receipt_handle).collect(),
    )
    .await;

    let got = client
        .receive("payments", &receive_request(1, 0, BodyEncoding::Text))
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "phase 1: the payment is back");
    assert_eq!(
        (
            got[0].id.as_str(),
            got[0].body.as_str(),
            got[0].tags.clone(),
            got[0].dequeue_count
        ),
        (p.as_str(), "payment 42", vec!["pay".to_string()], 2),
        "phase 1: the receive count survived the restart"
    );

    // More changes, then SIGKILL: a new message h, a deleted, b left in flight.
    let h = client
        .send("orders", &send(SendMessage::text("hotel"), &["new"]))
        .await
        .unwrap();
    let first = client
        .receive("orders", &receive_request(1, 0, BodyEncoding::Text))
        .await
        .unwrap();
    assert_eq!(first[0].id, a, "the oldest comes first");
    client
        .delete("orders", &first[0].receipt_handle)
        .await
        .unwrap();
    let second = client
        .receive("orders", &receive_request(1, 0, BodyEncoding::Text))
        .await
        .unwrap();
    assert_eq!(second[0].id, b);

    // ---- phase 2: after SIGKILL ----
    kill9(server).await;
    let server = start(dir.path(), &[]).await;
    let client = server.client();
    let after = queue_views(&client).await;
    assert_eq!(
        without_stats(&after),
        without_stats(&views),
        "phase 2: queues and attributes"
    );
    let orders = &view(&after, "orders").stats;
    assert_eq!(
        (
            orders.inactive,
            orders.rewindable,
            orders.oldest_message_time_ms
        ),
        (0, 3, Some(want[&b].enqueue_time_ms)),
        "phase 2: orders stats {orders:?}"
    );
    assert_eq!(orders.active + orders.delayed, 5, "phase 2: {orders:?}");
    if f_still_delayed() {
        assert_eq!(
            orders.delayed, 1,
            "phase 2: the delayed message is still delayed"
        );
    }
    let received = drain(&client, "orders", BodyEncoding::Text).await;
    let mut now_live = kept_map(&received);
    let f_early = now_live.remove(&f);
    assert!(
        f_early.is_none() || !f_still_delayed(),
        "phase 2: f is delayed"
    );
    let h_kept = now_live
        .remove(&h)
        .expect("phase 2: the acknowledged h survived SIGKILL");
    assert_eq!(
        (h_kept.body.as_slice(), h_kept.tags.clone()),
        (b"hotel".as_slice(), vec!["new".to_string()])
    );
    assert_eq!(
        now_live,
        subset(&want, &[&b, &c, g]),
        "phase 2: orders' messages"
    );
    release_all(
        &client,
        "orders",
        received.into_iter().map(|m| m.receipt_handle).collect(),
    )
    .await;

    // The payment was received twice: the next receive moves it to the dead letters.
    let payments = &view(&after, "payments").stats;
    assert_eq!(
        (payments.active, payments.inactive),
        (1, 0),
        "phase 2: {payments:?}"
    );
    let got = client
        .receive("payments", &receive_request(1, 0, BodyEncoding::Text))
        .await
        .unwrap();
    assert!(
        got.is_empty(),
        "phase 2: a third receive dead-letters the payment: {got:?}"
    );
    let dead = drain(&client, "audit-dlq", BodyEncoding::Text).await;
    assert_eq!(
        dead.len(),
        1,
        "phase 2: the payment is a dead letter: {dead:?}"
    );
    assert_ne!(dead[0].id, p, "a dead letter has an id of its new queue");
    assert_eq!(
        (dead[0].body.as_str(), dead[0].tags.clone()),
        ("payment 42", vec!["pay".to_string()])
    );
    let dead_id = dead[0].id.clone();
    release_all(&client, "audit-dlq", vec![dead[0].receipt_handle.clone()]).await;

    // Rewind brings back d, e and a with their ids and bodies.
    let rewound = client.rewind_queue("orders", oldest_a).await.unwrap();
    assert_eq!(rewound, 3, "phase 2: d, e and a are rewound");
    let received = drain(&client, "orders", BodyEncoding::Base64).await;
    let mut now_live = kept_map(&received);
    now_live.remove(&f);
    now_live.remove(&h);
    assert_eq!(
        now_live,
        subset(&want, &[&a, &b, &c, d, e, g]),
        "phase 2: after the rewind"
    );
    release_all(
        &client,
        "orders",
        received.into_iter().map(|m| m.receipt_handle).collect(),
    )
    .await;

    // ---- phase 3: SIGKILL after the rewind and the dead-letter move ----
    kill9(server).await;
    let server = start(dir.path(), &[]).await;
    let client = server.client();
    let after = queue_views(&client).await;
    assert_eq!(
        without_stats(&after),
        without_stats(&views),
        "phase 3: queues and attributes"
    );
    let orders = &view(&after, "orders").stats;
    assert_eq!(
        (
            orders.inactive,
            orders.rewindable,
            orders.oldest_message_time_ms
        ),
        (0, 0, Some(oldest_a)),
        "phase 3: orders stats {orders:?}"
    );
    assert_eq!(orders.active + orders.delayed, 8, "phase 3: {orders:?}");
    let payments = &view(&after, "payments").stats;
    assert_eq!(
        (payments.active, payments.inactive),
        (0, 0),
        "phase 3: {payments:?}"
    );
    assert_eq!(view(&after, "audit-dlq").stats.active, 1);
    let dead = drain(&client, "audit-dlq", BodyEncoding::Text).await;
    assert_eq!(
        dead.iter()
            .map(|m| (m.id.as_str(), m.body.as_str()))
            .collect::<Vec<_>>(),
        [(dead_id.as_str(), "payment 42")],
        "phase 3: the dead letter stays"
    );
    if f_still_delayed() {
        assert_eq!(
            orders.delayed, 1,
            "phase 3: the delayed message is still delayed"
        );
    }
    let received = drain(&client, "orders", BodyEncoding::Text).await;
    let mut now_live = kept_map(&received);
    let f_kept = now_live.remove(&f);
    assert!(
        f_kept.is_none() || !f_still_delayed(),
        "phase 3: f is delayed"
    );
    assert!(now_live.remove(&h).is_some(), "phase 3: h");
    assert_eq!(
        now_live,
        subset(&want, &[&a, &b, &c, d, e, g]),
        "phase 3: orders' messages"
    );

    // The delayed message turns up at its time, as sent, with its id.
    let f_kept = match f_kept {
        Some(kept) => kept,
        None => loop {
            let got = client
                .receive("orders", &receive_request(1, 20, BodyEncoding::Text))
                .await
                .unwrap();
            if let Some(message) = got.first() {
                assert_eq!(message.id, f, "only f is left to receive");
                break kept(message).1;
            }
            assert!(now_ms() < f_visible_from + 30_000, "f never became visible");
        },
    };
    assert!(
        now_ms() >= f_kept.enqueue_time_ms + u64::from(DELAY_SECONDS) * 1_000,
        "f was not received before its delay passed"
    );
    assert!(
        f_kept.enqueue_time_ms >= f_sent_from,
        "f's enqueue time survived"
    );
    assert_eq!(
        (f_kept.body.as_slice(), f_kept.tags),
        (b"foxtrot, later".as_slice(), vec!["later".to_string()])
    );
    terminate(server).await;
}

// ---------------------------------------------------------------------------------------
// 3. Receive counts survive crashes
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_reaches_dead_letter_queue_across_crashes() {
    const MAX_RECEIVES: u32 = 3;
    let dir = tempfile::tempdir().expect("data directory");
    let mut server = start(dir.path(), &[]).await;
    let client = server.client();
    client
        .create_queue("poison-dlq", &QueueAttributes::default())
        .await
        .unwrap();
    let work = QueueAttributes {
        visibility_timeout_seconds: 600,
        dead_letter: Some(DeadLetterPolicy {
            queue: "poison-dlq".into(),
            max_receive_count: Some(MAX_RECEIVES),
            max_time_to_live_seconds: None,
        }),
        ..QueueAttributes::default()
    };
    client.create_queue("work", &work).await.unwrap();
    client
        .create_queue("barrier", &QueueAttributes::default())
        .await
        .unwrap();
    let pill = SendMessage {
        tags: vec!["poison".into()],
        ..SendMessage::text("poison pill ☠")
    };
    let pill_id = client.send("work", &pill).await.unwrap();

    let (mut deliveries, mut crashes, mut prompt_crashes) = (0u32, 0u32, 0u32);
    let mut last_count = 0;
    let mut last_crash_prompt = false;
    loop {
        let client = server.client();
        let got = client
            .receive("work", &receive_request(1, 0, BodyEncoding::Text))
            .await
            .unwrap();
        let Some(message) = got.first() else {
            break;
        };
        deliveries += 1;
        assert_eq!(
            (
                message.id.as_str(),
                message.body.as_str(),
                message.tags.clone()
            ),
            (
                pill_id.as_str(),
                "poison pill ☠",
                vec!["poison".to_string()]
            )
        );
        // A crash right after a receive may lose that receive's count, no more.
        let lowest = if last_crash_prompt {
            last_count
        } else {
            last_count + 1
        };
        assert!(
            (lowest..=last_count + 1).contains(&message.dequeue_count),
            "delivery {deliveries}: dequeue count {} after {last_count}",
            message.dequeue_count
        );
        last_count = message.dequeue_count;
        assert!(
            deliveries <= MAX_RECEIVES + prompt_crashes,
            "delivered {deliveries} times with maxReceiveCount {MAX_RECEIVES} and \
             {prompt_crashes} prompt crashes: the receive counts do not survive crashes"
        );
        // The consumer crashes without deleting. Every other time, the server is killed
        // at once; otherwise only after a later durable write (which the log orders after
        // the receive's count).
        let prompt = crashes % 2 == 0;
        if !prompt {
            client.send_text("barrier", "sync").await.unwrap();
        }
        kill9(server).await;
        crashes += 1;
        prompt_crashes += u32::from(prompt);
        last_crash_prompt = prompt;
        server = start(dir.path(), &[]).await;
    }
    println!(
        "poison: {deliveries} deliveries over {crashes} SIGKILLs ({prompt_crashes} right after \
         a receive) before the dead-letter move"
    );
    assert!(
        deliveries >= MAX_RECEIVES,
        "dead-lettered after only {deliveries} deliveries"
    );

    // The receive that found the count exhausted moved it, durably.
    for phase in ["after the move", "after one more SIGKILL"] {
        let client = server.client();
        let work = client.get_queue("work").await.unwrap().stats;
        assert_eq!(
            (work.active, work.inactive, work.delayed),
            (0, 0, 0),
            "{phase}: work is empty"
        );
        let dead = drain(&client, "poison-dlq", BodyEncoding::Text).await;
        assert_eq!(dead.len(), 1, "{phase}: one dead letter: {dead:?}");
        assert_ne!(dead[0].id, pill_id);
        assert_eq!(
            (
                dead[0].body.as_str(),
                dead[0].tags.clone(),
                dead[0].dequeue_count
            ),
            ("poison pill ☠", vec!["poison".to_string()], 1),
            "{phase}"
        );
        kill9(server).await;
        server = start(dir.path(), &[]).await;
    }
    terminate(server).await;
}

// ---------------------------------------------------------------------------------------
// 4. Interval durability survives a process kill
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_mode_survives_process_kill() {
    const ARGS: [&str; 4] = ["--durability", "interval", "--sync-interval-ms", "200"];
    const TASKS: usize = 6;
    const PER_TASK: usize = 60;
    let dir = tempfile::tempdir().expect("data directory");
    let mut server = start(dir.path(), &ARGS).await;
    server
        .client()
        .create_queue("fast", &QueueAttributes::default())
        .await
        .unwrap();
    let mut sent: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for cycle in 0..2u32 {
        let client = server.client();
        let mut tasks = JoinSet::new();
        for task in 0..TASKS {
            let client = client.clone();
            tasks.spawn(async move {
                let mut acked = Vec::new();
                let mut n = 0;
                while n < PER_TASK {
                    let bodies: Vec<Vec<u8>> = (0..if n % 20 == 0 { 10 } else { 1 })
                        .map(|i| {
                            let mut body = format!("c{cycle}-t{task}-n{}|", n + i).into_bytes();
                            body.extend((0..(n * 31 % 700)).map(|j| (j * 7 + task) as u8));
                            body
                        })
                        .collect();
                    let messages: Vec<SendMessage> =
                        bodies.iter().map(|b| binary_message(b)).collect();
                    let ids = if messages.len() == 1 {
                        vec![client.send("fast", &messages[0]).await.expect("send")]
                    } else {
                        client.send_batch("fast", messages).await.expect("send")
                    };
                    n += bodies.len();
                    acked.extend(ids.into_iter().zip(bodies));
                }
                acked
            });
        }
        while let Some(joined) = tasks.join_next().await {
            sent.extend(joined.expect("sender"));
        }
        // Killed at once: the last sends are acknowledged but not yet synced.
        kill9(server).await;
        server = start(dir.path(), &ARGS).await;
        let received = drain(&server.client(), "fast", BodyEncoding::Base64).await;
        let got: BTreeMap<String, Vec<u8>> = received
            .iter()
            .map(|m| (m.id.clone(), body_of(m).expect("base64")))
            .collect();
        assert_eq!(got.len(), received.len(), "no message twice");
        let missing = sent.keys().filter(|id| !got.contains_key(*id)).count();
        let extra = got.keys().filter(|id| !sent.contains_key(*id)).count();
        assert_eq!(
            (missing, extra),
            (0, 0),
            "cycle {cycle}: acknowledged sends lost or unknown messages after SIGKILL"
        );
        assert!(got == sent, "cycle {cycle}: bodies are byte-identical");
        println!(
            "interval: cycle {cycle}: all {} acknowledged sends survived SIGKILL",
            sent.len()
        );
    }
    terminate(server).await;
}

// ---------------------------------------------------------------------------------------
// Topics: a publish acknowledged is in every matching subscribed queue after SIGKILL
// ---------------------------------------------------------------------------------------

/// PUTs a JSON body and asserts it succeeded.
async fn put_json(http: &reqwest::Client, url: &str, body: serde_json::Value) {
    let response = http.put(url).json(&body).send().await.expect("PUT");
    let status = response.status();
    assert!(
        status.is_success(),
        "PUT {url}: {status} {:?}",
        response.text().await
    );
}

/// Which tags the n-th publish of a task carries, and so which queues it must reach.
fn publish_tags(n: usize) -> Vec<&'static str> {
    match n % 3 {
        0 => vec![],
        1 => vec!["paid"],
        _ => vec!["paid", "vip"],
    }
}

fn expected_queues(tags: &[&str]) -> Vec<&'static str> {
    let mut queues = vec!["all"];
    if tags.contains(&"paid") {
        queues.push("paid");
    }
    if tags.contains(&"vip") {
        queues.push("vip");
    }
    queues
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_every_acknowledged_publish_in_every_matching_queue() {
    const ARGS: [&str; 2] = ["--compact-interval-ms", "300"];
    const TASKS: usize = 4;
    let dir = tempfile::tempdir().expect("data directory");
    let mut server = start(dir.path(), &ARGS).await;
    let http = reqwest::Client::new();
    for queue in ["all", "paid", "vip"] {
        server
            .client()
            .create_queue(queue, &QueueAttributes::default())
            .await
            .unwrap();
    }
    let topic = format!("{}/v1/topics/events", server.url);
    put_json(&http, &topic, serde_json::json!({})).await;
    for (name, body) in [
        ("to-all", serde_json::json!({"queue": "all"})),
        (
            "to-paid",
            serde_json::json!({"queue": "paid", "filterTags": ["paid"]}),
        ),
        (
            "to-vip",
            serde_json::json!({"queue": "vip", "filterTags": ["vip"]}),
        ),
    ] {
        put_json(&http, &format!("{topic}/subscriptions/{name}"), body).await;
    }
    let mut rng = StdRng::seed_from_u64(now_ms());
    let mut acked: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    for cycle in 0..2u32 {
        let topic = format!("{}/v1/topics/events/messages", server.url);
        let mut tasks = JoinSet::new();
        for task in 0..TASKS {
            let http = http.clone();
            let topic = topic.clone();
            tasks.spawn(async move {
                let mut done = Vec::new();
                for n in 0.. {
                    let body = format!("c{cycle}-t{task}-n{n}");
                    let tags = publish_tags(n);
                    let sent = http
                        .post(&topic)
                        .json(&serde_json::json!({"body": body, "tags": tags}))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 201 => done.push((body, tags)),
                        // The server is gone: what was not acknowledged may or may not be there.
                        _ => return done,
                    }
                }
                done
            });
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(400..1_200))).await;
        kill9(server).await;
        while let Some(joined) = tasks.join_next().await {
            acked.extend(joined.expect("publisher"));
        }
        server = start(dir.path(), &ARGS).await;
        let client = server.client();
        let mut lost = 0;
        for queue in ["all", "paid", "vip"] {
            let got = drain(&client, queue, BodyEncoding::Text).await;
            let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
            let unique: HashSet<&str> = bodies.iter().copied().collect();
            assert_eq!(
                unique.len(),
                bodies.len(),
                "{queue}: a publish delivered twice"
            );
            for (body, tags) in &acked {
                if expected_queues(tags).contains(&queue) && !unique.contains(body.as_str()) {
                    lost += 1;
                }
            }
            let unexpected = unique
                .iter()
                .filter(|b| {
                    acked
                        .get(**b)
                        .is_some_and(|tags| !expected_queues(tags).contains(&queue))
                })
                .count();
            assert_eq!(
                unexpected, 0,
                "{queue}: messages its filter does not let through"
            );
            release_all(
                &client,
                queue,
                got.into_iter().map(|m| m.receipt_handle).collect(),
            )
            .await;
        }
        assert_eq!(
            lost, 0,
            "cycle {cycle}: acknowledged publishes missing after SIGKILL"
        );
        let subscriptions = http
            .get(format!("{}/v1/topics/events/subscriptions", server.url))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        assert_eq!(subscriptions["total"], 3, "{subscriptions}");
        println!(
            "topics: cycle {cycle}: all {} acknowledged publishes are in their queues after SIGKILL",
            acked.len()
        );
    }
    terminate(server).await;
}

/// Pushes to an HTTP endpoint that is down are kept on disk: after SIGKILL and a
/// restart, an endpoint that is back receives every acknowledged publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_pending_pushes_until_the_endpoint_is_back() {
    // A free port, with nothing listening yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = tempfile::tempdir().expect("data directory");
    let server = start(dir.path(), &[]).await;
    let http = reqwest::Client::new();
    let topic = format!("{}/v1/topics/events", server.url);
    put_json(&http, &topic, serde_json::json!({})).await;
    let endpoint = format!("http://127.0.0.1:{port}/hook");
    put_json(
        &http,
        &format!("{topic}/subscriptions/hook"),
        serde_json::json!({"endpoint": endpoint, "notifyContentFormat": "simplified"}),
    )
    .await;
    let mut acked = BTreeSet::new();
    for n in 0..20 {
        let body = format!("push {n}");
        let response = http
            .post(format!("{topic}/messages"))
            .json(&serde_json::json!({"body": body}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        acked.insert(body);
    }
    kill9(server).await;

    let received: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let recorded = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().expect("receiver lock").insert(body);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the endpoint's port");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let server = start(dir.path(), &[]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while *received.lock().expect("receiver lock") != acked {
        assert!(
            Instant::now() < deadline,
            "after SIGKILL, {} of {} acknowledged pushes arrived",
            received.lock().expect("receiver lock").len(),
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    terminate(server).await;
}
