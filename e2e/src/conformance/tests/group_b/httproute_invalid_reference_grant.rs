//! Encodes upstream's HTTPRouteInvalidReferenceGrant: a route in the infra namespace whose
//! backendRef is `web-backend` in the web backend namespace, where every ReferenceGrant is
//! wrong in one respect (namespace, from group/kind/namespace, to group/kind/name), is Accepted
//! but ResolvedRefs False / RefNotPermitted, and requests answer 500 instead of reaching
//! `web-backend`.

use super::support::{Subtests, request};
use crate::conformance::checks::{GatewayRef, cond, nn};
use crate::conformance::http::{ExpectedResponse, Response};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite, WEB_NS};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteInvalidReferenceGrant",
    description: "A single HTTPRoute in the gateway-conformance-infra namespace, with a backendRef in another namespace without valid ReferenceGrant, should have the ResolvedRefs condition set to False and not forward HTTP requests to any backend",
    features: &["Gateway", "HTTPRoute", "ReferenceGrant"],
    manifests: &["tests/httproute-invalid-reference-grant.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "reference-grant");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    let mut t = Subtests::default();
    t.run(
        s,
        "HTTPRoute with BackendRef in another namespace and no ReferenceGrant covering the Service has a ResolvedRefs Condition with status False and Reason RefNotPermitted",
        |s| s.http_route_must_have_condition(&route, &gw.nn, cond("ResolvedRefs", "False", "RefNotPermitted")),
    );
    t.run(s, "Simple HTTP request not should reach web-backend", |s| {
        s.expect(
            &addr,
            &ExpectedResponse {
                request: request("GET", "", "/", &[]),
                response: Response {
                    status_code: 500,
                    ..Default::default()
                },
                backend: "web-backend".into(),
                namespace: WEB_NS.into(),
                ..Default::default()
            },
        )
    });
    t.finish()
}
