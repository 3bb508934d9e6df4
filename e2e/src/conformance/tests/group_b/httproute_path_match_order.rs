//! Encodes upstream's HTTPRoutePathMatchOrder: in a route with many overlapping Exact and
//! PathPrefix matches, each request reaches the backend of the match that takes precedence
//! (Exact over PathPrefix, then the longest prefix).

use super::support::{expect_cases, request, resolved_refs_true, routed_to};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRoutePathMatchOrder",
    description: "An HTTPRoute where there are multiple matches routing to any given backend follows match order precedence",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-path-match-order.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let ns = INFRA_NS;
    let route = nn(ns, "path-matching-order");
    let gw = GatewayRef::new(ns, "same-namespace");
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    resolved_refs_true(s, &route, &gw.nn)?;
    let (v1, v2, v3) = ("infra-backend-v1", "infra-backend-v2", "infra-backend-v3");
    let get = |path: &str| request("", "", path, &[]);
    let cases = [
        routed_to(get("/match/exact/one"), v3, ns),
        routed_to(get("/match/exact"), v2, ns),
        routed_to(get("/match"), v1, ns),
        routed_to(get("/match/prefix/one/any"), v2, ns),
        routed_to(get("/match/prefix/any"), v1, ns),
        routed_to(get("/match/any"), v3, ns),
    ];
    expect_cases(s, &addr, &cases)
}
