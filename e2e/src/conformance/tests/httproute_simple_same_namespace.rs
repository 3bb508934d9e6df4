//! HTTPRouteSimpleSameNamespace: a route in the infra namespace attaches to a Gateway there.

use crate::conformance::checks::{GatewayRef, cond, nn};
use crate::conformance::http::{ExpectedResponse, Request};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

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
    let route = nn(INFRA_NS, "gateway-conformance-infra-test");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    s.http_route_must_have_condition(&route, &gw.nn, cond("ResolvedRefs", "True", "ResolvedRefs"))?;
    s.expect(
        &addr,
        &ExpectedResponse {
            request: Request {
                path: "/".into(),
                ..Default::default()
            },
            backend: "infra-backend-v1".into(),
            namespace: INFRA_NS.into(),
            ..Default::default()
        },
    )
}
