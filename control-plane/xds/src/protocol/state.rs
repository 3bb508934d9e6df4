//! What both protocol variants track per stream and type: the subscription, what the client
//! holds, the response in flight, and the rules deciding what the client should hold next
//! (subscription scope, dependency gating, retention of clusters still in use).

use crate::resource::{Resource, ResourceType, named_versions_hash};
use crate::snapshot::{Snapshot, TypeEdges, TypeMask};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A resource as the client holds it: the resource this stream sent (its version is the
/// resource's), or only a version (a Delta client's `initial_resource_versions` after a
/// reconnect). Sixteen bytes, nothing copied from the resource.
#[derive(Clone, Debug)]
pub(crate) enum ClientEntry {
    /// Sent on this stream and ACKed.
    Sent(Arc<Resource>),
    /// Reported by the client; the resource behind it is not known.
    Reported(Box<str>),
}

impl ClientEntry {
    /// The version the client holds.
    pub fn version(&self) -> &str {
        match self {
            ClientEntry::Sent(r) => &r.version,
            ClientEntry::Reported(v) => v,
        }
    }

    /// The resource, when this stream sent it.
    pub fn resource(&self) -> Option<&Arc<Resource>> {
        match self {
            ClientEntry::Sent(r) => Some(r),
            ClientEntry::Reported(_) => None,
        }
    }
}

/// A response awaiting ACK or NACK.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    pub nonce: String,
    pub version: String,
    /// Resources sent (SotW: the whole set; Delta: additions and updates).
    pub updates: BTreeMap<Arc<str>, Arc<Resource>>,
    /// Names removed (Delta only).
    pub removed: Vec<Arc<str>>,
}

/// What the client should hold for one name.
#[derive(Clone, Debug)]
pub(crate) enum Want {
    /// This resource.
    Resource(Arc<Resource>),
    /// Whatever the client holds now (gated by dependencies, or retained while in use).
    Keep,
    /// The name is in the snapshot but may not be sent yet and the client has nothing: send
    /// nothing, and do not report it absent.
    Hold,
}

/// Per-type state of one stream.
#[derive(Debug, Default)]
pub(crate) struct TypeState {
    /// The client has requested this type on this stream.
    pub subscribed: bool,
    /// Wildcard subscription (every resource of the type).
    pub wildcard: bool,
    /// Names subscribed explicitly.
    pub names: BTreeSet<Arc<str>>,
    /// What the client holds (last ACKed state).
    pub client: BTreeMap<Arc<str>, ClientEntry>,
    /// The response in flight.
    pub pending: Option<Pending>,
    /// SotW: the last version the client ACKed.
    pub acked_version: String,
    /// SotW: the last version the client NACKed.
    pub rejected_version: Option<String>,
    /// Delta: versions the client NACKed, by name.
    pub rejected: BTreeMap<Arc<str>, String>,
    /// Delta: names reported absent (in `removed_resources`) that the client subscribed to.
    pub reported_absent: BTreeSet<Arc<str>>,
    /// SotW: a fresh request awaits a response even if nothing changed.
    pub force_response: bool,
    /// The nonce of the last response sent for this type.
    pub last_nonce: String,
    /// The client ACKed a response of this type on this stream.
    pub acked_once: bool,
    /// Delta: the last evaluation found the proxy holding exactly what it should, every
    /// wanted resource at its version and nothing else (so [`StreamState::sync_status`] need
    /// not work it out again). Cleared whenever the type is evaluated anew.
    pub settled: bool,
}

impl TypeState {
    /// Whether `name` is within the subscription.
    pub fn in_scope(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Drops client entries that left the subscription (the client forgets unsubscribed
    /// resources on its own). Returns whether any was dropped.
    pub fn forget_unsubscribed(&mut self) -> bool {
        if self.wildcard {
            return false;
        }
        let names = &self.names;
        let held = self.client.len();
        self.client.retain(|name, _| names.contains(name));
        self.reported_absent.retain(|name| names.contains(name));
        self.client.len() != held
    }
}

/// What a request changed of its type's state, beyond the type itself.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RequestChanged {
    /// The names the client holds, or whether the type is subscribed at all.
    pub held_names: bool,
    /// The resources the client holds or has in flight.
    pub resources: bool,
}

/// The per-stream state shared by both variants.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    pub types: BTreeMap<ResourceType, TypeState>,
    /// The snapshot to serve; `None` until the cache published one.
    pub snapshot: Option<Arc<Snapshot>>,
    nonce_counter: u64,
    /// The client came back with configuration from an earlier stream (a reconnect, possibly
    /// to a restarted control plane): until it ACKs routes on this stream, the routes it runs
    /// are unknown, so clusters it holds are kept.
    pub reconnect: bool,
    /// SotW reconnect: the CDS answer waits until the client's other subscriptions (whose
    /// endpoint names say which clusters it holds) arrived, or until [`StreamState::tick`].
    pub hold_clusters: bool,
    /// Which types' resources depend on which, over every snapshot this stream was served
    /// (what the client holds may come from any of them).
    dependency_types: TypeEdges,
    /// Tests: evaluate every type on every event, skipping none (what skipping must agree
    /// with).
    #[cfg(test)]
    pub evaluate_all: bool,
}

impl StreamState {
    /// The state of a new stream; `snapshot` is the proxy's current snapshot, `None` if none
    /// was published.
    pub fn new(snapshot: Option<Arc<Snapshot>>) -> Self {
        let mut state = Self {
            snapshot,
            ..Self::default()
        };
        state.learn_dependency_types();
        state
    }

    pub fn next_nonce(&mut self) -> String {
        self.nonce_counter += 1;
        self.nonce_counter.to_string()
    }

    /// `name` as a shared string: the snapshot's own when it holds a resource of type `t` by
    /// that name (no copy per stream), else a new one.
    pub fn intern(snapshot: Option<&Snapshot>, t: ResourceType, name: &str) -> Arc<str> {
        snapshot
            .and_then(|s| s.resources(t).items().get_key_value(name))
            .map_or_else(|| Arc::from(name), |(k, _)| k.clone())
    }

    pub fn state(&mut self, t: ResourceType) -> &mut TypeState {
        self.types.entry(t).or_default()
    }

    /// Installs a new snapshot and returns the types to evaluate: those whose evaluation it
    /// can change.
    ///
    /// What a type should hold depends on the snapshot's resources of that type and on the
    /// stream's own state (subscriptions, what the client holds of every type). Every event
    /// evaluates each subscribed type without a response in flight, so when only the snapshot
    /// changed and a type's resources in it did not (same names, same versions), evaluating it
    /// again would find what the last evaluation found. Two exceptions are evaluated anyway: a
    /// fresh SotW request still awaiting its answer, and clusters and endpoints while a
    /// reconnected client's routes are unknown (which reads the snapshot's routes and spares).
    pub fn replace_snapshot(&mut self, snapshot: Option<Arc<Snapshot>>) -> TypeMask {
        let previous = std::mem::replace(&mut self.snapshot, snapshot);
        self.learn_dependency_types();
        let mut evaluate = ALL_TYPES;
        let (Some(previous), Some(current)) = (previous.as_ref(), self.snapshot.as_ref()) else {
            return evaluate;
        };
        if self.evaluates_all() {
            return evaluate;
        }
        for t in ResourceType::ALL {
            let unchanged = self
                .types
                .get(&t)
                .is_some_and(|ts| ts.subscribed && !ts.force_response)
                && !(self.reconnect && matches!(t, ResourceType::Cluster | ResourceType::Endpoint))
                && previous.resources(t).version() == current.resources(t).version();
            evaluate[t.index()] = !unchanged;
        }
        evaluate
    }

    /// Whether this stream skips nothing (tests: it then also works out the sync status from
    /// scratch, as the reference the remembered status is checked against).
    fn evaluates_all(&self) -> bool {
        #[cfg(test)]
        if self.evaluate_all {
            return true;
        }
        false
    }

    /// Adds the current snapshot's dependencies between types to those already seen.
    fn learn_dependency_types(&mut self) {
        if let Some(snapshot) = &self.snapshot {
            let edges = snapshot.dependency_types();
            for (seen, new) in self.dependency_types.iter_mut().zip(edges) {
                for (seen, new) in seen.iter_mut().zip(new) {
                    *seen |= *new;
                }
            }
        }
    }

    /// The types a request for type `t` can change the evaluation of: `t` itself; types whose
    /// resources depend on `t`'s, when the names the client holds of `t` changed (whether a
    /// dependency is held decides whether a resource may be sent); and types `t`'s resources
    /// depend on, when `t`'s resources held or in flight changed (they keep those in use).
    /// While a reconnect or a held answer is being resolved, every type.
    ///
    /// A request changes only its own type's state (subscription, what the client holds, the
    /// response in flight); every other type was evaluated against everything else it reads
    /// at the end of an earlier event, and would be evaluated to the same result.
    pub fn affected_by_request(&self, t: ResourceType, changed: RequestChanged) -> TypeMask {
        if self.evaluates_all() || self.reconnect || self.hold_clusters {
            return ALL_TYPES;
        }
        let mut affected = TypeMask::default();
        for u in ResourceType::ALL {
            affected[u.index()] = u == t
                || (changed.held_names && self.dependency_types[u.index()][t.index()])
                || (changed.resources && self.dependency_types[t.index()][u.index()]);
        }
        affected
    }

    /// Releases anything held for lack of information (called a moment after the stream
    /// opened).
    pub fn tick(&mut self) {
        self.hold_clusters = false;
    }

    /// Whether the routes the client runs are unknown: it reconnected and has not ACKed, on
    /// this stream, every route it subscribes to that exists (or listeners, when there are no
    /// routes to serve). An ACKed answer that left a route out says nothing about it: the
    /// client keeps the one it had.
    fn routes_unknown(&self) -> bool {
        if !self.reconnect {
            return false;
        }
        let Some(snapshot) = self.snapshot.as_ref() else {
            return true;
        };
        let routes = snapshot.resources(ResourceType::Route);
        let acked = |t| {
            self.types
                .get(&t)
                .is_some_and(|ts: &TypeState| ts.acked_once)
        };
        let routes_acked = self.types.get(&ResourceType::Route).is_some_and(|ts| {
            ts.acked_once
                && ts
                    .names
                    .iter()
                    .filter(|name| routes.get(name).is_some())
                    .all(|name| ts.client.contains_key(name))
        });
        !(routes_acked || (routes.is_empty() && acked(ResourceType::Listener)))
    }

    /// Whether every dependency of `resource` is held by the client. Dependencies on a type
    /// the client never subscribed to on this stream cannot be checked and are ignored.
    fn dependencies_ready(&self, resource: &Resource) -> bool {
        resource
            .dependencies
            .iter()
            .all(|dep| match self.types.get(&dep.resource_type) {
                Some(ts) if ts.subscribed => ts.client.contains_key(dep.name.as_str()),
                _ => true,
            })
    }

    /// Names of type `t` that resources at the client (held or in flight) depend on.
    fn in_use(&self, t: ResourceType) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for ts in self.types.values() {
            let held = ts.client.values().filter_map(ClientEntry::resource);
            let in_flight = ts.pending.iter().flat_map(|p| p.updates.values());
            for r in held.chain(in_flight) {
                for dep in &r.dependencies {
                    if dep.resource_type == t {
                        names.insert(dep.name.clone());
                    }
                }
            }
        }
        names
    }

    /// What the client should hold for type `t` now, by name. `None` before the first
    /// snapshot.
    pub fn wants(&self, t: ResourceType) -> Option<BTreeMap<Arc<str>, Want>> {
        let snapshot = self.snapshot.as_ref()?;
        let ts = self.types.get(&t)?;
        let available = snapshot.resources(t);
        let candidates: Box<dyn Iterator<Item = (&Arc<str>, &Arc<Resource>)>> = if ts.wildcard {
            Box::new(available.items().iter())
        } else {
            Box::new(
                ts.names
                    .iter()
                    .filter_map(|n| available.get(n).map(|r| (n, r))),
            )
        };
        // Candidates come in name order, so the map is built in one pass, without searching.
        let mut wants: BTreeMap<Arc<str>, Want> = candidates
            .map(|(name, resource)| {
                let want = if self.dependencies_ready(resource) {
                    Want::Resource(resource.clone())
                } else if ts.client.contains_key(name) {
                    Want::Keep
                } else {
                    Want::Hold
                };
                (name.clone(), want)
            })
            .collect();
        // Keep what routes at the client still send traffic to, until they are replaced. Only
        // names the client holds beyond what it should can be such; usually there are none,
        // and the dependencies of everything held need not be walked.
        let beyond: Vec<Arc<str>> = zip_by_name(&wants, &ts.client)
            .filter(|(name, want, held)| want.is_none() && held.is_some() && ts.in_scope(name))
            .map(|(name, _, _)| name.clone())
            .collect();
        if !beyond.is_empty() {
            let in_use = self.in_use(t);
            for name in beyond {
                if in_use.contains(&*name) {
                    wants.insert(name, Want::Keep);
                }
            }
        }
        // After a reconnect, keep every cluster (and its endpoints) the client holds, while its
        // routes are unknown: they may still send traffic there.
        if matches!(t, ResourceType::Cluster | ResourceType::Endpoint) && self.routes_unknown() {
            let eds_names = self
                .types
                .get(&ResourceType::Endpoint)
                .map(|e| e.names.iter().collect::<Vec<_>>())
                .unwrap_or_default();
            let held = ts.client.keys().chain(eds_names);
            for name in held {
                if wants.contains_key(name) || !ts.in_scope(name) {
                    continue;
                }
                let want = match (ts.client.get(name), snapshot.spare().get(t, name)) {
                    (Some(e), _) if e.resource().is_some() => Some(Want::Keep),
                    (_, Some(spare)) => Some(Want::Resource(spare.clone())),
                    (Some(_), None) => Some(Want::Keep),
                    (None, None) => None,
                };
                if let Some(want) = want {
                    wants.insert(name.clone(), want);
                }
            }
        }
        Some(wants)
    }
}

/// How far a proxy is, for one type.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncStatus {
    /// The proxy has not asked for this type (or nothing was published yet).
    NotSent,
    /// The proxy ACKed exactly what it should hold now.
    Synced,
    /// A response is in flight, or what the proxy holds differs from what it should hold.
    Stale,
    /// The proxy rejected the last configuration of this type.
    Nacked,
}

impl StreamState {
    /// Per subscribed type, whether the proxy holds what it should, and the snapshot version
    /// it is fully in sync with (if it is).
    pub fn sync(&self) -> (BTreeMap<ResourceType, SyncStatus>, Option<String>) {
        let status = self.sync_status();
        let version = self.synced_version(&status);
        (status, version)
    }

    /// Per subscribed type: whether the proxy holds what it should.
    fn sync_status(&self) -> BTreeMap<ResourceType, SyncStatus> {
        let mut out = BTreeMap::new();
        for (t, ts) in &self.types {
            if !ts.subscribed {
                continue;
            }
            let status = if ts.rejected_version.is_some() || !ts.rejected.is_empty() {
                SyncStatus::Nacked
            } else if ts.pending.is_some() {
                SyncStatus::Stale
            } else if !self.references_held(*t) {
                // A listener or cluster the client holds waits for this type's resources.
                SyncStatus::Stale
            } else if ts.settled && !self.evaluates_all() {
                SyncStatus::Synced
            } else {
                match self.wants(*t) {
                    None => SyncStatus::NotSent,
                    Some(wants) => {
                        // Everything wanted is held, at the wanted version, and nothing more.
                        let synced =
                            zip_by_name(&wants, &ts.client).all(|(_, want, held)| {
                                match (want, held) {
                                    (Some(Want::Resource(r)), Some(e)) => e.version() == r.version,
                                    (Some(Want::Keep), Some(_)) => true,
                                    _ => false,
                                }
                            });
                        if synced {
                            SyncStatus::Synced
                        } else {
                            SyncStatus::Stale
                        }
                    }
                }
            };
            out.insert(*t, status);
        }
        out
    }

    /// Whether the client holds every resource of type `t` that the resources it holds refer
    /// to ([`Resource::references`]) and the snapshot has: after a new listener is ACKed, its
    /// routes are not in force until the client has asked for and ACKed them too.
    fn references_held(&self, t: ResourceType) -> bool {
        let referring = match t {
            ResourceType::Route => ResourceType::Listener,
            ResourceType::Endpoint => ResourceType::Cluster,
            _ => return true,
        };
        let (Some(ts), Some(by), Some(snapshot)) = (
            self.types.get(&t),
            self.types.get(&referring),
            self.snapshot.as_ref(),
        ) else {
            return true;
        };
        let available = snapshot.resources(t);
        by.client
            .values()
            .filter_map(ClientEntry::resource)
            .flat_map(|r| &r.references)
            .filter(|d| d.resource_type == t)
            .all(|d| ts.client.contains_key(d.name.as_str()) || available.get(&d.name).is_none())
    }

    /// The snapshot version the proxy is in sync with: every subscribed type Synced.
    fn synced_version(&self, status: &BTreeMap<ResourceType, SyncStatus>) -> Option<String> {
        let snapshot = self.snapshot.as_ref()?;
        (!status.is_empty() && status.values().all(|s| *s == SyncStatus::Synced))
            .then(|| snapshot.version())
    }
}

/// Every type: what an event that may change anything evaluates.
pub(crate) const ALL_TYPES: TypeMask = [true; ResourceType::ALL.len()];

/// The responses of the types marked in `evaluate`, in push order, from `respond` (a stream's
/// evaluation of one type).
pub(crate) fn respond_types<R>(
    evaluate: TypeMask,
    mut respond: impl FnMut(ResourceType) -> Option<R>,
) -> Vec<R> {
    ResourceType::ALL
        .into_iter()
        .filter(|t| evaluate[t.index()])
        .filter_map(&mut respond)
        .collect()
}

/// The SotW version of a set of resources: a hash of names and versions.
pub(crate) fn set_version(resources: &BTreeMap<Arc<str>, Arc<Resource>>) -> String {
    named_versions_hash(resources.iter().map(|(n, r)| (&**n, r.version.as_str())))
}

/// Walks two maps keyed by name together, in name order: each name of either map with its
/// entry in each (one comparison per step, instead of a search per name).
pub(crate) fn zip_by_name<'a, K: Ord, A, B>(
    a: &'a BTreeMap<K, A>,
    b: &'a BTreeMap<K, B>,
) -> impl Iterator<Item = (&'a K, Option<&'a A>, Option<&'a B>)> {
    let mut a = a.iter().peekable();
    let mut b = b.iter().peekable();
    std::iter::from_fn(move || {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        match order {
            std::cmp::Ordering::Less => a.next().map(|(k, v)| (k, Some(v), None)),
            std::cmp::Ordering::Greater => b.next().map(|(k, v)| (k, None, Some(v))),
            std::cmp::Ordering::Equal => {
                let (k, va) = a.next()?;
                let vb = b.next().map(|(_, v)| v);
                Some((k, Some(va), vb))
            }
        }
    })
}

#[cfg(test)]
mod zip_tests {
    use super::zip_by_name;
    use std::collections::BTreeMap;

    #[test]
    fn every_name_of_either_map_comes_once_in_order() {
        let a: BTreeMap<String, u8> = [("b".into(), 1), ("d".into(), 2)].into();
        let b: BTreeMap<String, u8> = [("a".into(), 7), ("b".into(), 8), ("e".into(), 9)].into();
        let walked: Vec<_> = zip_by_name(&a, &b)
            .map(|(k, x, y)| (k.as_str(), x.copied(), y.copied()))
            .collect();
        assert_eq!(
            walked,
            [
                ("a", None, Some(7)),
                ("b", Some(1), Some(8)),
                ("d", Some(2), None),
                ("e", None, Some(9)),
            ]
        );
        assert_eq!(
            zip_by_name::<String, u8, u8>(&BTreeMap::new(), &BTreeMap::new()).count(),
            0
        );
    }
}
