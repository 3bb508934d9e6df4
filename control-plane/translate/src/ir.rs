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
//! The IR is Trellis's own: typed (methods, schemes, protocols, durations and header changes
//! are types, not text), free of Envoy syntax (header values are literal; no `%` escaping), and
//! every route knows where it came from ([`RouteOrigin`]), so policies attach to routes by
//! reference. It is serializable so golden tests can show it; [`crate::envoy`] turns it into
//! Envoy resources without further decisions.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use trellis_model::ObjectKey;
pub use trellis_model::security::MtlsMode;

/// The IR of every proxy, by snapshot key (`gateway/<ns>/<name>`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ir {
    /// Proxies by snapshot key.
    pub proxies: BTreeMap<String, ProxyIr>,
    /// Sidecar classes by snapshot key (`sidecar/<ns>/<class>`): the pods of one namespace with
    /// the same inbound ports share one configuration.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sidecars: BTreeMap<String, SidecarIr>,
    /// The sidecar class of every pod in the mesh, by pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pods: BTreeMap<ObjectKey, String>,
    /// A cluster for every Service port, for proxies that may keep one they already have
    /// (after a control-plane restart) while no route of theirs uses it any more.
    pub spare_clusters: BTreeMap<String, ClusterIr>,
}

impl Ir {
    /// Every cluster of every proxy: the gateways', then the sidecar classes' (the spare
    /// clusters are not among them).
    pub fn clusters(&self) -> impl Iterator<Item = &ClusterIr> {
        self.proxies
            .values()
            .flat_map(|p| p.clusters.values())
            .chain(self.sidecars.values().flat_map(|s| s.clusters.values()))
    }

    /// Every route of every proxy: the gateways' virtual hosts, then the sidecar classes' mesh
    /// route configurations.
    pub fn routes(&self) -> impl Iterator<Item = &RouteIr> {
        let gateways = self
            .proxies
            .values()
            .flat_map(|p| &p.listeners)
            .flat_map(|l| &l.chains)
            .flat_map(|c| &c.virtual_hosts)
            .flat_map(|v| &v.routes);
        let sidecars = self
            .sidecars
            .values()
            .flat_map(|s| s.route_configs.values())
            .flat_map(|c| &c.routes);
        gateways.chain(sidecars)
    }
}

/// What the proxies of one Gateway serve.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyIr {
    /// Listeners, sorted by address and port.
    pub listeners: Vec<ListenerIr>,
    /// Clusters the routes use, by name.
    pub clusters: BTreeMap<String, ClusterIr>,
    /// Certificates HTTPS listeners present, by name.
    pub secrets: BTreeMap<String, SecretIr>,
    /// Where the proxies fetch Wasm modules (the control plane's module server), when a
    /// filter chain runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_server: Option<EndpointIr>,
}

/// A certificate and its private key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecretIr {
    /// `secret/<ns>/<name>`.
    pub name: String,
    /// PEM certificate chain.
    pub certificate_chain: String,
    /// PEM private key (not shown in golden output, and empty when read from one).
    #[serde(skip_serializing, default)]
    pub private_key: String,
}

/// One Envoy listener: every Gateway listener sharing an address and port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListenerIr {
    /// Envoy listener name, `gateway/<ns>/<name>/port/<port>`.
    pub name: String,
    /// IP address to bind.
    pub address: String,
    /// More addresses bound on the same port (a Gateway's other `spec.addresses`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_addresses: Vec<String>,
    /// Port to bind.
    pub port: u16,
    /// Filter chains: one for HTTP; for HTTPS one per Gateway listener, selected by SNI.
    pub chains: Vec<FilterChainIr>,
}

/// The protocol a filter chain speaks to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerProtocol {
    /// HTTP over plain TCP.
    Http,
    /// HTTP over TLS, terminated by the proxy.
    Https,
}

impl ListenerProtocol {
    /// The URL scheme of requests on such a chain.
    pub fn scheme(self) -> Scheme {
        match self {
            ListenerProtocol::Http => Scheme::Http,
            ListenerProtocol::Https => Scheme::Https,
        }
    }
}

/// One filter chain: TLS (for HTTPS) and the routes of the requests it accepts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FilterChainIr {
    /// The route configuration's name: the listener's for HTTP,
    /// `<listener>/listener/<section>` for an HTTPS Gateway listener.
    pub route_config: String,
    /// The Gateway listener (section name) the chain is for, when it serves one alone (an
    /// HTTPS listener, chosen by SNI); an HTTP chain serves every HTTP listener on its port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    /// What clients speak to the chain.
    pub protocol: ListenerProtocol,
    /// SNI names the chain accepts (`*.` wildcards allowed); every name when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
    /// Certificates (secret names) for TLS termination; present exactly for HTTPS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
    /// Virtual hosts, most specific hostname first.
    pub virtual_hosts: Vec<VirtualHostIr>,
    /// Wasm HTTP filters, in order, before the router.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_filters: Vec<WasmFilterIr>,
    /// Tracing (a TracingPolicy targets the chain's Gateway, listener or routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingIr>,
}

/// Envoy's OpenTelemetry tracer on one HTTP connection manager (a TracingPolicy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct TracingIr {
    /// The TracingPolicy (`<ns>/<name>`).
    pub policy: String,
    /// The share of requests that start a trace, in hundredths of a percent (0–10000);
    /// routes may override it.
    pub sampling: u32,
    /// Tags on every span.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_tags: Vec<TagIr>,
    /// Whether an incoming `traceparent`/`tracestate` is continued (else removed).
    pub trust_incoming_context: bool,
    /// Where spans go.
    pub collector: CollectorIr,
    /// The spans' `service.name`.
    pub service_name: String,
    /// Baggage keys the policy filter copies onto spans.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baggage_tags: Vec<String>,
}

/// Where a proxy sends spans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum CollectorIr {
    /// The control plane's OTLP receiver, through the bootstrap's `trellis-telemetry` cluster.
    ControlPlane,
    /// A user's OTLP collector, through a cluster of the proxy's.
    Otlp(CollectorClusterIr),
}

/// A cluster speaking OTLP/gRPC to a collector.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
pub struct CollectorClusterIr {
    /// `tracing/<ns>/<policy>`.
    pub name: String,
    /// A DNS name or an IP address.
    pub host: String,
    /// Its port.
    pub port: u16,
}

/// A span tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct TagIr {
    /// The tag's name.
    pub name: String,
    /// Where its value comes from.
    pub value: TagValueIr,
}

/// Where a span tag's value comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum TagValueIr {
    /// A fixed value.
    Literal(String),
    /// A request header, with a default.
    Header {
        /// Header name.
        name: String,
        /// Value when absent.
        default: String,
    },
    /// An environment variable of the proxy, with a default.
    Environment {
        /// Variable name.
        name: String,
        /// Value when unset.
        default: String,
    },
    /// A filter state object the policy filter sets (`wasm.trellis.decision`).
    FilterState(String),
}

/// A route's own tracing (a TracingPolicy targeting its HTTPRoute or rule).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct RouteTracingIr {
    /// The share of this route's requests that start a trace (hundredths of a percent).
    pub sampling: u32,
    /// Tags on this route's spans.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_tags: Vec<TagIr>,
}

/// A proxy-wasm HTTP filter: a verified module (fetched from the control plane by its digest)
/// and its configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One virtual host: the routes for requests whose Host matches `domain`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VirtualHostIr {
    /// `example.com`, `*.example.com`, or `*`.
    pub domain: String,
    /// The Gateway listener (section name) that owns requests for this domain.
    pub listener: String,
    /// Routes in precedence order; the first match wins.
    pub routes: Vec<RouteIr>,
    /// Filters disabled by default in the chain that run for this virtual host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enabled_filters: Vec<String>,
}

/// Where a route came from. Policies select routes by it, never by name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteOrigin {
    /// A match of a rule of an HTTPRoute.
    HttpRoute {
        /// The HTTPRoute.
        route: ObjectKey,
        /// The rule's index in `spec.rules`.
        rule: usize,
        /// The match's index in the rule's `matches` (0 for a rule without matches).
        #[serde(rename = "match")]
        match_index: usize,
    },
    /// Trellis's own answer (421) to requests for a host that another HTTPS listener of the
    /// Gateway serves, arriving on a connection whose SNI chose this one.
    Misdirected {
        /// The host.
        domain: String,
    },
    /// The route to a Service port of the mesh when no HTTPRoute is attached to it.
    ServiceDefault {
        /// The Service.
        service: ObjectKey,
        /// Its port.
        port: u16,
    },
}

impl RouteOrigin {
    /// The Envoy route's name: `httproute/<ns>/<name>/rule/<i>/match/<j>`, or
    /// `misdirected/<domain>`.
    pub fn route_name(&self) -> String {
        match self {
            RouteOrigin::HttpRoute {
                route,
                rule,
                match_index,
            } => format!(
                "httproute/{}/{}/rule/{rule}/match/{match_index}",
                route.namespace, route.name
            ),
            RouteOrigin::Misdirected { domain } => format!("misdirected/{domain}"),
            RouteOrigin::ServiceDefault { service, port } => {
                format!(
                    "service/{}/{}/{port}/default",
                    service.namespace, service.name
                )
            }
        }
    }

    /// The HTTPRoute and rule index, for routes that come from one.
    pub fn rule(&self) -> Option<(&ObjectKey, usize)> {
        match self {
            RouteOrigin::HttpRoute { route, rule, .. } => Some((route, *rule)),
            RouteOrigin::Misdirected { .. } | RouteOrigin::ServiceDefault { .. } => None,
        }
    }
}

/// One match of one rule, with what to do for requests it matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteIr {
    /// The rule and match this route is.
    pub origin: RouteOrigin,
    /// The conditions a request must meet.
    #[serde(rename = "match")]
    pub matcher: MatchIr,
    /// Header changes on the request before forwarding.
    #[serde(default, skip_serializing_if = "HeaderModIr::is_empty")]
    pub request_headers: HeaderModIr,
    /// Header changes on the response.
    #[serde(default, skip_serializing_if = "HeaderModIr::is_empty")]
    pub response_headers: HeaderModIr,
    /// What to do.
    pub action: ActionIr,
    /// Cross-origin requests this route allows (the rule's CORS filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsIr>,
    /// Filters disabled by default in the chain that run for this route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enabled_filters: Vec<String>,
    /// This route's sampling and tags, over the chain's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<RouteTracingIr>,
    /// Faults injected into this route's requests (a BackendTrafficPolicy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultIr>,
}

/// Faults a BackendTrafficPolicy injects into a route's requests (Envoy's fault filter, per
/// route).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FaultIr {
    /// The BackendTrafficPolicy (`<ns>/<name>`).
    pub policy: String,
    /// Requests answered with an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbortIr>,
    /// Requests held before they are forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelayIr>,
    /// Only requests with all these headers (exact values) are faulted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderIr>,
}

/// An abort fault.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FaultAbortIr {
    /// The status answered.
    pub status: AbortStatusIr,
    /// Requests aborted, per million.
    pub per_million: u32,
}

/// The status of an abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortStatusIr {
    /// An HTTP status.
    Http(u32),
    /// A gRPC status (for gRPC requests).
    Grpc(u32),
}

/// A delay fault.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FaultDelayIr {
    /// How long.
    #[serde(serialize_with = "duration", deserialize_with = "parse_duration")]
    pub delay: Duration,
    /// Requests delayed, per million.
    pub per_million: u32,
}

/// Circuit-breaker thresholds of a cluster (a BackendTrafficPolicy on its Service).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CircuitBreakerIr {
    /// The BackendTrafficPolicy (`<ns>/<name>`).
    pub policy: String,
    /// Connections at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Requests waiting for a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Retries in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Retries in flight as a share of requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudgetIr>,
}

/// A retry budget.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RetryBudgetIr {
    /// The share of active requests that may be retries, in hundredths of a percent.
    pub hundredths_percent: u32,
    /// Retries always allowed.
    pub min_retry_concurrency: u32,
}

/// Outlier detection of a cluster (a BackendTrafficPolicy on its Service).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutlierDetectionIr {
    /// The BackendTrafficPolicy (`<ns>/<name>`).
    pub policy: String,
    /// 5xx answers in a row that eject an endpoint (0: off).
    pub consecutive_5xx: u32,
    /// Gateway errors in a row that eject an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// Local-origin failures in a row that eject an endpoint.
    pub consecutive_local_origin_failures: u32,
    /// Whether local-origin failures are counted apart.
    #[serde(default, skip_serializing_if = "is_false")]
    pub split_external_local_origin_errors: bool,
    /// How often ejections are reviewed.
    #[serde(serialize_with = "duration", deserialize_with = "parse_duration")]
    pub interval: Duration,
    /// How long a first ejection lasts.
    #[serde(serialize_with = "duration", deserialize_with = "parse_duration")]
    pub base_ejection_time: Duration,
    /// The most endpoints ejected at once, in percent.
    pub max_ejection_percent: u32,
}

/// A route's CORS policy: which origins may make cross-origin requests, and what the answers to
/// their preflights say. Requests from other origins are left alone (no CORS headers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorsIr {
    /// Origins allowed.
    pub allow_origins: Vec<OriginIr>,
    /// Methods allowed (`*` for any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// Request headers allowed (`*` for any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers the browser may read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long a preflight answer may be cached.
    #[serde(serialize_with = "duration", deserialize_with = "parse_duration")]
    pub max_age: Duration,
    /// Whether requests may carry credentials.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_credentials: bool,
}

/// An allowed origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatchIr {
    /// The path condition.
    pub path: PathMatchIr,
    /// Header conditions (names lower-case).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<StringMatchIr>,
    /// Query parameter conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<StringMatchIr>,
    /// The method, if constrained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
}

/// An HTTP method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

impl Method {
    /// The method as written in requests (`GET`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
        }
    }
}

/// A URL scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// `http`
    Http,
    /// `https`
    Https,
}

impl Scheme {
    /// The scheme as written in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A path condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StringMatchIr {
    /// Header (lower-case) or parameter name.
    pub name: String,
    /// How to compare.
    #[serde(flatten)]
    pub value: ValueMatchIr,
}

/// How a value is compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueMatchIr {
    /// Equal.
    Exact(String),
    /// Matches the whole RE2 expression.
    Regex(String),
}

/// A header and its value, both literal (the value may contain `%` or anything else a header
/// value may hold; the Envoy stage escapes what Envoy would read as a command).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeaderIr {
    /// Lower-case header name.
    pub name: String,
    /// The value, as the client or backend will see it.
    pub value: String,
}

/// Header changes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeaderModIr {
    /// Overwrite.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderIr>,
    /// Append.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderIr>,
    /// Remove by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderModIr {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// What a route does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForwardIr {
    /// Weighted backends; weights are > 0.
    pub backends: Vec<BackendIr>,
    /// Rewrite before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<RewriteIr>,
    /// Mirrors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorIr>,
    /// Whole-request timeout (zero disables it); Envoy's default when unset.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_duration",
        deserialize_with = "parse_optional_duration"
    )]
    pub timeout: Option<Duration>,
    /// Per-attempt timeout.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_duration",
        deserialize_with = "parse_optional_duration"
    )]
    pub backend_timeout: Option<Duration>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryIr>,
}

/// One weighted backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendIr {
    /// The cluster, or `None` when the backendRef does not resolve: its share of requests is
    /// answered with 500.
    pub cluster: Option<String>,
    /// Relative weight (> 0).
    pub weight: u32,
    /// Header changes for requests to this backend only.
    #[serde(default, skip_serializing_if = "HeaderModIr::is_empty")]
    pub request_headers: HeaderModIr,
    /// Header changes for responses from this backend only.
    #[serde(default, skip_serializing_if = "HeaderModIr::is_empty")]
    pub response_headers: HeaderModIr,
}

/// Host and path rewriting.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RewriteIr {
    /// New Host header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// New path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewriteIr>,
}

/// How the path is rewritten or redirected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RedirectIr {
    /// New scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Scheme>,
    /// New host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// New port; `None` leaves the port out of Location (the scheme's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// New path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewriteIr>,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
}

/// A request mirror.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MirrorIr {
    /// Cluster receiving copies.
    pub cluster: String,
    /// Share of requests mirrored, in parts per million.
    pub per_million: u32,
}

/// Retry policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryIr {
    /// Status codes retried.
    pub codes: Vec<u32>,
    /// Maximum retries.
    pub attempts: u32,
    /// Base back-off.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_duration",
        deserialize_with = "parse_optional_duration"
    )]
    pub backoff: Option<Duration>,
}

/// How to talk to a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (and WebSocket upgrades).
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (`kubernetes.io/h2c`).
    H2c,
}

/// One upstream cluster: a Service port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterIr {
    /// `service/<ns>/<name>/<port>`.
    pub name: String,
    /// Protocol to speak to the endpoints.
    pub protocol: UpstreamProtocol,
    /// Endpoints, sorted.
    pub endpoints: Vec<EndpointIr>,
    /// Sidecars only: the SPIFFE IDs the endpoints marked [`EndpointIr::mtls`] may present
    /// (the service accounts of the Service's pods: "secure naming"); empty when no endpoint
    /// takes mutual TLS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_identities: Vec<String>,
    /// Circuit-breaker thresholds (a BackendTrafficPolicy on the Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerIr>,
    /// Outlier detection (a BackendTrafficPolicy on the Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionIr>,
}

/// What the sidecars of one class serve: for the pods of one namespace with the same inbound
/// ports, every Service port of the mesh (routed by destination ClusterIP and port), and their
/// own ports.
///
/// ```text
///  SidecarIr
///  ├─ outbound: one ServiceListenerIr per Service ClusterIP and port (HTTP: a route
///  │  configuration; TCP: a cluster); other destinations pass through (or are blocked)
///  ├─ inbound: the pod's HTTP ports (an HTTP connection manager each); other ports as TCP
///  ├─ route_configs: by name, the routes of each HTTP Service port for this namespace
///  └─ clusters: the Services' ports and the routes' backends
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SidecarIr {
    /// The pods' namespace.
    pub namespace: String,
    /// Service ports of the mesh, by ClusterIP and port.
    pub outbound: Vec<ServiceListenerIr>,
    /// What happens to connections to any other destination.
    pub unknown_destinations: UnknownDestinations,
    /// The pods' ports that speak HTTP, and how; connections to other ports are passed to the
    /// app as TCP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound: Vec<InboundPortIr>,
    /// The mutual-TLS modes of the pods' ports; `None` when the mesh has no mutual TLS (the
    /// control plane runs without a certificate authority).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<InboundMtlsIr>,
    /// The Services that send to the pods, and the pod ports each reaches (HTTP ports only):
    /// what policies targeting a Service apply to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inbound_services: BTreeMap<ObjectKey, Vec<u16>>,
    /// Wasm HTTP filters (the policy filter) of inbound HTTP ports, by port.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inbound_filters: BTreeMap<u16, Vec<WasmFilterIr>>,
    /// Tracing of inbound HTTP ports, by port (a TracingPolicy targets a Service reaching it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inbound_tracing: BTreeMap<u16, TracingIr>,
    /// Where the sidecars fetch the modules of their filters (the control plane).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_server: Option<EndpointIr>,
    /// Route configurations by name.
    pub route_configs: BTreeMap<String, MeshRoutesIr>,
    /// Clusters by name.
    pub clusters: BTreeMap<String, ClusterIr>,
    /// The ports of the external services declared in the pods' namespace (ExternalService),
    /// by port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressListenerIr>,
    /// Their clusters, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_clusters: BTreeMap<String, ExternalClusterIr>,
}

/// The declared external hosts of one port: connections to the port at any address that is no
/// Service's go through it, routed by `Host` (HTTP) or SNI (TLS); other hosts pass through or
/// are blocked like any unknown destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EgressListenerIr {
    /// The port apps call.
    pub port: u16,
    /// How it is spoken.
    pub protocol: EgressProtocol,
    /// The hosts declared on it, sorted.
    pub hosts: Vec<EgressHostIr>,
}

/// How an egress port is spoken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EgressProtocol {
    /// Plain HTTP, routed by `Host`.
    Http,
    /// TLS, routed by SNI.
    Tls,
}

/// A declared external host and where it goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EgressHostIr {
    /// The host name.
    pub host: String,
    /// The cluster (`external/<ns>/<name>/<port name>`).
    pub cluster: String,
}

/// An external service's port as a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalClusterIr {
    /// `external/<ns>/<name>/<port name>`.
    pub name: String,
    /// Where to connect: IP addresses, or DNS names resolved by the proxy.
    pub endpoints: Vec<EndpointIr>,
    /// TLS the sidecar originates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOriginationIr>,
}

/// TLS a sidecar originates to an external service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsOriginationIr {
    /// The server name sent, and required in the server's certificate.
    pub sni: String,
    /// The CA bundle (PEM) to verify the server against; the system's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

/// What a sidecar does with a connection to a destination that is no Service port of the mesh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownDestinations {
    /// Forward it to where it was going.
    #[default]
    PassThrough,
    /// Close it.
    Block,
}

/// A Service port as the sidecars see it: connections to its ClusterIP and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceListenerIr {
    /// The Service.
    pub service: ObjectKey,
    /// Its ClusterIP.
    pub address: String,
    /// Its port.
    pub port: u16,
    /// HTTP ports: the route configuration requests go through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_config: Option<String>,
    /// TCP ports: the cluster connections go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Whether requests (HTTP) or connections (TCP) are logged with their peers' identities.
    #[serde(default, skip_serializing_if = "is_false")]
    pub access_log: bool,
    /// HTTP ports: tracing of the clients' requests (a TracingPolicy targets the Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingIr>,
    /// HTTP ports: whether a route of the port's route configuration injects faults (the
    /// connection manager then has the fault filter).
    #[serde(default, skip_serializing_if = "is_false")]
    pub faults: bool,
}

/// A pod port that speaks HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InboundPortIr {
    /// The container port.
    pub port: u16,
    /// HTTP/2 with prior knowledge rather than HTTP/1.1.
    #[serde(default, skip_serializing_if = "is_false")]
    pub http2: bool,
}

/// Which connections a sidecar accepts on its pod's ports: mutual TLS from other sidecars,
/// plaintext, or both.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InboundMtlsIr {
    /// The mode of every port without its own (never UNSET).
    pub mode: MtlsMode,
    /// Ports whose mode differs from `mode`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<u16, MtlsMode>,
}

impl InboundMtlsIr {
    /// The mode of one port.
    pub fn port_mode(&self, port: u16) -> MtlsMode {
        self.ports.get(&port).copied().unwrap_or(self.mode)
    }
}

/// The routes of one Service port, for the clients of one namespace (consumer routes) or of
/// every namespace (producer routes, or the default route).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeshRoutesIr {
    /// Routes in precedence order; the first match wins, and a request no route matches gets
    /// 404.
    pub routes: Vec<RouteIr>,
}

/// One endpoint address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointIr {
    /// IP address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Sidecars only: a meshed pod's sidecar that takes mutual TLS on this port.
    #[serde(default, skip_serializing_if = "is_false")]
    pub mtls: bool,
}

/// A duration as text: `10s`, `1.5s`, `250ms`.
struct DurationText(Duration);

impl fmt::Display for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else if ms < 1000 {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}.{:03}s", ms / 1000, ms % 1000)
        }
    }
}

fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&DurationText(*d))
}

/// Reads what [`DurationText`] writes (and plain `500ms`, `2s`).
fn duration_from_text(text: &str) -> Option<Duration> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    let seconds = text.strip_suffix('s')?;
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    if fraction.len() > 3 {
        return None;
    }
    let ms: u64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<3}").parse().ok()?
    };
    let whole: u64 = whole.parse().ok()?;
    Some(Duration::from_millis(
        whole.checked_mul(1000)?.checked_add(ms)?,
    ))
}

fn parse_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    duration_from_text(&text)
        .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a duration like 10s")))
}

fn parse_optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    parse_duration(d).map(Some)
}

fn optional_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => duration(d, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        let text = |ms| DurationText(Duration::from_millis(ms)).to_string();
        assert_eq!(text(0), "0s");
        assert_eq!(text(250), "250ms");
        assert_eq!(text(10_000), "10s");
        assert_eq!(text(1_500), "1.500s");
        for ms in [0, 1, 250, 999, 1_000, 1_500, 90_000, 86_400_123] {
            assert_eq!(
                duration_from_text(&text(ms)),
                Some(Duration::from_millis(ms))
            );
        }
        assert_eq!(
            duration_from_text("1.5s"),
            Some(Duration::from_millis(1_500))
        );
        assert_eq!(duration_from_text("1.5"), None);
        assert_eq!(duration_from_text("1.0001s"), None);
    }

    #[test]
    fn a_route_is_named_for_its_origin() {
        let origin = RouteOrigin::HttpRoute {
            route: ObjectKey::new("default", "web"),
            rule: 2,
            match_index: 1,
        };
        assert_eq!(origin.route_name(), "httproute/default/web/rule/2/match/1");
        assert_eq!(origin.rule(), Some((&ObjectKey::new("default", "web"), 2)));
        let misdirected = RouteOrigin::Misdirected {
            domain: "a.example.com".into(),
        };
        assert_eq!(misdirected.route_name(), "misdirected/a.example.com");
    }
}
