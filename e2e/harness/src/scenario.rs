//! The held scenario shared by the end-to-end tests of both sources (files in
//! `tests/gateway.rs`, the Kubernetes API in `tests/kubernetes.rs`): its backends, routes and
//! the route that moves traffic, so both feed the same objects through the same pipeline.

use crate::{Echo, Reply, request};
use std::net::{Ipv4Addr, SocketAddr};

/// The namespace of the scenario's routes and backends.
pub const NAMESPACE: &str = "shop";

/// The Namespace, the GatewayClass of Trellis and the Gateway `web` listening on `ip:port`.
pub fn gateway_yaml(ip: Ipv4Addr, port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: trellis
spec:
  controllerName: trellis.dev/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: web
  namespace: {NAMESPACE}
spec:
  gatewayClassName: trellis
  addresses:
  - type: IPAddress
    value: {ip}
  listeners:
  - name: http
    port: {port}
    protocol: HTTP
"#
    )
}

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

/// Starts the pods of every Service of [`BACKENDS`] (echo backends on loopback, in `work`) and
/// returns the YAML of those Services and their EndpointSlices, each after a `---`.
pub fn start_backends(work: &std::path::Path) -> anyhow::Result<(String, Vec<Echo>)> {
    let mut yaml = String::new();
    let mut pods = Vec::new();
    for (service, count) in BACKENDS {
        let start = pods.len();
        for i in 0..*count {
            let suffix = ["x7k2p", "q9w3e", "m4n8b"]
                .get(i)
                .copied()
                .unwrap_or("z0z0z");
            let pod = format!("{service}-5d8f7c9b4d-{suffix}");
            pods.push(Echo::start(
                work,
                std::net::Ipv4Addr::LOCALHOST,
                &pod,
                NAMESPACE,
            )?);
        }
        let refs: Vec<&Echo> = pods[start..].iter().collect();
        yaml.push_str("---\n");
        yaml.push_str(&backend_yaml(service, &refs));
    }
    Ok((yaml, pods))
}

/// Which backend (Deployment name) answered a request through `gateway`: the pod name without
/// its last two segments. Panics unless the answer is 200.
pub fn backend(
    gateway: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    let reply = request(gateway, method, host, path, headers).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.status, 200, "{method} {host}{path}: {}", reply.body);
    let pod = reply.pod();
    pod.rsplitn(3, '-').nth(2).unwrap_or_default().to_string()
}

fn get(gateway: SocketAddr, host: &str, path: &str) -> anyhow::Result<Reply> {
    request(gateway, "GET", host, path, &[])
}

/// Asserts that `gateway` routes [`ROUTES`] as the Gateway API says: by host, path, header,
/// query and method in precedence order, ignoring the host's port, matching path prefixes by
/// whole segments, 404 without a matching route or host, 500 for an unresolved backend, and
/// the request reaching the backend as the client sent it.
#[allow(clippy::unwrap_used)]
pub fn assert_routes_as_written(gateway: SocketAddr) {
    let shop = "shop.example.com";
    assert_eq!(backend(gateway, "GET", shop, "/api/items", &[]), "api");
    assert_eq!(
        backend(gateway, "GET", shop, "/api/special", &[]),
        "exact",
        "exact beats prefix"
    );
    assert_eq!(
        backend(gateway, "GET", shop, "/api/items", &[("x-version", "2")]),
        "header"
    );
    assert_eq!(
        backend(gateway, "GET", shop, "/api/items?debug=1", &[]),
        "query"
    );
    assert_eq!(backend(gateway, "POST", shop, "/api/items", &[]), "method");
    assert_eq!(
        backend(
            gateway,
            "POST",
            shop,
            "/api/items?debug=1",
            &[("x-version", "2")]
        ),
        "method",
        "a method match outranks header and query matches"
    );
    assert_eq!(
        backend(
            gateway,
            "GET",
            shop,
            "/api/items?debug=1",
            &[("x-version", "2")]
        ),
        "header",
        "more header matches outrank query matches"
    );
    assert_eq!(
        backend(gateway, "GET", "other.example.com", "/anything", &[]),
        "other"
    );
    assert_eq!(
        backend(gateway, "GET", "other.example.com:8080", "/", &[]),
        "other",
        "the port is ignored"
    );
    // Path prefix matches whole segments only.
    assert_eq!(get(gateway, shop, "/apix").unwrap().status, 404);
    assert_eq!(
        get(gateway, shop, "/").unwrap().status,
        404,
        "no route matches"
    );
    assert_eq!(
        get(gateway, "unknown.example.com", "/api").unwrap().status,
        404,
        "no host matches"
    );
    assert_eq!(
        get(gateway, shop, "/missing").unwrap().status,
        500,
        "backend does not resolve"
    );
    // The echoed request is what the client sent.
    let reply = request(gateway, "GET", shop, "/api/items?a=b", &[("x-custom", "v")]).unwrap();
    let json = reply.json();
    assert_eq!(json["path"], "/api/items?a=b");
    assert_eq!(json["host"], shop);
    assert_eq!(json["headers"]["X-Custom"][0], "v");
    assert_eq!(json["namespace"], NAMESPACE);
}

/// The scenario's Gateway (HTTP on a private loopback address) in front of the pods of
/// [`BACKENDS`], with more objects; the control plane on them; one Envoy for the Gateway.
pub struct GatewayBed {
    /// The control plane (`--debounce-ms 50` and the test's arguments).
    pub cp: crate::ControlPlane,
    /// The Gateway's proxy.
    pub envoy: crate::Envoy,
    /// Where the Gateway listens.
    pub gateway: SocketAddr,
    /// The backends' pods.
    pub pods: Vec<Echo>,
    /// The work directory (configuration, logs); removed when the bed is dropped.
    pub work: tempfile::TempDir,
}

impl GatewayBed {
    /// Starts it with `extra` objects (YAML, each after a `---`) and `args` for `trellis serve`,
    /// and returns once `host` routes to a backend.
    pub fn start(extra: &str, args: &[&str], host: &str) -> anyhow::Result<GatewayBed> {
        let work = tempfile::tempdir()?;
        let config = work.path().join("config");
        std::fs::create_dir_all(&config)?;
        let (ip, port) = crate::private_loopback();
        let (backends, pods) = start_backends(work.path())?;
        let mut yaml = gateway_yaml(ip, port);
        yaml.push_str(&backends);
        yaml.push_str(extra);
        std::fs::write(config.join("scenario.yaml"), yaml)?;
        let mut all = vec!["--debounce-ms", "50"];
        all.extend_from_slice(args);
        let cp = crate::ControlPlane::start(&config, work.path(), &all)?;
        let bootstrap =
            crate::bootstrap(&[cp.xds], &format!("{NAMESPACE}/web"), false, "e2e-proxy")?;
        let envoy = crate::Envoy::start(&bootstrap, work.path(), "envoy", 2)?;
        let gateway = SocketAddr::from((ip, port));
        crate::eventually(
            "the gateway to route",
            std::time::Duration::from_secs(20),
            || Ok(request(gateway, "GET", host, "/", &[])?.status == 200),
        )
        .map_err(|e| anyhow::anyhow!("{e}\n{}", envoy.log()))?;
        Ok(GatewayBed {
            cp,
            envoy,
            gateway,
            pods,
            work,
        })
    }
}
