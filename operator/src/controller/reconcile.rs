//! The reconcile pipeline: dereference (the Secrets the spec points at, the current
//! StatefulSet) → build (the pure builders) → apply (server-side apply, StatefulSet last)
//! → status (computed from the applied StatefulSet, written only when it changed).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, debug, info, info_span, warn};

use super::PAUSED_ANNOTATION;
use super::context::Context;
use super::error::Error;
use super::events::{failure_event, publish, rollout_event};
use super::status::{self, Observed, Outcome};
use super::{scale_down, sidecars, volumes};
use crate::build::{Desired, Instance, MANAGER, check_user_secret, token_of};
use crate::metrics;
use crate::resource::{MessageQueue, MessageQueueStatus};

/// Periodic re-check of a healthy MessageQueue: drift the watches did not report, and
/// fresh queue counts for its status.
pub const RESYNC: Duration = Duration::from_secs(30);
/// Re-check of a scale-down waiting for its leaving pods to empty.
pub const DRAIN_POLL: Duration = Duration::from_secs(10);
/// Re-check while a volume expansion replaces the StatefulSet.
pub const EXPANSION_POLL: Duration = Duration::from_secs(3);
/// Retry delay after a permanent error: long, since a person or another owner must act.
pub const PERMANENT_RETRY: Duration = Duration::from_secs(300);

/// True when the MessageQueue carries `queuelet.dev/paused: "true"`.
pub fn is_paused(mq: &MessageQueue) -> bool {
    mq.annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn key(mq: &MessageQueue) -> String {
    format!("{}/{}", mq.namespace().unwrap_or_default(), mq.name_any())
}

/// Brings the children of `mq` to their desired state and writes its status.
pub async fn reconcile(mq: Arc<MessageQueue>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!(
        "reconcile",
        namespace = %mq.namespace().unwrap_or_default(),
        name = %mq.name_any(),
        generation = mq.metadata.generation.unwrap_or_default(),
    );
    async move {
        let started = Instant::now();
        let result = reconcile_inner(&mq, &ctx).await;
        let counted = match &result {
            Ok(_) => {
                ctx.succeeded(&key(&mq));
                metrics::Result::Success
            }
            Err(err) if err.is_permanent() => metrics::Result::PermanentError,
            Err(_) => metrics::Result::TransientError,
        };
        ctx.metrics.reconciled(counted, started.elapsed());
        result
    }
    .instrument(span)
    .await
}

/// Requeues a transient error with exponential backoff and a permanent one after
/// `PERMANENT_RETRY` (its Degraded condition and event were written by `reconcile`).
pub fn error_policy(mq: Arc<MessageQueue>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = if err.is_permanent() {
        PERMANENT_RETRY
    } else {
        ctx.backoff(&key(&mq))
    };
    warn!(
        namespace = %mq.namespace().unwrap_or_default(),
        name = %mq.name_any(),
        error = %err,
        permanent = err.is_permanent(),
        retry_in_s = delay.as_secs(),
        "reconcile failed"
    );
    Action::requeue(delay)
}

async fn reconcile_inner(mq: &MessageQueue, ctx: &Context) -> Result<Action, Error> {
    let owner = mq.controller_owner_ref(&()).ok_or(Error::MissingUid)?;
    let instance = Instance::new(mq, owner, &ctx.defaults)?;

    if mq.metadata.deletion_timestamp.is_some() {
        // Applying now would recreate children the garbage collector is removing (and
        // hold up a foreground deletion): their owner references do the cleanup.
        info!("being deleted: the children are left to the garbage collector");
        return Ok(Action::await_change());
    }

    if is_paused(mq) {
        info!("paused: no child is applied");
        let sts: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), instance.namespace);
        let current = get_opt(&sts, &instance.stateful_set_name()).await?;
        let status = status::compute(
            &instance,
            current.as_ref(),
            Outcome::Paused,
            Timestamp::now(),
        );
        write_status(&instance, ctx, &status).await?;
        return Ok(Action::await_change());
    }

    match converge(&instance, ctx).await {
        Ok(converged) => {
            let status = status::compute(
                &instance,
                Some(&converged.stateful_set),
                Outcome::Applied(&converged.observed),
                Timestamp::now(),
            );
            write_status(&instance, ctx, &status).await?;
            let next = if converged.observed.expanding.is_some() {
                EXPANSION_POLL
            } else if converged.observed.draining.is_some() {
                DRAIN_POLL
            } else {
                RESYNC
            };
            Ok(Action::requeue(next))
        }
        Err(err) if err.is_permanent() => {
            warn!(error = %err, reason = err.reason(), "degraded");
            let status = status::compute(&instance, None, Outcome::Failed(&err), Timestamp::now());
            if let Err(status_err) = write_status(&instance, ctx, &status).await {
                warn!(error = %status_err, "could not write the Degraded status");
            }
            publish(ctx, mq, failure_event(&err)).await;
            Err(err)
        }
        Err(err) => Err(err),
    }
}

/// The StatefulSet as it stands after a converge, and what else was seen.
struct Converged {
    stateful_set: StatefulSet,
    observed: Observed,
}

/// Reads what the spec points at, builds the children and applies them, StatefulSet
/// last, unless a volume expansion is replacing it or a scale-down waits for pods to
/// empty (then the StatefulSet keeps its size).
async fn converge(instance: &Instance<'_>, ctx: &Context) -> Result<Converged, Error> {
    let client = &ctx.client;
    let ns = instance.namespace;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);

    let (existing_secret, user_secret) = match instance.user_secret_name() {
        Some(name) => {
            let secret = get_opt(&secrets, name)
                .await?
                .ok_or_else(|| Error::UserSecretNotFound(name.into()))?;
            check_user_secret(&secret)?;
            (None, Some(secret))
        }
        None => (
            get_opt(&secrets, &instance.credentials_secret_name()).await?,
            None,
        ),
    };
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let before = get_opt(&stateful_sets, &instance.stateful_set_name()).await?;
    // A forced apply would take these over (and garbage-collect them with this resource).
    refuse_foreign(instance, existing_secret.as_ref())?;
    refuse_foreign(instance, before.as_ref())?;

    if let Some(old) = before
        .as_ref()
        .filter(|s| s.metadata.deletion_timestamp.is_some())
    {
        return Ok(Converged {
            stateful_set: old.clone(),
            observed: Observed {
                expanding: Some(format!(
                    "waiting for StatefulSet {} to be deleted (its pods keep running) before it is recreated",
                    instance.stateful_set_name()
                )),
                ..Observed::default()
            },
        });
    }

    let mut desired = Desired::build(instance, existing_secret.as_ref(), ctx.new_token);

    apply(
        ctx,
        &Api::<ConfigMap>::namespaced(client.clone(), ns),
        &desired.config_map,
    )
    .await?;
    if let Some(secret) = &desired.credentials_secret {
        apply(ctx, &secrets, secret).await?;
    }
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    apply(ctx, &services, &desired.headless_service).await?;
    apply(ctx, &services, &desired.client_service).await?;
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    match &desired.pod_disruption_budget {
        Some(pdb) => {
            apply(ctx, &budgets, pdb).await?;
        }
        None => {
            let name = instance.pod_disruption_budget_name();
            delete_owned(&budgets, &name, &instance.owner.uid).await?
        }
    }

    if let Some(old) = &before
        && let Some(sizes) = volumes::expansion(old, &desired.stateful_set)
    {
        let message = volumes::expand(ctx, instance, old, sizes).await?;
        return Ok(Converged {
            stateful_set: old.clone(),
            observed: Observed {
                expanding: Some(message),
                ..Observed::default()
            },
        });
    }

    // What the pods that exist hold, for the status and for a scale-down.
    let token = user_secret
        .as_ref()
        .or(desired.credentials_secret.as_ref())
        .and_then(token_of)
        .map(|t| String::from_utf8_lossy(&t).trim().to_owned());
    let current = before.as_ref().and_then(|s| s.spec.replicas).unwrap_or(0);
    let existing = before
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .map_or(0, |s| s.replicas)
        .max(current);
    let pods = ctx
        .sidecars
        .counts(instance, token.as_deref(), 0..existing)
        .await;
    let draining =
        scale_down::hold(ctx, instance, &pods, current, &mut desired.stateful_set).await?;

    let after = apply(ctx, &stateful_sets, &desired.stateful_set).await?;

    if let Some(event) = rollout_event(before.as_ref(), &after) {
        info!(reason = %event.reason, note = ?event.note, "rollout");
        publish(ctx, instance.mq, event).await;
    }
    Ok(Converged {
        stateful_set: after,
        observed: Observed {
            queues: sidecars::sum(&pods),
            draining,
            expanding: None,
        },
    })
}

/// Fails when `existing` is controlled by another object than this MessageQueue. An
/// object without a controller is adopted.
fn refuse_foreign<K>(instance: &Instance<'_>, existing: Option<&K>) -> Result<(), Error>
where
    K: Resource<DynamicType = ()>,
{
    let Some(existing) = existing else {
        return Ok(());
    };
    let foreign = existing
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.uid != instance.owner.uid);
    match foreign {
        Some(owner) => Err(Error::OwnedByAnother {
            kind: K::kind(&()).into_owned(),
            name: existing.name_any(),
            owner: format!("{} {}", owner.kind, owner.name),
        }),
        None => Ok(()),
    }
}

async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    api.get_opt(name).await.map_err(|source| Error::Read {
        kind: K::kind(&()).into_owned(),
        name: name.into(),
        source,
    })
}

/// Server-side apply under the operator's field manager, taking over conflicting fields.
async fn apply<K>(ctx: &Context, api: &Api<K>, obj: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map_err(|source| Error::Apply {
            kind: K::kind(&()).into_owned(),
            name: name.clone(),
            source,
        })?;
    ctx.metrics.children_applied.inc();
    debug!(kind = %K::kind(&()), child = %name, "applied");
    Ok(applied)
}

/// Deletes an object that must no longer exist (e.g. the budget after scaling to one
/// replica), only when `owner_uid` controls it: a same-named object of someone else stays.
async fn delete_owned<K>(api: &Api<K>, name: &str, owner_uid: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let Some(existing) = get_opt(api, name).await? else {
        return Ok(());
    };
    let owned = existing
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == owner_uid);
    if !owned {
        debug!(kind = %K::kind(&()), child = %name, "not ours: left alone");
        return Ok(());
    }
    // Preconditioned on the uid read, so a replacement created meanwhile is not deleted.
    let params = DeleteParams {
        preconditions: existing.uid().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {
            info!(kind = %K::kind(&()), child = %name, "deleted");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Delete {
            kind: K::kind(&()).into_owned(),
            name: name.into(),
            source,
        }),
    }
}

/// Writes `status` with server-side apply, unless the current status already says it.
async fn write_status(
    instance: &Instance<'_>,
    ctx: &Context,
    status: &MessageQueueStatus,
) -> Result<(), Error> {
    let key = key(instance.mq);
    let current = instance.mq.status.as_ref();
    let counts = status::counts_changed(current, status) && ctx.counts_due(&key);
    if !status::changed(current, status) && !counts {
        debug!("status unchanged");
        return Ok(());
    }
    let api: Api<MessageQueue> = Api::namespaced(ctx.client.clone(), instance.namespace);
    let body = serde_json::json!({
        "apiVersion": MessageQueue::api_version(&()),
        "kind": MessageQueue::kind(&()),
        "status": status,
    });
    api.patch_status(
        instance.name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::Status)?;
    ctx.metrics.status_writes.inc();
    ctx.counts_written(&key);
    info!(phase = ?status.phase, ready = status.ready_replicas, "status written");
    Ok(())
}
