//! Who is connected and how far each proxy got: per proxy and type, the last version sent,
//! the last version ACKed and the last NACK; plus totals for metrics.
//!
//! The server records [`Event`]s here; the admin endpoint, `trellis proxy-status` and the
//! status writer read [`SyncRegistry::proxies`].

use crate::protocol::Event;
use crate::resource::ResourceType;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Which ADS variant a stream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Protocol {
    /// State of the world (StreamAggregatedResources).
    Sotw,
    /// Incremental (DeltaAggregatedResources).
    Delta,
}

/// A rejected response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NackInfo {
    /// The version rejected.
    pub version: String,
    /// The client's error message.
    pub error: String,
    /// Resources in the rejected response.
    pub resources: Vec<String>,
}

/// Sync state of one type on one proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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
}

/// Sync state of one connected proxy (one stream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
}

/// Totals across every stream since start, by type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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
    next_id: u64,
    proxies: BTreeMap<u64, ProxySync>,
    totals: BTreeMap<ResourceType, TypeTotals>,
}

/// The registry of connected proxies. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct SyncRegistry {
    inner: Mutex<Inner>,
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
        inner.proxies.insert(
            id,
            ProxySync {
                node_id: node_id.to_string(),
                node_cluster: node_cluster.to_string(),
                key: key.to_string(),
                protocol,
                connected_at,
                types: BTreeMap::new(),
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
}

impl StreamHandle {
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
        self.registry.lock().proxies.remove(&self.id);
    }
}
