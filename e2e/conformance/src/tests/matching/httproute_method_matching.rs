//! Encodes upstream's HTTPRouteMethodMatching: a route with method matches (alone and
//! combined with path and header matches) sends each request to the backend upstream
//! expects: ANDed match fields all have to hold, ORed matches need one, precedence follows
//! the spec, and unmatched requests answer 404.

use crate::dsl::{answered, request, routed_to};
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteMethodMatching",
    description: "A single HTTPRoute with method matching for different backends",
    features: &["Gateway", "HTTPRoute", "HTTPRouteMethodMatching"],
    manifests: &["tests/httproute-method-matching.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let ns = INFRA_NS;
    let addr = same_namespace_route_ready(s, "method-matching")?;
    let (v1, v2, v3) = ("infra-backend-v1", "infra-backend-v2", "infra-backend-v3");
    let req =
        |method: &str, path: &str, headers: &[(&str, &str)]| request(method, "", path, headers);
    let cases = [
        routed_to(req("POST", "/", &[]), v1, ns),
        routed_to(req("GET", "/", &[]), v2, ns),
        answered(req("HEAD", "/", &[]), 404),
        // Combinations of method matching with other core matches.
        routed_to(req("GET", "/path1", &[]), v1, ns),
        routed_to(req("PUT", "/", &[("version", "one")]), v2, ns),
        routed_to(req("POST", "/path2", &[("version", "two")]), v3, ns),
        // Matches ORed together match when only one of them is used.
        routed_to(req("PATCH", "/path3", &[]), v1, ns),
        routed_to(req("DELETE", "/path4", &[("version", "three")]), v1, ns),
        // Match types ANDed together do not match when only a subset is used.
        answered(req("PUT", "/", &[]), 404),
        answered(req("DELETE", "/path4", &[]), 404),
        // Requests satisfying several matches follow the spec's precedence.
        routed_to(req("PATCH", "/path5", &[]), v1, ns),
        routed_to(req("PATCH", "/", &[("version", "four")]), v2, ns),
    ];
    s.expect_cases(&addr, &cases)
}
