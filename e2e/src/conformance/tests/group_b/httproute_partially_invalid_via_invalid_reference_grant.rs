//! Encodes upstream's HTTPRoutePartiallyInvalidViaInvalidReferenceGrant: a route with two
//! rules pointing at app backend Services, where the ReferenceGrant covers only
//! `app-backend-v1`, is Accepted and ResolvedRefs False / RefNotPermitted; the rule for the
//! ungranted `app-backend-v2` (`/v2`) answers 500 while the granted sibling rule (`/`) still
//! reaches `app-backend-v1`.

use super::support::{Subtests, answered, request};
use crate::conformance::checks::{GatewayRef, cond, nn};
use crate::conformance::http::{ExpectedResponse, Response};
use crate::conformance::{APP_NS, ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRoutePartiallyInvalidViaInvalidReferenceGrant",
    description: "A single HTTPRoute in the gateway-conformance-infra namespace should attach to a Gateway in the same namespace if the route has a backendRef Service in the gateway-conformance-app-backend namespace and a ReferenceGrant exists but does not grant permission to route to that specific Service",
    features: &["Gateway", "HTTPRoute", "ReferenceGrant"],
    manifests: &["tests/httproute-partially-invalid-via-invalid-reference-grant.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "invalid-reference-grant");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    // Route and Gateway must be attached.
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    let mut t = Subtests::default();
    t.run(
        s,
        "HTTPRoute with BackendRef in another namespace and no ReferenceGrant covering the Service has a ResolvedRefs Condition with status False and Reason RefNotPermitted",
        |s| s.http_route_must_have_condition(&route, &gw.nn, cond("ResolvedRefs", "False", "RefNotPermitted")),
    );
    t.run(
        s,
        "HTTP Request to invalid backend with missing referenceGrant should receive a 500",
        |s| s.expect(&addr, &answered(request("GET", "", "/v2", &[]), 500)),
    );
    t.run(
        s,
        "HTTP Request to valid sibling backend should succeed",
        |s| {
            s.expect(
                &addr,
                &ExpectedResponse {
                    request: request("GET", "", "/", &[]),
                    response: Response {
                        status_code: 200,
                        ..Default::default()
                    },
                    backend: "app-backend-v1".into(),
                    namespace: APP_NS.into(),
                    ..Default::default()
                },
            )
        },
    );
    t.finish()
}
