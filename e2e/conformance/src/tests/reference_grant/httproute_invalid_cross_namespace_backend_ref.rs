//! Encodes upstream's HTTPRouteInvalidCrossNamespaceBackendRef: a route in the infra namespace
//! whose backendRef is a Service in the web backend namespace, with no ReferenceGrant, is
//! Accepted but ResolvedRefs False / RefNotPermitted, and requests to it answer 500.

use crate::dsl::{answered, request};
use crate::tests::common::unresolved_backend_ref;
use crate::{ConformanceTest, Suite};

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
    // The route must be attached.
    unresolved_backend_ref(
        s,
        "invalid-cross-namespace-backend-ref",
        "RefNotPermitted",
        "HTTPRoute with a cross-namespace BackendRef and no ReferenceGrant has a ResolvedRefs Condition with status False and Reason RefNotPermitted",
        vec![(
            "HTTP Request to invalid cross-namespace backend must receive a 500",
            answered(request("GET", "", "/", &[]), 500),
        )],
    )
}
