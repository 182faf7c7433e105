//! The reconcile loop against a mocked API server at the HTTP level: for each scenario,
//! the exact requests the controller makes, in order, with what they carry, and what it
//! does with the answers.

mod api_server;
mod common;

use std::future::Future;
use std::sync::Arc;

use api_server::{ApiServer, Paths, SCENARIO_TIMEOUT, mock, stored};
use http::{Method, StatusCode};
use kube::runtime::controller::Action;
use queuelet::api::model::ReceiveRequest;
use queuelet::client::Client as QueueClient;
use queuelet::engine::QueueAttributes;
use queuelet_e2e::Server;
use queuelet_operator::controller::{
    Context, DRAIN_POLL, EXPANSION_POLL, Error, PAUSED_ANNOTATION, PERMANENT_RETRY, RESYNC,
    error_policy, reconcile,
};
use queuelet_operator::resource::MessageQueue;
use serde_json::{Value, json};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SELECTOR: &str = "app.kubernetes.io/component=queue-server,app.kubernetes.io/instance=orders,app.kubernetes.io/name=queuelet";
const ENDPOINT: &str = "http://orders.shop.svc.cluster.local:8080";
/// Where a queue pod that does not exist "listens": nothing does on port 1.
const NO_POD: &str = "http://127.0.0.1:1";

/// The minimal fixture (`orders` in `shop`) at generation 1.
fn orders() -> MessageQueue {
    let mut mq = common::fixture("minimal");
    mq.metadata.generation = Some(1);
    mq
}

fn paths() -> Paths {
    Paths::new("shop", "orders")
}

/// What one reconcile returned, and what `error_policy` made of an error.
struct Run {
    result: Result<Action, Error>,
    policy: Option<Action>,
}

/// Runs one reconcile of `mq` while `script` plays the API server, then checks that no
/// request is left unanswered or unexpected; everything within `SCENARIO_TIMEOUT`.
async fn scenario<F, Fut>(mq: MessageQueue, script: F) -> Run
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: Future<Output = ApiServer> + Send + 'static,
{
    scenario_with_pods(mq, &[], script).await
}

/// `scenario`, with the queue pods at `pods` (by ordinal; any other ordinal refuses
/// connections, like a pod that is not there).
async fn scenario_with_pods<F, Fut>(mq: MessageQueue, pods: &[&Server], script: F) -> Run
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: Future<Output = ApiServer> + Send + 'static,
{
    // One scenario at a time: a reconcile's log lines go to the subscriber of the test
    // that runs it, and tracing's per-callsite interest cache, shared by all threads,
    // must be rebuilt for that subscriber without another test racing it.
    let _serial = SERIAL.lock().await;
    tracing::callsite::rebuild_interest_cache();
    let (client, server) = mock();
    // The script, then a check that nothing else is asked until the client is dropped:
    // an unexpected request panics the task, which fails the reconcile at once.
    let script = script(server);
    let server = tokio::spawn(async move { script.await.done().await });
    let mut ctx = Context::new(client, common::defaults(), Some("test-pod".into()))
        .expect("an HTTP client for the queue pods");
    ctx.new_token = || "generated-token".into();
    let urls: Vec<String> = pods.iter().map(|pod| pod.url.clone()).collect();
    ctx.sidecars.pod_url = Arc::new(move |_, ordinal| {
        usize::try_from(ordinal)
            .ok()
            .and_then(|i| urls.get(i).cloned())
            .unwrap_or_else(|| NO_POD.into())
    });
    let ctx = Arc::new(ctx);
    let mq = Arc::new(mq);
    let run = tokio::time::timeout(SCENARIO_TIMEOUT, async {
        let result = reconcile(mq.clone(), ctx.clone()).await;
        let policy = result
            .as_ref()
            .err()
            .map(|err| error_policy(mq.clone(), err, ctx.clone()));
        Run { result, policy }
    })
    .await;
    drop(ctx);
    match tokio::time::timeout(SCENARIO_TIMEOUT, server).await {
        Err(_) => panic!("the API server script did not finish: a request it expects never came"),
        Ok(Err(panic)) => std::panic::resume_unwind(panic.into_panic()),
        Ok(Ok(())) => {}
    }
    run.expect("the reconcile finished in time")
}

/// A real queue server standing in for a queue pod, whose queue `orders` holds `visible`
/// messages and `in_flight` received ones.
async fn queue_pod(visible: usize, in_flight: usize) -> Server {
    let server = Server::start(&[]);
    let client = QueueClient::new(&server.url).expect("the pod's URL");
    client
        .create_queue("orders", &QueueAttributes::default())
        .await
        .expect("create the queue");
    for i in 0..visible + in_flight {
        client
            .send_text("orders", &format!("message {i}"))
            .await
            .expect("send");
    }
    if in_flight > 0 {
        let request = ReceiveRequest {
            max: Some(in_flight),
            wait_seconds: Some(0),
            encoding: Default::default(),
        };
        let received = client.receive("orders", &request).await.expect("receive");
        assert_eq!(received.len(), in_flight);
    }
    server
}

/// Receives and deletes every visible message of `orders` on `pod`.
async fn empty(pod: &Server) {
    let client = QueueClient::new(&pod.url).expect("the pod's URL");
    let request = ReceiveRequest {
        max: Some(16),
        wait_seconds: Some(0),
        encoding: Default::default(),
    };
    loop {
        let received = client.receive("orders", &request).await.expect("receive");
        if received.is_empty() {
            return;
        }
        for message in received {
            client
                .delete("orders", &message.receipt_handle)
                .await
                .expect("delete");
        }
    }
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

#[track_caller]
fn assert_condition(status: &Value, type_: &str, value: &str, reason: &str) {
    let c = condition(status, type_);
    assert_eq!(c["status"], value, "{type_}: {c}");
    assert_eq!(c["reason"], reason, "{type_}: {c}");
    assert_eq!(c["observedGeneration"], 1, "{type_}: {c}");
    assert!(c["lastTransitionTime"].is_string(), "{type_}: {c}");
}

/// A StatefulSet as a GET returns it before this reconcile.
fn existing_stateful_set(replicas: i32, generation: i64) -> Value {
    stored(json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "orders", "namespace": "shop", "generation": generation},
        "spec": {"replicas": replicas, "selector": {}, "template": {}},
    }))
}

/// Answers the StatefulSet apply with the applied object, at `generation`, with `status`.
async fn apply_stateful_set(server: &mut ApiServer, generation: i64, status: Value) -> Value {
    let exchange = server.expect_apply(&paths().stateful_set()).await;
    let applied = exchange.body.clone();
    let mut answer = applied.clone();
    answer["metadata"]["generation"] = json!(generation);
    answer["status"] = status;
    exchange.respond(StatusCode::OK, stored(answer));
    applied
}

fn ready_stateful_set_status(replicas: i32, generation: i64) -> Value {
    json!({
        "replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
        "availableReplicas": replicas, "observedGeneration": generation,
        "currentRevision": "orders-7d9f", "updateRevision": "orders-7d9f",
    })
}

/// Takes the status apply and checks it is a forced apply of a MessageQueue status.
async fn status_patch(server: &mut ApiServer, mq: &MessageQueue) -> Value {
    let exchange = server.expect_apply(&paths().status()).await;
    let body = exchange.body.clone();
    assert_eq!(body["apiVersion"], "queuelet.dev/v1alpha1");
    assert_eq!(body["kind"], "MessageQueue");
    assert!(body.get("spec").is_none(), "a status apply carries no spec");
    let mut answer = serde_json::to_value(mq).unwrap();
    answer["status"] = body["status"].clone();
    exchange.respond(StatusCode::OK, stored(answer));
    body["status"].clone()
}

/// The status a failing reconcile writes, checked for `phase: Degraded` and its
/// Degraded condition, and its Warning event, both for `reason`; returns the two.
async fn degraded(server: &mut ApiServer, mq: &MessageQueue, reason: &str) -> (Value, Value) {
    let status = status_patch(server, mq).await;
    assert_eq!(status["phase"], "Degraded", "{status}");
    assert_condition(&status, "Degraded", "True", reason);
    let event = server.event("shop").await;
    assert_eq!(event["type"], "Warning", "{event}");
    assert_eq!(event["reason"], reason, "{event}");
    (status, event)
}

#[tokio::test]
async fn a_fresh_resource_gets_its_children_statefulset_last_and_a_pending_status() {
    let mq = orders();
    let script_mq = mq.clone();
    let run = scenario(mq, |mut server| async move {
        let p = paths();
        // Dereference: the credentials Secret to keep, the StatefulSet to compare with.
        server.get_missing(&p.credentials_secret()).await;
        server.get_missing(&p.stateful_set()).await;
        // Apply, in order, StatefulSet last.
        let config = server.apply(&p.config_map()).await;
        assert_eq!(config["kind"], "ConfigMap");
        assert_eq!(
            config["metadata"]["ownerReferences"][0]["kind"],
            "MessageQueue"
        );
        assert_eq!(config["metadata"]["ownerReferences"][0]["controller"], true);
        let secret = server.apply(&p.credentials_secret()).await;
        assert_eq!(secret["kind"], "Secret");
        // A new token is generated (base64 of "generated-token").
        assert_eq!(secret["data"]["token"], "Z2VuZXJhdGVkLXRva2Vu");
        let headless = server.apply(&p.headless_service()).await;
        assert_eq!(headless["spec"]["clusterIP"], "None");
        let client = server.apply(&p.client_service()).await;
        assert_eq!(client["spec"]["type"], "ClusterIP");
        // One replica: no budget; the controller checks none of its own is left over.
        server.get_missing(&p.pod_disruption_budget()).await;
        let sts = apply_stateful_set(&mut server, 1, json!(null)).await;
        assert_eq!(sts["kind"], "StatefulSet");
        assert_eq!(sts["spec"]["replicas"], 1);
        assert!(
            sts.get("status").is_none(),
            "an apply never carries a status"
        );
        // A Normal event for the creation.
        let event = server.event("shop").await;
        assert_eq!(event["type"], "Normal");
        assert_eq!(event["reason"], "Created");
        assert_eq!(event["regarding"]["kind"], "MessageQueue");
        assert_eq!(event["regarding"]["name"], "orders");
        assert_eq!(event["reportingController"], "queuelet-operator");
        assert_eq!(event["reportingInstance"], "test-pod");
        // One status write: pods not ready yet.
        let status = status_patch(&mut server, &script_mq).await;
        assert_eq!(status["observedGeneration"], 1);
        assert_eq!(status["phase"], "Pending");
        assert_eq!(status["replicas"], 0);
        assert_eq!(status["readyReplicas"], 0);
        assert_eq!(status["selector"], SELECTOR);
        assert_eq!(status["endpoint"], ENDPOINT);
        assert_eq!(status["credentialsSecret"], "orders-credentials");
        assert_condition(&status, "Ready", "False", "ReplicasNotReady");
        assert_condition(&status, "Progressing", "True", "RollingOut");
        assert_condition(&status, "Degraded", "False", "AsExpected");
        server
    })
    .await;
    assert_eq!(run.result.unwrap(), Action::requeue(RESYNC));
}

/// The status `reconcile` computes for `orders` with its one pod ready and holding three
/// visible messages and one in flight, with transition times from long ago.
fn running_status() -> Value {
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "observedGeneration": 1, "lastTransitionTime": "2025-06-01T12:00:00Z",
        })
    };
    json!({
        "observedGeneration": 1,
        "replicas": 1,
        "readyReplicas": 1,
        "selector": SELECTOR,
        "phase": "Running",
        "endpoint": ENDPOINT,
        "credentialsSecret": "orders-credentials",
        "conditions": [
            condition("Ready", "True", "AllReplicasReady", "1/1 queue pods ready"),
            condition("Progressing", "False", "RolloutComplete", "every queue pod runs the current configuration"),
            condition("Degraded", "False", "AsExpected", "every child object is applied"),
        ],
        "queues": [{"name": "orders", "active": 3, "inactive": 1, "delayed": 0}],
    })
}

#[tokio::test]
async fn an_up_to_date_resource_keeps_its_token_and_writes_no_status() {
    let mut mq = orders();
    mq.status = Some(serde_json::from_value(running_status()).unwrap());
    // The pod's counts are those the status already shows.
    let pod = queue_pod(3, 1).await;
    let run = scenario_with_pods(mq, &[&pod], |mut server| async move {
        let p = paths();
        server
            .get(
                &p.credentials_secret(),
                stored(json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "orders-credentials", "namespace": "shop"},
                    "data": {"token": "a2VwdC10b2tlbg=="},
                })),
            )
            .await;
        server
            .get(&p.stateful_set(), existing_stateful_set(1, 1))
            .await;
        server.apply(&p.config_map()).await;
        let secret = server.apply(&p.credentials_secret()).await;
        assert_eq!(
            secret["data"]["token"], "a2VwdC10b2tlbg==",
            "the existing token is kept, never rotated"
        );
        server.apply(&p.headless_service()).await;
        server.apply(&p.client_service()).await;
        server.get_missing(&p.pod_disruption_budget()).await;
        apply_stateful_set(&mut server, 1, ready_stateful_set_status(1, 1)).await;
        // Same generation: no event; same status: no status write (`done` checks).
        server
    })
    .await;
    assert_eq!(run.result.unwrap(), Action::requeue(RESYNC));
}

/// A fresh `orders` whose children before the StatefulSet are applied in order until the
/// API server refuses the one after the first `applied` with `code`: it is degraded with
/// a Warning and requeued; returns the status and the event it got.
async fn refused_child(
    applied: usize,
    code: u16,
    reason: &'static str,
    message: &'static str,
) -> (Value, Value) {
    let mq = orders();
    let script_mq = mq.clone();
    let seen = Arc::new(std::sync::Mutex::new((Value::Null, Value::Null)));
    let keep = seen.clone();
    let run = scenario(mq, move |mut server| async move {
        let p = paths();
        server.get_missing(&p.credentials_secret()).await;
        server.get_missing(&p.stateful_set()).await;
        let children = [
            p.config_map(),
            p.credentials_secret(),
            p.headless_service(),
            p.client_service(),
        ];
        for path in &children[..applied] {
            server.apply(path).await;
        }
        server
            .expect_apply(&children[applied])
            .await
            .fail(code, reason, message);
        // No further child is applied; the status says why.
        let (status, event) = degraded(&mut server, &script_mq, reason).await;
        assert_condition(&status, "Progressing", "False", reason);
        assert_condition(&status, "Ready", "False", "ReconcileFailed");
        assert_eq!(event["regarding"]["name"], "orders");
        *keep.lock().unwrap() = (status, event);
        server
    })
    .await;
    let err = run.result.as_ref().unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert_eq!(err.reason(), reason);
    assert_eq!(run.policy, Some(Action::requeue(PERMANENT_RETRY)));
    seen.lock().unwrap().clone()
}

#[tokio::test]
async fn a_conflict_on_a_child_degrades_the_resource_with_a_warning_and_requeues() {
    let (status, event) = refused_child(
        0,
        409,
        "Conflict",
        "Apply failed with 1 conflict: conflict with \"helm\": .data.queuelet.toml",
    )
    .await;
    let message = condition(&status, "Degraded")["message"].as_str().unwrap();
    assert!(
        message.contains("ConfigMap orders-config") && message.contains("helm"),
        "{message}"
    );
    assert!(event["note"].as_str().unwrap().contains("orders-config"));
}

#[tokio::test]
async fn an_invalid_child_degrades_the_resource() {
    let (status, _) = refused_child(
        2,
        422,
        "Invalid",
        "Service \"orders-headless\" is invalid: spec.ports[0].port: Invalid value",
    )
    .await;
    let message = condition(&status, "Degraded")["message"].as_str().unwrap();
    assert!(message.contains("Service orders-headless"), "{message}");
}

#[tokio::test]
async fn a_forbidden_statefulset_apply_degrades_the_resource() {
    let mq = orders();
    let script_mq = mq.clone();
    let run = scenario(mq, |mut server| async move {
        let p = paths();
        server.get_missing(&p.credentials_secret()).await;
        server.get_missing(&p.stateful_set()).await;
        for path in [
            p.config_map(),
            p.credentials_secret(),
            p.headless_service(),
            p.client_service(),
        ] {
            server.apply(&path).await;
        }
        server.get_missing(&p.pod_disruption_budget()).await;
        server.expect_apply(&p.stateful_set()).await.fail(
            403,
            "Forbidden",
            "statefulsets.apps is forbidden: User cannot patch resource",
        );
        degraded(&mut server, &script_mq, "Forbidden").await;
        server
    })
    .await;
    assert_eq!(run.result.unwrap_err().reason(), "Forbidden");
    assert_eq!(run.policy, Some(Action::requeue(PERMANENT_RETRY)));
}

#[tokio::test]
async fn a_server_error_is_retried_with_backoff_without_touching_the_status() {
    let run = scenario(orders(), |mut server| async move {
        let p = paths();
        server.get_missing(&p.credentials_secret()).await;
        server.expect(Method::GET, &p.stateful_set()).await.fail(
            500,
            "InternalError",
            "etcd timed out",
        );
        // Transient: no status write, no event (`done` checks).
        server
    })
    .await;
    let err = run.result.unwrap_err();
    assert!(!err.is_permanent(), "{err}");
    assert_eq!(
        run.policy,
        Some(Action::requeue(queuelet_operator::controller::BACKOFF_BASE))
    );
}

#[tokio::test]
async fn a_paused_resource_applies_nothing_and_says_so() {
    let mut mq = orders();
    mq.metadata
        .annotations
        .get_or_insert_default()
        .insert(PAUSED_ANNOTATION.into(), "true".into());
    let script_mq = mq.clone();
    let run = scenario(mq, |mut server| async move {
        let p = paths();
        // Only reads: the StatefulSet, to report what runs.
        server
            .get(&p.stateful_set(), {
                let mut sts = existing_stateful_set(1, 1);
                sts["status"] = ready_stateful_set_status(1, 1);
                sts
            })
            .await;
        let status = status_patch(&mut server, &script_mq).await;
        assert_condition(&status, "Progressing", "False", "Paused");
        let message = condition(&status, "Progressing")["message"]
            .as_str()
            .unwrap();
        assert!(message.contains(PAUSED_ANNOTATION), "{message}");
        assert_condition(&status, "Ready", "True", "AllReplicasReady");
        assert_eq!(status["readyReplicas"], 1);
        assert_eq!(status["phase"], "Running");
        // The spec was not acted on: no observedGeneration claimed.
        assert!(status.get("observedGeneration").is_none(), "{status}");
        server
    })
    .await;
    assert_eq!(run.result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_user_secret_without_a_token_degrades_the_resource_and_applies_nothing() {
    let mut mq = orders();
    mq.spec.auth = Some(queuelet_operator::resource::Auth {
        secret_name: Some("my-token".into()),
    });
    let script_mq = mq.clone();
    let run = scenario(mq, |mut server| async move {
        let p = paths();
        server
            .get(
                &p.secret("my-token"),
                stored(json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "my-token", "namespace": "shop"},
                    "data": {"password": "aHVudGVyMg=="},
                })),
            )
            .await;
        let (status, _) = degraded(&mut server, &script_mq, "SecretMissingToken").await;
        assert_eq!(status["credentialsSecret"], "my-token");
        server
    })
    .await;
    assert_eq!(run.result.unwrap_err().reason(), "SecretMissingToken");
    assert_eq!(run.policy, Some(Action::requeue(PERMANENT_RETRY)));
}

#[tokio::test]
async fn scaling_up_applies_a_budget_and_announces_the_scale() {
    let mut mq = orders();
    mq.spec.replicas = 3;
    mq.metadata.generation = Some(2);
    let script_mq = mq.clone();
    let run = scenario(mq, |mut server| async move {
        let p = paths();
        server.get_missing(&p.credentials_secret()).await;
        server
            .get(&p.stateful_set(), existing_stateful_set(1, 1))
            .await;
        for path in [
            p.config_map(),
            p.credentials_secret(),
            p.headless_service(),
            p.client_service(),
        ] {
            server.apply(&path).await;
        }
        let pdb = server.apply(&p.pod_disruption_budget()).await;
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        let sts = apply_stateful_set(&mut server, 2, ready_stateful_set_status(1, 1)).await;
        assert_eq!(sts["spec"]["replicas"], 3);
        let event = server.event("shop").await;
        assert_eq!(event["reason"], "Scaled");
        assert!(
            event["note"].as_str().unwrap().contains("from 1 to 3"),
            "{event}"
        );
        let status = status_patch(&mut server, &script_mq).await;
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(status["phase"], "Pending");
        assert_eq!(
            condition(&status, "Ready")["message"],
            "1/3 queue pods ready"
        );
        assert_eq!(condition(&status, "Progressing")["status"], "True");
        server
    })
    .await;
    assert_eq!(run.result.unwrap(), Action::requeue(RESYNC));
}

fn pod_disruption_budget(owner_uid: &str) -> Value {
    stored(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {
            "name": "orders", "namespace": "shop", "uid": "pdb-uid",
            "ownerReferences": [{
                "apiVersion": "queuelet.dev/v1alpha1", "kind": "MessageQueue", "name": "orders",
                "uid": owner_uid, "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {"maxUnavailable": 1},
    }))
}

/// Runs a reconcile of `orders` scaled from 3 to 1 replica while a budget named like it
/// exists, owned by `budget_owner`; `delete` says whether the budget must be deleted.
async fn scale_to_one_with_a_budget_owned_by(budget_owner: &'static str, delete: bool) {
    let mut mq = orders();
    mq.metadata.generation = Some(2);
    let script_mq = mq.clone();
    // The leaving pods are empty: the scale-down goes ahead at once.
    let pods = [
        queue_pod(0, 0).await,
        queue_pod(0, 0).await,
        queue_pod(0, 0).await,
    ];
    let run = scenario_with_pods(
        mq,
        &[&pods[0], &pods[1], &pods[2]],
        move |mut server| async move {
            let p = paths();
            server.get_missing(&p.credentials_secret()).await;
            server
                .get(&p.stateful_set(), existing_stateful_set(3, 1))
                .await;
            for path in [
                p.config_map(),
                p.credentials_secret(),
                p.headless_service(),
                p.client_service(),
            ] {
                server.apply(&path).await;
            }
            server
                .get(
                    &p.pod_disruption_budget(),
                    pod_disruption_budget(budget_owner),
                )
                .await;
            if delete {
                let exchange = server
                    .expect(Method::DELETE, &p.pod_disruption_budget())
                    .await;
                assert_eq!(
                    exchange.body["preconditions"]["uid"], "pdb-uid",
                    "the delete is preconditioned on the budget that was read"
                );
                let answer = pod_disruption_budget(budget_owner);
                exchange.respond(StatusCode::OK, answer);
            }
            apply_stateful_set(&mut server, 2, ready_stateful_set_status(1, 2)).await;
            let event = server.event("shop").await;
            assert_eq!(event["reason"], "Scaled");
            let status = status_patch(&mut server, &script_mq).await;
            assert_eq!(status["phase"], "Running");
            server
        },
    )
    .await;
    assert_eq!(run.result.unwrap(), Action::requeue(RESYNC));
}

#[tokio::test]
async fn scaling_to_one_replica_deletes_the_budget_it_owns() {
    // The fixture's uid.
    scale_to_one_with_a_budget_owned_by("6f1d1c9e-0000-4000-8000-000000000001", true).await;
}

#[tokio::test]
async fn a_budget_of_someone_else_with_the_same_name_is_left_alone() {
    scale_to_one_with_a_budget_owned_by("someone-elses-uid", false).await;
}

#[tokio::test]
async fn a_statefulset_controlled_by_another_object_is_not_taken_over() {
    let mq = orders();
    let script_mq = mq.clone();
    let run = scenario(mq, |mut server| async move {
        let p = paths();
        server.get_missing(&p.credentials_secret()).await;
        let mut foreign = existing_stateful_set(2, 5);
        foreign["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "legacy-orders",
            "uid": "other-uid", "controller": true,
        }]);
        server.get(&p.stateful_set(), foreign).await;
        // Nothing is applied.
        let (status, _) = degraded(&mut server, &script_mq, "OwnedByAnother").await;
        let message = condition(&status, "Degraded")["message"].as_str().unwrap();
        assert!(message.contains("Deployment legacy-orders"), "{message}");
        server
    })
    .await;
    assert_eq!(run.policy, Some(Action::requeue(PERMANENT_RETRY)));
}

/// Log lines written by the current thread, as JSON.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn every_log_line_of_a_reconcile_names_the_resource() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter("queuelet_operator=debug")
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime runs on this thread only, so the thread default sees every line.
    let _guard = tracing::subscriber::set_default(subscriber);
    let run = scenario(orders(), |mut server| async move {
        let p = paths();
        server.get_missing(&p.credentials_secret()).await;
        server.get_missing(&p.stateful_set()).await;
        server
            .expect_apply(&p.config_map())
            .await
            .fail(409, "Conflict", "conflict");
        server
            .expect_apply(&p.status())
            .await
            .fail(500, "InternalError", "status write failed");
        server.event("shop").await;
        server
    })
    .await;
    assert!(run.result.is_err());
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 3, "{text}");
    for line in &lines {
        let fields = [&line["span"], &line["fields"]];
        let names = |key: &str| fields.iter().any(|f| f[key].is_string());
        assert!(
            names("namespace") && names("name"),
            "a log line without namespace/name: {line}"
        );
        let namespace = fields.iter().find_map(|f| f["namespace"].as_str());
        assert_eq!(namespace, Some("shop"), "{line}");
    }
}

/// The requests of a reconcile up to the StatefulSet, for `orders` with `replicas` queue
/// pods wanted and `before` as the current StatefulSet: no credentials Secret yet, and a
/// budget only with more than one replica.
async fn children_before_the_stateful_set(server: &mut ApiServer, before: Value, replicas: i32) {
    let p = paths();
    server.get_missing(&p.credentials_secret()).await;
    server.get(&p.stateful_set(), before).await;
    for path in [
        p.config_map(),
        p.credentials_secret(),
        p.headless_service(),
        p.client_service(),
    ] {
        server.apply(&path).await;
    }
    if replicas > 1 {
        server.apply(&p.pod_disruption_budget()).await;
    } else {
        server.get_missing(&p.pod_disruption_budget()).await;
    }
}

/// Takes a merge patch of pod `ordinal` setting its serving label to `serving`.
async fn serving_label(server: &mut ApiServer, ordinal: i32, serving: &str) {
    let p = paths();
    let exchange = server.expect(Method::PATCH, &p.pod(ordinal)).await;
    assert_eq!(
        exchange.body,
        json!({"metadata": {"labels": {"queuelet.dev/serving": serving}}})
    );
    let answer = stored(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("orders-{ordinal}"), "namespace": "shop",
                     "labels": {"queuelet.dev/serving": serving}},
    }));
    exchange.respond(StatusCode::OK, answer);
}

#[tokio::test]
async fn a_scale_down_waits_while_a_leaving_pod_holds_messages_and_completes_once_it_is_empty() {
    let mq = orders();
    let staying = queue_pod(1, 0).await;
    let leaving = queue_pod(3, 0).await;

    // 2 → 1 while orders-1 holds three messages: the StatefulSet keeps both pods and
    // orders-1 leaves the client Service.
    let script_mq = mq.clone();
    let written = Arc::new(std::sync::Mutex::new(Value::Null));
    let keep = written.clone();
    let run = scenario_with_pods(mq.clone(), &[&staying, &leaving], |mut server| async move {
        children_before_the_stateful_set(&mut server, existing_stateful_set(2, 1), 1).await;
        serving_label(&mut server, 1, "false").await;
        let sts = apply_stateful_set(&mut server, 1, ready_stateful_set_status(2, 1)).await;
        assert_eq!(sts["spec"]["replicas"], 2, "the leaving pod is kept");
        let status = status_patch(&mut server, &script_mq).await;
        assert_eq!(status["phase"], "Draining");
        assert_condition(&status, "Progressing", "True", "ScaleDownWaiting");
        let message = condition(&status, "Progressing")["message"]
            .as_str()
            .unwrap();
        assert!(message.contains("orders-1 holds 3 messages"), "{message}");
        assert_eq!(
            status["queues"],
            json!([{"name": "orders", "active": 4, "inactive": 0, "delayed": 0}]),
            "the counts of both pods, added up"
        );
        *keep.lock().unwrap() = status;
        server
    })
    .await;
    assert_eq!(run.result.unwrap(), Action::requeue(DRAIN_POLL));
    let mut draining = mq;
    let status = written.lock().unwrap().clone();
    draining.status = Some(serde_json::from_value(status).unwrap());

    // Consumers empty orders-1 through its own name; the scale-down completes and the
    // pod that stays is marked serving again.
    empty(&leaving).await;
    let script_mq = draining.clone();
    let run = scenario_with_pods(draining, &[&staying, &leaving], |mut server| async move {
        children_before_the_stateful_set(&mut server, existing_stateful_set(2, 1), 1).await;
        serving_label(&mut server, 0, "true").await;
        let sts = apply_stateful_set(&mut server, 2, ready_stateful_set_status(1, 2)).await;
        assert_eq!(sts["spec"]["replicas"], 1);
        let event = server.event("shop").await;
        assert_eq!(event["reason"], "Scaled");
        let status = status_patch(&mut server, &script_mq).await;
        assert_eq!(status["phase"], "Running");
        assert_condition(&status, "Progressing", "False", "RolloutComplete");
        assert_eq!(
            status["queues"],
            json!([{"name": "orders", "active": 1, "inactive": 0, "delayed": 0}])
        );
        server
    })
    .await;
    assert_eq!(run.result.unwrap(), Action::requeue(RESYNC));
}

#[tokio::test]
async fn a_leaving_pod_that_does_not_answer_keeps_the_scale_down_waiting() {
    let mq = orders();
    let staying = queue_pod(0, 0).await;
    let script_mq = mq.clone();
    // orders-1 is not reachable (NO_POD): its messages cannot be known to be gone.
    let run = scenario_with_pods(mq, &[&staying], |mut server| async move {
        children_before_the_stateful_set(&mut server, existing_stateful_set(2, 1), 1).await;
        serving_label(&mut server, 1, "false").await;
        let sts = apply_stateful_set(&mut server, 1, ready_stateful_set_status(2, 1)).await;
        assert_eq!(sts["spec"]["replicas"], 2);
        let status = status_patch(&mut server, &script_mq).await;
        assert_eq!(status["phase"], "Draining");
        let message = condition(&status, "Progressing")["message"]
            .as_str()
            .unwrap();
        assert!(
            message.contains("orders-1 did not report its messages")
                && message.contains("queuelet.dev/force-scale-down"),
            "{message}"
        );
        server
    })
    .await;
    assert_eq!(run.result.unwrap(), Action::requeue(DRAIN_POLL));
}

/// A StatefulSet whose claim template asks for `size`.
fn stateful_set_with_volumes(replicas: i32, size: &str) -> Value {
    let mut sts = existing_stateful_set(replicas, 1);
    sts["metadata"]["uid"] = json!("sts-uid");
    sts["spec"]["volumeClaimTemplates"] = json!([{
        "metadata": {"name": "queuelet-data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }]);
    sts
}

fn claim(ordinal: i32, size: &str) -> Value {
    stored(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": format!("queuelet-data-orders-{ordinal}"), "namespace": "shop"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }))
}

#[tokio::test]
async fn growing_the_storage_expands_each_claim_and_recreates_the_statefulset_orphaning_its_pods() {
    let mut mq = orders();
    mq.spec.replicas = 2;
    mq.spec.storage = Some(serde_json::from_value(json!({"size": "2Gi"})).unwrap());
    let script_mq = mq.clone();
    let run = scenario(mq, |mut server| async move {
        let p = paths();
        children_before_the_stateful_set(&mut server, stateful_set_with_volumes(2, "1Gi"), 2).await;
        // The claims of this instance, by its selector labels.
        let exchange = server.expect(Method::GET, &p.claims()).await;
        assert!(
            exchange
                .query
                .contains("labelSelector=app.kubernetes.io%2Fcomponent%3Dqueue-server"),
            "{}",
            exchange.query
        );
        exchange.respond(
            StatusCode::OK,
            json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaimList",
                "metadata": {"resourceVersion": "7"},
                // orders-1's claim was already grown (an earlier, interrupted attempt).
                "items": [claim(0, "1Gi"), claim(1, "2048Mi")],
            }),
        );
        let exchange = server.expect(Method::PATCH, &p.claim(0)).await;
        assert_eq!(
            exchange.body,
            json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})
        );
        exchange.respond(StatusCode::OK, claim(0, "2Gi"));
        // The StatefulSet goes, its pods stay.
        let exchange = server.expect(Method::DELETE, &p.stateful_set()).await;
        assert_eq!(exchange.body["propagationPolicy"], "Orphan");
        assert_eq!(exchange.body["preconditions"]["uid"], "sts-uid");
        exchange.respond(StatusCode::OK, stateful_set_with_volumes(2, "1Gi"));
        let event = server.event("shop").await;
        assert_eq!(event["reason"], "VolumeExpansion");
        assert!(
            event["note"]
                .as_str()
                .unwrap()
                .contains("from 1Gi to 2Gi: 1 claims patched"),
            "{event}"
        );
        let status = status_patch(&mut server, &script_mq).await;
        assert_condition(&status, "Progressing", "True", "VolumeExpansion");
        server
    })
    .await;
    assert_eq!(run.result.unwrap(), Action::requeue(EXPANSION_POLL));
}

#[tokio::test]
async fn a_statefulset_being_deleted_for_an_expansion_is_waited_for_without_applying() {
    let mut mq = orders();
    mq.spec.storage = Some(serde_json::from_value(json!({"size": "2Gi"})).unwrap());
    let script_mq = mq.clone();
    let run = scenario(mq, |mut server| async move {
        let p = paths();
        server.get_missing(&p.credentials_secret()).await;
        let mut terminating = stateful_set_with_volumes(1, "1Gi");
        terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:05Z");
        terminating["status"] = ready_stateful_set_status(1, 1);
        server.get(&p.stateful_set(), terminating).await;
        let status = status_patch(&mut server, &script_mq).await;
        assert_condition(&status, "Progressing", "True", "VolumeExpansion");
        assert_eq!(status["readyReplicas"], 1, "the orphaned pods keep serving");
        server
    })
    .await;
    assert_eq!(run.result.unwrap(), Action::requeue(EXPANSION_POLL));
}

#[tokio::test]
async fn a_message_queue_being_deleted_is_left_to_the_garbage_collector() {
    let mut mq = orders();
    mq.metadata.deletion_timestamp =
        Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap());
    mq.metadata.finalizers = Some(vec!["foregroundDeletion".into()]);
    // No request at all: nothing read, applied or written (`done` checks).
    let run = scenario(mq, |server| async move { server }).await;
    assert_eq!(run.result.unwrap(), Action::await_change());
}
