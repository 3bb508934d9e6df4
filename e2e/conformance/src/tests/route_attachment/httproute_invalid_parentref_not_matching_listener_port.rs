//! Encodes upstream's HTTPRouteInvalidParentRefNotMatchingListenerPort: a route whose
//! parentRef asks for port 81 of the `same-namespace` Gateway (which listens on 80 only) keeps
//! ResolvedRefs True, is Accepted False / NoMatchingParent, has no accepted parent, and the
//! Gateway counts zero routes.

use crate::checks::nn;
use crate::tests::common::route_must_not_attach;
use crate::{ConformanceTest, INFRA_NS, Suite};

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
    s.http_route_must_have_resolved_refs(&route, &gw)?;
    // The route must have an Accepted condition with reason NoMatchingParent.
    route_must_not_attach(
        s,
        &route,
        &gw,
        "NoMatchingParent",
        "HTTPRoute with no matching port in ParentRef has an Accepted Condition with status False and Reason NoMatchingParent",
        "Route should not have Parents accepted in status",
    )
}
