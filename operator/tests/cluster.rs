//! End to end against a real cluster: install the CRD, run the operator binary on a
//! fresh namespace, apply a MessageQueue, wait for it to be Ready, send and receive a
//! message through `kubectl port-forward` with the token from its Secret, then delete it
//! and see its children garbage-collected. Runs only when `KUBECONFIG` is set (the
//! queue server image comes from `QUEUELET_E2E_IMAGE`, default `queuelet:<version>`,
//! which the cluster must be able to pull); otherwise it says it was skipped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use queuelet::api::model::ReceiveRequest;
use queuelet::client::Client as QueueClient;
use queuelet_operator::resource::MessageQueue;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Stops the operator process even when the test fails.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_message_queue_serves_messages_on_a_real_cluster() {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!(
            "SKIPPED a_message_queue_serves_messages_on_a_real_cluster: KUBECONFIG is not set \
             (point it at a disposable cluster to run this end-to-end test)"
        );
        return;
    }
    let client = Client::try_default()
        .await
        .expect("a client from KUBECONFIG");

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = MessageQueue::crd();
    let crd_name = crd.metadata.name.clone().unwrap();
    crds.patch(
        &crd_name,
        &PatchParams::apply("queuelet-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("the CRD installs");
    eventually("the CRD to be established", || async {
        let crd = crds.get(&crd_name).await.ok()?;
        let established = crd
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;

    let namespace = format!("queuelet-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
        )
        .await
        .expect("a test namespace");

    let image = std::env::var("QUEUELET_E2E_IMAGE")
        .unwrap_or_else(|_| concat!("queuelet:", env!("CARGO_PKG_VERSION")).into());
    let _operator = Operator(
        Command::new(env!("CARGO_BIN_EXE_queuelet-operator"))
            .args(["run", "--watch-namespaces", &namespace])
            .args(["--http-addr", "127.0.0.1:0", "--image", &image])
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the operator starts"),
    );

    let queues: Api<MessageQueue> = Api::namespaced(client.clone(), &namespace);
    let mq: MessageQueue = serde_json::from_value(json!({
        "apiVersion": "queuelet.dev/v1alpha1",
        "kind": "MessageQueue",
        "metadata": {"name": "orders"},
        "spec": {"ephemeral": true, "queues": [{"name": "orders"}]},
    }))
    .unwrap();
    queues
        .create(&PostParams::default(), &mq)
        .await
        .expect("the MessageQueue is accepted");

    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let sts = eventually("the StatefulSet", || async {
        stateful_sets.get_opt("orders").await.ok().flatten()
    })
    .await;
    assert_eq!(sts.spec.replicas, Some(1));
    let status = eventually("the status endpoint", || async {
        let status = queues.get("orders").await.ok()?.status?;
        status.endpoint.is_some().then_some(status)
    })
    .await;
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("http://orders.{namespace}.svc.cluster.local:8080").as_str())
    );
    eventually("the MessageQueue to be Ready", || async {
        let status = queues.get("orders").await.ok()?.status?;
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;

    // Through a port-forward to the client Service, with the generated token.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = secrets
        .get("orders-credentials")
        .await
        .expect("the credentials Secret");
    let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
    let port = free_port();
    let _forward = Operator(
        Command::new("kubectl")
            .args(["port-forward", "-n", &namespace, "service/orders"])
            .arg(format!("{port}:8080"))
            .stdout(Stdio::null())
            .spawn()
            .expect("kubectl port-forward starts"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let queue = QueueClient::new(&url).unwrap().with_token(token);
    let id = eventually("a send through the port-forward", || async {
        queue
            .send_text("orders", "hello from the cluster")
            .await
            .ok()
    })
    .await;
    let request = ReceiveRequest {
        max: Some(1),
        wait_seconds: Some(5),
        encoding: Default::default(),
    };
    let received = queue.receive("orders", &request).await.expect("receive");
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].id, id);
    assert_eq!(received[0].body, "hello from the cluster");
    queue
        .delete("orders", &received[0].receipt_handle)
        .await
        .expect("delete");

    queues
        .delete("orders", &DeleteParams::default())
        .await
        .expect("the MessageQueue deletes");
    eventually("the StatefulSet to be garbage-collected", || async {
        matches!(stateful_sets.get_opt("orders").await, Ok(None)).then_some(())
    })
    .await;
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .expect("the namespace deletes");
}
