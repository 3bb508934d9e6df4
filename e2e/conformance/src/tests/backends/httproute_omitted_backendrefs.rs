//! Encodes upstream's HTTPRouteNoBackendRefs: rules whose backendRefs are omitted or empty
//! answer 500 (while the route stays Accepted and ResolvedRefs True), and the rule with a
//! backend forwards to it.

use crate::dsl::{answered, get, routed_to};
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, INFRA_NS, Suite};

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
    let addr = same_namespace_route_ready(s, "omitted-backendrefs")?;
    let cases = [
        routed_to(get("/forward"), "infra-backend-v1", ns),
        answered(get("/omitted-no-forward"), 500),
        answered(get("/empty-no-forward"), 500),
    ];
    s.expect_cases(&addr, &cases)
}
