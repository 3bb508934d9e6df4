//! The held scenario shared by the end-to-end tests of both sources (files in
//! `tests/gateway.rs`, the Kubernetes API in `tests/kubernetes.rs`): its backends, routes and
//! the route that moves traffic, so both feed the same objects through the same pipeline.

use crate::harness::Echo;

/// The namespace of the scenario's routes and backends.
pub const NAMESPACE: &str = "shop";

/// Backends: service name -> number of pods.
pub const BACKENDS: &[(&str, usize)] = &[
    ("api", 1),
    ("exact", 1),
    ("header", 1),
    ("query", 1),
    ("method", 1),
    ("other", 1),
    ("w80", 1),
    ("w20", 1),
    ("v1", 2),
    ("v2", 1),
];

/// A Service with one EndpointSlice per pod (each pod listens on its own port).
pub fn backend_yaml(service: &str, pods: &[&Echo]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {service}\n  namespace: {NAMESPACE}\nspec:\n  ports:\n  - name: http\n    port: 80\n"
    );
    for pod in pods {
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {pod_name}\n  namespace: {NAMESPACE}\n  labels:\n    kubernetes.io/service-name: {service}\naddressType: IPv4\nports:\n- name: http\n  port: {port}\nendpoints:\n- addresses: [\"{ip}\"]\n",
            pod_name = pod.pod,
            ip = pod.http.ip(),
            port = pod.http.port(),
        ));
    }
    out
}

/// The scenario's HTTPRoutes: precedence (`shop`), a second host (`other`) and weights.
pub const ROUTES: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: shop
  namespace: shop
spec:
  parentRefs: [{name: web}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: api, port: 80}]
  - matches: [{path: {type: Exact, value: /api/special}}]
    backendRefs: [{name: exact, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-version, value: "2"}]}]
    backendRefs: [{name: header, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}, queryParams: [{name: debug, value: "1"}]}]
    backendRefs: [{name: query, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}, method: POST}]
    backendRefs: [{name: method, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /missing}}]
    backendRefs: [{name: does-not-exist, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: other
  namespace: shop
spec:
  parentRefs: [{name: web}]
  hostnames: [other.example.com]
  rules:
  - backendRefs: [{name: other, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: weights
  namespace: shop
spec:
  parentRefs: [{name: web}]
  hostnames: [weights.example.com]
  rules:
  - backendRefs:
    - {name: w80, port: 80, weight: 80}
    - {name: w20, port: 80, weight: 20}
"#;

/// The HTTPRoute `move`, sending `move.example.com` to `backend`.
pub fn move_route(backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: move\n  namespace: {NAMESPACE}\nspec:\n  parentRefs: [{{name: web}}]\n  hostnames: [move.example.com]\n  rules:\n  - backendRefs: [{{name: {backend}, port: 80}}]\n"
    )
}
