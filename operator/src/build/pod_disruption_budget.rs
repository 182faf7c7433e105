//! The PodDisruptionBudget: with several replicas, voluntary evictions (node drains) take
//! one queue pod at a time.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Component, Instance};

/// `None` with a single replica, where a budget of one unavailable pod would still let
/// the drain through and a stricter one would block it forever.
pub fn pod_disruption_budget(instance: &Instance<'_>) -> Option<PodDisruptionBudget> {
    if instance.mq.spec.replicas <= 1 {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: instance.metadata(
            instance.pod_disruption_budget_name(),
            Component::QueueServer,
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(instance.selector_labels()),
                ..LabelSelector::default()
            }),
            // A pod that is not ready serves nothing; do not let it block a node drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
