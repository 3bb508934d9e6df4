//! Encodes upstream's HTTPRouteNoBackendRefs: rules whose backendRefs are omitted or empty
//! answer 500 (while the route stays Accepted and ResolvedRefs True), and the rule with a
//! backend forwards to it.

use super::support::{answered, expect_cases, request, resolved_refs_true, routed_to};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteNoBackendRefs",
    description: "HTTPRoute rules with omitted or empty backendRefs explicitly respond with 500",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-omitted-backendrefs.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let ns = INFRA_NS;
    let route = nn(ns, "omitted-backendrefs");
    let gw = GatewayRef::new(ns, "same-namespace");
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    resolved_refs_true(s, &route, &gw.nn)?;
    let get = |path: &str| request("", "", path, &[]);
    let cases = [
        routed_to(get("/forward"), "infra-backend-v1", ns),
        answered(get("/omitted-no-forward"), 500),
        answered(get("/empty-no-forward"), 500),
    ];
    expect_cases(s, &addr, &cases)
}
