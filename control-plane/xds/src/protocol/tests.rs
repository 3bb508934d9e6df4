//! Protocol behaviour, one rule per test, named for what the proxy sees.

use super::*;
use crate::resource::{Dependency, Resource, ResourceType};
use crate::snapshot::Snapshot;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use std::collections::HashMap;
use std::sync::Arc;

fn cluster(name: &str, tag: u32) -> Arc<Resource> {
    Resource::new(
        name,
        &Cluster {
            name: name.into(),
            alt_stat_name: format!("v{tag}"),
            ..Default::default()
        },
    )
}

fn cla(name: &str, tag: u32) -> Arc<Resource> {
    Resource::new(
        name,
        &ClusterLoadAssignment {
            cluster_name: format!("{name}-{tag}"),
            ..Default::default()
        },
    )
}

fn listener(name: &str) -> Arc<Resource> {
    Resource::new(
        name,
        &Listener {
            name: name.into(),
            ..Default::default()
        },
    )
}

/// A route configuration sending traffic to `clusters` (EDS clusters: both the cluster and
/// its endpoints are dependencies).
fn route(name: &str, clusters: &[&str]) -> Arc<Resource> {
    let deps = clusters
        .iter()
        .flat_map(|c| {
            [
                Dependency {
                    resource_type: ResourceType::Cluster,
                    name: c.to_string(),
                },
                Dependency {
                    resource_type: ResourceType::Endpoint,
                    name: c.to_string(),
                },
            ]
        })
        .collect();
    Resource::with_dependencies(
        name,
        &RouteConfiguration {
            name: name.into(),
            virtual_hosts: vec![VirtualHost {
                name: clusters.join(","),
                ..Default::default()
            }],
            ..Default::default()
        },
        deps,
    )
}

fn snap(resources: &[Arc<Resource>]) -> Option<Arc<Snapshot>> {
    Some(Arc::new(Snapshot::from_resources(
        resources.iter().cloned(),
    )))
}

fn req(t: ResourceType, version: &str, nonce: &str, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: t.type_url(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn nack(t: ResourceType, version: &str, nonce: &str, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        error_detail: Some(Status {
            code: 13,
            message: "rejected for the test".into(),
            details: vec![],
        }),
        ..req(t, version, nonce, names)
    }
}

fn names_in(response: &DiscoveryResponse) -> Vec<String> {
    response
        .resources
        .iter()
        .map(|any| {
            use prost::Message;
            match ResourceType::from_type_url(&any.type_url) {
                Some(ResourceType::Cluster) => Cluster::decode(&*any.value).unwrap().name,
                Some(ResourceType::Endpoint) => {
                    let c = ClusterLoadAssignment::decode(&*any.value)
                        .unwrap()
                        .cluster_name;
                    c.rsplit_once('-').unwrap().0.to_string()
                }
                Some(ResourceType::Listener) => Listener::decode(&*any.value).unwrap().name,
                Some(ResourceType::Route) => RouteConfiguration::decode(&*any.value).unwrap().name,
                _ => String::new(),
            }
        })
        .collect()
}

fn only(responses: Vec<DiscoveryResponse>) -> DiscoveryResponse {
    assert_eq!(
        responses.len(),
        1,
        "expected exactly one response: {responses:?}"
    );
    responses.into_iter().next().unwrap()
}

/// ACKs a SotW response.
fn ack(s: &mut SotwStream, r: &DiscoveryResponse, names: &[&str]) -> Vec<DiscoveryResponse> {
    let t = ResourceType::from_type_url(&r.type_url).unwrap();
    s.on_request(&req(t, &r.version_info, &r.nonce, names)).0
}

// ------------------------------------------------------------------------------------ SotW

#[test]
fn sotw_first_request_gets_the_whole_type() {
    let mut s = SotwStream::new(snap(&[cluster("a", 1), cluster("b", 1)]));
    let (responses, events) = s.on_request(&req(ResourceType::Cluster, "", "", &[]));
    let r = only(responses);
    assert_eq!(names_in(&r), ["a", "b"]);
    assert!(!r.version_info.is_empty());
    assert!(matches!(&events[0], Event::Sent { resources, .. } if resources.len() == 2));
}

#[test]
fn sotw_nothing_is_sent_before_the_first_snapshot() {
    let mut s = SotwStream::new(None);
    assert!(
        s.on_request(&req(ResourceType::Cluster, "", "", &[]))
            .0
            .is_empty()
    );
    let r = only(s.on_snapshot(snap(&[cluster("a", 1)])).0);
    assert_eq!(names_in(&r), ["a"]);
}

#[test]
fn sotw_ack_is_recorded_and_nothing_is_resent() {
    let mut s = SotwStream::new(snap(&[cluster("a", 1)]));
    let r = only(s.on_request(&req(ResourceType::Cluster, "", "", &[])).0);
    let (responses, events) =
        s.on_request(&req(ResourceType::Cluster, &r.version_info, &r.nonce, &[]));
    assert!(responses.is_empty());
    assert_eq!(
        events,
        [Event::Acked {
            resource_type: ResourceType::Cluster,
            version: r.version_info.clone(),
            nonce: r.nonce.clone()
        }]
    );
    // The same snapshot again changes nothing.
    assert!(s.on_snapshot(snap(&[cluster("a", 1)])).0.is_empty());
}

#[test]
fn sotw_nack_keeps_the_rejected_version_from_being_resent_until_the_config_changes() {
    let mut s = SotwStream::new(snap(&[cluster("a", 1)]));
    let good = only(s.on_request(&req(ResourceType::Cluster, "", "", &[])).0);
    assert!(ack(&mut s, &good, &[]).is_empty());

    let bad = only(s.on_snapshot(snap(&[cluster("a", 2)])).0);
    let (responses, events) = s.on_request(&nack(
        ResourceType::Cluster,
        &good.version_info,
        &bad.nonce,
        &[],
    ));
    assert!(
        responses.is_empty(),
        "the rejected version must not be resent"
    );
    assert!(matches!(&events[0], Event::Nacked { version, error, .. }
        if *version == bad.version_info && error == "rejected for the test"));
    // Republishing the same (bad) content sends nothing either.
    assert!(s.on_snapshot(snap(&[cluster("a", 2)])).0.is_empty());
    // A corrected config is sent.
    let fixed = only(s.on_snapshot(snap(&[cluster("a", 3)])).0);
    assert_ne!(fixed.version_info, bad.version_info);
}

#[test]
fn sotw_reverting_to_the_accepted_config_after_a_nack_sends_nothing() {
    let mut s = SotwStream::new(snap(&[cluster("a", 1)]));
    let good = only(s.on_request(&req(ResourceType::Cluster, "", "", &[])).0);
    ack(&mut s, &good, &[]);
    let bad = only(s.on_snapshot(snap(&[cluster("a", 2)])).0);
    s.on_request(&nack(
        ResourceType::Cluster,
        &good.version_info,
        &bad.nonce,
        &[],
    ));
    // The client still holds the good version: nothing to send.
    assert!(s.on_snapshot(snap(&[cluster("a", 1)])).0.is_empty());
}

#[test]
fn sotw_update_arriving_while_an_ack_is_pending_is_sent_after_the_ack() {
    let mut s = SotwStream::new(snap(&[cluster("a", 1)]));
    let first = only(s.on_request(&req(ResourceType::Cluster, "", "", &[])).0);
    // Two updates before the ACK: nothing is sent yet.
    assert!(s.on_snapshot(snap(&[cluster("a", 2)])).0.is_empty());
    assert!(s.on_snapshot(snap(&[cluster("a", 3)])).0.is_empty());
    // The ACK releases only the latest state.
    let next = only(ack(&mut s, &first, &[]));
    assert_ne!(next.version_info, first.version_info);
    let latest = SotwStream::new(snap(&[cluster("a", 3)]))
        .on_request(&req(ResourceType::Cluster, "", "", &[]))
        .0;
    assert_eq!(next.version_info, latest[0].version_info);
}

#[test]
fn sotw_stale_nonce_is_ignored() {
    let mut s = SotwStream::new(snap(&[cluster("a", 1)]));
    let first = only(s.on_request(&req(ResourceType::Cluster, "", "", &[])).0);
    ack(&mut s, &first, &[]);
    let second = only(s.on_snapshot(snap(&[cluster("a", 2)])).0);
    // A late request echoing the first nonce neither ACKs nor NACKs the second response.
    let (responses, events) = s.on_request(&nack(ResourceType::Cluster, "", &first.nonce, &[]));
    assert!(responses.is_empty() && events.is_empty());
    let (_, events) = s.on_request(&req(
        ResourceType::Cluster,
        &second.version_info,
        &second.nonce,
        &[],
    ));
    assert!(matches!(events[0], Event::Acked { .. }));
}

#[test]
fn sotw_reconnect_with_empty_nonce_is_a_fresh_subscription_and_is_answered() {
    let snapshot = snap(&[cluster("a", 1)]);
    let mut s = SotwStream::new(snapshot.clone());
    let r = only(s.on_request(&req(ResourceType::Cluster, "", "", &[])).0);
    // A new stream (reconnect) carrying the version the client holds, and no nonce.
    let mut reconnected = SotwStream::new(snapshot);
    let (held, _) = reconnected.on_request(&req(ResourceType::Cluster, &r.version_info, "", &[]));
    assert!(
        held.is_empty(),
        "CDS waits for the other subscriptions of a reconnect"
    );
    let again = only(reconnected.on_tick().0);
    assert_eq!(
        again.version_info, r.version_info,
        "same content, same version"
    );
    assert_eq!(names_in(&again), ["a"]);
}

#[test]
fn sotw_named_subscription_gets_only_the_names_asked_for() {
    let mut s = SotwStream::new(snap(&[cla("a", 1), cla("b", 1), cla("c", 1)]));
    let r = only(
        s.on_request(&req(ResourceType::Endpoint, "", "", &["a", "c"]))
            .0,
    );
    assert_eq!(names_in(&r), ["a", "c"]);
    // Changing the subscription with the ACK sends the new set.
    let r2 = only(ack(&mut s, &r, &["b"]));
    assert_eq!(names_in(&r2), ["b"]);
    // A change to a resource outside the subscription sends nothing.
    ack(&mut s, &r2, &["b"]);
    assert!(
        s.on_snapshot(snap(&[cla("a", 2), cla("b", 1), cla("c", 2)]))
            .0
            .is_empty()
    );
}

#[test]
fn sotw_resubscribing_to_a_name_dropped_earlier_sends_it_again() {
    let mut s = SotwStream::new(snap(&[cla("a", 1), cla("b", 1)]));
    let r = only(
        s.on_request(&req(ResourceType::Endpoint, "", "", &["a", "b"]))
            .0,
    );
    // The client drops "b" with its ACK, then takes it back while a NACK keeps "a" alone.
    let r2 = only(ack(&mut s, &r, &["a"]));
    assert_eq!(names_in(&r2), ["a"]);
    let r3 = only(
        s.on_request(&nack(ResourceType::Endpoint, "", &r2.nonce, &["a", "b"]))
            .0,
    );
    assert_eq!(names_in(&r3), ["a", "b"], "b must be sent again");
}

#[test]
fn sotw_wildcard_subscription_follows_additions_and_removals() {
    let mut s = SotwStream::new(snap(&[listener("l1")]));
    let r = only(s.on_request(&req(ResourceType::Listener, "", "", &[])).0);
    ack(&mut s, &r, &[]);
    let r = only(s.on_snapshot(snap(&[listener("l1"), listener("l2")])).0);
    assert_eq!(names_in(&r), ["l1", "l2"]);
    ack(&mut s, &r, &[]);
    let r = only(s.on_snapshot(snap(&[listener("l2")])).0);
    assert_eq!(names_in(&r), ["l2"]);
}

#[test]
fn sotw_only_the_changed_type_is_resent() {
    let mut s = SotwStream::new(snap(&[cluster("a", 1), listener("l")]));
    let c = only(s.on_request(&req(ResourceType::Cluster, "", "", &[])).0);
    ack(&mut s, &c, &[]);
    let l = only(s.on_request(&req(ResourceType::Listener, "", "", &[])).0);
    ack(&mut s, &l, &[]);
    let responses = s.on_snapshot(snap(&[cluster("a", 2), listener("l")])).0;
    assert_eq!(only(responses).type_url, ResourceType::Cluster.type_url());
}

/// Brings a stream to: cluster `a` with endpoints ACKed, listener and route `r -> a` ACKed.
fn converged_on_a() -> SotwStream {
    let mut s = SotwStream::new(snap(&[
        cluster("a", 1),
        cla("a", 1),
        listener("l"),
        route("r", &["a"]),
    ]));
    let c = only(s.on_request(&req(ResourceType::Cluster, "", "", &[])).0);
    ack(&mut s, &c, &[]);
    let e = only(s.on_request(&req(ResourceType::Endpoint, "", "", &["a"])).0);
    ack(&mut s, &e, &["a"]);
    let l = only(s.on_request(&req(ResourceType::Listener, "", "", &[])).0);
    ack(&mut s, &l, &[]);
    let r = only(s.on_request(&req(ResourceType::Route, "", "", &["r"])).0);
    assert_eq!(names_in(&r), ["r"]);
    ack(&mut s, &r, &["r"]);
    s
}

#[test]
fn sotw_route_to_a_new_cluster_waits_until_the_cluster_and_its_endpoints_are_acked() {
    let mut s = converged_on_a();
    let next = snap(&[
        cluster("b", 1),
        cla("b", 1),
        listener("l"),
        route("r", &["b"]),
    ]);
    let responses = s.on_snapshot(next).0;
    // Only CDS goes out; it keeps `a` because the route at the proxy still uses it.
    let c = only(responses);
    assert_eq!(names_in(&c), ["a", "b"]);
    // The proxy ACKs CDS: the route still waits for b's endpoints.
    assert!(ack(&mut s, &c, &[]).is_empty());
    // The proxy subscribes to b's endpoints (with its current EDS nonce) and gets them.
    let e = only(
        s.on_request(&req(ResourceType::Endpoint, "", "", &["a", "b"]))
            .0,
    );
    assert_eq!(names_in(&e), ["a", "b"]);
    // Endpoints ACKed: now the route moves to b.
    let r = only(ack(&mut s, &e, &["a", "b"]));
    assert_eq!(r.type_url, ResourceType::Route.type_url());
    // Route ACKed: the cluster nobody uses any more is removed, and so are its endpoints.
    let after = ack(&mut s, &r, &["r"]);
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].type_url, ResourceType::Cluster.type_url());
    assert_eq!(names_in(&after[0]), ["b"]);
    assert_eq!(after[1].type_url, ResourceType::Endpoint.type_url());
    assert_eq!(names_in(&after[1]), ["b"]);
}

#[test]
fn sotw_cluster_still_used_by_the_proxys_route_is_kept_until_the_route_is_replaced() {
    let mut s = converged_on_a();
    // `a` disappears and the route now has no backend at all (no dependencies).
    let next = snap(&[listener("l"), route("r", &[])]);
    let responses = s.on_snapshot(next).0;
    // The route is sent first (it needs nothing); CDS is unchanged as `a` is still in use.
    let r = only(responses);
    assert_eq!(r.type_url, ResourceType::Route.type_url());
    let after = ack(&mut s, &r, &["r"]);
    assert_eq!(after.len(), 2, "CDS and EDS drop `a`");
    assert_eq!(after[0].type_url, ResourceType::Cluster.type_url());
    assert!(names_in(&after[0]).is_empty());
    assert!(names_in(&after[1]).is_empty());
}

#[test]
fn sotw_request_for_an_unknown_type_is_reported_not_answered() {
    let mut s = SotwStream::new(snap(&[]));
    let (responses, events) = s.on_request(&DiscoveryRequest {
        type_url: "type.googleapis.com/example.Unknown".into(),
        ..Default::default()
    });
    assert!(responses.is_empty());
    assert!(matches!(events[0], Event::UnknownType { .. }));
}

// ----------------------------------------------------------------------------------- Delta

fn dreq(
    t: ResourceType,
    nonce: &str,
    subscribe: &[&str],
    unsubscribe: &[&str],
) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: t.type_url(),
        response_nonce: nonce.into(),
        resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        resource_names_unsubscribe: unsubscribe.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn donly(responses: Vec<DeltaDiscoveryResponse>) -> DeltaDiscoveryResponse {
    assert_eq!(
        responses.len(),
        1,
        "expected exactly one response: {responses:?}"
    );
    responses.into_iter().next().unwrap()
}

fn dnames(r: &DeltaDiscoveryResponse) -> Vec<String> {
    r.resources.iter().map(|r| r.name.clone()).collect()
}

fn dack(s: &mut DeltaStream, r: &DeltaDiscoveryResponse) -> Vec<DeltaDiscoveryResponse> {
    let t = ResourceType::from_type_url(&r.type_url).unwrap();
    s.on_request(&dreq(t, &r.nonce, &[], &[])).0
}

#[test]
fn delta_wildcard_first_request_gets_everything_then_only_changes() {
    let mut s = DeltaStream::new(snap(&[cluster("a", 1), cluster("b", 1)]));
    let r = donly(s.on_request(&dreq(ResourceType::Cluster, "", &[], &[])).0);
    assert_eq!(dnames(&r), ["a", "b"]);
    assert!(dack(&mut s, &r).is_empty());
    let r = donly(
        s.on_snapshot(snap(&[cluster("a", 1), cluster("b", 2), cluster("c", 1)]))
            .0,
    );
    assert_eq!(dnames(&r), ["b", "c"], "unchanged a is not resent");
    assert!(r.removed_resources.is_empty());
    dack(&mut s, &r);
    let r = donly(s.on_snapshot(snap(&[cluster("b", 2), cluster("c", 1)])).0);
    assert!(r.resources.is_empty());
    assert_eq!(r.removed_resources, ["a"]);
}

#[test]
fn delta_wildcard_subscription_to_an_empty_type_is_answered_once() {
    let mut s = DeltaStream::new(snap(&[listener("l")]));
    let r = donly(s.on_request(&dreq(ResourceType::Cluster, "", &[], &[])).0);
    assert!(r.resources.is_empty() && r.removed_resources.is_empty());
    assert!(!r.nonce.is_empty(), "an answer the client can ACK");
    assert!(dack(&mut s, &r).is_empty(), "nothing more to say");
    assert!(s.on_snapshot(snap(&[listener("l")])).0.is_empty());
    let r = donly(s.on_snapshot(snap(&[listener("l"), cluster("a", 1)])).0);
    assert_eq!(dnames(&r), ["a"]);
}

#[test]
fn delta_endpoint_change_resends_only_the_affected_assignment() {
    let mut s = DeltaStream::new(snap(&[cla("a", 1), cla("b", 1), cla("c", 1)]));
    let r = donly(
        s.on_request(&dreq(ResourceType::Endpoint, "", &["a", "b", "c"], &[]))
            .0,
    );
    dack(&mut s, &r);
    let r = donly(
        s.on_snapshot(snap(&[cla("a", 1), cla("b", 2), cla("c", 1)]))
            .0,
    );
    assert_eq!(dnames(&r), ["b"]);
}

#[test]
fn delta_nack_keeps_the_previous_version_and_is_not_resent_until_the_config_changes() {
    let mut s = DeltaStream::new(snap(&[cluster("a", 1)]));
    let r = donly(s.on_request(&dreq(ResourceType::Cluster, "", &[], &[])).0);
    dack(&mut s, &r);
    let bad = donly(s.on_snapshot(snap(&[cluster("a", 2)])).0);
    let mut n = dreq(ResourceType::Cluster, &bad.nonce, &[], &[]);
    n.error_detail = Some(Status {
        code: 13,
        message: "bad cluster".into(),
        details: vec![],
    });
    let (responses, events) = s.on_request(&n);
    assert!(responses.is_empty());
    assert!(
        matches!(&events[0], Event::Nacked { error, resources, .. } if error == "bad cluster" && resources == &["a".to_string()])
    );
    assert!(s.on_snapshot(snap(&[cluster("a", 2)])).0.is_empty());
    let fixed = donly(s.on_snapshot(snap(&[cluster("a", 3)])).0);
    assert_eq!(dnames(&fixed), ["a"]);
}

#[test]
fn delta_reconnect_with_initial_versions_sends_only_what_differs() {
    let snapshot = snap(&[cluster("a", 1), cluster("b", 1)]);
    let mut s = DeltaStream::new(snapshot.clone());
    let r = donly(s.on_request(&dreq(ResourceType::Cluster, "", &[], &[])).0);
    let versions: HashMap<String, String> = r
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    // Reconnect: the client holds a and b at those versions, and a listener now gone.
    let mut reconnected =
        DeltaStream::new(snap(&[cluster("a", 1), cluster("b", 2), listener("l")]));
    let first = DeltaDiscoveryRequest {
        initial_resource_versions: versions,
        ..dreq(ResourceType::Cluster, "", &[], &[])
    };
    let r = donly(reconnected.on_request(&first).0);
    assert_eq!(dnames(&r), ["b"]);
    let l = listener("l");
    let first = DeltaDiscoveryRequest {
        initial_resource_versions: [
            ("l".to_string(), l.version.clone()),
            ("gone".to_string(), "v0".to_string()),
        ]
        .into(),
        ..dreq(ResourceType::Listener, "", &[], &[])
    };
    let r = donly(reconnected.on_request(&first).0);
    assert!(
        r.resources.is_empty(),
        "the unchanged listener is not resent"
    );
    assert_eq!(r.removed_resources, ["gone"]);
}

#[test]
fn delta_subscribing_to_a_missing_name_reports_it_removed_once() {
    let mut s = DeltaStream::new(snap(&[cla("a", 1)]));
    let r = donly(
        s.on_request(&dreq(ResourceType::Endpoint, "", &["a", "nope"], &[]))
            .0,
    );
    assert_eq!(dnames(&r), ["a"]);
    assert_eq!(r.removed_resources, ["nope"]);
    assert!(dack(&mut s, &r).is_empty());
    // When it appears it is sent.
    let r = donly(s.on_snapshot(snap(&[cla("a", 1), cla("nope", 1)])).0);
    assert_eq!(dnames(&r), ["nope"]);
}

#[test]
fn delta_unsubscribe_stops_updates_for_that_name() {
    let mut s = DeltaStream::new(snap(&[cla("a", 1), cla("b", 1)]));
    let r = donly(
        s.on_request(&dreq(ResourceType::Endpoint, "", &["a", "b"], &[]))
            .0,
    );
    let (responses, _) = s.on_request(&dreq(ResourceType::Endpoint, &r.nonce, &[], &["b"]));
    assert!(responses.is_empty());
    assert!(
        s.on_snapshot(snap(&[cla("a", 1), cla("b", 2)]))
            .0
            .is_empty()
    );
}

#[test]
fn delta_update_arriving_while_an_ack_is_pending_is_coalesced() {
    let mut s = DeltaStream::new(snap(&[cla("a", 1), cla("b", 1)]));
    let r = donly(
        s.on_request(&dreq(ResourceType::Endpoint, "", &["a", "b"], &[]))
            .0,
    );
    assert!(
        s.on_snapshot(snap(&[cla("a", 2), cla("b", 1)]))
            .0
            .is_empty()
    );
    assert!(
        s.on_snapshot(snap(&[cla("a", 2), cla("b", 2)]))
            .0
            .is_empty()
    );
    let next = donly(dack(&mut s, &r));
    assert_eq!(dnames(&next), ["a", "b"]);
}

#[test]
fn delta_route_to_a_new_cluster_waits_for_the_cluster_and_endpoints() {
    let mut s = DeltaStream::new(snap(&[
        cluster("a", 1),
        cla("a", 1),
        listener("l"),
        route("r", &["a"]),
    ]));
    let c = donly(s.on_request(&dreq(ResourceType::Cluster, "", &[], &[])).0);
    dack(&mut s, &c);
    let e = donly(
        s.on_request(&dreq(ResourceType::Endpoint, "", &["a"], &[]))
            .0,
    );
    dack(&mut s, &e);
    let l = donly(s.on_request(&dreq(ResourceType::Listener, "", &[], &[])).0);
    dack(&mut s, &l);
    let r = donly(s.on_request(&dreq(ResourceType::Route, "", &["r"], &[])).0);
    dack(&mut s, &r);

    let c = donly(
        s.on_snapshot(snap(&[
            cluster("b", 1),
            cla("b", 1),
            listener("l"),
            route("r", &["b"]),
        ]))
        .0,
    );
    assert_eq!(dnames(&c), ["b"]);
    assert!(
        c.removed_resources.is_empty(),
        "a is still used by the route at the proxy"
    );
    assert!(dack(&mut s, &c).is_empty());
    let e = donly(
        s.on_request(&dreq(ResourceType::Endpoint, "", &["b"], &[]))
            .0,
    );
    assert_eq!(dnames(&e), ["b"]);
    let r = donly(dack(&mut s, &e));
    assert_eq!(r.type_url, ResourceType::Route.type_url());
    let after = dack(&mut s, &r);
    assert_eq!(after.len(), 2, "CDS and EDS drop `a`");
    assert_eq!(after[0].type_url, ResourceType::Cluster.type_url());
    assert_eq!(after[0].removed_resources, ["a"]);
    assert_eq!(after[1].removed_resources, ["a"]);
}

// ------------------------------------------------------------------------------- Reconnect

fn snap_with_spare(resources: &[Arc<Resource>], spare: &[Arc<Resource>]) -> Option<Arc<Snapshot>> {
    let spare = Arc::new(crate::snapshot::Spare::from_resources(
        spare.iter().cloned(),
    ));
    Some(Arc::new(
        Snapshot::from_resources(resources.iter().cloned()).with_spare(spare),
    ))
}

/// After a control-plane restart: route `r` now goes to `b`; `a` is spare (its Service still
/// exists), and a reconnecting proxy may still route to it.
fn route_moved_from_a_to_b() -> Option<Arc<Snapshot>> {
    snap_with_spare(
        &[
            cluster("b", 1),
            cla("b", 1),
            listener("l"),
            route("r", &["b"]),
        ],
        &[cluster("a", 1), cla("a", 1)],
    )
}

#[test]
fn sotw_reconnect_keeps_clusters_the_proxy_holds_until_its_routes_are_replaced() {
    // The control plane restarted; meanwhile the route moved from `a` to `b`. `a` is spare (its
    // Service still exists) and the reconnecting proxy still routes to it.
    let s2 = route_moved_from_a_to_b();
    let mut s = SotwStream::new(s2);
    // CDS waits for the proxy's other subscriptions.
    assert!(
        s.on_request(&req(ResourceType::Cluster, "v-old", "", &[]))
            .0
            .is_empty()
    );
    // EDS names say the proxy holds `a`: CDS keeps it beside `b`, and `a`'s endpoints stay.
    let responses = s
        .on_request(&req(ResourceType::Endpoint, "e-old", "", &["a"]))
        .0;
    assert_eq!(responses.len(), 2);
    assert_eq!(names_in(&responses[0]), ["a", "b"]);
    assert_eq!(names_in(&responses[1]), ["a"]);
    let c = responses[0].clone();
    let e = responses[1].clone();
    ack(&mut s, &c, &[]);
    // The proxy subscribes to b's endpoints too.
    let e2 = only(
        s.on_request(&req(
            ResourceType::Endpoint,
            &e.version_info,
            &e.nonce,
            &["a", "b"],
        ))
        .0,
    );
    assert_eq!(names_in(&e2), ["a", "b"]);
    ack(&mut s, &e2, &["a", "b"]);
    let l = only(
        s.on_request(&req(ResourceType::Listener, "l-old", "", &[]))
            .0,
    );
    ack(&mut s, &l, &[]);
    let r = only(
        s.on_request(&req(ResourceType::Route, "r-old", "", &["r"]))
            .0,
    );
    // Routes ACKed: now `a` can go.
    let after = ack(&mut s, &r, &["r"]);
    assert_eq!(names_in(&after[0]), ["b"]);
}

#[test]
fn sotw_reconnect_acking_an_rds_answer_without_its_route_does_not_make_the_routes_known() {
    // As above, but the proxy asks for its route before the new cluster is ACKed: the route
    // is held back, the fresh request is answered without it, and that answer's ACK says
    // nothing about the route the proxy runs (SotW RDS keeps what a response leaves out).
    let s2 = route_moved_from_a_to_b();
    let mut s = SotwStream::new(s2);
    assert!(
        s.on_request(&req(ResourceType::Cluster, "v-old", "", &[]))
            .0
            .is_empty()
    );
    let responses = s
        .on_request(&req(ResourceType::Endpoint, "e-old", "", &["a"]))
        .0;
    let c = responses[0].clone();
    let l = only(
        s.on_request(&req(ResourceType::Listener, "l-old", "", &[]))
            .0,
    );
    ack(&mut s, &l, &[]);
    let empty = only(
        s.on_request(&req(ResourceType::Route, "r-old", "", &["r"]))
            .0,
    );
    assert!(names_in(&empty).is_empty(), "r waits for its cluster");
    ack(&mut s, &empty, &["r"]);
    for response in ack(&mut s, &c, &[]) {
        assert!(
            response.type_url != ResourceType::Cluster.type_url()
                || names_in(&response).contains(&"a".to_string()),
            "`a` is still used by the route the proxy runs: {response:?}"
        );
    }
}

#[test]
fn sotw_reconnect_never_answers_lds_without_a_listener_whose_cluster_is_not_acked_yet() {
    // A listener with a Wasm filter needs the cluster its module is fetched from. After a
    // control-plane restart the proxy holds the listener; an LDS answer leaving it out (its
    // cluster not ACKed on the new stream yet) would remove it, and the port would refuse
    // connections until it came back.
    let wasm = cluster("trellis/wasm", 1);
    let l = Resource::with_dependencies(
        "l",
        &Listener {
            name: "l".into(),
            ..Default::default()
        },
        vec![Dependency {
            resource_type: ResourceType::Cluster,
            name: "trellis/wasm".into(),
        }],
    );
    let mut s = SotwStream::new(snap(&[wasm, l]));
    assert!(
        s.on_request(&req(ResourceType::Cluster, "c-old", "", &[]))
            .0
            .is_empty()
    );
    // LDS arrives: CDS is released and answered, LDS waits for the cluster's ACK.
    let responses = s
        .on_request(&req(ResourceType::Listener, "l-old", "", &[]))
        .0;
    for response in &responses {
        assert!(
            response.type_url != ResourceType::Listener.type_url()
                || !names_in(response).is_empty(),
            "an LDS answer without the listener the proxy holds: {responses:?}"
        );
    }
    let c = responses
        .iter()
        .find(|r| r.type_url == ResourceType::Cluster.type_url())
        .cloned()
        .unwrap();
    let after = ack(&mut s, &c, &[]);
    let l = after
        .iter()
        .find(|r| r.type_url == ResourceType::Listener.type_url())
        .expect("LDS is answered once the cluster is ACKed");
    assert_eq!(names_in(l), ["l"]);
    // A fresh proxy (no version) is answered at once: it holds nothing to lose.
    let wasm = cluster("trellis/wasm", 1);
    let l = Resource::with_dependencies(
        "l",
        &Listener {
            name: "l".into(),
            ..Default::default()
        },
        vec![Dependency {
            resource_type: ResourceType::Cluster,
            name: "trellis/wasm".into(),
        }],
    );
    let mut fresh = SotwStream::new(snap(&[wasm, l]));
    let c = only(fresh.on_request(&req(ResourceType::Cluster, "", "", &[])).0);
    let empty = only(
        fresh
            .on_request(&req(ResourceType::Listener, "", "", &[]))
            .0,
    );
    assert!(names_in(&empty).is_empty());
    let _ = c;
}

#[test]
fn sotw_reconnect_answers_cds_after_the_hold_even_without_other_requests() {
    let mut s = SotwStream::new(snap(&[cluster("a", 1)]));
    assert!(
        s.on_request(&req(ResourceType::Cluster, "v-old", "", &[]))
            .0
            .is_empty()
    );
    let r = only(s.on_tick().0);
    assert_eq!(names_in(&r), ["a"]);
}

#[test]
fn delta_reconnect_keeps_clusters_the_proxy_holds_until_its_routes_are_replaced() {
    let a = cluster("a", 1);
    let s2 = route_moved_from_a_to_b();
    let mut s = DeltaStream::new(s2);
    let first = DeltaDiscoveryRequest {
        initial_resource_versions: [("a".to_string(), a.version.clone())].into(),
        ..dreq(ResourceType::Cluster, "", &[], &[])
    };
    let c = donly(s.on_request(&first).0);
    assert_eq!(dnames(&c), ["b"]);
    assert!(
        c.removed_resources.is_empty(),
        "a is kept while routes are unknown"
    );
    dack(&mut s, &c);
    let e = donly(
        s.on_request(&dreq(ResourceType::Endpoint, "", &["a", "b"], &[]))
            .0,
    );
    assert_eq!(dnames(&e), ["a", "b"]);
    dack(&mut s, &e);
    let l = donly(s.on_request(&dreq(ResourceType::Listener, "", &[], &[])).0);
    dack(&mut s, &l);
    let r = donly(s.on_request(&dreq(ResourceType::Route, "", &["r"], &[])).0);
    let after = dack(&mut s, &r);
    assert_eq!(after[0].removed_resources, ["a"]);
}

#[test]
fn sotw_reverting_after_a_nack_reports_recovery_without_sending() {
    let mut s = SotwStream::new(snap(&[listener("l1")]));
    let good = only(s.on_request(&req(ResourceType::Listener, "", "", &[])).0);
    ack(&mut s, &good, &[]);
    let bad = only(s.on_snapshot(snap(&[listener("l1"), listener("busy")])).0);
    s.on_request(&nack(
        ResourceType::Listener,
        &good.version_info,
        &bad.nonce,
        &[],
    ));
    let (responses, events) = s.on_snapshot(snap(&[listener("l1")]));
    assert!(responses.is_empty());
    assert_eq!(
        events,
        [Event::Recovered {
            resource_type: ResourceType::Listener
        }]
    );
}

#[test]
fn delta_reverting_after_a_nack_reports_recovery_without_sending() {
    let mut s = DeltaStream::new(snap(&[listener("l1")]));
    let good = donly(s.on_request(&dreq(ResourceType::Listener, "", &[], &[])).0);
    dack(&mut s, &good);
    let bad = donly(s.on_snapshot(snap(&[listener("l1"), listener("busy")])).0);
    let mut n = dreq(ResourceType::Listener, &bad.nonce, &[], &[]);
    n.error_detail = Some(Status {
        code: 13,
        message: "cannot bind".into(),
        details: vec![],
    });
    s.on_request(&n);
    let (responses, events) = s.on_snapshot(snap(&[listener("l1")]));
    assert!(responses.is_empty(), "{responses:?}");
    assert_eq!(
        events,
        [Event::Recovered {
            resource_type: ResourceType::Listener
        }]
    );
}

// ------------------------------------------------------------------------------ Sync status

#[test]
fn delta_sync_status_is_synced_only_when_everything_wanted_is_held() {
    let mut s = DeltaStream::new(snap(&[cluster("a", 1), cla("a", 1), route("r", &["a"])]));
    let c = donly(s.on_request(&dreq(ResourceType::Cluster, "", &[], &[])).0);
    let e = donly(
        s.on_request(&dreq(ResourceType::Endpoint, "", &["a"], &[]))
            .0,
    );
    // The route waits for its cluster and endpoints: held back, so RDS is not in sync.
    assert!(
        s.on_request(&dreq(ResourceType::Route, "", &["r"], &[]))
            .0
            .is_empty()
    );
    assert_eq!(s.sync().0[&ResourceType::Cluster], SyncStatus::Stale);
    assert!(dack(&mut s, &c).is_empty());
    assert_eq!(s.sync().0[&ResourceType::Cluster], SyncStatus::Synced);
    assert_eq!(
        s.sync().0[&ResourceType::Route],
        SyncStatus::Stale,
        "held back"
    );
    let r = donly(dack(&mut s, &e));
    assert!(dack(&mut s, &r).is_empty());
    let (status, synced) = s.sync();
    assert!(
        status.values().all(|x| *x == SyncStatus::Synced),
        "{status:?}"
    );
    assert!(synced.is_some());
    // An endpoint change: EDS is behind until ACKed, the rest stays in sync.
    let e = donly(
        s.on_snapshot(snap(&[cluster("a", 1), cla("a", 2), route("r", &["a"])]))
            .0,
    );
    let status = s.sync().0;
    assert_eq!(status[&ResourceType::Endpoint], SyncStatus::Stale);
    assert_eq!(status[&ResourceType::Cluster], SyncStatus::Synced);
    assert!(dack(&mut s, &e).is_empty());
    assert!(s.sync().0.values().all(|x| *x == SyncStatus::Synced));
    // The route stops using the cluster, which goes once the new route is ACKed: until then
    // it is kept (in sync), then its removal is in flight (behind).
    let r = donly(s.on_snapshot(snap(&[cla("a", 2), route("r", &[])])).0);
    assert_eq!(r.type_url, ResourceType::Route.type_url());
    let status = s.sync().0;
    assert_eq!(status[&ResourceType::Route], SyncStatus::Stale);
    assert_eq!(status[&ResourceType::Cluster], SyncStatus::Synced, "kept");
    let removals = dack(&mut s, &r);
    assert!(removals.iter().any(|c| c.removed_resources == ["a"]));
    assert_eq!(s.sync().0[&ResourceType::Cluster], SyncStatus::Stale);
    for removal in removals {
        dack(&mut s, &removal);
    }
    assert!(s.sync().0.values().all(|x| *x == SyncStatus::Synced));
}

/// A listener whose HTTP connection manager loads `routes` over RDS.
fn rds_listener(name: &str, routes: &str) -> Arc<Resource> {
    use envoy_types::pb::envoy::config::core::v3::{ConfigSource, config_source};
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, filter};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, Rds, http_connection_manager::RouteSpecifier,
    };
    use prost::Name;
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            route_config_name: routes.into(),
            config_source: Some(ConfigSource {
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                    Default::default(),
                )),
                ..Default::default()
            }),
        })),
        ..Default::default()
    };
    Resource::new(
        name,
        &Listener {
            name: name.into(),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "hcm".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(
                        envoy_types::pb::google::protobuf::Any {
                            type_url: HttpConnectionManager::type_url(),
                            value: prost::Message::encode_to_vec(&hcm),
                        },
                    )),
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

#[test]
fn sotw_routes_of_a_new_listener_are_not_in_sync_until_the_proxy_asked_for_and_acked_them() {
    let first = snap(&[rds_listener("l1", "r1"), route("r1", &[])]);
    let mut s = SotwStream::new(first);
    let l = only(s.on_request(&req(ResourceType::Listener, "", "", &[])).0);
    let r = only(s.on_request(&req(ResourceType::Route, "", "", &["r1"])).0);
    ack(&mut s, &l, &[]);
    ack(&mut s, &r, &["r1"]);
    assert!(s.sync().0.values().all(|x| *x == SyncStatus::Synced));
    // A second listener with routes of its own: once its listener is ACKed, and before the
    // proxy asks for r2, every name it asked for is held, yet r2 is not: routes are behind.
    let l = only(
        s.on_snapshot(snap(&[
            rds_listener("l1", "r1"),
            rds_listener("l2", "r2"),
            route("r1", &[]),
            route("r2", &[]),
        ]))
        .0,
    );
    ack(&mut s, &l, &[]);
    let status = s.sync().0;
    assert_eq!(status[&ResourceType::Listener], SyncStatus::Synced);
    assert_eq!(status[&ResourceType::Route], SyncStatus::Stale);
    let r = only(
        s.on_request(&req(
            ResourceType::Route,
            &r.version_info,
            &r.nonce,
            &["r1", "r2"],
        ))
        .0,
    );
    assert_eq!(s.sync().0[&ResourceType::Route], SyncStatus::Stale);
    ack(&mut s, &r, &["r1", "r2"]);
    assert!(s.sync().0.values().all(|x| *x == SyncStatus::Synced));
}

#[test]
fn sync_status_follows_acks_nacks_and_pending_responses() {
    let snapshot = snap(&[cluster("a", 1), listener("l")]);
    let mut s = SotwStream::new(snapshot.clone());
    let c = only(s.on_request(&req(ResourceType::Cluster, "", "", &[])).0);
    let (status, synced) = s.sync();
    assert_eq!(
        status[&ResourceType::Cluster],
        SyncStatus::Stale,
        "sent, not ACKed"
    );
    assert_eq!(synced, None);
    ack(&mut s, &c, &[]);
    let l = only(s.on_request(&req(ResourceType::Listener, "", "", &[])).0);
    ack(&mut s, &l, &[]);
    let (status, synced) = s.sync();
    assert!(
        status.values().all(|s| *s == SyncStatus::Synced),
        "{status:?}"
    );
    assert_eq!(synced, Some(snapshot.as_ref().unwrap().version()));
    // A NACKed update.
    let bad = only(s.on_snapshot(snap(&[cluster("a", 2), listener("l")])).0);
    s.on_request(&nack(
        ResourceType::Cluster,
        &c.version_info,
        &bad.nonce,
        &[],
    ));
    let (status, synced) = s.sync();
    assert_eq!(status[&ResourceType::Cluster], SyncStatus::Nacked);
    assert_eq!(synced, None);
}

#[test]
fn sotw_unsubscribing_from_all_endpoints_sends_nothing_and_leaves_the_proxy_in_sync() {
    let mut s = SotwStream::new(snap(&[cluster("a", 1), cla("a", 1), listener("l")]));
    let c = only(s.on_request(&req(ResourceType::Cluster, "", "", &[])).0);
    ack(&mut s, &c, &[]);
    let e = only(s.on_request(&req(ResourceType::Endpoint, "", "", &["a"])).0);
    ack(&mut s, &e, &["a"]);
    let l = only(s.on_request(&req(ResourceType::Listener, "", "", &[])).0);
    ack(&mut s, &l, &[]);
    // The cluster goes away: an empty CDS and an empty EDS response. The proxy drops the
    // cluster and unsubscribes from its endpoints (the request carrying the older EDS nonce,
    // as it crossed the EDS response), then accepts the empty EDS response silently, as Envoy
    // does for a type it no longer watches.
    let (pushed, _) = s.on_snapshot(snap(&[listener("l")]));
    assert_eq!(pushed.len(), 2, "{pushed:?}");
    let (responses, _) = s.on_request(&req(ResourceType::Endpoint, &e.version_info, &e.nonce, &[]));
    assert!(responses.is_empty(), "{responses:?}");
    ack(&mut s, &pushed[0], &[]);
    let (status, synced) = s.sync();
    assert_eq!(status[&ResourceType::Endpoint], SyncStatus::Synced);
    assert!(synced.is_some(), "{status:?}");
    // The cluster comes back: the proxy subscribes again and gets its endpoints.
    let c3 = only(
        s.on_snapshot(snap(&[cluster("a", 1), cla("a", 1), listener("l")]))
            .0,
    );
    ack(&mut s, &c3, &[]);
    let e2 = only(
        s.on_request(&req(
            ResourceType::Endpoint,
            &pushed[1].version_info,
            &pushed[1].nonce,
            &["a"],
        ))
        .0,
    );
    assert_eq!(names_in(&e2), ["a"]);
}

#[test]
fn delta_sync_status_is_synced_once_every_change_is_acked() {
    let snapshot = snap(&[cla("a", 1)]);
    let mut s = DeltaStream::new(snapshot.clone());
    let r = donly(
        s.on_request(&dreq(ResourceType::Endpoint, "", &["a"], &[]))
            .0,
    );
    assert_eq!(s.sync().0[&ResourceType::Endpoint], SyncStatus::Stale);
    dack(&mut s, &r);
    assert_eq!(s.sync().0[&ResourceType::Endpoint], SyncStatus::Synced);
    assert_eq!(s.sync().1, Some(snapshot.as_ref().unwrap().version()));
}

// ---------------------------------------------- skipping types an event cannot change

/// A small deterministic generator for the random walks below.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The configuration a walk mutates one piece at a time: per cluster (present or not) its
/// tag and its endpoints' tag, and the clusters each of two routes sends traffic to.
#[derive(Clone)]
struct WalkConfig {
    clusters: [Option<(u32, u32)>; 5],
    routes: [Vec<usize>; 2],
}

impl WalkConfig {
    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        let names = ["c0", "c1", "c2", "c3", "c4"];
        let mut resources = vec![listener("l0")];
        for (i, c) in self.clusters.iter().enumerate() {
            if let Some((tag, endpoints)) = c {
                resources.push(cluster(names[i], *tag));
                resources.push(cla(names[i], *endpoints));
            }
        }
        for (k, targets) in self.routes.iter().enumerate() {
            let targets: Vec<&str> = targets
                .iter()
                .filter(|i| self.clusters[**i].is_some())
                .map(|i| names[*i])
                .collect();
            resources.push(route(["r0", "r1"][k], &targets));
        }
        snap(&resources)
    }

    /// Changes one thing: mostly endpoints (the common change), sometimes a cluster, a
    /// route's targets, or a cluster's presence.
    fn mutate(&mut self, rng: &mut Lcg) {
        let i = rng.below(5) as usize;
        match rng.below(8) {
            0..=3 => {
                if let Some(c) = &mut self.clusters[i] {
                    c.1 += 1;
                }
            }
            4 => {
                if let Some(c) = &mut self.clusters[i] {
                    c.0 += 1;
                }
            }
            5 => {
                self.clusters[i] = match self.clusters[i] {
                    Some(_) => None,
                    None => Some((0, 0)),
                }
            }
            _ => {
                let k = rng.below(2) as usize;
                self.routes[k] = (0..5).filter(|_| rng.below(2) == 0).collect();
            }
        }
    }
}

fn walk_start() -> WalkConfig {
    WalkConfig {
        clusters: [Some((0, 0)), Some((0, 0)), Some((0, 0)), None, None],
        routes: [vec![0], vec![1, 2]],
    }
}

#[test]
fn delta_skipping_types_an_event_cannot_change_answers_as_evaluating_every_type() {
    for seed in 0..200 {
        let mut rng = Lcg(seed);
        let mut config = walk_start();
        let first = config.snapshot();
        let mut skipping = DeltaStream::new(first.clone());
        let mut full = DeltaStream::new_evaluating_all(first);
        let mut in_flight: Vec<DeltaDiscoveryResponse> = Vec::new();
        let subscriptions = [
            dreq(ResourceType::Cluster, "", &[], &[]),
            dreq(
                ResourceType::Endpoint,
                "",
                &["c0", "c1", "c2", "c3", "c4"],
                &[],
            ),
            dreq(ResourceType::Listener, "", &[], &[]),
            dreq(ResourceType::Route, "", &["r0", "r1"], &[]),
        ];
        for request in &subscriptions {
            let a = skipping.on_request(request);
            assert_eq!(a, full.on_request(request));
            in_flight.extend(a.0);
        }
        for step in 0..60 {
            let (a, b) = match rng.below(3) {
                0 if !in_flight.is_empty() => {
                    let r = in_flight.remove(rng.below(in_flight.len() as u64) as usize);
                    let t = ResourceType::from_type_url(&r.type_url).unwrap();
                    let mut request = dreq(t, &r.nonce, &[], &[]);
                    if rng.below(6) == 0 {
                        request.error_detail = Some(Status {
                            code: 13,
                            message: "rejected for the test".into(),
                            details: vec![],
                        });
                    }
                    (skipping.on_request(&request), full.on_request(&request))
                }
                1 => {
                    // Subscribe to or unsubscribe from one name of endpoints or routes.
                    let (t, name) = match rng.below(7) {
                        5 => (ResourceType::Route, "r0"),
                        6 => (ResourceType::Route, "r1"),
                        i => (
                            ResourceType::Endpoint,
                            ["c0", "c1", "c2", "c3", "c4"][i as usize],
                        ),
                    };
                    let request = if rng.below(2) == 0 {
                        dreq(t, "", &[name], &[])
                    } else {
                        dreq(t, "", &[], &[name])
                    };
                    (skipping.on_request(&request), full.on_request(&request))
                }
                _ => {
                    config.mutate(&mut rng);
                    let next = config.snapshot();
                    (skipping.on_snapshot(next.clone()), full.on_snapshot(next))
                }
            };
            assert_eq!(a, b, "seed {seed}, step {step}");
            assert_eq!(skipping.sync(), full.sync(), "seed {seed}, step {step}");
            in_flight.extend(a.0);
        }
    }
}

#[test]
fn sotw_skipping_types_an_event_cannot_change_answers_as_evaluating_every_type() {
    for seed in 0..200 {
        let mut rng = Lcg(seed);
        let mut config = walk_start();
        let first = config.snapshot();
        let mut skipping = SotwStream::new(first.clone());
        let mut full = SotwStream::new_evaluating_all(first);
        let mut in_flight: Vec<DiscoveryResponse> = Vec::new();
        let endpoints = ["c0", "c1", "c2", "c3", "c4"];
        let names = |t: ResourceType| -> &[&str] {
            match t {
                ResourceType::Endpoint => &endpoints,
                ResourceType::Route => &["r0", "r1"],
                _ => &[],
            }
        };
        for t in [
            ResourceType::Cluster,
            ResourceType::Endpoint,
            ResourceType::Listener,
            ResourceType::Route,
        ] {
            let request = req(t, "", "", names(t));
            let a = skipping.on_request(&request);
            assert_eq!(a, full.on_request(&request));
            in_flight.extend(a.0);
        }
        for step in 0..60 {
            let (a, b) = match rng.below(3) {
                0 if !in_flight.is_empty() => {
                    let r = in_flight.remove(rng.below(in_flight.len() as u64) as usize);
                    let t = ResourceType::from_type_url(&r.type_url).unwrap();
                    // An ACK may change which endpoints the client subscribes to.
                    let subset: Vec<&str> = endpoints
                        .iter()
                        .copied()
                        .filter(|_| rng.below(3) != 0)
                        .collect();
                    let names = if t == ResourceType::Endpoint && rng.below(2) == 0 {
                        &subset[..]
                    } else {
                        names(t)
                    };
                    let request = if rng.below(6) == 0 {
                        nack(t, "", &r.nonce, names)
                    } else {
                        req(t, &r.version_info, &r.nonce, names)
                    };
                    (skipping.on_request(&request), full.on_request(&request))
                }
                _ => {
                    config.mutate(&mut rng);
                    let next = config.snapshot();
                    (skipping.on_snapshot(next.clone()), full.on_snapshot(next))
                }
            };
            assert_eq!(a, b, "seed {seed}, step {step}");
            assert_eq!(skipping.sync(), full.sync(), "seed {seed}, step {step}");
            in_flight.extend(a.0);
        }
    }
}
