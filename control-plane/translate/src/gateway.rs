//! GatewayClasses and Gateways: which ones Trellis manages, and each Gateway's addresses and
//! validated listeners ([`crate::listener`]), the state routes attach to
//! ([`crate::route`]) before [`crate::assemble`] builds the proxies.

use crate::conditions::{ConditionType, Problem, Reason, condition};
use crate::ir::{ClusterIr, ListenerProtocol, RouteIr, SecretIr};
use crate::{Options, StatusSet};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use trellis_model::core::{Condition, jiff};
use trellis_model::gateway::{GatewayClassStatus, Listener, RouteGroupKind, SupportedFeature};
use trellis_model::{CONTROLLER_NAME, InputSet, ObjectKey};

/// Gateway API features Trellis implements, reported in GatewayClass status (sorted, as the
/// spec asks). The conformance runner runs the tests of exactly these features.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "Gateway",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayPort8080",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendTimeout",
    "HTTPRouteCORS",
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteRetry",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
];

/// Names of the GatewayClasses Trellis accepted, and writes their status.
pub(crate) fn gateway_classes(input: &InputSet, status: &mut StatusSet) -> BTreeSet<String> {
    let mut accepted = BTreeSet::new();
    for (key, class) in &input.gateway_classes {
        if class.spec.controller_name != CONTROLLER_NAME {
            continue;
        }
        let generation = class.metadata.generation;
        let condition = match &class.spec.parameters_ref {
            Some(p) => condition(
                ConditionType::Accepted,
                false,
                Reason::InvalidParameters,
                format!(
                    "parametersRef to {} {}: Trellis GatewayClasses take no parameters",
                    p.kind, p.name
                ),
                generation,
            ),
            None => {
                accepted.insert(key.name.clone());
                condition(
                    ConditionType::Accepted,
                    true,
                    Reason::Accepted,
                    "Handled by Trellis",
                    generation,
                )
            }
        };
        status.gateway_classes.insert(
            key.clone(),
            GatewayClassStatus {
                conditions: vec![condition],
                supported_features: SUPPORTED_FEATURES
                    .iter()
                    .map(|f| SupportedFeature {
                        name: f.to_string(),
                    })
                    .collect(),
            },
        );
    }
    accepted
}

/// A Gateway being translated.
pub(crate) struct GatewayState<'a> {
    pub key: ObjectKey,
    pub generation: Option<i64>,
    /// Addresses to bind; the first is the listeners' address.
    pub addresses: Vec<String>,
    /// Gateway-level conditions decided before routes attach (Accepted).
    pub accepted: Condition,
    /// A problem preventing the Gateway from being programmed at all.
    pub unprogrammable: Option<Problem>,
    pub listeners: Vec<ListenerState<'a>>,
}

/// A listener being translated.
pub(crate) struct ListenerState<'a> {
    pub spec: &'a Listener,
    /// The protocol, when Trellis serves it.
    pub protocol: Option<ListenerProtocol>,
    /// The listener's configuration is acceptable.
    pub accepted: bool,
    /// The listener can be put on the data plane (accepted, no conflict, references resolved).
    pub programmable: bool,
    pub supported_kinds: Vec<RouteGroupKind>,
    pub conditions: Vec<Condition>,
    /// Routes attached (selected by parentRef, allowed by allowedRoutes, Accepted).
    pub attached_routes: BTreeSet<ObjectKey>,
    /// Route entries contributed by attached routes.
    pub contributions: Vec<Contribution>,
    /// Certificates of an HTTPS listener.
    pub certificates: Vec<SecretIr>,
}

/// Route entries of one route on one listener, for the hostnames it serves there.
pub(crate) struct Contribution {
    /// Effective hostnames (intersection of route and listener); `None` is any host.
    pub hostnames: Vec<Option<String>>,
    pub entries: Vec<Entry>,
}

/// One route entry with its precedence and the clusters it uses.
#[derive(Clone)]
pub(crate) struct Entry {
    pub route: RouteIr,
    pub precedence: Precedence,
    pub clusters: Vec<ClusterIr>,
}

/// Gateway API match precedence; smaller sorts first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Precedence {
    /// 0 exact, 1 regular expression, 2 prefix.
    pub path_kind: u8,
    /// Negated path length (longer first).
    pub path_len: i64,
    /// 0 with a method match, 1 without.
    pub method: u8,
    /// Negated number of header matches.
    pub headers: i64,
    /// Negated number of query parameter matches.
    pub query_params: i64,
    /// Route creation time (older first).
    pub created: jiff::Timestamp,
    /// Route namespace/name.
    pub route: ObjectKey,
    pub rule: usize,
    pub match_index: usize,
}

/// Collects the Gateways of accepted Trellis classes and validates their listeners.
pub(crate) fn gateways<'a>(
    input: &'a InputSet,
    options: &Options,
    classes: &BTreeSet<String>,
    backends: &crate::backend::Backends<'_>,
) -> BTreeMap<ObjectKey, GatewayState<'a>> {
    let mut out = BTreeMap::new();
    for (key, gateway) in &input.gateways {
        if !classes.contains(&gateway.spec.gateway_class_name) {
            continue;
        }
        let generation = gateway.metadata.generation;
        let mut unprogrammable = None;
        // Addresses: requested IPs, else the assigned one, else every interface.
        let mut addresses = Vec::new();
        for requested in &gateway.spec.addresses {
            let kind = requested.type_.as_deref().unwrap_or("IPAddress");
            match (kind, requested.value.as_deref()) {
                ("IPAddress", Some(v)) if !v.is_empty() => match v.parse::<IpAddr>() {
                    Ok(ip) if addresses.contains(&ip.to_string()) => {}
                    Ok(ip) => addresses.push(ip.to_string()),
                    Err(_) => {
                        unprogrammable = Some(Problem::not_accepted(
                            Reason::UnsupportedAddress,
                            format!("spec.addresses: {v:?} is not an IP address"),
                        ))
                    }
                },
                ("IPAddress", _) => {}
                (other, _) => {
                    unprogrammable = Some(Problem::not_accepted(
                        Reason::UnsupportedAddress,
                        format!("spec.addresses: address type {other} is not supported"),
                    ))
                }
            }
        }
        // Trellis Gateways take no infrastructure parameters: a reference is one that cannot
        // resolve.
        if let Some(p) = gateway
            .spec
            .infrastructure
            .as_ref()
            .and_then(|i| i.parameters_ref.as_ref())
        {
            unprogrammable = Some(Problem::not_accepted(
                Reason::InvalidParameters,
                format!(
                    "spec.infrastructure.parametersRef to {}/{} {}: Trellis Gateways take no parameters",
                    if p.group.is_empty() { "core" } else { &p.group },
                    p.kind,
                    p.name
                ),
            ));
        }
        if addresses.is_empty() {
            addresses.push(
                options
                    .assigned_addresses
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| "0.0.0.0".to_string()),
            );
        }
        let listeners = crate::listener::listeners(input, backends, key, gateway, generation);
        let valid = listeners.iter().filter(|l| l.accepted).count();
        let accepted = match (&unprogrammable, valid) {
            (Some(p), _) => p.to_condition(generation),
            (None, 0) if !listeners.is_empty() => condition(
                ConditionType::Accepted,
                false,
                Reason::ListenersNotValid,
                "No listener is valid",
                generation,
            ),
            (None, n) if n < listeners.len() => condition(
                ConditionType::Accepted,
                true,
                Reason::ListenersNotValid,
                "Some listeners are not valid; see their conditions",
                generation,
            ),
            _ => condition(
                ConditionType::Accepted,
                true,
                Reason::Accepted,
                "Gateway accepted",
                generation,
            ),
        };
        out.insert(
            key.clone(),
            GatewayState {
                key: key.clone(),
                generation,
                addresses,
                accepted,
                unprogrammable,
                listeners,
            },
        );
    }
    out
}
