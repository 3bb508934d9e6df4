//! Encodes upstream's HTTPRouteInvalidCrossNamespaceBackendRef: a route in the infra namespace
//! whose backendRef is a Service in the web backend namespace, with no ReferenceGrant, is
//! Accepted but ResolvedRefs False / RefNotPermitted, and requests to it answer 500.

use super::support::{Subtests, answered, request};
use crate::conformance::checks::{GatewayRef, cond, nn};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteInvalidCrossNamespaceBackendRef",
    description: "A single HTTPRoute in the gateway-conformance-infra namespace should set a ResolvedRefs status False with reason RefNotPermitted when attempting to bind to a Gateway in the same namespace if the route has a BackendRef Service in the gateway-conformance-web-backend namespace and a ReferenceGrant granting permission to route to that Service does not exist",
    features: &["Gateway", "HTTPRoute", "ReferenceGrant"],
    manifests: &["tests/httproute-invalid-cross-namespace-backend-ref.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "invalid-cross-namespace-backend-ref");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    // The route must be attached.
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    let mut t = Subtests::default();
    t.run(
        s,
        "HTTPRoute with a cross-namespace BackendRef and no ReferenceGrant has a ResolvedRefs Condition with status False and Reason RefNotPermitted",
        |s| s.http_route_must_have_condition(&route, &gw.nn, cond("ResolvedRefs", "False", "RefNotPermitted")),
    );
    t.run(
        s,
        "HTTP Request to invalid cross-namespace backend must receive a 500",
        |s| s.expect(&addr, &answered(request("GET", "", "/", &[]), 500)),
    );
    t.finish()
}
