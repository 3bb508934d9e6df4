//! Encodes upstream's HTTPRouteInvalidBackendRefUnknownKind: a route whose backendRef has an
//! unknown group and kind is still Accepted by the `same-namespace` Gateway, is ResolvedRefs
//! False / InvalidKind, and requests to it answer 500.

use crate::dsl::{answered, request};
use crate::tests::common::unresolved_backend_ref;
use crate::{ConformanceTest, Suite};

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
    // Both the Gateway and the route are Accepted.
    unresolved_backend_ref(
        s,
        "invalid-backend-ref-unknown-kind",
        "InvalidKind",
        "HTTPRoute with Invalid Kind has a ResolvedRefs Condition with status False and Reason InvalidKind",
        vec![(
            "HTTP Request to invalid backend with invalid Kind receives a 500",
            answered(request("GET", "", "/v2", &[]), 500),
        )],
    )
}
