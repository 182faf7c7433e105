//! Shared by the integration tests: the representative MessageQueues under `fixtures/`
//! and everything the builders make of them.

#![allow(dead_code)]

pub mod schema;
pub mod tools;

use std::path::PathBuf;

use kube::Resource;
use queuelet_operator::build::{Defaults, Desired, Instance};
use queuelet_operator::resource::MessageQueue;
use serde_json::Value;

/// The fixtures, by file stem, in a fixed order.
pub const FIXTURES: [&str; 5] = [
    "minimal",
    "dead-letter",
    "ephemeral",
    "consumer",
    "replicas-3",
];

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> MessageQueue {
    let path = manifest_dir()
        .join("tests/fixtures")
        .join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

pub fn defaults() -> Defaults {
    Defaults {
        image: "registry.example/queuelet:0.1.0".into(),
        cluster_domain: "cluster.local".into(),
    }
}

/// The objects built for `mq`, with a fixed token so that snapshots are stable.
pub fn desired(mq: &MessageQueue) -> Desired {
    let owner = mq.controller_owner_ref(&()).expect("fixtures carry a uid");
    let defaults = defaults();
    let instance = Instance::new(mq, owner, &defaults).expect("fixtures are complete");
    Desired::build(&instance, None, || "not-a-real-token".into())
}

/// Every built object as JSON, in apply order.
pub fn objects(desired: &Desired) -> Vec<Value> {
    let mut objects = vec![serde_json::to_value(&desired.config_map).unwrap()];
    if let Some(secret) = &desired.credentials_secret {
        objects.push(serde_json::to_value(secret).unwrap());
    }
    objects.push(serde_json::to_value(&desired.headless_service).unwrap());
    objects.push(serde_json::to_value(&desired.client_service).unwrap());
    if let Some(pdb) = &desired.pod_disruption_budget {
        objects.push(serde_json::to_value(pdb).unwrap());
    }
    objects.push(serde_json::to_value(&desired.stateful_set).unwrap());
    objects
}

/// Runs kubernetes-validate over `files` and every object built for each `(label,
/// MessageQueue)`; returns how many files passed, or `None` when the tool is missing
/// (see [`tools::required`]).
pub fn validate_built<'a>(
    test: &str,
    mut files: Vec<PathBuf>,
    queues: impl IntoIterator<Item = (&'a str, MessageQueue)>,
) -> Option<usize> {
    let command = tools::kubernetes_validate(test)?;
    let dir = tempfile::tempdir().unwrap();
    for (label, mq) in queues {
        files.extend(tools::write_objects(
            dir.path(),
            label,
            &objects(&desired(&mq)),
        ));
    }
    tools::run_validate(&command, &files);
    Some(files.len())
}
