//! The reconcile loop of `MessageQueue`: read what the spec points at, build the desired
//! children, apply them (StatefulSet last), and write a status that tells the truth.
//!
//! RBAC it uses: `queuelet.dev` messagequeues get/list/watch and messagequeues/status
//! patch; statefulsets (apps), services, configmaps, secrets and poddisruptionbudgets
//! (policy) get/list/watch/create/patch, plus delete on poddisruptionbudgets;
//! `events.k8s.io` events create/patch.

mod context;
mod error;
mod events;
mod reconcile;
mod status;

pub use context::{BACKOFF_BASE, BACKOFF_MAX, Context, Metrics, backoff_delay};
pub use error::Error;
pub use events::{failure_event, rollout_event};
pub use reconcile::{PERMANENT_RETRY, RESYNC, error_policy, is_paused, reconcile};
pub use status::{DEGRADED, Outcome, PROGRESSING, READY, changed, compute};

/// Annotation that pauses reconciliation (for maintenance): `queuelet.dev/paused: "true"`.
pub const PAUSED_ANNOTATION: &str = "queuelet.dev/paused";
