//! Encodes upstream's HTTPRouteInvalidParentRefNotMatchingListenerPort: a route whose
//! parentRef asks for port 81 of the `same-namespace` Gateway (which listens on 80 only) keeps
//! ResolvedRefs True, is Accepted False / NoMatchingParent, has no accepted parent, and the
//! Gateway counts zero routes.

use super::support::{
    Subtests, gateway_must_have_zero_routes, resolved_refs_true,
    route_must_have_no_accepted_parents,
};
use crate::conformance::checks::{cond, nn};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteInvalidParentRefNotMatchingListenerPort",
    description: "A single HTTPRoute in the gateway-conformance-infra namespace should set the Accepted status to False with reason NoMatchingParent when attempting to bind to a Gateway that does not have a matching ListenerPort.",
    features: &["Gateway", "HTTPRoute", "HTTPRouteDestinationPortMatching"],
    manifests: &["tests/httproute-invalid-parentref-not-matching-listener-port.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "httproute-listener-not-matching-route-port");
    let gw = nn(INFRA_NS, "same-namespace");
    resolved_refs_true(s, &route, &gw)?;
    let mut t = Subtests::default();
    // The route must have an Accepted condition with reason NoMatchingParent.
    t.run(
        s,
        "HTTPRoute with no matching port in ParentRef has an Accepted Condition with status False and Reason NoMatchingParent",
        |s| s.http_route_must_have_condition(&route, &gw, cond("Accepted", "False", "NoMatchingParent")),
    );
    t.run(s, "Route should not have Parents accepted in status", |s| {
        route_must_have_no_accepted_parents(s, &route)
    });
    t.run(s, "Gateway should have 0 Routes attached", |s| {
        gateway_must_have_zero_routes(s, &gw)
    });
    t.finish()
}
