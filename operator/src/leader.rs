//! Leader election through a `coordination.k8s.io/v1` Lease, so that only one operator
//! replica reconciles at a time. kube ships none, so this is the small loop client-go's
//! `leaderelection` runs: read the Lease, decide (a pure function), write it back with
//! the `resourceVersion` that was read, so two candidates can never both win a round.
//!
//! Wiring (in `main`): build a [`LeaderElector`], spawn [`LeaderElector::run`] with a
//! `watch` channel, start the controller once it says `true`, and **exit the process**
//! when it says `false` again: a replica that lost the Lease may still hold caches and
//! in-flight reconciles, and restarting is the only sure way to drop them. On graceful
//! shutdown, stop the controller first, then call [`LeaderElector::release`] so a
//! successor takes over at once instead of after `lease_duration`. RBAC: `leases`
//! in `coordination.k8s.io`, verbs `get`, `create`, `update`, in the Lease's namespace.
//!
//! Expiry is judged from the holder's `renewTime` against our wall clock (client-go
//! instead times how long the record stayed unchanged on its own clock), so candidates'
//! clocks must agree to within `lease_duration - renew_deadline`: the holder steps down
//! after `renew_deadline` on its own monotonic clock, which leaves that margin.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::{Mutex, Notify, watch};
use tokio::time::Instant;

use crate::build::MANAGER;

/// How long a Lease stays valid after its last renewal (client-go's default).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the leader keeps leading without a successful renewal before stepping down.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often candidates try to acquire, and the leader renews.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Which Lease to contend for, who we are, and the timing of the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per process (the pod name): the Lease's `holderIdentity` when we lead.
    pub identity: String,
    pub lease_duration: Duration,
    /// Must be shorter than `lease_duration`: the difference absorbs clock skew.
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// A config with client-go's default timing (15 s / 10 s / 2 s).
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: LEASE_DURATION,
            renew_deadline: RENEW_DEADLINE,
            retry_period: RETRY_PERIOD,
        }
    }

    /// `namespace/name`, as the Lease is named in logs and errors.
    fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// `lease_duration` in whole seconds, rounded up so a short duration never reads 0.
    fn lease_duration_seconds(&self) -> i32 {
        let d = self.lease_duration;
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX).max(1)
    }
}

/// What to do with the Lease as it was read; every write carries the Lease to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// No Lease exists: create it, held by us.
    Create(Lease),
    /// We hold it: the same Lease with `renewTime` bumped.
    Renew(Lease),
    /// Nobody holds it, or the holder let it expire: take it over.
    Acquire(Lease),
    /// Someone else holds a live Lease until `expires_at`.
    Wait {
        holder: String,
        expires_at: Timestamp,
    },
}

/// Decides, from the Lease as read (or none) and the wall-clock `now`, whether we may
/// write it, and what. Pure, so every case is tested with explicit times.
pub fn decide(current: Option<&Lease>, config: &LeaseConfig, now: Timestamp) -> Decision {
    let now_micro = MicroTime(now);
    let Some(current) = current else {
        return Decision::Create(Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(config.lease_duration_seconds()),
                acquire_time: Some(now_micro.clone()),
                renew_time: Some(now_micro),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        });
    };
    let spec = current.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let mut next = current.clone();
    let mut next_spec = spec.clone();
    next_spec.lease_duration_seconds = Some(config.lease_duration_seconds());
    next_spec.renew_time = Some(now_micro.clone());
    if holder == config.identity {
        next.spec = Some(next_spec);
        return Decision::Renew(next);
    }
    if !holder.is_empty() {
        let expires_at = expiry(&spec, config);
        if expires_at > now {
            return Decision::Wait { holder, expires_at };
        }
    }
    next_spec.holder_identity = Some(config.identity.clone());
    next_spec.acquire_time = Some(now_micro);
    next_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    next.spec = Some(next_spec);
    Decision::Acquire(next)
}

/// When a held Lease stops being valid: `renewTime + leaseDurationSeconds`. A Lease never
/// renewed is already expired; one without a duration is given ours.
fn expiry(spec: &LeaseSpec, config: &LeaseConfig) -> Timestamp {
    let Some(MicroTime(renewed)) = spec.renew_time else {
        return Timestamp::MIN;
    };
    let seconds = spec
        .lease_duration_seconds
        .unwrap_or_else(|| config.lease_duration_seconds());
    renewed
        .checked_add(SignedDuration::from_secs(i64::from(seconds)))
        .unwrap_or(Timestamp::MAX)
}

/// Why one round of the election, or a release, did not go through.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("reading Lease {lease}: {source}")]
    Read {
        lease: String,
        #[source]
        source: kube::Error,
    },

    #[error("writing Lease {lease}: {source}")]
    Write {
        lease: String,
        #[source]
        source: kube::Error,
    },

    /// Someone else wrote the Lease between our read and our write (HTTP 409).
    #[error("Lease {lease} was written by someone else first")]
    Conflict { lease: String },

    /// Replacing without it would be unconditional, and could overwrite a rival's win.
    #[error("Lease {lease} as read has no metadata.resourceVersion")]
    MissingResourceVersion { lease: String },

    #[error("no answer about Lease {lease} within {after:?}")]
    TimedOut { lease: String, after: Duration },
}

/// The result of one successful round.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Round {
    /// We hold the Lease, freshly written; `previous` held it before (`None`: we did).
    Leading { previous: Option<String> },
    /// Someone else holds a live Lease.
    Following { holder: String },
    /// `release` was called: the election is over for this process.
    Released,
}

/// Contends for the Lease of a [`LeaseConfig`] and reports whether we lead.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// Wall-clock time written into the Lease and compared with rivals' `renewTime`.
    clock: Box<dyn Fn() -> Timestamp + Send + Sync>,
    /// Held through each round and by `release`, so a release never races a renewal.
    released: Mutex<bool>,
    /// Wakes `run` from its sleep once released.
    wake: Notify,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            clock: Box::new(Timestamp::now),
            released: Mutex::new(false),
            wake: Notify::new(),
        }
    }

    /// Replaces the wall clock (tests tie it to tokio's paused clock).
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Runs the election every `retry_period`, publishing `true` on `leading` when we
    /// acquire the Lease. Returns, after publishing `false`, once we stop leading: a
    /// rival holds the Lease, or no renewal succeeded within `renew_deadline` of the last
    /// successful one, or `release` was called. The caller must then exit the process
    /// (see the module docs); until we lead, it keeps trying and never returns on errors.
    pub async fn run(&self, leading: watch::Sender<bool>) {
        let lease = self.config.lease();
        let identity = self.config.identity.as_str();
        // Start of the last successful round while leading: measured before the write,
        // so we step down no later than `renew_deadline` after the `renewTime` we wrote.
        let mut renewed_at: Option<Instant> = None;
        loop {
            let started = Instant::now();
            let budget = match renewed_at {
                Some(at) => self.config.renew_deadline.saturating_sub(at.elapsed()),
                None => self.config.renew_deadline,
            };
            let round = if budget.is_zero() {
                Err(LeaderError::TimedOut {
                    lease: lease.clone(),
                    after: self.config.renew_deadline,
                })
            } else {
                tokio::time::timeout(budget, self.round())
                    .await
                    .unwrap_or_else(|_| {
                        Err(LeaderError::TimedOut {
                            lease: lease.clone(),
                            after: budget,
                        })
                    })
            };
            match (round, renewed_at) {
                (Ok(Round::Released), _) => {
                    leading.send_replace(false);
                    tracing::info!(%lease, identity, "released the lease; election over");
                    return;
                }
                (Ok(Round::Leading { previous }), was) => {
                    renewed_at = Some(started);
                    if was.is_none() {
                        tracing::info!(%lease, identity, holder = identity, previous = previous.as_deref(), "acquired the lease: leading");
                        leading.send_replace(true);
                    } else {
                        tracing::debug!(%lease, identity, "renewed the lease");
                    }
                }
                (Ok(Round::Following { holder }), None) => {
                    tracing::debug!(%lease, identity, %holder, "the lease is held by another");
                }
                (Ok(Round::Following { holder }), Some(_)) => {
                    leading.send_replace(false);
                    tracing::warn!(%lease, identity, %holder, "the lease was taken by another: stepped down");
                    return;
                }
                (Err(error), None) => {
                    tracing::warn!(%lease, identity, %error, "could not acquire the lease");
                }
                (Err(error), Some(at)) => {
                    if at.elapsed() >= self.config.renew_deadline {
                        leading.send_replace(false);
                        tracing::error!(%lease, identity, %error, "no renewal within the renew deadline: stepped down");
                        return;
                    }
                    tracing::warn!(%lease, identity, %error, "could not renew the lease; retrying");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.retry_period) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// One read-decide-write round, under the release lock.
    async fn round(&self) -> Result<Round, LeaderError> {
        let released = self.released.lock().await;
        if *released {
            return Ok(Round::Released);
        }
        let current = self.read().await?;
        let previous = current
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.clone())
            .filter(|holder| !holder.is_empty() && *holder != self.config.identity);
        match decide(current.as_ref(), &self.config, (self.clock)()) {
            Decision::Wait { holder, .. } => Ok(Round::Following { holder }),
            Decision::Create(lease) => {
                self.api
                    .create(&write_params(), &lease)
                    .await
                    .map_err(|e| self.write_error(e))?;
                Ok(Round::Leading { previous: None })
            }
            Decision::Renew(lease) | Decision::Acquire(lease) => {
                self.replace(&lease).await?;
                Ok(Round::Leading { previous })
            }
        }
    }

    /// Gives the Lease up on graceful shutdown, so a successor need not wait for it to
    /// expire: if we hold it, clears `holderIdentity` (which every candidate, client-go's
    /// included, takes over at once). Ends `run`, which publishes `false`. Call it after
    /// the controller has stopped; calling it twice is harmless.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let mut released = self.released.lock().await;
        *released = true;
        self.wake.notify_one();
        let lease = self.config.lease();
        let Some(mut current) = self.read().await? else {
            return Ok(());
        };
        let Some(spec) = current.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        self.replace(&current).await?;
        tracing::info!(%lease, identity = %self.config.identity, "released the lease");
        Ok(())
    }

    async fn read(&self) -> Result<Option<Lease>, LeaderError> {
        self.api
            .get_opt(&self.config.name)
            .await
            .map_err(|source| LeaderError::Read {
                lease: self.config.lease(),
                source,
            })
    }

    /// PUT with the `resourceVersion` that was read: the API server refuses it (409) if
    /// anyone wrote the Lease since, which is what makes a round atomic.
    async fn replace(&self, lease: &Lease) -> Result<(), LeaderError> {
        if lease.metadata.resource_version.is_none() {
            return Err(LeaderError::MissingResourceVersion {
                lease: self.config.lease(),
            });
        }
        self.api
            .replace(&self.config.name, &write_params(), lease)
            .await
            .map_err(|e| self.write_error(e))?;
        Ok(())
    }

    fn write_error(&self, source: kube::Error) -> LeaderError {
        let lease = self.config.lease();
        match &source {
            kube::Error::Api(status) if status.code == 409 => LeaderError::Conflict { lease },
            _ => LeaderError::Write { lease, source },
        }
    }
}

fn write_params() -> PostParams {
    PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn config() -> LeaseConfig {
        LeaseConfig::new("queuelet-system", "queuelet-operator", "me")
    }

    /// A stored Lease held by `holder`, last renewed at `renewed`.
    fn lease(holder: Option<&str>, renewed: Option<i64>, transitions: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("queuelet-operator".into()),
                namespace: Some("queuelet-system".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                lease_duration_seconds: Some(15),
                acquire_time: Some(MicroTime(at(NOW - 100))),
                renew_time: renewed.map(|s| MicroTime(at(s))),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    fn spec(lease: &Lease) -> &LeaseSpec {
        lease.spec.as_ref().unwrap()
    }

    /// Checks who holds `lease`, since when, last renewed when, after how many changes.
    #[track_caller]
    fn assert_held(lease: &Lease, holder: &str, acquired: i64, renewed: i64, transitions: i32) {
        let s = spec(lease);
        assert_eq!(s.holder_identity.as_deref(), Some(holder));
        assert_eq!(s.acquire_time, Some(MicroTime(at(acquired))));
        assert_eq!(s.renew_time, Some(MicroTime(at(renewed))));
        assert_eq!(s.lease_transitions, Some(transitions));
    }

    #[test]
    fn defaults_are_client_gos() {
        let c = config();
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert_eq!(c.renew_deadline, Duration::from_secs(10));
        assert_eq!(c.retry_period, Duration::from_secs(2));
        assert!(c.renew_deadline < c.lease_duration);
    }

    #[test]
    fn no_lease_is_created_held_by_us() {
        let Decision::Create(created) = decide(None, &config(), at(NOW)) else {
            panic!("expected a create");
        };
        assert_eq!(created.metadata.name.as_deref(), Some("queuelet-operator"));
        assert_eq!(
            created.metadata.namespace.as_deref(),
            Some("queuelet-system")
        );
        assert_eq!(spec(&created).lease_duration_seconds, Some(15));
        assert_held(&created, "me", NOW, NOW, 0);
    }

    #[test]
    fn our_lease_is_renewed_keeping_acquire_time_and_transitions() {
        let ours = lease(Some("me"), Some(NOW - 2), 3);
        let Decision::Renew(renewed) = decide(Some(&ours), &config(), at(NOW)) else {
            panic!("expected a renewal");
        };
        assert_eq!(renewed.metadata.resource_version.as_deref(), Some("7"));
        assert_held(&renewed, "me", NOW - 100, NOW, 3);
    }

    #[test]
    fn a_live_lease_of_another_is_waited_for_until_it_expires() {
        let theirs = lease(Some("rival"), Some(NOW - 14), 3);
        assert_eq!(
            decide(Some(&theirs), &config(), at(NOW)),
            Decision::Wait {
                holder: "rival".into(),
                expires_at: at(NOW + 1),
            }
        );
    }

    #[test]
    fn an_expired_lease_is_acquired_with_one_more_transition() {
        // Renewed exactly lease_duration ago: expired at this instant.
        for renewed in [NOW - 15, NOW - 600] {
            let theirs = lease(Some("rival"), Some(renewed), 3);
            let Decision::Acquire(taken) = decide(Some(&theirs), &config(), at(NOW)) else {
                panic!("expected an acquisition of a lease renewed at {renewed}");
            };
            assert_eq!(taken.metadata.resource_version.as_deref(), Some("7"));
            assert_held(&taken, "me", NOW, NOW, 4);
        }
    }

    #[test]
    fn a_released_lease_is_acquired_at_once() {
        for holder in [None, Some("")] {
            let released = lease(holder, Some(NOW), 3);
            let Decision::Acquire(taken) = decide(Some(&released), &config(), at(NOW)) else {
                panic!("expected an acquisition with holder {holder:?}");
            };
            assert_eq!(spec(&taken).holder_identity.as_deref(), Some("me"));
            assert_eq!(spec(&taken).lease_transitions, Some(4));
        }
    }

    #[test]
    fn a_lease_never_renewed_or_without_spec_is_acquired() {
        let never_renewed = lease(Some("rival"), None, 0);
        assert!(matches!(
            decide(Some(&never_renewed), &config(), at(NOW)),
            Decision::Acquire(_)
        ));
        let mut bare = lease(None, None, 0);
        bare.spec = None;
        let Decision::Acquire(taken) = decide(Some(&bare), &config(), at(NOW)) else {
            panic!("expected an acquisition of a lease without spec");
        };
        assert_eq!(spec(&taken).lease_transitions, Some(1));
        assert_eq!(spec(&taken).lease_duration_seconds, Some(15));
    }

    #[test]
    fn a_holder_without_duration_is_given_ours() {
        let mut theirs = lease(Some("rival"), Some(NOW - 14), 0);
        theirs.spec.as_mut().unwrap().lease_duration_seconds = None;
        assert!(matches!(
            decide(Some(&theirs), &config(), at(NOW)),
            Decision::Wait { .. }
        ));
    }

    #[test]
    fn sub_second_durations_round_up() {
        let mut c = config();
        c.lease_duration = Duration::from_millis(1500);
        assert_eq!(c.lease_duration_seconds(), 2);
        c.lease_duration = Duration::ZERO;
        assert_eq!(c.lease_duration_seconds(), 1);
    }
}
