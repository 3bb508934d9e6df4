//! State-of-the-world ADS (StreamAggregatedResources).
//!
//! Per type: a request with an empty nonce is a fresh subscription (first request, or a
//! reconnect carrying the version the client already has) and is always answered. A request
//! echoing the last nonce ACKs (no `error_detail`) or NACKs it, and may change the subscribed
//! names. A request echoing an older nonce is stale and ignored. Every response carries the
//! full subscribed set of its type; its version is a hash of that set, so the same content
//! always has the same version, across restarts too.

use super::Event;
use super::state::{
    ALL_TYPES, ClientEntry, Pending, RequestChanged, StreamState, SyncStatus, Want, respond_types,
    set_version,
};
use crate::resource::{Resource, ResourceType};
use crate::snapshot::{Snapshot, TypeMask};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The protocol state of one SotW stream.
#[derive(Debug, Default)]
pub struct SotwStream {
    state: StreamState,
}

impl SotwStream {
    /// Per subscribed type, whether the proxy holds what it should, and the snapshot version
    /// it is fully in sync with (if it is).
    pub fn sync(&self) -> (BTreeMap<ResourceType, SyncStatus>, Option<String>) {
        self.state.sync()
    }

    /// A new stream; `snapshot` is the proxy's current snapshot, `None` if none was published.
    pub fn new(snapshot: Option<Arc<Snapshot>>) -> Self {
        Self {
            state: StreamState::new(snapshot),
        }
    }

    /// A stream that evaluates every type on every event, skipping none: what the skipping
    /// must always agree with.
    #[cfg(test)]
    pub(crate) fn new_evaluating_all(snapshot: Option<Arc<Snapshot>>) -> Self {
        let mut stream = Self::new(snapshot);
        stream.state.evaluate_all = true;
        stream
    }

    /// Checks a request against the stream's bounds before it is handled.
    pub fn check_request(
        &self,
        request: &DiscoveryRequest,
        limits: &super::StreamLimits,
    ) -> Result<(), super::LimitExceeded> {
        let Some(t) = ResourceType::from_type_url(&request.type_url) else {
            return Ok(());
        };
        super::limits::check_names(
            &self.state,
            limits,
            t,
            request.resource_names.iter(),
            false,
            std::iter::empty(),
        )
    }

    /// Handles a request from the client.
    pub fn on_request(
        &mut self,
        request: &DiscoveryRequest,
    ) -> (Vec<DiscoveryResponse>, Vec<Event>) {
        let mut events = Vec::new();
        let Some(t) = ResourceType::from_type_url(&request.type_url) else {
            events.push(Event::UnknownType {
                type_url: request.type_url.clone(),
            });
            return (Vec::new(), events);
        };
        // Held clusters are released below: evaluate every type then.
        let was_holding = self.state.hold_clusters;
        if t != ResourceType::Cluster {
            // The client's other subscriptions arrived: its held clusters are known.
            self.state.hold_clusters = false;
        }
        let first = !self.state.types.get(&t).is_some_and(|ts| ts.subscribed);
        if first && !request.version_info.is_empty() {
            // A reconnect: the client runs configuration from an earlier stream.
            self.state.reconnect = true;
            if t == ResourceType::Cluster {
                self.state.hold_clusters = true;
            }
        }
        // A later request naming nothing of a type that is not full-state (EDS, RDS, SDS)
        // unsubscribes from all of it. Envoy then drops what it held and accepts an empty
        // response silently, without a request: nothing is due, and nothing stays pending.
        let unsubscribed_all = !first && !t.sotw_full_state() && request.resource_names.is_empty();
        let mut changed = RequestChanged::default();
        let snapshot = self.state.snapshot.clone();
        let ts = self.state.state(t);
        let nonce = request.response_nonce.as_str();
        if nonce.is_empty() {
            // A fresh subscription: what depends on the type changes, and whatever was in
            // flight is dropped.
            changed = RequestChanged {
                held_names: true,
                resources: true,
            };
            // Fresh subscription: first request of the type, or a reconnect.
            ts.subscribed = true;
            ts.pending = None;
            ts.force_response = true;
            ts.acked_version = request.version_info.clone();
            ts.rejected_version = None;
        } else if nonce != ts.last_nonce {
            // Stale: answers a response that has since been superseded.
            if !unsubscribed_all {
                return (Vec::new(), events);
            }
        } else if let Some(pending) = ts.pending.take() {
            changed.resources = true;
            match &request.error_detail {
                None => {
                    changed.held_names = !pending.updates.keys().eq(ts.client.keys());
                    ts.client = pending
                        .updates
                        .iter()
                        .map(|(name, r)| {
                            let entry = ClientEntry::Sent(r.clone());
                            (name.clone(), entry)
                        })
                        .collect();
                    ts.acked_version = pending.version.clone();
                    ts.rejected_version = None;
                    ts.acked_once = true;
                    events.push(Event::Acked {
                        resource_type: t,
                        version: pending.version,
                        nonce: pending.nonce,
                    });
                }
                Some(status) => {
                    ts.rejected_version = Some(pending.version.clone());
                    events.push(Event::Nacked {
                        resource_type: t,
                        version: pending.version,
                        nonce: pending.nonce,
                        error: status.message.clone(),
                        resources: pending.updates.keys().map(|n| n.to_string()).collect(),
                    });
                }
            }
        }
        if unsubscribed_all {
            ts.wildcard = false;
            ts.names.clear();
            ts.pending = None;
            ts.client.clear();
            ts.acked_version = set_version(&BTreeMap::new());
            ts.rejected_version = None;
            ts.forget_unsubscribed();
            return (Vec::new(), events);
        }
        // The subscription as of this request, sorted and without repeats.
        let mut names: Vec<&str> = request.resource_names.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        // An empty name list is a wildcard only for the full-state types (LDS, CDS).
        let wildcard = t.sotw_full_state() && (names.is_empty() || names.contains(&"*"));
        let same_names = || names.iter().copied().eq(ts.names.iter().map(|n| &**n));
        if wildcard != ts.wildcard || (!wildcard && !same_names()) {
            ts.wildcard = wildcard;
            ts.names = if wildcard {
                BTreeSet::new()
            } else {
                // Shared with the snapshot's names where it has the resource.
                names
                    .iter()
                    .map(|name| StreamState::intern(snapshot.as_deref(), t, name))
                    .collect()
            };
            // A changed subscription is answered, even when what is left is what the client
            // holds.
            ts.force_response = true;
            if ts.forget_unsubscribed() {
                // The client dropped what it no longer subscribes to: the version it holds is
                // that of what is left (else resubscribing to a dropped name would look like
                // the version it already has, and the name would never be sent).
                ts.acked_version = held_version(&ts.client);
                changed.held_names = true;
                changed.resources = true;
            }
        }
        let affected = if was_holding {
            ALL_TYPES
        } else {
            self.state.affected_by_request(t, changed)
        };
        let responses = self.respond_to(affected, &mut events);
        (responses, events)
    }

    /// Releases what a reconnect held back for lack of information; the server calls it a
    /// moment after the stream opened.
    pub fn on_tick(&mut self) -> (Vec<DiscoveryResponse>, Vec<Event>) {
        self.state.tick();
        let mut events = Vec::new();
        let responses = self.respond_to(ALL_TYPES, &mut events);
        (responses, events)
    }

    /// Handles a new snapshot for this stream's proxy.
    pub fn on_snapshot(
        &mut self,
        snapshot: Option<Arc<Snapshot>>,
    ) -> (Vec<DiscoveryResponse>, Vec<Event>) {
        let evaluate = self.state.replace_snapshot(snapshot);
        let mut events = Vec::new();
        let responses = self.respond_to(evaluate, &mut events);
        (responses, events)
    }

    /// The responses due for the types marked in `evaluate`, in push order.
    fn respond_to(
        &mut self,
        evaluate: TypeMask,
        events: &mut Vec<Event>,
    ) -> Vec<DiscoveryResponse> {
        respond_types(evaluate, |t| self.respond_type(t, events))
    }

    fn respond_type(
        &mut self,
        t: ResourceType,
        events: &mut Vec<Event>,
    ) -> Option<DiscoveryResponse> {
        {
            let ts = self.state.types.get(&t)?;
            if !ts.subscribed || ts.pending.is_some() {
                return None;
            }
            if !t.sotw_full_state() && !ts.wildcard && ts.names.is_empty() {
                // Subscribed to nothing (see `unsubscribed_all`).
                return None;
            }
            if t == ResourceType::Cluster && self.state.hold_clusters {
                return None;
            }
        }
        self.state.state(t).settled = false;
        let wants = self.state.wants(t)?;
        // Everything wanted is a resource (none kept for routes in use, none held back).
        let all_resources = wants.values().all(|w| matches!(w, Want::Resource(_)));
        let ts = self.state.types.get(&t)?;
        // A full-state answer leaving a resource out removes it at the client. A client that
        // came back with configuration from an earlier stream (and has not ACKed on this one)
        // may hold what is held back here: answer once it can be sent.
        let holdings_unknown = !ts.acked_once && !ts.acked_version.is_empty();
        if t.sotw_full_state()
            && holdings_unknown
            && wants.values().any(|w| matches!(w, Want::Hold))
        {
            return None;
        }
        let mut set: BTreeMap<Arc<str>, Arc<Resource>> = BTreeMap::new();
        for (name, want) in wants {
            match want {
                Want::Resource(r) => {
                    set.insert(name, r);
                }
                Want::Keep => {
                    if let Some(r) = ts.client.get(&name).and_then(|e| e.resource().cloned()) {
                        set.insert(name, r);
                    }
                }
                Want::Hold => {}
            }
        }
        let version = set_version(&set);
        if ts.rejected_version.as_ref().is_some_and(|r| *r != version) {
            // The rejected configuration is no longer wanted.
            let in_sync = version == ts.acked_version;
            let ts = self.state.state(t);
            ts.rejected_version = None;
            if in_sync {
                events.push(Event::Recovered { resource_type: t });
            }
        }
        let ts = self.state.types.get(&t)?;
        if !ts.force_response
            && (version == ts.acked_version || ts.rejected_version.as_ref() == Some(&version))
        {
            // Nothing due. When the client ACKed exactly the wanted set, remember it for the
            // sync status.
            let settled = all_resources && version == ts.acked_version && ts.acked_once;
            self.state.state(t).settled = settled;
            return None;
        }
        let nonce = self.state.next_nonce();
        let ts = self.state.state(t);
        ts.force_response = false;
        ts.last_nonce = nonce.clone();
        let bytes = set.values().map(|r| r.body.value.len()).sum();
        let response = DiscoveryResponse {
            version_info: version.clone(),
            resources: set.values().map(|r| r.body.clone()).collect(),
            type_url: t.type_url(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        events.push(Event::Sent {
            resource_type: t,
            version: version.clone(),
            nonce: nonce.clone(),
            resources: set.keys().map(|n| n.to_string()).collect(),
            removed: Vec::new(),
            bytes,
        });
        ts.pending = Some(Pending {
            nonce,
            version,
            updates: set,
            removed: Vec::new(),
        });
        Some(response)
    }
}

/// The SotW version of what the client holds (as [`set_version`] of the same resources).
fn held_version(client: &BTreeMap<Arc<str>, ClientEntry>) -> String {
    crate::resource::named_versions_hash(client.iter().map(|(n, e)| (&**n, e.version())))
}
