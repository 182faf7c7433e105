//! queuelet-operator: the `MessageQueue` resource and the pure builders of the objects
//! that run it. The controller that applies them is built next.

pub mod build;
pub mod controller;
pub mod leader;
pub mod resource;

use kube::CustomResourceExt;

/// The CRD of `MessageQueue` as YAML, exactly what `queuelet-operator crd` prints and
/// `crds/messagequeue.yaml` holds.
pub fn crd_yaml() -> String {
    let crd = resource::MessageQueue::crd();
    let yaml = serde_saphyr::to_string(&crd).expect("the CRD serializes to YAML");
    format!("---\n{yaml}")
}
