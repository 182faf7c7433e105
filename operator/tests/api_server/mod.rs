//! A mocked Kubernetes API server at the HTTP level (the kube-rs `ApiServerVerifier`
//! pattern): the client under test talks to a tower-test service, and a scenario takes
//! each request it expects, in order, checks it, and answers with a complete object.
//! A request the scenario did not expect makes the scenario fail; a request it expected
//! but never came makes it time out. Every request must be granted by the chart's RBAC
//! (`rbac`).

#![allow(dead_code)]

pub mod rbac;

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

/// Bound of every scenario: a hung reconcile or a missing request fails the test.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(10);

pub const MANAGER_QUERY: [&str; 2] = ["fieldManager=queuelet-operator", "force=true"];

pub struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// A mocked client and the server side that answers it.
pub fn mock() -> (Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer { handle })
}

/// One request taken from the client, waiting for its answer.
pub struct Exchange {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Value,
    reply: SendResponse<Response<Body>>,
}

impl ApiServer {
    /// Takes the next request, whatever it is (after the RBAC check every request gets);
    /// None once the client is gone.
    pub async fn next(&mut self) -> Option<Exchange> {
        let (request, reply) = self.handle.next_request().await?;
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("the request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON request body")
        };
        let exchange = Exchange {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            body,
            reply,
        };
        rbac::assert_allowed(&exchange.method, &exchange.path, &exchange.query);
        Some(exchange)
    }

    /// Takes the next request and checks its method and path.
    pub async fn expect(&mut self, method: Method, path: &str) -> Exchange {
        let exchange = self
            .next()
            .await
            .unwrap_or_else(|| panic!("the client closed before {method} {path}"));
        assert_eq!(
            (&exchange.method, exchange.path.as_str()),
            (&method, path),
            "unexpected request (query {:?}, body {})",
            exchange.query,
            exchange.body
        );
        exchange
    }

    /// A GET of an object that does not exist.
    pub async fn get_missing(&mut self, path: &str) {
        self.expect(Method::GET, path).await.not_found();
    }

    /// A GET answered with `object`.
    pub async fn get(&mut self, path: &str, object: Value) {
        self.expect(Method::GET, path)
            .await
            .respond(StatusCode::OK, object);
    }

    /// A server-side apply under the operator's field manager; returns it unanswered.
    pub async fn expect_apply(&mut self, path: &str) -> Exchange {
        let exchange = self.expect(Method::PATCH, path).await;
        exchange.assert_server_side_apply();
        exchange
    }

    /// A server-side apply, answered with the applied object as the API server would
    /// store it; returns the body that was applied.
    pub async fn apply(&mut self, path: &str) -> Value {
        let exchange = self.expect_apply(path).await;
        let body = exchange.body.clone();
        exchange.respond(StatusCode::OK, stored(body.clone()));
        body
    }

    /// An event POST to events.k8s.io, answered as created; returns the event.
    pub async fn event(&mut self, namespace: &str) -> Value {
        let exchange = self
            .expect(
                Method::POST,
                &format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
            )
            .await;
        let event = exchange.body.clone();
        exchange.respond(StatusCode::CREATED, stored(event.clone()));
        event
    }

    /// A POST creating an object, answered as created; returns the body that was sent.
    pub async fn create(&mut self, collection: &str) -> Value {
        let exchange = self.expect(Method::POST, collection).await;
        let body = exchange.body.clone();
        exchange.respond(StatusCode::CREATED, stored(body.clone()));
        body
    }

    /// A PUT replacing an object, answered with it stored at the next resourceVersion;
    /// returns the body that was sent.
    pub async fn replace(&mut self, path: &str) -> Value {
        let exchange = self.expect(Method::PUT, path).await;
        let body = exchange.body.clone();
        let mut answer = body.clone();
        let version = body["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        answer["metadata"]["resourceVersion"] = json!((version + 1).to_string());
        exchange.respond(StatusCode::OK, stored(answer));
        body
    }

    /// Asserts that the client sends nothing more: the service is dropped with the
    /// client, so the next request is `None`.
    pub async fn done(mut self) {
        if let Some((request, _)) = self.handle.next_request().await {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}

impl Exchange {
    pub fn assert_server_side_apply(&self) {
        assert!(
            self.query.split('&').any(|p| p == MANAGER_QUERY[0])
                && self.query.split('&').any(|p| p == MANAGER_QUERY[1]),
            "{} {}: not a forced apply by queuelet-operator: {:?}",
            self.method,
            self.path,
            self.query
        );
    }

    pub fn respond(self, status: StatusCode, body: Value) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        self.reply.send_response(response);
    }

    /// Answers with a `Status` failure, as the API server does.
    pub fn fail(self, code: u16, reason: &str, message: &str) {
        let status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        });
        self.respond(StatusCode::from_u16(code).unwrap(), status);
    }

    pub fn not_found(self) {
        let message = format!("{} not found", self.path);
        self.fail(404, "NotFound", &message);
    }
}

/// `object` as the API server would return it: with a uid, a resourceVersion and a
/// generation.
pub fn stored(mut object: Value) -> Value {
    let meta = object
        .as_object_mut()
        .expect("an object")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    let meta = meta.as_object_mut().expect("metadata is an object");
    meta.entry("uid")
        .or_insert_with(|| json!("00000000-0000-4000-8000-00000000beef"));
    meta.entry("resourceVersion").or_insert_with(|| json!("1"));
    meta.entry("generation").or_insert_with(|| json!(1));
    meta.entry("creationTimestamp")
        .or_insert_with(|| json!("2026-01-01T00:00:00Z"));
    object
}

/// Paths of the objects of MessageQueue `name` in `namespace`.
pub struct Paths {
    pub namespace: String,
    pub name: String,
}

impl Paths {
    pub fn new(namespace: &str, name: &str) -> Self {
        Paths {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn core(&self, resource: &str, name: &str) -> String {
        format!("/api/v1/namespaces/{}/{resource}/{name}", self.namespace)
    }

    pub fn credentials_secret(&self) -> String {
        self.core("secrets", &format!("{}-credentials", self.name))
    }

    pub fn secret(&self, name: &str) -> String {
        self.core("secrets", name)
    }

    pub fn config_map(&self) -> String {
        self.core("configmaps", &format!("{}-config", self.name))
    }

    pub fn headless_service(&self) -> String {
        self.core("services", &format!("{}-headless", self.name))
    }

    pub fn client_service(&self) -> String {
        self.core("services", &self.name)
    }

    pub fn stateful_set(&self) -> String {
        format!(
            "/apis/apps/v1/namespaces/{}/statefulsets/{}",
            self.namespace, self.name
        )
    }

    pub fn pod_disruption_budget(&self) -> String {
        format!(
            "/apis/policy/v1/namespaces/{}/poddisruptionbudgets/{}",
            self.namespace, self.name
        )
    }

    pub fn pod(&self, ordinal: i32) -> String {
        self.core("pods", &format!("{}-{ordinal}", self.name))
    }

    pub fn claims(&self) -> String {
        format!(
            "/api/v1/namespaces/{}/persistentvolumeclaims",
            self.namespace
        )
    }

    pub fn claim(&self, ordinal: i32) -> String {
        self.core(
            "persistentvolumeclaims",
            &format!("queuelet-data-{}-{ordinal}", self.name),
        )
    }

    pub fn status(&self) -> String {
        format!(
            "/apis/queuelet.dev/v1alpha1/namespaces/{}/messagequeues/{}/status",
            self.namespace, self.name
        )
    }
}
