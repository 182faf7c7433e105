//! End to end against a real cluster: install the CRD, run the operator binary on a
//! fresh namespace, apply a MessageQueue, wait for it to be Ready, and reach its queue
//! server through `kubectl port-forward` with the token from its Secret:
//! - send and receive a message, then delete the MessageQueue and see its children
//!   garbage-collected;
//! - run `examples/consumer-sidecar.yaml`, whose consumer calls the queue server through
//!   its Unix socket only, and see it drain the queue.
//!
//! Runs only when `KUBECONFIG` is set (the queue server image comes from
//! `QUEUELET_E2E_IMAGE`, default `queuelet:<version>`, which the cluster must be able to
//! pull; the consumer example pulls `curlimages/curl`); otherwise each test says it was
//! skipped.

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
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Stops a child process (the operator, a port-forward) even when the test fails.
struct Running(Child);

impl Drop for Running {
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

/// The CRD installed, a fresh namespace, and the operator watching it.
struct Cluster {
    client: Client,
    namespace: String,
    queues: Api<MessageQueue>,
    _operator: Running,
}

impl Cluster {
    /// `None` (after saying so) when `KUBECONFIG` is not set.
    async fn start(test: &str) -> Option<Self> {
        if std::env::var_os("KUBECONFIG").is_none() {
            eprintln!(
                "SKIPPED {test}: KUBECONFIG is not set (point it at a disposable cluster to \
                 run this end-to-end test)"
            );
            return None;
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

        // A DNS label: lowercase letters, digits and dashes.
        let namespace = format!("queuelet-e2e-{}-{test:.20}", std::process::id())
            .replace('_', "-")
            .trim_end_matches('-')
            .to_string();
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
        let operator = Running(
            Command::new(env!("CARGO_BIN_EXE_queuelet-operator"))
                .args(["run", "--watch-namespaces", &namespace])
                .args(["--http-addr", "127.0.0.1:0", "--image", &image])
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("the operator starts"),
        );
        Some(Self {
            queues: Api::namespaced(client.clone(), &namespace),
            client,
            namespace,
            _operator: operator,
        })
    }

    /// Creates the MessageQueue and waits until it is Ready.
    async fn apply_and_wait_ready(&self, mq: Value) -> String {
        let mq: MessageQueue = serde_json::from_value(mq).expect("a MessageQueue");
        let name = mq.metadata.name.clone().expect("a name");
        self.queues
            .create(&PostParams::default(), &mq)
            .await
            .expect("the MessageQueue is accepted");
        eventually("the MessageQueue to be Ready", || async {
            let status = self.queues.get(&name).await.ok()?.status?;
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        })
        .await;
        name
    }

    /// A client of the MessageQueue's Service through `kubectl port-forward`, with the
    /// generated token; keep the returned process while using it.
    async fn queue_client(&self, name: &str) -> (QueueClient, Running) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = secrets
            .get(&format!("{name}-credentials"))
            .await
            .expect("the credentials Secret");
        let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
        let port = free_port();
        let forward = Running(
            Command::new("kubectl")
                .args(["port-forward", "-n", &self.namespace])
                .arg(format!("service/{name}"))
                .arg(format!("{port}:8080"))
                .stdout(Stdio::null())
                .spawn()
                .expect("kubectl port-forward starts"),
        );
        let url = format!("http://127.0.0.1:{port}");
        (QueueClient::new(&url).unwrap().with_token(token), forward)
    }

    async fn delete_namespace(self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .delete(&self.namespace, &DeleteParams::default())
            .await
            .expect("the namespace deletes");
    }
}

#[tokio::test]
async fn a_message_queue_serves_messages_on_a_real_cluster() {
    let Some(cluster) = Cluster::start("a_message_queue_serves_messages_on_a_real_cluster").await
    else {
        return;
    };
    let name = cluster
        .apply_and_wait_ready(json!({
            "apiVersion": "queuelet.dev/v1alpha1",
            "kind": "MessageQueue",
            "metadata": {"name": "orders"},
            "spec": {"ephemeral": true, "queues": [{"name": "orders"}]},
        }))
        .await;
    let stateful_sets: Api<StatefulSet> =
        Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let sts = stateful_sets.get(&name).await.expect("the StatefulSet");
    assert_eq!(sts.spec.replicas, Some(1));
    let status = cluster
        .queues
        .get(&name)
        .await
        .expect("the MessageQueue")
        .status
        .expect("a status");
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("http://orders.{}.svc.cluster.local:8080", cluster.namespace).as_str())
    );

    let (queue, _forward) = cluster.queue_client(&name).await;
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

    cluster
        .queues
        .delete(&name, &DeleteParams::default())
        .await
        .expect("the MessageQueue deletes");
    eventually("the StatefulSet to be garbage-collected", || async {
        matches!(stateful_sets.get_opt(&name).await, Ok(None)).then_some(())
    })
    .await;
    cluster.delete_namespace().await;
}

/// The example's consumer reaches the queue server only through the Unix socket in the
/// shared `emptyDir`: it drains the queue only if the pod's `fsGroup` lets it open the
/// server's 0660 socket.
#[tokio::test]
async fn the_example_consumer_drains_its_queue_through_the_socket_on_a_real_cluster() {
    let Some(cluster) = Cluster::start(
        "the_example_consumer_drains_its_queue_through_the_socket_on_a_real_cluster",
    )
    .await
    else {
        return;
    };
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/consumer-sidecar.yaml"
    );
    let text = std::fs::read_to_string(path).expect("the example");
    let mut example: Value = serde_saphyr::from_str(&text).expect("the example parses");
    // No volume to provision on a disposable cluster.
    example["spec"]["ephemeral"] = json!(true);
    let name = cluster.apply_and_wait_ready(example).await;
    let (queue, _forward) = cluster.queue_client(&name).await;
    for n in 0..3 {
        eventually("a send through the port-forward", || async {
            queue.send_text("jobs", &format!("job {n}")).await.ok()
        })
        .await;
    }
    eventually("the consumer to delete every message", || async {
        let stats = queue.get_queue("jobs").await.ok()?.stats;
        (stats.active + stats.inactive + stats.delayed == 0).then_some(())
    })
    .await;
    cluster.delete_namespace().await;
}
