//! Encodes upstream's `HTTPRouteBackendProtocolH2C` (v1.6.1): a route to the Service port with
//! `appProtocol: kubernetes.io/h2c` is Accepted, and a request sent to the Gateway with
//! HTTP/2 prior knowledge reaches `infra-backend-v1` (200, path `/`, the infra namespace).

use super::support::expect_h2c;
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::{ExpectedResponse, Request, Response};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

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
    let route = nn(INFRA_NS, "backend-protocol-h2c");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    // Subtest "http2 prior knowledge request should reach backend" (the h2c upgrade mechanism
    // is deprecated and not tested upstream).
    expect_h2c(
        s,
        &addr,
        &ExpectedResponse {
            request: Request {
                path: "/".into(),
                ..Default::default()
            },
            response: Response {
                status_code: 200,
                ..Default::default()
            },
            backend: "infra-backend-v1".into(),
            namespace: INFRA_NS.into(),
            test_case_name: "http2 prior knowledge request should reach backend".into(),
            ..Default::default()
        },
    )
}
