//! Encodes upstream's HTTPRouteExactPathMatching: a route with Exact path matches sends
//! `/one` and `/two` to their backends, and answers 404 for `/`, `/one/example`, `/two/`
//! and `/Two` (exact and case-sensitive).

use crate::dsl::{answered, get, routed_to};
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, INFRA_NS, Suite};

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
    let addr = same_namespace_route_ready(s, "exact-matching")?;
    let cases = [
        routed_to(get("/one"), "infra-backend-v1", ns),
        routed_to(get("/two"), "infra-backend-v2", ns),
        answered(get("/"), 404),
        answered(get("/one/example"), 404),
        answered(get("/two/"), 404),
        answered(get("/Two"), 404),
    ];
    s.expect_cases(&addr, &cases)
}
