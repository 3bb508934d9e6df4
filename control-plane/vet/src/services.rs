//! Services: ports that look like gRPC or HTTP/2 by name but do not say so in `appProtocol`
//! (TRL0118). Trellis picks the upstream protocol from `appProtocol` alone, so such a port is
//! spoken HTTP/1.1 to, which a gRPC server refuses.

use crate::{Code, Finding, ObjectRef, Severity};
use std::collections::BTreeSet;
use trellis_model::{InputSet, ObjectKey};

/// Port name prefixes that say HTTP/2 (Istio's naming convention, which many charts follow).
const HTTP2_NAMES: [&str; 3] = ["grpc", "h2c", "http2"];

/// The Services Trellis sends traffic to: HTTPRoute backends and parents, and every Service of
/// a namespace in the mesh.
fn routed_services(input: &InputSet) -> BTreeSet<ObjectKey> {
    let mut out = BTreeSet::new();
    for (key, route) in &input.http_routes {
        for rule in &route.spec.rules {
            for b in rule.backend_refs.iter().filter(|b| b.kind == "Service") {
                let ns = b.namespace.as_deref().unwrap_or(&key.namespace);
                out.insert(ObjectKey::new(ns, &b.name));
            }
        }
        for p in route
            .spec
            .parent_refs
            .iter()
            .filter(|p| p.kind == "Service")
        {
            let ns = p.namespace.as_deref().unwrap_or(&key.namespace);
            out.insert(ObjectKey::new(ns, &p.name));
        }
    }
    for key in input.services.keys() {
        if trellis_model::mesh::namespace_in_mesh(input, &key.namespace) {
            out.insert(key.clone());
        }
    }
    out
}

/// TRL0118 for every port of the Services Trellis sends traffic to.
pub(crate) fn protocols(input: &InputSet, out: &mut Vec<Finding>) {
    for key in routed_services(input) {
        let Some(service) = input.services.get(&key) else {
            continue;
        };
        let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
        for (i, port) in ports.into_iter().flatten().enumerate() {
            if port.app_protocol.is_some() {
                continue;
            }
            let Some(name) = port.name.as_deref() else {
                continue;
            };
            let lower = name.to_ascii_lowercase();
            let Some(prefix) = HTTP2_NAMES.iter().find(|p| lower.starts_with(*p)) else {
                continue;
            };
            let wanted = if *prefix == "grpc" {
                "kubernetes.io/h2c (or grpc)"
            } else {
                "kubernetes.io/h2c"
            };
            out.push(Finding {
                severity: Severity::Warning,
                code: Code::BackendProtocol,
                object: ObjectRef::new("Service", &key),
                field: format!("spec.ports[{i}].appProtocol"),
                message: format!(
                    "port {name} ({}) looks like {} by its name but has no appProtocol: Trellis \
                     speaks HTTP/1.1 to it, which a gRPC or HTTP/2-only server refuses",
                    port.port,
                    if *prefix == "grpc" { "gRPC" } else { "HTTP/2" }
                ),
                fix: format!("set spec.ports[{i}].appProtocol: {wanted}"),
            });
        }
    }
}
