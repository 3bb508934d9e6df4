//! Leader election and replica Leases against the fake API server. Each candidate runs on a
//! runtime of its own, so that shutting that runtime down kills it the way a crash would: no
//! release, no more renewals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};
use trellis_fake_apiserver::{FakeApiServer, Refusal};
use trellis_kube::Health;
use trellis_kube::leader::{self, Election, ElectionConfig};
use trellis_kube::replicas::{self, GatewaySync, ReplicaConfig, Replicas, SyncSummary};

struct Candidate {
    runtime: tokio::runtime::Runtime,
    election: Option<Election>,
    health: Arc<Health>,
}

fn candidate(server: &FakeApiServer, identity: &str, lease: Duration) -> Candidate {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let health = Arc::new(Health::default());
    let election = {
        let _entered = runtime.enter();
        leader::spawn(
            server.client(),
            ElectionConfig::new("trellis-system", "trellis", identity, lease),
            health.clone(),
        )
    };
    Candidate {
        runtime,
        election: Some(election),
        health,
    }
}

impl Candidate {
    fn leads(&self) -> bool {
        self.election.as_ref().is_some_and(Election::is_leader)
    }

    fn crash(self) {
        self.runtime.shutdown_background();
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

fn lease_holder(server: &FakeApiServer) -> serde_json::Value {
    let k = server.kind("coordination.k8s.io/v1", "Lease").unwrap();
    server.store().get(&k, "trellis-system", "trellis").unwrap()["spec"].clone()
}

#[test]
fn one_candidate_leads_and_another_takes_over_after_it_dies() {
    let server = FakeApiServer::new();
    let a = candidate(&server, "a", Duration::from_secs(1));
    wait_until("a to lead", Duration::from_secs(5), || a.leads());
    let b = candidate(&server, "b", Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(a.leads() && !b.leads(), "one leader while a renews");
    assert!(a.health.leader() && !b.health.leader());

    a.crash();
    let took = wait_until("b to take over", Duration::from_secs(5), || b.leads());
    assert!(
        took >= Duration::from_millis(700),
        "not before the lease could expire: {took:?}"
    );
    let spec = lease_holder(&server);
    assert_eq!(spec["holderIdentity"], "b");
    assert_eq!(spec["leaseTransitions"], 1);
}

#[test]
fn a_released_lease_is_taken_over_at_once() {
    let server = FakeApiServer::new();
    let mut a = candidate(&server, "a", Duration::from_secs(10));
    wait_until("a to lead", Duration::from_secs(5), || a.leads());
    let b = candidate(&server, "b", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let election = a.election.take().unwrap();
    a.runtime.block_on(election.release());
    let took = wait_until("b to take over", Duration::from_secs(5), || b.leads());
    assert!(
        took < Duration::from_secs(3),
        "{took:?} (the lease is 10 s)"
    );
    assert!(!a.health.leader());
}

#[test]
fn a_leader_that_cannot_renew_steps_down_before_its_lease_could_expire() {
    let server = FakeApiServer::new();
    let a = candidate(&server, "a", Duration::from_secs(3));
    wait_until("a to lead", Duration::from_secs(5), || a.leads());
    server.faults().refuse(Refusal::ServiceUnavailable);
    let stepped_down = wait_until("a to step down", Duration::from_secs(5), || !a.leads());
    assert!(
        stepped_down < Duration::from_secs(3),
        "stepped down after {stepped_down:?}, before the 3 s lease expired"
    );
    server.faults().recover();
    wait_until("a to lead again", Duration::from_secs(5), || a.leads());
}

fn replica(server: &FakeApiServer, identity: &str) -> (tokio::runtime::Runtime, Arc<Replicas>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let replicas = {
        let _entered = runtime.enter();
        replicas::spawn(
            server.client(),
            ReplicaConfig {
                namespace: "trellis-system".into(),
                group: "trellis".into(),
                identity: identity.into(),
                lease_duration: Duration::from_secs(2),
                retry_period: Duration::from_millis(200),
                owner: None,
                request_timeout: Duration::from_secs(1),
            },
            Arc::new(Health::default()),
        )
    };
    (runtime, replicas)
}

#[test]
fn replicas_see_each_others_proxy_reports_and_forget_dead_ones() {
    let server = FakeApiServer::new();
    let (runtime_a, a) = replica(&server, "a");
    let (_runtime_b, b) = replica(&server, "b");
    let report = SyncSummary::from([(
        "shop/web".to_string(),
        GatewaySync {
            connected: 2,
            synced: 1,
            nacks: vec![],
        },
    )]);
    a.publish(report.clone());
    wait_until("b to see a's proxies", Duration::from_secs(5), || {
        b.peers() == report
    });
    assert!(a.peers().get("shop/web").is_none_or(|s| s.connected == 0));
    assert_eq!(b.live_peers(), ["a"]);
    runtime_a.shutdown_background();
    let forgotten = wait_until("b to forget a", Duration::from_secs(5), || {
        b.peers().is_empty()
    });
    assert!(forgotten < Duration::from_secs(3), "{forgotten:?}");
}

#[test]
fn a_replica_shutting_down_is_forgotten_at_once() {
    let server = FakeApiServer::new();
    let (runtime_a, a) = replica(&server, "a");
    let (_runtime_b, b) = replica(&server, "b");
    a.publish(SyncSummary::from([(
        "shop/web".to_string(),
        GatewaySync {
            connected: 1,
            synced: 1,
            nacks: vec![],
        },
    )]));
    wait_until("b to see a", Duration::from_secs(5), || {
        !b.peers().is_empty()
    });
    runtime_a.block_on(a.release());
    let forgotten = wait_until("b to forget a", Duration::from_secs(5), || {
        b.live_peers().is_empty()
    });
    assert!(forgotten < Duration::from_millis(900), "{forgotten:?}");
}
