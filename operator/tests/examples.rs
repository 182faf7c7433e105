//! The MessageQueues under `examples/`: each passes the CRD's schema and CEL rules as the
//! API server would apply them, reads as a `MessageQueue`, and builds into objects that
//! pass the Kubernetes OpenAPI schemas.

mod common;

use std::path::PathBuf;

use common::{desired, manifest_dir, schema};
use queuelet::api::model::ReceiveRequest;
use queuelet::client::Client as QueueClient;
use queuelet_e2e::Server;
use queuelet_operator::build::CONFIG_FILE;
use queuelet_operator::resource::MessageQueue;
use serde_json::{Value, json};

const EXAMPLES: [&str; 4] = ["minimal", "dead-letter", "topic-fanout", "consumer-sidecar"];

fn examples_dir() -> PathBuf {
    manifest_dir().join("../examples")
}

fn example_value(name: &str) -> Value {
    let path = examples_dir().join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The example as `kubectl apply -n default` would create it: in a namespace, with a uid.
fn applied(name: &str) -> MessageQueue {
    let mut mq: MessageQueue = serde_json::from_value(example_value(name))
        .unwrap_or_else(|e| panic!("examples/{name}.yaml is not a MessageQueue: {e}"));
    mq.metadata.namespace = Some("default".into());
    mq.metadata.uid = Some("6f1d1c9e-0000-4000-8000-0000000000e0".into());
    mq
}

#[test]
fn the_examples_are_exactly_the_documented_ones() {
    let mut found: Vec<String> = std::fs::read_dir(examples_dir())
        .expect("examples/")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut expected: Vec<String> = EXAMPLES.iter().map(|n| format!("{n}.yaml")).collect();
    expected.sort();
    assert_eq!(
        found, expected,
        "add a new example to EXAMPLES so that it is tested"
    );
}

#[test]
fn examples_pass_the_crd_schema() {
    let schema = schema::message_queue_schema();
    for name in EXAMPLES {
        let violations = schema::violations(&schema, &example_value(name));
        assert!(
            violations.is_empty(),
            "examples/{name}.yaml:\n{}",
            violations.join("\n")
        );
    }
}

#[test]
fn the_schema_check_refuses_what_the_api_server_refuses() {
    let schema = schema::message_queue_schema();
    let mut example = example_value("dead-letter");
    example["spec"]["replicas"] = json!("two");
    example["spec"]["queues"][0]["deadLetter"]["maxReceiveCount"] = json!(0);
    example["spec"]["queues"][1]["name"] = json!("1-starts-with-a-digit");
    example["spec"]["storage"]["sizee"] = json!("1Gi");
    example["spec"]["durability"] = json!({"mode": "sometimes"});
    example["spec"]["pod"] = json!({"tolerations": [{"key": "a", "tolerationSeconds": "soon"}]});
    let violations = schema::violations(&schema, &example);
    for expected in [
        ".spec.replicas: must be of type integer",
        ".spec.queues[0].deadLetter.maxReceiveCount: 0 is below the minimum",
        ".spec.queues[1].name: \"1-starts-with-a-digit\" does not match",
        ".spec.storage.sizee: unknown field",
        ".spec.durability.mode: \"sometimes\" is not one of",
        ".spec.pod.tolerations[0].tolerationSeconds: must be of type integer",
    ] {
        assert!(
            violations.iter().any(|v| v.starts_with(expected)),
            "{expected} not among {violations:#?}"
        );
    }
}

#[test]
fn push_endpoints_are_http_or_https_urls_the_server_accepts() {
    let schema = schema::message_queue_schema();
    let with_endpoint = |url: &str| {
        let mut example = example_value("topic-fanout");
        example["spec"]["topics"][0]["subscriptions"][0] = json!({"name": "hook", "endpoint": url});
        schema::violations(&schema, &example)
    };
    for url in [
        "http://audit.shop.svc/hook",
        "https://hooks.example.com:8443/q?a=1",
    ] {
        assert_eq!(with_endpoint(url), Vec::<String>::new(), "{url}");
    }
    let long = format!("https://x.example/{}", "a".repeat(500));
    for url in [
        "ftp://x.example/h",
        "https:///nohost",
        "audit.shop.svc",
        long.as_str(),
    ] {
        assert!(
            with_endpoint(url)
                .iter()
                .any(|v| v.starts_with(".spec.topics[0].subscriptions[0].endpoint")),
            "{url} passes the schema"
        );
    }
}

#[test]
fn examples_pass_the_crd_validation_rules() {
    for name in EXAMPLES {
        if let Err(errors) = applied(name).validate_cel() {
            panic!("examples/{name}.yaml breaks the CRD's rules:\n{errors}");
        }
    }
}

#[test]
fn examples_read_back_unchanged_as_message_queues() {
    for name in EXAMPLES {
        let original = example_value(name);
        let typed: MessageQueue = serde_json::from_value(original.clone()).unwrap();
        let mut round_trip = serde_json::to_value(&typed).unwrap();
        // Defaults the type fills in: the only difference allowed.
        if original["spec"].get("replicas").is_none() {
            assert_eq!(round_trip["spec"]["replicas"], 1);
            round_trip["spec"]
                .as_object_mut()
                .unwrap()
                .remove("replicas");
        }
        assert_eq!(
            round_trip, original,
            "examples/{name}.yaml loses or changes fields"
        );
    }
}

#[test]
fn built_examples_pass_the_kubernetes_openapi_schemas() {
    common::validate_built(
        "built_examples_pass_the_kubernetes_openapi_schemas",
        Vec::new(),
        EXAMPLES.map(|name| (name, applied(name))),
    );
}

#[test]
fn the_consumer_example_uses_the_environment_the_operator_injects() {
    let mq = applied("consumer-sidecar");
    let sts = serde_json::to_value(desired(&mq).stateful_set).unwrap();
    let pod = &sts["spec"]["template"]["spec"];
    let worker = &pod["containers"][0];
    assert_eq!(worker["name"], "worker");
    let env: Vec<&str> = worker["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let script = worker["args"][0].as_str().unwrap();
    assert!(env.contains(&"QUEUELET_URL"), "{env:?}");
    for var in ["QUEUELET_SOCKET", "QUEUELET_TOKEN", "QUEUE"] {
        assert!(env.contains(&var), "{var} not in the worker's env {env:?}");
        assert!(
            script.contains(&format!("${var}")),
            "the script does not use ${var}"
        );
    }
    let url = worker["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "QUEUELET_URL")
        .unwrap();
    assert_eq!(url["value"], "http://127.0.0.1:8080");
    // The socket's directory is mounted in the worker.
    assert!(
        worker["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "queuelet-socket" && m["mountPath"] == "/var/run/queuelet"),
        "{worker}"
    );
    // The queue server runs beside it as a native sidecar.
    assert_eq!(pod["initContainers"][0]["name"], "queuelet");
    assert_eq!(pod["initContainers"][0]["restartPolicy"], "Always");
}

/// The topic example's configuration, as the operator writes it into the ConfigMap,
/// served by a real queue server: each published message reaches exactly the queues
/// whose subscription's tags it carries.
#[tokio::test]
async fn the_topic_example_fans_out_by_tag_on_a_real_server() {
    let config = desired(&applied("topic-fanout")).config_map;
    let toml = &config.data.expect("ConfigMap data")[CONFIG_FILE];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CONFIG_FILE);
    std::fs::write(&path, toml).unwrap();
    let server = Server::start(&["--config", path.to_str().unwrap()]);

    let http = reqwest::Client::new();
    let published = [
        ("a", vec!["paid"]),
        ("b", vec!["shipped"]),
        ("c", vec!["paid", "shipped"]),
        ("d", vec![]),
    ];
    for (body, tags) in published {
        let response = http
            .post(format!("{}/v1/topics/order-events/messages", server.url))
            .json(&json!({"body": body, "tags": tags}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }

    let queues = QueueClient::new(&server.url).unwrap();
    let request = ReceiveRequest {
        max: Some(16),
        wait_seconds: Some(1),
        encoding: Default::default(),
    };
    for (queue, expected) in [("billing", ["a", "c"]), ("shipping", ["b", "c"])] {
        let mut bodies: Vec<String> = queues
            .receive(queue, &request)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.body)
            .collect();
        bodies.sort();
        assert_eq!(bodies, expected, "{queue}");
    }
}
