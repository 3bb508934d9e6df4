//! HTTPRouteWeight: weighted backends receive traffic in proportion (70/30/0).

use crate::conformance::checks::{GatewayRef, cond, nn};
use crate::conformance::http::{ExpectedResponse, Request, Response};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteWeight",
    description: "An HTTPRoute with weighted backends",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-weight.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "weighted-backends");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    s.http_route_must_have_condition(&route, &gw.nn, cond("ResolvedRefs", "True", "ResolvedRefs"))?;
    let expected = ExpectedResponse {
        request: Request {
            path: "/".into(),
            ..Default::default()
        },
        response: Response {
            status_codes: vec![200],
            ..Default::default()
        },
        namespace: INFRA_NS.into(),
        ..Default::default()
    };
    s.expect(&addr, &expected)?;
    s.expect_weighted_distribution(
        &addr,
        &expected,
        &[
            ("infra-backend-v1", 0.7),
            ("infra-backend-v2", 0.3),
            ("infra-backend-v3", 0.0),
        ],
    )
}
