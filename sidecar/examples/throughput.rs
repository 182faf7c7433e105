//! Load loop: messages/s through send → receive → delete with batches of 16 on
//! loopback, next to a minimal axum echo handler measured the same way in the same run.
//!
//!     cargo run --release -p queuelet --example throughput -- [SECONDS] [WORKERS]
//!
//! Server and load generator share this process and the machine's cores, for both
//! measurements alike; compare the ratio, not the absolute figures.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::post;
use queuelet::api::metrics::Metrics;
use queuelet::api::model::{ReceiveRequest, SendMessage};
use queuelet::api::{AppState, HttpLimits, auth::Tokens, router};
use queuelet::client::Client;
use queuelet::engine::{Engine, EngineConfig, MemoryJournal, Origin, QueueAttributes, SystemClock};
use queuelet::store::log_stats::LogStats;

const BATCH: usize = 16;
const BODY_BYTES: usize = 256;

async fn serve<S>(app: S) -> anyhow::Result<String>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = axum::ServiceExt::<Request>::into_make_service(app);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

fn batch_body() -> Vec<SendMessage> {
    (0..BATCH)
        .map(|i| SendMessage::text(format!("{i:0>width$}", width = BODY_BYTES)))
        .collect()
}

async fn echo_rate(url: &str, workers: usize, run_for: Duration) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let body = serde_json::to_vec(&serde_json::json!({ "messages": batch_body() }))?;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (http, body, done, url) = (http.clone(), body.clone(), done.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < run_for {
                let ok = http
                    .post(format!("{url}/echo"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .is_ok();
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

struct QueueRun {
    messages_per_second: f64,
    requests_per_second: f64,
}

async fn queue_rate(url: &str, workers: usize, run_for: Duration) -> anyhow::Result<QueueRun> {
    let client = Client::new(url)?;
    let deleted = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (client, deleted, requests, stop) = (
            client.clone(),
            deleted.clone(),
            requests.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if worker % 2 == 0 {
                    if client.send_batch("bench", batch_body()).await.is_ok() {
                        requests.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                let request = ReceiveRequest {
                    max: Some(BATCH),
                    wait_seconds: Some(1),
                    ..ReceiveRequest::default()
                };
                let Ok(received) = client.receive("bench", &request).await else {
                    continue;
                };
                requests.fetch_add(1, Ordering::Relaxed);
                if received.is_empty() {
                    continue;
                }
                let handles = received.into_iter().map(|m| m.receipt_handle).collect();
                if let Ok(results) = client.delete_batch("bench", handles).await {
                    requests.fetch_add(1, Ordering::Relaxed);
                    let ok = results.iter().filter(|r| r.ok).count() as u64;
                    deleted.fetch_add(ok, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(run_for).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let (deleted, requests) = (
        deleted.load(Ordering::Relaxed),
        requests.load(Ordering::Relaxed),
    );
    for task in tasks {
        task.await?;
    }
    Ok(QueueRun {
        messages_per_second: deleted as f64 / elapsed,
        requests_per_second: requests as f64 / elapsed,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let workers: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(32);
    let run_for = Duration::from_secs(seconds);

    let echo =
        serve(Router::new().route("/echo", post(|body: bytes::Bytes| async move { body }))).await?;

    let engine = Arc::new(Engine::new(
        EngineConfig::new(0),
        Arc::new(SystemClock::default()),
        Arc::new(MemoryJournal),
    ));
    engine
        .create_queue("bench", QueueAttributes::default(), Origin::Api)
        .await?;
    let state = AppState {
        engine,
        metrics: Arc::new(Metrics::new(&LogStats::default())),
        ready: Arc::new(AtomicBool::new(true)),
        cmq_keys: Arc::default(),
        cmq_replays: Arc::default(),
    };
    let queuelet = serve(router(state, Tokens::default(), &HttpLimits::default())).await?;

    let echo_rps = echo_rate(&echo, workers, run_for).await?;
    let queue = queue_rate(&queuelet, workers, run_for).await?;
    println!("workers: {workers}, {seconds} s each, batches of {BATCH}, {BODY_BYTES}-byte bodies");
    println!("axum echo (same request body as a batch send): {echo_rps:.0} requests/s");
    println!(
        "queuelet send+receive+delete: {:.0} messages/s acknowledged, {:.0} requests/s",
        queue.messages_per_second, queue.requests_per_second
    );
    println!(
        "ratio: queuelet requests/s ÷ echo requests/s = {:.2}; messages/s ÷ echo requests/s = {:.2}",
        queue.requests_per_second / echo_rps,
        queue.messages_per_second / echo_rps
    );
    Ok(())
}
