//! The admin HTTP endpoint: status, proxy sync state, metrics, health and readiness.
//!
//! | path       | what |
//! |------------|------|
//! | `/status`  | [`StatusReport`](trellis_controller::StatusReport) as JSON |
//! | `/proxies` | connected proxies and their per-type sync state (JSON) |
//! | `/metrics` | Prometheus text: xDS responses, ACKs, NACKs, bytes, translations; with `--kubernetes` also the API server connection, watch errors, relists, status writes and leadership |
//! | `/ui/…`, `/api/graph` | the console (`console.rs`) |
//! | `/api/explain` | which route and backend a request would take, and why a 404 or 500 (`trellis explain`) |
//! | `/api/vet` | the vet findings about what is served (docs/vet.md), filtered by `namespace`, `severity`, `code` |
//! | `/healthz` | 200 while the process runs |
//! | `/readyz`  | 200 once the first configuration was translated and published (with `--kubernetes`: after the initial sync); the body notes an unreachable API server, which does not make the replica unready since it keeps serving the last good configuration |
//! | `/wasm/<sha256>` | a Wasm module the published configuration uses, for proxies (`application/wasm`); anything else is 404 |

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get as route_get;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use trellis_controller::StatusReport;
use trellis_sources::Severity;
use trellis_xds::SyncRegistry;

/// State shared between the control loop and the admin endpoint.
#[derive(Debug, Default)]
pub struct AdminState {
    /// The latest status report.
    pub report: RwLock<Arc<StatusReport>>,
    /// Connected proxies.
    pub registry: Arc<SyncRegistry>,
    /// The first configuration was published.
    pub ready: AtomicBool,
    /// Translations since start.
    pub translations: AtomicU64,
    /// Total time spent translating, in microseconds.
    pub translation_micros: AtomicU64,
    /// The module store: modules the published configuration uses are served at
    /// `/wasm/<sha256>`.
    pub modules: OnceLock<trellis_modules::ModuleStore>,
    /// With `--kubernetes`: the API server connection, watches, status writes, leadership.
    pub kubernetes: OnceLock<Arc<trellis_kube::Health>>,
    /// Clients refused by a limit, by server and limit.
    pub limit_hits: Arc<trellis_xds::LimitHits>,
    /// With `--ca-dir`: the root's expiry and the certificate service's counters.
    pub ca: OnceLock<(std::time::SystemTime, Arc<trellis_ca::service::CaStats>)>,
    /// Every pod's service account, by namespace and name, from the latest input (the
    /// certificate service authenticates callers against it).
    pub pod_accounts: RwLock<Arc<std::collections::BTreeMap<(String, String), String>>>,
    /// Every Gateway, by namespace and name (their proxies' tokens are checked against it).
    pub gateway_names: RwLock<Arc<std::collections::BTreeSet<(String, String)>>>,
    /// Health scores from the proxies' stats.
    pub telemetry: crate::telemetry::Telemetry,
    /// Every namespace seen, and whether it is in the mesh (for the injection webhook).
    pub namespace_mesh: RwLock<Arc<std::collections::BTreeMap<String, bool>>>,
    /// The vet findings about what is served, from the latest translation.
    pub vet: RwLock<Arc<Vec<trellis_vet::Finding>>>,
    /// The latest input (objects and the problems reading them), for the console.
    pub load: RwLock<Arc<trellis_sources::Load>>,
    /// The latest translation, for `GET /api/explain`.
    pub translation: RwLock<Arc<trellis_translate::Translation>>,
}

impl AdminState {
    /// The latest report.
    pub fn report(&self) -> Arc<StatusReport> {
        self.report.read().map(|r| r.clone()).unwrap_or_default()
    }

    /// Records every pod's service account (and every Gateway) from an input set.
    pub fn set_pod_accounts(&self, input: &trellis_model::InputSet) {
        let accounts = input
            .pods
            .iter()
            .map(|(key, pod)| {
                (
                    (key.namespace.clone(), key.name.clone()),
                    trellis_model::mesh::pod_service_account(pod),
                )
            })
            .collect();
        if let Ok(mut a) = self.pod_accounts.write() {
            *a = Arc::new(accounts);
        }
        let gateways = input
            .gateways
            .keys()
            .map(|k| (k.namespace.clone(), k.name.clone()))
            .collect();
        if let Ok(mut g) = self.gateway_names.write() {
            *g = Arc::new(gateways);
        }
        let namespaces = input
            .namespaces
            .keys()
            .map(|k| {
                (
                    k.name.clone(),
                    trellis_model::mesh::namespace_in_mesh(input, &k.name),
                )
            })
            .collect();
        if let Ok(mut n) = self.namespace_mesh.write() {
            *n = Arc::new(namespaces);
        }
    }

    /// Whether namespace `name` is in the mesh, if the control plane has seen it.
    pub fn namespace_meshed(&self, name: &str) -> Option<bool> {
        self.namespace_mesh.read().ok()?.get(name).copied()
    }

    /// The service account of a workload the certificate service is asked about: a pod's, or
    /// for a Gateway that exists, its proxies' ([`trellis_ca::gateway_service_account`]).
    pub fn workload_service_account(
        &self,
        workload: trellis_ca::token::Workload<'_>,
    ) -> Option<String> {
        use trellis_ca::token::Workload;
        match workload {
            Workload::Pod { namespace, name } => self.pod_service_account(namespace, name),
            Workload::Gateway { namespace, name } => {
                let gateways = self.gateway_names.read().ok()?.clone();
                gateways
                    .contains(&(namespace.to_string(), name.to_string()))
                    .then(|| trellis_ca::gateway_service_account(name))
            }
        }
    }

    /// A pod's service account, while the pod exists.
    pub fn pod_service_account(&self, namespace: &str, name: &str) -> Option<String> {
        let accounts = self.pod_accounts.read().ok()?.clone();
        accounts
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The latest input.
    pub fn load(&self) -> Arc<trellis_sources::Load> {
        self.load.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// Replaces the latest input.
    pub fn set_load(&self, load: Arc<trellis_sources::Load>) {
        if let Ok(mut l) = self.load.write() {
            *l = load;
        }
    }

    /// The latest translation.
    pub fn translation(&self) -> Arc<trellis_translate::Translation> {
        self.translation
            .read()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Replaces the latest translation.
    pub fn set_translation(&self, translation: Arc<trellis_translate::Translation>) {
        if let Ok(mut t) = self.translation.write() {
            *t = translation;
        }
    }

    /// Replaces the vet findings.
    pub fn set_vet(&self, findings: Vec<trellis_vet::Finding>) {
        if let Ok(mut v) = self.vet.write() {
            *v = Arc::new(findings);
        }
    }

    /// Replaces the report.
    pub fn set_report(&self, report: StatusReport) {
        if let Ok(mut r) = self.report.write() {
            *r = Arc::new(report);
        }
    }
}

/// The admin router.
pub fn router(state: Arc<AdminState>) -> Router {
    crate::console::routes(Router::new())
        .route("/status", route_get(status))
        .route("/proxies", route_get(proxies))
        .route("/api/services", route_get(services))
        .route("/api/services/{namespace}/{name}", route_get(service))
        .route("/api/vet", route_get(vet))
        .route("/api/explain", route_get(crate::explain::api))
        .route("/api/traces", route_get(traces))
        .route("/api/traces/{trace_id}", route_get(trace))
        .route("/metrics", route_get(metrics))
        .route("/healthz", route_get(|| async { "ok\n" }))
        .route("/readyz", route_get(ready))
        .route("/wasm/{sha256}", route_get(module))
        .with_state(state)
}

/// `GET /api/services?sort=FIELD`: every Service's health, worst score first unless sorted by
/// another field (`rps`, `error_rate`, `p50_ms`, `p99_ms` descending; `namespace`, `name`
/// ascending; `health_state` worst first; `health_score` ascending).
async fn services(
    State(state): State<Arc<AdminState>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let mut rows = crate::console::service_rows(&state);
    let by = query.get("sort").map_or("health_score", String::as_str);
    match trellis_console::services::sort_services(&mut rows, by) {
        Ok(()) => axum::Json(rows).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

/// `GET /api/services/{ns}/{name}`: one Service's health with its callers (`edges`), score
/// `history`, the routes and policies that concern it (`objects`), its `endpoints`, recent and
/// notable `traces`, and vet `findings`.
async fn service(
    State(state): State<Arc<AdminState>>,
    axum::extract::Path((namespace, name)): axum::extract::Path<(String, String)>,
) -> Response {
    match crate::console::service_detail(&state, &namespace, &name) {
        Some(detail) => axum::Json(detail).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("no Service {namespace}/{name} is known\n"),
        )
            .into_response(),
    }
}

/// Traces listed at most per request.
const MAX_TRACE_LIST: usize = 1000;

/// `GET /api/traces?service=NS/NAME&limit=N` (newest first; every service without `service`):
/// trace summaries. `GET /api/traces?request_id=ID`: the trace of a request, whole.
async fn traces(
    State(state): State<Arc<AdminState>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Some(id) = query.get("request_id") {
        return match state.telemetry.with_traces(|t| t.by_request_id(id)) {
            Some(trace) => axum::Json(trace).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                format!("no trace of request {id:?} is held\n"),
            )
                .into_response(),
        };
    }
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => 20,
        Some(Ok(n)) if (1..=MAX_TRACE_LIST).contains(&n) => n,
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("limit: a number from 1 to {MAX_TRACE_LIST}\n"),
            )
                .into_response();
        }
    };
    let list = match query.get("service") {
        Some(service) if service.split('/').count() == 2 => state
            .telemetry
            .with_traces(|t| t.by_service(service, limit)),
        Some(service) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("service={service:?}: give NAMESPACE/NAME\n"),
            )
                .into_response();
        }
        None => state.telemetry.with_traces(|t| t.recent(limit)),
    };
    axum::Json(list).into_response()
}

/// `GET /api/traces/{trace_id}`: one trace's spans (32 hex digits).
async fn trace(
    State(state): State<Arc<AdminState>>,
    axum::extract::Path(trace_id): axum::extract::Path<String>,
) -> Response {
    match state
        .telemetry
        .with_traces(|t| t.trace(&trace_id.to_ascii_lowercase()))
    {
        Some(trace) => axum::Json(trace).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("no trace {trace_id:?} is held\n"),
        )
            .into_response(),
    }
}

/// Sidecars' connections outside the mesh's Services, by the caller's namespace and where
/// they went: `blocked`, `passthrough`, or `external:<ns>/<name>/<port>` (an ExternalService).
fn egress_metrics(out: &mut String, egress: &[(String, trellis_telemetry::Egress, u64)]) {
    let _ = writeln!(
        out,
        "# HELP trellis_egress_connections_total Sidecars' connections to destinations outside the mesh's Services: blocked, let through, or to a declared ExternalService."
    );
    let _ = writeln!(out, "# TYPE trellis_egress_connections_total counter");
    for (namespace, destination, n) in egress {
        let destination = match destination {
            trellis_telemetry::Egress::Blocked => "blocked".to_string(),
            trellis_telemetry::Egress::Passthrough => "passthrough".to_string(),
            trellis_telemetry::Egress::External(port) => format!("external:{port}"),
        };
        let _ = writeln!(
            out,
            "trellis_egress_connections_total{{namespace=\"{}\",destination=\"{}\"}} {n}",
            label(namespace),
            label(&destination)
        );
    }
}

/// Per edge (caller → Service): requests per second and error ratio.
fn edge_metrics(out: &mut String, edges: &[crate::telemetry::EdgeHealth]) {
    for (name, help, errors) in [
        (
            "trellis_edge_requests_per_second",
            "Requests per second from a caller to a Service over the window.",
            false,
        ),
        (
            "trellis_edge_error_ratio",
            "Failed share of a caller's requests to a Service over the window.",
            true,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for e in edges {
            let value = if errors {
                e.health.error_rate
            } else {
                e.health.rps
            };
            let _ = writeln!(
                out,
                "{name}{{caller=\"{}\",namespace=\"{}\",service=\"{}\"}} {value}",
                label(&e.caller),
                label(&e.health.namespace),
                label(&e.health.name)
            );
        }
    }
}

/// A Prometheus label value: backslashes, quotes and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The trace store's occupancy and the forwarder's losses.
fn trace_metrics(out: &mut String, telemetry: &crate::telemetry::Telemetry) {
    let (bytes, max, spans, traces, evicted) = telemetry.with_traces(|t| {
        (
            t.bytes(),
            t.config().max_bytes,
            t.spans(),
            t.traces(),
            t.evicted_traces(),
        )
    });
    let gauges: [(&str, &str, String); 4] = [
        (
            "trellis_trace_store_bytes",
            "Bytes the trace store holds.",
            bytes.to_string(),
        ),
        (
            "trellis_trace_store_max_bytes",
            "The trace store's bound.",
            max.to_string(),
        ),
        (
            "trellis_trace_store_spans",
            "Spans the trace store holds.",
            spans.to_string(),
        ),
        (
            "trellis_trace_store_traces",
            "Traces the trace store holds.",
            traces.to_string(),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {value}");
    }
    let counters: [(&str, &str, u64); 3] = [
        (
            "trellis_trace_store_evicted_traces_total",
            "Traces evicted to stay within the bound.",
            evicted,
        ),
        (
            "trellis_trace_spans_refused_total",
            "Spans refused (malformed ids, or over a per-trace or per-export limit).",
            telemetry
                .spans_refused
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "trellis_otlp_forward_dropped_total",
            "Trace exports not forwarded to --trace-forward-address (queue full or collector failing).",
            telemetry
                .forward_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {value}");
    }
}

/// Per Service: health score, requests per second, error ratio, latency quantiles.
fn service_metrics(out: &mut String, rows: &[crate::telemetry::ServiceHealth]) {
    let series: [(&str, &str, &str); 6] = [
        (
            "trellis_service_health_score",
            "Health score 0-100 (absent while idle before any score).",
            "score",
        ),
        (
            "trellis_service_requests_per_second",
            "Requests per second over the health window (--health-window-secs, 5 minutes by default).",
            "rps",
        ),
        (
            "trellis_service_error_ratio",
            "Failed share of requests over the health window (--health-window-secs, 5 minutes by default).",
            "errors",
        ),
        (
            "trellis_service_latency_p50_milliseconds",
            "Median latency over the health window (--health-window-secs, 5 minutes by default).",
            "p50",
        ),
        (
            "trellis_service_latency_p99_milliseconds",
            "99th percentile latency over the health window (--health-window-secs, 5 minutes by default).",
            "p99",
        ),
        (
            "trellis_service_within_latency_objective_ratio",
            "Share of requests within the Service's latency objective, timed by the policy filter.",
            "within",
        ),
    ];
    for (name, help, which) in series {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for r in rows {
            let value = match which {
                "score" => r.health_score.map(f64::from),
                "rps" => Some(r.rps),
                "errors" => Some(r.error_rate),
                "p50" => r.p50_ms,
                "within" => r.within_objective,
                _ => r.p99_ms,
            };
            if let Some(v) = value {
                let _ = writeln!(
                    out,
                    "{name}{{namespace=\"{}\",service=\"{}\"}} {v}",
                    r.namespace, r.name
                );
            }
        }
    }
}

/// Probes and metrics on a listener of their own (`--probe-address`).
pub fn probe_router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", route_get(metrics))
        .route("/healthz", route_get(|| async { "ok\n" }))
        .route("/readyz", route_get(ready))
        .with_state(state)
}

/// The module server on a listener of its own: only `/wasm/<sha256>`.
pub fn module_router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/wasm/{sha256}", route_get(module))
        .with_state(state)
}

/// `GET /api/vet[?namespace=NS][&severity=error|warning|info][&code=TRLnnnn]`: the findings
/// about what is served (docs/vet.md), as `trellis vet --output json` prints them.
async fn vet(
    State(state): State<Arc<AdminState>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let all = crate::console::vet_findings(&state);
    let wanted = |f: &&trellis_vet::Finding| {
        query
            .get("namespace")
            .is_none_or(|ns| &f.object.namespace == ns)
            && query
                .get("severity")
                .is_none_or(|s| f.severity.to_string() == *s)
            && query.get("code").is_none_or(|c| f.code.id() == c)
    };
    let findings: Vec<trellis_vet::Finding> = all.iter().filter(wanted).cloned().collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::vet::render(&findings, crate::vet::Output::Json),
    )
        .into_response()
}

async fn status(State(state): State<Arc<AdminState>>) -> Response {
    axum::Json(state.report().as_ref().clone()).into_response()
}

async fn module(
    State(state): State<Arc<AdminState>>,
    axum::extract::Path(sha256): axum::extract::Path<String>,
) -> Response {
    match state.modules.get().and_then(|m| m.served(&sha256)) {
        Some(bytes) => ([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no module with this sha256 is in use\n",
        )
            .into_response(),
    }
}

async fn proxies(State(state): State<Arc<AdminState>>) -> Response {
    axum::Json(proxies_with_classes(&state)).into_response()
}

/// Every connected proxy, with its sidecar class and workload certificate when it has them.
pub fn proxies_with_classes(state: &AdminState) -> Vec<trellis_xds::ProxySync> {
    let report = state.report();
    let classes: std::collections::HashMap<String, &str> = report
        .sidecars
        .iter()
        .map(|s| (format!("pod/{}", s.pod), s.status.class.as_str()))
        .collect();
    let mut proxies = state.registry.proxies();
    let ca = state.ca.get().map(|(_, stats)| stats);
    for p in &mut proxies {
        p.class = classes.get(&p.key).map(|c| c.to_string());
        p.certificate =
            ca.and_then(|stats| stats.latest(&p.key))
                .map(|issued| trellis_xds::ProxyCertificate {
                    identity: issued.identity,
                    not_after: issued
                        .not_after
                        .duration_since(std::time::SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or_default(),
                });
    }
    proxies
}

async fn ready(State(state): State<Arc<AdminState>>) -> Response {
    let kubernetes = state.kubernetes.get().map(|h| h.readiness());
    if let Some(Err(waiting)) = &kubernetes {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{waiting}\n")).into_response();
    }
    if !state.ready.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no configuration published yet\n",
        )
            .into_response();
    }
    match kubernetes {
        Some(Ok(note)) => (StatusCode::OK, format!("ready\n{note}\n")).into_response(),
        _ => (StatusCode::OK, "ready\n").into_response(),
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    let mut out = String::new();
    let totals = state.registry.totals();
    let _ = writeln!(
        out,
        "# HELP trellis_xds_connected_proxies ADS streams currently open."
    );
    let _ = writeln!(out, "# TYPE trellis_xds_connected_proxies gauge");
    let _ = writeln!(
        out,
        "trellis_xds_connected_proxies {}",
        state.registry.connected()
    );
    type Total = fn(&trellis_xds::TypeTotals) -> u64;
    let series: [(&str, &str, Total); 4] = [
        ("trellis_xds_responses_total", "xDS responses sent.", |t| {
            t.responses
        }),
        (
            "trellis_xds_acks_total",
            "xDS responses accepted by proxies.",
            |t| t.acks,
        ),
        (
            "trellis_xds_nacks_total",
            "xDS responses rejected by proxies (they keep their previous config).",
            |t| t.nacks,
        ),
        (
            "trellis_xds_sent_bytes_total",
            "Bytes of xDS resources sent.",
            |t| t.bytes,
        ),
    ];
    for (name, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for t in trellis_xds::ResourceType::ALL {
            let v = totals.get(&t).map(value).unwrap_or(0);
            let _ = writeln!(out, "{name}{{type=\"{}\"}} {v}", t.short_name());
        }
    }
    let _ = writeln!(
        out,
        "# HELP trellis_translations_total Configurations translated."
    );
    let _ = writeln!(out, "# TYPE trellis_translations_total counter");
    let _ = writeln!(
        out,
        "trellis_translations_total {}",
        state.translations.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP trellis_translation_seconds_total Time spent translating."
    );
    let _ = writeln!(out, "# TYPE trellis_translation_seconds_total counter");
    let _ = writeln!(
        out,
        "trellis_translation_seconds_total {}",
        state.translation_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    let report = state.report();
    let errors = report
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let _ = writeln!(
        out,
        "# HELP trellis_config_errors Input problems currently reported (files not applied, duplicates)."
    );
    let _ = writeln!(out, "# TYPE trellis_config_errors gauge");
    let _ = writeln!(out, "trellis_config_errors {errors}");
    let _ = writeln!(
        out,
        "# HELP trellis_limit_hits_total Clients refused by a limit (connections, request sizes, deadlines, subscriptions), by server."
    );
    let _ = writeln!(out, "# TYPE trellis_limit_hits_total counter");
    for (server, limit, hits) in state.limit_hits.counts() {
        let _ = writeln!(
            out,
            "trellis_limit_hits_total{{server=\"{server}\",limit=\"{limit}\"}} {hits}"
        );
    }
    if let Some(modules) = state.modules.get() {
        let _ = writeln!(
            out,
            "# HELP trellis_module_cache_bytes Bytes of verified Wasm modules held."
        );
        let _ = writeln!(out, "# TYPE trellis_module_cache_bytes gauge");
        let _ = writeln!(out, "trellis_module_cache_bytes {}", modules.cached_bytes());
    }
    if let Some(health) = state.kubernetes.get() {
        kubernetes_metrics(&mut out, &health.snapshot());
    }
    if let Some((root_expiry, stats)) = state.ca.get() {
        ca_metrics(&mut out, *root_expiry, stats);
    }
    service_metrics(&mut out, &state.telemetry.services());
    edge_metrics(&mut out, &state.telemetry.all_edges());
    egress_metrics(&mut out, &state.telemetry.egress());
    trace_metrics(&mut out, &state.telemetry);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The certificate authority's series.
fn ca_metrics(
    out: &mut String,
    root_expiry: std::time::SystemTime,
    stats: &trellis_ca::service::CaStats,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let expiry = root_expiry
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "# HELP trellis_ca_root_expiry_timestamp_seconds When the CA's root certificate expires."
    );
    let _ = writeln!(out, "# TYPE trellis_ca_root_expiry_timestamp_seconds gauge");
    let _ = writeln!(out, "trellis_ca_root_expiry_timestamp_seconds {expiry}");
    let _ = writeln!(
        out,
        "# HELP trellis_ca_certificates_issued_total Workload certificates signed."
    );
    let _ = writeln!(out, "# TYPE trellis_ca_certificates_issued_total counter");
    let _ = writeln!(
        out,
        "trellis_ca_certificates_issued_total {}",
        stats.issued.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP trellis_ca_requests_refused_total Certificate requests refused, by reason."
    );
    let _ = writeln!(out, "# TYPE trellis_ca_requests_refused_total counter");
    for (reason, n) in [
        ("unauthenticated", &stats.unauthenticated),
        ("bad_csr", &stats.bad_csr),
    ] {
        let _ = writeln!(
            out,
            "trellis_ca_requests_refused_total{{reason=\"{reason}\"}} {}",
            n.load(Relaxed)
        );
    }
}

/// The Kubernetes provider's series.
fn kubernetes_metrics(out: &mut String, h: &trellis_kube::HealthSnapshot) {
    let gauge = |out: &mut String, name: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {value}");
    };
    let counter = |out: &mut String, name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {value}");
    };
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    gauge(
        out,
        "trellis_kubernetes_connected",
        "1 while the Kubernetes API server answers.",
        flag(h.connected),
    );
    gauge(
        out,
        "trellis_kubernetes_synced",
        "1 once every watched kind was listed.",
        flag(h.synced),
    );
    gauge(
        out,
        "trellis_kubernetes_disconnected_seconds",
        "How long the API server has been unreachable (0 while it answers).",
        h.disconnected_seconds.unwrap_or(0.0),
    );
    gauge(
        out,
        "trellis_leader",
        "1 while this replica holds the leader Lease and writes status.",
        flag(h.leader),
    );
    counter(
        out,
        "trellis_leader_transitions_total",
        "Times this replica became or stopped being the leader.",
        h.leader_transitions,
    );
    for (name, help, series) in [
        (
            "trellis_kubernetes_watch_errors_total",
            "Watch errors (the watch is retried; the last good configuration stays).",
            &h.watch_errors,
        ),
        (
            "trellis_kubernetes_relists_total",
            "Watches restarted from a fresh list (410 Gone, or a watch that could not resume).",
            &h.relists,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for kind in trellis_kube::kinds::WATCHED.iter() {
            let v = series.get(kind.kind.name()).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}{{kind=\"{}\"}} {v}", kind.kind.name());
        }
    }
    counter(
        out,
        "trellis_kubernetes_status_writes_total",
        "Status subresource writes.",
        h.status_writes,
    );
    counter(
        out,
        "trellis_kubernetes_status_write_errors_total",
        "Status writes that failed (retried with backoff).",
        h.status_write_errors,
    );
    counter(
        out,
        "trellis_kubernetes_status_conflicts_total",
        "Status writes refused because the object changed meanwhile (retried).",
        h.status_conflicts,
    );
}

/// How the CLI commands reach the admin endpoint.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminClient {
    /// The control plane's admin address.
    #[arg(long, default_value = "127.0.0.1:18001")]
    pub admin_address: String,
    /// A file holding the admin token, when the endpoint requires one.
    #[arg(long, env = "TRELLIS_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,
}

/// For the CLI commands: GETs `path` from the admin endpoint on a runtime of its own, saying
/// which endpoint could not be reached.
pub fn get_blocking(client: &AdminClient, path: &str) -> anyhow::Result<String> {
    let token = match &client.admin_token_file {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let address = &client.admin_address;
    runtime
        .block_on(get(address, path, token.as_deref()))
        .with_context(|| format!("cannot reach the control plane's admin endpoint at {address}"))
}

/// A plain HTTP GET to the admin endpoint (with the bearer token, if given), returning the
/// body of a 200 response.
pub async fn get(address: &str, path: &str, token: Option<&str>) -> anyhow::Result<String> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("cannot connect to {address}"))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let mut request = hyper::Request::get(path).header(header::HOST, address);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new())?)
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body).to_string();
    if !status.is_success() {
        anyhow::bail!("{path} answered {status}: {text}");
    }
    Ok(text)
}
