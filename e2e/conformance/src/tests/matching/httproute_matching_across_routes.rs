//! Encodes upstream's HTTPRouteMatchingAcrossRoutes: two routes on the same Gateway, with
//! different hostnames, paths and header matches, are merged so that each request reaches
//! the backend of the most specific match across both routes (`/v2` matches are limited to
//! `example.com`).

use crate::checks::nn;
use crate::dsl::{request, routed_to};
use crate::tests::common::same_namespace;
use crate::{ConformanceTest, INFRA_NS, Suite};

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
    let addr = s.routes_must_be_accepted_and_resolved(
        &same_namespace(),
        &[nn(ns, "matching-part1"), nn(ns, "matching-part2")],
    )?;
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
    s.expect_cases(&addr, &cases)
}
