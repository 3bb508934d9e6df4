//! Listener validation: each Gateway listener's protocol, port, hostname, route kinds and
//! certificates, then the conflicts between listeners sharing a port.
//!
//! ```text
//!  Gateway.spec.listeners ──► listener(): Accepted, ResolvedRefs (kinds, certificates)
//!                         ──► mark_conflicts(): Conflicted (per port: protocols must agree,
//!                                               hostnames must differ)
//! ```

use crate::backend::{Backends, Referrer};
use crate::conditions::{ConditionType, Problem, Reason, condition};
use crate::gateway::ListenerState;
use crate::hostname;
use crate::ir::{ListenerProtocol, SecretIr};
use std::collections::{BTreeMap, BTreeSet};
use trellis_model::gateway::{GROUP, Gateway, Listener, RouteGroupKind, SecretObjectReference};
use trellis_model::{InputSet, ObjectKey};

/// The protocol of a listener, if Trellis serves it.
fn listener_protocol(protocol: &str) -> Option<ListenerProtocol> {
    match protocol {
        "HTTP" => Some(ListenerProtocol::Http),
        "HTTPS" => Some(ListenerProtocol::Https),
        _ => None,
    }
}

/// Route kinds a listener of this protocol supports by default.
fn default_kinds(protocol: Option<ListenerProtocol>) -> Vec<RouteGroupKind> {
    match protocol {
        Some(ListenerProtocol::Http | ListenerProtocol::Https) => vec![RouteGroupKind {
            group: GROUP.to_string(),
            kind: "HTTPRoute".to_string(),
        }],
        None => Vec::new(),
    }
}

/// Validates a Gateway's listeners, then marks those that conflict on a port.
pub(crate) fn listeners<'a>(
    input: &'a InputSet,
    backends: &Backends<'_>,
    key: &ObjectKey,
    gateway: &'a Gateway,
    generation: Option<i64>,
) -> Vec<ListenerState<'a>> {
    let mut out: Vec<ListenerState<'a>> = gateway
        .spec
        .listeners
        .iter()
        .map(|spec| listener(input, backends, key, spec, generation))
        .collect();
    mark_conflicts(&mut out, generation);
    out
}

/// One listener on its own: protocol, port, hostname, route kinds, certificates.
fn listener<'a>(
    input: &InputSet,
    backends: &Backends<'_>,
    key: &ObjectKey,
    spec: &'a Listener,
    generation: Option<i64>,
) -> ListenerState<'a> {
    let mut problems: Vec<Problem> = Vec::new();
    let protocol = listener_protocol(&spec.protocol);
    if protocol.is_none() {
        problems.push(Problem::not_accepted(
            Reason::UnsupportedProtocol,
            format!("protocol {} is not supported", spec.protocol),
        ));
    }
    if !(1..=65535).contains(&spec.port) {
        problems.push(Problem::not_accepted(
            Reason::UnsupportedValue,
            format!("port {} is out of range", spec.port),
        ));
    }
    if let Some(h) = &spec.hostname
        && let Err(e) = hostname::validate(h)
    {
        problems.push(Problem::not_accepted(Reason::UnsupportedValue, e));
    }
    // Route kinds.
    let defaults = default_kinds(protocol);
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
    let (certificates, ref_problem) = if protocol == Some(ListenerProtocol::Https) {
        https_certificates(input, backends, key, spec, &mut problems)
    } else {
        (Vec::new(), None)
    };
    let accepted = problems.is_empty();
    let mut conditions = vec![match problems.first() {
        None => condition(
            ConditionType::Accepted,
            true,
            Reason::Accepted,
            "Listener accepted",
            generation,
        ),
        Some(p) => p.to_condition(generation),
    }];
    conditions.push(resolved_refs(
        spec,
        ref_problem.as_ref(),
        &invalid_kinds,
        generation,
    ));
    ListenerState {
        spec,
        protocol,
        accepted,
        programmable: accepted && ref_problem.is_none(),
        supported_kinds,
        conditions,
        attached_routes: BTreeSet::new(),
        contributions: Vec::new(),
        certificates,
    }
}

/// An HTTPS listener's certificates, and the first reference that did not resolve.
fn https_certificates(
    input: &InputSet,
    backends: &Backends<'_>,
    key: &ObjectKey,
    spec: &Listener,
    problems: &mut Vec<Problem>,
) -> (Vec<SecretIr>, Option<Problem>) {
    let tls = spec.tls.as_ref();
    if tls
        .and_then(|t| t.mode.as_deref())
        .is_some_and(|m| m != "Terminate")
    {
        problems.push(Problem::not_accepted(
            Reason::UnsupportedValue,
            "HTTPS listeners terminate TLS; tls.mode Passthrough needs protocol TLS",
        ));
    }
    let refs = tls
        .map(|t| t.certificate_refs.as_slice())
        .unwrap_or_default();
    let mut certificates = Vec::new();
    let mut ref_problem = None;
    if refs.is_empty() {
        ref_problem = Some(Problem::unresolved(
            Reason::InvalidCertificateRef,
            "an HTTPS listener needs tls.certificateRefs",
        ));
    }
    for r in refs {
        match resolve_certificate(input, backends, key, r) {
            Ok(secret) => certificates.push(secret),
            Err(problem) => {
                ref_problem.get_or_insert(problem);
            }
        }
    }
    (certificates, ref_problem)
}

/// A listener's ResolvedRefs: its certificates, then its route kinds.
fn resolved_refs(
    spec: &Listener,
    ref_problem: Option<&Problem>,
    invalid_kinds: &[RouteGroupKind],
    generation: Option<i64>,
) -> trellis_model::core::Condition {
    if let Some(p) = ref_problem {
        return p.to_condition(generation);
    }
    if invalid_kinds.is_empty() {
        return condition(
            ConditionType::ResolvedRefs,
            true,
            Reason::ResolvedRefs,
            "All references resolved",
            generation,
        );
    }
    let names: Vec<String> = invalid_kinds
        .iter()
        .map(|k| format!("{}/{}", k.group, k.kind))
        .collect();
    condition(
        ConditionType::ResolvedRefs,
        false,
        Reason::InvalidRouteKinds,
        format!(
            "route kinds not supported on {}: {}",
            spec.protocol,
            names.join(", ")
        ),
        generation,
    )
}

/// Conflicts on a port: protocols must agree, and hostnames must differ. Each listener reports
/// the first other listener (in order) it conflicts with. Listeners are grouped by port and
/// protocol and hostname, so this takes time in proportion to their number, however many.
fn mark_conflicts(out: &mut [ListenerState<'_>], generation: Option<i64>) {
    let mut by_port: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for (i, l) in out.iter().enumerate() {
        by_port.entry(l.spec.port).or_default().push(i);
    }
    let mut conflicts: Vec<Option<Problem>> = vec![None; out.len()];
    for members in by_port.values() {
        // The first listener of each protocol, and of each (protocol, hostname).
        let mut first_of_protocol: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut same_host: BTreeMap<(&str, Option<&str>), Vec<usize>> = BTreeMap::new();
        for &i in members {
            let spec = out[i].spec;
            let protocols = first_of_protocol.entry(spec.protocol.as_str()).or_default();
            if protocols.len() < 2 {
                protocols.push(i);
            }
            let hosts = same_host
                .entry((spec.protocol.as_str(), spec.hostname.as_deref()))
                .or_default();
            if hosts.len() < 2 {
                hosts.push(i);
            }
        }
        for &i in members {
            let spec = out[i].spec;
            let other_protocol = first_of_protocol
                .iter()
                .filter(|(p, _)| **p != spec.protocol)
                .filter_map(|(_, firsts)| firsts.first().copied())
                .min();
            let same_hostname = same_host
                .get(&(spec.protocol.as_str(), spec.hostname.as_deref()))
                .and_then(|firsts| firsts.iter().copied().find(|j| *j != i));
            let first = match (other_protocol, same_hostname) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let Some(j) = first else { continue };
            let b = out[j].spec;
            conflicts[i] = Some(if b.protocol != spec.protocol {
                Problem::conflict(
                    Reason::ProtocolConflict,
                    format!(
                        "listener {} uses port {} with protocol {}",
                        b.name, b.port, b.protocol
                    ),
                )
            } else {
                Problem::conflict(
                    Reason::HostnameConflict,
                    format!(
                        "listener {} uses the same port {} and hostname {}",
                        b.name,
                        b.port,
                        b.hostname.as_deref().unwrap_or("(any)")
                    ),
                )
            });
        }
    }
    for (listener, conflict) in out.iter_mut().zip(conflicts) {
        match conflict {
            Some(p) => {
                listener.programmable = false;
                listener.conditions.push(p.to_condition(generation));
            }
            None => listener.conditions.push(condition(
                ConditionType::Conflicted,
                false,
                Reason::NoConflicts,
                "No conflicts",
                generation,
            )),
        }
    }
}

/// Resolves a listener's certificateRef to a Secret holding a certificate and key.
fn resolve_certificate(
    input: &InputSet,
    backends: &Backends<'_>,
    gateway: &ObjectKey,
    r: &SecretObjectReference,
) -> Result<SecretIr, Problem> {
    let namespace = r
        .namespace
        .clone()
        .unwrap_or_else(|| gateway.namespace.clone());
    let display = format!("{namespace}/{}", r.name);
    if !(r.group.is_empty() || r.group == "core") || r.kind != "Secret" {
        let group = if r.group.is_empty() { "core" } else { &r.group };
        return Err(Problem::unresolved(
            Reason::InvalidCertificateRef,
            format!(
                "certificateRef {display}: {group}/{} is not supported; only core Secrets are",
                r.kind
            ),
        ));
    }
    let referrer = Referrer {
        group: GROUP,
        kind: "Gateway",
        namespace: &gateway.namespace,
        needs_grant: true,
    };
    if !backends.reference_allowed(referrer, "", "Secret", &namespace, &r.name) {
        return Err(Problem::unresolved(
            Reason::RefNotPermitted,
            format!(
                "certificateRef to Secret {display} in another namespace is not permitted by any ReferenceGrant in {namespace}"
            ),
        ));
    }
    let Some(secret) = input
        .secrets
        .get(&ObjectKey::new(namespace.clone(), r.name.clone()))
    else {
        return Err(Problem::unresolved(
            Reason::InvalidCertificateRef,
            format!("Secret {display} not found"),
        ));
    };
    let data = secret.data.clone().unwrap_or_default();
    let field = |k: &str| {
        data.get(k)
            .map(|b| String::from_utf8_lossy(&b.0).to_string())
    };
    let (Some(chain), Some(key)) = (field("tls.crt"), field("tls.key")) else {
        return Err(Problem::unresolved(
            Reason::InvalidCertificateRef,
            format!("Secret {display} needs tls.crt and tls.key"),
        ));
    };
    if let Err(e) = crate::pem::check_certificate_and_key(&chain, &key) {
        return Err(Problem::unresolved(
            Reason::InvalidCertificateRef,
            format!("Secret {display}: {e}"),
        ));
    }
    Ok(SecretIr {
        name: format!("secret/{namespace}/{}", r.name),
        certificate_chain: chain,
        private_key: key,
    })
}
