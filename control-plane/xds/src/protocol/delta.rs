//! Incremental ADS (DeltaAggregatedResources).
//!
//! Per type the stream tracks which names the client subscribed to (or a wildcard), and which
//! version of each resource the client holds. Responses carry only what differs: resources
//! whose version changed, and `removed_resources` for names the client holds that are gone (or
//! that it subscribed to and do not exist). Subscription changes apply from every request;
//! `response_nonce` ACKs or NACKs the response in flight. On reconnect the client's
//! `initial_resource_versions` say what it holds, so unchanged resources are not sent again.

use super::Event;
use super::state::{
    ALL_TYPES, ClientEntry, Pending, RequestChanged, StreamState, SyncStatus, Want, respond_types,
    zip_by_name,
};
use crate::resource::ResourceType;
use crate::snapshot::{Snapshot, TypeMask};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as DeltaResource,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The protocol state of one Delta stream.
#[derive(Debug, Default)]
pub struct DeltaStream {
    state: StreamState,
}

impl DeltaStream {
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
        request: &DeltaDiscoveryRequest,
        limits: &super::StreamLimits,
    ) -> Result<(), super::LimitExceeded> {
        let Some(t) = ResourceType::from_type_url(&request.type_url) else {
            return Ok(());
        };
        super::limits::check_names(
            &self.state,
            limits,
            t,
            request
                .resource_names_subscribe
                .iter()
                .filter(|name| *name != "*"),
            true,
            request.initial_resource_versions.iter(),
        )
    }

    /// Handles a request from the client.
    pub fn on_request(
        &mut self,
        request: &DeltaDiscoveryRequest,
    ) -> (Vec<DeltaDiscoveryResponse>, Vec<Event>) {
        let mut events = Vec::new();
        let Some(t) = ResourceType::from_type_url(&request.type_url) else {
            events.push(Event::UnknownType {
                type_url: request.type_url.clone(),
            });
            return (Vec::new(), events);
        };
        let first = !self.state.types.get(&t).is_some_and(|ts| ts.subscribed);
        if first && !request.initial_resource_versions.is_empty() {
            // A reconnect: the client runs configuration from an earlier stream.
            self.state.reconnect = true;
        }
        // Names subscribed, sharing the snapshot's strings where it has the resource.
        let subscribe: Vec<Arc<str>> = request
            .resource_names_subscribe
            .iter()
            .filter(|name| *name != "*")
            .map(|name| StreamState::intern(self.state.snapshot.as_deref(), t, name))
            .collect();
        // Subscribing to a type at all changes what depends on it.
        let mut changed = RequestChanged {
            held_names: first,
            resources: first,
        };
        let ts = self.state.state(t);
        if first {
            // First request of the type on this stream.
            ts.subscribed = true;
            // An empty first subscription is a wildcard only for the full-state types (LDS, CDS);
            // other types subscribe by name (or with an explicit "*").
            ts.wildcard = t.sotw_full_state() && request.resource_names_subscribe.is_empty();
            for (name, version) in &request.initial_resource_versions {
                let entry = ClientEntry::Reported(version.as_str().into());
                ts.client.insert(Arc::from(name.as_str()), entry);
            }
        }
        if !request.response_nonce.is_empty() {
            let matches = ts
                .pending
                .as_ref()
                .is_some_and(|p| p.nonce == request.response_nonce);
            if matches && let Some(pending) = ts.pending.take() {
                changed.resources = true;
                match &request.error_detail {
                    None => {
                        for (name, r) in &pending.updates {
                            ts.rejected.remove(name);
                            let entry = ClientEntry::Sent(r.clone());
                            changed.held_names |= ts.client.insert(name.clone(), entry).is_none();
                        }
                        for name in &pending.removed {
                            changed.held_names |= ts.client.remove(name).is_some();
                        }
                        ts.acked_once = true;
                        events.push(Event::Acked {
                            resource_type: t,
                            version: pending.version,
                            nonce: pending.nonce,
                        });
                    }
                    Some(status) => {
                        for (name, r) in &pending.updates {
                            ts.rejected.insert(name.clone(), r.version.clone());
                        }
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
        }
        if request
            .resource_names_subscribe
            .iter()
            .any(|name| name == "*")
        {
            ts.wildcard = true;
        }
        ts.names.extend(subscribe);
        for name in &request.resource_names_unsubscribe {
            if name == "*" {
                ts.wildcard = false;
            } else {
                ts.names.remove(name.as_str());
                ts.reported_absent.remove(name.as_str());
            }
        }
        if (first || !request.resource_names_unsubscribe.is_empty()) && ts.forget_unsubscribed() {
            changed.held_names = true;
            changed.resources = true;
        }
        let affected = self.state.affected_by_request(t, changed);
        let responses = self.respond_to(affected, &mut events);
        (responses, events)
    }

    /// Releases what a reconnect held back for lack of information (nothing for Delta, whose
    /// reconnects say what the client holds); kept for symmetry with SotW.
    pub fn on_tick(&mut self) -> (Vec<DeltaDiscoveryResponse>, Vec<Event>) {
        self.state.tick();
        let mut events = Vec::new();
        let responses = self.respond_to(ALL_TYPES, &mut events);
        (responses, events)
    }

    /// Handles a new snapshot for this stream's proxy.
    pub fn on_snapshot(
        &mut self,
        snapshot: Option<Arc<Snapshot>>,
    ) -> (Vec<DeltaDiscoveryResponse>, Vec<Event>) {
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
    ) -> Vec<DeltaDiscoveryResponse> {
        respond_types(evaluate, |t| self.respond_type(t, events))
    }

    fn respond_type(
        &mut self,
        t: ResourceType,
        events: &mut Vec<Event>,
    ) -> Option<DeltaDiscoveryResponse> {
        {
            let ts = self.state.types.get(&t)?;
            if !ts.subscribed || ts.pending.is_some() {
                return None;
            }
        }
        self.state.state(t).settled = false;
        let wants = self.state.wants(t)?;
        let system_version = self
            .state
            .snapshot
            .as_ref()
            .map(|s| s.version())
            .unwrap_or_default();
        // Forget rejections of versions no longer wanted.
        let ts = self.state.state(t);
        if !ts.rejected.is_empty() {
            ts.rejected.retain(|name, version| {
                matches!(wants.get(name), Some(Want::Resource(r)) if r.version == *version)
            });
            if ts.rejected.is_empty() {
                events.push(Event::Recovered { resource_type: t });
            }
        }
        let ts = self.state.types.get(&t)?;
        let mut updates = BTreeMap::new();
        let mut removed: Vec<Arc<str>> = Vec::new();
        for (name, want, held) in zip_by_name(&wants, &ts.client) {
            match want {
                Some(Want::Resource(r)) => {
                    let held = held.map(ClientEntry::version);
                    let rejected = ts.rejected.get(name).map(String::as_str);
                    if held != Some(r.version.as_str()) && rejected != Some(r.version.as_str()) {
                        updates.insert(name.clone(), r.clone());
                    }
                }
                Some(_) => {}
                None => removed.push(name.clone()),
            }
        }
        // Subscribed names that do not exist: say so once, so the client stops waiting.
        // Every name wanted is subscribed; when as many are wanted as subscribed, none is
        // absent.
        let absent: Vec<Arc<str>> = if ts.wildcard || wants.len() >= ts.names.len() {
            Vec::new()
        } else {
            ts.names
                .iter()
                .filter(|n| {
                    !wants.contains_key(*n)
                        && !ts.client.contains_key(*n)
                        && !ts.reported_absent.contains(*n)
                })
                .cloned()
                .collect()
        };
        // A wildcard subscription is answered once even when there is nothing to send: Envoy
        // waits for that first answer (up to its initial fetch timeout, 15 s) before it asks
        // for listeners.
        let first_answer = ts.wildcard && ts.last_nonce.is_empty();
        if updates.is_empty() && removed.is_empty() && absent.is_empty() && !first_answer {
            // Nothing due. When everything wanted is a resource (none kept for routes in use,
            // none held back), the proxy holds exactly it: remember that for the sync status.
            // Other types' responses cannot change this (they matter only for names kept).
            let settled = wants.values().all(|w| matches!(w, Want::Resource(_)));
            self.state.state(t).settled = settled;
            return None;
        }
        let nonce = self.state.next_nonce();
        let ts = self.state.state(t);
        ts.last_nonce = nonce.clone();
        ts.reported_absent.extend(absent.iter().cloned());
        removed.extend(absent);
        removed.sort();
        let bytes = updates.values().map(|r| r.body.value.len()).sum();
        let response = DeltaDiscoveryResponse {
            system_version_info: system_version.clone(),
            resources: updates
                .values()
                .map(|r| DeltaResource {
                    name: r.name.to_string(),
                    version: r.version.clone(),
                    resource: Some(r.body.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: t.type_url(),
            removed_resources: removed.iter().map(|n| n.to_string()).collect(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        events.push(Event::Sent {
            resource_type: t,
            version: system_version.clone(),
            nonce: nonce.clone(),
            resources: updates.keys().map(|n| n.to_string()).collect(),
            removed: removed.iter().map(|n| n.to_string()).collect(),
            bytes,
        });
        ts.pending = Some(Pending {
            nonce,
            version: system_version,
            updates,
            removed,
        });
        Some(response)
    }
}
