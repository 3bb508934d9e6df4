//! Encodes upstream's HTTPRouteMatchingAcrossRoutes: two routes on the same Gateway, with
//! different hostnames, paths and header matches, are merged so that each request reaches
//! the backend of the most specific match across both routes (`/v2` matches are limited to
//! `example.com`).

use super::support::{expect_cases, request, resolved_refs_true, routed_to};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteMatchingAcrossRoutes",
    description: "Two HTTPRoutes with path matching for different backends",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-matching-across-routes.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let ns = INFRA_NS;
    let route1 = nn(ns, "matching-part1");
    let route2 = nn(ns, "matching-part2");
    let gw = GatewayRef::new(ns, "same-namespace");
    let addr =
        s.gateway_and_http_routes_must_be_accepted(&gw, &[route1.clone(), route2.clone()])?;
    resolved_refs_true(s, &route1, &gw.nn)?;
    resolved_refs_true(s, &route2, &gw.nn)?;
    let (v1, v2) = ("infra-backend-v1", "infra-backend-v2");
    let cases = [
        routed_to(request("", "example.com", "/", &[]), v1, ns),
        routed_to(request("", "example.com", "/example", &[]), v1, ns),
        routed_to(request("", "example.net", "/example", &[]), v1, ns),
        routed_to(
            request("", "example.com", "/example", &[("Version", "one")]),
            v1,
            ns,
        ),
        routed_to(request("", "example.com", "/v2", &[]), v2, ns),
        // v2 matches are limited to example.com.
        routed_to(request("", "example.net", "/v2", &[]), v1, ns),
        routed_to(request("", "example.com", "/v2/example", &[]), v2, ns),
        routed_to(
            request("", "example.com", "/", &[("Version", "two")]),
            v2,
            ns,
        ),
    ];
    expect_cases(s, &addr, &cases)
}
