//! Push subscriptions to HTTP endpoints, at the engine with a controlled clock and a
//! local receiver that fails on purpose: retries follow BACKOFF_RETRY (fixed interval,
//! bounded tries) and EXPONENTIAL_DECAY_RETRY (1, 2, 4 … s), a failing endpoint never
//! blocks publishers, and pending pushes are bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use parking_lot::Mutex;
use queuelet::engine::topic::{MAX_PENDING_PUSHES, push_queue_name};
use queuelet::engine::{
    ContentFormat, Engine, EngineConfig, ManualClock, MemoryJournal, NotifyStrategy, Origin,
    SubscriptionSpec, TopicAttributes, TopicMessage,
};
use tokio_util::sync::CancellationToken;

/// A local endpoint that answers 500 to its first `fail_first` requests (all of them
/// with `usize::MAX`) and records every request.
struct Receiver {
    url: String,
    requests: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

async fn receiver(fail_first: usize) -> Receiver {
    let requests: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
    let seen = Arc::new(AtomicUsize::new(0));
    let recorded = requests.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let recorded = recorded.clone();
            let seen = seen.clone();
            async move {
                recorded.lock().push((headers, body));
                if seen.fetch_add(1, Ordering::SeqCst) < fail_first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, requests }
}

impl Receiver {
    fn count(&self) -> usize {
        self.requests.lock().len()
    }

    /// Waits (in real time) until the receiver has seen `n` requests.
    async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} requests arrived",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Let the worker settle the answer before the test moves the clock.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// Asserts that no request beyond `n` arrives for a while (the clock stands still).
    async fn stays_at(&self, n: usize) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(self.count(), n, "a try came before its time");
    }
}

struct Setup {
    engine: Arc<Engine>,
    clock: Arc<ManualClock>,
    stop: CancellationToken,
}

async fn setup(endpoint: &str, strategy: NotifyStrategy, format: ContentFormat) -> Setup {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let engine = Arc::new(Engine::new(
        EngineConfig::new(0),
        clock.clone(),
        Arc::new(MemoryJournal),
    ));
    engine
        .create_topic("events", TopicAttributes::default(), Origin::Api)
        .await
        .unwrap();
    let spec = SubscriptionSpec {
        endpoint: Some(endpoint.to_string()),
        notify_strategy: strategy,
        notify_content_format: format,
        ..SubscriptionSpec::default()
    };
    engine
        .subscribe("events", "hook", spec, Origin::Api)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(queuelet::push::run(
        engine.clone(),
        Duration::from_millis(20),
        stop.clone(),
    ));
    Setup {
        engine,
        clock,
        stop,
    }
}

fn message(body: &str) -> TopicMessage {
    TopicMessage {
        body: Bytes::from(body.to_string()),
        tags: vec!["paid".into()],
        routing_key: None,
    }
}

async fn pending(engine: &Engine) -> u64 {
    let stats = engine
        .get_queue(&push_queue_name("events", "hook"))
        .await
        .unwrap()
        .stats;
    stats.active + stats.inactive + stats.delayed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exponential_decay_retries_after_1_then_2_seconds_until_delivered() {
    let endpoint = receiver(2).await;
    let s = setup(
        &endpoint.url,
        NotifyStrategy::ExponentialDecayRetry,
        ContentFormat::Json,
    )
    .await;
    let published = s
        .engine
        .publish("events", vec![message("hello")])
        .await
        .unwrap();
    assert_eq!(published.deliveries, 1);
    endpoint.wait_for(1).await;
    endpoint.stays_at(1).await;
    s.clock.advance(Duration::from_millis(1_000));
    endpoint.wait_for(2).await;
    s.clock.advance(Duration::from_millis(1_000));
    endpoint.stays_at(2).await;
    s.clock.advance(Duration::from_millis(1_000));
    endpoint.wait_for(3).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while pending(&s.engine).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the delivered push is still pending"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (headers, body) = endpoint.requests.lock()[2].clone();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["msgBody"], "hello");
    assert_eq!(json["topicName"], "events");
    assert_eq!(json["subscriptionName"], "hook");
    assert_eq!(headers["x-cmq-message-tag"], "paid");
    assert_eq!(headers["user-agent"], "Qcloud Notification Service Agent");
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_retry_gives_up_after_its_tries_and_never_blocks_publishers() {
    let endpoint = receiver(usize::MAX).await;
    let s = setup(
        &endpoint.url,
        NotifyStrategy::BackoffRetry,
        ContentFormat::Simplified,
    )
    .await;
    s.engine
        .publish("events", vec![message("doomed")])
        .await
        .unwrap();
    endpoint.wait_for(1).await;
    s.clock.advance(Duration::from_secs(5));
    endpoint.stays_at(1).await;
    s.clock.advance(Duration::from_secs(5));
    endpoint.wait_for(2).await;
    s.clock.advance(Duration::from_secs(10));
    endpoint.wait_for(3).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while pending(&s.engine).await > 0 {
        assert!(Instant::now() < deadline, "the push was not given up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.clock.advance(Duration::from_secs(100));
    endpoint.stays_at(3).await;
    assert_eq!(endpoint.requests.lock()[0].1, Bytes::from("doomed"));

    // The endpoint keeps failing; publishing does not wait for it.
    let started = Instant::now();
    for n in 0..50 {
        s.engine
            .publish("events", vec![message(&format!("m{n}"))])
            .await
            .unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let attrs = s
        .engine
        .get_queue(&push_queue_name("events", "hook"))
        .await
        .unwrap()
        .attrs;
    assert_eq!(
        attrs.max_backlog, MAX_PENDING_PUSHES,
        "pending pushes are bounded"
    );
    s.stop.cancel();
}

#[tokio::test]
async fn pending_pushes_are_not_user_queues_and_go_with_their_subscription() {
    let s = setup(
        "http://127.0.0.1:9/hook",
        NotifyStrategy::BackoffRetry,
        ContentFormat::Json,
    )
    .await;
    s.stop.cancel();
    let (queues, total) = s.engine.list_queues("", 0, 100).await.unwrap();
    assert_eq!((queues.len(), total), (0, 0));
    assert!(s.engine.snapshot().is_empty());
    let internal = push_queue_name("events", "hook");
    assert!(s.engine.delete_queue(&internal, Origin::Api).await.is_err());
    s.engine
        .unsubscribe("events", "hook", Origin::Api)
        .await
        .unwrap();
    assert!(s.engine.get_queue(&internal).await.is_err());
}
