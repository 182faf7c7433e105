//! The status, computed in one place from what was observed, and compared with the
//! current one so that an unchanged status is never written (a write would wake the
//! controller again).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::PAUSED_ANNOTATION;
use super::error::Error;
use crate::build::Instance;
use crate::resource::{MessageQueueStatus, Phase, QueueStatus};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// What a reconcile saw and did besides applying the children.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Counts of each queue, added up over the pods that answered.
    pub queues: Vec<QueueStatus>,
    /// Why a scale-down waits, while it does.
    pub draining: Option<String>,
    /// What a volume expansion is doing, while it runs.
    pub expanding: Option<String>,
}

/// How the reconcile went, as far as the status cares.
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    /// Every child applied (or, while volumes grow, the StatefulSet is being replaced).
    Applied(&'a Observed),
    /// The pause annotation is set: nothing was applied.
    Paused,
    /// A permanent error stopped the reconcile.
    Failed(&'a Error),
}

/// The status describing `stateful_set` (None when it does not exist or was not read)
/// after `outcome`. Conditions whose status did not change keep their
/// `lastTransitionTime` from the current status.
pub fn compute(
    instance: &Instance<'_>,
    stateful_set: Option<&StatefulSet>,
    outcome: Outcome<'_>,
    now: Timestamp,
) -> MessageQueueStatus {
    let mq = instance.mq;
    let current = mq.status.clone().unwrap_or_default();
    let generation = mq.metadata.generation;
    let wanted = mq.spec.replicas;

    let sts_status = stateful_set.and_then(|s| s.status.as_ref());
    let (replicas, ready) = match (stateful_set, sts_status) {
        (Some(_), Some(s)) => (s.replicas, s.ready_replicas.unwrap_or(0)),
        (Some(_), None) => (0, 0),
        // Not observed (a failed reconcile): keep the last known counts.
        (None, _) if matches!(outcome, Outcome::Failed(_)) => {
            (current.replicas, current.ready_replicas)
        }
        (None, _) => (0, 0),
    };

    let ready_condition = match stateful_set {
        None if matches!(outcome, Outcome::Failed(_)) => current_condition(&current, READY)
            .cloned()
            .unwrap_or_else(|| {
                condition(
                    READY,
                    false,
                    "ReconcileFailed",
                    "the queue pods were not created",
                )
            }),
        None => condition(
            READY,
            false,
            "StatefulSetMissing",
            &format!(
                "StatefulSet {} does not exist",
                instance.stateful_set_name()
            ),
        ),
        Some(_) if ready >= wanted => condition(
            READY,
            true,
            "AllReplicasReady",
            &format!("{ready}/{wanted} queue pods ready"),
        ),
        Some(_) => condition(
            READY,
            false,
            "ReplicasNotReady",
            &format!("{ready}/{wanted} queue pods ready"),
        ),
    };

    let progressing = match outcome {
        Outcome::Paused => condition(
            PROGRESSING,
            false,
            "Paused",
            &format!("reconciliation is paused by the annotation {PAUSED_ANNOTATION}=true"),
        ),
        Outcome::Failed(err) => condition(PROGRESSING, false, err.reason(), &err.to_string()),
        Outcome::Applied(Observed {
            expanding: Some(message),
            ..
        }) => condition(PROGRESSING, true, "VolumeExpansion", message),
        Outcome::Applied(Observed {
            draining: Some(message),
            ..
        }) => condition(PROGRESSING, true, "ScaleDownWaiting", message),
        Outcome::Applied(_) => match stateful_set.and_then(rollout_pending) {
            Some(message) => condition(PROGRESSING, true, "RollingOut", &message),
            None => condition(
                PROGRESSING,
                false,
                "RolloutComplete",
                "every queue pod runs the current configuration",
            ),
        },
    };

    let degraded = match outcome {
        Outcome::Failed(err) => condition(DEGRADED, true, err.reason(), &err.to_string()),
        // Nothing was checked while paused: the last verdict still stands.
        Outcome::Paused => current_condition(&current, DEGRADED)
            .cloned()
            .unwrap_or_else(|| condition(DEGRADED, false, "AsExpected", "")),
        Outcome::Applied(_) => condition(
            DEGRADED,
            false,
            "AsExpected",
            "every child object is applied",
        ),
    };

    let draining = matches!(
        outcome,
        Outcome::Applied(Observed {
            draining: Some(_),
            ..
        })
    );
    let phase = if degraded.status == "True" {
        Phase::Degraded
    } else if draining {
        Phase::Draining
    } else if ready_condition.status == "True" {
        Phase::Running
    } else {
        Phase::Pending
    };

    let mut conditions = vec![ready_condition, progressing, degraded];
    for c in &mut conditions {
        c.observed_generation = generation;
        c.last_transition_time = match current_condition(&current, &c.type_) {
            Some(old) if old.status == c.status => old.last_transition_time.clone(),
            _ => Time(now),
        };
    }

    MessageQueueStatus {
        // While paused, the spec has not been acted on.
        observed_generation: match outcome {
            Outcome::Paused => current.observed_generation,
            _ => generation,
        },
        replicas,
        ready_replicas: ready,
        selector: Some(instance.selector_string()),
        phase: Some(phase),
        endpoint: Some(instance.endpoint()),
        credentials_secret: Some(instance.credentials_secret_name()),
        conditions,
        // Counts not read this time (a failed or paused reconcile) keep their last value.
        queues: match outcome {
            Outcome::Applied(observed) => observed.queues.clone(),
            _ => current.queues,
        },
    }
}

/// Why the StatefulSet has not finished rolling out, or None when it has.
fn rollout_pending(sts: &StatefulSet) -> Option<String> {
    let name = sts.metadata.name.as_deref().unwrap_or_default();
    let wanted = sts.spec.replicas.unwrap_or(1);
    let Some(status) = sts.status.as_ref() else {
        return Some(format!("StatefulSet {name} has not reported a status yet"));
    };
    if status.observed_generation < sts.metadata.generation {
        return Some(format!(
            "StatefulSet {name} has not observed its latest spec yet"
        ));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let revision_pending = matches!(
        (&status.current_revision, &status.update_revision),
        (Some(current), Some(update)) if current != update
    );
    if status.replicas != wanted || updated < wanted || ready < wanted || revision_pending {
        return Some(format!(
            "StatefulSet {name}: {} pods, {updated} updated, {ready} ready, {wanted} wanted",
            status.replicas
        ));
    }
    None
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: truncate(message, 1024),
        observed_generation: None,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].into()
}

fn current_condition<'a>(status: &'a MessageQueueStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// True when `new` says something `current` does not. Transition times, the order of
/// conditions and the queue counts are not compared: counts move all the time, and are
/// written at most once per `COUNTS_PERIOD` (see `counts_changed`).
pub fn changed(current: Option<&MessageQueueStatus>, new: &MessageQueueStatus) -> bool {
    let Some(current) = current else {
        return true;
    };
    normalized(current) != normalized(new)
}

/// True when the queue counts of `new` differ from those of `current`.
pub fn counts_changed(current: Option<&MessageQueueStatus>, new: &MessageQueueStatus) -> bool {
    current.is_none_or(|c| c.queues != new.queues)
}

fn normalized(status: &MessageQueueStatus) -> MessageQueueStatus {
    let mut status = status.clone();
    status.queues.clear();
    for c in &mut status.conditions {
        c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
    }
    status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    status
}

#[cfg(test)]
mod tests {
    use kube::Resource;

    use super::*;
    use crate::build::Defaults;
    use crate::resource::MessageQueue;

    fn orders(status: Option<MessageQueueStatus>) -> MessageQueue {
        let mut mq: MessageQueue = serde_json::from_value(serde_json::json!({
            "apiVersion": "queuelet.dev/v1alpha1",
            "kind": "MessageQueue",
            "metadata": {"name": "orders", "namespace": "shop", "uid": "u-1", "generation": 4},
            "spec": {"replicas": 2},
        }))
        .unwrap();
        mq.status = status;
        mq
    }

    fn stateful_set(ready: i32) -> StatefulSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "orders", "generation": 3},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"replicas": 2, "readyReplicas": ready, "updatedReplicas": 2,
                       "observedGeneration": 3},
        }))
        .unwrap()
    }

    fn compute_for(mq: &MessageQueue, sts: &StatefulSet, now: Timestamp) -> MessageQueueStatus {
        let defaults = Defaults::default();
        let instance = Instance::new(mq, mq.controller_owner_ref(&()).unwrap(), &defaults).unwrap();
        compute(
            &instance,
            Some(sts),
            Outcome::Applied(&Observed::default()),
            now,
        )
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn time_of(status: &MessageQueueStatus, type_: &str) -> Timestamp {
        current_condition(status, type_)
            .unwrap()
            .last_transition_time
            .0
    }

    #[test]
    fn transition_times_move_only_when_a_condition_flips() {
        let first = compute_for(&orders(None), &stateful_set(1), at(1_000));
        assert_eq!(first.phase, Some(Phase::Pending));
        assert_eq!(time_of(&first, READY), at(1_000));

        // Still one of two ready, later: nothing changed, times kept.
        let again = compute_for(&orders(Some(first.clone())), &stateful_set(1), at(2_000));
        assert_eq!(time_of(&again, READY), at(1_000));
        assert_eq!(time_of(&again, DEGRADED), at(1_000));
        assert!(!changed(Some(&first), &again));

        // Both ready: Ready flips and gets a new time; Degraded keeps its own.
        let ready = compute_for(&orders(Some(again.clone())), &stateful_set(2), at(3_000));
        assert_eq!(ready.phase, Some(Phase::Running));
        assert_eq!(time_of(&ready, READY), at(3_000));
        assert_eq!(time_of(&ready, DEGRADED), at(1_000));
        assert!(changed(Some(&again), &ready));
    }

    #[test]
    fn changed_ignores_transition_times_order_and_counts() {
        let status = compute_for(&orders(None), &stateful_set(2), at(1_000));
        let mut other = status.clone();
        other.conditions.reverse();
        other.conditions[0].last_transition_time = Time(at(5));
        other.queues.push(QueueStatus {
            name: "orders".into(),
            active: 7,
            inactive: 0,
            delayed: 0,
        });
        assert!(!changed(Some(&status), &other));
        assert!(counts_changed(Some(&status), &other));
        assert!(!counts_changed(Some(&other), &other));
        assert!(changed(None, &status));
        other.ready_replicas = 1;
        assert!(changed(Some(&status), &other));
    }

    #[test]
    fn a_waiting_scale_down_is_draining_and_says_why() {
        let observed = Observed {
            draining: Some("orders-2 holds 3 messages".into()),
            ..Observed::default()
        };
        let mq = orders(None);
        let defaults = Defaults::default();
        let instance =
            Instance::new(&mq, mq.controller_owner_ref(&()).unwrap(), &defaults).unwrap();
        let status = compute(
            &instance,
            Some(&stateful_set(2)),
            Outcome::Applied(&observed),
            at(1),
        );
        assert_eq!(status.phase, Some(Phase::Draining));
        let progressing = current_condition(&status, PROGRESSING).unwrap();
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("True", "ScaleDownWaiting")
        );
        assert_eq!(progressing.message, "orders-2 holds 3 messages");
    }

    #[test]
    fn an_older_statefulset_generation_is_still_rolling_out() {
        let mut sts = stateful_set(2);
        sts.metadata.generation = Some(4);
        let status = compute_for(&orders(None), &sts, at(1_000));
        let progressing = current_condition(&status, PROGRESSING).unwrap();
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("True", "RollingOut")
        );
    }
}
