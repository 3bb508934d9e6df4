//! Who is connected and how far each proxy got: per proxy and type, the last version sent,
//! the last version ACKed and the last NACK; plus totals for metrics.
//!
//! The server records [`Event`]s here; the admin endpoint, `trellis proxy-status` and the
//! status writer read [`SyncRegistry::proxies`].

use crate::protocol::{Event, SyncStatus};
use crate::resource::ResourceType;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Which ADS variant a stream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Protocol {
    /// State of the world (StreamAggregatedResources).
    Sotw,
    /// Incremental (DeltaAggregatedResources).
    Delta,
}

/// A rejected response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NackInfo {
    /// The version rejected.
    pub version: String,
    /// The client's error message.
    pub error: String,
    /// Resources in the rejected response.
    pub resources: Vec<String>,
}

/// Sync state of one type on one proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TypeSync {
    /// Last version sent.
    pub sent_version: Option<String>,
    /// Last version ACKed.
    pub acked_version: Option<String>,
    /// A response is awaiting ACK.
    pub pending: bool,
    /// The last NACK, cleared by the next ACK.
    pub nack: Option<NackInfo>,
    /// Responses sent on this stream.
    pub responses: u64,
    /// NACKs received on this stream.
    pub nacks: u64,
    /// Whether the proxy holds what it should for this type.
    pub status: Option<SyncStatus>,
}

/// Sync state of one connected proxy (one stream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ProxySync {
    /// Envoy's node id.
    pub node_id: String,
    /// Envoy's node cluster.
    pub node_cluster: String,
    /// The snapshot key the proxy is served from (e.g. `gateway/default/web`).
    pub key: String,
    /// The ADS variant.
    pub protocol: Protocol,
    /// When the stream opened (seconds since the epoch).
    pub connected_at: u64,
    /// Per-type state.
    pub types: BTreeMap<ResourceType, TypeSync>,
    /// The snapshot version the proxy holds completely (every type Synced), if any.
    pub synced_version: Option<String>,
    /// For a sidecar (key `pod/<ns>/<name>`): the class whose snapshot it is served. The
    /// registry leaves it empty; the admin endpoint fills it in from the latest translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// With the CA: the workload certificate last issued to this proxy's workload (its
    /// identity and expiry). The admin endpoint fills it in from the certificate service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<ProxyCertificate>,
    /// The proxy's build (`user_agent_name/major.minor.patch` from its ADS node, e.g.
    /// `envoy/1.40.0`), when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
}

/// The workload certificate a proxy holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ProxyCertificate {
    /// The identity it names (`spiffe://…`).
    pub identity: String,
    /// When it expires (seconds since the epoch).
    pub not_after: u64,
}

/// Totals across every stream since start, by type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TypeTotals {
    /// Responses sent.
    pub responses: u64,
    /// ACKs received.
    pub acks: u64,
    /// NACKs received.
    pub nacks: u64,
    /// Resource bytes sent.
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Bumped whenever a proxy connects, disconnects or changes sync state.
    changes: u64,
    next_id: u64,
    proxies: BTreeMap<u64, ProxySync>,
    totals: BTreeMap<ResourceType, TypeTotals>,
}

/// The registry of connected proxies. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SyncRegistry {
    inner: Mutex<Inner>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for SyncRegistry {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            changed: tokio::sync::watch::channel(0).0,
        }
    }
}

/// A registered stream; deregisters on drop.
#[derive(Debug)]
pub struct StreamHandle {
    registry: Arc<SyncRegistry>,
    id: u64,
}

impl SyncRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new stream.
    pub fn connect(
        self: &Arc<Self>,
        node_id: &str,
        node_cluster: &str,
        key: &str,
        protocol: Protocol,
    ) -> StreamHandle {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let connected_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        self.notify(&mut inner);
        inner.proxies.insert(
            id,
            ProxySync {
                node_id: node_id.to_string(),
                node_cluster: node_cluster.to_string(),
                key: key.to_string(),
                protocol,
                connected_at,
                types: BTreeMap::new(),
                synced_version: None,
                class: None,
                certificate: None,
                build: None,
            },
        );
        StreamHandle {
            registry: self.clone(),
            id,
        }
    }

    /// Every connected proxy, ordered by node id.
    pub fn proxies(&self) -> Vec<ProxySync> {
        let mut proxies: Vec<ProxySync> = self.lock().proxies.values().cloned().collect();
        proxies.sort_by(|a, b| {
            a.node_id
                .cmp(&b.node_id)
                .then(a.connected_at.cmp(&b.connected_at))
        });
        proxies
    }

    /// Totals by type since start.
    pub fn totals(&self) -> BTreeMap<ResourceType, TypeTotals> {
        self.lock().totals.clone()
    }

    /// Number of connected streams.
    pub fn connected(&self) -> usize {
        self.lock().proxies.len()
    }

    /// A receiver that changes whenever a proxy connects, disconnects or changes sync state.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn notify(&self, inner: &mut Inner) {
        inner.changes += 1;
        self.changed.send_replace(inner.changes);
    }

    /// For a snapshot key: whether some connected proxy holds `version` completely, and the
    /// NACKs of connected proxies, one line per distinct error (see [`KeyState::nacks`]).
    pub fn key_state(&self, key: &str, version: &str) -> KeyState {
        let inner = self.lock();
        let mut state = KeyState::default();
        // (type, error) -> (proxies, first node id)
        let mut distinct: BTreeMap<(ResourceType, &str), (usize, &str)> = BTreeMap::new();
        for p in inner.proxies.values().filter(|p| p.key == key) {
            state.connected += 1;
            if p.synced_version.as_deref() == Some(version) {
                state.synced += 1;
            }
            for (t, ts) in &p.types {
                if let Some(n) = &ts.nack {
                    let entry = distinct
                        .entry((*t, n.error.as_str()))
                        .or_insert((0, p.node_id.as_str()));
                    entry.0 += 1;
                }
            }
        }
        // The most common rejections first.
        let mut distinct: Vec<_> = distinct.into_iter().collect();
        distinct.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
        let lines = distinct.into_iter().map(|((t, error), (count, node))| {
            if count == 1 {
                format!("{node} rejected {t}: {error}")
            } else {
                format!("{count} proxies ({node} and others) rejected {t}: {error}")
            }
        });
        state.nacks = summarize_nacks(lines);
        state
    }
}

/// The most NACK lines a summary keeps; the rest are counted.
pub const MAX_NACK_LINES: usize = 3;

/// At most [`MAX_NACK_LINES`] of `lines` (each already bounded), and a line counting the rest,
/// so that a summary of any number of proxies stays small (a Gateway's status condition, a
/// replica's Lease annotation).
pub fn summarize_nacks(lines: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut more = 0usize;
    for line in lines {
        if let Some(rest) = line.strip_prefix("and ")
            && let Some(n) = rest
                .strip_suffix(" more different rejections")
                .and_then(|n| n.parse::<usize>().ok())
        {
            more += n;
        } else if out.len() < MAX_NACK_LINES {
            out.push(line);
        } else {
            more += 1;
        }
    }
    if more > 0 {
        out.push(format!("and {more} more different rejections"));
    }
    out
}

/// What the proxies of one snapshot key report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyState {
    /// Proxies connected for the key.
    pub connected: usize,
    /// Proxies holding the asked-for version completely.
    pub synced: usize,
    /// NACKs reported by connected proxies: one line per distinct type and error (with how many
    /// proxies sent it), at most [`MAX_NACK_LINES`] and a line counting the others.
    pub nacks: Vec<String>,
}

impl StreamHandle {
    /// Records the proxy's build (`envoy/1.40.0`).
    pub fn set_build(&self, build: String) {
        if let Some(p) = self.registry.lock().proxies.get_mut(&self.id) {
            p.build = Some(build);
        }
    }

    /// Records the stream's sync state; notifies subscribers when it changed.
    pub fn set_sync(
        &self,
        status: &BTreeMap<ResourceType, SyncStatus>,
        synced_version: Option<String>,
    ) {
        let mut inner = self.registry.lock();
        let Some(proxy) = inner.proxies.get_mut(&self.id) else {
            return;
        };
        let mut changed = proxy.synced_version != synced_version;
        proxy.synced_version = synced_version;
        for (t, s) in status {
            let ts = proxy.types.entry(*t).or_default();
            if ts.status != Some(*s) {
                ts.status = Some(*s);
                changed = true;
            }
        }
        if changed {
            self.registry.notify(&mut inner);
        }
    }

    /// Records what a stream reported.
    pub fn record(&self, events: &[Event]) {
        let mut inner = self.registry.lock();
        let Inner {
            proxies, totals, ..
        } = &mut *inner;
        let Some(proxy) = proxies.get_mut(&self.id) else {
            return;
        };
        for event in events {
            match event {
                Event::Sent {
                    resource_type,
                    version,
                    bytes,
                    ..
                } => {
                    let ts = proxy.types.entry(*resource_type).or_default();
                    ts.sent_version = Some(version.clone());
                    ts.pending = true;
                    ts.responses += 1;
                    let total = totals.entry(*resource_type).or_default();
                    total.responses += 1;
                    total.bytes += *bytes as u64;
                }
                Event::Acked {
                    resource_type,
                    version,
                    ..
                } => {
                    let ts = proxy.types.entry(*resource_type).or_default();
                    ts.acked_version = Some(version.clone());
                    ts.pending = false;
                    ts.nack = None;
                    totals.entry(*resource_type).or_default().acks += 1;
                }
                Event::Nacked {
                    resource_type,
                    version,
                    error,
                    resources,
                    ..
                } => {
                    let ts = proxy.types.entry(*resource_type).or_default();
                    ts.pending = false;
                    ts.nacks += 1;
                    ts.nack = Some(NackInfo {
                        version: version.clone(),
                        error: error.clone(),
                        resources: resources.clone(),
                    });
                    totals.entry(*resource_type).or_default().nacks += 1;
                }
                Event::Recovered { resource_type } => {
                    proxy.types.entry(*resource_type).or_default().nack = None;
                }
                Event::UnknownType { .. } => {}
            }
        }
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        inner.proxies.remove(&self.id);
        self.registry.notify(&mut inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nacks_of_many_proxies_are_summarized_by_distinct_error() {
        let registry = Arc::new(SyncRegistry::default());
        let handles: Vec<StreamHandle> = (0..200)
            .map(|i| {
                let h = registry.connect(&format!("proxy-{i}"), "ns/web", "gw", Protocol::Sotw);
                let error = if i < 150 {
                    "the same error".to_string()
                } else {
                    format!("error {i}: {}", "x".repeat(1000))
                };
                h.record(&[Event::Nacked {
                    resource_type: ResourceType::Route,
                    version: "v1".into(),
                    nonce: "1".into(),
                    error,
                    resources: Vec::new(),
                }]);
                h
            })
            .collect();
        let state = registry.key_state("gw", "v2");
        assert_eq!(state.connected, 200);
        assert_eq!(state.nacks.len(), MAX_NACK_LINES + 1, "{:?}", state.nacks);
        assert!(
            state
                .nacks
                .iter()
                .any(|l| l
                    .starts_with("150 proxies (proxy-0 and others) rejected RDS: the same error")),
            "{:?}",
            state.nacks
        );
        assert_eq!(
            state.nacks[MAX_NACK_LINES],
            "and 48 more different rejections"
        );
        let total: usize = state.nacks.iter().map(String::len).sum();
        assert!(total < 8 * 1024, "{total} bytes");
        // Summaries merge: the counted rest adds up.
        let merged = summarize_nacks(
            state
                .nacks
                .iter()
                .cloned()
                .chain(state.nacks.iter().cloned()),
        );
        assert_eq!(
            merged.last().map(String::as_str),
            Some("and 99 more different rejections")
        );
        drop(handles);
    }
}
