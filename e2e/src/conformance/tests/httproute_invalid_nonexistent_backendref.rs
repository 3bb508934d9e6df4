//! HTTPRouteInvalidNonExistentBackendRef: a route whose only backend does not exist is
//! ResolvedRefs False / BackendNotFound and answers 500.

use crate::conformance::checks::{GatewayRef, cond, nn};
use crate::conformance::http::{ExpectedResponse, Request, Response};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteInvalidNonExistentBackendRef",
    description: "A single HTTPRoute in the gateway-conformance-infra namespace should set a ResolvedRefs status False with reason BackendNotFound and return 500 when binding to a Gateway in the same namespace if the route has a BackendRef Service that does not exist",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-invalid-nonexistent-backendref.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "invalid-nonexistent-backend-ref");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    s.http_route_must_have_condition(
        &route,
        &gw.nn,
        cond("ResolvedRefs", "False", "BackendNotFound"),
    )?;
    s.expect(
        &addr,
        &ExpectedResponse {
            request: Request {
                method: "GET".into(),
                path: "/".into(),
                ..Default::default()
            },
            response: Response {
                status_code: 500,
                ..Default::default()
            },
            ..Default::default()
        },
    )
}
