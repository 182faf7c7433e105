//! Bare HTTP (`queuelet-bench bare-http`): the routes of queuelet's native message API
//! that the load generator calls, answered from memory by a bare axum server — no log,
//! no sync, no auth, metrics, request ids, tracing or timeouts. What the load generator
//! gets through it (system `bare-http`) is what the HTTP/1.1 and JSON exchanges alone
//! cost on this machine with this load generator, so queuelet's own rows can be read as
//! a share of it.
//!
//! One queue, whatever its name; messages live in memory until deleted.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post, put};
use axum::{Json, Router};
use parking_lot::Mutex;
use queuelet::api::model::{
    BodyEncoding, DeleteBatch, DeleteResult, DeleteResults, QueueStatsView, QueueView,
    ReceiveRequest, ReceivedMessage, ReceivedMessages, SendBatch, SendMessage, SentBatch,
    SentMessage,
};
use queuelet::engine::QueueAttributes;
use tokio::sync::Notify;

#[derive(Default)]
struct Queue {
    next_id: u64,
    ready: VecDeque<(u64, String)>,
    /// Receipt handles of received, not yet deleted messages.
    in_flight: HashSet<String>,
}

#[derive(Default)]
struct Memory {
    queue: Mutex<Queue>,
    arrived: Notify,
}

type Shared = Arc<Memory>;

/// Serves bare HTTP on `listen`, and on `unix_socket` too when given, until the process
/// is stopped.
pub async fn serve(listen: &str, unix_socket: Option<&std::path::Path>) -> Result<()> {
    let routes = Router::new()
        .route("/v1/queues/{name}", put(create).delete(drop_queue))
        .route("/v1/queues/{name}/messages", post(send))
        .route("/v1/queues/{name}/messages/batch", post(send_batch))
        .route("/v1/queues/{name}/messages/receive", post(receive))
        .route("/v1/queues/{name}/messages/delete", post(delete_batch))
        .route(
            "/v1/queues/{name}/messages/{handle}",
            delete(delete_message),
        )
        .route("/readyz", axum::routing::get(|| async { "ready" }))
        .with_state(Shared::default());
    if let Some(path) = unix_socket {
        // As queuelet binds its socket: a stale socket is replaced, nothing else is.
        let listener = queuelet::server::bind_unix(path)?;
        eprintln!("bare HTTP listening on {}", path.display());
        tokio::spawn(axum::serve(listener, routes.clone()).into_future());
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    eprintln!("bare HTTP listening on {listen}");
    axum::serve(listener, routes).await.context("serve")
}

/// Keeps nothing of the attributes; answers them back the way queuelet does.
async fn create(
    Path(name): Path<String>,
    Json(attributes): Json<QueueAttributes>,
) -> (StatusCode, Json<QueueView>) {
    let view = QueueView {
        name,
        attributes,
        managed: false,
        created_time_ms: 0,
        modified_time_ms: 0,
        stats: QueueStatsView {
            active: 0,
            inactive: 0,
            delayed: 0,
            rewindable: 0,
            oldest_message_time_ms: None,
        },
    };
    (StatusCode::CREATED, Json(view))
}

async fn drop_queue(State(memory): State<Shared>) -> StatusCode {
    *memory.queue.lock() = Queue::default();
    StatusCode::NO_CONTENT
}

fn enqueue(memory: &Memory, bodies: impl IntoIterator<Item = String>) -> Vec<SentMessage> {
    let sent = {
        let mut queue = memory.queue.lock();
        bodies
            .into_iter()
            .map(|body| {
                queue.next_id += 1;
                let id = queue.next_id;
                queue.ready.push_back((id, body));
                SentMessage { id: id.to_string() }
            })
            .collect()
    };
    memory.arrived.notify_waiters();
    sent
}

async fn send(
    State(memory): State<Shared>,
    Json(message): Json<SendMessage>,
) -> (StatusCode, Json<SentMessage>) {
    let mut sent = enqueue(&memory, [message.body]);
    let sent = sent.pop().unwrap_or(SentMessage { id: String::new() });
    (StatusCode::CREATED, Json(sent))
}

async fn send_batch(
    State(memory): State<Shared>,
    Json(batch): Json<SendBatch>,
) -> (StatusCode, Json<SentBatch>) {
    let messages = enqueue(&memory, batch.messages.into_iter().map(|m| m.body));
    (StatusCode::CREATED, Json(SentBatch { messages }))
}

fn take(memory: &Memory, max: usize) -> Vec<ReceivedMessage> {
    let mut queue = memory.queue.lock();
    let mut taken = Vec::new();
    while taken.len() < max {
        let Some((id, body)) = queue.ready.pop_front() else {
            break;
        };
        let handle = format!("h{id}");
        queue.in_flight.insert(handle.clone());
        taken.push(ReceivedMessage {
            id: id.to_string(),
            receipt_handle: handle,
            body,
            encoding: BodyEncoding::Text,
            tags: Vec::new(),
            enqueue_time_ms: 0,
            first_dequeue_time_ms: 0,
            dequeue_count: 1,
            next_visible_time_ms: 0,
        });
    }
    taken
}

async fn receive(
    State(memory): State<Shared>,
    Json(request): Json<ReceiveRequest>,
) -> Json<ReceivedMessages> {
    let max = request.max.unwrap_or(1).clamp(1, 16);
    let wait = Duration::from_secs(request.wait_seconds.unwrap_or(0).into());
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let arrived = memory.arrived.notified();
        let messages = take(&memory, max);
        if !messages.is_empty() || tokio::time::Instant::now() >= deadline {
            return Json(ReceivedMessages { messages });
        }
        // A send between `take` and here still wakes this `notified`.
        let _ = tokio::time::timeout_at(deadline, arrived).await;
    }
}

fn settle(memory: &Memory, handle: &str) -> bool {
    memory.queue.lock().in_flight.remove(handle)
}

async fn delete_message(
    State(memory): State<Shared>,
    Path((_name, handle)): Path<(String, String)>,
) -> StatusCode {
    if settle(&memory, &handle) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn delete_batch(
    State(memory): State<Shared>,
    Json(batch): Json<DeleteBatch>,
) -> Json<DeleteResults> {
    let results = batch
        .receipt_handles
        .into_iter()
        .map(|handle| DeleteResult {
            ok: settle(&memory, &handle),
            receipt_handle: handle,
            code: None,
            message: None,
        })
        .collect();
    Json(DeleteResults { results })
}
