//! The running controller: what it watches (MessageQueues, and only the children that
//! carry the operator's managed-by label) and how many it reconciles at once.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::{Controller, controller, watcher};
use kube::{Api, Client, Resource};

use super::context::Context;
use super::reconcile::{error_policy, reconcile};
use crate::build::{LABEL_MANAGED_BY, MANAGER};
use crate::resource::MessageQueue;

/// An Api over every namespace (`None`), or over one.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Reconciles the MessageQueues of `namespace` (every namespace when `None`) until a
/// shutdown signal, at most `concurrency` at a time (0: no limit).
pub async fn run(client: Client, namespace: Option<&str>, concurrency: u16, ctx: Arc<Context>) {
    let ns = namespace;
    // Only the operator's own children: never cache every Secret of the cluster.
    let children = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    Controller::new(
        scoped::<MessageQueue>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .owns(scoped::<StatefulSet>(&client, ns), children.clone())
    .owns(scoped::<Service>(&client, ns), children.clone())
    .owns(scoped::<ConfigMap>(&client, ns), children.clone())
    .owns(scoped::<Secret>(&client, ns), children.clone())
    .owns(scoped::<PodDisruptionBudget>(&client, ns), children)
    .with_config(controller::Config::default().concurrency(concurrency))
    .shutdown_on_signal()
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        match result {
            Ok((object, _)) => tracing::debug!(object = %object, "reconciled"),
            Err(err) => tracing::debug!(error = %err, "reconcile did not complete"),
        }
    })
    .await;
}
