//! Encodes upstream `GatewayWithAttachedRoutesWithPort8080` (gateway-with-attached-routes.go):
//! of two HTTP listeners (ports 8080 and 80), only the one a route names by `sectionName`
//! counts it; both are Accepted and ResolvedRefs True.

use crate::checks::nn;
use crate::dsl::ready_listener;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "GatewayWithAttachedRoutesWithPort8080",
    description: "A Gateway in the gateway-conformance-infra namespace should be attached to routes.",
    features: &["Gateway", "GatewayPort8080", "HTTPRoute"],
    manifests: &["tests/gateway-with-attached-routes-with-port-8080.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    s.logf("subtest: Gateway listener should have attached route by specifying the sectionName");
    s.gateway_status_must_have_listeners(
        &nn(
            INFRA_NS,
            "gateway-with-two-listeners-and-one-attached-route",
        ),
        &[
            ready_listener("http-unattached", 0),
            ready_listener("http", 1),
        ],
    )
}
