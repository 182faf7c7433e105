//! The engine under concurrency, with the real clock on a multi-threaded runtime:
//! many producers and consumers on one queue lose and duplicate nothing, and long
//! pollers waiting on an empty queue are woken by sends rather than by their deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use queuelet::engine::{
    Engine, EngineConfig, EngineError, MemoryJournal, NewMessage, Origin, QueueAttributes,
    QueueStats, SystemClock,
};
use tokio::task::JoinSet;

const QUEUE: &str = "work";

async fn engine_with_queue() -> Result<Arc<Engine>, EngineError> {
    let engine = Arc::new(Engine::new(
        EngineConfig::new(0),
        Arc::new(SystemClock::default()),
        Arc::new(MemoryJournal),
    ));
    let attrs = QueueAttributes {
        // Long enough that nothing is ever delivered twice because a consumer was slow.
        visibility_timeout_seconds: 300,
        max_backlog: 10_000_000,
        ..QueueAttributes::default()
    };
    engine.create_queue(QUEUE, attrs, Origin::Api).await?;
    Ok(engine)
}

fn body(index: u32) -> Bytes {
    Bytes::copy_from_slice(&index.to_be_bytes())
}

fn index(body: &Bytes) -> Result<usize, String> {
    let bytes: [u8; 4] = body
        .as_ref()
        .try_into()
        .map_err(|_| format!("unexpected body {body:?}"))?;
    Ok(u32::from_be_bytes(bytes) as usize)
}

const TOTAL: u32 = 100_000;
const PRODUCERS: u32 = 16;
const CONSUMERS: usize = 16;
const BATCH: u32 = 16;

async fn produce(engine: Arc<Engine>, producer: u32) -> Result<(), String> {
    // Producer p sends the indices congruent to p modulo PRODUCERS.
    let mine: Vec<u32> = (producer..TOTAL).step_by(PRODUCERS as usize).collect();
    for chunk in mine.chunks(BATCH as usize) {
        let batch = chunk
            .iter()
            .map(|&i| NewMessage {
                body: body(i),
                ..NewMessage::default()
            })
            .collect::<Vec<_>>();
        let ids = engine
            .send(QUEUE, batch)
            .await
            .map_err(|e| format!("producer {producer}: send: {e}"))?;
        if ids.len() != chunk.len() {
            return Err(format!(
                "producer {producer}: {} ids for {} messages",
                ids.len(),
                chunk.len()
            ));
        }
    }
    Ok(())
}

/// Receives and deletes until every message is deleted; returns the indices it received.
async fn consume(engine: Arc<Engine>, deleted: Arc<AtomicUsize>) -> Result<Vec<usize>, String> {
    let mut received = Vec::new();
    while deleted.load(Ordering::Acquire) < TOTAL as usize {
        let messages = engine
            .receive(QUEUE, 16, Some(1))
            .await
            .map_err(|e| format!("receive: {e}"))?;
        if messages.is_empty() {
            continue;
        }
        for m in &messages {
            received.push(index(&m.body)?);
        }
        let handles: Vec<String> = messages.iter().map(|m| m.receipt_handle.clone()).collect();
        let results = engine
            .delete_messages(QUEUE, &handles)
            .await
            .map_err(|e| format!("delete: {e}"))?;
        if results.len() != handles.len() {
            return Err(format!(
                "{} results for {} handles",
                results.len(),
                handles.len()
            ));
        }
        if let Some(failed) = results.iter().find(|r| r.is_err()) {
            return Err(format!("delete of a fresh handle failed: {failed:?}"));
        }
        let now_deleted = deleted.fetch_add(results.len(), Ordering::AcqRel) + results.len();
        if now_deleted >= TOTAL as usize {
            // Everything is through: let the other consumers' long polls end now.
            engine.release_waiters();
        }
    }
    Ok(received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_and_consumers_deliver_every_message_exactly_once() -> Result<(), String> {
    let engine = engine_with_queue().await.map_err(|e| e.to_string())?;
    let deleted = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    let run = async {
        let mut consumers = JoinSet::new();
        for _ in 0..CONSUMERS {
            consumers.spawn(consume(engine.clone(), deleted.clone()));
        }
        let mut producers = JoinSet::new();
        for p in 0..PRODUCERS {
            producers.spawn(produce(engine.clone(), p));
        }
        while let Some(done) = producers.join_next().await {
            done.map_err(|e| format!("producer panicked: {e}"))??;
        }
        let mut seen = vec![0u32; TOTAL as usize];
        while let Some(done) = consumers.join_next().await {
            for i in done.map_err(|e| format!("consumer panicked: {e}"))?? {
                let slot = seen
                    .get_mut(i)
                    .ok_or_else(|| format!("received unknown message {i}"))?;
                *slot += 1;
            }
        }
        Ok::<_, String>(seen)
    };
    let seen = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .map_err(|_| "timed out: producers or consumers hang".to_string())??;

    let lost: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] == 0).collect();
    let duplicated: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] > 1).collect();
    assert!(
        lost.is_empty(),
        "{} messages never delivered, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        duplicated.is_empty(),
        "{} messages delivered more than once, e.g. {:?}",
        duplicated.len(),
        &duplicated[..duplicated.len().min(10)]
    );
    assert_eq!(
        deleted.load(Ordering::Acquire),
        TOTAL as usize,
        "deleted exactly once each"
    );

    let counters = engine.counters();
    assert_eq!(counters.sent.load(Ordering::Relaxed), u64::from(TOTAL));
    assert_eq!(counters.received.load(Ordering::Relaxed), u64::from(TOTAL));
    assert_eq!(counters.deleted.load(Ordering::Relaxed), u64::from(TOTAL));
    let stats = engine
        .get_queue(QUEUE)
        .await
        .map_err(|e| e.to_string())?
        .stats;
    assert_eq!(stats, QueueStats::default(), "the queue ends empty");
    eprintln!(
        "{TOTAL} messages through one queue in {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_pollers_on_an_empty_queue_are_woken_by_sends() -> Result<(), String> {
    const POLLERS: usize = 1_000;
    const WAIT_SECONDS: u32 = 5;
    let engine = engine_with_queue().await.map_err(|e| e.to_string())?;

    let run = async {
        let mut pollers = JoinSet::new();
        for _ in 0..POLLERS {
            let engine = engine.clone();
            pollers.spawn(async move {
                let messages = engine
                    .receive(QUEUE, 1, Some(WAIT_SECONDS))
                    .await
                    .map_err(|e| format!("receive: {e}"))?;
                Ok::<_, String>((messages, Instant::now()))
            });
        }
        // Let every poller find the queue empty and start waiting.
        tokio::time::sleep(Duration::from_millis(500)).await;
        if pollers.len() != POLLERS || engine.counters().received.load(Ordering::Relaxed) != 0 {
            return Err("a poller returned before anything was sent".to_string());
        }

        let sending = Instant::now();
        let indices: Vec<u32> = (0..POLLERS as u32).collect();
        for chunk in indices.chunks(16) {
            let batch = chunk
                .iter()
                .map(|&i| NewMessage {
                    body: body(i),
                    ..NewMessage::default()
                })
                .collect();
            engine
                .send(QUEUE, batch)
                .await
                .map_err(|e| format!("send: {e}"))?;
        }

        let mut seen = vec![0u32; POLLERS];
        let mut last_done = sending;
        while let Some(done) = pollers.join_next().await {
            let (messages, at) = done.map_err(|e| format!("poller panicked: {e}"))??;
            if messages.is_empty() {
                return Err(format!(
                    "a poller came back empty after {:?}",
                    at.duration_since(sending)
                ));
            }
            for m in &messages {
                let slot = seen
                    .get_mut(index(&m.body)?)
                    .ok_or("received an unknown message")?;
                *slot += 1;
            }
            last_done = last_done.max(at);
        }
        Ok::<_, String>((seen, last_done.duration_since(sending)))
    };
    let (seen, served_in) = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .map_err(|_| "timed out: long pollers hang".to_string())??;

    assert_eq!(
        seen.iter().map(|&n| n as usize).sum::<usize>(),
        POLLERS,
        "total received"
    );
    assert!(
        seen.iter().all(|&n| n == 1),
        "every message delivered exactly once"
    );
    // Without wake-ups every poller would sleep to its deadline, 4.5 s after the first send.
    assert!(
        served_in < Duration::from_millis(2_500),
        "all pollers served only after {served_in:?}"
    );
    let stats = engine
        .get_queue(QUEUE)
        .await
        .map_err(|e| e.to_string())?
        .stats;
    assert_eq!(stats.active, 0);
    assert_eq!(stats.inactive, POLLERS as u64);
    eprintln!("{POLLERS} waiting long pollers served in {served_in:?}");
    Ok(())
}
