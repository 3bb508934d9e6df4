//! Encodes upstream's HTTPRouteMatching: a route with PathPrefix and header matches sends
//! requests to `infra-backend-v1` or `-v2` as upstream expects (prefixes match whole path
//! segments only: `/v2example` and `/foo/v2/example` do not match `/v2`).

use crate::dsl::{request, routed_to};
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteMatching",
    description: "A single HTTPRoute with path and header matching for different backends",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-matching.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let ns = INFRA_NS;
    let addr = same_namespace_route_ready(s, "matching")?;
    let (v1, v2) = ("infra-backend-v1", "infra-backend-v2");
    let get = |path: &str, headers: &[(&str, &str)]| request("", "", path, headers);
    let cases = [
        routed_to(get("/", &[]), v1, ns),
        routed_to(get("/example", &[]), v1, ns),
        routed_to(get("/", &[("Version", "one")]), v1, ns),
        routed_to(get("/v2", &[]), v2, ns),
        routed_to(get("/v2/example", &[]), v2, ns),
        routed_to(get("/", &[("Version", "two")]), v2, ns),
        routed_to(get("/v2/", &[]), v2, ns),
        // Not a path segment prefix, so it does not match /v2.
        routed_to(get("/v2example", &[]), v1, ns),
        routed_to(get("/foo/v2/example", &[]), v1, ns),
    ];
    s.expect_cases(&addr, &cases)
}
