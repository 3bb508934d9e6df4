//! The console on the admin server: the `/ui` pages and the data behind them, assembled from
//! what the control plane holds (health scores, traces, proxies, status, the latest input and
//! its vet findings) and rendered by `trellis-console`. Every page has a JSON twin under `/api`
//! (or `/proxies`), built by the same functions here, so a page shows what its twin says.
//!
//! | page | twin |
//! |------|------|
//! | `/ui/services?sort=&namespace=` | `/api/services?sort=` |
//! | `/ui/services/{ns}/{name}` | `/api/services/{ns}/{name}` |
//! | `/ui/graph?namespace=` | `/api/graph?namespace=` |
//! | `/ui/traces?service=&request_id=&status=error`, `/ui/traces/{id}` | `/api/traces…` |
//! | `/ui/proxies` | `/proxies` |
//! | `/ui/vet`, `/ui/objects/{kind}/{ns}/{name}` | `/api/vet`, `/status` |

use crate::admin::AdminState;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use trellis_console::data::{
    ConditionView, EdgeRow, EndpointView, FindingView, HistoryPoint, ObjectView, RelatedObject,
    ServiceDetail, ServiceRow, TraceRow, TraceView,
};
use trellis_console::graph::{Graph, Workload};

/// Adds the console's routes.
pub fn routes(router: Router<Arc<AdminState>>) -> Router<Arc<AdminState>> {
    router
        .route("/ui", get(|| async { Redirect::to("/ui/services") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/services") }))
        .route("/ui/services", get(services_page))
        .route("/ui/services/{namespace}/{name}", get(service_page))
        .route("/ui/graph", get(graph_page))
        .route("/api/graph", get(graph_json))
        .route("/ui/traces", get(traces_page))
        .route("/ui/traces/{trace_id}", get(trace_page))
        .route("/ui/proxies", get(proxies_page))
        .route("/ui/vet", get(vet_page))
        .route("/ui/objects/{kind}/{namespace}/{name}", get(object_page))
}

type Params = Query<HashMap<String, String>>;

fn state_name(state: trellis_health::State) -> String {
    format!("{state:?}").to_lowercase()
}

fn row(r: &crate::telemetry::ServiceHealth) -> ServiceRow {
    ServiceRow {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        rps: r.rps,
        error_rate: r.error_rate,
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
        within_objective: r.within_objective,
        retry_ratio: r.retry_ratio,
        health_score: r.health_score,
        health_state: state_name(r.health_state),
        health_reason: r.health_reason.clone(),
    }
}

/// Every scored Service.
pub fn service_rows(state: &AdminState) -> Vec<ServiceRow> {
    state.telemetry.services().iter().map(row).collect()
}

/// One caller's edge to a Service; `mtls`: the Services whose endpoints take mutual TLS.
fn edge_row(e: &crate::telemetry::EdgeHealth, mtls: &BTreeSet<(String, String)>) -> EdgeRow {
    let service = (e.health.namespace.clone(), e.health.name.clone());
    EdgeRow {
        caller: e.caller.clone(),
        mtls: e.caller.starts_with("spiffe://") && mtls.contains(&service),
        health: row(&e.health),
    }
}

/// The Services whose endpoints, in every cluster a proxy holds for them (a Gateway's or a
/// sidecar class's), take the mesh's mutual TLS.
fn mtls_services(ir: &trellis_translate::ir::Ir) -> BTreeSet<(String, String)> {
    let mut seen: BTreeMap<(String, String), bool> = BTreeMap::new();
    for cluster in ir.clusters() {
        let Some(key) = trellis_translate::policy::cluster_service(&cluster.name) else {
            continue;
        };
        if cluster.endpoints.is_empty() {
            continue;
        }
        let all = cluster.endpoints.iter().all(|e| e.mtls);
        *seen.entry((key.namespace, key.name)).or_insert(true) &= all;
    }
    seen.into_iter()
        .filter(|(_, all)| *all)
        .map(|(k, _)| k)
        .collect()
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

fn not_found(message: String) -> Response {
    (StatusCode::NOT_FOUND, format!("{message}\n")).into_response()
}

async fn services_page(State(state): State<Arc<AdminState>>, Query(q): Params) -> Response {
    let sort = q.get("sort").map_or("health_score", String::as_str);
    let namespace = q.get("namespace").map(String::as_str);
    // Faults in force are findings of the configuration alone: the stored ones.
    let chaos: Vec<trellis_vet::Finding> = state
        .vet
        .read()
        .map(|v| {
            v.iter()
                .filter(|f| f.code == trellis_vet::Code::FaultsInjected)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    match trellis_console::services::services_page(
        service_rows(&state),
        sort,
        namespace,
        &finding_views(&chaos),
    ) {
        Ok(html) => Html(html).into_response(),
        Err(e) => bad_request(e),
    }
}

/// The conditions in an object's reported status, labelled by parent or ancestor.
fn conditions_of(status: &serde_json::Value) -> Vec<(String, ConditionView)> {
    let mut out = Vec::new();
    let read = |v: &serde_json::Value| serde_json::from_value::<ConditionView>(v.clone()).ok();
    for c in status["conditions"].as_array().into_iter().flatten() {
        out.extend(read(c).map(|c| ("object".to_string(), c)));
    }
    for list in ["parents", "ancestors"] {
        for p in status[list].as_array().into_iter().flatten() {
            let r = if list == "parents" {
                &p["parentRef"]
            } else {
                &p["ancestorRef"]
            };
            let at = format!(
                "{} {}",
                r["kind"].as_str().unwrap_or("Gateway"),
                r["name"].as_str().unwrap_or_default()
            );
            for c in p["conditions"].as_array().into_iter().flatten() {
                out.extend(read(c).map(|c| (at.clone(), c)));
            }
        }
    }
    for l in status["listeners"].as_array().into_iter().flatten() {
        let at = format!("listener {}", l["name"].as_str().unwrap_or_default());
        for c in l["conditions"].as_array().into_iter().flatten() {
            out.extend(read(c).map(|c| (at.clone(), c)));
        }
    }
    out
}

/// The reported status of every object, by (kind, namespace, name).
fn statuses(state: &AdminState) -> BTreeMap<(String, String, String), serde_json::Value> {
    state
        .report()
        .objects
        .iter()
        .map(|o| {
            (
                (
                    o.kind.clone(),
                    o.metadata.namespace.clone().unwrap_or_default(),
                    o.metadata.name.clone(),
                ),
                o.status.clone(),
            )
        })
        .collect()
}

/// Routes to the Service and policies that target it, with their conditions.
fn related_objects(state: &AdminState, ns: &str, name: &str) -> Vec<RelatedObject> {
    let load = state.load();
    let input = &load.input;
    let statuses = statuses(state);
    let mut out = Vec::new();
    let mut push = |kind: &str, key: &trellis_model::ObjectKey, relation: &str| {
        let status = statuses.get(&(kind.to_string(), key.namespace.clone(), key.name.clone()));
        out.push(RelatedObject {
            kind: kind.to_string(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            relation: relation.to_string(),
            conditions: status.map(conditions_of).unwrap_or_default(),
        });
    };
    for (key, route) in &input.http_routes {
        let here = |n: Option<&String>| n.map_or(key.namespace.as_str(), String::as_str) == ns;
        if route
            .spec
            .parent_refs
            .iter()
            .any(|p| p.kind == "Service" && p.name == name && here(p.namespace.as_ref()))
        {
            push("HTTPRoute", key, "mesh route (parent)");
        } else if route.spec.rules.iter().any(|r| {
            r.backend_refs
                .iter()
                .any(|b| b.kind == "Service" && b.name == name && here(b.namespace.as_ref()))
        }) {
            push("HTTPRoute", key, "backend");
        }
    }
    let targets = |spec: &serde_json::Value| {
        spec["targetRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["kind"] == "Service" && t["name"] == name)
    };
    macro_rules! policies {
        ($($field:ident => $kind:literal),+) => {$(
            for (key, p) in &input.$field {
                if key.namespace == ns && targets(&p.spec) {
                    push($kind, key, "target");
                }
            }
        )+};
    }
    policies!(
        authorization_policies => "AuthorizationPolicy",
        rate_limit_policies => "RateLimitPolicy",
        wasm_filters => "WasmFilter",
        backend_traffic_policies => "BackendTrafficPolicy",
        tracing_policies => "TracingPolicy",
        health_policies => "HealthPolicy"
    );
    out
}

/// The Service's endpoints, their pods, and the sidecars beside them.
fn endpoints(state: &AdminState, ns: &str, name: &str) -> Vec<EndpointView> {
    let load = state.load();
    let report = state.report();
    let identities: HashMap<&str, &str> = report
        .sidecars
        .iter()
        .filter_map(|s| Some((s.pod.as_str(), s.status.identity.as_deref()?)))
        .collect();
    let proxies: HashMap<String, bool> = state
        .registry
        .proxies()
        .into_iter()
        .map(|p| {
            let synced = p.synced_version.is_some();
            (p.key, synced)
        })
        .collect();
    let mut out = Vec::new();
    for (key, slice) in &load.input.endpoint_slices {
        let owner = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"));
        if key.namespace != ns || owner.map(String::as_str) != Some(name) {
            continue;
        }
        for e in &slice.endpoints {
            let pod = e
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.clone());
            let pod_key = pod.as_ref().map(|p| format!("{ns}/{p}"));
            let proxy = pod_key.as_ref().and_then(|k| {
                let key = format!("pod/{k}");
                proxies
                    .get(&key)
                    .map(|synced| format!("{key} {}", if *synced { "SYNCED" } else { "STALE" }))
            });
            for address in &e.addresses {
                out.push(EndpointView {
                    address: address.clone(),
                    ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
                    pod: pod_key.clone(),
                    proxy: proxy.clone(),
                    identity: pod_key
                        .as_deref()
                        .and_then(|k| identities.get(k))
                        .map(|s| s.to_string()),
                });
            }
        }
    }
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out
}

/// Every vet finding about what is served: those of the latest translation, and those that
/// need traffic to see (route timeouts below their backends' observed p99).
pub fn vet_findings(state: &AdminState) -> Vec<trellis_vet::Finding> {
    let mut all: Vec<trellis_vet::Finding> = state
        .vet
        .read()
        .map(|v| v.as_ref().clone())
        .unwrap_or_default();
    let mut observations = trellis_vet::Observations::default();
    for r in state.telemetry.services() {
        let key = (r.namespace, r.name);
        if let Some(p99) = r.p99_ms {
            observations.p99_ms.insert(key.clone(), p99);
        }
        observations.retry_ratio.insert(key.clone(), r.retry_ratio);
        observations.rps.insert(key, r.rps);
    }
    observations.plaintext_connections = state.telemetry.plaintext_connections();
    observations.trace_forwarding = state
        .telemetry
        .with_traces(|t| t.context_forwarding())
        .into_iter()
        .filter_map(|(service, f)| {
            let (ns, name) = service.split_once('/')?;
            Some((
                (ns.to_string(), name.to_string()),
                trellis_vet::TraceForwarding {
                    served: f.served,
                    calls: f.calls,
                    continued: f.continued,
                },
            ))
        })
        .collect();
    observations.collector_exports = state.telemetry.collector_exports();
    all.extend(trellis_vet::observed(
        &state.load().input,
        &state.translation(),
        &observations,
    ));
    let builds: Vec<(String, Option<String>)> = state
        .registry
        .proxies()
        .into_iter()
        .map(|p| (p.key, p.build))
        .collect();
    all.extend(trellis_vet::proxy_builds(&builds));
    all.sort();
    all
}

fn finding_views(findings: &[trellis_vet::Finding]) -> Vec<FindingView> {
    findings
        .iter()
        .filter_map(|f| serde_json::from_value(serde_json::to_value(f).ok()?).ok())
        .collect()
}

fn trace_rows(list: Vec<trellis_telemetry::traces::TraceSummary>) -> Vec<TraceRow> {
    list.into_iter()
        .filter_map(|t| serde_json::from_value(serde_json::to_value(t).ok()?).ok())
        .collect()
}

/// Everything about one Service (`/api/services/{ns}/{name}` and its page).
pub fn service_detail(state: &AdminState, ns: &str, name: &str) -> Option<ServiceDetail> {
    let service = service_rows(state)
        .into_iter()
        .find(|r| r.namespace == ns && r.name == name)?;
    let history = state.telemetry.history(ns, name).unwrap_or_default();
    let objects = related_objects(state, ns, name);
    let mut traces = trace_rows(
        state
            .telemetry
            .with_traces(|t| t.by_service(&format!("{ns}/{name}"), 50)),
    );
    // Errors first, then the slowest; ten at most.
    traces.sort_by_key(|t| (!t.error, std::cmp::Reverse(t.duration_nanos)));
    traces.truncate(10);
    let vet = vet_findings(state);
    let concerned = |f: &&trellis_vet::Finding| {
        (f.object.kind == "Service" && f.object.namespace == ns && f.object.name == name)
            || objects.iter().any(|o| {
                o.kind == f.object.kind
                    && o.namespace == f.object.namespace
                    && o.name == f.object.name
            })
    };
    let findings: Vec<trellis_vet::Finding> = vet.iter().filter(concerned).cloned().collect();
    let mtls = mtls_services(&state.translation().ir);
    Some(ServiceDetail {
        edges: state
            .telemetry
            .edges(ns, name)
            .iter()
            .map(|e| edge_row(e, &mtls))
            .collect(),
        history: history
            .iter()
            .map(|e| HistoryPoint {
                score: e.score,
                state: state_name(e.state),
                reason: e.reason.clone(),
                requests: e.totals.requests,
                failures: e.totals.failures,
                p50_ms: e.totals.p50_ms,
                p99_ms: e.totals.p99_ms,
                burn_rate: Some(e.terms.burn_rate),
            })
            .collect(),
        endpoints: endpoints(state, ns, name),
        objects,
        traces,
        findings: finding_views(&findings),
        service,
    })
}

async fn service_page(
    State(state): State<Arc<AdminState>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    match service_detail(&state, &ns, &name) {
        Some(d) => Html(trellis_console::service::service_page(&d)).into_response(),
        None => not_found(format!("no Service {ns}/{name} has been scored")),
    }
}

/// What each workload identity (namespace, service account) stands for: the Services whose
/// endpoints are its pods, or a Gateway's proxies.
fn workloads(state: &AdminState) -> BTreeMap<(String, String), Vec<Workload>> {
    let load = state.load();
    let input = &load.input;
    let mut out: BTreeMap<(String, String), Vec<Workload>> = BTreeMap::new();
    for (key, slice) in &input.endpoint_slices {
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            continue;
        };
        for e in &slice.endpoints {
            let Some(pod) = e.target_ref.as_ref().and_then(|r| r.name.as_ref()) else {
                continue;
            };
            let Some(p) = input
                .pods
                .get(&trellis_model::ObjectKey::new(&key.namespace, pod))
            else {
                continue;
            };
            let sa = trellis_model::mesh::pod_service_account(p);
            let list = out.entry((key.namespace.clone(), sa)).or_default();
            let w = Workload::Service(key.namespace.clone(), service.clone());
            if !list.contains(&w) {
                list.push(w);
            }
        }
    }
    for key in input.gateways.keys() {
        out.entry((
            key.namespace.clone(),
            trellis_ca::gateway_service_account(&key.name),
        ))
        .or_default()
        .push(Workload::Gateway(key.namespace.clone(), key.name.clone()));
    }
    out
}

/// The graph of a namespace (default: the one holding the worst Service), and every namespace
/// with a scored Service.
fn graph_of(state: &AdminState, namespace: Option<&String>) -> (Graph, Vec<String>) {
    let mut rows = service_rows(state);
    let mut namespaces: Vec<String> = rows.iter().map(|r| r.namespace.clone()).collect();
    namespaces.sort();
    namespaces.dedup();
    let _ = trellis_console::services::sort_services(&mut rows, "health_score");
    let ns = namespace
        .cloned()
        .or_else(|| rows.first().map(|r| r.namespace.clone()))
        .unwrap_or_default();
    let mut edges: BTreeMap<(String, String), Vec<EdgeRow>> = BTreeMap::new();
    let mtls = mtls_services(&state.translation().ir);
    for e in state.telemetry.all_edges() {
        edges
            .entry((e.health.namespace.clone(), e.health.name.clone()))
            .or_default()
            .push(edge_row(&e, &mtls));
    }
    let g = trellis_console::graph::graph(&ns, &rows, &edges, &workloads(state));
    (g, namespaces)
}

async fn graph_page(State(state): State<Arc<AdminState>>, Query(q): Params) -> Response {
    let (g, namespaces) = graph_of(&state, q.get("namespace"));
    Html(trellis_console::graph::graph_page(&g, &namespaces)).into_response()
}

async fn graph_json(State(state): State<Arc<AdminState>>, Query(q): Params) -> Response {
    axum::Json(graph_of(&state, q.get("namespace")).0).into_response()
}

async fn traces_page(State(state): State<Arc<AdminState>>, Query(q): Params) -> Response {
    let nonempty = |k: &str| {
        q.get(k)
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.trim().to_string())
    };
    let query = trellis_console::traces::TraceQuery {
        service: nonempty("service"),
        request_id: nonempty("request_id"),
        errors: q.get("status").is_some_and(|s| s == "error"),
    };
    if let Some(id) = &query.request_id {
        return match state.telemetry.with_traces(|t| t.by_request_id(id)) {
            Some(trace) => Redirect::to(&format!("/ui/traces/{}", trace.trace_id)).into_response(),
            None => Html(trellis_console::traces::traces_page(&query, &[])).into_response(),
        };
    }
    let mut rows = match &query.service {
        Some(s) if s.split('/').count() == 2 => {
            trace_rows(state.telemetry.with_traces(|t| t.by_service(s, 200)))
        }
        Some(s) => return bad_request(format!("service={s:?}: give NAMESPACE/NAME")),
        None => trace_rows(state.telemetry.with_traces(|t| t.recent(200))),
    };
    if query.errors {
        rows.retain(|t| t.error);
    }
    rows.truncate(50);
    Html(trellis_console::traces::traces_page(&query, &rows)).into_response()
}

async fn trace_page(State(state): State<Arc<AdminState>>, Path(id): Path<String>) -> Response {
    let Some(trace) = state
        .telemetry
        .with_traces(|t| t.trace(&id.to_ascii_lowercase()))
    else {
        return not_found(format!("no trace {id:?} is held"));
    };
    let Some(view) = serde_json::to_value(&trace)
        .ok()
        .and_then(|v| serde_json::from_value::<TraceView>(v).ok())
    else {
        return not_found(format!("trace {id:?} cannot be shown"));
    };
    let health: BTreeMap<String, ServiceRow> = service_rows(&state)
        .into_iter()
        .map(|r| (format!("{}/{}", r.namespace, r.name), r))
        .collect();
    Html(trellis_console::traces::waterfall_page(&view, &health)).into_response()
}

async fn proxies_page(State(state): State<Arc<AdminState>>) -> Response {
    let proxies = crate::admin::proxies_with_classes(&state);
    Html(trellis_console::proxies::proxies_page(
        &proxies,
        std::time::SystemTime::now(),
    ))
    .into_response()
}

async fn vet_page(State(state): State<Arc<AdminState>>) -> Response {
    let findings = vet_findings(&state);
    Html(trellis_console::vet::vet_page(&finding_views(&findings))).into_response()
}

async fn object_page(
    State(state): State<Arc<AdminState>>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Response {
    let namespace = if namespace == "-" {
        String::new()
    } else {
        namespace
    };
    let statuses = statuses(&state);
    let status = statuses.get(&(kind.clone(), namespace.clone(), name.clone()));
    let findings = vet_findings(&state);
    let mine: Vec<trellis_vet::Finding> = findings
        .iter()
        .filter(|f| {
            f.object.kind == kind && f.object.namespace == namespace && f.object.name == name
        })
        .cloned()
        .collect();
    if status.is_none() && mine.is_empty() {
        return not_found(format!(
            "nothing is reported about {kind} {namespace}/{name}"
        ));
    }
    let object = ObjectView {
        kind,
        namespace,
        name,
    };
    let html = trellis_console::vet::object_page(
        &object,
        &status.map(conditions_of).unwrap_or_default(),
        &finding_views(&mine),
    );
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}
