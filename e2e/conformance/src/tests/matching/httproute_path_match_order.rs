//! Encodes upstream's HTTPRoutePathMatchOrder: in a route with many overlapping Exact and
//! PathPrefix matches, each request reaches the backend of the match that takes precedence
//! (Exact over PathPrefix, then the longest prefix).

use crate::dsl::{get, routed_to};
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, INFRA_NS, Suite};

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
    let addr = same_namespace_route_ready(s, "path-matching-order")?;
    let (v1, v2, v3) = ("infra-backend-v1", "infra-backend-v2", "infra-backend-v3");
    let cases = [
        routed_to(get("/match/exact/one"), v3, ns),
        routed_to(get("/match/exact"), v2, ns),
        routed_to(get("/match"), v1, ns),
        routed_to(get("/match/prefix/one/any"), v2, ns),
        routed_to(get("/match/prefix/any"), v1, ns),
        routed_to(get("/match/any"), v3, ns),
    ];
    s.expect_cases(&addr, &cases)
}
