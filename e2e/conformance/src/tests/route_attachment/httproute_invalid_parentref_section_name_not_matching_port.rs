//! Encodes upstream's HTTPRouteInvalidParentRefSectionNameNotMatchingPort: a route whose parentRef names the Gateway's `http`
//! listener (port 80) together with port 81 is Accepted False / NoMatchingParent, has no
//! accepted parent, and the Gateway counts zero routes.

use crate::checks::nn;
use crate::tests::common::route_must_not_attach;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteInvalidParentRefSectionNameNotMatchingPort",
    description: "A single HTTPRoute in the gateway-conformance-infra namespace should set the Accepted status to False with reason NoMatchingParent when attempting to bind to a Gateway that SectionName does not match Port value.",
    features: &["Gateway", "HTTPRoute", "HTTPRouteParentRefPort"],
    manifests: &["tests/httproute-invalid-parentref-section-name-not-matching-port.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    // The route must have an Accepted condition with reason NoMatchingParent.
    route_must_not_attach(
        s,
        &nn(
            INFRA_NS,
            "httproute-listener-section-name-not-matching-port",
        ),
        &nn(
            INFRA_NS,
            "gateway-with-one-not-matching-port-and-section-name-route",
        ),
        "NoMatchingParent",
        "HTTPRoute with sectionName does not match Port in ParentRef has an Accepted Condition with status False and Reason NoMatchingParent",
        "Route should not have Parents accepted in status",
    )
}
