//! The mesh: pods of a meshed namespace that run without a sidecar (TRL0103), plaintext sent
//! to pods whose PeerAuthentication is STRICT by Gateways without workload certificates or by
//! clients outside the cluster (TRL0113), and plaintext callers seen by PERMISSIVE pods
//! (TRL0114, online).

use crate::{Code, Finding, ObjectRef, Severity};
use std::collections::{BTreeMap, BTreeSet};
use trellis_model::InputSet;
use trellis_model::mesh::{SIDECAR_ANNOTATION, namespace_in_mesh, pod_in_mesh};
use trellis_model::security::MtlsMode;
use trellis_translate::StatusSet;
use trellis_translate::ir::Ir;

/// TRL0103: a pod opted out of the mesh in a namespace that is in it: its traffic is neither
/// encrypted nor authenticated, and a STRICT PeerAuthentication refuses it as a caller.
pub(crate) fn pods_without_sidecars(input: &InputSet, out: &mut Vec<Finding>) {
    for (key, pod) in &input.pods {
        if !namespace_in_mesh(input, &key.namespace) || pod_in_mesh(input, pod) {
            continue;
        }
        out.push(Finding {
            severity: Severity::Info,
            code: Code::PodWithoutSidecar,
            object: ObjectRef::new("Pod", key),
            field: format!("metadata.annotations[{SIDECAR_ANNOTATION}]"),
            message: format!(
                "namespace {} is in the mesh, but this pod runs without a sidecar: its calls \
                 are plaintext and carry no identity, so servers with STRICT mutual TLS \
                 refuse them",
                key.namespace
            ),
            fix: format!(
                "remove the {SIDECAR_ANNOTATION}: \"false\" annotation (and restart the pod) \
                 unless it must stay out of the mesh"
            ),
        });
    }
}

/// The meshed pods with mutual TLS (and their modes) by IP.
pub(crate) type SidecarsByIp<'a> = BTreeMap<
    &'a str,
    (
        &'a trellis_model::ObjectKey,
        &'a trellis_translate::ir::InboundMtlsIr,
    ),
>;

/// The sidecars of meshed pods with mutual TLS, by IP.
pub(crate) fn sidecars_by_ip(status: &StatusSet) -> SidecarsByIp<'_> {
    let mut by_ip = BTreeMap::new();
    for (pod, sidecar) in &status.sidecars {
        if let Some(mtls) = &sidecar.mtls {
            for ip in &sidecar.ips {
                by_ip.insert(ip.as_str(), (pod, mtls));
            }
        }
    }
    by_ip
}

/// TRL0113: a Service that clients outside the cluster reach directly (type LoadBalancer or
/// NodePort, or external IPs) sends to pod ports whose mode is STRICT: those clients have no
/// mesh certificate, and the pods' sidecars refuse them.
pub(crate) fn strict_behind_external_services(
    input: &InputSet,
    ir: &Ir,
    by_ip: &SidecarsByIp<'_>,
    out: &mut Vec<Finding>,
) {
    for (key, service) in &input.services {
        let Some(spec) = &service.spec else {
            continue;
        };
        let exposed = match spec.type_.as_deref() {
            Some(kind @ ("LoadBalancer" | "NodePort")) => format!("of type {kind}"),
            _ if spec
                .external_ips
                .as_ref()
                .is_some_and(|ips| !ips.is_empty()) =>
            {
                "with external IPs".to_string()
            }
            _ => continue,
        };
        let mut strict = BTreeSet::new();
        let clusters = spec.ports.iter().flatten().filter_map(|p| {
            ir.spare_clusters
                .get(&trellis_translate::backend::cluster_name(key, p.port))
        });
        for cluster in clusters {
            for e in &cluster.endpoints {
                if let Some((pod, mtls)) = by_ip.get(e.address.as_str())
                    && mtls.port_mode(e.port) == MtlsMode::Strict
                {
                    strict.insert((pod.name.clone(), e.port));
                }
            }
        }
        if strict.is_empty() {
            continue;
        }
        let pods: Vec<String> = strict
            .iter()
            .map(|(pod, port)| format!("{pod} port {port}"))
            .collect();
        out.push(Finding {
            severity: Severity::Error,
            code: Code::MtlsMismatch,
            object: ObjectRef::new("Service", key),
            field: "spec.type".to_string(),
            message: format!(
                "it is {exposed}, so clients outside the cluster reach its pods directly, \
                 without a mesh certificate; but its pods' ports ({}) take only mutual TLS \
                 (PeerAuthentication STRICT), so those clients are refused",
                pods.join(", ")
            ),
            fix: "expose it through a Trellis Gateway (which speaks the mesh's mutual TLS), \
                  or make those ports PERMISSIVE (a PeerAuthentication portLevelMtls entry)"
                .to_string(),
        });
    }
}

/// TRL0113: a Gateway's proxies send plaintext to a pod port whose PeerAuthentication mode is
/// STRICT, which refuses it. Gateways originate the mesh's mutual TLS when they hold workload
/// certificates (xDS over mutual TLS); on a plaintext xDS port they do not.
pub(crate) fn strict_behind_gateways(
    input: &InputSet,
    ir: &Ir,
    by_ip: &SidecarsByIp<'_>,
    out: &mut Vec<Finding>,
) {
    for gateway in input.gateways.keys() {
        let Some(p) = ir.proxies.get(&trellis_translate::proxy_key(gateway)) else {
            continue;
        };
        for cluster in p.clusters.values() {
            for e in cluster.endpoints.iter().filter(|e| !e.mtls) {
                let Some((pod, mtls)) = by_ip.get(e.address.as_str()) else {
                    continue;
                };
                if mtls.port_mode(e.port) != MtlsMode::Strict {
                    continue;
                }
                out.push(Finding {
                    severity: Severity::Error,
                    code: Code::MtlsMismatch,
                    object: ObjectRef::new("Gateway", gateway),
                    field: String::new(),
                    message: format!(
                        "its proxies send plaintext to pod {pod} port {} ({}), whose PeerAuthentication \
                         mode is STRICT: the pod's sidecar refuses those requests (the control plane \
                         serves xDS in plaintext, so Gateway proxies hold no workload certificate \
                         and cannot speak the mesh's mutual TLS)",
                        e.port, cluster.name
                    ),
                    fix: format!(
                        "serve xDS over mutual TLS (drop --insecure-xds; Gateway proxies then run \
                         beside trellis agent), or make port {} of pod {pod} PERMISSIVE (a \
                         PeerAuthentication portLevelMtls entry)",
                        e.port
                    ),
                });
            }
        }
    }
}

/// TRL0114: sidecars (by workload identity) accepted plaintext connections on a port whose
/// mutual-TLS mode is PERMISSIVE (`connections`, over the health window, from the sidecars'
/// own stats): those callers would be refused under STRICT.
pub(crate) fn plaintext_callers(
    status: &StatusSet,
    connections: &BTreeMap<(String, Option<u16>), u64>,
    out: &mut Vec<Finding>,
) {
    for ((identity, port), n) in connections {
        if *n == 0 {
            continue;
        }
        let Some((namespace, account)) = identity
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split_once("/ns/"))
            .and_then(|(_, path)| path.split_once("/sa/"))
        else {
            continue;
        };
        let pods: Vec<String> = status
            .sidecars
            .iter()
            .filter(|(_, s)| s.identity.as_deref() == Some(identity.as_str()))
            .filter(|(_, s)| {
                s.mtls.as_ref().is_some_and(|m| {
                    let mode = match port {
                        Some(p) => m.port_mode(*p),
                        None => m.mode,
                    };
                    mode == MtlsMode::Permissive
                })
            })
            .map(|(key, _)| key.name.clone())
            .collect();
        if pods.is_empty() {
            continue;
        }
        let at = match port {
            Some(p) => format!("port {p}"),
            None => "ports without a mode of their own".to_string(),
        };
        let shown: Vec<&str> = pods.iter().take(3).map(String::as_str).collect();
        let more = match pods.len() {
            0..=3 => String::new(),
            n => format!(" and {} more", n - 3),
        };
        out.push(Finding {
            severity: Severity::Info,
            code: Code::PlaintextCallers,
            object: ObjectRef::new(
                "ServiceAccount",
                &trellis_model::ObjectKey::new(namespace, account),
            ),
            field: String::new(),
            message: format!(
                "its pods ({}{more}) accepted {n} plaintext connections on {at} over the health \
                 window, where their mutual-TLS mode is PERMISSIVE: those callers are neither \
                 encrypted nor authenticated (pods without a sidecar, Gateways without workload \
                 certificates, kubelet probes, or clients outside the mesh), and STRICT would refuse them",
                shown.join(", ")
            ),
            fix: "bring the callers into the mesh before making the port STRICT; until then \
                  keep it PERMISSIVE (a PeerAuthentication portLevelMtls entry can keep one \
                  port open while the others go STRICT)"
                .to_string(),
        });
    }
}
