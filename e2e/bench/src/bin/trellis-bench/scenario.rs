//! The benchmark's configuration: a Gateway, and N HTTPRoutes each with its own Service and
//! EndpointSlice, written as the file provider reads them.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

/// Namespace of every benchmark object.
pub const NAMESPACE: &str = "bench";
/// The Gateway, `namespace/name`.
pub const GATEWAY: &str = "bench/edge";

/// The Namespace, the GatewayClass and the Gateway, listening on `ip:port`.
pub fn gateway_yaml(ip: Ipv4Addr, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: trellis\nspec:\n  controllerName: trellis.dev/gateway-controller\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: edge\n  namespace: {NAMESPACE}\nspec:\n  gatewayClassName: trellis\n  addresses:\n  - type: IPAddress\n    value: {ip}\n  listeners:\n  - name: http\n    port: {port}\n    protocol: HTTP\n    allowedRoutes:\n      namespaces:\n        from: Same\n"
    )
}

/// The host name route `i` answers.
pub fn host(i: usize) -> String {
    format!("r{i}.bench.example")
}

/// HTTPRoute `r<i>` (host [`host`]) to Service `s<i>`, and that Service.
pub fn route_and_service_yaml(i: usize) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r{i}\n  namespace: {NAMESPACE}\nspec:\n  parentRefs: [{{name: edge}}]\n  hostnames: [\"{host}\"]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n    backendRefs: [{{name: s{i}, port: 80}}]\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\n  namespace: {NAMESPACE}\nspec:\n  ports: [{{name: http, port: 80}}]\n",
        host = host(i)
    )
}

/// The EndpointSlice of Service `s<i>`, its endpoints at `endpoints` (all on one port).
pub fn slice_yaml(i: usize, endpoints: &[SocketAddr]) -> String {
    let port = endpoints.first().map_or(8080, SocketAddr::port);
    let addresses: Vec<String> = endpoints
        .iter()
        .map(|e| format!("- addresses: [\"{}\"]\n", e.ip()))
        .collect();
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s{i}-slice\n  namespace: {NAMESPACE}\n  labels: {{kubernetes.io/service-name: s{i}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n{}",
        addresses.concat()
    )
}

/// Routes `0..n` with their Services and EndpointSlices, route `i` to `backends[i % len]`.
pub fn routes_yaml(n: usize, backends: &[SocketAddr]) -> String {
    let mut out = String::with_capacity(n * 700);
    for i in 0..n {
        out.push_str(&route_and_service_yaml(i));
        out.push_str(&slice_yaml(i, &[backends[i % backends.len()]]));
    }
    out
}

/// Replaces `path` at once (write beside it, then rename), so the watcher never sees half a
/// file.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow::anyhow!("bad path {}", path.display()))?;
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
