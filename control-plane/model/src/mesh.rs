//! The mesh's view of core objects: which pods are in the mesh, their addresses and readiness,
//! and how a Service port is spoken (HTTP or TCP).
//!
//! A pod is in the mesh when its namespace has the label `trellis.dev/mesh: enabled`, unless the
//! pod has the annotation `trellis.dev/sidecar: "false"` (the same rule decides injection).

use crate::core::{Pod, PodSpec, PodStatus, Service, ServicePort};
use crate::{InputSet, ObjectKey};
use std::collections::BTreeSet;

/// The namespace label that puts a namespace's pods in the mesh.
pub const MESH_LABEL: &str = "trellis.dev/mesh";
/// The value of [`MESH_LABEL`] that enables the mesh.
pub const MESH_ENABLED: &str = "enabled";
/// The pod annotation that keeps one pod out of the mesh (`"false"`).
pub const SIDECAR_ANNOTATION: &str = "trellis.dev/sidecar";

/// The namespace label that chooses where its sidecars send connections to destinations that
/// are no Service of the mesh: `allow-any` (the default: as they were addressed) or
/// `registry-only` (nowhere: the connection is closed), Istio's outbound traffic modes.
pub const OUTBOUND_TRAFFIC_LABEL: &str = "trellis.dev/outbound-traffic";

/// Whether a namespace's sidecars block destinations outside the mesh
/// ([`OUTBOUND_TRAFFIC_LABEL`]` = registry-only`).
pub fn outbound_registry_only(input: &InputSet, namespace: &str) -> bool {
    input
        .namespace_labels(namespace)
        .get(OUTBOUND_TRAFFIC_LABEL)
        .is_some_and(|v| v == "registry-only")
}

/// The namespace annotation that limits which Services its sidecars hold, like the egress
/// hosts of Istio's `Sidecar`: a comma-separated list of namespaces (the sidecar's own is
/// always included; `*`, or no annotation, for every namespace of the mesh).
pub const EGRESS_NAMESPACES_ANNOTATION: &str = "trellis.dev/egress-namespaces";

/// The namespaces whose Services a namespace's sidecars hold
/// ([`EGRESS_NAMESPACES_ANNOTATION`]); `None` for all of them.
pub fn egress_namespaces(input: &InputSet, namespace: &str) -> Option<BTreeSet<String>> {
    let value = input
        .namespaces
        .get(&ObjectKey::cluster(namespace))?
        .metadata
        .annotations
        .as_ref()?
        .get(EGRESS_NAMESPACES_ANNOTATION)?;
    let mut out: BTreeSet<String> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if out.contains("*") {
        return None;
    }
    out.insert(namespace.to_string());
    Some(out)
}

/// Whether a namespace's pods are in the mesh.
pub fn namespace_in_mesh(input: &InputSet, namespace: &str) -> bool {
    input
        .namespace_labels(namespace)
        .get(MESH_LABEL)
        .is_some_and(|v| v == MESH_ENABLED)
}

/// Whether a pod is in the mesh: its namespace is, and it has not opted out.
pub fn pod_in_mesh(input: &InputSet, pod: &Pod) -> bool {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let opted_out = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SIDECAR_ANNOTATION))
        .is_some_and(|v| v == "false");
    namespace_in_mesh(input, namespace) && !opted_out
}

/// The pod's IP addresses (`status.podIPs`, else `status.podIP`), as written.
pub fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    if ips.is_empty()
        && let Some(ip) = status.pod_ip.as_ref().filter(|ip| !ip.is_empty())
    {
        ips.push(ip.clone());
    }
    ips
}

/// Whether the pod's `Ready` condition is true.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pod's service account (`default` when unset, as the API server defaults it).
pub fn pod_service_account(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|sa| !sa.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

/// How a Service port is spoken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortProtocol {
    /// HTTP/1.1 (and upgrades).
    Http,
    /// HTTP/2 (cleartext with prior knowledge): `kubernetes.io/h2c`, `h2c`, `http2`, `grpc`.
    Http2,
    /// Opaque TCP.
    Tcp,
}

impl PortProtocol {
    /// Whether HTTP routes apply on the port.
    pub fn is_http(self) -> bool {
        matches!(self, PortProtocol::Http | PortProtocol::Http2)
    }
}

/// How a Service port is spoken: its `appProtocol`, else Istio-style port names (`http`,
/// `http-*`, `http2`, `h2c`, `grpc`, `grpc-*`, `tcp`), else TCP (UDP ports are none of these).
pub fn port_protocol(port: &ServicePort) -> Option<PortProtocol> {
    if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
        return None;
    }
    let by_name = |name: &str| {
        let prefix = name.split('-').next().unwrap_or_default();
        match prefix {
            "http" => Some(PortProtocol::Http),
            "http2" | "h2c" | "grpc" => Some(PortProtocol::Http2),
            _ => None,
        }
    };
    let protocol = match port.app_protocol.as_deref() {
        Some("http" | "HTTP" | "kubernetes.io/ws") => PortProtocol::Http,
        Some("kubernetes.io/h2c" | "h2c" | "http2" | "grpc") => PortProtocol::Http2,
        Some(_) => PortProtocol::Tcp,
        None => port
            .name
            .as_deref()
            .and_then(by_name)
            .unwrap_or(PortProtocol::Tcp),
    };
    Some(protocol)
}

/// The Service's ClusterIP, when it has one (not headless, not `None`).
pub fn cluster_ip(service: &Service) -> Option<String> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .filter(|ip| !ip.is_empty() && ip != "None")
}

/// The key of a pod's namespace and name.
pub fn pod_key(pod: &Pod) -> ObjectKey {
    ObjectKey::of(&pod.metadata)
}

/// Keeps of a pod what Trellis reads (see [`crate::Object::trim`]).
pub fn trim_pod(pod: &mut Pod) {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.finalizers = None;
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(PodSpec {
            service_account_name: spec.service_account_name,
            node_name: spec.node_name,
            containers: spec
                .containers
                .into_iter()
                .map(|c| crate::core::Container {
                    name: c.name,
                    ports: c.ports,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
    }
    if let Some(status) = pod.status.take() {
        pod.status = Some(PodStatus {
            phase: status.phase,
            pod_ip: status.pod_ip,
            pod_ips: status.pod_ips,
            conditions: status.conditions.map(|c| {
                c.into_iter()
                    .filter(|c| c.type_ == "Ready")
                    .map(|c| crate::core::PodCondition {
                        type_: c.type_,
                        status: c.status,
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Object;
    use std::sync::Arc;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn namespace(name: &str, mesh: bool) -> Object {
        let labels = if mesh {
            serde_json::json!({MESH_LABEL: MESH_ENABLED})
        } else {
            serde_json::json!({})
        };
        Object::Namespace(Arc::new(
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": name, "labels": labels}}),
            )
            .unwrap(),
        ))
    }

    #[test]
    fn pods_are_in_the_mesh_by_namespace_label_unless_they_opt_out() {
        let mut input = InputSet::default();
        input.insert(namespace("meshed", true));
        input.insert(namespace("plain", false));
        let p = |ns: &str, annotations: serde_json::Value| {
            pod(
                serde_json::json!({"metadata": {"name": "p", "namespace": ns, "annotations": annotations}}),
            )
        };
        assert!(pod_in_mesh(&input, &p("meshed", serde_json::json!({}))));
        assert!(!pod_in_mesh(&input, &p("plain", serde_json::json!({}))));
        assert!(!pod_in_mesh(&input, &p("unknown", serde_json::json!({}))));
        assert!(!pod_in_mesh(
            &input,
            &p("meshed", serde_json::json!({SIDECAR_ANNOTATION: "false"}))
        ));
        assert!(pod_in_mesh(
            &input,
            &p("meshed", serde_json::json!({SIDECAR_ANNOTATION: "true"}))
        ));
    }

    #[test]
    fn ports_are_http_by_app_protocol_or_name_and_tcp_otherwise() {
        let port =
            |json: serde_json::Value| -> ServicePort { serde_json::from_value(json).unwrap() };
        let cases = [
            (
                serde_json::json!({"port": 80, "appProtocol": "http"}),
                Some(PortProtocol::Http),
            ),
            (
                serde_json::json!({"port": 80, "appProtocol": "kubernetes.io/h2c"}),
                Some(PortProtocol::Http2),
            ),
            (
                serde_json::json!({"port": 80, "appProtocol": "mongodb"}),
                Some(PortProtocol::Tcp),
            ),
            (
                serde_json::json!({"port": 80, "name": "http-web"}),
                Some(PortProtocol::Http),
            ),
            (
                serde_json::json!({"port": 80, "name": "grpc"}),
                Some(PortProtocol::Http2),
            ),
            (
                serde_json::json!({"port": 80, "name": "tcp"}),
                Some(PortProtocol::Tcp),
            ),
            (
                serde_json::json!({"port": 80, "name": "web"}),
                Some(PortProtocol::Tcp),
            ),
            (
                serde_json::json!({"port": 53, "protocol": "UDP", "name": "dns"}),
                None,
            ),
        ];
        for (json, want) in cases {
            assert_eq!(port_protocol(&port(json.clone())), want, "{json}");
        }
    }

    #[test]
    fn a_trimmed_pod_keeps_what_the_mesh_reads_and_nothing_else() {
        let mut p = pod(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"},
                          "annotations": {SIDECAR_ANNOTATION: "true"},
                          "managedFields": [{"manager": "kubelet"}]},
            "spec": {"serviceAccountName": "web", "containers": [{"name": "app", "image": "web:1",
                     "env": [{"name": "PASSWORD", "value": "hunter2"}],
                     "ports": [{"containerPort": 8080, "name": "http"}]}]},
            "status": {"phase": "Running", "podIP": "10.244.0.7", "podIPs": [{"ip": "10.244.0.7"}],
                       "conditions": [{"type": "Ready", "status": "True", "message": "x"},
                                      {"type": "PodScheduled", "status": "True"}],
                       "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                                              "image": "web:1", "imageID": "x"}]}
        }));
        trim_pod(&mut p);
        let text = serde_json::to_string(&p).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("web:1") && !text.contains("kubelet"),
            "{text}"
        );
        assert_eq!(pod_ips(&p), ["10.244.0.7"]);
        assert!(pod_ready(&p));
        assert_eq!(pod_service_account(&p), "web");
        let ports = p.spec.as_ref().unwrap().containers[0]
            .ports
            .as_ref()
            .unwrap();
        assert_eq!(ports[0].container_port, 8080);
        assert_eq!(p.metadata.labels.as_ref().unwrap()["app"], "web");
    }
}
