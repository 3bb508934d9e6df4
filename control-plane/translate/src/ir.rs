//! The intermediate representation between the Gateway API and Envoy: what each proxy should
//! do, in plain sorted data, with every Gateway API decision (attachment, precedence, hostname
//! intersection, backend resolution) already made.
//!
//! ```text
//!  Ir
//!  └─ ProxyIr (one per Gateway: the proxies serving it share it)
//!     ├─ ListenerIr (one per address:port)
//!     │  └─ FilterChainIr (HTTP: one; HTTPS: one per Gateway listener, chosen by SNI)
//!     │     ├─ WasmFilterIr (policy filter, WasmFilters; before the router)
//!     │     └─ VirtualHostIr (one per hostname) ─ RouteIr (in precedence order)
//!     ├─ ClusterIr (one per Service port the routes use) ─ endpoints
//!     └─ SecretIr (certificates of HTTPS listeners)
//! ```
//!
//! The IR is serializable so golden tests can show it; [`crate::xds`] turns it into Envoy
//! resources without further decisions.

use serde::Serialize;
use std::collections::BTreeMap;

/// The IR of every proxy, by snapshot key (`gateway/<ns>/<name>`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Ir {
    /// Proxies by snapshot key.
    pub proxies: BTreeMap<String, ProxyIr>,
    /// A cluster for every Service port, for proxies that may keep one they already have
    /// (after a control-plane restart) while no route of theirs uses it any more.
    pub spare_clusters: BTreeMap<String, ClusterIr>,
}

/// What the proxies of one Gateway serve.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProxyIr {
    /// Listeners, sorted by address and port.
    pub listeners: Vec<ListenerIr>,
    /// Clusters the routes use, by name.
    pub clusters: BTreeMap<String, ClusterIr>,
    /// Certificates HTTPS listeners present, by name.
    pub secrets: BTreeMap<String, SecretIr>,
    /// Where the proxies fetch Wasm modules (the control plane's module server), when a
    /// filter chain runs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_server: Option<EndpointIr>,
}

/// A certificate and its private key.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SecretIr {
    /// `secret/<ns>/<name>`.
    pub name: String,
    /// PEM certificate chain.
    pub certificate_chain: String,
    /// PEM private key (not shown in golden output).
    #[serde(skip)]
    pub private_key: String,
}

/// One Envoy listener: every Gateway listener sharing an address and port.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ListenerIr {
    /// Envoy listener name, `gateway/<ns>/<name>/port/<port>`.
    pub name: String,
    /// IP address to bind.
    pub address: String,
    /// More addresses bound on the same port (a Gateway's other `spec.addresses`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub additional_addresses: Vec<String>,
    /// Port to bind.
    pub port: u16,
    /// Filter chains: one for HTTP; for HTTPS one per Gateway listener, selected by SNI.
    pub chains: Vec<FilterChainIr>,
}

/// One filter chain: TLS (for HTTPS) and the routes of the requests it accepts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FilterChainIr {
    /// The route configuration's name: the listener's for HTTP,
    /// `<listener>/listener/<section>` for an HTTPS Gateway listener.
    pub route_config: String,
    /// SNI names the chain accepts (`*.` wildcards allowed); every name when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
    /// Certificates (secret names) for TLS termination; plaintext when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
    /// Virtual hosts, most specific hostname first.
    pub virtual_hosts: Vec<VirtualHostIr>,
    /// Wasm HTTP filters, in order, before the router.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http_filters: Vec<WasmFilterIr>,
}

/// A proxy-wasm HTTP filter: a verified module (fetched from the control plane by its digest)
/// and its configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WasmFilterIr {
    /// The HTTP filter's name: `trellis.policy` or `wasmfilter/<ns>/<name>`.
    pub name: String,
    /// Hex SHA-256 of the module.
    pub sha256: String,
    /// The VM id: plugins with the same id and module share a VM and its shared data.
    pub vm_id: String,
    /// The plugin configuration, handed to the module as JSON.
    pub configuration: serde_json::Value,
    /// Whether requests skip the filter when its VM fails (else they get 503).
    pub fail_open: bool,
    /// Off unless a virtual host or route enables it (filters attached to some routes only).
    #[serde(skip_serializing_if = "is_false")]
    pub disabled: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One virtual host: the routes for requests whose Host matches `domain`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VirtualHostIr {
    /// `example.com`, `*.example.com`, or `*`.
    pub domain: String,
    /// The Gateway listener (section name) that owns requests for this domain.
    pub listener: String,
    /// Routes in precedence order; the first match wins.
    pub routes: Vec<RouteIr>,
    /// Filters disabled by default in the chain that run for this virtual host.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub enabled_filters: Vec<String>,
}

/// One match of one rule, with what to do for requests it matches.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteIr {
    /// `httproute/<ns>/<name>/rule/<i>/match/<j>`.
    pub name: String,
    /// The conditions a request must meet.
    #[serde(rename = "match")]
    pub matcher: MatchIr,
    /// Header changes on the request before forwarding.
    #[serde(skip_serializing_if = "HeaderModIr::is_empty")]
    pub request_headers: HeaderModIr,
    /// Header changes on the response.
    #[serde(skip_serializing_if = "HeaderModIr::is_empty")]
    pub response_headers: HeaderModIr,
    /// What to do.
    pub action: ActionIr,
    /// Cross-origin requests this route allows (the rule's CORS filter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsIr>,
    /// Filters disabled by default in the chain that run for this route.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub enabled_filters: Vec<String>,
}

/// A route's CORS policy: which origins may make cross-origin requests, and what the answers to
/// their preflights say. Requests from other origins are left alone (no CORS headers).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CorsIr {
    /// Origins allowed.
    pub allow_origins: Vec<OriginIr>,
    /// Methods allowed (`*` for any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// Request headers allowed (`*` for any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers the browser may read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long a preflight answer may be cached, in seconds.
    pub max_age_seconds: i64,
    /// Whether requests may carry credentials.
    #[serde(skip_serializing_if = "is_false")]
    pub allow_credentials: bool,
}

/// An allowed origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginIr {
    /// Any origin (`*`).
    Any,
    /// Exactly this origin (`https://www.example.com`).
    Exact(String),
    /// An origin with `*` standing for any characters (`https://*.example.com`).
    Wildcard(String),
}

/// Request conditions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MatchIr {
    /// The path condition.
    pub path: PathMatchIr,
    /// Header conditions (names lower-case).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<StringMatchIr>,
    /// Query parameter conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<StringMatchIr>,
    /// The method, if constrained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A path condition.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatchIr {
    /// The path equals the value.
    Exact(String),
    /// The path starts with the value at an element boundary (`/` matches everything).
    Prefix(String),
    /// The whole path matches the RE2 expression.
    Regex(String),
}

/// A header or query parameter condition.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StringMatchIr {
    /// Header (lower-case) or parameter name.
    pub name: String,
    /// How to compare.
    #[serde(flatten)]
    pub value: ValueMatchIr,
}

/// How a value is compared.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueMatchIr {
    /// Equal.
    Exact(String),
    /// Matches the whole RE2 expression.
    Regex(String),
}

/// Header changes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HeaderModIr {
    /// Overwrite (name, value).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    /// Append (name, value).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    /// Remove by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderModIr {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// What a route does.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionIr {
    /// Forward to weighted backends.
    Forward(ForwardIr),
    /// Answer with a redirect.
    Redirect(RedirectIr),
    /// Answer directly.
    Respond {
        /// Status code.
        status: u16,
        /// Short body.
        body: String,
    },
}

/// Forwarding to backends.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ForwardIr {
    /// Weighted backends; weights are > 0.
    pub backends: Vec<BackendIr>,
    /// Rewrite before forwarding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<RewriteIr>,
    /// Mirrors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorIr>,
    /// Whole-request timeout in milliseconds (0 disables it); Envoy's default when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Per-attempt timeout in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_timeout_ms: Option<u64>,
    /// Retry policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryIr>,
}

/// One weighted backend.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackendIr {
    /// The cluster, or `None` when the backendRef does not resolve: its share of requests is
    /// answered with 500.
    pub cluster: Option<String>,
    /// Relative weight (> 0).
    pub weight: u32,
    /// Header changes for requests to this backend only.
    #[serde(skip_serializing_if = "HeaderModIr::is_empty")]
    pub request_headers: HeaderModIr,
    /// Header changes for responses from this backend only.
    #[serde(skip_serializing_if = "HeaderModIr::is_empty")]
    pub response_headers: HeaderModIr,
}

/// Host and path rewriting.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RewriteIr {
    /// New Host header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// New path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewriteIr>,
}

/// How the path is rewritten or redirected.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathRewriteIr {
    /// Replace the whole path.
    Full(String),
    /// Replace the matched prefix (the route's prefix match) with this.
    Prefix {
        /// The prefix that matched.
        matched: String,
        /// Its replacement.
        replacement: String,
    },
}

/// A redirect answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RedirectIr {
    /// New scheme.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// New host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// New port; `None` leaves the port out of Location (the scheme's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// New path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewriteIr>,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
}

/// A request mirror.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MirrorIr {
    /// Cluster receiving copies.
    pub cluster: String,
    /// Share of requests mirrored, in parts per million.
    pub per_million: u32,
}

/// Retry policy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryIr {
    /// Status codes retried.
    pub codes: Vec<u32>,
    /// Maximum retries.
    pub attempts: u32,
    /// Base back-off in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
}

/// How to talk to a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (and WebSocket upgrades).
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (`kubernetes.io/h2c`).
    H2c,
}

/// One upstream cluster: a Service port.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterIr {
    /// `service/<ns>/<name>/<port>`.
    pub name: String,
    /// Protocol to speak to the endpoints.
    pub protocol: UpstreamProtocol,
    /// Endpoints, sorted.
    pub endpoints: Vec<EndpointIr>,
}

/// One endpoint address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct EndpointIr {
    /// IP address.
    pub address: String,
    /// Port.
    pub port: u16,
}
