//! Leader election against a mocked API server: the exact Lease requests a candidate
//! makes round after round, and when it publishes that it leads or stepped down. Time is
//! tokio's paused clock (it jumps to the next timer when every task waits), and the
//! elector's wall clock is tied to it, so every round happens at an exact second.

mod api_server;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use api_server::{ApiServer, Exchange, mock, stored};
use http::Method;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use queuelet_operator::leader::{LeaderElector, LeaseConfig};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const NAMESPACE: &str = "queuelet-system";
const NAME: &str = "queuelet-operator";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/queuelet-system/leases";
const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/queuelet-system/leases/queuelet-operator";
const ME: &str = "operator-0";
const RIVAL: &str = "operator-1";
/// Wall-clock time when a test starts.
const BASE_SECOND: i64 = 1_800_000_000;
/// Bound of every scenario, in paused (virtual) time.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(300);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The `MicroTime` JSON of `offset` seconds after the test started.
fn micro(offset: i64) -> Value {
    let at = Timestamp::from_second(BASE_SECOND + offset).unwrap();
    serde_json::to_value(MicroTime(at)).unwrap()
}

/// A Lease as the API server stores it.
fn lease(holder: &str, renewed: i64, transitions: i32, version: &str) -> Value {
    stored(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "resourceVersion": version},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": micro(-100),
            "renewTime": micro(renewed),
            "leaseTransitions": transitions,
        },
    }))
}

/// One candidate running its election in a task, its wall clock tied to tokio's clock.
struct Candidate {
    elector: Arc<LeaderElector>,
    leading: watch::Receiver<bool>,
    run: JoinHandle<()>,
    start: Instant,
}

impl Candidate {
    fn start(client: Client) -> Self {
        let start = Instant::now();
        let base = Timestamp::from_second(BASE_SECOND).unwrap();
        let clock = move || base.checked_add(start.elapsed()).unwrap();
        let config = LeaseConfig::new(NAMESPACE, NAME, ME);
        let elector = Arc::new(LeaderElector::new(client, config).with_clock(clock));
        let (sender, leading) = watch::channel(false);
        let run = tokio::spawn({
            let elector = elector.clone();
            async move { elector.run(sender).await }
        });
        Candidate {
            elector,
            leading,
            run,
            start,
        }
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Waits for `leading` to become `value` and returns when, since the start.
    async fn published(&mut self, value: bool) -> Duration {
        self.leading
            .wait_for(|leading| *leading == value)
            .await
            .expect("the elector publishes until it returns");
        self.elapsed()
    }

    /// Waits for `run` to return on its own, then checks nothing more was asked.
    async fn ended(self, server: ApiServer) {
        self.run.await.expect("run did not panic");
        drop(self.elector);
        server.done().await;
    }

    /// Stops a candidate that would run on, then checks nothing more was asked.
    async fn stop(self, server: ApiServer) {
        self.run.abort();
        let _ = self.run.await;
        drop(self.elector);
        server.done().await;
    }
}

/// Runs `scenario` with a candidate started against a fresh mocked API server.
async fn scenario<F, Fut>(scenario: F)
where
    F: FnOnce(Candidate, ApiServer) -> Fut,
    Fut: Future<Output = ()>,
{
    let (client, server) = mock();
    let candidate = Candidate::start(client);
    tokio::time::timeout(SCENARIO_TIMEOUT, scenario(candidate, server))
        .await
        .expect("the scenario finished: a request it expects never came");
}

/// The first round of a candidate when there is no Lease: it creates one and leads.
async fn acquire_by_creating(candidate: &mut Candidate, server: &mut ApiServer) -> Value {
    server.get_missing(LEASE).await;
    let create = server.expect(Method::POST, LEASES).await;
    assert!(
        create
            .query
            .split('&')
            .any(|p| p == "fieldManager=queuelet-operator"),
        "{:?}",
        create.query
    );
    let created = create.body.clone();
    create.respond(http::StatusCode::CREATED, stored(created.clone()));
    assert_eq!(candidate.published(true).await, Duration::ZERO);
    created
}

/// A round that reads `current` and writes it back: the PUT, unanswered, after checking
/// it carries the resourceVersion that was read.
async fn read_then_put(server: &mut ApiServer, current: Value) -> Exchange {
    let version = current["metadata"]["resourceVersion"].clone();
    server.get(LEASE, current).await;
    let put = server.expect(Method::PUT, LEASE).await;
    assert_eq!(put.body["metadata"]["resourceVersion"], version);
    put
}

#[tokio::test(start_paused = true)]
async fn without_a_lease_the_candidate_creates_it_leads_and_renews() {
    scenario(|mut candidate, mut server| async move {
        let created = acquire_by_creating(&mut candidate, &mut server).await;
        assert_eq!(created["kind"], "Lease");
        assert_eq!(created["metadata"]["name"], NAME);
        assert_eq!(created["metadata"]["namespace"], NAMESPACE);
        assert_eq!(created["spec"]["holderIdentity"], ME);
        assert_eq!(created["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(created["spec"]["leaseTransitions"], 0);
        assert_eq!(created["spec"]["acquireTime"], micro(0));
        assert_eq!(created["spec"]["renewTime"], micro(0));

        // One retry period later: a renewal of what was read, renewTime bumped only.
        let mut ours = stored(created);
        ours["metadata"]["resourceVersion"] = json!("1");
        server.get(LEASE, ours).await;
        assert_eq!(candidate.elapsed(), secs(2));
        let renewed = server.replace(LEASE).await;
        assert_eq!(renewed["metadata"]["resourceVersion"], "1");
        assert_eq!(renewed["spec"]["holderIdentity"], ME);
        assert_eq!(renewed["spec"]["renewTime"], micro(2));
        assert_eq!(renewed["spec"]["acquireTime"], micro(0));
        assert_eq!(renewed["spec"]["leaseTransitions"], 0);
        assert!(candidate.is_leading());
        candidate.stop(server).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_live_lease_of_another_is_waited_for_and_taken_over_once_it_expires() {
    scenario(|mut candidate, mut server| async move {
        // The rival renewed at 0 for 15 s: every round until then only reads.
        for second in (0..=14).step_by(2) {
            server.get(LEASE, lease(RIVAL, 0, 3, "5")).await;
            assert_eq!(candidate.elapsed(), secs(second));
            assert!(!candidate.is_leading(), "leading at {second} s");
        }
        server.get(LEASE, lease(RIVAL, 0, 3, "5")).await;
        assert_eq!(candidate.elapsed(), secs(16));
        let taken = server.replace(LEASE).await;
        assert_eq!(taken["metadata"]["resourceVersion"], "5");
        assert_eq!(taken["spec"]["holderIdentity"], ME);
        assert_eq!(taken["spec"]["leaseTransitions"], 4);
        assert_eq!(taken["spec"]["acquireTime"], micro(16));
        assert_eq!(taken["spec"]["renewTime"], micro(16));
        assert_eq!(candidate.published(true).await, secs(16));
        candidate.stop(server).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn losing_the_race_to_an_expired_lease_leaves_the_candidate_following() {
    scenario(|candidate, mut server| async move {
        let put = read_then_put(&mut server, lease(RIVAL, -60, 3, "5")).await;
        put.fail(409, "Conflict", "the object has been modified");
        // The rival wrote first; the next round finds its fresh Lease and waits.
        server.get(LEASE, lease(RIVAL, 1, 4, "6")).await;
        assert_eq!(candidate.elapsed(), secs(2));
        server.get(LEASE, lease(RIVAL, 1, 4, "6")).await;
        assert!(!candidate.is_leading());
        candidate.stop(server).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_renewal_conflicts_steps_down_when_a_rival_holds_the_lease() {
    scenario(|mut candidate, mut server| async move {
        acquire_by_creating(&mut candidate, &mut server).await;
        let put = read_then_put(&mut server, lease(ME, 0, 0, "1")).await;
        put.fail(409, "Conflict", "the object has been modified");
        // Not stepped down on the conflict alone: the next read tells who holds it.
        server.get(LEASE, lease(RIVAL, 3, 1, "2")).await;
        assert!(candidate.is_leading());
        let stepped_down = candidate.published(false).await;
        assert_eq!(stepped_down, secs(4));
        assert!(stepped_down < candidate.elector.config().renew_deadline);
        candidate.ended(server).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn renewals_failing_with_500_step_down_at_the_renew_deadline_not_before() {
    scenario(|mut candidate, mut server| async move {
        acquire_by_creating(&mut candidate, &mut server).await;
        for second in [2, 4, 6, 8] {
            let put = read_then_put(&mut server, lease(ME, 0, 0, "1")).await;
            assert_eq!(candidate.elapsed(), secs(second));
            assert!(candidate.is_leading(), "stepped down at {second} s");
            assert_eq!(put.body["spec"]["renewTime"], micro(second as i64));
            put.fail(500, "InternalError", "etcdserver: request timed out");
        }
        // 10 s after the last successful renewal (the create at 0): no further attempt.
        assert_eq!(candidate.published(false).await, secs(10));
        candidate.ended(server).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_hangs_steps_down_at_the_renew_deadline() {
    scenario(|mut candidate, mut server| async move {
        acquire_by_creating(&mut candidate, &mut server).await;
        let hung = server.expect(Method::GET, LEASE).await;
        assert_eq!(candidate.elapsed(), secs(2));
        assert_eq!(candidate.published(false).await, secs(10));
        drop(hung);
        candidate.ended(server).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn release_clears_the_holder_and_ends_the_election() {
    scenario(|mut candidate, mut server| async move {
        acquire_by_creating(&mut candidate, &mut server).await;
        let (released, put) = tokio::join!(candidate.elector.release(), async {
            server.get(LEASE, lease(ME, 0, 0, "1")).await;
            server.replace(LEASE).await
        });
        released.expect("released");
        assert_eq!(put["metadata"]["resourceVersion"], "1");
        assert!(put["spec"].get("holderIdentity").is_none(), "{put}");
        assert_eq!(put["spec"]["leaseTransitions"], 0);
        assert_eq!(put["spec"]["renewTime"], micro(0));
        // The election ends at once, without waiting for the next round.
        assert_eq!(candidate.published(false).await, Duration::ZERO);
        candidate.ended(server).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn release_leaves_a_lease_held_by_another_alone() {
    scenario(|candidate, mut server| async move {
        server.get(LEASE, lease(RIVAL, 0, 3, "5")).await;
        let (released, ()) = tokio::join!(
            candidate.elector.release(),
            server.get(LEASE, lease(RIVAL, 0, 3, "5"))
        );
        released.expect("released");
        candidate.ended(server).await;
    })
    .await;
}
