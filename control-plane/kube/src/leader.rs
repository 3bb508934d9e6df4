//! Leader election with a `coordination.k8s.io/v1` Lease, the way client-go does it, with
//! plain Lease calls (kube-runtime has no elector).
//!
//! ```text
//!  every retry period:  GET lease
//!     absent ─────────────────────────────► CREATE {holder: me}            → leader
//!     holder == me ───────────────────────► UPDATE renewTime (resourceVersion precondition)
//!     holder empty, or the record unchanged
//!       for leaseDurationSeconds (by this
//!       replica's clock, not the holder's) ─► UPDATE {holder: me, transitions+1} → leader
//!     otherwise ──────────────────────────► follower
//!  a leader that cannot renew for the renew deadline (< lease duration) steps down, so two
//!  replicas never both believe they lead; on shutdown the leader empties holderIdentity so
//!  another replica takes over at once.
//! ```

use crate::health::{Health, UNREACHABLE, is_unreachable, unreachable};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// How the election runs.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the Pod name in a cluster).
    pub identity: String,
    /// How long a holder that stopped renewing keeps the Lease (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How long a leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the Lease is read and renewed.
    pub retry_period: Duration,
    /// How long one round of Lease calls may take.
    pub request_timeout: Duration,
}

impl ElectionConfig {
    /// A configuration with client-go's proportions: for a 15 s lease, a 10 s renew deadline
    /// and a 2 s retry period.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
        lease_duration: Duration,
    ) -> Self {
        let renew_deadline = lease_duration.mul_f64(2.0 / 3.0);
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration,
            renew_deadline,
            retry_period: lease_duration.mul_f64(2.0 / 15.0),
            request_timeout: renew_deadline / 2,
        }
    }
}

/// A running election.
#[derive(Debug)]
pub struct Election {
    leader: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<oneshot::Sender<()>>>,
}

impl Election {
    /// Whether this replica leads, now and as it changes.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Stops campaigning and, when leading, gives the Lease up so that another replica takes
    /// over without waiting for it to expire.
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let (done_tx, done_rx) = oneshot::channel();
            if stop.send(done_tx).is_ok() {
                let _ = done_rx.await;
            }
        }
    }
}

/// Starts campaigning for the Lease.
pub fn spawn(client: Client, config: ElectionConfig, health: Arc<Health>) -> Election {
    let (tx, rx) = watch::channel(false);
    let (stop_tx, stop_rx) = oneshot::channel();
    let elector = Elector {
        api: Api::namespaced(client, &config.namespace),
        config,
        health,
        leader: tx,
        observed: None,
        renewed_at: None,
        failing: None,
    };
    tokio::spawn(elector.run(stop_rx));
    Election {
        leader: rx,
        stop: Some(stop_tx),
    }
}

/// The parts of a Lease that change when its holder renews or changes.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    holder: String,
    renew_time: Option<MicroTime>,
    acquire_time: Option<MicroTime>,
    transitions: Option<i32>,
    duration: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Self {
        Self {
            holder: spec.holder_identity.clone().unwrap_or_default(),
            renew_time: spec.renew_time.clone(),
            acquire_time: spec.acquire_time.clone(),
            transitions: spec.lease_transitions,
            duration: spec.lease_duration_seconds,
        }
    }
}

struct Elector {
    api: Api<Lease>,
    config: ElectionConfig,
    health: Arc<Health>,
    leader: watch::Sender<bool>,
    /// The Lease record last read, and when this replica saw it change.
    observed: Option<(Record, Instant)>,
    renewed_at: Option<Instant>,
    failing: Option<String>,
}

impl Elector {
    async fn run(mut self, mut stop: oneshot::Receiver<oneshot::Sender<()>>) {
        loop {
            let round = tokio::time::timeout(self.config.request_timeout, self.round()).await;
            match round {
                Ok(Ok(leads)) => {
                    if let Some(cause) = self.failing.take()
                        && cause != UNREACHABLE
                    {
                        info!(previous_error = %cause, "leader election: Lease calls succeed again");
                    }
                    if leads {
                        self.renewed_at = Some(Instant::now());
                    }
                    self.set_leader(leads);
                }
                Ok(Err(e)) if is_unreachable(&e) => {
                    unreachable(&self.health, &e.to_string());
                    self.failed(UNREACHABLE.to_string());
                }
                Ok(Err(e)) => self.failed(e.to_string()),
                Err(_) => {
                    let cause = format!("no answer within {:?}", self.config.request_timeout);
                    unreachable(&self.health, &cause);
                    self.failed(UNREACHABLE.to_string());
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.retry_period) => {}
                done = &mut stop => {
                    self.release().await;
                    if let Ok(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
            }
        }
    }

    fn failed(&mut self, cause: String) {
        if self.failing.as_deref() != Some(cause.as_str()) {
            if cause == UNREACHABLE {
                debug!(lease = %self.lease_name(), "leader election: the API server is unreachable");
            } else {
                warn!(error = %cause, lease = %self.lease_name(), "leader election: cannot read or renew the Lease");
            }
            self.failing = Some(cause);
        }
        let leading = *self.leader.borrow();
        let overdue = self
            .renewed_at
            .is_none_or(|t| t.elapsed() >= self.config.renew_deadline);
        if leading && overdue {
            warn!(
                deadline = ?self.config.renew_deadline,
                "leader election: the Lease was not renewed in time; stepping down"
            );
            self.set_leader(false);
        }
    }

    fn lease_name(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    fn set_leader(&mut self, leads: bool) {
        self.health.set_leader(leads);
        let changed = self.leader.send_if_modified(|l| {
            let changed = *l != leads;
            *l = leads;
            changed
        });
        if changed {
            if leads {
                info!(identity = %self.config.identity, lease = %self.lease_name(), "this replica is now the leader");
            } else {
                info!(identity = %self.config.identity, lease = %self.lease_name(), "this replica is no longer the leader");
            }
        }
    }

    /// One read-and-maybe-write; returns whether this replica holds the Lease afterwards.
    async fn round(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration_secs = self.config.lease_duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let seen_at = self.observe(&lease);
        let record = Record::of(&spec);
        let mine = record.holder == self.config.identity;
        let holder_duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(self.config.lease_duration);
        let expired = record.holder.is_empty() || seen_at.elapsed() >= holder_duration;
        if !mine && !expired {
            debug!(holder = %record.holder, "leader election: the Lease is held");
            return Ok(false);
        }
        let mut next = spec;
        if !mine {
            next.acquire_time = Some(now.clone());
            next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
            info!(previous = %record.holder, "leader election: taking over the Lease");
        }
        next.holder_identity = Some(self.config.identity.clone());
        next.lease_duration_seconds = Some(duration_secs);
        next.renew_time = Some(now);
        lease.spec = Some(next);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observe(&updated);
                Ok(true)
            }
            // Someone else wrote the Lease first (took it over, or renewed it).
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Notes the record read; returns when this replica first saw it as it is.
    fn observe(&mut self, lease: &Lease) -> Instant {
        let record = Record::of(&lease.spec.clone().unwrap_or_default());
        match &self.observed {
            Some((r, at)) if *r == record => *at,
            _ => {
                let now = Instant::now();
                self.observed = Some((record, now));
                now
            }
        }
    }

    /// Gives the Lease up if this replica holds it.
    async fn release(&mut self) {
        if !*self.leader.borrow() {
            return;
        }
        let give_up = async {
            let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
                return Ok::<(), kube::Error>(());
            };
            let mut spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            lease.spec = Some(spec);
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await?;
            Ok(())
        };
        match tokio::time::timeout(self.config.request_timeout, give_up).await {
            Ok(Ok(())) => info!(lease = %self.lease_name(), "leader election: Lease released"),
            Ok(Err(e)) => warn!(error = %e, "leader election: cannot release the Lease"),
            Err(_) => warn!("leader election: releasing the Lease timed out"),
        }
        self.set_leader(false);
    }
}
