//! What the other replicas' proxies report, so that the leader writes a Gateway's `Programmed`
//! condition from every proxy, not only from those connected to itself.
//!
//! Proxies connect to any replica (the xDS Service balances them), but only the leader writes
//! status. Each replica therefore keeps a Lease of its own beside the election Lease, renewed
//! every retry period, carrying a summary of its proxies per Gateway in an annotation; every
//! replica watches these Leases.
//!
//! ```text
//!  replica A: proxies of shop/web: 2 connected, 2 synced ──► Lease trellis-<A>
//!  replica B: proxies of shop/web: 1 connected, 0 synced ──► Lease trellis-<B>     (label
//!                                                                trellis.dev/replica-of=trellis)
//!  leader B: own registry (1, 0) + live peers (A: 2, 2) = 3 connected, 2 synced
//! ```
//!
//! A peer is live while its Lease keeps changing: one not renewed for half the lease duration
//! is ignored (a killed replica's proxies have reconnected elsewhere by then), unless this
//! replica itself lost the API server lately or its watch of the Leases is failing, in which
//! case nobody's renewals could be seen and the last known state is kept. A replica shutting down empties its Lease's holder; in a
//! cluster the Lease is owned by the Pod and collected with it.

use crate::health::{Health, UNREACHABLE, is_unreachable, unreachable};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Label on replica Leases naming the election Lease they belong to.
pub const REPLICA_LABEL: &str = "trellis.dev/replica-of";
/// Annotation on replica Leases holding the proxy summary (JSON).
pub const SYNC_ANNOTATION: &str = "trellis.dev/proxy-sync";

/// What one replica's proxies of one Gateway report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewaySync {
    /// Proxies connected.
    pub connected: u32,
    /// Proxies holding the current configuration.
    pub synced: u32,
    /// Rejections (`node rejected TYPE: error`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nacks: Vec<String>,
}

/// Proxy reports by Gateway (`namespace/name`).
pub type SyncSummary = BTreeMap<String, GatewaySync>;

/// How replica Leases are kept.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// Namespace of the Leases (the election Lease's).
    pub namespace: String,
    /// The election Lease's name: replica Leases are `<name>-<identity>`.
    pub group: String,
    /// This replica's identity.
    pub identity: String,
    /// The election's lease duration; peers are stale after half of it.
    pub lease_duration: Duration,
    /// How often this replica's Lease is renewed.
    pub retry_period: Duration,
    /// The Pod owning this replica's Lease, so that it is collected with the Pod.
    pub owner: Option<OwnerReference>,
    /// How long one write may take.
    pub request_timeout: Duration,
}

/// One peer as last seen.
#[derive(Clone, Debug)]
struct Peer {
    identity: String,
    released: bool,
    /// The renewTime and annotation as read: a change means the peer is alive.
    record: (Option<MicroTime>, Option<String>),
    changed_at: Instant,
    summary: SyncSummary,
}

#[derive(Debug, Default)]
struct Table {
    peers: BTreeMap<String, Peer>,
    relisting: Option<Vec<Lease>>,
}

/// The replica Leases: this replica's, kept up to date, and the others', watched.
#[derive(Debug)]
pub struct Replicas {
    identity: String,
    local: watch::Sender<SyncSummary>,
    table: Arc<Mutex<Table>>,
    changes: watch::Sender<u64>,
    stale_after: Duration,
    health: Arc<Health>,
    /// Whether the watch of replica Leases delivers: while it fails, silence proves nothing.
    view_healthy: AtomicBool,
    stop: Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
}

/// The name of a replica's Lease: `<group>-<identity>`, made a valid object name.
pub fn lease_name(group: &str, identity: &str) -> String {
    let mut name: String = format!("{group}-{identity}")
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(253);
    name.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Starts keeping this replica's Lease and watching the others'.
pub fn spawn(client: Client, config: ReplicaConfig, health: Arc<Health>) -> Arc<Replicas> {
    let (local, local_rx) = watch::channel(SyncSummary::new());
    let (stop_tx, stop_rx) = oneshot::channel();
    let replicas = Arc::new(Replicas {
        identity: config.identity.clone(),
        local,
        table: Arc::default(),
        changes: watch::channel(0).0,
        stale_after: config.lease_duration / 2,
        health: health.clone(),
        view_healthy: AtomicBool::new(true),
        stop: Mutex::new(Some(stop_tx)),
    });
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    tokio::spawn(keep_lease(
        api.clone(),
        config.clone(),
        health.clone(),
        local_rx,
        stop_rx,
    ));
    tokio::spawn(watch_peers(api, config, replicas.clone()));
    replicas
}

impl Replicas {
    /// Publishes this replica's proxy summary (written to its Lease if it changed).
    pub fn publish(&self, summary: SyncSummary) {
        self.local.send_if_modified(|s| {
            let changed = *s != summary;
            *s = summary;
            changed
        });
    }

    /// The sum of the live peers' summaries (this replica excluded).
    pub fn peers(&self) -> SyncSummary {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = SyncSummary::new();
        for peer in table.peers.values().filter(|p| self.live(p)) {
            for (gateway, s) in &peer.summary {
                let total = out.entry(gateway.clone()).or_default();
                total.connected += s.connected;
                total.synced += s.synced;
                total.nacks.extend(s.nacks.iter().cloned());
            }
        }
        out
    }

    /// Identities of the live peers.
    pub fn live_peers(&self) -> Vec<String> {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table
            .peers
            .values()
            .filter(|p| self.live(p))
            .map(|p| p.identity.clone())
            .collect()
    }

    /// A receiver that changes when the peers' summaries or liveness may have changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Stops renewing this replica's Lease and marks it released.
    pub async fn release(&self) {
        let stop = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(stop) = stop {
            let (done_tx, done_rx) = oneshot::channel();
            if stop.send(done_tx).is_ok() {
                let _ = done_rx.await;
            }
        }
    }

    fn live(&self, peer: &Peer) -> bool {
        if peer.identity == self.identity || peer.released {
            return false;
        }
        let recent_trouble = self
            .health
            .since_trouble()
            .is_some_and(|t| t < self.stale_after)
            || !self.view_healthy.load(Ordering::Relaxed);
        peer.changed_at.elapsed() < self.stale_after || recent_trouble
    }

    fn notify(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

/// Keeps this replica's Lease renewed, with the latest summary.
async fn keep_lease(
    api: Api<Lease>,
    config: ReplicaConfig,
    health: Arc<Health>,
    mut local: watch::Receiver<SyncSummary>,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let name = lease_name(&config.group, &config.identity);
    let mut last: Option<Lease> = None;
    let mut failing: Option<String> = None;
    loop {
        let summary = local.borrow_and_update().clone();
        let write = write_lease(&api, &config, &name, &mut last, &summary, false);
        match tokio::time::timeout(config.request_timeout, write).await {
            Ok(Ok(())) => {
                if let Some(cause) = failing.take()
                    && cause != UNREACHABLE
                {
                    info!(previous_error = %cause, lease = %name, "replica Lease renewed again");
                }
            }
            Ok(Err(e)) => {
                last = None;
                let cause = if is_unreachable(&e) {
                    // Logged once for everything by the health module.
                    unreachable(&health, &e.to_string());
                    UNREACHABLE.to_string()
                } else {
                    e.to_string()
                };
                if failing.as_deref() != Some(cause.as_str()) && cause != UNREACHABLE {
                    warn!(error = %cause, lease = %name, "cannot renew this replica's Lease");
                }
                failing = Some(cause);
            }
            Err(_) => last = None,
        }
        tokio::select! {
            () = tokio::time::sleep(config.retry_period) => {}
            changed = local.changed() => {
                if changed.is_err() {
                    return;
                }
                // Gather a burst of proxy changes into one write.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            done = &mut stop => {
                let empty = SyncSummary::new();
                let release = write_lease(&api, &config, &name, &mut last, &empty, true);
                if let Err(e) = tokio::time::timeout(config.request_timeout, release).await.unwrap_or(Ok(())) {
                    debug!(error = %e, "cannot release this replica's Lease");
                }
                if let Ok(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
    }
}

/// The most bytes of proxy summary a replica Lease carries (annotations may total 256 KiB).
pub const MAX_ANNOTATION_BYTES: usize = 128 * 1024;

/// The summary as the annotation's JSON: with every NACK text when that fits in
/// [`MAX_ANNOTATION_BYTES`], else with the texts left out (the counts always stay: they decide
/// `Programmed`).
pub fn annotation(summary: &SyncSummary) -> String {
    let full = serde_json::to_string(summary).unwrap_or_else(|_| "{}".to_string());
    if full.len() <= MAX_ANNOTATION_BYTES {
        return full;
    }
    let counts: SyncSummary = summary
        .iter()
        .map(|(gateway, s)| {
            let nacks = if s.nacks.is_empty() {
                Vec::new()
            } else {
                vec![format!(
                    "{} rejections (their texts are on the replica that holds the proxies)",
                    s.nacks.len()
                )]
            };
            (
                gateway.clone(),
                GatewaySync {
                    connected: s.connected,
                    synced: s.synced,
                    nacks,
                },
            )
        })
        .collect();
    let counts = serde_json::to_string(&counts).unwrap_or_else(|_| "{}".to_string());
    if counts.len() > MAX_ANNOTATION_BYTES {
        warn!(
            bytes = counts.len(),
            "the proxy summary is larger than a replica Lease should carry"
        );
    }
    counts
}

async fn write_lease(
    api: &Api<Lease>,
    config: &ReplicaConfig,
    name: &str,
    last: &mut Option<Lease>,
    summary: &SyncSummary,
    release: bool,
) -> Result<(), kube::Error> {
    let now = MicroTime(Timestamp::now());
    let annotation = annotation(summary);
    let current = match last.take() {
        Some(lease) => Some(lease),
        None => api.get_opt(name).await?,
    };
    let Some(mut lease) = current else {
        if release {
            return Ok(());
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(config.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    REPLICA_LABEL.to_string(),
                    config.group.clone(),
                )])),
                annotations: Some(BTreeMap::from([(SYNC_ANNOTATION.to_string(), annotation)])),
                owner_references: config.owner.clone().map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(config.lease_duration.as_secs().max(1) as i32),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..LeaseSpec::default()
            }),
        };
        *last = Some(api.create(&PostParams::default(), &lease).await?);
        return Ok(());
    };
    let mut spec = lease.spec.clone().unwrap_or_default();
    spec.holder_identity = (!release).then(|| config.identity.clone());
    spec.lease_duration_seconds = Some(config.lease_duration.as_secs().max(1) as i32);
    spec.renew_time = Some(now);
    lease.spec = Some(spec);
    lease
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(SYNC_ANNOTATION.to_string(), annotation);
    lease
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(REPLICA_LABEL.to_string(), config.group.clone());
    lease.metadata.managed_fields = None;
    *last = Some(api.replace(name, &PostParams::default(), &lease).await?);
    Ok(())
}

/// Watches the replica Leases of this election, and re-evaluates liveness as time passes.
async fn watch_peers(api: Api<Lease>, config: ReplicaConfig, replicas: Arc<Replicas>) {
    let selector = format!("{REPLICA_LABEL}={}", config.group);
    let stream = watcher::watcher(api, watcher::Config::default().labels(&selector))
        .backoff(crate::provider::RetryBackoff::default());
    let mut stream = std::pin::pin!(stream);
    let mut tick = tokio::time::interval((replicas.stale_after / 4).max(Duration::from_millis(50)));
    let mut live = Vec::new();
    loop {
        tokio::select! {
            item = stream.next() => {
                let Some(item) = item else { return };
                replicas.view_healthy.store(item.is_ok(), Ordering::Relaxed);
                match item {
                    Ok(event) => {
                        let changed = {
                            let mut table = replicas.table.lock().unwrap_or_else(PoisonError::into_inner);
                            apply(&mut table, event, replicas.stale_after)
                        };
                        if changed {
                            replicas.notify();
                        }
                    }
                    Err(e) => debug!(error = %e, "watch of replica Leases failed; retrying"),
                }
            }
            _ = tick.tick() => {}
        }
        let now_live = replicas.live_peers();
        if now_live != live {
            debug!(peers = ?now_live, "live replicas changed");
            live = now_live;
            replicas.notify();
        }
    }
}

/// Applies a watch event to the peer table; returns whether a summary or release changed.
fn apply(table: &mut Table, event: Event<Lease>, stale_after: Duration) -> bool {
    match event {
        Event::Init => {
            table.relisting = Some(Vec::new());
            false
        }
        Event::InitApply(lease) => {
            table.relisting.get_or_insert_with(Vec::new).push(lease);
            false
        }
        Event::InitDone => {
            let listed = table.relisting.take().unwrap_or_default();
            let mut previous = std::mem::take(&mut table.peers);
            for lease in listed {
                let name = lease.metadata.name.clone().unwrap_or_default();
                let before = previous.remove(&name);
                table
                    .peers
                    .insert(name, peer_of(&lease, before.as_ref(), stale_after));
            }
            true
        }
        Event::Apply(lease) => {
            let name = lease.metadata.name.clone().unwrap_or_default();
            let before = table.peers.get(&name);
            let next = peer_of(&lease, before, stale_after);
            let changed =
                before.is_none_or(|b| b.summary != next.summary || b.released != next.released);
            table.peers.insert(name, next);
            changed
        }
        Event::Delete(lease) => {
            let name = lease.metadata.name.clone().unwrap_or_default();
            table.peers.remove(&name).is_some()
        }
    }
}

fn peer_of(lease: &Lease, before: Option<&Peer>, stale_after: Duration) -> Peer {
    let spec = lease.spec.clone().unwrap_or_default();
    let annotation = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SYNC_ANNOTATION))
        .cloned();
    let record = (spec.renew_time.clone(), annotation.clone());
    let changed_at = match before {
        Some(b) if b.record == record => b.changed_at,
        Some(_) => Instant::now(),
        // First sight: as old as its renewTime says (by this replica's clock, bounded), so a
        // Lease left by a replica that died long ago is not taken for a live one.
        None => {
            let age = spec
                .renew_time
                .as_ref()
                .and_then(|t| Timestamp::now().duration_since(t.0).try_into().ok())
                .unwrap_or(Duration::ZERO)
                .min(stale_after * 2);
            Instant::now().checked_sub(age).unwrap_or_else(Instant::now)
        }
    };
    Peer {
        identity: spec.holder_identity.clone().unwrap_or_default(),
        released: spec.holder_identity.as_deref().unwrap_or("").is_empty(),
        record,
        changed_at,
        summary: annotation
            .and_then(|a| serde_json::from_str(&a).ok())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_lease_annotation_is_bounded() {
        let summary: SyncSummary = (0..500)
            .map(|i| {
                (
                    format!("tenant-{i}/web"),
                    GatewaySync {
                        connected: 3,
                        synced: 2,
                        nacks: vec![format!("proxy-{i} rejected RDS: {}", "x".repeat(1000)); 3],
                    },
                )
            })
            .collect();
        let text = annotation(&summary);
        assert!(text.len() <= MAX_ANNOTATION_BYTES, "{} bytes", text.len());
        let back: SyncSummary = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back.len(), 500, "every Gateway's counts stay");
        assert_eq!(back["tenant-7/web"].synced, 2);
        assert_eq!(back["tenant-7/web"].nacks.len(), 1);
        // A small summary keeps its texts.
        let small: SyncSummary = summary.into_iter().take(2).collect();
        assert_eq!(
            annotation(&small),
            serde_json::to_string(&small).unwrap_or_default()
        );
    }

    #[test]
    fn lease_names_are_valid_object_names() {
        assert_eq!(lease_name("trellis", "Pod_1.x"), "trellis-pod-1.x");
        assert_eq!(
            lease_name("trellis", "trellis-5d8f7c9b4d-x7k2p"),
            "trellis-trellis-5d8f7c9b4d-x7k2p"
        );
    }

    fn lease(holder: Option<&str>, summary: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(format!("trellis-{}", holder.unwrap_or("gone"))),
                annotations: Some(BTreeMap::from([(
                    SYNC_ANNOTATION.to_string(),
                    summary.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..LeaseSpec::default()
            }),
        }
    }

    fn replicas(identity: &str) -> Replicas {
        Replicas {
            identity: identity.into(),
            local: watch::channel(SyncSummary::new()).0,
            table: Arc::default(),
            changes: watch::channel(0).0,
            stale_after: Duration::from_secs(5),
            health: Arc::default(),
            view_healthy: AtomicBool::new(true),
            stop: Mutex::new(None),
        }
    }

    #[test]
    fn peers_are_summed_without_this_replica_or_released_ones() {
        let r = replicas("a");
        {
            let mut table = r.table.lock().expect("lock");
            let stale = Duration::from_secs(5);
            let s = r#"{"shop/web":{"connected":2,"synced":1,"nacks":["n rejected LDS: x"]}}"#;
            apply(&mut table, Event::Apply(lease(Some("a"), s)), stale);
            apply(&mut table, Event::Apply(lease(Some("b"), s)), stale);
            apply(&mut table, Event::Apply(lease(Some("c"), s)), stale);
            apply(&mut table, Event::Apply(lease(None, s)), stale);
        }
        let peers = r.peers();
        assert_eq!(peers["shop/web"].connected, 4);
        assert_eq!(peers["shop/web"].synced, 2);
        assert_eq!(peers["shop/web"].nacks.len(), 2);
        assert_eq!(r.live_peers(), ["b", "c"]);
    }

    #[test]
    fn a_peer_first_seen_with_an_old_renewal_is_stale() {
        let r = replicas("a");
        let mut old = lease(Some("b"), "{}");
        if let Some(spec) = old.spec.as_mut() {
            spec.renew_time = Some(MicroTime(
                Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(60),
            ));
        }
        {
            let mut table = r.table.lock().expect("lock");
            apply(&mut table, Event::Apply(old), Duration::from_secs(5));
        }
        assert!(r.live_peers().is_empty());
    }
}
