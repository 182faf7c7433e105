//! Engine and log micro-benchmarks for the hot paths: enqueue, receive and delete through
//! the engine alone (in-memory journal), sends appended to the real log in both
//! durability modes, and recovery of a data directory.
//!
//!     cargo bench -p queuelet --bench engine [-- FILTER]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, criterion_group, criterion_main};
use queuelet::engine::{
    Engine, EngineConfig, Journal, MemoryJournal, NewMessage, Origin, QueueAttributes, SystemClock,
};
use queuelet::store::{Durability, Store};
use tokio::runtime::Runtime;

#[path = "support/durable_engine.rs"]
mod durable_engine;

const QUEUE: &str = "bench";

fn attrs() -> QueueAttributes {
    QueueAttributes {
        max_backlog: 1_000_000_000,
        ..QueueAttributes::default()
    }
}

fn messages(n: usize) -> Vec<NewMessage> {
    let body = Bytes::from(vec![b'x'; 256]);
    (0..n)
        .map(|_| NewMessage {
            body: body.clone(),
            ..NewMessage::default()
        })
        .collect()
}

fn engine_over(rt: &Runtime, journal: Arc<dyn Journal>) -> Arc<Engine> {
    let engine = Arc::new(Engine::new(
        EngineConfig::new(0),
        Arc::new(SystemClock::default()),
        journal,
    ));
    rt.block_on(engine.create_queue(QUEUE, attrs(), Origin::Api))
        .expect("create queue");
    engine
}

fn open_store(dir: &Path, durability: Durability) -> (Arc<Engine>, Arc<Store>) {
    durable_engine::open(dir, durability).expect("open store")
}

/// Sends of 1 and of 16 messages, named `{name}/1` and `{name}/16`.
fn bench_sends(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    engine: &Engine,
    name: &str,
) {
    for batch in [1, 16] {
        group.bench_function(format!("{name}/{batch}"), |b| {
            b.iter_batched(
                || messages(batch),
                |batch| rt.block_on(engine.send(QUEUE, batch)).expect("send"),
                BatchSize::SmallInput,
            )
        });
    }
}

/// Sends `n` messages and receives them; returns their receipt handles.
fn received(rt: &Runtime, engine: &Engine, n: usize) -> Vec<String> {
    rt.block_on(async {
        let mut handles = Vec::with_capacity(n);
        for chunk in messages(n).chunks(16) {
            engine.send(QUEUE, chunk.to_vec()).await.expect("send");
        }
        while handles.len() < n {
            let got = engine
                .receive(QUEUE, 16.min(n - handles.len()), Some(0))
                .await
                .expect("receive");
            handles.extend(got.into_iter().map(|m| m.receipt_handle));
        }
        handles
    })
}

fn engine_paths(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let engine = engine_over(&rt, Arc::new(MemoryJournal));
    let mut group = c.benchmark_group("engine");
    bench_sends(&mut group, &rt, &engine, "enqueue");
    // The sends above leave a deep backlog: receive and delete draw from it.
    for batch in [1, 16] {
        group.bench_function(format!("receive/{batch}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(engine.send(QUEUE, messages(16)))
                    .expect("refill");
                let started = Instant::now();
                let mut handles = Vec::new();
                for _ in 0..iters {
                    let got = rt
                        .block_on(engine.receive(QUEUE, batch, Some(0)))
                        .expect("receive");
                    handles.extend(got.into_iter().map(|m| m.receipt_handle));
                }
                let elapsed = started.elapsed();
                for chunk in handles.chunks(16) {
                    rt.block_on(engine.delete_messages(QUEUE, chunk))
                        .expect("delete");
                }
                elapsed
            })
        });
        group.bench_function(format!("delete/{batch}"), |b| {
            b.iter_custom(|iters| {
                let handles = received(&rt, &engine, iters as usize * batch);
                let started = Instant::now();
                for chunk in handles.chunks(batch) {
                    rt.block_on(engine.delete_messages(QUEUE, chunk))
                        .expect("delete");
                }
                started.elapsed()
            })
        });
    }
    group.finish();
}

fn log_append(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("log_append");
    group.measurement_time(Duration::from_secs(3));
    for (label, durability) in [
        ("interval", Durability::Interval(Duration::from_millis(10))),
        ("fsync", Durability::Fsync),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, store) = {
            let _guard = rt.enter();
            open_store(dir.path(), durability)
        };
        rt.block_on(engine.create_queue(QUEUE, attrs(), Origin::Api))
            .expect("create queue");
        bench_sends(&mut group, &rt, &engine, label);
        store.close();
    }
    group.finish();
}

fn recovery(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let _guard = rt.enter();
        let (engine, store) =
            open_store(dir.path(), Durability::Interval(Duration::from_millis(10)));
        rt.block_on(async {
            engine.create_queue(QUEUE, attrs(), Origin::Api).await?;
            for _ in 0..(20_000 / 16) {
                engine.send(QUEUE, messages(16)).await?;
            }
            anyhow::Ok(())
        })
        .expect("fill");
        store.close();
    }
    let mut group = c.benchmark_group("recovery");
    group.sample_size(10);
    group.bench_function("open 20k messages", |b| {
        b.iter(|| {
            let _guard = rt.enter();
            let (_engine, store) =
                open_store(dir.path(), Durability::Interval(Duration::from_millis(10)));
            store.close();
        })
    });
    group.finish();
}

criterion_group!(benches, engine_paths, log_append, recovery);
criterion_main!(benches);
