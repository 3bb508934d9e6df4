//! BackendTrafficPolicy: a spec checked into a [`TrafficIr`] (faults for routes, circuit
//! breakers and outlier detection for a Service's clusters), then applied to the gateways and
//! sidecar classes its targets resolve to by [`crate::policy`], which also keeps its status and
//! last valid spec like every policy kind's.
//!
//! ```text
//!  BackendTrafficPolicy ──check_traffic()──► (targets, TrafficIr)
//!     Gateway / listener ──► faults on every route of it
//!     HTTPRoute / rule   ──► faults on its routes (gateway routes, and mesh routes: a consumer
//!                            route in the caller's namespace scopes them to that namespace)
//!     Service            ──► faults on every route to it, and its clusters' circuit breaker
//!                            and outlier detection, in every proxy that calls it
//! ```
//!
//! Where several policies reach one route, the most specific target wins (a rule, then a
//! route, then a Service, then a listener, then a Gateway), and between equals the policy
//! first by namespace and name. A cluster takes its Service's first policy by name.
//!
//! A policy whose faults are in force gets a `FaultsInjected=True` condition saying what is
//! injected where ([`fault_conditions`]), so chaos on purpose is never silent.

use crate::conditions::{ConditionType, Problem, Reason};
use crate::ir::Ir;
use crate::ir::{
    AbortStatusIr, ActionIr, CircuitBreakerIr, ClusterIr, FaultAbortIr, FaultDelayIr, FaultIr,
    HeaderIr, OutlierDetectionIr, RetryBudgetIr, RouteIr, SidecarIr,
};
use crate::policy::{Attachment, Contribution, RouteTarget, Selector, cluster_service};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use trellis_model::ObjectKey;
use trellis_model::policy::{PolicyTargetReference, SpecError, parse_spec};
use trellis_model::resilience::{
    BackendTrafficPolicySpec, CircuitBreaker, FaultInjection, OutlierDetection,
};

/// What a BackendTrafficPolicy asks of the proxies its targets reach.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TrafficIr {
    pub fault: Option<FaultIr>,
    pub circuit_breaker: Option<CircuitBreakerIr>,
    pub outlier_detection: Option<OutlierDetectionIr>,
}

fn invalid(field: impl std::fmt::Display, message: impl std::fmt::Display) -> Problem {
    Problem::not_accepted(Reason::Invalid, format!("{field}: {message}"))
}

fn spec_error(e: SpecError) -> Problem {
    Problem::not_accepted(Reason::Invalid, e.to_string())
}

/// Longest fault delay accepted.
const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Most headers a fault may require.
const MAX_FAULT_HEADERS: usize = 16;

/// Checks a BackendTrafficPolicy's spec.
pub(crate) fn check_traffic(
    key: &ObjectKey,
    spec: &serde_json::Value,
) -> Result<(Vec<PolicyTargetReference>, TrafficIr), Problem> {
    let spec: BackendTrafficPolicySpec = parse_spec(spec).map_err(spec_error)?;
    crate::policy::check_targets(&spec.target_refs, true)?;
    let policy = format!("{}/{}", key.namespace, key.name);
    if spec.fault_injection.is_none()
        && spec.circuit_breaker.is_none()
        && spec.outlier_detection.is_none()
    {
        return Err(invalid(
            "spec",
            "set at least one of faultInjection, circuitBreaker and outlierDetection",
        ));
    }
    if spec.circuit_breaker.is_some() || spec.outlier_detection.is_some() {
        let field = if spec.circuit_breaker.is_some() {
            "spec.circuitBreaker"
        } else {
            "spec.outlierDetection"
        };
        if let Some((i, t)) = spec
            .target_refs
            .iter()
            .enumerate()
            .find(|(_, t)| t.kind != "Service")
        {
            return Err(invalid(
                field,
                format!(
                    "applies to a Service's endpoints: every target must be a Service \
                     (spec.targetRefs[{i}] is a {})",
                    t.kind
                ),
            ));
        }
    }
    Ok((
        spec.target_refs,
        TrafficIr {
            fault: spec
                .fault_injection
                .as_ref()
                .map(|f| fault(&policy, f))
                .transpose()?,
            circuit_breaker: spec
                .circuit_breaker
                .as_ref()
                .map(|c| circuit_breaker(&policy, c))
                .transpose()?,
            outlier_detection: spec
                .outlier_detection
                .as_ref()
                .map(|o| outlier_detection(&policy, o))
                .transpose()?,
        },
    ))
}

/// A percentage (0–100, up to four decimals; `default` when unset) per million.
fn per_million(percent: Option<f64>, field: &str) -> Result<u32, Problem> {
    let percent = percent.unwrap_or(100.0);
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err(invalid(
            field,
            format!("{percent} is not between 0 and 100"),
        ));
    }
    let scaled = (percent * 10_000.0).round();
    if (scaled - percent * 10_000.0).abs() > 1e-6 {
        return Err(invalid(
            field,
            format!("{percent}: at most four decimal places"),
        ));
    }
    // In 0..=1_000_000, checked above.
    Ok(scaled as u32)
}

fn duration(text: &str, field: &str) -> Result<Duration, Problem> {
    crate::matches::duration(text, field).map_err(|_| {
        invalid(
            field,
            format!("{text:?} is not a duration like 200ms, 5s or 1m"),
        )
    })
}

fn count(value: Option<i64>, field: &str, max: i64) -> Result<Option<u32>, Problem> {
    match value {
        None => Ok(None),
        Some(v) if !(0..=max).contains(&v) => {
            Err(invalid(field, format!("{v} is not between 0 and {max}")))
        }
        // In range, checked above.
        Some(v) => Ok(Some(v as u32)),
    }
}

fn fault(policy: &str, f: &FaultInjection) -> Result<FaultIr, Problem> {
    if f.abort.is_none() && f.delay.is_none() {
        return Err(invalid("spec.faultInjection", "set abort, delay or both"));
    }
    let abort = match &f.abort {
        None => None,
        Some(a) => {
            let status = match (a.http_status, a.grpc_status) {
                (Some(code), None) if (200..=599).contains(&code) => {
                    AbortStatusIr::Http(code as u32)
                }
                (Some(code), None) => {
                    return Err(invalid(
                        "spec.faultInjection.abort.httpStatus",
                        format!("{code} is not an HTTP status between 200 and 599"),
                    ));
                }
                (None, Some(code)) if (0..=16).contains(&code) => AbortStatusIr::Grpc(code as u32),
                (None, Some(code)) => {
                    return Err(invalid(
                        "spec.faultInjection.abort.grpcStatus",
                        format!("{code} is not a gRPC status between 0 and 16"),
                    ));
                }
                _ => {
                    return Err(invalid(
                        "spec.faultInjection.abort",
                        "set exactly one of httpStatus and grpcStatus",
                    ));
                }
            };
            Some(FaultAbortIr {
                status,
                per_million: per_million(a.percentage, "spec.faultInjection.abort.percentage")?,
            })
        }
    };
    let delay = match &f.delay {
        None => None,
        Some(d) => {
            let field = "spec.faultInjection.delay.fixedDelay";
            let delay = duration(&d.fixed_delay, field)?;
            if delay > MAX_DELAY {
                return Err(invalid(field, "at most 1h"));
            }
            Some(FaultDelayIr {
                delay,
                per_million: per_million(d.percentage, "spec.faultInjection.delay.percentage")?,
            })
        }
    };
    if f.headers.len() > MAX_FAULT_HEADERS {
        return Err(invalid(
            "spec.faultInjection.headers",
            format!("at most {MAX_FAULT_HEADERS} headers"),
        ));
    }
    let mut headers = Vec::new();
    for (i, h) in f.headers.iter().enumerate() {
        let name_ok = !h.name.is_empty()
            && h.name.len() <= 256
            && h.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if !name_ok {
            return Err(invalid(
                format!("spec.faultInjection.headers[{i}].name"),
                format!("{:?} is not a header name", h.name),
            ));
        }
        if h.value.len() > 4096 || h.value.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(invalid(
                format!("spec.faultInjection.headers[{i}].value"),
                "at most 4096 printable bytes",
            ));
        }
        headers.push(HeaderIr {
            name: h.name.to_ascii_lowercase(),
            value: h.value.clone(),
        });
    }
    headers.sort_by(|a, b| (&a.name, &a.value).cmp(&(&b.name, &b.value)));
    headers.dedup();
    Ok(FaultIr {
        policy: policy.to_string(),
        abort,
        delay,
        headers,
    })
}

/// The largest threshold accepted (Envoy's are 32-bit).
const MAX_THRESHOLD: i64 = u32::MAX as i64;

fn circuit_breaker(policy: &str, c: &CircuitBreaker) -> Result<CircuitBreakerIr, Problem> {
    let f = |name: &str| format!("spec.circuitBreaker.{name}");
    let retry_budget = match &c.retry_budget {
        None => None,
        Some(b) => {
            let percent = b.percent.unwrap_or(20.0);
            if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
                return Err(invalid(
                    f("retryBudget.percent"),
                    format!("{percent} is not between 0 and 100"),
                ));
            }
            Some(RetryBudgetIr {
                hundredths_percent: (percent * 100.0).round() as u32,
                min_retry_concurrency: count(
                    b.min_retry_concurrency,
                    &f("retryBudget.minRetryConcurrency"),
                    MAX_THRESHOLD,
                )?
                .unwrap_or(3),
            })
        }
    };
    if retry_budget.is_some() && c.max_parallel_retries.is_some() {
        return Err(invalid(
            f("retryBudget"),
            "set either maxParallelRetries or retryBudget",
        ));
    }
    let out = CircuitBreakerIr {
        policy: policy.to_string(),
        max_connections: count(c.max_connections, &f("maxConnections"), MAX_THRESHOLD)?,
        max_pending_requests: count(
            c.max_pending_requests,
            &f("maxPendingRequests"),
            MAX_THRESHOLD,
        )?,
        max_requests: count(
            c.max_parallel_requests,
            &f("maxParallelRequests"),
            MAX_THRESHOLD,
        )?,
        max_retries: count(
            c.max_parallel_retries,
            &f("maxParallelRetries"),
            MAX_THRESHOLD,
        )?,
        retry_budget,
    };
    if out.max_connections.is_none()
        && out.max_pending_requests.is_none()
        && out.max_requests.is_none()
        && out.max_retries.is_none()
        && out.retry_budget.is_none()
    {
        return Err(invalid("spec.circuitBreaker", "set at least one limit"));
    }
    Ok(out)
}

fn outlier_detection(policy: &str, o: &OutlierDetection) -> Result<OutlierDetectionIr, Problem> {
    let f = |name: &str| format!("spec.outlierDetection.{name}");
    let positive = |text: &Option<String>, name: &str, default: u64| -> Result<Duration, Problem> {
        let d = match text {
            None => Duration::from_secs(default),
            Some(t) => duration(t, &f(name))?,
        };
        if d < Duration::from_millis(1) || d > Duration::from_secs(24 * 3600) {
            return Err(invalid(f(name), "between 1ms and 24h"));
        }
        Ok(d)
    };
    Ok(OutlierDetectionIr {
        policy: policy.to_string(),
        consecutive_5xx: count(o.consecutive_5xx_errors, &f("consecutive5xxErrors"), 1000)?
            .unwrap_or(5),
        consecutive_gateway_errors: count(
            o.consecutive_gateway_errors,
            &f("consecutiveGatewayErrors"),
            1000,
        )?,
        consecutive_local_origin_failures: count(
            o.consecutive_local_origin_failures,
            &f("consecutiveLocalOriginFailures"),
            1000,
        )?
        .unwrap_or(5),
        split_external_local_origin_errors: o.split_external_local_origin_errors,
        interval: positive(&o.interval, "interval", 10)?,
        base_ejection_time: positive(&o.base_ejection_time, "baseEjectionTime", 30)?,
        max_ejection_percent: count(o.max_ejection_percent, &f("maxEjectionPercent"), 100)?
            .unwrap_or(10),
    })
}

/// How specific a selector is for a route (higher wins), if it selects it.
fn specificity(selector: &Selector, route: &RouteIr, listener: Option<&str>) -> Option<u8> {
    match selector {
        Selector::Routes(RouteTarget { rule: Some(_), .. }) | Selector::Routes(_)
            if !selector_selects(selector, route) =>
        {
            None
        }
        Selector::Routes(RouteTarget { rule: Some(_), .. }) => Some(5),
        Selector::Routes(_) => Some(4),
        Selector::Outbound(service) => sends_to(route, service).then_some(3),
        Selector::Gateway(Some(l)) => (listener == Some(l.as_str())).then_some(2),
        Selector::Gateway(None) => Some(1),
        Selector::Ports(..) => None,
    }
}

fn selector_selects(selector: &Selector, route: &RouteIr) -> bool {
    match selector {
        Selector::Routes(target) => target.selects(&route.origin),
        _ => false,
    }
}

/// Whether a route forwards (some of) its requests to a Service.
fn sends_to(route: &RouteIr, service: &ObjectKey) -> bool {
    let ActionIr::Forward(forward) = &route.action else {
        return false;
    };
    forward
        .backends
        .iter()
        .filter_map(|b| b.cluster.as_deref())
        .any(|c| cluster_service(c).as_ref() == Some(service))
}

/// The fault of the most specific attachment selecting a route.
fn route_fault(
    route: &RouteIr,
    listener: Option<&str>,
    attachments: &[Attachment],
) -> Option<FaultIr> {
    let mut best: Option<(u8, &FaultIr)> = None;
    for a in attachments {
        let Contribution::Traffic(t) = &*a.contribution else {
            continue;
        };
        let Some(fault) = &t.fault else {
            continue;
        };
        let Some(rank) = a
            .selectors
            .iter()
            .filter_map(|s| specificity(s, route, listener))
            .max()
        else {
            continue;
        };
        // Attachments come in policy order: the first of the most specific wins.
        if best.is_none_or(|(r, _)| rank > r) {
            best = Some((rank, fault));
        }
    }
    best.map(|(_, f)| f.clone())
}

/// A Service's clusters take the circuit breaker and outlier detection of the first policy
/// (by namespace and name) that sets them.
fn apply_to_clusters<'a>(
    clusters: impl Iterator<Item = &'a mut ClusterIr>,
    attachments: &[Attachment],
) {
    for cluster in clusters {
        cluster.circuit_breaker = None;
        cluster.outlier_detection = None;
        let Some(service) = cluster_service(&cluster.name) else {
            continue;
        };
        for a in attachments {
            let Contribution::Traffic(t) = &*a.contribution else {
                continue;
            };
            let targets_it = a
                .selectors
                .iter()
                .any(|s| matches!(s, Selector::Outbound(k) if *k == service));
            if !targets_it {
                continue;
            }
            if cluster.circuit_breaker.is_none() {
                cluster.circuit_breaker = t.circuit_breaker.clone();
            }
            if cluster.outlier_detection.is_none() {
                cluster.outlier_detection = t.outlier_detection.clone();
            }
        }
    }
}

fn has_traffic(attachments: &[Attachment]) -> bool {
    attachments
        .iter()
        .any(|a| matches!(&*a.contribution, Contribution::Traffic(_)))
}

/// Applies BackendTrafficPolicies to a gateway proxy.
pub(crate) fn apply_to_proxy(proxy: &mut crate::ir::ProxyIr, attachments: &[Attachment]) {
    if !has_traffic(attachments) {
        return;
    }
    for chain in proxy.listeners.iter_mut().flat_map(|l| &mut l.chains) {
        for vh in &mut chain.virtual_hosts {
            let listener = vh.listener.clone();
            for route in &mut vh.routes {
                route.fault = route_fault(route, Some(&listener), attachments);
            }
        }
    }
    apply_to_clusters(proxy.clusters.values_mut(), attachments);
}

/// Applies BackendTrafficPolicies to a sidecar class: faults on the mesh routes they select
/// (and the fault filter on the listeners of those routes), and their Services' clusters.
pub(crate) fn apply_to_sidecar(sidecar: &mut SidecarIr, attachments: &[Attachment]) {
    if !has_traffic(attachments) {
        return;
    }
    // Which Service each route configuration belongs to.
    let services: std::collections::BTreeMap<String, ObjectKey> = sidecar
        .outbound
        .iter()
        .filter_map(|l| Some((l.route_config.clone()?, l.service.clone())))
        .collect();
    for (name, routes) in &mut sidecar.route_configs {
        let service = services.get(name);
        for route in &mut routes.routes {
            // A default route (no HTTPRoute) still goes to its Service.
            route.fault = route_fault(route, None, attachments).or_else(|| {
                let service = service?;
                attachments
                    .iter()
                    .filter(|a| {
                        a.selectors
                            .iter()
                            .any(|s| matches!(s, Selector::Outbound(k) if k == service))
                    })
                    .find_map(|a| match &*a.contribution {
                        Contribution::Traffic(t) => t.fault.clone(),
                        _ => None,
                    })
            });
        }
    }
    for l in &mut sidecar.outbound {
        l.faults = l
            .route_config
            .as_ref()
            .and_then(|rc| sidecar.route_configs.get(rc))
            .is_some_and(|r| r.routes.iter().any(|r| r.fault.is_some()));
    }
    apply_to_clusters(sidecar.clusters.values_mut(), attachments);
}

/// The spare clusters (served to a proxy that asks for a cluster its snapshot lacks) take the
/// circuit breaker and outlier detection their Service's clusters have elsewhere.
pub(crate) fn spare_clusters(ir: &mut crate::ir::Ir) {
    let mut settings = std::collections::BTreeMap::new();
    for c in ir.clusters() {
        if c.circuit_breaker.is_some() || c.outlier_detection.is_some() {
            settings
                .entry(c.name.clone())
                .or_insert((c.circuit_breaker.clone(), c.outlier_detection.clone()));
        }
    }
    for (name, c) in &mut ir.spare_clusters {
        if let Some((breaker, outlier)) = settings.get(name) {
            c.circuit_breaker = breaker.clone();
            c.outlier_detection = outlier.clone();
        }
    }
}

/// How a fault reads in a condition: `abort 503 for 30% of requests with x-chaos: me`.
fn describe_fault(f: &FaultIr) -> String {
    let share = |per_million: u32| {
        let p = f64::from(per_million) / 10_000.0;
        format!("{p}%")
    };
    let mut parts = Vec::new();
    if let Some(a) = &f.abort {
        let status = match a.status {
            AbortStatusIr::Http(s) => format!("HTTP {s}"),
            AbortStatusIr::Grpc(s) => format!("gRPC status {s}"),
        };
        parts.push(format!(
            "abort with {status} for {} of requests",
            share(a.per_million)
        ));
    }
    if let Some(d) = &f.delay {
        parts.push(format!(
            "delay of {} ms for {} of requests",
            d.delay.as_millis(),
            share(d.per_million)
        ));
    }
    let mut out = parts.join(" and ");
    if !f.headers.is_empty() {
        let headers: Vec<String> = f
            .headers
            .iter()
            .map(|h| format!("{}: {}", h.name, h.value))
            .collect();
        out.push_str(&format!(" carrying {}", headers.join(", ")));
    }
    out
}

/// A `FaultsInjected=True` condition on every accepted ancestor of each BackendTrafficPolicy
/// whose faults are in force (read from the IR, so a last valid spec kept in force counts):
/// chaos on purpose is never silent in status.
pub(crate) fn fault_conditions(ir: &Ir, status: &mut crate::StatusSet) {
    let mut faults: BTreeMap<String, (BTreeSet<String>, usize)> = BTreeMap::new();
    for f in ir.routes().filter_map(|r| r.fault.as_ref()) {
        let entry = faults.entry(f.policy.clone()).or_default();
        entry.0.insert(describe_fault(f));
        entry.1 += 1;
    }
    for (key, policy) in status.backend_traffic_policies.iter_mut() {
        let Some((what, routes)) = faults.get(&format!("{}/{}", key.namespace, key.name)) else {
            continue;
        };
        let message = format!(
            "Injecting faults into {routes} route{} (counted per proxy): {}",
            if *routes == 1 { "" } else { "s" },
            what.iter().cloned().collect::<Vec<_>>().join("; ")
        );
        for ancestor in &mut policy.ancestors {
            let accepted = ancestor
                .conditions
                .iter()
                .any(|c| c.type_ == "Accepted" && c.status == "True");
            let generation = ancestor
                .conditions
                .first()
                .and_then(|c| c.observed_generation);
            if accepted {
                ancestor.conditions.push(crate::conditions::condition(
                    ConditionType::FaultsInjected,
                    true,
                    Reason::Injecting,
                    message.clone(),
                    generation,
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(spec: serde_json::Value) -> Result<TrafficIr, String> {
        check_traffic(&ObjectKey::new("shop", "chaos"), &spec)
            .map(|(_, t)| t)
            .map_err(|p| p.message)
    }

    #[test]
    fn faults_read_into_per_million_shares() {
        let t = check(json!({
            "targetRefs": [{"group": "", "kind": "Service", "name": "api"}],
            "faultInjection": {
                "abort": {"httpStatus": 503, "percentage": 30},
                "delay": {"fixedDelay": "200ms", "percentage": 0.0001},
                "headers": [{"name": "X-Chaos", "value": "me"}],
            },
        }))
        .unwrap();
        let f = t.fault.unwrap();
        assert_eq!(f.policy, "shop/chaos");
        assert_eq!(
            f.abort,
            Some(FaultAbortIr {
                status: AbortStatusIr::Http(503),
                per_million: 300_000
            })
        );
        assert_eq!(f.delay.as_ref().unwrap().delay, Duration::from_millis(200));
        assert_eq!(f.delay.unwrap().per_million, 1);
        assert_eq!(f.headers[0].name, "x-chaos");
    }

    #[test]
    fn mistakes_are_conditions_naming_the_field() {
        let service = json!([{"group": "", "kind": "Service", "name": "api"}]);
        let gateway =
            json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "web"}]);
        for (spec, field) in [
            (
                json!({"targetRefs": service, "faultInjection": {"abort": {"httpStatus": 503, "percentage": 130}}}),
                "spec.faultInjection.abort.percentage: 130 is not between 0 and 100",
            ),
            (
                json!({"targetRefs": service, "faultInjection": {"delay": {"fixedDelay": "-200ms"}}}),
                "spec.faultInjection.delay.fixedDelay",
            ),
            (
                json!({"targetRefs": service, "faultInjection": {"abort": {"httpStatus": 99}}}),
                "spec.faultInjection.abort.httpStatus",
            ),
            (
                json!({"targetRefs": service, "faultInjection": {"abort": {"httpStatus": 503, "grpcStatus": 14}}}),
                "exactly one of httpStatus and grpcStatus",
            ),
            (
                json!({"targetRefs": service, "circuitBreaker": {"maxParallelRequests": -1}}),
                "spec.circuitBreaker.maxParallelRequests: -1",
            ),
            (
                json!({"targetRefs": service, "outlierDetection": {"baseEjectionTime": "0s"}}),
                "spec.outlierDetection.baseEjectionTime",
            ),
            (
                json!({"targetRefs": service, "outlierDetection": {"maxEjectionPercent": 101}}),
                "spec.outlierDetection.maxEjectionPercent",
            ),
            (
                json!({"targetRefs": gateway, "circuitBreaker": {"maxConnections": 1}}),
                "every target must be a Service",
            ),
            (json!({"targetRefs": service}), "set at least one of"),
            (
                json!({"targetRefs": [{"group": "", "kind": "Pod", "name": "x"}], "faultInjection": {"abort": {"httpStatus": 503}}}),
                "spec.targetRefs[0]",
            ),
        ] {
            let e = check(spec.clone()).expect_err(&spec.to_string());
            assert!(e.contains(field), "{spec}: {e}");
        }
    }

    #[test]
    fn cluster_settings_have_envoys_defaults_spelled_out() {
        let t = check(json!({
            "targetRefs": [{"group": "", "kind": "Service", "name": "api"}],
            "outlierDetection": {"consecutive5xxErrors": 3},
            "circuitBreaker": {"maxParallelRequests": 10, "retryBudget": {}},
        }))
        .unwrap();
        let o = t.outlier_detection.unwrap();
        assert_eq!(o.consecutive_5xx, 3);
        assert_eq!(o.base_ejection_time, Duration::from_secs(30));
        assert_eq!(o.max_ejection_percent, 10);
        let c = t.circuit_breaker.unwrap();
        assert_eq!(c.max_requests, Some(10));
        assert_eq!(
            c.retry_budget,
            Some(RetryBudgetIr {
                hundredths_percent: 2000,
                min_retry_concurrency: 3
            })
        );
    }
}
