//! queuelet-operator: the `MessageQueue` resource, the pure builders of the objects that
//! run it, the controller that applies them, and the process around it (leader
//! election, metrics and health over HTTP).

pub mod build;
pub mod controller;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod resource;

use kube::CustomResourceExt;

/// The CRD of `MessageQueue` as YAML, exactly what `queuelet-operator crd` prints and
/// `crds/messagequeue.yaml` holds.
pub fn crd_yaml() -> String {
    let crd = resource::MessageQueue::crd();
    let yaml = serde_saphyr::to_string(&crd).expect("the CRD serializes to YAML");
    format!("---\n{yaml}")
}
