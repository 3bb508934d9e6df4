//! HTTPRouteSimpleSameNamespace: a route in the infra namespace attaches to a Gateway there.

use crate::dsl::{get, routed_to};
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteSimpleSameNamespace",
    description: "A single HTTPRoute in the gateway-conformance-infra namespace attaches to a Gateway in the same namespace",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-simple-same-namespace.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_ready(s, "gateway-conformance-infra-test")?;
    s.expect(&addr, &routed_to(get("/"), "infra-backend-v1", INFRA_NS))
}
