//! Push delivery for HTTP subscriptions. Pending pushes wait on disk in each
//! subscription's internal queue (so they survive restarts and a publish never waits
//! for an endpoint); one worker per subscription receives them, POSTs each, deletes it
//! on a 2xx, and otherwise hides it until its next try under the subscription's
//! strategy, dropping it when the strategy gives up or the topic's retention ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::engine::topic::retry_delay;
use crate::engine::{ContentFormat, Engine, EngineError, PushTarget, ReceivedMessage};

/// How long one POST may take.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(15);
const USER_AGENT: &str = "Qcloud Notification Service Agent";

/// Keeps one worker per HTTP subscription, checking for new or changed ones every `every`.
pub async fn run(engine: Arc<Engine>, every: Duration, stop: CancellationToken) {
    let http = match reqwest::Client::builder().timeout(PUSH_TIMEOUT).build() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "cannot build the push HTTP client; no pushes will be sent");
            return;
        }
    };
    let mut workers: HashMap<String, (PushTarget, tokio::task::JoinHandle<()>)> = HashMap::new();
    loop {
        let targets = engine.push_targets();
        workers.retain(|_, (target, handle)| !handle.is_finished() && targets.contains(target));
        for target in targets {
            if !workers.contains_key(&target.queue) {
                let handle = tokio::spawn(worker(
                    engine.clone(),
                    http.clone(),
                    target.clone(),
                    stop.clone(),
                ));
                workers.insert(target.queue.clone(), (target, handle));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn worker(
    engine: Arc<Engine>,
    http: reqwest::Client,
    target: PushTarget,
    stop: CancellationToken,
) {
    tracing::debug!(topic = %target.topic, subscription = %target.subscription, "push worker started");
    loop {
        if stop.is_cancelled() || !engine.push_targets().contains(&target) {
            return;
        }
        let batch = tokio::select! {
            _ = stop.cancelled() => return,
            batch = engine.receive(&target.queue, engine.max_batch(), Some(1)) => batch,
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(EngineError::QueueNotFound(_)) => return,
            Err(error) => {
                tracing::warn!(queue = %target.queue, %error, "cannot read pending pushes");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for message in batch {
            let delivered = post(&http, &target, &message).await;
            if let Err(error) = settle(&engine, &target, message, delivered).await {
                tracing::warn!(queue = %target.queue, %error, "cannot settle a push");
            }
        }
    }
}

/// Deletes a delivered push; hides a failed one until its next try, or drops it.
async fn settle(
    engine: &Engine,
    target: &PushTarget,
    message: ReceivedMessage,
    delivered: bool,
) -> Result<(), EngineError> {
    let handle = [message.receipt_handle.clone()];
    if delivered {
        return engine
            .delete_messages(&target.queue, &handle)
            .await
            .map(drop);
    }
    let age_seconds = engine.now_ms().saturating_sub(message.enqueued_ms) / 1_000;
    match retry_delay(target.strategy, message.dequeue_count) {
        Some(delay) if age_seconds + u64::from(delay) <= u64::from(target.retention_seconds) => {
            engine
                .change_visibility(&target.queue, &message.receipt_handle, delay)
                .await
                .map(drop)
        }
        _ => {
            tracing::warn!(topic = %target.topic, subscription = %target.subscription,
                message = %message.id, tries = message.dequeue_count, "push given up");
            engine
                .delete_messages(&target.queue, &handle)
                .await
                .map(drop)
        }
    }
}

/// POSTs one message; true on a 2xx answer.
async fn post(http: &reqwest::Client, target: &PushTarget, message: &ReceivedMessage) -> bool {
    let body = match target.format {
        ContentFormat::Simplified => message.body.to_vec(),
        ContentFormat::Json => serde_json::json!({
            "TopicOwner": "",
            "topicName": target.topic,
            "subscriptionName": target.subscription,
            "msgId": message.id,
            "msgBody": String::from_utf8_lossy(&message.body),
            "publishTime": message.enqueued_ms / 1_000,
        })
        .to_string()
        .into_bytes(),
    };
    let sent = http
        .post(&target.endpoint)
        .header(reqwest::header::USER_AGENT, USER_AGENT)
        .header(reqwest::header::CONTENT_TYPE, "text/plain")
        .header("x-cmq-request-id", message.id.as_str())
        .header("x-cmq-message-id", message.id.as_str())
        .header("x-cmq-message-tag", message.tags.join(", "))
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => true,
        Ok(response) => {
            tracing::debug!(endpoint = %target.endpoint, status = %response.status(), "push refused");
            false
        }
        Err(error) => {
            tracing::debug!(endpoint = %target.endpoint, %error, "push failed");
            false
        }
    }
}
