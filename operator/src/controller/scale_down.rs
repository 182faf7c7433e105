//! Scale-down that never strands messages. A StatefulSet removes its highest ordinals
//! first, so when `spec.replicas` drops, pods `wanted..current` are leaving. While any of
//! them still holds messages (or cannot be asked), the controller keeps the StatefulSet
//! at its current size, takes the leaving pods out of the client Service (label
//! `queuelet.dev/serving=false`, which that Service selects on) so they get no new sends,
//! and lets consumers empty them through their per-pod names. Once their counts read
//! zero the StatefulSet shrinks. The annotation `queuelet.dev/force-scale-down: "true"`
//! skips the wait (for a pod that is gone for good).

use std::ops::Range;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use tracing::info;

use super::context::Context;
use super::error::Error;
use super::sidecars::{PodCounts, messages_held};
use crate::build::{Instance, LABEL_SERVING};
use crate::resource::{MessageQueue, Phase};

pub const FORCE_SCALE_DOWN_ANNOTATION: &str = "queuelet.dev/force-scale-down";

/// True when the MessageQueue carries `queuelet.dev/force-scale-down: "true"`.
pub fn is_forced(mq: &MessageQueue) -> bool {
    mq.annotations()
        .get(FORCE_SCALE_DOWN_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Keeps the pods a scale-down would remove while any of them holds messages: sets the
/// StatefulSet's replicas back to `current` and takes them out of the client Service.
/// Returns why it waits, or None when the scale-down may go ahead. After a wait, the
/// pods that stay (the user may have scaled back up) serve again.
pub async fn hold(
    ctx: &Context,
    instance: &Instance<'_>,
    pods: &[PodCounts],
    current: i32,
    stateful_set: &mut StatefulSet,
) -> Result<Option<String>, Error> {
    let wanted = instance.mq.spec.replicas;
    let was_draining = instance.mq.status.as_ref().and_then(|s| s.phase) == Some(Phase::Draining);
    if was_draining {
        set_serving(ctx, instance, 0..wanted.min(current), true).await?;
    }
    if wanted >= current || is_forced(instance.mq) {
        return Ok(None);
    }
    let blockers = blockers(instance, pods, wanted..current);
    if blockers.is_empty() {
        return Ok(None);
    }
    set_serving(ctx, instance, wanted..current, false).await?;
    stateful_set.spec.replicas = Some(current);
    let message = waiting_message(wanted, &blockers);
    info!(wanted, current, %message, "scale-down waits");
    Ok(Some(message))
}

/// Why each leaving pod (ordinal in `leaving`) must stay; empty when all may go.
fn blockers(instance: &Instance<'_>, pods: &[PodCounts], leaving: Range<i32>) -> Vec<String> {
    let name = instance.stateful_set_name();
    leaving
        .filter_map(|ordinal| {
            match pods
                .iter()
                .find(|p| p.ordinal == ordinal)
                .map(|p| &p.queues)
            {
                Some(Ok(queues)) => match messages_held(queues) {
                    0 => None,
                    held => Some(format!("{name}-{ordinal} holds {held} messages")),
                },
                Some(Err(err)) => Some(format!(
                    "{name}-{ordinal} did not report its messages ({err})"
                )),
                None => Some(format!("{name}-{ordinal} did not report its messages")),
            }
        })
        .collect()
}

/// The Progressing message while a scale-down waits.
fn waiting_message(wanted: i32, blockers: &[String]) -> String {
    format!(
        "scale-down to {wanted} replicas waits until the leaving pods are empty: {}; \
         they receive no new sends (label {LABEL_SERVING}=false) and are removed once empty \
         (annotate {FORCE_SCALE_DOWN_ANNOTATION}=true to remove them anyway)",
        blockers.join("; ")
    )
}

/// Sets `queuelet.dev/serving` on the queue pods `ordinals`; a missing pod is skipped.
async fn set_serving(
    ctx: &Context,
    instance: &Instance<'_>,
    ordinals: Range<i32>,
    serving: bool,
) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), instance.namespace);
    let value = if serving { "true" } else { "false" };
    let body = serde_json::json!({"metadata": {"labels": {LABEL_SERVING: value}}});
    for ordinal in ordinals {
        let name = format!("{}-{ordinal}", instance.stateful_set_name());
        match pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => info!(pod = %name, serving, "serving label set"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::Apply {
                    kind: "Pod".into(),
                    name,
                    source,
                });
            }
        }
    }
    Ok(())
}
