//! Kubernetes events the controller publishes about a MessageQueue: what it created,
//! scaled or updated, and why it failed. A failure to publish is logged, never fatal.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Resource;
use kube::runtime::events::{Event, EventType};

use super::context::Context;
use super::error::Error;
use crate::resource::MessageQueue;

/// The event announcing what applying the StatefulSet did, judged from the StatefulSet
/// before (`None`: it did not exist) and after the apply. None when nothing changed.
pub fn rollout_event(before: Option<&StatefulSet>, after: &StatefulSet) -> Option<Event> {
    let name = after.metadata.name.as_deref().unwrap_or_default();
    let replicas = |s: &StatefulSet| s.spec.replicas.unwrap_or(1);
    let Some(before) = before else {
        return Some(normal(
            "Created",
            "Create",
            format!(
                "created StatefulSet {name} with {} queue pods, after its configuration and Services",
                replicas(after)
            ),
        ));
    };
    if after.metadata.generation == before.metadata.generation {
        return None;
    }
    let (from, to) = (replicas(before), replicas(after));
    let changed_template = before.spec.template != after.spec.template;
    if from != to {
        let mut note = format!("scaled StatefulSet {name} from {from} to {to} queue pods");
        if changed_template {
            note.push_str(" and updated its pod template");
        }
        return Some(normal("Scaled", "Scale", note));
    }
    let note = if changed_template {
        format!("updated the pod template of StatefulSet {name}: its pods roll")
    } else {
        format!("updated StatefulSet {name}")
    };
    Some(normal("Updated", "Update", note))
}

/// The event announcing a volume expansion: claims grown, StatefulSet to be recreated.
pub fn volume_expansion_event(stateful_set: &str, from: &str, to: &str, claims: usize) -> Event {
    normal(
        "VolumeExpansion",
        "Expand",
        format!(
            "growing the volumes of StatefulSet {stateful_set} from {from} to {to}: {claims} claims patched; \
             the StatefulSet is recreated with its pods left running"
        ),
    )
}

/// The Warning event of a permanent failure.
pub fn failure_event(err: &Error) -> Event {
    Event {
        type_: EventType::Warning,
        reason: err.reason().into(),
        note: Some(truncate(err.to_string())),
        action: "Reconcile".into(),
        secondary: None,
    }
}

fn normal(reason: &str, action: &str, note: String) -> Event {
    Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(truncate(note)),
        action: action.into(),
        secondary: None,
    }
}

/// Event notes are limited to 1 kB.
fn truncate(mut note: String) -> String {
    if note.len() > 1000 {
        let mut end = 1000;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    note
}

/// Publishes `event` about `mq`; an API failure is only logged.
pub async fn publish(ctx: &Context, mq: &MessageQueue, event: Event) {
    if let Err(err) = ctx.recorder.publish(&event, &mq.object_ref(&())).await {
        tracing::warn!(reason = %event.reason, error = %err, "could not publish an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(replicas: i32, generation: i64, image: &str) -> StatefulSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "orders", "generation": generation},
            "spec": {"replicas": replicas, "selector": {},
                     "template": {"spec": {"containers": [{"name": "queuelet", "image": image}]}}},
        }))
        .unwrap()
    }

    #[test]
    fn a_new_statefulset_is_announced_as_created() {
        let event = rollout_event(None, &sts(1, 1, "a")).unwrap();
        assert_eq!(
            (event.type_, event.reason.as_str()),
            (EventType::Normal, "Created")
        );
    }

    #[test]
    fn an_unchanged_generation_is_not_announced() {
        assert!(rollout_event(Some(&sts(1, 3, "a")), &sts(1, 3, "a")).is_none());
    }

    #[test]
    fn scaling_and_template_changes_are_told_apart() {
        let scaled = rollout_event(Some(&sts(1, 1, "a")), &sts(3, 2, "a")).unwrap();
        assert_eq!(scaled.reason, "Scaled");
        assert_eq!(
            scaled.note.as_deref(),
            Some("scaled StatefulSet orders from 1 to 3 queue pods")
        );
        let rolled = rollout_event(Some(&sts(1, 1, "a")), &sts(1, 2, "b")).unwrap();
        assert_eq!(rolled.reason, "Updated");
        assert!(rolled.note.unwrap().contains("its pods roll"));
    }

    #[test]
    fn failure_events_are_warnings_with_the_error_reason() {
        let event = failure_event(&Error::UserSecretNotFound("mine".into()));
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, "SecretNotFound");
        assert_eq!(
            event.note.as_deref(),
            Some("Secret mine named by spec.auth.secretName does not exist")
        );
    }
}
