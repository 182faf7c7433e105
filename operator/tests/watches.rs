//! The running controller against the mocked API server: what it lists and watches
//! when it starts, each request held against the chart's RBAC like every other request
//! of these tests, and its children watched only through the operator's label.

mod api_server;
mod common;

use std::sync::Arc;
use std::time::Duration;

use api_server::{mock, rbac};
use http::StatusCode;
use queuelet_operator::controller::{self, Context};
use serde_json::json;

const KINDS: [&str; 6] = [
    "messagequeues",
    "statefulsets",
    "services",
    "configmaps",
    "secrets",
    "poddisruptionbudgets",
];

/// One request of the controller, as RBAC sees it and as it was sent.
#[derive(Debug)]
struct Seen {
    access: rbac::Access,
    path: String,
    query: String,
}

/// The requests of a controller starting over `namespace` (all when None), until it
/// watches every kind: each list answered empty, each watch held open.
async fn starting_requests(namespace: Option<&'static str>) -> Vec<Seen> {
    let (client, mut server) = mock();
    let ctx =
        Arc::new(Context::new(client.clone(), common::defaults(), None).expect("an HTTP client"));
    let running = tokio::spawn(async move { controller::run(client, namespace, 1, ctx).await });

    let mut seen: Vec<Seen> = Vec::new();
    let mut open_watches = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.iter().filter(|s| s.access.verb == "watch").count() < KINDS.len() {
        let exchange = tokio::time::timeout_at(deadline, server.next())
            .await
            .expect("the controller lists and watches every kind in time")
            .expect("the controller keeps its client");
        let access = rbac::access(&exchange.method, &exchange.path, &exchange.query);
        let list_kind = format!("{}List", access.resource);
        let watch = access.verb == "watch";
        seen.push(Seen {
            access,
            path: exchange.path.clone(),
            query: exchange.query.clone(),
        });
        if watch {
            open_watches.push(exchange);
        } else {
            exchange.respond(
                StatusCode::OK,
                json!({"kind": list_kind, "apiVersion": "v1",
                       "metadata": {"resourceVersion": "1"}, "items": []}),
            );
        }
    }
    running.abort();
    seen
}

#[tokio::test]
async fn the_controller_lists_and_watches_each_kind_its_role_grants() {
    let seen = starting_requests(None).await;
    for kind in KINDS {
        for verb in ["list", "watch"] {
            assert!(
                seen.iter()
                    .any(|s| s.access.resource == kind && s.access.verb == verb),
                "no {verb} of {kind} in {seen:#?}"
            );
        }
    }
    // Children only through the operator's label: never every Secret of the cluster.
    for s in &seen {
        if s.access.resource != "messagequeues" {
            assert!(
                s.query
                    .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dqueuelet-operator"),
                "{}?{}",
                s.path,
                s.query
            );
        }
        assert!(!s.path.contains("/namespaces/"), "cluster-wide: {}", s.path);
    }
}

#[tokio::test]
async fn a_watched_namespace_scopes_every_list_and_watch() {
    let seen = starting_requests(Some("shop")).await;
    for s in &seen {
        assert!(s.path.contains("/namespaces/shop/"), "{}", s.path);
    }
}
