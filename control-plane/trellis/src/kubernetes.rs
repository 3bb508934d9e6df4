//! `trellis serve --kubernetes`: the Kubernetes provider, leader election, replica Leases and
//! the status writer, wired for the control loop.
//!
//! ```text
//!  start():   client ─┬─► probe (GET /version)          ─► Health
//!                     ├─► leader::Election (Lease)       ─► is leader
//!                     └─► replicas (own Lease, peers')   ─► peers' proxy sync
//!  loads():   provider::watch ─(initial sync)─► Load stream ─► control loop
//!             status writer (Observed, DesiredStatus, is leader) ─► PATCH /status
//!  StatusHooks (control loop side): publish this replica's proxy sync, add the peers' to each
//!             Gateway's, and hand the report to the writer as DesiredStatus
//!  shutdown(): release the election Lease and this replica's Lease
//! ```

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::info;
use trellis_controller::StatusReport;
use trellis_kube::leader::{self, Election, ElectionConfig};
use trellis_kube::replicas::{self, GatewaySync, ReplicaConfig, Replicas, SyncSummary};
use trellis_kube::{DesiredStatus, Health, ProviderConfig, StatusWriterConfig};
use trellis_model::{Kind, ObjectKey};
use trellis_sources::Load;
use trellis_xds::KeyState;

/// The Kubernetes source's flags of `trellis serve`.
#[derive(Debug, Args)]
pub struct KubeArgs {
    /// Read objects from the Kubernetes API server and write Gateway API status back (instead
    /// of `--config-dir`). Uses `--kubeconfig`, else `KUBECONFIG` or `~/.kube/config`, else
    /// the in-cluster service account.
    #[arg(long, env = "TRELLIS_KUBERNETES")]
    pub kubernetes: bool,
    /// A kubeconfig file to reach the API server with (with `--kubernetes`).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Watch only these namespaces (comma-separated; default: all; with `--kubernetes`).
    /// GatewayClasses are always read cluster-wide.
    #[arg(long, value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Namespace of the leader-election Lease (default: the client's namespace, in a cluster
    /// the Pod's).
    #[arg(long, env = "TRELLIS_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease; replica Leases are named `<name>-<identity>`.
    #[arg(long, default_value = "trellis")]
    pub leader_election_lease: String,
    /// This replica's identity in the election (default: `POD_NAME`, else the hostname and
    /// process id).
    #[arg(long)]
    pub leader_election_identity: Option<String>,
    /// How long a leader that stopped renewing keeps the Lease, in seconds; it renews every
    /// 2/15 of this and steps down after 2/3 of it without a renewal.
    #[arg(long, default_value_t = 15)]
    pub leader_election_lease_seconds: u64,
}

/// The running Kubernetes side of the control plane.
pub struct Kubernetes {
    client: kube::Client,
    /// What goes wrong with the API server, for metrics and readiness.
    pub health: Arc<Health>,
    election: Option<Election>,
    replicas: Arc<Replicas>,
    desired: Arc<watch::Sender<Option<Arc<DesiredStatus>>>>,
    namespaces: Vec<String>,
    /// The control plane's namespace (the Leases', and the last-good ConfigMap's).
    namespace: String,
    /// The last valid policy specs as JSON, for the leader to keep in the ConfigMap.
    last_good: Arc<watch::Sender<Option<Arc<String>>>>,
}

impl Kubernetes {
    /// Builds the client and starts the probe, the election and the replica Lease. Fails only
    /// on a configuration that cannot work (an unreadable kubeconfig); an unreachable API
    /// server is waited for.
    pub async fn start(args: &KubeArgs) -> anyhow::Result<Self> {
        let client = trellis_kube::client(args.kubeconfig.as_deref())
            .await
            .context("cannot set up the Kubernetes client")?;
        let health = Arc::new(Health::default());
        tokio::spawn(trellis_kube::health::probe(client.clone(), health.clone()));
        let namespace = args
            .leader_election_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let identity = args
            .leader_election_identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(default_identity);
        let lease_duration = Duration::from_secs(args.leader_election_lease_seconds.max(1));
        let election_config = ElectionConfig::new(
            &namespace,
            &args.leader_election_lease,
            &identity,
            lease_duration,
        );
        info!(
            identity = %identity,
            lease = %format!("{namespace}/{}", args.leader_election_lease),
            namespaces = ?args.watch_namespaces,
            "Kubernetes provider starting"
        );
        let replicas = replicas::spawn(
            client.clone(),
            ReplicaConfig {
                namespace: namespace.clone(),
                group: args.leader_election_lease.clone(),
                identity: identity.clone(),
                lease_duration,
                retry_period: election_config.retry_period,
                owner: pod_owner(),
                request_timeout: election_config.request_timeout,
            },
            health.clone(),
        );
        let election = leader::spawn(client.clone(), election_config, health.clone());
        Ok(Self {
            client,
            health,
            election: Some(election),
            replicas,
            desired: Arc::new(watch::channel(None).0),
            namespaces: args.watch_namespaces.clone(),
            namespace,
            last_good: Arc::new(watch::channel(None).0),
        })
    }

    /// Whether this replica leads (always `false` without an election).
    pub fn leader(&self) -> watch::Receiver<bool> {
        match &self.election {
            Some(election) => election.subscribe(),
            None => watch::channel(false).1,
        }
    }

    /// A client of the API server.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The control plane's namespace (its Leases', the CA Secret's).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The last valid policy specs the replicas kept (ConfigMap `trellis-last-good`), if the
    /// API server answers in time.
    pub async fn read_last_good(&self) -> Option<serde_json::Value> {
        let read = trellis_kube::last_good::read(&self.client, &self.namespace);
        match tokio::time::timeout(Duration::from_secs(10), read).await {
            Ok(Ok(Some(text))) => serde_json::from_str(&text).ok(),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::warn!("cannot read the last valid policy specs: {e}");
                None
            }
            Err(_) => {
                tracing::warn!("reading the last valid policy specs timed out");
                None
            }
        }
    }

    /// Waits for the initial sync, starts the status writer, and returns the load stream.
    pub async fn loads(&self, debounce: Duration) -> watch::Receiver<Arc<Load>> {
        let provider = trellis_kube::watch(
            self.client.clone(),
            ProviderConfig {
                namespaces: self.namespaces.clone(),
                debounce,
            },
            self.health.clone(),
        )
        .await;
        if let Some(election) = &self.election {
            trellis_kube::status::spawn(
                self.client.clone(),
                StatusWriterConfig::default(),
                self.desired.subscribe(),
                provider.observed.clone(),
                election.subscribe(),
                self.health.clone(),
            );
            trellis_kube::last_good::spawn_writer(
                self.client.clone(),
                self.namespace.clone(),
                self.last_good.subscribe(),
                election.subscribe(),
                self.health.clone(),
            );
        }
        provider.loads
    }

    /// What the control loop's status publisher needs.
    pub fn hooks(&self) -> StatusHooks {
        StatusHooks {
            replicas: self.replicas.clone(),
            desired: self.desired.clone(),
            last_good: self.last_good.clone(),
        }
    }

    /// Gives up the leader Lease (if held) and this replica's Lease, so that another replica
    /// takes over at once.
    pub async fn shutdown(mut self) {
        let release = async {
            if let Some(election) = self.election.take() {
                election.release().await;
            }
            self.replicas.release().await;
        };
        if tokio::time::timeout(Duration::from_secs(5), release)
            .await
            .is_err()
        {
            tracing::warn!("releasing the Leases timed out");
        }
    }
}

/// `hostname-pid`: unique among processes of one machine, for runs outside a Pod.
fn default_identity() -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "trellis".to_string());
    format!("{hostname}-{}", std::process::id())
}

/// The Pod this process runs in (`POD_NAME` and `POD_UID` from the downward API), as the owner
/// of its replica Lease.
fn pod_owner() -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    let name = std::env::var("POD_NAME").ok().filter(|s| !s.is_empty())?;
    let uid = std::env::var("POD_UID").ok().filter(|s| !s.is_empty())?;
    Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".to_string(),
            kind: "Pod".to_string(),
            name,
            uid,
            ..Default::default()
        },
    )
}

/// The control loop's side of the Kubernetes source.
#[derive(Clone)]
pub struct StatusHooks {
    replicas: Arc<Replicas>,
    desired: Arc<watch::Sender<Option<Arc<DesiredStatus>>>>,
    last_good: Arc<watch::Sender<Option<Arc<String>>>>,
}

impl StatusHooks {
    /// Changes whenever the other replicas' proxy reports may have changed.
    pub fn peer_changes(&self) -> watch::Receiver<u64> {
        self.replicas.subscribe()
    }

    /// The other live replicas' proxy reports, by Gateway (`ns/name`).
    pub fn peers(&self) -> SyncSummary {
        self.replicas.peers()
    }

    /// Publishes this replica's proxy reports.
    pub fn publish_local(&self, local: SyncSummary) {
        self.replicas.publish(local);
    }

    /// Hands the last valid policy specs to the leader's ConfigMap writer.
    pub fn publish_last_good(&self, specs: &serde_json::Value) {
        let text = Some(Arc::new(specs.to_string()));
        self.last_good.send_if_modified(|current| {
            let changed = *current != text;
            *current = text;
            changed
        });
    }

    /// Hands the status report to the status writer.
    pub fn publish_desired(&self, report: &StatusReport) {
        let mut desired = DesiredStatus::default();
        for o in &report.objects {
            let Some(kind) = Kind::from_type(&o.api_version, &o.kind) else {
                continue;
            };
            let key = ObjectKey::new(
                o.metadata.namespace.clone().unwrap_or_default(),
                o.metadata.name.clone(),
            );
            desired.objects.insert((kind, key), o.status.clone());
        }
        let desired = Some(Arc::new(desired));
        self.desired.send_if_modified(|d| {
            let changed = *d != desired;
            *d = desired;
            changed
        });
    }
}

/// A registry key state as a replica report.
pub fn summary_of(state: &KeyState) -> GatewaySync {
    GatewaySync {
        connected: state.connected as u32,
        synced: state.synced as u32,
        nacks: state.nacks.clone(),
    }
}

/// A key state with the peers' report added.
pub fn with_peers(state: KeyState, peers: Option<&GatewaySync>) -> KeyState {
    match peers {
        Some(p) => trellis_controller::with_peers(
            state,
            &KeyState {
                connected: p.connected as usize,
                synced: p.synced as usize,
                nacks: p.nacks.clone(),
            },
        ),
        None => state,
    }
}
