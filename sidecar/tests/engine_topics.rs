//! Engine-level tests of topics: fan-out to subscribed queues, tag and routing-key
//! filters, refusals, declarations, and that topic records and checkpoints rebuild the
//! same topics.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use queuelet::engine::record::{BodyLoc, Durable, JournalError, LogPosition};
use queuelet::engine::{
    Engine, EngineConfig, EngineError, FilterType, Journal, ManualClock, MemoryJournal, Origin,
    QueueAttributes, Record, SubscriptionPatch, SubscriptionSpec, TopicAttributes,
    TopicAttributesPatch, TopicDeclaration, TopicMessage,
};
use queuelet::store::{checkpoint, frame};

fn engine_with(journal: Arc<dyn Journal>) -> Engine {
    Engine::new(
        EngineConfig::new(0),
        Arc::new(ManualClock::new(1_700_000_000_000)),
        journal,
    )
}

fn engine() -> Engine {
    engine_with(Arc::new(MemoryJournal))
}

/// Keeps every record appended, so a test can replay them into a fresh engine.
#[derive(Default)]
struct Recorder(Mutex<Vec<Record>>);

impl Journal for Recorder {
    fn append(&self, records: Vec<Record>) -> Durable {
        let n = records.len();
        self.0.lock().extend(records);
        Box::pin(std::future::ready(Ok(vec![None; n])))
    }
    fn read_message(&self, loc: BodyLoc) -> Result<(Bytes, Vec<String>), JournalError> {
        Err(JournalError::unavailable(format!(
            "nothing stored at {loc:?}"
        )))
    }
}

fn to_queue(queue: &str) -> SubscriptionSpec {
    SubscriptionSpec {
        queue: Some(queue.into()),
        ..SubscriptionSpec::default()
    }
}

fn tagged(queue: &str, tags: &[&str]) -> SubscriptionSpec {
    SubscriptionSpec {
        filter_tags: tags.iter().map(|t| t.to_string()).collect(),
        ..to_queue(queue)
    }
}

fn bound(queue: &str, keys: &[&str]) -> SubscriptionSpec {
    SubscriptionSpec {
        binding_keys: keys.iter().map(|t| t.to_string()).collect(),
        ..to_queue(queue)
    }
}

fn message(body: &str, tags: &[&str], routing_key: Option<&str>) -> TopicMessage {
    TopicMessage {
        body: Bytes::from(body.to_string()),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        routing_key: routing_key.map(str::to_string),
    }
}

async fn queues(engine: &Engine, names: &[&str]) {
    for name in names {
        engine
            .create_queue(name, QueueAttributes::default(), Origin::Api)
            .await
            .unwrap();
    }
}

/// Bodies waiting in `queue`, received (and so hidden) in order.
async fn bodies(engine: &Engine, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let got = engine.receive(queue, 16, Some(0)).await.unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(
            got.into_iter()
                .map(|m| String::from_utf8_lossy(&m.body).into_owned()),
        );
    }
}

async fn topic(engine: &Engine, name: &str, filter_type: FilterType) {
    let attrs = TopicAttributes {
        filter_type,
        ..TopicAttributes::default()
    };
    engine.create_topic(name, attrs, Origin::Api).await.unwrap();
}

#[tokio::test]
async fn publish_fans_out_once_per_matching_subscription() {
    let engine = engine();
    queues(&engine, &["a", "b", "c"]).await;
    topic(&engine, "events", FilterType::Tag).await;
    for (name, spec) in [
        ("all-a", to_queue("a")),
        ("paid-b", tagged("b", &["paid"])),
        ("vip-b", tagged("b", &["vip", "gold"])),
        ("refund-c", tagged("c", &["refund"])),
    ] {
        engine
            .subscribe("events", name, spec, Origin::Api)
            .await
            .unwrap();
    }
    let published = engine
        .publish(
            "events",
            vec![
                message("one", &["paid", "vip"], None),
                message("two", &[], None),
                message("three", &["refund"], None),
            ],
        )
        .await
        .unwrap();
    assert_eq!(published.ids.len(), 3);
    assert_eq!(published.subscriptions, 4);
    // one: a, b (paid), b (vip); two: a; three: a, c.
    assert_eq!(published.deliveries, 6);
    assert_eq!(bodies(&engine, "a").await, ["one", "two", "three"]);
    assert_eq!(bodies(&engine, "b").await, ["one", "one"]);
    assert_eq!(bodies(&engine, "c").await, ["three"]);
    let tags = engine.receive("a", 1, Some(0)).await.unwrap();
    assert!(tags.is_empty(), "everything was received already");
}

#[tokio::test]
async fn routing_keys_match_binding_patterns() {
    let engine = engine();
    queues(&engine, &["eu", "orders", "all", "none"]).await;
    topic(&engine, "routes", FilterType::RoutingKey).await;
    for (name, spec) in [
        ("eu", bound("eu", &["*.eu.*"])),
        ("orders", bound("orders", &["order.#"])),
        ("all", to_queue("all")),
        ("none", bound("none", &["nothing.*"])),
    ] {
        engine
            .subscribe("routes", name, spec, Origin::Api)
            .await
            .unwrap();
    }
    for (body, key) in [
        ("1", Some("order.eu.paid")),
        ("2", Some("order")),
        ("3", Some("refund.eu.x")),
        ("4", None),
    ] {
        engine
            .publish("routes", vec![message(body, &[], key)])
            .await
            .unwrap();
    }
    assert_eq!(bodies(&engine, "eu").await, ["1", "3"]);
    assert_eq!(bodies(&engine, "orders").await, ["1", "2"]);
    assert_eq!(bodies(&engine, "all").await, ["1", "2", "3", "4"]);
    assert!(bodies(&engine, "none").await.is_empty());
}

#[tokio::test]
async fn publish_without_matching_subscription_delivers_nothing() {
    let engine = engine();
    queues(&engine, &["q"]).await;
    topic(&engine, "t", FilterType::Tag).await;
    let empty = engine
        .publish("t", vec![message("x", &[], None)])
        .await
        .unwrap();
    assert_eq!((empty.subscriptions, empty.deliveries), (0, 0));
    engine
        .subscribe("t", "s", tagged("q", &["a"]), Origin::Api)
        .await
        .unwrap();
    let unmatched = engine
        .publish("t", vec![message("x", &["b"], None)])
        .await
        .unwrap();
    assert_eq!((unmatched.subscriptions, unmatched.deliveries), (1, 0));
    assert!(bodies(&engine, "q").await.is_empty());
}

#[tokio::test]
async fn refusals_change_nothing() {
    let engine = engine();
    queues(&engine, &["q"]).await;
    topic(&engine, "t", FilterType::Tag).await;
    let refused = [
        engine
            .create_topic(
                "t",
                TopicAttributes {
                    max_message_bytes: 2048,
                    ..TopicAttributes::default()
                },
                Origin::Api,
            )
            .await
            .map(drop),
        engine
            .create_topic("9bad", TopicAttributes::default(), Origin::Api)
            .await
            .map(drop),
        engine
            .subscribe("t", "s", to_queue("missing"), Origin::Api)
            .await
            .map(drop),
        engine
            .subscribe("missing", "s", to_queue("q"), Origin::Api)
            .await
            .map(drop),
        engine
            .subscribe("t", "s", bound("q", &["a.b"]), Origin::Api)
            .await
            .map(drop),
        engine
            .update_topic(
                "t",
                &TopicAttributesPatch {
                    filter_type: Some(FilterType::RoutingKey),
                    ..Default::default()
                },
                Origin::Api,
            )
            .await
            .map(drop),
        engine
            .publish("t", vec![message(&"x".repeat(70_000), &[], None)])
            .await
            .map(drop),
        engine
            .publish(
                "t",
                vec![message("x", &["a", "b", "c", "d", "e", "f"], None)],
            )
            .await
            .map(drop),
    ];
    for result in &refused {
        assert!(result.is_err(), "{refused:?}");
    }
    assert_eq!(engine.get_topic("t").unwrap().subscriptions, 0);
    assert_eq!(
        engine.get_topic("t").unwrap().attrs,
        TopicAttributes::default()
    );
    assert!(engine.get_topic("9bad").is_err());
}

#[tokio::test]
async fn subscribed_queue_and_topic_with_subscriptions_cannot_be_deleted() {
    let engine = engine();
    queues(&engine, &["q"]).await;
    topic(&engine, "t", FilterType::Tag).await;
    engine
        .subscribe("t", "s", to_queue("q"), Origin::Api)
        .await
        .unwrap();
    assert!(matches!(
        engine.delete_queue("q", Origin::Api).await,
        Err(EngineError::QueueSubscribed { .. })
    ));
    assert_eq!(
        engine.delete_topic("t", Origin::Api).await,
        Err(EngineError::TopicInUse("t".into()))
    );
    engine.unsubscribe("t", "s", Origin::Api).await.unwrap();
    engine.delete_topic("t", Origin::Api).await.unwrap();
    engine.delete_queue("q", Origin::Api).await.unwrap();
}

#[tokio::test]
async fn subscription_filters_change_and_clear() {
    let engine = engine();
    queues(&engine, &["q"]).await;
    topic(&engine, "t", FilterType::Tag).await;
    engine
        .subscribe("t", "s", tagged("q", &["a"]), Origin::Api)
        .await
        .unwrap();
    let same = engine
        .subscribe("t", "s", tagged("q", &["a"]), Origin::Api)
        .await;
    assert_eq!(same, Ok(queuelet::engine::Created::AlreadyExisted));
    assert!(matches!(
        engine
            .subscribe("t", "s", tagged("q", &["b"]), Origin::Api)
            .await,
        Err(EngineError::SubscriptionExists { .. })
    ));
    let cleared = engine
        .update_subscription(
            "t",
            "s",
            &SubscriptionPatch {
                filter_tags: Some(vec![]),
                ..Default::default()
            },
            Origin::Api,
        )
        .await
        .unwrap();
    assert!(cleared.spec.filter_tags.is_empty());
    engine
        .publish("t", vec![message("now all", &["z"], None)])
        .await
        .unwrap();
    assert_eq!(bodies(&engine, "q").await, ["now all"]);
}

#[tokio::test]
async fn declared_topics_are_managed_and_released() {
    let engine = engine();
    engine
        .apply_declarations(&[("q".to_string(), QueueAttributes::default())])
        .await
        .unwrap();
    let declaration = TopicDeclaration {
        subscriptions: [("s".to_string(), tagged("q", &["a"]))].into(),
        ..TopicDeclaration::default()
    };
    engine
        .apply_topic_declarations(&[("t".to_string(), declaration)])
        .await
        .unwrap();
    assert!(engine.get_topic("t").unwrap().managed);
    assert_eq!(
        engine.unsubscribe("t", "s", Origin::Api).await,
        Err(EngineError::TopicManaged("t".into()))
    );
    engine.apply_topic_declarations(&[]).await.unwrap();
    assert!(!engine.get_topic("t").unwrap().managed);
    engine.unsubscribe("t", "s", Origin::Api).await.unwrap();
}

#[tokio::test]
async fn a_declared_push_subscription_dropped_from_the_file_takes_its_pending_pushes() {
    let engine = engine();
    let hook = SubscriptionSpec {
        endpoint: Some("http://127.0.0.1:9/hook".into()),
        ..SubscriptionSpec::default()
    };
    let with_hook = TopicDeclaration {
        subscriptions: [("hook".to_string(), hook)].into(),
        ..TopicDeclaration::default()
    };
    engine
        .apply_topic_declarations(&[("t".to_string(), with_hook)])
        .await
        .unwrap();
    let pending = queuelet::engine::topic::push_queue_name("t", "hook");
    engine
        .publish("t", vec![message("waiting", &[], None)])
        .await
        .unwrap();
    assert_eq!(engine.get_queue(&pending).await.unwrap().stats.active, 1);
    engine
        .apply_topic_declarations(&[("t".to_string(), TopicDeclaration::default())])
        .await
        .unwrap();
    assert_eq!(engine.get_topic("t").unwrap().subscriptions, 0);
    assert!(engine.get_queue(&pending).await.is_err());
}

#[tokio::test]
async fn topic_records_and_checkpoints_rebuild_the_same_topics() {
    let recorder = Arc::new(Recorder::default());
    let original = engine_with(recorder.clone());
    let engine = &original;
    queues(engine, &["q", "r"]).await;
    topic(engine, "t", FilterType::Tag).await;
    topic(engine, "gone", FilterType::RoutingKey).await;
    topic(engine, "k", FilterType::RoutingKey).await;
    engine
        .subscribe("t", "s", tagged("q", &["a"]), Origin::Api)
        .await
        .unwrap();
    engine
        .subscribe("k", "s", bound("r", &["x.#"]), Origin::Api)
        .await
        .unwrap();
    engine.delete_topic("gone", Origin::Api).await.unwrap();
    let want = engine.list_topics("", 0, 100);
    let want_subs = engine.get_subscription("k", "s").unwrap();

    // Through the log's frames, record by record.
    let replayed = self::engine();
    for (lsn, record) in recorder.0.lock().iter().enumerate() {
        let mut bytes = Vec::new();
        frame::encode(record, lsn as u64, false, &mut bytes);
        let header: [u8; frame::HEADER_LEN] = bytes[..frame::HEADER_LEN].try_into().unwrap();
        let header = frame::Header::parse(&header);
        let loc = BodyLoc {
            segment: 1,
            offset: 0,
            len: bytes.len() as u32,
        };
        let decoded = frame::decode(header.record_kind(), &bytes[frame::HEADER_LEN..], loc)
            .expect("the frame decodes");
        if !matches!(record, Record::Enqueued { .. }) {
            assert_eq!(&decoded, record);
        }
        replayed.replay(decoded);
    }
    assert_eq!(replayed.list_topics("", 0, 100), want);
    assert_eq!(replayed.get_subscription("k", "s").unwrap(), want_subs);

    // Through a checkpoint file's encoding.
    let (snapshot, _mark) = engine.capture();
    let bytes = checkpoint::encode(&snapshot, LogPosition::default());
    let (decoded, _) = checkpoint::decode(&bytes).expect("the checkpoint decodes");
    assert_eq!(decoded, snapshot);
    let restored = self::engine();
    restored.replay(Record::Checkpoint(Box::new(decoded)));
    assert_eq!(restored.list_topics("", 0, 100), want);
    assert_eq!(restored.get_subscription("k", "s").unwrap(), want_subs);
}
