//! Encodes upstream's HTTPRouteInvalidCrossNamespaceParentRef: a route in the web backend
//! namespace referencing the infra namespace's `same-namespace` Gateway (which only allows
//! routes from its own namespace) keeps ResolvedRefs True, is Accepted False /
//! NotAllowedByListeners, has no accepted parent, and the Gateway counts zero routes.

use crate::checks::nn;
use crate::tests::common::route_must_not_attach;
use crate::{ConformanceTest, INFRA_NS, Suite, WEB_NS};

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
    s.http_route_must_have_resolved_refs(&route, &gw)?;
    route_must_not_attach(
        s,
        &route,
        &gw,
        "NotAllowedByListeners",
        "HTTPRoute should have an Accepted: false condition with reason NotAllowedByListeners",
        "Route should not have Parents set in status",
    )
}
