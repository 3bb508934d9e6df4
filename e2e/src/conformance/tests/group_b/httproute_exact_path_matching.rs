//! Encodes upstream's HTTPRouteExactPathMatching: a route with Exact path matches sends
//! `/one` and `/two` to their backends, and answers 404 for `/`, `/one/example`, `/two/`
//! and `/Two` (exact and case-sensitive).

use super::support::{answered, expect_cases, request, resolved_refs_true, routed_to};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteExactPathMatching",
    description: "A single HTTPRoute with exact path matching for different backends",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-exact-path-matching.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let ns = INFRA_NS;
    let route = nn(ns, "exact-matching");
    let gw = GatewayRef::new(ns, "same-namespace");
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    resolved_refs_true(s, &route, &gw.nn)?;
    let get = |path: &str| request("", "", path, &[]);
    let cases = [
        routed_to(get("/one"), "infra-backend-v1", ns),
        routed_to(get("/two"), "infra-backend-v2", ns),
        answered(get("/"), 404),
        answered(get("/one/example"), 404),
        answered(get("/two/"), 404),
        answered(get("/Two"), 404),
    ];
    expect_cases(s, &addr, &cases)
}
