//! Encodes upstream's HTTPRouteInvalidCrossNamespaceParentRef: a route in the web backend
//! namespace referencing the infra namespace's `same-namespace` Gateway (which only allows
//! routes from its own namespace) keeps ResolvedRefs True, is Accepted False /
//! NotAllowedByListeners, has no accepted parent, and the Gateway counts zero routes.

use super::support::{
    Subtests, gateway_must_have_zero_routes, resolved_refs_true,
    route_must_have_no_accepted_parents,
};
use crate::conformance::checks::{cond, nn};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite, WEB_NS};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteInvalidCrossNamespaceParentRef",
    description: "A single HTTPRoute in the gateway-conformance-web-backend namespace should fail to attach to a Gateway in another namespace that it is not allowed to",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-invalid-cross-namespace-parent-ref.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let gw = nn(INFRA_NS, "same-namespace");
    let route = nn(WEB_NS, "invalid-cross-namespace-parent-ref");
    resolved_refs_true(s, &route, &gw)?;
    let mut t = Subtests::default();
    t.run(
        s,
        "HTTPRoute should have an Accepted: false condition with reason NotAllowedByListeners",
        |s| {
            s.http_route_must_have_condition(
                &route,
                &gw,
                cond("Accepted", "False", "NotAllowedByListeners"),
            )
        },
    );
    t.run(s, "Route should not have Parents set in status", |s| {
        route_must_have_no_accepted_parents(s, &route)
    });
    t.run(s, "Gateway should have 0 Routes attached", |s| {
        gateway_must_have_zero_routes(s, &gw)
    });
    t.finish()
}
