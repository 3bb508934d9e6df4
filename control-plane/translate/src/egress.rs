//! ExternalService: destinations outside the mesh declared for the sidecars of a namespace.
//! Each declared port becomes an egress listener on every sidecar class of the namespace
//! (routing by `Host` or SNI to the external service's cluster, with TLS originated where
//! asked), and each ExternalService gets a status with `Accepted` and `ResolvedRefs`.
//!
//! ```text
//!  ExternalService ──check()──► ports (host -> external/<ns>/<name>/<port>) ──► every sidecar
//!     of its namespace: egress listener per port; other hosts: passthrough or blackhole
//! ```
//!
//! A declaration reaches only its own namespace's sidecars, so no tenant can redirect another
//! tenant's traffic. Within a namespace, a host and port declared twice goes to the first
//! ExternalService by name; the second is told so (`Accepted=False`, `Conflicted`), and so is
//! a port declared as HTTP by one and TLS by another.

use crate::conditions::{ConditionType, Problem, Reason, condition};
use crate::hostname::is_dns_name;
use crate::ir::{
    EgressHostIr, EgressListenerIr, EgressProtocol, EndpointIr, ExternalClusterIr, Ir,
    TlsOriginationIr,
};
use crate::status::StatusSet;
use std::collections::BTreeMap;
use trellis_model::egress::{ExternalProtocol, ExternalServiceSpec};
use trellis_model::gateway::ParentReference;
use trellis_model::policy::{PolicyAncestorStatus, PolicyStatus, parse_spec};
use trellis_model::{CONTROLLER_NAME, InputSet, ObjectKey};

fn invalid(field: impl std::fmt::Display, message: impl std::fmt::Display) -> Problem {
    Problem::not_accepted(Reason::Invalid, format!("{field}: {message}"))
}

/// A checked ExternalService: its ports, each with its hosts and cluster.
struct Declared {
    ports: Vec<(u16, EgressProtocol, Vec<String>, ExternalClusterIr)>,
}

fn port_number(value: i64, field: &str) -> Result<u16, Problem> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| invalid(field, format!("{value} is not a port (1–65535)")))
}

/// The PEM CA bundle a ConfigMap holds.
fn ca_bundle(
    input: &InputSet,
    namespace: &str,
    r: &trellis_model::egress::CaCertificateRef,
    field: &str,
) -> Result<String, Problem> {
    if r.kind != "ConfigMap" {
        return Err(invalid(
            format!("{field}.kind"),
            format!("{:?} is not supported (ConfigMap)", r.kind),
        ));
    }
    let key = r.key.as_deref().unwrap_or("ca.crt");
    let unresolved = |message: String| {
        Problem::unresolved(Reason::InvalidCertificateRef, format!("{field}: {message}"))
    };
    let map = input
        .config_maps
        .get(&ObjectKey::new(namespace, &r.name))
        .ok_or_else(|| unresolved(format!("ConfigMap {namespace}/{} does not exist", r.name)))?;
    let pem = map.data.as_ref().and_then(|d| d.get(key)).ok_or_else(|| {
        unresolved(format!(
            "ConfigMap {namespace}/{} has no key {key:?}",
            r.name
        ))
    })?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") || pem.len() > 256 * 1024 {
        return Err(unresolved(format!(
            "ConfigMap {namespace}/{} key {key:?} holds no PEM certificate (at most 256 KiB)",
            r.name
        )));
    }
    Ok(pem.clone())
}

fn check(input: &InputSet, key: &ObjectKey, spec: &serde_json::Value) -> Result<Declared, Problem> {
    let spec: ExternalServiceSpec =
        parse_spec(spec).map_err(|e| Problem::not_accepted(Reason::Invalid, e.to_string()))?;
    if spec.hosts.is_empty() || spec.hosts.len() > 16 {
        return Err(invalid("spec.hosts", "1 to 16 host names"));
    }
    for (i, h) in spec.hosts.iter().enumerate() {
        if !is_dns_name(h) {
            return Err(invalid(
                format!("spec.hosts[{i}]"),
                format!("{h:?} is not a lower-case DNS name"),
            ));
        }
    }
    if spec.ports.is_empty() || spec.ports.len() > 16 {
        return Err(invalid("spec.ports", "1 to 16 ports"));
    }
    if spec.endpoints.len() > 16 {
        return Err(invalid("spec.endpoints", "at most 16 endpoints"));
    }
    for (i, e) in spec.endpoints.iter().enumerate() {
        if e.address.parse::<std::net::IpAddr>().is_err() && !is_dns_name(&e.address) {
            return Err(invalid(
                format!("spec.endpoints[{i}].address"),
                format!("{:?} is neither an IP address nor a DNS name", e.address),
            ));
        }
    }
    let mut ports: Vec<(u16, EgressProtocol, Vec<String>, ExternalClusterIr)> = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        if !is_dns_name(&p.name) || p.name.contains('.') || !names.insert(p.name.clone()) {
            return Err(invalid(
                format!("{field}.name"),
                format!("{:?} is not a unique DNS label", p.name),
            ));
        }
        let port = port_number(p.port, &format!("{field}.port"))?;
        let target = match p.target_port {
            None => port,
            Some(t) => port_number(t, &format!("{field}.targetPort"))?,
        };
        if ports.iter().any(|(n, ..)| *n == port) {
            return Err(invalid(
                format!("{field}.port"),
                format!("{port} is declared twice"),
            ));
        }
        let protocol = match p.protocol {
            ExternalProtocol::Http => EgressProtocol::Http,
            ExternalProtocol::Tls => EgressProtocol::Tls,
        };
        let tls = match (&p.tls, protocol) {
            (None, _) => None,
            (Some(_), EgressProtocol::Tls) => {
                return Err(invalid(
                    format!("{field}.tls"),
                    "TLS origination is for HTTP ports (a TLS port carries the app's own TLS)",
                ));
            }
            (Some(t), EgressProtocol::Http) => {
                let sni = t.sni.clone().unwrap_or_else(|| spec.hosts[0].clone());
                if !is_dns_name(&sni) {
                    return Err(invalid(
                        format!("{field}.tls.sni"),
                        format!("{sni:?} is not a lower-case DNS name"),
                    ));
                }
                let ca_pem = match &t.ca_certificate_ref {
                    None => None,
                    Some(r) => Some(ca_bundle(
                        input,
                        &key.namespace,
                        r,
                        &format!("{field}.tls.caCertificateRef"),
                    )?),
                };
                Some(TlsOriginationIr { sni, ca_pem })
            }
        };
        let addresses: Vec<String> = if spec.endpoints.is_empty() {
            vec![spec.hosts[0].clone()]
        } else {
            spec.endpoints.iter().map(|e| e.address.clone()).collect()
        };
        let cluster = ExternalClusterIr {
            name: format!("external/{}/{}/{}", key.namespace, key.name, p.name),
            endpoints: addresses
                .into_iter()
                .map(|address| EndpointIr {
                    address,
                    port: target,
                    mtls: false,
                })
                .collect(),
            tls,
        };
        ports.push((port, protocol, spec.hosts.clone(), cluster));
    }
    Ok(Declared { ports })
}

/// Every ExternalService: checked, its status reported, and its ports added to the sidecar
/// classes of its namespace.
pub(crate) fn egress(input: &InputSet, ir: &mut Ir, status: &mut StatusSet) {
    // Per namespace: port -> (protocol, host -> cluster), and the clusters.
    type Ports = BTreeMap<u16, (EgressProtocol, BTreeMap<String, String>)>;
    let mut by_namespace: BTreeMap<String, (Ports, BTreeMap<String, ExternalClusterIr>)> =
        BTreeMap::new();
    for (key, object) in &input.external_services {
        let generation = object.metadata.generation;
        let result = check(input, key, &object.spec).and_then(|declared| {
            let (ports, clusters) = by_namespace.entry(key.namespace.clone()).or_default();
            // Conflicts with what earlier ExternalServices of the namespace declared.
            for (port, protocol, hosts, _) in &declared.ports {
                if let Some((other, taken)) = ports.get(port) {
                    if other != protocol {
                        return Err(Problem::not_accepted(
                            Reason::Conflicted,
                            format!(
                                "port {port} is declared with another protocol by another \
                                 ExternalService of namespace {}",
                                key.namespace
                            ),
                        ));
                    }
                    if let Some(host) = hosts.iter().find(|h| taken.contains_key(*h)) {
                        return Err(Problem::not_accepted(
                            Reason::Conflicted,
                            format!(
                                "{host}:{port} is declared by ExternalService {} already",
                                taken[host]
                                    .trim_start_matches("external/")
                                    .rsplit_once('/')
                                    .map(|(svc, _)| svc)
                                    .unwrap_or_default()
                            ),
                        ));
                    }
                }
            }
            for (port, protocol, hosts, cluster) in declared.ports {
                let entry = ports.entry(port).or_insert((protocol, BTreeMap::new()));
                for host in hosts {
                    entry.1.insert(host, cluster.name.clone());
                }
                clusters.insert(cluster.name.clone(), cluster);
            }
            Ok(())
        });
        let (accepted, resolved) = conditions(&result, generation);
        status.external_services.insert(
            key.clone(),
            PolicyStatus {
                ancestors: vec![PolicyAncestorStatus {
                    ancestor_ref: ParentReference {
                        group: String::new(),
                        kind: "Namespace".to_string(),
                        namespace: None,
                        name: key.namespace.clone(),
                        section_name: None,
                        port: None,
                    },
                    controller_name: CONTROLLER_NAME.to_string(),
                    conditions: vec![accepted, resolved],
                }],
            },
        );
    }
    for sidecar in ir.sidecars.values_mut() {
        let Some((ports, clusters)) = by_namespace.get(&sidecar.namespace) else {
            continue;
        };
        sidecar.egress = ports
            .iter()
            .map(|(port, (protocol, hosts))| EgressListenerIr {
                port: *port,
                protocol: *protocol,
                hosts: hosts
                    .iter()
                    .map(|(host, cluster)| EgressHostIr {
                        host: host.clone(),
                        cluster: cluster.clone(),
                    })
                    .collect(),
            })
            .collect();
        sidecar.external_clusters = clusters.clone();
    }
}

/// An ExternalService's `Accepted` and `ResolvedRefs` conditions.
fn conditions(
    result: &Result<(), Problem>,
    generation: Option<i64>,
) -> (
    trellis_model::core::Condition,
    trellis_model::core::Condition,
) {
    match result {
        Ok(()) => (
            condition(
                ConditionType::Accepted,
                true,
                Reason::Accepted,
                "Declared for the sidecars of the namespace",
                generation,
            ),
            condition(
                ConditionType::ResolvedRefs,
                true,
                Reason::ResolvedRefs,
                "References resolved",
                generation,
            ),
        ),
        Err(p) if p.condition == ConditionType::ResolvedRefs => (
            condition(
                ConditionType::Accepted,
                false,
                p.reason,
                format!("{}; not declared", p.message),
                generation,
            ),
            p.to_condition(generation),
        ),
        Err(p) => (
            condition(
                ConditionType::Accepted,
                false,
                p.reason,
                format!("{}; not declared", p.message),
                generation,
            ),
            condition(
                ConditionType::ResolvedRefs,
                true,
                Reason::ResolvedRefs,
                "References resolved",
                generation,
            ),
        ),
    }
}
