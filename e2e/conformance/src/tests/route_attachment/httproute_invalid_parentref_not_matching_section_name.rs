//! Encodes upstream's HTTPRouteInvalidParentRefNotMatchingSectionName: a route whose parentRef names a section (`http1`) the
//! `same-namespace` Gateway does not have is Accepted False / NoMatchingParent, has no accepted
//! parent, and the Gateway counts zero routes.

use crate::checks::nn;
use crate::tests::common::route_must_not_attach;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteInvalidParentRefNotMatchingSectionName",
    description: "A single HTTPRoute in the gateway-conformance-infra namespace should set the Accepted status to False with reason NoMatchingParent when attempting to bind to a Gateway that does not have a matching SectionName.",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-invalid-parentref-not-matching-section-name.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    // The route must have an Accepted condition with reason NoMatchingParent.
    route_must_not_attach(
        s,
        &nn(INFRA_NS, "httproute-listener-not-matching-section-name"),
        &nn(INFRA_NS, "same-namespace"),
        "NoMatchingParent",
        "HTTPRoute with no matching sectionName in ParentRef has an Accepted Condition with status False and Reason NoMatchingParent",
        "Route should not have Parents accepted in status",
    )
}
