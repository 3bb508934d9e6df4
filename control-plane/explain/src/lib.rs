//! `trellis explain`: which listener, virtual host, route, rule and backend a request would
//! take through a Gateway's proxies or a pod's sidecar, which filters and policies apply, and
//! for a 404 or a 500 *why*: the closest routes and the condition each one failed, or the
//! status condition of a backend that does not resolve.
//!
//! ```text
//!  Request { host, path, method, headers }
//!     │  Ir (what each proxy serves) + StatusSet (why)
//!     ▼
//!  listener ──► virtual host (exact, then the longest wildcard) ──► first route that matches
//!     ──► filters, policies, faults ──► weighted backends ──► endpoints    (or a 404 / 500)
//! ```
//!
//! A pure function of the translation: `trellis explain DIR` runs it on files, and the control
//! plane's `GET /api/explain` on what it serves.

#![warn(clippy::too_many_lines)]

mod matching;
mod text;

pub use text::render_text;

use serde::Serialize;
use trellis_model::ObjectKey;
use trellis_translate::StatusSet;
use trellis_translate::ir::{ActionIr, Ir, RouteIr, RouteOrigin, VirtualHostIr};

/// The request to explain.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Request {
    /// `Host` (a port after `:` is ignored).
    pub host: String,
    /// Path, with the query string if any.
    pub path: String,
    /// Method (`GET` when empty).
    pub method: String,
    /// Headers (names compared without case).
    pub headers: Vec<(String, String)>,
    /// The listener port (a Gateway with listeners on several ports), or the Service port
    /// (from a pod; 80 when unset).
    pub port: Option<u16>,
}

/// Where the request enters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Entry {
    /// A Gateway's proxies.
    Gateway(ObjectKey),
    /// A pod's sidecar (outbound).
    Pod(ObjectKey),
}

/// One step taken, in order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// What kind of step: `proxy`, `listener`, `virtual host`, `route`, `filter`, `fault`,
    /// `timeout`, `retry`, `rewrite`, `backend`.
    pub what: String,
    /// What was chosen, and why.
    pub detail: String,
}

/// A route that did not match, and the first of its conditions the request failed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Candidate {
    /// `HTTPRoute ns/name rule R match M` (or the route's name).
    pub route: String,
    /// Its match, in words.
    pub matcher: String,
    /// The first condition the request failed.
    pub failed: String,
    /// Conditions the request met (for ranking).
    pub met: usize,
}

/// What the proxy would answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    /// The status it answers itself, or `None` when it forwards (the backend answers).
    pub status: Option<u16>,
    /// In words.
    pub summary: String,
}

/// The whole explanation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Explanation {
    /// The request, as read.
    pub request: Request,
    /// The steps taken.
    pub steps: Vec<Step>,
    /// The answer.
    pub outcome: Outcome,
    /// For a 404: the closest routes, best first (at most 5).
    pub candidates: Vec<Candidate>,
}

/// Why there is nothing to explain (an entry that does not exist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotServed(pub String);

impl std::fmt::Display for NotServed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotServed {}

fn step(what: &str, detail: impl Into<String>) -> Step {
    Step {
        what: what.to_string(),
        detail: detail.into(),
    }
}

fn answer(status: u16, summary: impl Into<String>) -> Outcome {
    Outcome {
        status: Some(status),
        summary: summary.into(),
    }
}

/// The route's origin in words.
pub(crate) fn origin_name(route: &RouteIr) -> String {
    match &route.origin {
        RouteOrigin::HttpRoute {
            route,
            rule,
            match_index,
        } => format!("HTTPRoute {route} rule {rule} match {match_index}"),
        other => other.route_name(),
    }
}

/// Explains `request` entering at `entry`.
pub fn explain(
    ir: &Ir,
    status: &StatusSet,
    entry: &Entry,
    request: &Request,
) -> Result<Explanation, NotServed> {
    let mut request = request.clone();
    if request.method.is_empty() {
        request.method = "GET".to_string();
    }
    request.method = request.method.to_ascii_uppercase();
    if request.path.is_empty() {
        request.path = "/".to_string();
    }
    let mut steps = Vec::new();
    let (hosts, routes_of): (Vec<&VirtualHostIr>, Option<&[RouteIr]>) = match entry {
        Entry::Gateway(key) => {
            let hosts = gateway_hosts(ir, key, &request, &mut steps)?;
            (hosts, None)
        }
        Entry::Pod(key) => match pod_routes(ir, key, &request, &mut steps)? {
            Ok(routes) => (Vec::new(), Some(routes)),
            Err(outcome) => {
                return Ok(Explanation {
                    request,
                    steps,
                    outcome,
                    candidates: Vec::new(),
                });
            }
        },
    };
    let served: Vec<&str> = hosts
        .iter()
        .filter(|v| !v.routes.is_empty())
        .map(|v| v.domain.as_str())
        .collect();
    let routes: &[RouteIr] = match routes_of {
        Some(r) => r,
        None => {
            let Some(vh) = matching::virtual_host(&hosts, &matching::bare_host(&request.host))
            else {
                let domains: Vec<&str> = hosts.iter().map(|v| v.domain.as_str()).collect();
                return Ok(Explanation {
                    outcome: answer(
                        404,
                        format!(
                            "no virtual host serves host {:?}; this listener serves {}",
                            matching::bare_host(&request.host),
                            domains.join(", ")
                        ),
                    ),
                    request,
                    steps,
                    candidates: Vec::new(),
                });
            };
            steps.push(step(
                "virtual host",
                format!("{} (Host {:?})", vh.domain, request.host),
            ));
            &vh.routes
        }
    };
    let route = match matching::pick(routes, &request) {
        Ok(route) => route,
        Err(candidates) => {
            let summary = if routes.is_empty() {
                format!(
                    "no HTTPRoute serves host {:?} here; hosts with routes on this listener: {}",
                    matching::bare_host(&request.host),
                    if served.is_empty() {
                        "none".to_string()
                    } else {
                        served.join(", ")
                    }
                )
            } else {
                "no route matches: the proxy answers 404 (closest routes below)".to_string()
            };
            return Ok(Explanation {
                outcome: answer(404, summary),
                request,
                steps,
                candidates,
            });
        }
    };
    steps.push(step(
        "route",
        format!(
            "{} ({})",
            origin_name(route),
            matching::describe(&route.matcher)
        ),
    ));
    let outcome = take_route(ir, status, entry, route, &request, &mut steps);
    Ok(Explanation {
        request,
        steps,
        outcome,
        candidates: Vec::new(),
    })
}

/// The virtual hosts of the Gateway's listener the request arrives on.
fn gateway_hosts<'a>(
    ir: &'a Ir,
    key: &ObjectKey,
    request: &Request,
    steps: &mut Vec<Step>,
) -> Result<Vec<&'a VirtualHostIr>, NotServed> {
    let proxy_key = trellis_translate::proxy_key(key);
    let proxy = ir
        .proxies
        .get(&proxy_key)
        .ok_or_else(|| NotServed(format!("no Gateway {key} is served")))?;
    steps.push(step("proxy", proxy_key.clone()));
    let ports: std::collections::BTreeSet<u16> = proxy.listeners.iter().map(|l| l.port).collect();
    let port = match (request.port, ports.len()) {
        (Some(p), _) => p,
        (None, 1) => *ports.iter().next().unwrap_or(&0),
        (None, _) => {
            return Err(NotServed(format!(
                "Gateway {key} listens on ports {}: give --port",
                ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let listener = proxy
        .listeners
        .iter()
        .find(|l| l.port == port)
        .ok_or_else(|| NotServed(format!("Gateway {key} has no listener on port {port}")))?;
    // An HTTPS chain is chosen by SNI: the Host stands for it here.
    let host = matching::bare_host(&request.host);
    let chain = listener
        .chains
        .iter()
        .find(|c| {
            c.server_names
                .iter()
                .any(|n| trellis_translate::hostname::matches(n, &host))
        })
        .or_else(|| listener.chains.iter().find(|c| c.server_names.is_empty()))
        .or(listener.chains.first())
        .ok_or_else(|| NotServed(format!("listener {} has no filter chain", listener.name)))?;
    steps.push(step(
        "listener",
        format!(
            "{} (port {port}, {}{})",
            chain.listener.as_deref().unwrap_or(&listener.name),
            format!("{:?}", chain.protocol).to_ascii_uppercase(),
            if chain.server_names.is_empty() {
                String::new()
            } else {
                format!(", SNI {}", chain.server_names.join(", "))
            }
        ),
    ));
    for f in &chain.http_filters {
        steps.push(step(
            "filter",
            format!(
                "{}{}",
                f.name,
                if f.disabled {
                    " (only on routes that enable it)"
                } else {
                    ""
                }
            ),
        ));
    }
    if let Some(t) = &chain.tracing {
        steps.push(step(
            "filter",
            format!(
                "tracing: TracingPolicy {}, sampling {}%",
                t.policy,
                f64::from(t.sampling) / 100.0
            ),
        ));
    }
    Ok(chain.virtual_hosts.iter().collect())
}

/// The mesh routes a pod's sidecar applies to the request's destination, or the outcome when
/// none do (an unknown destination).
fn pod_routes<'a>(
    ir: &'a Ir,
    key: &ObjectKey,
    request: &Request,
    steps: &mut Vec<Step>,
) -> Result<Result<&'a [RouteIr], Outcome>, NotServed> {
    let class = ir.pods.get(key).ok_or_else(|| {
        NotServed(format!(
            "pod {key} has no sidecar (not found, not in the mesh, or opted out)"
        ))
    })?;
    let sidecar = ir
        .sidecars
        .get(class)
        .ok_or_else(|| NotServed(format!("sidecar class {class} is not served")))?;
    steps.push(step("proxy", format!("pod/{key} (sidecar class {class})")));
    let port = request.port.unwrap_or(80);
    let host = matching::bare_host(&request.host);
    let listener = sidecar.outbound.iter().find(|l| {
        l.port == port
            && (l.address == host
                || matching::service_host(
                    &host,
                    &l.service.namespace,
                    &l.service.name,
                    &key.namespace,
                ))
    });
    let Some(listener) = listener else {
        let unknown = format!("{:?}", sidecar.unknown_destinations).to_lowercase();
        steps.push(step(
            "listener",
            format!("no Service of the mesh is {host}:{port}; unknown destinations: {unknown}"),
        ));
        return Ok(Err(Outcome {
            status: None,
            summary: format!(
                "an unknown destination: the sidecar's {unknown} mode decides (passed through as TCP, or refused)"
            ),
        }));
    };
    steps.push(step(
        "listener",
        format!(
            "{} ({}:{})",
            trellis_translate::envoy::service_listener_name(listener),
            listener.address,
            listener.port
        ),
    ));
    match listener
        .route_config
        .as_ref()
        .and_then(|n| sidecar.route_configs.get(n))
    {
        Some(routes) => Ok(Ok(&routes.routes)),
        None => Ok(Err(Outcome {
            status: None,
            summary: format!(
                "not HTTP: the sidecar forwards the connection to {} as TCP",
                listener.cluster.as_deref().unwrap_or("its Service")
            ),
        })),
    }
}

/// The route's action: filters and faults that apply, then the answer or the backends.
fn take_route(
    ir: &Ir,
    status: &StatusSet,
    entry: &Entry,
    route: &RouteIr,
    request: &Request,
    steps: &mut Vec<Step>,
) -> Outcome {
    for f in &route.enabled_filters {
        steps.push(step("filter", format!("{f} (enabled on this route)")));
    }
    if route.cors.is_some() {
        steps.push(step("filter", "CORS (the rule's CORS filter)"));
    }
    if let Some(f) = &route.fault {
        let applies = f
            .headers
            .iter()
            .all(|h| matching::header(request, &h.name).is_some_and(|v| v == h.value));
        steps.push(step(
            "fault",
            format!(
                "BackendTrafficPolicy {}: {}",
                f.policy,
                if applies {
                    "applies to this request (its share is faulted)"
                } else {
                    "does not apply: the request lacks its headers"
                }
            ),
        ));
    }
    match &route.action {
        ActionIr::Redirect(r) => answer(r.status, format!("a redirect ({})", r.status)),
        ActionIr::Respond { status: 500, body } => {
            let why = resolve_problem(status, route).unwrap_or_else(|| body.clone());
            answer(500, format!("no backend resolves: {why}"))
        }
        ActionIr::Respond { status, body } => {
            answer(*status, format!("answered directly: {status} {body}"))
        }
        ActionIr::Forward(f) => {
            if let Some(t) = f.timeout {
                steps.push(step(
                    "timeout",
                    format!("request timeout {} ms", t.as_millis()),
                ));
            }
            if let Some(r) = &f.retry {
                steps.push(step(
                    "retry",
                    format!("{} attempts on {:?}", r.attempts, r.codes),
                ));
            }
            if f.rewrite.is_some() {
                steps.push(step(
                    "rewrite",
                    "the host or path is rewritten before forwarding",
                ));
            }
            forward(ir, status, entry, route, f, steps)
        }
    }
}

/// The backends a forwarding route sends to.
fn forward(
    ir: &Ir,
    status: &StatusSet,
    entry: &Entry,
    route: &RouteIr,
    f: &trellis_translate::ir::ForwardIr,
    steps: &mut Vec<Step>,
) -> Outcome {
    let total: u32 = f.backends.iter().map(|b| b.weight).sum::<u32>().max(1);
    let clusters = match entry {
        Entry::Gateway(key) => ir
            .proxies
            .get(&trellis_translate::proxy_key(key))
            .map(|p| &p.clusters),
        Entry::Pod(key) => ir
            .pods
            .get(key)
            .and_then(|c| ir.sidecars.get(c))
            .map(|s| &s.clusters),
    };
    let mut unresolved = 0;
    let mut reachable = 0;
    for b in &f.backends {
        let share = f64::from(b.weight) * 100.0 / f64::from(total);
        match &b.cluster {
            None => {
                unresolved += b.weight;
                steps.push(step(
                    "backend",
                    format!("{share:.0}% to a backend that does not resolve: answered 500"),
                ));
            }
            Some(name) => {
                let cluster = clusters.and_then(|c| c.get(name));
                let endpoints = cluster.map_or(0, |c| c.endpoints.len());
                let meshed = cluster.map_or(0, |c| c.endpoints.iter().filter(|e| e.mtls).count());
                if endpoints > 0 {
                    reachable += b.weight;
                }
                steps.push(step(
                    "backend",
                    format!(
                        "{share:.0}% to {name}: {endpoints} ready endpoint{}{}",
                        if endpoints == 1 { "" } else { "s" },
                        match (endpoints, meshed) {
                            (0, _) => " (answered 503)".to_string(),
                            (_, 0) => String::new(),
                            (n, m) if n == m => ", over the mesh's mutual TLS".to_string(),
                            (_, m) => format!(", {m} of them over the mesh's mutual TLS"),
                        }
                    ),
                ));
            }
        }
    }
    if unresolved == total {
        let why = resolve_problem(status, route)
            .unwrap_or_else(|| "the backendRef does not resolve".to_string());
        return answer(500, format!("no backend resolves: {why}"));
    }
    if reachable == 0 {
        return answer(
            503,
            "503: no backend has a ready endpoint (no healthy upstream)",
        );
    }
    Outcome {
        status: None,
        summary: if unresolved > 0 {
            format!(
                "forwarded; {unresolved} of {total} parts by weight answered 500 (a backend does not resolve)"
            )
        } else {
            "forwarded: the backend's answer is returned".to_string()
        },
    }
}

/// The ResolvedRefs condition of the route's HTTPRoute, when it says something is wrong.
fn resolve_problem(status: &StatusSet, route: &RouteIr) -> Option<String> {
    let RouteOrigin::HttpRoute { route: key, .. } = &route.origin else {
        return None;
    };
    status.http_routes.get(key)?.parents.iter().find_map(|p| {
        p.conditions
            .iter()
            .find(|c| c.type_ == "ResolvedRefs" && c.status == "False")
            .map(|c| {
                format!(
                    "HTTPRoute {key}: ResolvedRefs False ({}): {}",
                    c.reason, c.message
                )
            })
    })
}
