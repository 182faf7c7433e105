//! Compaction: checkpoints, segment removal and copying live messages forward keep the
//! data directory near the live backlog, and a restart afterwards finds every live
//! message, no deleted one, and the queues as they were.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use queuelet::compaction::compact_once;
use queuelet::engine::{
    DeadLetterPolicy, Engine, EngineConfig, LateJournal, NewMessage, Origin, QueueAttributes,
    SystemClock,
};
use queuelet::store::file::RealFs;
use queuelet::store::log::LogOptions;
use queuelet::store::{Durability, Store, identity_key};

fn open(dir: &Path) -> (Arc<Engine>, Arc<Store>) {
    let journal = Arc::new(LateJournal::default());
    let engine = Arc::new(Engine::new(
        EngineConfig {
            id_key: identity_key(dir).unwrap(),
            ..EngineConfig::new(0)
        },
        Arc::new(SystemClock::default()),
        journal.clone(),
    ));
    let options = LogOptions {
        durability: Durability::Fsync,
        segment_bytes: 64 << 10,
        ..LogOptions::default()
    };
    let (store, _) =
        Store::open(dir, options, Arc::new(RealFs), &mut |r| engine.replay(r)).unwrap();
    let store = Arc::new(store);
    journal.set(store.clone());
    engine.start_replayed();
    (engine, store)
}

fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("log"))
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn body(i: usize) -> Bytes {
    Bytes::from(format!("{i:06}-{}", "z".repeat(900 + i % 200)))
}

/// Receives everything visible; returns id → body.
async fn drain(engine: &Engine, queue: &str) -> BTreeMap<String, Bytes> {
    let mut out = BTreeMap::new();
    loop {
        let got = engine.receive(queue, 16, Some(0)).await.unwrap();
        if got.is_empty() {
            return out;
        }
        for m in got {
            assert!(out.insert(m.id, m.body).is_none(), "duplicate delivery");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_shrinks_the_log_to_the_live_backlog_and_restart_keeps_it() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let (engine, store) = open(dir);
    let orders = QueueAttributes {
        visibility_timeout_seconds: 600,
        dead_letter: Some(DeadLetterPolicy {
            queue: "orders-dlq".into(),
            max_receive_count: Some(5),
            max_time_to_live_seconds: None,
        }),
        ..QueueAttributes::default()
    };
    engine
        .create_queue("orders-dlq", QueueAttributes::default(), Origin::Api)
        .await
        .unwrap();
    engine
        .create_queue("orders", orders.clone(), Origin::Api)
        .await
        .unwrap();

    // 2,000 messages of ~1 KiB over many 64 KiB segments; keep every 50th.
    let mut kept = BTreeMap::new();
    for chunk in (0..2_000).collect::<Vec<_>>().chunks(16) {
        let batch = chunk
            .iter()
            .map(|i| NewMessage {
                body: body(*i),
                ..NewMessage::default()
            })
            .collect();
        let ids = engine.send("orders", batch).await.unwrap();
        for (i, id) in chunk.iter().zip(ids) {
            if i % 50 == 0 {
                kept.insert(id, body(*i));
            }
        }
    }
    let full = log_bytes(dir);
    loop {
        let got = engine.receive("orders", 16, Some(0)).await.unwrap();
        if got.is_empty() {
            break;
        }
        let handles: Vec<String> = got
            .iter()
            .filter(|m| !kept.contains_key(&m.id))
            .map(|m| m.receipt_handle.clone())
            .collect();
        if !handles.is_empty() {
            let results = engine.delete_messages("orders", &handles).await.unwrap();
            assert!(results.iter().all(Result::is_ok));
        }
    }
    let segments_before = store.segments().len();
    assert!(segments_before > 10, "{segments_before} segments");

    let mut worst_pause = Duration::ZERO;
    let mut unused = Default::default();
    for _ in 0..3 {
        let round = compact_once(&engine, &store, &mut unused).await.unwrap();
        worst_pause = worst_pause.max(round.pause);
    }
    let compacted = log_bytes(dir);
    println!(
        "log: {full} bytes with 2000 messages, {compacted} bytes after compaction with {} live; \
         {segments_before} segments → {}; worst pause {worst_pause:?}",
        kept.len(),
        store.segments().len()
    );
    assert!(
        compacted < full / 5,
        "the log should shrink near the live size: {full} → {compacted}"
    );
    // Live messages are all still readable, in flight now (received above).
    assert_eq!(
        engine.get_queue("orders").await.unwrap().stats.inactive,
        kept.len() as u64
    );

    // Records after the checkpoint, then a restart.
    let late = engine
        .send(
            "orders",
            vec![NewMessage {
                body: Bytes::from_static(b"after the checkpoint"),
                tags: vec!["late".into()],
                ..NewMessage::default()
            }],
        )
        .await
        .unwrap();
    store.close();
    drop(store);
    drop(engine);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let (engine, store) = open(dir);
    assert_eq!(engine.get_queue("orders").await.unwrap().attrs, orders);
    let mut found = drain(&engine, "orders").await;
    let late_body = found
        .remove(&late[0])
        .expect("the record after the checkpoint");
    assert_eq!(late_body, Bytes::from_static(b"after the checkpoint"));
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        kept.keys().collect::<Vec<_>>(),
        "exactly the live messages come back"
    );
    assert!(found == kept, "every body comes back byte for byte");
    store.close();
}
