//! GatewayClasses and Gateways: which ones Trellis manages, listener validation and conflicts,
//! addresses, and — once routes have attached — the per-port virtual hosts of each proxy.

use crate::conditions::{condition, reasons, types};
use crate::hostname;
use crate::ir::{
    ActionIr, ClusterIr, FilterChainIr, Ir, ListenerIr, MatchIr, PathMatchIr, ProxyIr, RouteIr,
    SecretIr, VirtualHostIr,
};
use crate::{Options, StatusSet, proxy_key};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use trellis_model::core::Condition;
use trellis_model::gateway::{
    GROUP, Gateway, GatewayClassStatus, GatewayStatus, GatewayStatusAddress, Listener,
    ListenerStatus, RouteGroupKind, SecretObjectReference, SupportedFeature,
};
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
                types::ACCEPTED,
                false,
                reasons::INVALID_PARAMETERS,
                format!(
                    "parametersRef to {} {}: Trellis GatewayClasses take no parameters",
                    p.kind, p.name
                ),
                generation,
            ),
            None => {
                accepted.insert(key.name.clone());
                condition(
                    types::ACCEPTED,
                    true,
                    reasons::ACCEPTED,
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
    pub unprogrammable: Option<(&'static str, String)>,
    pub listeners: Vec<ListenerState<'a>>,
}

/// A listener being translated.
pub(crate) struct ListenerState<'a> {
    pub spec: &'a Listener,
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
    /// Route creation time (older first), as RFC 3339 text.
    pub created: String,
    /// Route namespace/name.
    pub route: ObjectKey,
    pub rule: usize,
    pub match_index: usize,
}

/// HTTP-family protocols Trellis serves on a listener.
fn listener_protocol_supported(protocol: &str) -> bool {
    matches!(protocol, "HTTP" | "HTTPS")
}

/// Route kinds a listener of this protocol supports by default.
fn default_kinds(protocol: &str) -> Vec<RouteGroupKind> {
    match protocol {
        "HTTP" | "HTTPS" => vec![RouteGroupKind {
            group: GROUP.to_string(),
            kind: "HTTPRoute".to_string(),
        }],
        _ => Vec::new(),
    }
}

/// Collects the Gateways of accepted Trellis classes and validates their listeners.
pub(crate) fn gateways<'a>(
    input: &'a InputSet,
    options: &Options,
    classes: &BTreeSet<String>,
    _status: &mut StatusSet,
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
                        unprogrammable = Some((
                            reasons::UNSUPPORTED_ADDRESS,
                            format!("spec.addresses: {v:?} is not an IP address"),
                        ))
                    }
                },
                ("IPAddress", _) => {}
                (other, _) => {
                    unprogrammable = Some((
                        reasons::UNSUPPORTED_ADDRESS,
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
            unprogrammable = Some((
                reasons::INVALID_PARAMETERS,
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
        let listeners = listeners(input, key, gateway, generation);
        let valid = listeners.iter().filter(|l| l.accepted).count();
        let accepted = match (&unprogrammable, valid) {
            (Some((reason, message)), _) => {
                condition(types::ACCEPTED, false, reason, message.clone(), generation)
            }
            (None, 0) if !listeners.is_empty() => condition(
                types::ACCEPTED,
                false,
                reasons::LISTENERS_NOT_VALID,
                "No listener is valid",
                generation,
            ),
            (None, n) if n < listeners.len() => condition(
                types::ACCEPTED,
                true,
                reasons::LISTENERS_NOT_VALID,
                "Some listeners are not valid; see their conditions",
                generation,
            ),
            _ => condition(
                types::ACCEPTED,
                true,
                reasons::ACCEPTED,
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

/// Validates listeners: protocol, port, hostname, route kinds, and conflicts between them.
fn listeners<'a>(
    input: &'a InputSet,
    key: &ObjectKey,
    gateway: &'a Gateway,
    generation: Option<i64>,
) -> Vec<ListenerState<'a>> {
    let specs = &gateway.spec.listeners;
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let mut problems: Vec<(&'static str, String)> = Vec::new();
        if !listener_protocol_supported(&spec.protocol) {
            problems.push((
                reasons::UNSUPPORTED_PROTOCOL,
                format!("protocol {} is not supported", spec.protocol),
            ));
        }
        if !(1..=65535).contains(&spec.port) {
            problems.push((
                reasons::UNSUPPORTED_VALUE,
                format!("port {} is out of range", spec.port),
            ));
        }
        if let Some(h) = &spec.hostname
            && let Err(e) = hostname::validate(h)
        {
            problems.push((reasons::UNSUPPORTED_VALUE, e));
        }
        // Route kinds.
        let defaults = default_kinds(&spec.protocol);
        let requested = spec
            .allowed_routes
            .as_ref()
            .map(|a| a.kinds.clone())
            .unwrap_or_default();
        let (supported_kinds, invalid_kinds): (Vec<_>, Vec<_>) = if requested.is_empty() {
            (defaults, Vec::new())
        } else {
            requested.into_iter().partition(|k| defaults.contains(k))
        };
        // Certificates of HTTPS listeners.
        let mut certificates = Vec::new();
        let mut ref_problem = None;
        if spec.protocol == "HTTPS" {
            let tls = spec.tls.as_ref();
            if tls
                .and_then(|t| t.mode.as_deref())
                .is_some_and(|m| m != "Terminate")
            {
                problems.push((
                    reasons::UNSUPPORTED_VALUE,
                    "HTTPS listeners terminate TLS; tls.mode Passthrough needs protocol TLS".into(),
                ));
            }
            let refs = tls
                .map(|t| t.certificate_refs.as_slice())
                .unwrap_or_default();
            if refs.is_empty() {
                ref_problem = Some((
                    reasons::INVALID_CERTIFICATE_REF,
                    "an HTTPS listener needs tls.certificateRefs".to_string(),
                ));
            }
            for r in refs {
                match resolve_certificate(input, key, r) {
                    Ok(secret) => certificates.push(secret),
                    Err(problem) => {
                        ref_problem.get_or_insert(problem);
                    }
                }
            }
        }
        let accepted = problems.is_empty();
        let mut conditions = Vec::new();
        match problems.first() {
            None => conditions.push(condition(
                types::ACCEPTED,
                true,
                reasons::ACCEPTED,
                "Listener accepted",
                generation,
            )),
            Some((reason, message)) => conditions.push(condition(
                types::ACCEPTED,
                false,
                reason,
                message.clone(),
                generation,
            )),
        }
        if let Some((reason, message)) = &ref_problem {
            conditions.push(condition(
                types::RESOLVED_REFS,
                false,
                reason,
                message.clone(),
                generation,
            ));
        } else if invalid_kinds.is_empty() {
            conditions.push(condition(
                types::RESOLVED_REFS,
                true,
                reasons::RESOLVED_REFS,
                "All references resolved",
                generation,
            ));
        } else {
            let names: Vec<String> = invalid_kinds
                .iter()
                .map(|k| format!("{}/{}", k.group, k.kind))
                .collect();
            conditions.push(condition(
                types::RESOLVED_REFS,
                false,
                reasons::INVALID_ROUTE_KINDS,
                format!(
                    "route kinds not supported on {}: {}",
                    spec.protocol,
                    names.join(", ")
                ),
                generation,
            ));
        }
        out.push(ListenerState {
            spec,
            accepted,
            programmable: accepted && ref_problem.is_none(),
            supported_kinds,
            conditions,
            attached_routes: BTreeSet::new(),
            contributions: Vec::new(),
            certificates,
        });
    }
    // Conflicts: on one port, protocols must agree and hostnames must differ.
    let mut conflicts: Vec<Option<(&'static str, String)>> = vec![None; out.len()];
    for i in 0..out.len() {
        for j in 0..out.len() {
            if i == j {
                continue;
            }
            let (a, b) = (out[i].spec, out[j].spec);
            if a.port != b.port {
                continue;
            }
            if a.protocol != b.protocol {
                conflicts[i].get_or_insert((
                    reasons::PROTOCOL_CONFLICT,
                    format!(
                        "listener {} uses port {} with protocol {}",
                        b.name, b.port, b.protocol
                    ),
                ));
            } else if a.hostname == b.hostname {
                conflicts[i].get_or_insert((
                    reasons::HOSTNAME_CONFLICT,
                    format!(
                        "listener {} uses the same port {} and hostname {}",
                        b.name,
                        b.port,
                        b.hostname.as_deref().unwrap_or("(any)")
                    ),
                ));
            }
        }
    }
    for (listener, conflict) in out.iter_mut().zip(conflicts) {
        match conflict {
            Some((reason, message)) => {
                listener.programmable = false;
                listener.conditions.push(condition(
                    types::CONFLICTED,
                    true,
                    reason,
                    message,
                    generation,
                ));
            }
            None => listener.conditions.push(condition(
                types::CONFLICTED,
                false,
                reasons::NO_CONFLICTS,
                "No conflicts",
                generation,
            )),
        }
    }
    out
}

/// Builds each proxy's IR from the attached routes and writes Gateway status.
pub(crate) fn finish(
    gateways: BTreeMap<ObjectKey, GatewayState<'_>>,
    status: &mut StatusSet,
) -> Ir {
    let mut ir = Ir::default();
    for (key, gw) in gateways {
        let mut proxy = ProxyIr::default();
        let programmable_gateway = gw.unprogrammable.is_none();
        // Envoy listeners: one per port, from the programmable listeners on it.
        let mut ports: BTreeMap<u16, Vec<&ListenerState<'_>>> = BTreeMap::new();
        if programmable_gateway {
            for l in gw.listeners.iter().filter(|l| l.programmable) {
                if let Ok(port) = u16::try_from(l.spec.port) {
                    ports.entry(port).or_default().push(l);
                }
            }
        }
        for (port, listeners) in &ports {
            let name = format!("gateway/{}/{}/port/{}", key.namespace, key.name, port);
            let hosts = virtual_hosts(listeners, &mut proxy.clusters);
            let https = listeners.iter().any(|l| l.spec.protocol == "HTTPS");
            let chains = if https {
                https_chains(&name, listeners, &hosts, &mut proxy.secrets)
            } else {
                vec![FilterChainIr {
                    route_config: name.clone(),
                    server_names: Vec::new(),
                    certificates: Vec::new(),
                    virtual_hosts: hosts.into_iter().map(|(_, vh)| vh).collect(),
                    http_filters: Vec::new(),
                }]
            };
            proxy.listeners.push(ListenerIr {
                name,
                address: gw.addresses[0].clone(),
                // Every requested address is bound (and so listed in status.addresses).
                additional_addresses: gw.addresses[1..].to_vec(),
                port: *port,
                chains,
            });
        }
        // Status.
        let generation = gw.generation;
        let programmed_listeners = if programmable_gateway {
            gw.listeners.iter().filter(|l| l.programmable).count()
        } else {
            0
        };
        let listener_status = gw
            .listeners
            .iter()
            .map(|l| {
                let mut conditions = l.conditions.clone();
                let programmed = programmable_gateway && l.programmable;
                conditions.push(if programmed {
                    condition(
                        types::PROGRAMMED,
                        true,
                        reasons::PROGRAMMED,
                        "Listener programmed",
                        generation,
                    )
                } else {
                    condition(
                        types::PROGRAMMED,
                        false,
                        reasons::INVALID,
                        "Listener is not valid; see the other conditions",
                        generation,
                    )
                });
                ListenerStatus {
                    name: l.spec.name.clone(),
                    supported_kinds: l.supported_kinds.clone(),
                    attached_routes: l.attached_routes.len() as i32,
                    conditions,
                }
            })
            .collect();
        let programmed = match &gw.unprogrammable {
            Some((reason, message)) => condition(
                types::PROGRAMMED,
                false,
                reason,
                message.clone(),
                generation,
            ),
            None if programmed_listeners == 0 && !gw.listeners.is_empty() => condition(
                types::PROGRAMMED,
                false,
                reasons::INVALID,
                "No listener can be programmed",
                generation,
            ),
            None => condition(
                types::PROGRAMMED,
                true,
                reasons::PROGRAMMED,
                "Gateway programmed",
                generation,
            ),
        };
        let addresses = if programmable_gateway {
            gw.addresses
                .iter()
                .filter(|a| a.as_str() != "0.0.0.0" && a.as_str() != "::")
                .map(|a| GatewayStatusAddress {
                    type_: Some("IPAddress".to_string()),
                    value: a.clone(),
                })
                .collect()
        } else {
            Vec::new()
        };
        status.gateways.insert(
            key.clone(),
            GatewayStatus {
                addresses,
                conditions: vec![gw.accepted.clone(), programmed],
                listeners: listener_status,
            },
        );
        ir.proxies.insert(proxy_key(&key), proxy);
    }
    ir
}

/// The virtual hosts of one port.
///
/// Each listener owns requests whose Host its hostname matches most specifically among the
/// port's listeners (listener isolation). A route's entries land in the virtual host of each
/// hostname it serves, unless a more specific listener owns that hostname. A virtual host also
/// holds, after its own entries, the entries of the same listener's less specific hostnames that
/// cover it, so a request falls through to a wildcard route when no exact-host route matches.
fn virtual_hosts(
    listeners: &[&ListenerState<'_>],
    clusters: &mut BTreeMap<String, ClusterIr>,
) -> Vec<(usize, VirtualHostIr)> {
    let owner = |domain: Option<&str>| -> Option<usize> {
        listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| match (l.spec.hostname.as_deref(), domain) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(h), Some(d)) => hostname::covers(h, d),
            })
            .min_by(|(_, a), (_, b)| {
                hostname::specificity(a.spec.hostname.as_deref(), b.spec.hostname.as_deref())
            })
            .map(|(i, _)| i)
    };
    // domain -> (owner listener, own entries)
    let mut hosts: BTreeMap<Option<String>, (usize, Vec<&Entry>)> = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate() {
        hosts
            .entry(l.spec.hostname.clone())
            .or_insert((i, Vec::new()));
        for contribution in &l.contributions {
            for h in &contribution.hostnames {
                if owner(h.as_deref()) != Some(i) {
                    continue;
                }
                hosts
                    .entry(h.clone())
                    .or_insert((i, Vec::new()))
                    .1
                    .extend(contribution.entries.iter());
            }
        }
    }
    let mut out = Vec::with_capacity(hosts.len());
    for (domain, (owner_index, own)) in &hosts {
        // Own entries first, then those of covering hostnames of the same listener, most
        // specific first.
        let groups: Vec<&Vec<&Entry>> = hostname::covering(domain.as_deref())
            .into_iter()
            .filter_map(|d| hosts.get(&d))
            .filter(|(o, _)| o == owner_index)
            .map(|(_, e)| e)
            .collect();
        let mut routes = Vec::new();
        for entries in std::iter::once(own).chain(groups) {
            let mut sorted: Vec<&Entry> = entries.clone();
            sorted.sort_by(|a, b| a.precedence.cmp(&b.precedence));
            for entry in sorted {
                for c in &entry.clusters {
                    clusters.entry(c.name.clone()).or_insert_with(|| c.clone());
                }
                routes.push(entry.route.clone());
            }
        }
        out.push((
            *owner_index,
            VirtualHostIr {
                domain: domain.clone().unwrap_or_else(|| "*".to_string()),
                listener: listeners[*owner_index].spec.name.clone(),
                routes,
                enabled_filters: Vec::new(),
            },
        ));
    }
    sort_virtual_hosts(&mut out);
    out
}

fn sort_virtual_hosts(hosts: &mut [(usize, VirtualHostIr)]) {
    hosts.sort_by(|(_, a), (_, b)| {
        let key = |d: &str| if d == "*" { None } else { Some(d.to_string()) };
        hostname::specificity(key(&a.domain).as_deref(), key(&b.domain).as_deref())
    });
}

/// The filter chains of an HTTPS port: one per Gateway listener, selected by SNI, each with
/// the virtual hosts that listener owns. A request whose Host belongs to another listener of
/// the port than the one its SNI chose is misdirected and answered with 421.
fn https_chains(
    listener_name: &str,
    listeners: &[&ListenerState<'_>],
    hosts: &[(usize, VirtualHostIr)],
    secrets: &mut BTreeMap<String, SecretIr>,
) -> Vec<FilterChainIr> {
    let mut chains = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        let mut own: Vec<(usize, VirtualHostIr)> =
            hosts.iter().filter(|(o, _)| *o == i).cloned().collect();
        let taken: BTreeSet<String> = own.iter().map(|(_, vh)| vh.domain.clone()).collect();
        let mut misdirected: Vec<String> = listeners
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, other)| other.spec.hostname.clone())
            .collect();
        if l.spec.hostname.is_some() {
            misdirected.push("*".to_string());
        }
        for domain in misdirected {
            if taken.contains(&domain) {
                continue;
            }
            own.push((
                i,
                VirtualHostIr {
                    domain: domain.clone(),
                    listener: l.spec.name.clone(),
                    routes: vec![RouteIr {
                        name: format!("misdirected/{domain}"),
                        matcher: MatchIr {
                            path: PathMatchIr::Prefix("/".to_string()),
                            headers: Vec::new(),
                            query_params: Vec::new(),
                            method: None,
                        },
                        request_headers: Default::default(),
                        response_headers: Default::default(),
                        action: ActionIr::Respond {
                            status: 421,
                            body: "misdirected request: this host is served by another listener"
                                .to_string(),
                        },
                        cors: None,
                        enabled_filters: Vec::new(),
                    }],
                    enabled_filters: Vec::new(),
                },
            ));
        }
        sort_virtual_hosts(&mut own);
        for secret in &l.certificates {
            secrets
                .entry(secret.name.clone())
                .or_insert_with(|| secret.clone());
        }
        chains.push(FilterChainIr {
            route_config: format!("{listener_name}/listener/{}", l.spec.name),
            server_names: l.spec.hostname.iter().cloned().collect(),
            certificates: l.certificates.iter().map(|c| c.name.clone()).collect(),
            virtual_hosts: own.into_iter().map(|(_, vh)| vh).collect(),
            http_filters: Vec::new(),
        });
    }
    chains
}

/// Resolves a listener's certificateRef to a Secret holding a certificate and key.
fn resolve_certificate(
    input: &InputSet,
    gateway: &ObjectKey,
    r: &SecretObjectReference,
) -> Result<SecretIr, (&'static str, String)> {
    let namespace = r
        .namespace
        .clone()
        .unwrap_or_else(|| gateway.namespace.clone());
    let display = format!("{namespace}/{}", r.name);
    if !(r.group.is_empty() || r.group == "core") || r.kind != "Secret" {
        let group = if r.group.is_empty() { "core" } else { &r.group };
        return Err((
            reasons::INVALID_CERTIFICATE_REF,
            format!(
                "certificateRef {display}: {group}/{} is not supported; only core Secrets are",
                r.kind
            ),
        ));
    }
    let backends = crate::backend::Backends::new(input);
    let referrer = crate::backend::Referrer {
        group: GROUP,
        kind: "Gateway",
        namespace: &gateway.namespace,
    };
    if !backends.reference_allowed(referrer, "", "Secret", &namespace, &r.name) {
        return Err((
            reasons::REF_NOT_PERMITTED,
            format!(
                "certificateRef to Secret {display} in another namespace is not permitted by any ReferenceGrant in {namespace}"
            ),
        ));
    }
    let Some(secret) = input
        .secrets
        .get(&ObjectKey::new(namespace.clone(), r.name.clone()))
    else {
        return Err((
            reasons::INVALID_CERTIFICATE_REF,
            format!("Secret {display} not found"),
        ));
    };
    let data = secret.data.clone().unwrap_or_default();
    let field = |k: &str| {
        data.get(k)
            .map(|b| String::from_utf8_lossy(&b.0).to_string())
    };
    let (Some(chain), Some(key)) = (field("tls.crt"), field("tls.key")) else {
        return Err((
            reasons::INVALID_CERTIFICATE_REF,
            format!("Secret {display} needs tls.crt and tls.key"),
        ));
    };
    if let Err(e) = crate::pem::check_certificate_and_key(&chain, &key) {
        return Err((
            reasons::INVALID_CERTIFICATE_REF,
            format!("Secret {display}: {e}"),
        ));
    }
    Ok(SecretIr {
        name: format!("secret/{namespace}/{}", r.name),
        certificate_chain: chain,
        private_key: key,
    })
}
