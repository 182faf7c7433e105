//! Growing the queue pods' volumes when `spec.storage.size` grows. A StatefulSet's claim
//! templates are immutable, so, as mature operators do: patch each existing claim to the
//! new size, delete the StatefulSet with its pods orphaned (they keep serving), and let
//! the next reconcile create it again with the new template; it adopts the running pods.
//! The schema refuses a shrink, so only growth reaches here.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use tracing::info;

use super::context::Context;
use super::error::Error;
use super::events::{publish, volume_expansion_event};
use crate::build::{DATA_VOLUME, Instance};

/// The size a StatefulSet's data claim template asks for.
pub fn template_size(sts: &StatefulSet) -> Option<&Quantity> {
    claim_size(
        sts.spec
            .volume_claim_templates
            .as_ref()?
            .iter()
            .find(|t| t.metadata.name.as_deref() == Some(DATA_VOLUME))?,
    )
}

fn claim_size(claim: &PersistentVolumeClaim) -> Option<&Quantity> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
}

/// The number of bytes a quantity stands for ("10Gi", "500M", "1e9", "1.5Ti"), or None
/// when it is not a quantity this understands (then nothing is expanded).
pub fn quantity_bytes(quantity: &Quantity) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024f64),
        ("Mi", 1_048_576f64),
        ("Gi", 1_073_741_824f64),
        ("Ti", 1_099_511_627_776f64),
        ("Pi", 1_125_899_906_842_624f64),
        ("Ei", 1_152_921_504_606_846_976f64),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let text = quantity.0.trim();
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|(suffix, scale)| text.strip_suffix(suffix).map(|n| (n, *scale)))
        .unwrap_or((text, 1.0));
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some(value * scale)
}

/// The sizes `(current, desired)` when `desired` asks for bigger volumes than `current`
/// was made with; None otherwise (or when a size is not understood).
pub fn expansion(current: &StatefulSet, desired: &StatefulSet) -> Option<(Quantity, Quantity)> {
    let from = template_size(current)?;
    let to = template_size(desired)?;
    (quantity_bytes(to)? > quantity_bytes(from)?).then(|| (from.clone(), to.clone()))
}

/// Patches every claim of the instance smaller than `to`, then deletes `current` with
/// its pods orphaned. Returns what the Progressing condition says.
pub async fn expand(
    ctx: &Context,
    instance: &Instance<'_>,
    current: &StatefulSet,
    (from, to): (Quantity, Quantity),
) -> Result<String, Error> {
    let sts_name = instance.stateful_set_name();
    let wanted = quantity_bytes(&to).unwrap_or(0.0);

    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), instance.namespace);
    let prefix = format!("{DATA_VOLUME}-{sts_name}-");
    let listed = claims
        .list(&ListParams::default().labels(&instance.selector_string()))
        .await
        .map_err(|source| Error::Read {
            kind: "PersistentVolumeClaim".into(),
            name: format!("{prefix}*"),
            source,
        })?;
    let mut patched = 0;
    for claim in listed
        .items
        .iter()
        .filter(|c| c.name_any().starts_with(&prefix))
    {
        if claim_size(claim).and_then(quantity_bytes).unwrap_or(0.0) >= wanted {
            continue;
        }
        let name = claim.name_any();
        let body = serde_json::json!({"spec": {"resources": {"requests": {"storage": to}}}});
        claims
            .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .map_err(|source| Error::Apply {
                kind: "PersistentVolumeClaim".into(),
                name: name.clone(),
                source,
            })?;
        info!(claim = %name, size = %to.0, "claim expanded");
        patched += 1;
    }

    let stateful_sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), instance.namespace);
    let orphan = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        preconditions: current.uid().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match stateful_sets.delete(&sts_name, &orphan).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(source) => {
            return Err(Error::Delete {
                kind: "StatefulSet".into(),
                name: sts_name,
                source,
            });
        }
    }
    info!(from = %from.0, to = %to.0, claims = patched, "StatefulSet deleted with its pods orphaned, to be recreated with bigger volumes");
    publish(
        ctx,
        instance.mq,
        volume_expansion_event(&sts_name, &from.0, &to.0, patched),
    )
    .await;
    Ok(format!(
        "growing the volumes from {} to {}: {patched} claims patched; StatefulSet {sts_name} is recreated while its pods keep running",
        from.0, to.0
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(text: &str) -> Option<f64> {
        quantity_bytes(&Quantity(text.into()))
    }

    #[test]
    fn quantities_in_every_notation_compare_by_size() {
        assert_eq!(bytes("1Gi"), Some(1_073_741_824.0));
        assert_eq!(bytes("1024Mi"), bytes("1Gi"));
        assert_eq!(bytes("500M"), Some(5e8));
        assert_eq!(bytes("1e9"), Some(1e9));
        assert_eq!(bytes("1.5Ti"), Some(1.5 * 1_099_511_627_776.0));
        assert_eq!(bytes("2048"), Some(2048.0));
        assert!(bytes("10Gi").unwrap() > bytes("10G").unwrap());
        assert_eq!(bytes("ten"), None);
        assert_eq!(bytes("-1Gi"), None);
    }
}
