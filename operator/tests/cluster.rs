//! End to end against a real cluster: install the CRD, run the operator binary on a
//! fresh namespace, apply a minimal MessageQueue, and wait for its StatefulSet and its
//! status. Runs only when `KUBECONFIG` is set; otherwise it says it was skipped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
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
async fn a_message_queue_gets_its_stateful_set_on_a_real_cluster() {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!(
            "SKIPPED a_message_queue_gets_its_stateful_set_on_a_real_cluster: KUBECONFIG is not set \
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

    let _operator = Operator(
        Command::new(env!("CARGO_BIN_EXE_queuelet-operator"))
            .args(["run", "--namespace", &namespace])
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
    assert!(status.conditions.iter().any(|c| c.type_ == "Ready"));

    queues
        .delete("orders", &DeleteParams::default())
        .await
        .expect("the MessageQueue deletes");
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .expect("the namespace deletes");
}
