//! HTTP tests of the native `/v1` API against the real binary: life cycle, messages,
//! long polling, refusals, authentication, h2c, observability, shutdown and the
//! configuration file.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use queuelet::api::model::{BodyEncoding, ListQueuesQuery, ReceiveRequest, SendMessage};
use queuelet::client::{Client, ClientError};
use queuelet::engine::{DeadLetterPolicy, QueueAttributes, QueueAttributesPatch};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Server, run_to_exit};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

fn defaults() -> QueueAttributes {
    QueueAttributes::default()
}

fn receive_max(max: usize) -> ReceiveRequest {
    ReceiveRequest {
        max: Some(max),
        ..ReceiveRequest::default()
    }
}

/// Asserts the typed client got the server's error shape with this status and code.
#[track_caller]
fn assert_api_error<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    want_status: u16,
    want_code: &str,
) {
    match result {
        Err(ClientError::Api {
            status,
            code,
            message,
            request_id,
        }) => {
            assert_eq!(
                (status, code.as_str()),
                (want_status, want_code),
                "message: {message}"
            );
            assert!(!message.trim().is_empty(), "empty error message");
            assert!(!request_id.trim().is_empty(), "empty requestId");
        }
        other => panic!("expected {want_status} {want_code}, got {other:?}"),
    }
}

/// A raw HTTP exchange, for requests the typed client cannot make.
#[derive(Debug)]
struct Raw {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text))
    }

    /// Asserts the JSON error shape: status, code, a message and a request id (also
    /// echoed in the `x-request-id` header).
    #[track_caller]
    fn assert_error(&self, want_status: u16, want_code: &str) {
        assert_eq!(
            self.status.as_u16(),
            want_status,
            "unexpected status, body: {}",
            self.text
        );
        let body = self.json();
        assert_eq!(body["code"], want_code, "body: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(!message.trim().is_empty(), "empty message: {body}");
        let request_id = body["requestId"].as_str().unwrap_or_default();
        assert!(!request_id.is_empty(), "empty requestId: {body}");
        assert_eq!(
            self.headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
            Some(request_id),
            "x-request-id header differs from the body's requestId"
        );
    }
}

async fn raw(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    content_type: Option<&str>,
    body: Option<Vec<u8>>,
    token: Option<&str>,
) -> Raw {
    let mut request = http.request(method.clone(), url);
    if let Some(content_type) = content_type {
        request = request.header(reqwest::header::CONTENT_TYPE, content_type);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    if let Some(token) = token {
        request = request.header(reqwest::header::AUTHORIZATION, token);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("response body");
    Raw {
        status,
        headers,
        text,
    }
}

/// A request with a JSON body (any text, valid or not) and the JSON content type.
async fn raw_json(http: &reqwest::Client, method: Method, url: &str, body: &str) -> Raw {
    raw(
        http,
        method,
        url,
        Some("application/json"),
        Some(body.as_bytes().to_vec()),
        None,
    )
    .await
}

async fn raw_get(http: &reqwest::Client, url: &str) -> Raw {
    raw(http, Method::GET, url, None, None, None).await
}

async fn raw_delete(http: &reqwest::Client, url: &str) -> Raw {
    raw(http, Method::DELETE, url, None, None, None).await
}

async fn queue_names(client: &Client) -> Vec<String> {
    client
        .list_queues(&ListQueuesQuery::default())
        .await
        .expect("list queues")
        .queues
        .into_iter()
        .map(|q| q.name)
        .collect()
}

/// Replaces a file's content in one step, as a ConfigMap update does.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temporary config");
    std::fs::rename(&tmp, path).expect("rename config into place");
}

// ---------------------------------------------------------------------------------------
// Queues
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn queue_lifecycle_create_get_list_update_purge_delete() {
    let server = Server::start(&[]);
    let client = server.client();
    let http = reqwest::Client::new();
    let started_ms = now_ms();

    // Create: 201, the same again: 200, different attributes: 409.
    let first = raw_json(
        &http,
        Method::PUT,
        &format!("{}/v1/queues/life", server.url),
        "{}",
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.json()["name"], "life");
    assert_eq!(first.json()["managed"], false);
    let again = raw_json(
        &http,
        Method::PUT,
        &format!("{}/v1/queues/life", server.url),
        "{}",
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    let explicit = serde_json::to_string(&defaults()).unwrap();
    let same = raw_json(
        &http,
        Method::PUT,
        &format!("{}/v1/queues/life", server.url),
        &explicit,
    )
    .await;
    assert_eq!(same.status, StatusCode::OK, "explicit defaults equal {{}}");
    let different = QueueAttributes {
        visibility_timeout_seconds: 31,
        ..defaults()
    };
    assert_api_error(
        client.create_queue("life", &different).await,
        409,
        "queue_exists",
    );
    let created = client.get_queue("life").await.unwrap();
    assert_eq!(created.attributes, defaults());
    assert!(created.created_time_ms >= started_ms - 1_000);
    assert_eq!(created.stats.oldest_message_time_ms, None);

    // Live counts: one active, one in flight, one delayed.
    let first_id = client.send_text("life", "one").await.unwrap();
    client.send_text("life", "two").await.unwrap();
    client
        .send(
            "life",
            &SendMessage {
                delay_seconds: Some(600),
                ..SendMessage::text("later")
            },
        )
        .await
        .unwrap();
    let received = client.receive("life", &receive_max(1)).await.unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].id, first_id, "oldest first");
    let view = client.get_queue("life").await.unwrap();
    assert_eq!(
        (
            view.stats.active,
            view.stats.inactive,
            view.stats.delayed,
            view.stats.rewindable
        ),
        (1, 1, 1, 0)
    );
    let oldest = view
        .stats
        .oldest_message_time_ms
        .expect("oldest message time");
    assert_eq!(oldest, received[0].enqueue_time_ms);
    assert!(oldest >= started_ms - 1_000 && oldest <= now_ms() + 1_000);

    // List with a prefix, paged.
    for name in ["life-a", "life-b", "other"] {
        client.create_queue(name, &defaults()).await.unwrap();
    }
    let page = |prefix: &str, offset: Option<usize>, limit: Option<usize>| ListQueuesQuery {
        prefix: Some(prefix.to_string()),
        offset,
        limit,
    };
    let all = client
        .list_queues(&ListQueuesQuery::default())
        .await
        .unwrap();
    assert_eq!(all.total, 4);
    assert_eq!(all.next_offset, None);
    let names: Vec<_> = all.queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(
        names,
        ["life", "life-a", "life-b", "other"],
        "sorted by name"
    );
    let first_page = client
        .list_queues(&page("life", None, Some(2)))
        .await
        .unwrap();
    assert_eq!(first_page.total, 3);
    assert_eq!(first_page.next_offset, Some(2));
    let names: Vec<_> = first_page.queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["life", "life-a"]);
    assert_eq!(
        first_page.queues[0].stats, view.stats,
        "the list carries live counts too"
    );
    let second_page = client
        .list_queues(&page("life", Some(2), Some(2)))
        .await
        .unwrap();
    assert_eq!(second_page.total, 3);
    assert_eq!(second_page.next_offset, None);
    let names: Vec<_> = second_page.queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["life-b"]);
    let past_end = client
        .list_queues(&page("life", Some(10), None))
        .await
        .unwrap();
    assert!(past_end.queues.is_empty());
    assert_eq!((past_end.total, past_end.next_offset), (3, None));
    let none = client.list_queues(&page("zzz", None, None)).await.unwrap();
    assert_eq!((none.total, none.queues.len()), (0, 0));
    // The wire form: `nextOffset` is absent on the last page.
    let wire = raw_get(
        &http,
        &format!("{}/v1/queues?prefix=life&limit=2", server.url),
    )
    .await;
    assert_eq!(wire.json()["nextOffset"], 2);
    let wire = raw_get(
        &http,
        &format!("{}/v1/queues?prefix=life&offset=2", server.url),
    )
    .await;
    assert!(wire.json().get("nextOffset").is_none(), "{}", wire.text);

    // Partial update: only the given attribute changes.
    let updated = client
        .update_queue(
            "life",
            &QueueAttributesPatch {
                visibility_timeout_seconds: Some(60),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        updated.attributes,
        QueueAttributes {
            visibility_timeout_seconds: 60,
            ..defaults()
        }
    );
    assert!(updated.modified_time_ms >= updated.created_time_ms);
    let updated = client
        .update_queue(
            "life",
            &QueueAttributesPatch {
                max_backlog: Some(100),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.attributes.visibility_timeout_seconds, 60, "kept");
    assert_eq!(updated.attributes.max_backlog, 100);
    assert_eq!(
        updated.stats, view.stats,
        "an update leaves the messages alone"
    );

    // Purge drops every message, in flight and delayed included.
    assert_eq!(client.purge_queue("life").await.unwrap(), 3);
    let purged = client.get_queue("life").await.unwrap();
    assert_eq!(
        (
            purged.stats.active,
            purged.stats.inactive,
            purged.stats.delayed
        ),
        (0, 0, 0)
    );
    assert_eq!(purged.stats.oldest_message_time_ms, None);
    assert!(
        client
            .receive("life", &receive_max(16))
            .await
            .unwrap()
            .is_empty()
    );

    // Delete: 204, then the queue is gone.
    let deleted = raw(
        &http,
        Method::DELETE,
        &format!("{}/v1/queues/life", server.url),
        None,
        None,
        None,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.text.is_empty());
    assert_api_error(client.get_queue("life").await, 404, "queue_not_found");
    assert_api_error(client.delete_queue("life").await, 404, "queue_not_found");
    assert_api_error(client.send_text("life", "x").await, 404, "queue_not_found");
    assert_eq!(queue_names(&client).await, ["life-a", "life-b", "other"]);
}

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn send_text_binary_tags_and_batches() {
    let server = Server::start(&[]);
    let client = server.client();
    client.create_queue("bodies", &defaults()).await.unwrap();

    // Text.
    let text_id = client.send_text("bodies", "héllo wörld ✓").await.unwrap();
    assert!(!text_id.is_empty());
    let got = client.receive("bodies", &receive_max(1)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, text_id);
    assert_eq!(got[0].body, "héllo wörld ✓");
    assert_eq!(got[0].encoding, BodyEncoding::Text);
    assert!(got[0].tags.is_empty());
    client
        .delete("bodies", &got[0].receipt_handle)
        .await
        .unwrap();

    // Binary that is not UTF-8 comes back as base64, byte for byte.
    let binary: Vec<u8> = vec![0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0x7f, 0x00, 0xf0];
    assert!(std::str::from_utf8(&binary).is_err());
    let binary_id = client
        .send(
            "bodies",
            &SendMessage {
                body: STANDARD.encode(&binary),
                encoding: BodyEncoding::Base64,
                delay_seconds: None,
                tags: vec!["bin".into(), "raw-bytes".into()],
            },
        )
        .await
        .unwrap();
    let got = client.receive("bodies", &receive_max(1)).await.unwrap();
    assert_eq!(got[0].id, binary_id);
    assert_eq!(
        got[0].encoding,
        BodyEncoding::Base64,
        "non-UTF-8 must not come back as text"
    );
    assert_eq!(STANDARD.decode(&got[0].body).unwrap(), binary);
    assert_eq!(got[0].tags, ["bin", "raw-bytes"], "tags round-trip");
    client
        .delete("bodies", &got[0].receipt_handle)
        .await
        .unwrap();

    // A base64-sent UTF-8 body is text; asking for base64 returns base64.
    client
        .send(
            "bodies",
            &SendMessage {
                body: STANDARD.encode("plain"),
                encoding: BodyEncoding::Base64,
                delay_seconds: None,
                tags: vec![],
            },
        )
        .await
        .unwrap();
    let got = client
        .receive(
            "bodies",
            &ReceiveRequest {
                encoding: BodyEncoding::Base64,
                ..receive_max(1)
            },
        )
        .await
        .unwrap();
    assert_eq!(got[0].encoding, BodyEncoding::Base64);
    assert_eq!(STANDARD.decode(&got[0].body).unwrap(), b"plain");
    client
        .delete("bodies", &got[0].receipt_handle)
        .await
        .unwrap();

    // A batch of 16 (the limit) and a receive of 16.
    let batch: Vec<SendMessage> = (0..16)
        .map(|i| SendMessage {
            tags: vec![format!("n{i}")],
            ..SendMessage::text(format!("m{i}"))
        })
        .collect();
    let ids = client.send_batch("bodies", batch).await.unwrap();
    assert_eq!(ids.len(), 16);
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        16,
        "ids are distinct"
    );
    assert_eq!(client.get_queue("bodies").await.unwrap().stats.active, 16);
    let got = client.receive("bodies", &receive_max(16)).await.unwrap();
    assert_eq!(got.len(), 16);
    let received_ids: Vec<_> = got.iter().map(|m| m.id.clone()).collect();
    assert_eq!(received_ids, ids, "received in send order");
    for (i, message) in got.iter().enumerate() {
        assert_eq!(message.body, format!("m{i}"));
        assert_eq!(message.tags, [format!("n{i}")]);
    }
    let handles: Vec<String> = got.iter().map(|m| m.receipt_handle.clone()).collect();
    let results = client.delete_batch("bodies", handles).await.unwrap();
    assert!(results.iter().all(|r| r.ok), "{results:?}");

    // Over the limit, and empty: refused, nothing enqueued.
    let seventeen: Vec<SendMessage> = (0..17)
        .map(|i| SendMessage::text(format!("x{i}")))
        .collect();
    assert_api_error(
        client.send_batch("bodies", seventeen).await,
        400,
        "batch_too_large",
    );
    assert_api_error(
        client.send_batch("bodies", vec![]).await,
        400,
        "empty_batch",
    );
    let stats = client.get_queue("bodies").await.unwrap().stats;
    assert_eq!((stats.active, stats.inactive, stats.delayed), (0, 0, 0));

    // Receive bounds.
    assert_api_error(
        client.receive("bodies", &receive_max(17)).await,
        400,
        "invalid_request",
    );
    assert_api_error(
        client.receive("bodies", &receive_max(0)).await,
        400,
        "invalid_request",
    );
    // Nothing visible and no wait: an empty list at once.
    let started = Instant::now();
    assert!(
        client
            .receive("bodies", &receive_max(16))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(started.elapsed() < Duration::from_millis(900));
}

#[tokio::test]
async fn delivery_fields_change_visibility_and_timeout() {
    let server = Server::start(&[]);
    let client = server.client();
    client
        .create_queue(
            "vis",
            &QueueAttributes {
                visibility_timeout_seconds: 1,
                ..defaults()
            },
        )
        .await
        .unwrap();
    client
        .create_queue(
            "held",
            &QueueAttributes {
                visibility_timeout_seconds: 30,
                ..defaults()
            },
        )
        .await
        .unwrap();
    let before = now_ms();
    let id = client.send_text("held", "payload").await.unwrap();

    let first = client.receive("held", &receive_max(16)).await.unwrap();
    assert_eq!(first.len(), 1);
    let m1 = &first[0];
    assert_eq!(m1.id, id);
    assert_eq!(m1.dequeue_count, 1);
    assert!(m1.enqueue_time_ms >= before - 1_000);
    assert!(m1.first_dequeue_time_ms >= m1.enqueue_time_ms);
    assert_eq!(
        m1.next_visible_time_ms,
        m1.first_dequeue_time_ms + 30_000,
        "hidden for the queue's visibility timeout"
    );
    assert!(
        client
            .receive("held", &receive_max(1))
            .await
            .unwrap()
            .is_empty(),
        "in flight: invisible"
    );
    let stats = client.get_queue("held").await.unwrap().stats;
    assert_eq!((stats.active, stats.inactive), (0, 1));

    // Visibility 0: receivable again at once, with a new handle; the old one is stale.
    let visible_at = client
        .change_visibility("held", &m1.receipt_handle, 0)
        .await
        .unwrap();
    assert!(visible_at <= now_ms() + 1_000);
    let stats = client.get_queue("held").await.unwrap().stats;
    assert_eq!((stats.active, stats.inactive), (1, 0));
    let second = client.receive("held", &receive_max(1)).await.unwrap();
    assert_eq!(second.len(), 1, "visible again immediately");
    let m2 = &second[0];
    assert_eq!(m2.id, id);
    assert_eq!(m2.dequeue_count, 2);
    assert_eq!(
        m2.first_dequeue_time_ms, m1.first_dequeue_time_ms,
        "first dequeue time is kept"
    );
    assert_ne!(m2.receipt_handle, m1.receipt_handle);
    assert_api_error(
        client.delete("held", &m1.receipt_handle).await,
        409,
        "stale_receipt_handle",
    );
    assert_api_error(
        client
            .change_visibility("held", &m1.receipt_handle, 5)
            .await,
        409,
        "stale_receipt_handle",
    );
    // Extending with the current handle moves nextVisibleTime.
    let later = client
        .change_visibility("held", &m2.receipt_handle, 600)
        .await
        .unwrap();
    assert!(later >= now_ms() + 590_000);
    assert_api_error(
        client
            .change_visibility("held", &m2.receipt_handle, 43_201)
            .await,
        400,
        "invalid_request",
    );
    client.delete("held", &m2.receipt_handle).await.unwrap();
    assert_eq!(client.get_queue("held").await.unwrap().stats.inactive, 0);

    // A visibility timeout that runs out makes the message visible again by itself.
    client.send_text("vis", "comes back").await.unwrap();
    let got = client.receive("vis", &receive_max(1)).await.unwrap();
    assert_eq!(got.len(), 1);
    let again = client
        .receive(
            "vis",
            &ReceiveRequest {
                wait_seconds: Some(5),
                ..receive_max(1)
            },
        )
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "visible again after 1 s");
    assert_eq!(again[0].id, got[0].id);
    assert_eq!(again[0].dequeue_count, 2);
    assert_api_error(
        client.delete("vis", &got[0].receipt_handle).await,
        409,
        "stale_receipt_handle",
    );
}

#[tokio::test]
async fn delete_by_handle_single_and_batch() {
    let server = Server::start(&[]);
    let client = server.client();
    let http = reqwest::Client::new();
    client.create_queue("del", &defaults()).await.unwrap();
    client
        .send_batch(
            "del",
            (0..4).map(|i| SendMessage::text(format!("d{i}"))).collect(),
        )
        .await
        .unwrap();
    let got = client.receive("del", &receive_max(4)).await.unwrap();
    assert_eq!(got.len(), 4);

    // Single delete: 204 with no body; the same handle again: 409 stale.
    let url = format!(
        "{}/v1/queues/del/messages/{}",
        server.url, got[0].receipt_handle
    );
    let deleted = raw(&http, Method::DELETE, &url, None, None, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.text.is_empty());
    raw(&http, Method::DELETE, &url, None, None, None)
        .await
        .assert_error(409, "stale_receipt_handle");
    assert_api_error(
        client.delete("del", &got[0].receipt_handle).await,
        409,
        "stale_receipt_handle",
    );

    // Forged handles: garbage, and a real one with a byte altered.
    assert_api_error(
        client.delete("del", "not-a-receipt-handle").await,
        400,
        "invalid_receipt_handle",
    );
    let mut forged: Vec<char> = got[1].receipt_handle.chars().collect();
    let at = forged.len() / 2;
    forged[at] = if forged[at] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    assert_api_error(
        client.delete("del", &forged).await,
        400,
        "invalid_receipt_handle",
    );
    // A handle of another queue does not delete there.
    client.create_queue("del-other", &defaults()).await.unwrap();
    assert_api_error(
        client.delete("del-other", &got[1].receipt_handle).await,
        400,
        "invalid_receipt_handle",
    );
    let stats = client.get_queue("del").await.unwrap().stats;
    assert_eq!(stats.inactive, 3, "refused deletes changed nothing");

    // Batch delete: one result per handle, in order.
    let results = client
        .delete_batch(
            "del",
            vec![
                got[1].receipt_handle.clone(),
                got[0].receipt_handle.clone(),
                forged.clone(),
                got[2].receipt_handle.clone(),
                "%%%".to_string(),
            ],
        )
        .await
        .unwrap();
    let summary: Vec<(bool, Option<&str>)> =
        results.iter().map(|r| (r.ok, r.code.as_deref())).collect();
    assert_eq!(
        summary,
        [
            (true, None),
            (false, Some("stale_receipt_handle")),
            (false, Some("invalid_receipt_handle")),
            (true, None),
            (false, Some("invalid_receipt_handle")),
        ]
    );
    assert_eq!(results[1].receipt_handle, got[0].receipt_handle);
    assert_eq!(results[4].receipt_handle, "%%%");
    assert!(
        results
            .iter()
            .filter(|r| !r.ok)
            .all(|r| r.message.as_deref().is_some_and(|m| !m.is_empty()))
    );
    let stats = client.get_queue("del").await.unwrap().stats;
    assert_eq!((stats.active, stats.inactive), (0, 1));

    // Batch bounds.
    assert_api_error(client.delete_batch("del", vec![]).await, 400, "empty_batch");
    let many: Vec<String> = (0..17).map(|_| got[3].receipt_handle.clone()).collect();
    assert_api_error(
        client.delete_batch("del", many).await,
        400,
        "batch_too_large",
    );
    assert_eq!(client.get_queue("del").await.unwrap().stats.inactive, 1);
    client.delete("del", &got[3].receipt_handle).await.unwrap();
    assert_eq!(client.get_queue("del").await.unwrap().stats.inactive, 0);
}

#[tokio::test]
async fn receipt_handles_of_other_servers_are_refused() {
    let origin = Server::start(&[]);
    let other_replica = Server::start(&["--replica-ordinal", "3"]);
    let same_ordinal = Server::start(&[]);
    let handle = {
        let client = origin.client();
        client.create_queue("shared", &defaults()).await.unwrap();
        client.send_text("shared", "x").await.unwrap();
        client.receive("shared", &receive_max(1)).await.unwrap()[0]
            .receipt_handle
            .clone()
    };
    for server in [&other_replica, &same_ordinal] {
        let client = server.client();
        client.create_queue("shared", &defaults()).await.unwrap();
        client.send_text("shared", "y").await.unwrap();
        client.receive("shared", &receive_max(1)).await.unwrap();
    }
    // The handle names replica 0: replica 3 says so; another replica 0 cannot verify it.
    assert_api_error(
        other_replica.client().delete("shared", &handle).await,
        421,
        "wrong_replica",
    );
    assert_api_error(
        same_ordinal.client().delete("shared", &handle).await,
        400,
        "invalid_receipt_handle",
    );
    for server in [&other_replica, &same_ordinal] {
        let stats = server.client().get_queue("shared").await.unwrap().stats;
        assert_eq!(stats.inactive, 1, "nothing deleted");
    }
    origin.client().delete("shared", &handle).await.unwrap();
}

#[tokio::test]
async fn per_message_delay_hides_then_releases() {
    let server = Server::start(&[]);
    let client = server.client();
    client.create_queue("delay", &defaults()).await.unwrap();
    let sent_at = Instant::now();
    let id = client
        .send(
            "delay",
            &SendMessage {
                delay_seconds: Some(1),
                ..SendMessage::text("soon")
            },
        )
        .await
        .unwrap();
    let stats = client.get_queue("delay").await.unwrap().stats;
    assert_eq!((stats.active, stats.delayed), (0, 1));
    assert!(
        client
            .receive("delay", &receive_max(16))
            .await
            .unwrap()
            .is_empty(),
        "delayed messages are invisible"
    );
    // A long poll picks it up once its delay is over.
    let got = client
        .receive(
            "delay",
            &ReceiveRequest {
                wait_seconds: Some(5),
                ..receive_max(1)
            },
        )
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, id);
    let waited = sent_at.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    let stats = client.get_queue("delay").await.unwrap().stats;
    assert_eq!((stats.delayed, stats.inactive), (0, 1));

    // The queue's default delay applies when the message names none.
    client
        .update_queue(
            "delay",
            &QueueAttributesPatch {
                delay_seconds: Some(600),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    client.send_text("delay", "default delay").await.unwrap();
    client
        .send(
            "delay",
            &SendMessage {
                delay_seconds: Some(0),
                ..SendMessage::text("no delay")
            },
        )
        .await
        .unwrap();
    let stats = client.get_queue("delay").await.unwrap().stats;
    assert_eq!((stats.active, stats.delayed), (1, 1));
}

#[tokio::test]
async fn dead_letter_queue_after_max_receive_count() {
    let server = Server::start(&[]);
    let client = server.client();
    let policy = |queue: &str| QueueAttributes {
        dead_letter: Some(DeadLetterPolicy {
            queue: queue.into(),
            max_receive_count: Some(2),
            max_time_to_live_seconds: None,
        }),
        ..defaults()
    };
    assert_api_error(
        client.create_queue("work", &policy("dlq")).await,
        400,
        "dead_letter_queue_not_found",
    );
    client.create_queue("dlq", &defaults()).await.unwrap();
    let view = client.create_queue("work", &policy("dlq")).await.unwrap();
    assert_eq!(
        view.attributes
            .dead_letter
            .as_ref()
            .map(|p| p.queue.as_str()),
        Some("dlq")
    );
    let id = client.send_text("work", "poison").await.unwrap();

    for attempt in 1..=2 {
        let got = client.receive("work", &receive_max(1)).await.unwrap();
        assert_eq!(got.len(), 1, "attempt {attempt}");
        assert_eq!(got[0].dequeue_count, attempt);
        client
            .change_visibility("work", &got[0].receipt_handle, 0)
            .await
            .unwrap();
    }
    // The third receive moves it instead of delivering it.
    assert!(
        client
            .receive("work", &receive_max(1))
            .await
            .unwrap()
            .is_empty()
    );
    let work = client.get_queue("work").await.unwrap().stats;
    assert_eq!((work.active, work.inactive, work.delayed), (0, 0, 0));
    let dlq = client.get_queue("dlq").await.unwrap().stats;
    assert_eq!(dlq.active, 1);
    let dead = client.receive("dlq", &receive_max(1)).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
    assert_eq!(
        dead[0].dequeue_count, 1,
        "counted afresh in the dead-letter queue"
    );
    assert_ne!(dead[0].id, id, "a new message in its new queue");

    // The dead-letter queue cannot be deleted while it is in use.
    assert_api_error(client.delete_queue("dlq").await, 409, "queue_in_use");
    let metrics = raw_get(&reqwest::Client::new(), &format!("{}/metrics", server.url)).await;
    assert!(
        metrics
            .text
            .contains("queuelet_messages_dead_lettered_total 1"),
        "{}",
        metrics.text
    );
}

#[tokio::test]
async fn backlog_bound_and_message_size_limit() {
    let server = Server::start(&[]);
    let client = server.client();
    client
        .create_queue(
            "small",
            &QueueAttributes {
                max_backlog: 2,
                max_message_bytes: 1_024,
                ..defaults()
            },
        )
        .await
        .unwrap();
    client.send_text("small", "a").await.unwrap();
    client.send_text("small", "b").await.unwrap();
    assert_api_error(client.send_text("small", "c").await, 429, "queue_full");
    let stats = client.get_queue("small").await.unwrap().stats;
    assert_eq!(stats.active, 2);
    // In-flight messages still count against the bound; deleting frees room.
    let got = client.receive("small", &receive_max(1)).await.unwrap();
    assert_api_error(client.send_text("small", "c").await, 429, "queue_full");
    client
        .delete("small", &got[0].receipt_handle)
        .await
        .unwrap();
    client.send_text("small", "c").await.unwrap();
    // A batch that would overflow is refused whole.
    client.purge_queue("small").await.unwrap();
    client.send_text("small", "one").await.unwrap();
    assert_api_error(
        client
            .send_batch(
                "small",
                vec![SendMessage::text("x"), SendMessage::text("y")],
            )
            .await,
        429,
        "queue_full",
    );
    assert_eq!(client.get_queue("small").await.unwrap().stats.active, 1);

    // Size: exactly maxMessageBytes is fine, one byte more is a 413.
    client.purge_queue("small").await.unwrap();
    client.send_text("small", &"x".repeat(1_024)).await.unwrap();
    client.purge_queue("small").await.unwrap();
    assert_api_error(
        client.send_text("small", &"x".repeat(1_025)).await,
        413,
        "message_too_large",
    );
    // Bytes are counted after base64 decoding.
    assert_api_error(
        client
            .send(
                "small",
                &SendMessage {
                    body: STANDARD.encode(vec![0u8; 1_025]),
                    encoding: BodyEncoding::Base64,
                    delay_seconds: None,
                    tags: vec![],
                },
            )
            .await,
        413,
        "message_too_large",
    );
    client
        .send(
            "small",
            &SendMessage {
                body: STANDARD.encode(vec![0u8; 1_024]),
                encoding: BodyEncoding::Base64,
                delay_seconds: None,
                tags: vec![],
            },
        )
        .await
        .unwrap();
    // One oversized message refuses the whole batch.
    assert_api_error(
        client
            .send_batch(
                "small",
                vec![
                    SendMessage::text("ok"),
                    SendMessage::text("y".repeat(2_000)),
                ],
            )
            .await,
        413,
        "message_too_large",
    );
    assert_eq!(client.get_queue("small").await.unwrap().stats.active, 1);
}

#[tokio::test]
async fn rewind_replays_deleted_messages() {
    let server = Server::start(&[]);
    let client = server.client();
    client
        .create_queue(
            "replay",
            &QueueAttributes {
                rewind_seconds: 3_600,
                ..defaults()
            },
        )
        .await
        .unwrap();
    client.create_queue("norewind", &defaults()).await.unwrap();

    let id = client.send_text("replay", "again").await.unwrap();
    let got = client.receive("replay", &receive_max(1)).await.unwrap();
    client
        .delete("replay", &got[0].receipt_handle)
        .await
        .unwrap();
    let stats = client.get_queue("replay").await.unwrap().stats;
    assert_eq!((stats.active, stats.inactive, stats.rewindable), (0, 0, 1));
    assert!(
        client
            .receive("replay", &receive_max(1))
            .await
            .unwrap()
            .is_empty()
    );

    // Outside the window, or in the future: refused, nothing changes.
    assert_api_error(
        client.rewind_queue("replay", now_ms() - 7_200_000).await,
        409,
        "rewind_refused",
    );
    assert_api_error(
        client.rewind_queue("replay", now_ms() + 600_000).await,
        409,
        "rewind_refused",
    );
    assert_eq!(
        client.get_queue("replay").await.unwrap().stats.rewindable,
        1
    );

    let rewound = client
        .rewind_queue("replay", got[0].enqueue_time_ms)
        .await
        .unwrap();
    assert_eq!(rewound, 1);
    let stats = client.get_queue("replay").await.unwrap().stats;
    assert_eq!((stats.active, stats.rewindable), (1, 0));
    let replayed = client.receive("replay", &receive_max(1)).await.unwrap();
    assert_eq!(replayed.len(), 1, "consumable again");
    assert_eq!(replayed[0].id, id);
    assert_eq!(replayed[0].body, "again");
    assert_api_error(
        client.delete("replay", &got[0].receipt_handle).await,
        409,
        "stale_receipt_handle",
    );
    client
        .delete("replay", &replayed[0].receipt_handle)
        .await
        .unwrap();

    // A queue without a rewind window refuses.
    client.send_text("norewind", "x").await.unwrap();
    assert_api_error(
        client.rewind_queue("norewind", now_ms() - 1_000).await,
        409,
        "rewind_refused",
    );
    let stats = client.get_queue("norewind").await.unwrap().stats;
    assert_eq!((stats.active, stats.rewindable), (1, 0));
}

// ---------------------------------------------------------------------------------------
// Long polling
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn long_poll_returns_early_when_a_message_arrives() {
    let server = Server::start(&[]);
    let client = server.client();
    client.create_queue("poll", &defaults()).await.unwrap();
    let sender = {
        let client = client.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            client.send_text("poll", "wake up").await.unwrap()
        })
    };
    let started = Instant::now();
    let got = client
        .receive(
            "poll",
            &ReceiveRequest {
                wait_seconds: Some(5),
                ..receive_max(16)
            },
        )
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let id = sender.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, id);
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "returned after {elapsed:?}"
    );
}

#[tokio::test]
async fn long_poll_on_empty_queue_waits_then_returns_nothing() {
    let server = Server::start(&[]);
    let client = server.client();
    client.create_queue("quiet", &defaults()).await.unwrap();
    let started = Instant::now();
    let got = client
        .receive(
            "quiet",
            &ReceiveRequest {
                wait_seconds: Some(1),
                ..receive_max(1)
            },
        )
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(got.is_empty());
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "returned after {elapsed:?}"
    );

    // The queue's pollingWaitSeconds is the default wait.
    client
        .update_queue(
            "quiet",
            &QueueAttributesPatch {
                polling_wait_seconds: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let started = Instant::now();
    assert!(
        client
            .receive("quiet", &receive_max(1))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(900));

    let started = Instant::now();
    assert_api_error(
        client
            .receive(
                "quiet",
                &ReceiveRequest {
                    wait_seconds: Some(31),
                    ..receive_max(1)
                },
            )
            .await,
        400,
        "invalid_request",
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once"
    );
}

// ---------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_inputs_are_refused_and_change_nothing() {
    let server = Server::start(&[]);
    let client = server.client();
    let http = reqwest::Client::new();
    let base = format!("{}/v1/queues", server.url);
    client
        .create_queue(
            "stable",
            &QueueAttributes {
                rewind_seconds: 60,
                ..defaults()
            },
        )
        .await
        .unwrap();
    client.send_text("stable", "keep me").await.unwrap();
    client
        .send(
            "stable",
            &SendMessage {
                delay_seconds: Some(600),
                ..SendMessage::text("delayed")
            },
        )
        .await
        .unwrap();
    let snapshot = client.get_queue("stable").await.unwrap();
    let names = queue_names(&client).await;
    let stable = format!("{base}/stable");
    let messages = format!("{base}/stable/messages");

    // Malformed JSON.
    for (method, url, body) in [
        (Method::PUT, &stable, r#"{"visibilityTimeoutSeconds": 5,"#),
        (Method::PATCH, &stable, "{visibilityTimeoutSeconds: 5}"),
        (Method::POST, &messages, r#"{"body": "x""#),
        (Method::POST, &messages, ""),
        (
            Method::POST,
            &format!("{messages}/batch"),
            r#"{"messages": [{"body": "x"}"#,
        ),
        (Method::POST, &format!("{messages}/receive"), "{'max': 1}"),
    ] {
        raw_json(&http, method, url, body)
            .await
            .assert_error(400, "malformed_json");
    }

    // Unknown fields, wrong types, missing fields.
    for (method, url, body) in [
        (
            Method::PUT,
            &format!("{base}/fresh"),
            r#"{"visibilityTimeout": 5}"#,
        ),
        (Method::PATCH, &stable, r#"{"visibility": 5}"#),
        (
            Method::PATCH,
            &stable,
            r#"{"visibilityTimeoutSeconds": "5"}"#,
        ),
        (Method::POST, &messages, r#"{"body": "x", "delay": 3}"#),
        (Method::POST, &messages, r#"{"body": 5}"#),
        (Method::POST, &messages, r#"{"text": "x"}"#),
        (
            Method::POST,
            &messages,
            r#"{"body": "x", "delaySeconds": -1}"#,
        ),
        (
            Method::POST,
            &messages,
            r#"{"body": "x", "encoding": "hex"}"#,
        ),
        (
            Method::POST,
            &format!("{messages}/batch"),
            r#"[{"body": "x"}]"#,
        ),
        (
            Method::POST,
            &format!("{messages}/receive"),
            r#"{"maxMessages": 2}"#,
        ),
        (
            Method::POST,
            &format!("{messages}/delete"),
            r#"{"handles": []}"#,
        ),
        (
            Method::POST,
            &format!("{messages}/visibility"),
            r#"{"receiptHandle": "x"}"#,
        ),
        (
            Method::POST,
            &format!("{base}/stable/rewind"),
            r#"{"startTime": 1}"#,
        ),
    ] {
        raw_json(&http, method, url, body)
            .await
            .assert_error(400, "invalid_request");
    }
    for query in ["limit=0", "limit=1001", "limit=ten", "offset=-1", "page=2"] {
        raw_get(&http, &format!("{base}?{query}"))
            .await
            .assert_error(400, "invalid_request");
    }

    // Invalid message content.
    for body in [
        json!({"body": "x", "delaySeconds": 3601}),
        json!({"body": "x", "tags": ["a", "b", "c", "d", "e", "f"]}),
        json!({"body": "x", "tags": [""]}),
        json!({"body": "x", "tags": ["seventeen-chars-x"]}),
    ] {
        raw_json(&http, Method::POST, &messages, &body.to_string())
            .await
            .assert_error(400, "invalid_message");
    }

    // Bad base64, alone or inside a batch with good messages.
    for body in ["!!!not base64!!!", "aGVsbG8", "aGVsbG8=="] {
        let message = json!({"body": body, "encoding": "base64"});
        raw_json(&http, Method::POST, &messages, &message.to_string())
            .await
            .assert_error(400, "invalid_body_encoding");
    }
    let batch = json!({"messages": [
        {"body": "fine"},
        {"body": "%%%", "encoding": "base64"},
    ]});
    raw_json(
        &http,
        Method::POST,
        &format!("{messages}/batch"),
        &batch.to_string(),
    )
    .await
    .assert_error(400, "invalid_body_encoding");

    // Missing queue.
    let missing = format!("{base}/missing");
    raw_get(&http, &missing)
        .await
        .assert_error(404, "queue_not_found");
    for (method, url, body) in [
        (Method::PATCH, missing.clone(), "{}"),
        (
            Method::POST,
            format!("{missing}/messages"),
            r#"{"body": "x"}"#,
        ),
        (
            Method::POST,
            format!("{missing}/messages/batch"),
            r#"{"messages": [{"body": "x"}]}"#,
        ),
        (Method::POST, format!("{missing}/messages/receive"), "{}"),
        (Method::POST, format!("{missing}/purge"), ""),
        (
            Method::POST,
            format!("{missing}/rewind"),
            r#"{"startTimeMs": 1}"#,
        ),
    ] {
        raw_json(&http, method, &url, body)
            .await
            .assert_error(404, "queue_not_found");
    }
    raw(&http, Method::DELETE, &missing, None, None, None)
        .await
        .assert_error(404, "queue_not_found");
    assert_api_error(client.delete_queue("missing").await, 404, "queue_not_found");

    // Invalid queue names.
    let long_name = format!("a{}", "b".repeat(64));
    assert_eq!(long_name.len(), 65);
    for name in [
        "1abc",
        long_name.as_str(),
        "a%20b",
        "-abc",
        "a.b",
        "%C3%A9t%C3%A9",
    ] {
        raw_json(&http, Method::PUT, &format!("{base}/{name}"), "{}")
            .await
            .assert_error(400, "invalid_queue_name");
    }
    assert_api_error(
        client.create_queue("a b", &defaults()).await,
        400,
        "invalid_queue_name",
    );
    let exactly_64 = format!("a{}", "b".repeat(63));
    assert_api_error(client.get_queue(&exactly_64).await, 404, "queue_not_found");

    // Out-of-range attributes, on create and on update.
    for attrs in [
        json!({"visibilityTimeoutSeconds": 0}),
        json!({"visibilityTimeoutSeconds": 50000}),
        json!({"pollingWaitSeconds": 31}),
        json!({"maxMessageBytes": 100}),
        json!({"retentionSeconds": 10}),
        json!({"maxBacklog": 0}),
        json!({"rewindSeconds": 400000}),
        json!({"deadLetter": {"queue": "stable"}}),
        json!({"deadLetter": {"queue": "1bad", "maxReceiveCount": 1}}),
        json!({"deadLetter": {"queue": "stable", "maxReceiveCount": 0}}),
    ] {
        raw_json(
            &http,
            Method::PUT,
            &format!("{base}/fresh"),
            &attrs.to_string(),
        )
        .await
        .assert_error(400, "invalid_attribute");
    }
    for patch in [
        json!({"visibilityTimeoutSeconds": 0}),
        json!({"visibilityTimeoutSeconds": 50000}),
        json!({"retentionSeconds": 30}),
        json!({"deadLetter": {"queue": "stable", "maxReceiveCount": 3}}),
    ] {
        raw_json(&http, Method::PATCH, &stable, &patch.to_string())
            .await
            .assert_error(400, "invalid_attribute");
    }
    raw_json(
        &http,
        Method::PATCH,
        &stable,
        r#"{"deadLetter": {"queue": "nowhere", "maxReceiveCount": 3}}"#,
    )
    .await
    .assert_error(400, "dead_letter_queue_not_found");
    raw_json(
        &http,
        Method::PUT,
        &stable,
        r#"{"visibilityTimeoutSeconds": 99}"#,
    )
    .await
    .assert_error(409, "queue_exists");

    // Wrong or missing content type.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        raw(
            &http,
            Method::POST,
            &messages,
            content_type,
            Some(br#"{"body": "x"}"#.to_vec()),
            None,
        )
        .await
        .assert_error(415, "unsupported_media_type");
        raw(
            &http,
            Method::PUT,
            &format!("{base}/fresh"),
            content_type,
            Some(b"{}".to_vec()),
            None,
        )
        .await
        .assert_error(415, "unsupported_media_type");
    }

    // Receipt handles and visibility.
    for (url, body, code) in [
        (
            format!("{messages}/visibility"),
            json!({"receiptHandle": "garbage", "visibilityTimeoutSeconds": 0}),
            "invalid_receipt_handle",
        ),
        (
            format!("{messages}/visibility"),
            json!({"receiptHandle": "garbage", "visibilityTimeoutSeconds": -1}),
            "invalid_request",
        ),
        (
            format!("{messages}/delete"),
            json!({"receiptHandles": []}),
            "empty_batch",
        ),
        (
            format!("{messages}/delete"),
            json!({"receiptHandles": vec!["garbage"; 17]}),
            "batch_too_large",
        ),
    ] {
        raw_json(&http, Method::POST, &url, &body.to_string())
            .await
            .assert_error(400, code);
    }
    raw(
        &http,
        Method::DELETE,
        &format!("{messages}/garbage"),
        None,
        None,
        None,
    )
    .await
    .assert_error(400, "invalid_receipt_handle");

    // A request id given by the caller is echoed back.
    let mine = http
        .get(&missing)
        .header("x-request-id", "test-request-42")
        .send()
        .await
        .unwrap();
    assert_eq!(mine.headers()["x-request-id"], "test-request-42");
    let body: Value = mine.json().await.unwrap();
    assert_eq!(body["requestId"], "test-request-42");

    // Nothing of all this changed any state.
    assert_eq!(client.get_queue("stable").await.unwrap(), snapshot);
    assert_eq!(queue_names(&client).await, names);
    assert_api_error(client.get_queue("fresh").await, 404, "queue_not_found");
    let got = client.receive("stable", &receive_max(16)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "keep me");
    assert_eq!(got[0].dequeue_count, 1);
}

#[tokio::test]
async fn oversized_request_body_is_refused() {
    let server = Server::start(&["--max-request-bytes", "1024"]);
    let client = server.client();
    let http = reqwest::Client::new();
    client.create_queue("tiny", &defaults()).await.unwrap();
    let messages = format!("{}/v1/queues/tiny/messages", server.url);
    let big = json!({"body": "x".repeat(2_000)}).to_string();
    raw_json(&http, Method::POST, &messages, &big)
        .await
        .assert_error(413, "request_too_large");
    // Without a Content-Length (chunked), too.
    let (status, text) =
        chunked_post(&server.url, "/v1/queues/tiny/messages", big.as_bytes()).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("request_too_large"), "{text}");
    // Under the limit is fine.
    client.send_text("tiny", &"y".repeat(500)).await.unwrap();
    let stats = client.get_queue("tiny").await.unwrap().stats;
    assert_eq!(stats.active, 1, "only the small message got in");
}

/// POSTs a JSON body with `Transfer-Encoding: chunked` (no Content-Length) over a raw
/// HTTP/1.1 connection; returns the status and the whole response text.
async fn chunked_post(base: &str, path: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let authority = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(300) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything; that is fine.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods() {
    let server = Server::start(&[]);
    let client = server.client();
    let http = reqwest::Client::new();
    client.create_queue("routes", &defaults()).await.unwrap();
    let base = &server.url;
    for path in [
        "/nope",
        "/v1",
        "/v1/nope",
        "/v2/queues",
        "/v1/queues/routes/messages/receive/extra",
        "/v1/queues/routes/unknown",
    ] {
        raw_get(&http, &format!("{base}{path}"))
            .await
            .assert_error(404, "not_found");
    }
    for (method, path) in [
        (Method::DELETE, "/v1/queues"),
        (Method::POST, "/v1/queues"),
        (Method::POST, "/v1/queues/routes"),
        (Method::GET, "/v1/queues/routes/messages"),
        (Method::PUT, "/v1/queues/routes/purge"),
        (Method::GET, "/v1/queues/routes/messages/receive"),
        (Method::GET, "/v1/queues/routes/messages/some-handle"),
        (Method::POST, "/healthz"),
    ] {
        let refused = raw(
            &http,
            method.clone(),
            &format!("{base}{path}"),
            None,
            None,
            None,
        )
        .await;
        refused.assert_error(405, "method_not_allowed");
        assert!(
            refused.headers.contains_key("allow"),
            "{method} {path}: 405 without Allow"
        );
    }
    assert_eq!(client.get_queue("routes").await.unwrap().stats.active, 0);
}

// ---------------------------------------------------------------------------------------
// Authentication and exposure
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn bearer_tokens_guard_the_api_but_not_health() {
    let server = Server::start(&["--tokens", "secret1,secret2"]);
    let http = reqwest::Client::new();
    let queues = format!("{}/v1/queues", server.url);

    let anonymous = raw_get(&http, &queues).await;
    anonymous.assert_error(401, "unauthorized");
    assert!(
        anonymous
            .headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer")),
        "401 without WWW-Authenticate: Bearer"
    );
    for header in [
        "Bearer nope",
        "Bearer secret1x",
        "Basic c2VjcmV0MQ==",
        "secret1",
        "Bearer ",
    ] {
        raw(&http, Method::GET, &queues, None, None, Some(header))
            .await
            .assert_error(401, "unauthorized");
    }
    assert_api_error(
        server.client().create_queue("anon", &defaults()).await,
        401,
        "unauthorized",
    );
    assert_api_error(
        server
            .client()
            .with_token("wrong")
            .create_queue("anon", &defaults())
            .await,
        401,
        "unauthorized",
    );

    let one = server.client().with_token("secret1");
    let two = server.client().with_token("secret2");
    one.create_queue("guarded", &defaults()).await.unwrap();
    two.send_text("guarded", "hi").await.unwrap();
    assert_eq!(one.get_queue("guarded").await.unwrap().stats.active, 1);

    // Refused requests change nothing.
    let send = raw(
        &http,
        Method::POST,
        &format!("{queues}/guarded/messages"),
        Some("application/json"),
        Some(br#"{"body": "sneaky"}"#.to_vec()),
        Some("Bearer nope"),
    )
    .await;
    send.assert_error(401, "unauthorized");
    raw(
        &http,
        Method::DELETE,
        &format!("{queues}/guarded"),
        None,
        None,
        None,
    )
    .await
    .assert_error(401, "unauthorized");
    let names: Vec<String> = one
        .list_queues(&ListQueuesQuery::default())
        .await
        .unwrap()
        .queues
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, ["guarded"], "no queue created by refused requests");
    assert_eq!(one.get_queue("guarded").await.unwrap().stats.active, 1);

    // Health, readiness, metrics and the API description stay open.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let open = raw_get(&http, &format!("{}{path}", server.url)).await;
        assert_eq!(open.status, StatusCode::OK, "{path}: {}", open.text);
    }
}

#[test]
fn refuses_to_listen_beyond_loopback_without_authentication() {
    let (status, stderr) = run_to_exit(&["--listen", "0.0.0.0:0"], Duration::from_secs(15));
    assert!(!status.success(), "must not start: {status:?}");
    assert!(
        stderr.to_lowercase().contains("authentication"),
        "stderr should explain why: {stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// Transport and observability
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn h2c_prior_knowledge_works() {
    let server = Server::start(&[]);
    let http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let client = Client::with_http(&server.url, http.clone()).unwrap();
    client.create_queue("h2", &defaults()).await.unwrap();
    let id = client.send_text("h2", "over h2c").await.unwrap();
    let got = client.receive("h2", &receive_max(1)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].id.as_str(), got[0].body.as_str()),
        (id.as_str(), "over h2c")
    );
    client.delete("h2", &got[0].receipt_handle).await.unwrap();
    let response = http
        .get(format!("{}/v1/queues/h2", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    // Errors keep their shape over h2 too.
    assert_api_error(client.get_queue("nope").await, 404, "queue_not_found");
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = Server::start(&[]);
    let client = server.client();
    let http = reqwest::Client::new();
    let healthz = raw_get(&http, &format!("{}/healthz", server.url)).await;
    assert_eq!(healthz.status, StatusCode::OK);
    assert_eq!(healthz.json()["status"], "ok");
    let readyz = raw_get(&http, &format!("{}/readyz", server.url)).await;
    assert_eq!(readyz.status, StatusCode::OK);
    assert_eq!(readyz.json()["status"], "ready");

    client.create_queue("metered", &defaults()).await.unwrap();
    client
        .send_batch(
            "metered",
            vec![
                SendMessage::text("a"),
                SendMessage::text("b"),
                SendMessage {
                    delay_seconds: Some(600),
                    ..SendMessage::text("c")
                },
            ],
        )
        .await
        .unwrap();
    let got = client.receive("metered", &receive_max(1)).await.unwrap();
    assert_eq!(got.len(), 1);
    let metrics = raw_get(&http, &format!("{}/metrics", server.url)).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = &metrics.text;
    for line in [
        "queuelet_messages_sent_total 3",
        "queuelet_messages_received_total 1",
        r#"queuelet_queue_messages{queue="metered",state="active"} 1"#,
        r#"queuelet_queue_messages{queue="metered",state="inactive"} 1"#,
        r#"queuelet_queue_messages{queue="metered",state="delayed"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(text.contains(r#"queuelet_queue_messages{queue="metered""#));
    // The queue's creation and the send were synced (fsync mode): the log reports it.
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert!(value("queuelet_log_sync_duration_seconds_count") >= 2.0);
    assert!(value("queuelet_log_sync_duration_seconds_sum") > 0.0);
    // The create, the send (one commit of three records) and the receive's counts.
    assert!(value("queuelet_log_commit_records_count") >= 2.0);
    assert!(value("queuelet_log_commit_records_sum") >= 4.0);
    // Three 1-byte bodies and their frames.
    assert!(value("queuelet_log_written_bytes_total") > 3.0);
    assert!(
        text.lines()
            .any(|l| l.starts_with("queuelet_http_requests_total{")
                && l.contains(r#"route="/v1/queues/{name}/messages/batch""#)),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| *l == "# EOF").count(),
        1,
        "exactly one # EOF"
    );
    assert!(text.ends_with("# EOF\n"), "# EOF ends the exposition");
}

#[tokio::test]
async fn openapi_lists_exactly_the_served_routes() {
    let server = Server::start(&[]);
    let http = reqwest::Client::new();
    let doc = raw_get(&http, &format!("{}/openapi.json", server.url)).await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.json();
    let paths = doc["paths"].as_object().expect("paths object");
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "/v1/queues",
        "/v1/queues/{name}",
        "/v1/queues/{name}/purge",
        "/v1/queues/{name}/rewind",
        "/v1/queues/{name}/messages",
        "/v1/queues/{name}/messages/batch",
        "/v1/queues/{name}/messages/receive",
        "/v1/queues/{name}/messages/delete",
        "/v1/queues/{name}/messages/visibility",
        "/v1/queues/{name}/messages/{receipt_handle}",
        "/v1/topics",
        "/v1/topics/{name}",
        "/v1/topics/{name}/messages",
        "/v1/topics/{name}/messages/batch",
        "/v1/topics/{name}/subscriptions",
        "/v1/topics/{name}/subscriptions/{subscription}",
    ]
    .into_iter()
    .collect();
    assert_eq!(documented, expected);

    let http_methods = [
        "get", "put", "post", "delete", "patch", "head", "options", "trace",
    ];
    let mut operations = 0;
    for (path, item) in paths {
        let item = item.as_object().expect("path item object");
        for method in item.keys().filter(|k| http_methods.contains(&k.as_str())) {
            operations += 1;
            let concrete = path
                .replace("{name}", "documented")
                .replace("{receipt_handle}", "some-handle")
                .replace("{subscription}", "documented");
            let url = format!("{}{concrete}", server.url);
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = raw_json(&http, method.clone(), &url, "{}").await;
            let code = serde_json::from_str::<Value>(&response.text)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_string));
            assert!(
                !(response.status == StatusCode::NOT_FOUND && code.as_deref() == Some("not_found")),
                "{method} {path} is documented but not routed: {}",
                response.text
            );
            assert_ne!(
                response.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not routed"
            );
        }
    }
    assert_eq!(operations, 25, "25 documented operations");
}

// ---------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_long_polls_and_exits_cleanly() {
    let server = Server::start(&[]);
    let client = server.client();
    client.create_queue("drain", &defaults()).await.unwrap();
    let poller = {
        let client = client.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = client
                .receive(
                    "drain",
                    &ReceiveRequest {
                        wait_seconds: Some(20),
                        ..receive_max(1)
                    },
                )
                .await;
            (result, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!poller.is_finished(), "the long poll is in flight");

    let pid = server.pid();
    let signalled = Instant::now();
    let exit = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || server.terminate()),
    )
    .await;
    let status = match exit {
        Ok(joined) => joined.expect("terminate"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("queuelet did not exit within 10 s of SIGTERM");
        }
    };
    let exited_after = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(exited_after < Duration::from_secs(5), "{exited_after:?}");

    let (result, polled) = tokio::time::timeout(Duration::from_secs(5), poller)
        .await
        .expect("long poll released")
        .unwrap();
    let messages = result.expect("the long poll ends with 200, not an error");
    assert!(messages.is_empty());
    assert!(polled < Duration::from_secs(5), "released after {polled:?}");
}

// ---------------------------------------------------------------------------------------
// Configuration file
// ---------------------------------------------------------------------------------------

/// Starts a server on a configuration file holding `text`, re-read every 200 ms.
fn start_with_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf, Server) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queuelet.toml");
    std::fs::write(&path, text).unwrap();
    let server = Server::start(&[
        "--config",
        path.to_str().unwrap(),
        "--config-poll-ms",
        "200",
    ]);
    (dir, path, server)
}

#[tokio::test]
async fn config_file_declares_manages_and_reloads_queues() {
    let (_dir, path, server) =
        start_with_config("[queues.orders]\nvisibilityTimeoutSeconds = 45\n[queues.orders-dlq]\n");
    let client = server.client();

    let orders = client.get_queue("orders").await.unwrap();
    assert!(orders.managed);
    assert_eq!(
        orders.attributes,
        QueueAttributes {
            visibility_timeout_seconds: 45,
            ..defaults()
        }
    );
    let dlq = client.get_queue("orders-dlq").await.unwrap();
    assert!(dlq.managed);
    assert_eq!(dlq.attributes, defaults());

    // Managed queues change only through the file; their messages work as usual.
    assert_api_error(
        client
            .update_queue(
                "orders",
                &QueueAttributesPatch {
                    visibility_timeout_seconds: Some(10),
                    ..Default::default()
                },
            )
            .await,
        409,
        "queue_managed",
    );
    assert_api_error(client.delete_queue("orders").await, 409, "queue_managed");
    assert_api_error(
        client.delete_queue("orders-dlq").await,
        409,
        "queue_managed",
    );
    assert_eq!(
        client.get_queue("orders").await.unwrap(),
        orders,
        "unchanged"
    );
    client.send_text("orders", "order #1").await.unwrap();

    // Edit the file: changed attributes, a dead-letter policy and a new queue.
    write_atomically(
        &path,
        "[queues.orders]\nvisibilityTimeoutSeconds = 90\n\
         [queues.orders.deadLetter]\nqueue = \"orders-dlq\"\nmaxReceiveCount = 3\n\
         [queues.orders-dlq]\n[queues.payments]\ndelaySeconds = 5\n",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let orders = client.get_queue("orders").await.unwrap();
        let payments = client.get_queue("payments").await;
        if orders.attributes.visibility_timeout_seconds == 90
            && let Ok(payments) = payments
        {
            assert!(orders.managed);
            assert_eq!(
                orders.attributes.dead_letter,
                Some(DeadLetterPolicy {
                    queue: "orders-dlq".into(),
                    max_receive_count: Some(3),
                    max_time_to_live_seconds: None,
                })
            );
            assert_eq!(orders.stats.active, 1, "messages survive a reload");
            assert!(payments.managed);
            assert_eq!(payments.attributes.delay_seconds, 5);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "file change not applied within 5 s: {orders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A queue dropped from the file stays, now managed through the API.
    write_atomically(
        &path,
        "[queues.orders]\nvisibilityTimeoutSeconds = 90\n[queues.orders-dlq]\n",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let payments = client.get_queue("payments").await.unwrap();
        if !payments.managed {
            assert_eq!(payments.attributes.delay_seconds, 5, "keeps its attributes");
            break;
        }
        assert!(Instant::now() < deadline, "undeclared queue still managed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .update_queue(
            "payments",
            &QueueAttributesPatch {
                delay_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    client.delete_queue("payments").await.unwrap();

    // A broken edit is refused and the queues keep their settings.
    write_atomically(&path, "[queues.orders]\nvisibilityTimeoutSeconds = 0\n");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let orders = client.get_queue("orders").await.unwrap();
    assert_eq!(orders.attributes.visibility_timeout_seconds, 90);
    assert!(orders.managed);
}

#[test]
fn invalid_config_file_stops_the_start_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (file, text) in [
        (
            "unknown-field.toml",
            "[queues.orders]\nvisibilityTimeout = 45\n",
        ),
        (
            "not-toml.toml",
            "[queues.orders\nvisibilityTimeoutSeconds = 45\n",
        ),
        (
            "out-of-range.toml",
            "[queues.orders]\nvisibilityTimeoutSeconds = 0\n",
        ),
        ("bad-name.toml", "[queues.1orders]\n"),
    ] {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap();
        let (status, stderr) = run_to_exit(
            &["--listen", "127.0.0.1:0", "--config", path],
            Duration::from_secs(15),
        );
        assert!(!status.success(), "{file}: started anyway ({status:?})");
        assert!(
            stderr.contains(path),
            "{file}: stderr does not name the file: {stderr}"
        );
    }
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().unwrap();
    let (status, stderr) = run_to_exit(
        &["--listen", "127.0.0.1:0", "--config", missing],
        Duration::from_secs(15),
    );
    assert!(!status.success());
    assert!(stderr.contains(missing), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// Regression tests for bugs found by these tests.
// ---------------------------------------------------------------------------------------

/// serde's derived `Deserialize` also accepts a JSON array as a struct (fields by
/// position), so `[5]` creates a queue with visibilityTimeoutSeconds 5 and `["x"]`
/// sends a message, despite `deny_unknown_fields` everywhere.
#[tokio::test]
async fn json_arrays_are_not_request_objects() {
    let server = Server::start(&[]);
    let client = server.client();
    let http = reqwest::Client::new();
    client.create_queue("strict", &defaults()).await.unwrap();
    let base = format!("{}/v1/queues", server.url);
    raw_json(&http, Method::PUT, &format!("{base}/positional"), "[5]")
        .await
        .assert_error(400, "invalid_request");
    raw_json(
        &http,
        Method::POST,
        &format!("{base}/strict/messages"),
        r#"["x"]"#,
    )
    .await
    .assert_error(400, "invalid_request");
    raw_json(
        &http,
        Method::POST,
        &format!("{base}/strict/messages/receive"),
        "[16]",
    )
    .await
    .assert_error(400, "invalid_request");
    assert_eq!(queue_names(&client).await, ["strict"]);
    assert_eq!(client.get_queue("strict").await.unwrap().stats.active, 0);
}

/// RFC 9110 §11.1: the authentication scheme is case-insensitive.
#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let server = Server::start(&["--tokens", "secret1"]);
    let http = reqwest::Client::new();
    for header in ["bearer secret1", "BEARER secret1"] {
        let response = raw(
            &http,
            Method::GET,
            &format!("{}/v1/queues", server.url),
            None,
            None,
            Some(header),
        )
        .await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{header}: {}",
            response.text
        );
    }
}

/// A reload the server refuses (here: a dead-letter target that does not exist) must
/// leave every queue as it was, as the server's own log line claims.
#[tokio::test]
async fn refused_config_reload_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queuelet.toml");
    std::fs::write(&path, "[queues.orders]\nvisibilityTimeoutSeconds = 45\n").unwrap();
    let server = Server::start(&[
        "--config",
        path.to_str().unwrap(),
        "--config-poll-ms",
        "100",
    ]);
    let client = server.client();
    write_atomically(
        &path,
        "[queues.aaa]\n[queues.orders]\nvisibilityTimeoutSeconds = 90\n\
         [queues.zzz]\ndeadLetter = { queue = \"ghost\", maxReceiveCount = 3 }\n",
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(queue_names(&client).await, ["orders"]);
    let orders = client.get_queue("orders").await.unwrap();
    assert_eq!(orders.attributes.visibility_timeout_seconds, 45);
}

/// The address line is printed before the SIGTERM handler is installed, so a SIGTERM
/// sent as soon as the server reports its address can kill it with the default action.
#[test]
fn sigterm_right_after_start_exits_cleanly() {
    use std::io::BufRead as _;
    let data = tempfile::tempdir().expect("data directory");
    for attempt in 0..100 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_queuelet"))
            .args(["--listen", "127.0.0.1:0"])
            .env("QUEUELET_DATA_DIR", data.path())
            .env_remove("QUEUELET_CONFIG")
            .env("QUEUELET_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn queuelet");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("queuelet listening on "), "{line:?}");
        // The server says it is up: a SIGTERM now must be a graceful shutdown.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        assert!(status.success(), "attempt {attempt}: {status:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Topics and subscriptions
// ---------------------------------------------------------------------------------------

async fn receive_bodies(client: &Client, queue: &str) -> Vec<String> {
    let mut bodies: Vec<String> = client
        .receive(queue, &receive_max(16))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    bodies.sort();
    bodies
}

#[tokio::test]
async fn topic_lifecycle_subscriptions_publish_and_filters() {
    let server = Server::start(&[]);
    let client = server.client();
    let http = reqwest::Client::new();
    let base = format!("{}/v1/topics", server.url);
    for queue in ["all", "paid"] {
        client.create_queue(queue, &defaults()).await.unwrap();
    }

    let created = raw_json(&http, Method::PUT, &format!("{base}/events"), "{}").await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.json()["attributes"]["filterType"], "tag");
    assert_eq!(created.json()["attributes"]["maxMessageBytes"], 65536);
    let again = raw_json(&http, Method::PUT, &format!("{base}/events"), "{}").await;
    assert_eq!(again.status, StatusCode::OK);
    raw_json(
        &http,
        Method::PUT,
        &format!("{base}/events"),
        r#"{"maxMessageBytes": 2048}"#,
    )
    .await
    .assert_error(409, "topic_exists");
    let patched = raw_json(
        &http,
        Method::PATCH,
        &format!("{base}/events"),
        r#"{"maxMessageBytes": 4096}"#,
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert_eq!(patched.json()["attributes"]["maxMessageBytes"], 4096);
    for name in ["b-topic", "c-topic"] {
        raw_json(&http, Method::PUT, &format!("{base}/{name}"), "{}").await;
    }
    let page = raw_get(&http, &format!("{base}?limit=2")).await.json();
    assert_eq!(page["total"], 3);
    assert_eq!(page["nextOffset"], 2);
    assert_eq!(page["topics"][0]["name"], "b-topic");
    let rest = raw_get(&http, &format!("{base}?offset=2&limit=2"))
        .await
        .json();
    assert_eq!(rest["topics"][0]["name"], "events");
    assert!(rest.get("nextOffset").is_none());

    let subs = format!("{base}/events/subscriptions");
    let sub = raw_json(
        &http,
        Method::PUT,
        &format!("{subs}/to-all"),
        r#"{"queue": "all"}"#,
    )
    .await;
    assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.text);
    let sub = raw_json(
        &http,
        Method::PUT,
        &format!("{subs}/to-paid"),
        r#"{"queue": "paid", "filterTags": ["paid"]}"#,
    )
    .await;
    assert_eq!(sub.json()["settings"]["filterTags"], json!(["paid"]));
    let listed = raw_get(&http, &subs).await.json();
    assert_eq!(listed["total"], 2);
    assert_eq!(listed["subscriptions"][1]["name"], "to-paid");
    assert_eq!(
        raw_get(&http, &base).await.json()["topics"][2]["subscriptions"],
        2
    );

    let one = raw_json(
        &http,
        Method::POST,
        &format!("{base}/events/messages"),
        r#"{"body": "order 1 paid", "tags": ["paid"]}"#,
    )
    .await;
    assert_eq!(one.status, StatusCode::CREATED, "{}", one.text);
    assert_eq!(one.json()["deliveries"], 2);
    let batch = raw_json(
        &http,
        Method::POST,
        &format!("{base}/events/messages/batch"),
        r#"{"messages": [{"body": "order 2 open"}, {"body": "b3JkZXIgMyBwYWlk", "encoding": "base64", "tags": ["paid", "vip"]}]}"#,
    )
    .await;
    assert_eq!(batch.json()["messages"].as_array().map(Vec::len), Some(2));
    assert_eq!(batch.json()["deliveries"], 3);
    assert_eq!(
        receive_bodies(&client, "all").await,
        ["order 1 paid", "order 2 open", "order 3 paid"]
    );
    assert_eq!(
        receive_bodies(&client, "paid").await,
        ["order 1 paid", "order 3 paid"]
    );

    // Clearing the filter lets everything through.
    let cleared = raw_json(
        &http,
        Method::PATCH,
        &format!("{subs}/to-paid"),
        r#"{"filterTags": []}"#,
    )
    .await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.text);
    raw_json(
        &http,
        Method::POST,
        &format!("{base}/events/messages"),
        r#"{"body": "untagged"}"#,
    )
    .await;
    assert_eq!(receive_bodies(&client, "paid").await, ["untagged"]);

    // What holds references cannot go.
    raw_delete(&http, &format!("{base}/events"))
        .await
        .assert_error(409, "topic_in_use");
    assert_api_error(client.delete_queue("paid").await, 409, "queue_in_use");
    for name in ["to-all", "to-paid"] {
        let gone = raw_delete(&http, &format!("{subs}/{name}")).await;
        assert_eq!(gone.status, StatusCode::NO_CONTENT);
    }
    raw_get(&http, &format!("{subs}/to-all"))
        .await
        .assert_error(404, "subscription_not_found");
    let gone = raw_delete(&http, &format!("{base}/events")).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    raw_get(&http, &format!("{base}/events"))
        .await
        .assert_error(404, "topic_not_found");
    client.delete_queue("paid").await.unwrap();
}

#[tokio::test]
async fn routing_key_topics_route_by_binding_patterns() {
    let server = Server::start(&[]);
    let client = server.client();
    let http = reqwest::Client::new();
    let base = format!("{}/v1/topics/routes", server.url);
    client.create_queue("eu", &defaults()).await.unwrap();
    raw_json(&http, Method::PUT, &base, r#"{"filterType": "routingKey"}"#).await;
    let sub = raw_json(
        &http,
        Method::PUT,
        &format!("{base}/subscriptions/eu"),
        r##"{"queue": "eu", "bindingKeys": ["*.eu.#"]}"##,
    )
    .await;
    assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.text);
    for (body, key) in [
        ("1", "order.eu"),
        ("2", "order.us"),
        ("3", "refund.eu.late.x"),
    ] {
        let published = raw_json(
            &http,
            Method::POST,
            &format!("{base}/messages"),
            &json!({"body": body, "routingKey": key}).to_string(),
        )
        .await;
        assert_eq!(published.status, StatusCode::CREATED, "{}", published.text);
    }
    assert_eq!(receive_bodies(&client, "eu").await, ["1", "3"]);
    raw_json(&http, Method::PATCH, &base, r#"{"filterType": "tag"}"#)
        .await
        .assert_error(400, "invalid_attribute");
}

#[tokio::test]
async fn bad_topic_inputs_are_refused_and_change_nothing() {
    let server = Server::start(&[]);
    let client = server.client();
    let http = reqwest::Client::new();
    let base = format!("{}/v1/topics", server.url);
    client.create_queue("q", &defaults()).await.unwrap();
    raw_json(&http, Method::PUT, &format!("{base}/t"), "{}").await;
    let cases: Vec<(Method, String, &str, u16, &str)> = vec![
        (
            Method::PUT,
            format!("{base}/9bad"),
            "{}",
            400,
            "invalid_queue_name",
        ),
        (
            Method::PUT,
            format!("{base}/x"),
            r#"{"maxMessageBytes": 10}"#,
            400,
            "invalid_attribute",
        ),
        (
            Method::PUT,
            format!("{base}/x"),
            r#"{"colour": 1}"#,
            400,
            "invalid_request",
        ),
        (
            Method::PUT,
            format!("{base}/x"),
            r#"{"filterType": "fuzzy"}"#,
            400,
            "invalid_request",
        ),
        (
            Method::POST,
            format!("{base}/nope/messages"),
            r#"{"body": "x"}"#,
            404,
            "topic_not_found",
        ),
        (
            Method::POST,
            format!("{base}/t/messages"),
            r#"{"body": "x", "tags": ["a","b","c","d","e","f"]}"#,
            400,
            "invalid_message",
        ),
        (
            Method::POST,
            format!("{base}/t/messages/batch"),
            r#"{"messages": []}"#,
            400,
            "empty_batch",
        ),
        (
            Method::PUT,
            format!("{base}/t/subscriptions/s"),
            r#"{"queue": "missing"}"#,
            404,
            "queue_not_found",
        ),
        (
            Method::PUT,
            format!("{base}/t/subscriptions/s"),
            r#"{}"#,
            400,
            "invalid_attribute",
        ),
        (
            Method::PUT,
            format!("{base}/t/subscriptions/s"),
            r#"{"queue": "q", "bindingKeys": ["a"]}"#,
            400,
            "invalid_attribute",
        ),
        (
            Method::PUT,
            format!("{base}/t/subscriptions/s"),
            r#"{"endpoint": "ftp://127.0.0.1:9/hook"}"#,
            400,
            "invalid_attribute",
        ),
        (
            Method::PUT,
            format!("{base}/nope/subscriptions/s"),
            r#"{"queue": "q"}"#,
            404,
            "topic_not_found",
        ),
        (
            Method::GET,
            format!("{base}?limit=0"),
            "",
            400,
            "invalid_request",
        ),
    ];
    for (method, url, body, status, code) in cases {
        let response = if method == Method::GET {
            raw_get(&http, &url).await
        } else {
            raw_json(&http, method.clone(), &url, body).await
        };
        response.assert_error(status, code);
    }
    let topics = raw_get(&http, &base).await.json();
    assert_eq!(topics["total"], 1, "{topics}");
    assert_eq!(topics["topics"][0]["subscriptions"], 0);
    let metrics = raw_get(&http, &format!("{}/metrics", server.url))
        .await
        .text;
    assert!(
        metrics.contains("queuelet_messages_published_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn config_file_declares_topics_with_subscriptions() {
    let (_dir, path, server) = start_with_config(
        "[queues.orders]\n[topics.events]\n[topics.events.subscriptions.to-orders]\nqueue = \"orders\"\nfilterTags = [\"paid\"]\n",
    );
    let http = reqwest::Client::new();
    let base = format!("{}/v1/topics/events", server.url);
    let topic = raw_get(&http, &base).await.json();
    assert_eq!(topic["managed"], true, "{topic}");
    assert_eq!(topic["subscriptions"], 1);
    raw_delete(&http, &format!("{base}/subscriptions/to-orders"))
        .await
        .assert_error(409, "topic_managed");
    raw_json(
        &http,
        Method::POST,
        &format!("{base}/messages"),
        r#"{"body": "x", "tags": ["paid"]}"#,
    )
    .await;
    assert_eq!(receive_bodies(&server.client(), "orders").await, ["x"]);

    // Dropped from the file: the topic stays, released to the API.
    write_atomically(&path, "[queues.orders]\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while raw_get(&http, &base).await.json()["managed"] == true {
        assert!(Instant::now() < deadline, "the topic was not released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = raw_delete(&http, &format!("{base}/subscriptions/to-orders")).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT, "{}", gone.text);
}
