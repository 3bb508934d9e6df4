//! Assembly: once routes have attached, each Gateway becomes a proxy's IR (one Envoy listener
//! per port; for HTTP one filter chain with a virtual host per hostname, for HTTPS one chain per
//! listener chosen by SNI, with 421 for misdirected hosts) and gets its status.
//!
//! ```text
//!  GatewayState (listeners with their route contributions)
//!     ──► per port: virtual_hosts() ──► FilterChainIr (HTTP) | https_chains() (HTTPS)
//!     ──► ListenerIr, ProxyIr; Gateway and listener status (Programmed, addresses)
//! ```

use crate::conditions::{ConditionType, Reason, condition};
use crate::gateway::{Entry, GatewayState, ListenerState};
use crate::hostname;
use crate::ir::{
    ActionIr, ClusterIr, FilterChainIr, Ir, ListenerIr, ListenerProtocol, MatchIr, PathMatchIr,
    ProxyIr, RouteIr, RouteOrigin, SecretIr, VirtualHostIr,
};
use crate::{StatusSet, proxy_key};
use std::collections::{BTreeMap, BTreeSet};
use trellis_model::ObjectKey;
use trellis_model::gateway::{GatewayStatus, GatewayStatusAddress, ListenerStatus};

/// Builds each proxy's IR from the attached routes and writes Gateway status.
pub(crate) fn finish(
    gateways: BTreeMap<ObjectKey, GatewayState<'_>>,
    status: &mut StatusSet,
) -> Ir {
    let mut ir = Ir::default();
    for (key, gw) in gateways {
        let proxy = proxy(&key, &gw);
        status.gateways.insert(key.clone(), gateway_status(&gw));
        ir.proxies.insert(proxy_key(&key), proxy);
    }
    ir
}

/// A Gateway's proxy: one Envoy listener per port, from the programmable listeners on it.
fn proxy(key: &ObjectKey, gw: &GatewayState<'_>) -> ProxyIr {
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
        let https = listeners
            .iter()
            .any(|l| l.protocol == Some(ListenerProtocol::Https));
        let chains = if https {
            https_chains(&name, listeners, &hosts, &mut proxy.secrets)
        } else {
            vec![FilterChainIr {
                route_config: name.clone(),
                listener: None,
                protocol: ListenerProtocol::Http,
                server_names: Vec::new(),
                certificates: Vec::new(),
                virtual_hosts: hosts.into_iter().map(|(_, vh)| vh).collect(),
                http_filters: Vec::new(),
                tracing: None,
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
    proxy
}

/// A Gateway's status: Accepted (decided before routes attached), Programmed, listeners with
/// their attached routes, and the bound addresses.
fn gateway_status(gw: &GatewayState<'_>) -> GatewayStatus {
    let programmable_gateway = gw.unprogrammable.is_none();
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
                    ConditionType::Programmed,
                    true,
                    Reason::Programmed,
                    "Listener programmed",
                    generation,
                )
            } else {
                condition(
                    ConditionType::Programmed,
                    false,
                    Reason::Invalid,
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
        Some(p) => condition(
            ConditionType::Programmed,
            false,
            p.reason,
            p.message.clone(),
            generation,
        ),
        None if programmed_listeners == 0 && !gw.listeners.is_empty() => condition(
            ConditionType::Programmed,
            false,
            Reason::Invalid,
            "No listener can be programmed",
            generation,
        ),
        None => condition(
            ConditionType::Programmed,
            true,
            Reason::Programmed,
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
    GatewayStatus {
        addresses,
        conditions: vec![gw.accepted.clone(), programmed],
        listeners: listener_status,
    }
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
                        origin: RouteOrigin::Misdirected {
                            domain: domain.clone(),
                        },
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
                        tracing: None,
                        fault: None,
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
            listener: Some(l.spec.name.clone()),
            protocol: ListenerProtocol::Https,
            server_names: l.spec.hostname.iter().cloned().collect(),
            certificates: l.certificates.iter().map(|c| c.name.clone()).collect(),
            virtual_hosts: own.into_iter().map(|(_, vh)| vh).collect(),
            http_filters: Vec::new(),
            tracing: None,
        });
    }
    chains
}
