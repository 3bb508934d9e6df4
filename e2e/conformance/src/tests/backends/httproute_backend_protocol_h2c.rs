//! Encodes upstream's `HTTPRouteBackendProtocolH2C` (v1.6.1): a route to the Service port with
//! `appProtocol: kubernetes.io/h2c` is Accepted, and a request sent to the Gateway with
//! HTTP/2 prior knowledge reaches `infra-backend-v1` (200, path `/`, the infra namespace).

use crate::dsl::{get, routed_to, status};
use crate::http::ExpectedResponse;
use crate::tests::common::same_namespace_route_accepted;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteBackendProtocolH2C",
    description: "A HTTPRoute with a BackendRef that has an appProtocol kubernetes.io/h2c should be functional",
    features: &["Gateway", "HTTPRoute", "HTTPRouteBackendProtocolH2C"],
    manifests: &["tests/httproute-backend-protocol-h2c.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_accepted(s, "backend-protocol-h2c")?;
    // Subtest "http2 prior knowledge request should reach backend" (the h2c upgrade mechanism
    // is deprecated and not tested upstream).
    s.expect_h2c(
        &addr,
        &ExpectedResponse {
            response: status(200),
            test_case_name: "http2 prior knowledge request should reach backend".into(),
            ..routed_to(get("/"), "infra-backend-v1", INFRA_NS)
        },
    )
}
