//! Encodes upstream's HTTPRouteInvalidReferenceGrant: a route in the infra namespace whose
//! backendRef is `web-backend` in the web backend namespace, where every ReferenceGrant is
//! wrong in one respect (namespace, from group/kind/namespace, to group/kind/name), is Accepted
//! but ResolvedRefs False / RefNotPermitted, and requests answer 500 instead of reaching
//! `web-backend`.

use crate::tests::common::{unresolved_backend_ref, web_backend};
use crate::{ConformanceTest, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteInvalidReferenceGrant",
    description: "A single HTTPRoute in the gateway-conformance-infra namespace, with a backendRef in another namespace without valid ReferenceGrant, should have the ResolvedRefs condition set to False and not forward HTTP requests to any backend",
    features: &["Gateway", "HTTPRoute", "ReferenceGrant"],
    manifests: &["tests/httproute-invalid-reference-grant.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    unresolved_backend_ref(
        s,
        "reference-grant",
        "RefNotPermitted",
        "HTTPRoute with BackendRef in another namespace and no ReferenceGrant covering the Service has a ResolvedRefs Condition with status False and Reason RefNotPermitted",
        vec![(
            "Simple HTTP request not should reach web-backend",
            web_backend(500),
        )],
    )
}
