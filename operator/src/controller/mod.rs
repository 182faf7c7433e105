//! The reconcile loop of `MessageQueue`: read what the spec points at, build the desired
//! children, apply them (StatefulSet last), and write a status that tells the truth.
//!
//! The RBAC it needs is granted by the Helm chart's `files/rules.yaml`; the mocked API
//! server tests check every request the controller makes against those rules.

mod context;
mod error;
mod events;
mod reconcile;
mod scale_down;
mod sidecars;
mod status;
mod volumes;
mod watch;

pub use context::{BACKOFF_BASE, BACKOFF_MAX, COUNTS_PERIOD, Context, backoff_delay};
pub use error::Error;
pub use events::{failure_event, rollout_event};
pub use reconcile::{
    DRAIN_POLL, EXPANSION_POLL, PERMANENT_RETRY, RESYNC, error_policy, is_paused, reconcile,
};
pub use scale_down::FORCE_SCALE_DOWN_ANNOTATION;
pub use sidecars::{PodCounts, PodUrl, Sidecars, pod_dns_url};
pub use status::{
    DEGRADED, Observed, Outcome, PROGRESSING, READY, changed, compute, counts_changed,
};
pub use volumes::quantity_bytes;
pub use watch::run;

/// Annotation that pauses reconciliation (for maintenance): `queuelet.dev/paused: "true"`.
pub const PAUSED_ANNOTATION: &str = "queuelet.dev/paused";
