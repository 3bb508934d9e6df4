//! Routes: matches that can never win (TRL0130), identical matches in two HTTPRoutes
//! (TRL0109), backends with no ready endpoints (TRL0173), and mesh routes no sidecar applies
//! (TRL0102).
//!
//! Shadowing is read from the IR, where every virtual host's routes are already in the order
//! Envoy tries them (Gateway API precedence): a route is unreachable when an earlier route of
//! the same virtual host matches every request it would.

use crate::{Code, Finding, ObjectRef, Severity};
use std::collections::BTreeSet;
use trellis_model::gateway::HttpRoute;
use trellis_model::{InputSet, ObjectKey};
use trellis_translate::StatusSet;
use trellis_translate::backend::{BackendRef, Backends, http_route_referrer};
use trellis_translate::ir::{ActionIr, ForwardIr, Ir, MatchIr, PathMatchIr, RouteIr, RouteOrigin};

/// Whether every request `b` matches is matched by `a` too.
pub(crate) fn covers(a: &MatchIr, b: &MatchIr) -> bool {
    let path = match (&a.path, &b.path) {
        (PathMatchIr::Exact(x), PathMatchIr::Exact(y)) => x == y,
        (PathMatchIr::Prefix(p), PathMatchIr::Exact(y) | PathMatchIr::Prefix(y)) => {
            prefix_covers(p, y)
        }
        (PathMatchIr::Regex(x), PathMatchIr::Regex(y)) => x == y,
        _ => false,
    };
    path && (a.method.is_none() || a.method == b.method)
        && a.headers.iter().all(|h| b.headers.contains(h))
        && a.query_params.iter().all(|q| b.query_params.contains(q))
}

/// Whether path prefix `p` (at element boundaries) matches every path starting with `q`.
fn prefix_covers(p: &str, q: &str) -> bool {
    let p = p.trim_end_matches('/');
    if p.is_empty() {
        return true;
    }
    let q = q.trim_end_matches('/');
    q == p || q.strip_prefix(p).is_some_and(|rest| rest.starts_with('/'))
}

/// Where one route came from: the HTTPRoute, rule and match.
fn origin(route: &RouteIr) -> Option<(&ObjectKey, usize, usize)> {
    match &route.origin {
        RouteOrigin::HttpRoute {
            route,
            rule,
            match_index,
        } => Some((route, *rule, *match_index)),
        _ => None,
    }
}

fn describe(m: &MatchIr) -> String {
    let mut parts = vec![match &m.path {
        PathMatchIr::Exact(p) => format!("path = {p}"),
        PathMatchIr::Prefix(p) => format!("path prefix {p}"),
        PathMatchIr::Regex(r) => format!("path ~ {r}"),
    }];
    if let Some(method) = m.method {
        parts.push(format!("method {}", format!("{method:?}").to_uppercase()));
    }
    for h in &m.headers {
        parts.push(format!("header {}", h.name));
    }
    for q in &m.query_params {
        parts.push(format!("query {}", q.name));
    }
    parts.join(", ")
}

/// TRL0130 and TRL0109 over one ordered list of routes (a virtual host's, or a mesh route
/// configuration's); `place` says where it is served.
fn shadowed_in(routes: &[RouteIr], place: &str, out: &mut BTreeSet<Finding>) {
    for (j, later) in routes.iter().enumerate() {
        let Some((route, rule, index)) = origin(later) else {
            continue;
        };
        let Some(earlier) = routes[..j]
            .iter()
            .find(|e| covers(&e.matcher, &later.matcher))
        else {
            continue;
        };
        let Some((winner, win_rule, win_index)) = origin(earlier) else {
            continue;
        };
        let identical = earlier.matcher == later.matcher;
        let field = format!("spec.rules[{rule}].matches[{index}]");
        let finding = if identical && winner != route {
            Finding {
                severity: Severity::Warning,
                code: Code::IdenticalMatches,
                object: ObjectRef::new("HTTPRoute", route),
                field,
                message: format!(
                    "its match ({}) is identical to HTTPRoute {winner} rule {win_rule} match \
                     {win_index} on {place}; that route wins (it is older, or first by name) and \
                     this one never sees a request",
                    describe(&later.matcher)
                ),
                fix: "make the matches differ (a header, a path), or remove one of the routes"
                    .to_string(),
            }
        } else {
            let by = if winner == route {
                format!("rule {win_rule} match {win_index} of the same route")
            } else {
                format!("HTTPRoute {winner} rule {win_rule} match {win_index}")
            };
            Finding {
                severity: Severity::Warning,
                code: Code::UnreachableMatch,
                object: ObjectRef::new("HTTPRoute", route),
                field,
                message: format!(
                    "its match ({}) can never win on {place}: {by} ({}) comes first and takes \
                     every request it would",
                    describe(&later.matcher),
                    describe(&earlier.matcher)
                ),
                fix: "narrow the earlier match or remove this one; Gateway API orders matches \
                      by exact path, longest prefix, method, headers, query parameters, then \
                      route age"
                    .to_string(),
            }
        };
        out.insert(finding);
    }
}

/// TRL0130 and TRL0109 on every Gateway listener and mesh route configuration.
pub(crate) fn shadowed_matches(_input: &InputSet, ir: &Ir, out: &mut Vec<Finding>) {
    let mut found = BTreeSet::new();
    for (proxy, p) in &ir.proxies {
        for listener in &p.listeners {
            for chain in &listener.chains {
                for vh in &chain.virtual_hosts {
                    let place = format!("{proxy} listener {} host {}", vh.listener, vh.domain);
                    shadowed_in(&vh.routes, &place, &mut found);
                }
            }
        }
    }
    for sidecar in ir.sidecars.values() {
        for (name, config) in &sidecar.route_configs {
            shadowed_in(
                &config.routes,
                &format!("the mesh routes {name}"),
                &mut found,
            );
        }
    }
    out.extend(found);
}

/// TRL0173: a Service an HTTPRoute sends to that has no ready endpoints.
pub(crate) fn empty_backends(input: &InputSet, status: &StatusSet, out: &mut Vec<Finding>) {
    let backends = Backends::new(input);
    for (key, route) in &input.http_routes {
        // Only routes some Trellis Gateway or the mesh serves.
        if !status.http_routes.contains_key(key) {
            continue;
        }
        for (r, rule) in route.spec.rules.iter().enumerate() {
            for (b, backend) in rule.backend_refs.iter().enumerate() {
                if backend.weight == 0 || backend.kind != "Service" || !backend.group.is_empty() {
                    continue;
                }
                let target = BackendRef {
                    group: "",
                    kind: "Service",
                    name: &backend.name,
                    namespace: backend.namespace.as_deref(),
                    port: backend.port,
                };
                let Ok(cluster) = backends.resolve(http_route_referrer(&key.namespace), target)
                else {
                    continue; // A status condition says why.
                };
                if cluster.endpoints.is_empty() {
                    let ns = backend.namespace.as_deref().unwrap_or(&key.namespace);
                    out.push(Finding {
                        severity: Severity::Warning,
                        code: Code::NoReadyEndpoints,
                        object: ObjectRef::new("HTTPRoute", key),
                        field: format!("spec.rules[{r}].backendRefs[{b}]"),
                        message: format!(
                            "Service {ns}/{} has no ready endpoints: the requests this rule \
                             sends to it are answered 503",
                            backend.name
                        ),
                        fix: format!(
                            "check that Service {ns}/{}'s selector matches running, ready pods \
                             (its EndpointSlices list none ready)",
                            backend.name
                        ),
                    });
                }
            }
        }
    }
}

/// The namespaces whose sidecars would apply a mesh route: a consumer route (in another
/// namespace than its Service) applies in its own namespace; a producer route, everywhere.
fn mesh_route_applies(input: &InputSet, key: &ObjectKey, route: &HttpRoute) -> Option<bool> {
    let parents: Vec<_> = route
        .spec
        .parent_refs
        .iter()
        .filter(|p| p.kind == "Service" && p.group.is_empty())
        .collect();
    if parents.is_empty() {
        return None;
    }
    let any_meshed = input
        .namespaces
        .keys()
        .any(|n| trellis_model::mesh::namespace_in_mesh(input, &n.name));
    let applies = parents.iter().any(|p| {
        let service_ns = p.namespace.as_deref().unwrap_or(&key.namespace);
        if service_ns == key.namespace {
            any_meshed
        } else {
            trellis_model::mesh::namespace_in_mesh(input, &key.namespace)
        }
    });
    Some(applies)
}

/// TRL0102: an HTTPRoute with a Service parent that no sidecar applies.
pub(crate) fn unused_mesh_routes(input: &InputSet, out: &mut Vec<Finding>) {
    for (key, route) in &input.http_routes {
        if mesh_route_applies(input, key, route) != Some(false) {
            continue;
        }
        let consumer = route.spec.parent_refs.iter().any(|p| {
            p.kind == "Service" && p.namespace.as_deref().is_some_and(|n| n != key.namespace)
        });
        let (message, fix) = if consumer {
            (
                format!(
                    "a consumer route (its Service is in another namespace) applies to the \
                     sidecars of namespace {}, which is not in the mesh",
                    key.namespace
                ),
                format!(
                    "label namespace {} trellis.dev/mesh=enabled, or move the route to a \
                     namespace in the mesh",
                    key.namespace
                ),
            )
        } else {
            (
                "a mesh route (Service parent) applies to sidecars, and no namespace is in the \
                 mesh"
                    .to_string(),
                "label the callers' namespaces trellis.dev/mesh=enabled".to_string(),
            )
        };
        out.push(Finding {
            severity: Severity::Warning,
            code: Code::MeshRouteUnused,
            object: ObjectRef::new("HTTPRoute", key),
            field: "spec.parentRefs".to_string(),
            message,
            fix,
        });
    }
}

/// The Service a cluster sends to, as (namespace, name).
fn cluster_service(cluster: &str) -> Option<(String, String)> {
    trellis_translate::policy::cluster_service(cluster).map(|k| (k.namespace, k.name))
}

/// Each backend Service (namespace, name) of a forwarding route, with the route's action.
fn backend_services(route: &RouteIr) -> impl Iterator<Item = (&ForwardIr, (String, String))> {
    let forward = match &route.action {
        ActionIr::Forward(f) => Some(f),
        _ => None,
    };
    forward.into_iter().flat_map(|f| {
        f.backends
            .iter()
            .filter_map(move |b| Some((f, b.cluster.as_deref().and_then(cluster_service)?)))
    })
}

/// TRL0903: a route whose request timeout is below the observed p99 latency of a Service it
/// sends to (`p99_ms`, by namespace and name, from the health scores): more than one request
/// in a hundred is cut off with a 504.
pub(crate) fn timeouts_below_p99(
    ir: &Ir,
    p99_ms: &std::collections::BTreeMap<(String, String), f64>,
    out: &mut Vec<Finding>,
) {
    for route in ir.routes() {
        let Some((key, rule, _)) = origin(route) else {
            continue;
        };
        for (f, service) in backend_services(route) {
            let (Some(timeout), Some(p99)) =
                (f.timeout.filter(|t| !t.is_zero()), p99_ms.get(&service))
            else {
                continue;
            };
            let limit = timeout.as_secs_f64() * 1000.0;
            if *p99 <= limit {
                continue;
            }
            out.push(Finding {
                severity: Severity::Warning,
                code: Code::TimeoutBelowLatency,
                object: ObjectRef::new("HTTPRoute", key),
                field: format!("spec.rules[{rule}].timeouts.request"),
                message: format!(
                    "the request timeout ({limit:.0} ms) is below the p99 latency of Service \
                     {}/{} ({p99:.0} ms over the health window): more than one request in a \
                     hundred is cut off with a 504",
                    service.0, service.1
                ),
                fix: format!(
                    "raise the timeout above {p99:.0} ms, or make Service {}/{} faster",
                    service.0, service.1
                ),
            });
        }
    }
}

/// The share of a Service's requests that may be retries before retries are called out.
pub const RETRY_AMPLIFICATION: f64 = 0.2;

/// TRL0904: a route retries toward a Service more than [`RETRY_AMPLIFICATION`] of whose
/// requests are retries (`retry_ratio`, from the health scores): the backend fails often, and
/// each failure is sent again, so the callers multiply the load on it just when it struggles.
pub(crate) fn retry_amplification(
    ir: &Ir,
    retry_ratio: &std::collections::BTreeMap<(String, String), f64>,
    out: &mut Vec<Finding>,
) {
    for route in ir.routes() {
        let Some((key, rule, _)) = origin(route) else {
            continue;
        };
        for (f, service) in backend_services(route) {
            let (Some(retry), Some(ratio)) = (&f.retry, retry_ratio.get(&service).copied()) else {
                continue;
            };
            if ratio <= RETRY_AMPLIFICATION {
                continue;
            }
            out.push(Finding {
                severity: Severity::Warning,
                code: Code::RetryAmplification,
                object: ObjectRef::new("HTTPRoute", key),
                field: format!("spec.rules[{rule}].retry"),
                message: format!(
                    "{:.0}% of the attempts sent to Service {}/{} over the health window were \
                     retries: it fails often, and this rule sends each failure again (up to {} \
                     times), multiplying the load on it while it struggles",
                    ratio * 100.0,
                    service.0,
                    service.1,
                    retry.attempts
                ),
                fix: format!(
                    "find why Service {}/{} fails so many attempts (the retries hide those \
                     failures from its error rate); meanwhile lower the attempts or drop the \
                     retry, or cap retries with a BackendTrafficPolicy circuitBreaker retryBudget",
                    service.0, service.1
                ),
            });
        }
    }
}

/// Requests per second above which tracing every request is called out.
pub const BUSY_RPS: f64 = 100.0;

/// TRL0157: every request traced (100 % sampling, a chain's or a route's) on a route to a
/// Service that serves more than [`BUSY_RPS`] requests a second (`rps`, from the health scores):
/// each request then costs Envoy about 1.4x the CPU, and the trace store turns over fast.
pub(crate) fn busy_full_sampling(
    ir: &Ir,
    rps: &std::collections::BTreeMap<(String, String), f64>,
    out: &mut Vec<Finding>,
) {
    let mut check = |policy: Option<&str>, routes: &[RouteIr]| {
        for route in routes {
            let full = match (&route.tracing, policy) {
                (Some(t), _) => t.sampling >= 10_000,
                (None, Some(_)) => true,
                (None, None) => false,
            };
            if !full {
                continue;
            }
            for (_, service) in backend_services(route) {
                let Some(r) = rps.get(&service).filter(|r| **r > BUSY_RPS) else {
                    continue;
                };
                let (object, field) = match (policy, origin(route)) {
                    (Some(p), _) => (p.to_string(), "spec.samplingPercent".to_string()),
                    (None, Some((key, rule, _))) => (key.to_string(), format!("rule {rule}")),
                    (None, None) => continue,
                };
                let (ns, name) = object.split_once('/').unwrap_or(("", &object));
                out.push(Finding {
                    severity: Severity::Warning,
                    code: Code::TraceEverything,
                    object: ObjectRef {
                        kind: if policy.is_some() {
                            "TracingPolicy"
                        } else {
                            "HTTPRoute"
                        }
                        .to_string(),
                        namespace: ns.to_string(),
                        name: name.to_string(),
                    },
                    field,
                    message: format!(
                        "every request to Service {}/{} ({r:.0} requests/s) is traced: at 100 % \
                         sampling each request costs Envoy about 1.4x the CPU, and the trace \
                         store turns over in seconds",
                        service.0, service.1
                    ),
                    fix: "sample a share (1 % by default; docs/observability.md has guidance), \
                          or turn 100 % on only while debugging"
                        .to_string(),
                });
            }
        }
    };
    for p in ir.proxies.values() {
        for chain in p.listeners.iter().flat_map(|l| &l.chains) {
            let policy = chain
                .tracing
                .as_ref()
                .filter(|t| t.sampling >= 10_000)
                .map(|t| t.policy.as_str());
            for vh in &chain.virtual_hosts {
                check(policy, &vh.routes);
            }
        }
    }
    for sidecar in ir.sidecars.values() {
        for config in sidecar.route_configs.values() {
            check(None, &config.routes);
        }
    }
}
