//! Encodes upstream's HTTPRouteInvalidBackendRefUnknownKind: a route whose backendRef has an
//! unknown group and kind is still Accepted by the `same-namespace` Gateway, is ResolvedRefs
//! False / InvalidKind, and requests to it answer 500.

use super::support::{Subtests, answered, request};
use crate::conformance::checks::{GatewayRef, cond, nn};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteInvalidBackendRefUnknownKind",
    description: "A single HTTPRoute in the gateway-conformance-infra namespace should set a ResolvedRefs status False with reason InvalidKind when attempting to bind to a Gateway in the same namespace if the route has a BackendRef that points to an unknown Kind.",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-invalid-backendref-unknown-kind.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "invalid-backend-ref-unknown-kind");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    // Both the Gateway and the route are Accepted.
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    let mut t = Subtests::default();
    t.run(
        s,
        "HTTPRoute with Invalid Kind has a ResolvedRefs Condition with status False and Reason InvalidKind",
        |s| s.http_route_must_have_condition(&route, &gw.nn, cond("ResolvedRefs", "False", "InvalidKind")),
    );
    t.run(
        s,
        "HTTP Request to invalid backend with invalid Kind receives a 500",
        |s| s.expect(&addr, &answered(request("GET", "", "/v2", &[]), 500)),
    );
    t.finish()
}
