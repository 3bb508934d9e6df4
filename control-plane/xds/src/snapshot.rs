//! Versioned per-proxy snapshots and the cache that publishes them: one writer, many readers.
//!
//! ```text
//!  translator ──SnapshotWriter::publish──► watch channel ──► SnapshotCache (one per stream)
//!                  { key -> Arc<Snapshot> }                    borrow(), changed()
//! ```
//!
//! A proxy is served the snapshot under its key (for a gateway proxy, `gateway/<ns>/<name>`).
//! Snapshots share resources by `Arc`: publishing a new set that only changed one resource
//! allocates that one resource, and streams hold pointers, not copies.

use crate::resource::{Resource, ResourceType, content_hash, named_versions_hash};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// The resources of one type in a snapshot, by name, with a version over all of them.
#[derive(Clone, Debug, Default)]
pub struct TypeResources {
    items: BTreeMap<Arc<str>, Arc<Resource>>,
    /// A hash of every name and version, worked out on first use.
    version: std::sync::OnceLock<String>,
}

impl PartialEq for TypeResources {
    fn eq(&self, other: &Self) -> bool {
        self.items == other.items
    }
}

impl TypeResources {
    /// The resources by name.
    pub fn items(&self) -> &BTreeMap<Arc<str>, Arc<Resource>> {
        &self.items
    }

    /// A resource by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Resource>> {
        self.items.get(name)
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// A version over every name and resource version: equal versions, equal contents.
    /// Worked out once per published set and shared by every stream reading it.
    pub fn version(&self) -> &str {
        self.version.get_or_init(|| {
            named_versions_hash(self.items.iter().map(|(n, r)| (&**n, r.version.as_str())))
        })
    }
}

/// Everything one proxy should have: resources of every type.
///
/// A snapshot may also carry *spare* resources: ones the proxy should not be given, but may
/// keep if it already has them. After a control-plane restart the server does not know which
/// routes a reconnecting proxy runs; spare clusters let it keep the clusters those routes may
/// still use until its routes are replaced, instead of removing them under live traffic.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    types: BTreeMap<ResourceType, TypeResources>,
    spare: Arc<Spare>,
    version: std::sync::OnceLock<String>,
    dependency_types: std::sync::OnceLock<TypeEdges>,
}

/// Which types' resources depend on which types' resources: `edges[a][b]` when a resource of
/// type `a` (by [`ResourceType::index`]) depends on one of type `b`.
pub type TypeEdges = [TypeMask; ResourceType::ALL.len()];

/// One flag per resource type, by [`ResourceType::index`].
pub type TypeMask = [bool; ResourceType::ALL.len()];

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.types == other.types
            && (Arc::ptr_eq(&self.spare, &other.spare) || self.spare == other.spare)
    }
}

/// Resources a proxy may keep but is not given (see [`Snapshot`]), usually shared by every
/// snapshot of one publish.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spare {
    types: BTreeMap<ResourceType, TypeResources>,
}

impl Spare {
    /// Builds the spare set from resources (typed by their type URL).
    pub fn from_resources(resources: impl IntoIterator<Item = Arc<Resource>>) -> Self {
        let mut types: BTreeMap<ResourceType, TypeResources> = BTreeMap::new();
        for r in resources {
            if let Some(t) = r.resource_type() {
                types.entry(t).or_default().items.insert(r.name.clone(), r);
            }
        }
        Self { types }
    }

    /// A spare resource by type and name.
    pub fn get(&self, t: ResourceType, name: &str) -> Option<&Arc<Resource>> {
        self.types.get(&t).and_then(|r| r.items.get(name))
    }
}

impl Snapshot {
    /// An empty snapshot (a known proxy with nothing to serve yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a snapshot from resources; each resource's type comes from its type URL, and a
    /// later resource with the same type and name replaces an earlier one.
    pub fn from_resources(resources: impl IntoIterator<Item = Arc<Resource>>) -> Self {
        let mut snapshot = Snapshot::new();
        for resource in resources {
            snapshot.insert(resource);
        }
        snapshot
    }

    /// Adds a resource (replacing one of the same type and name). Resources of types Trellis
    /// does not serve are ignored.
    pub fn insert(&mut self, resource: Arc<Resource>) {
        if let Some(t) = resource.resource_type() {
            self.types
                .entry(t)
                .or_default()
                .items
                .insert(resource.name.clone(), resource);
        }
    }

    /// The resources of a type (empty if none).
    pub fn resources(&self, t: ResourceType) -> &TypeResources {
        static EMPTY: std::sync::OnceLock<TypeResources> = std::sync::OnceLock::new();
        self.types
            .get(&t)
            .unwrap_or_else(|| EMPTY.get_or_init(TypeResources::default))
    }

    /// A resource by type and name.
    pub fn get(&self, t: ResourceType, name: &str) -> Option<&Arc<Resource>> {
        self.types.get(&t).and_then(|r| r.items.get(name))
    }

    /// Attaches spare resources.
    pub fn with_spare(mut self, spare: Arc<Spare>) -> Self {
        self.spare = spare;
        self
    }

    /// The spare resources.
    pub fn spare(&self) -> &Spare {
        &self.spare
    }

    /// Which types depend on which, over every resource and spare resource (see [`TypeEdges`]).
    /// Worked out once per snapshot.
    pub fn dependency_types(&self) -> &TypeEdges {
        self.dependency_types.get_or_init(|| {
            let mut edges = TypeEdges::default();
            let all = self.types.iter().chain(self.spare.types.iter());
            for (t, resources) in all {
                for r in resources.items.values() {
                    for dep in &r.dependencies {
                        edges[t.index()][dep.resource_type.index()] = true;
                    }
                }
            }
            edges
        })
    }

    /// A version over every resource of every type.
    pub fn version(&self) -> String {
        self.version
            .get_or_init(|| {
                let mut parts: Vec<&[u8]> = Vec::new();
                for (t, resources) in &self.types {
                    parts.push(t.short_name().as_bytes());
                    for (name, r) in &resources.items {
                        parts.push(name.as_bytes());
                        parts.push(r.version.as_bytes());
                    }
                }
                content_hash(parts)
            })
            .clone()
    }

    /// Total number of resources.
    pub fn len(&self) -> usize {
        self.types.values().map(TypeResources::len).sum()
    }

    /// Whether the snapshot holds no resource.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The published snapshots of every proxy key, with a generation that grows on each publish.
#[derive(Clone, Debug, Default)]
pub struct Snapshots {
    /// Incremented by every publish.
    pub generation: u64,
    /// Snapshots by proxy key.
    pub by_key: BTreeMap<String, Arc<Snapshot>>,
}

/// The writing half of the cache. There is one; the translator owns it.
#[derive(Debug)]
pub struct SnapshotWriter {
    tx: watch::Sender<Arc<Snapshots>>,
}

/// The reading half of the cache; cheap to clone, one per stream.
#[derive(Clone, Debug)]
pub struct SnapshotCache {
    rx: watch::Receiver<Arc<Snapshots>>,
}

/// Creates an empty cache: the writer and a reader.
pub fn snapshot_cache() -> (SnapshotWriter, SnapshotCache) {
    let (tx, rx) = watch::channel(Arc::new(Snapshots::default()));
    (SnapshotWriter { tx }, SnapshotCache { rx })
}

impl SnapshotWriter {
    /// Replaces the whole set of snapshots. Snapshots equal to the ones already published are
    /// kept as the same `Arc`, so streams of unaffected proxies see no change.
    pub fn publish(&self, snapshots: BTreeMap<String, Snapshot>) {
        self.publish_aliased(snapshots, &BTreeMap::new());
    }

    /// Like [`SnapshotWriter::publish`], and each alias key (a sidecar's pod) serves the
    /// snapshot of its target key (the pod's class): the same `Arc`, so an alias costs a map
    /// entry, and a proxy whose alias moves to another target sees that snapshot next. An alias
    /// whose target is not published is left out.
    pub fn publish_aliased(
        &self,
        snapshots: BTreeMap<String, Snapshot>,
        aliases: &BTreeMap<String, String>,
    ) {
        let current = self.tx.borrow().clone();
        let mut by_key = BTreeMap::new();
        let mut changed = false;
        for (key, snapshot) in snapshots {
            match current.by_key.get(&key) {
                Some(old) if **old == snapshot => {
                    by_key.insert(key, old.clone());
                }
                _ => {
                    changed = true;
                    by_key.insert(key, Arc::new(snapshot));
                }
            }
        }
        for (alias, target) in aliases {
            if let Some(snapshot) = by_key.get(target).cloned() {
                by_key.insert(alias.clone(), snapshot);
            }
        }
        changed |= by_key.len() != current.by_key.len()
            || by_key
                .iter()
                .any(|(k, v)| current.by_key.get(k).is_none_or(|old| !Arc::ptr_eq(old, v)));
        if !changed {
            return;
        }
        self.tx.send_replace(Arc::new(Snapshots {
            generation: current.generation + 1,
            by_key,
        }));
    }

    /// A new reader.
    pub fn cache(&self) -> SnapshotCache {
        SnapshotCache {
            rx: self.tx.subscribe(),
        }
    }
}

impl SnapshotCache {
    /// The current snapshot for a key.
    pub fn get(&self, key: &str) -> Option<Arc<Snapshot>> {
        self.rx.borrow().by_key.get(key).cloned()
    }

    /// The current set of snapshots.
    pub fn current(&self) -> Arc<Snapshots> {
        self.rx.borrow().clone()
    }

    /// Waits until something was published after the last `current`/`changed` seen by this
    /// reader. Returns false when the writer is gone.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }

    /// Marks the current value as seen and returns it.
    pub fn seen(&mut self) -> Arc<Snapshots> {
        self.rx.borrow_and_update().clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Resource;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;

    fn snapshot(cluster: &str) -> Snapshot {
        Snapshot::from_resources(vec![Resource::new(
            cluster,
            &Cluster {
                name: cluster.to_string(),
                ..Default::default()
            },
        )])
    }

    #[test]
    fn an_alias_serves_its_targets_snapshot_and_follows_it_when_it_moves() {
        let (writer, cache) = snapshot_cache();
        let snapshots = || {
            BTreeMap::from([
                ("sidecar/ns/a".to_string(), snapshot("a")),
                ("sidecar/ns/b".to_string(), snapshot("b")),
            ])
        };
        let aliases = |target: &str| {
            BTreeMap::from([
                ("pod/ns/web-1".to_string(), target.to_string()),
                ("pod/ns/gone".to_string(), "sidecar/ns/none".to_string()),
            ])
        };
        writer.publish_aliased(snapshots(), &aliases("sidecar/ns/a"));
        let first = cache.current();
        assert!(Arc::ptr_eq(
            &first.by_key["pod/ns/web-1"],
            &first.by_key["sidecar/ns/a"]
        ));
        assert!(!first.by_key.contains_key("pod/ns/gone"), "no such target");
        // The same again: nothing changes.
        writer.publish_aliased(snapshots(), &aliases("sidecar/ns/a"));
        assert_eq!(cache.current().generation, first.generation);
        // The pod's class changes: a new generation, the alias on the other snapshot.
        writer.publish_aliased(snapshots(), &aliases("sidecar/ns/b"));
        let moved = cache.current();
        assert_eq!(moved.generation, first.generation + 1);
        assert!(Arc::ptr_eq(
            &moved.by_key["pod/ns/web-1"],
            &moved.by_key["sidecar/ns/b"]
        ));
    }
}
