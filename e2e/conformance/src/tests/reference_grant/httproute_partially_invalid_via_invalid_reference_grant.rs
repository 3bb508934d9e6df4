//! Encodes upstream's HTTPRoutePartiallyInvalidViaInvalidReferenceGrant: a route with two
//! rules pointing at app backend Services, where the ReferenceGrant covers only
//! `app-backend-v1`, is Accepted and ResolvedRefs False / RefNotPermitted; the rule for the
//! ungranted `app-backend-v2` (`/v2`) answers 500 while the granted sibling rule (`/`) still
//! reaches `app-backend-v1`.

use crate::dsl::{answered, request, routed_to, status};
use crate::http::ExpectedResponse;
use crate::tests::common::unresolved_backend_ref;
use crate::{APP_NS, ConformanceTest, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRoutePartiallyInvalidViaInvalidReferenceGrant",
    description: "A single HTTPRoute in the gateway-conformance-infra namespace should attach to a Gateway in the same namespace if the route has a backendRef Service in the gateway-conformance-app-backend namespace and a ReferenceGrant exists but does not grant permission to route to that specific Service",
    features: &["Gateway", "HTTPRoute", "ReferenceGrant"],
    manifests: &["tests/httproute-partially-invalid-via-invalid-reference-grant.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    // Route and Gateway must be attached.
    unresolved_backend_ref(
        s,
        "invalid-reference-grant",
        "RefNotPermitted",
        "HTTPRoute with BackendRef in another namespace and no ReferenceGrant covering the Service has a ResolvedRefs Condition with status False and Reason RefNotPermitted",
        vec![
            (
                "HTTP Request to invalid backend with missing referenceGrant should receive a 500",
                answered(request("GET", "", "/v2", &[]), 500),
            ),
            (
                "HTTP Request to valid sibling backend should succeed",
                ExpectedResponse {
                    response: status(200),
                    ..routed_to(request("GET", "", "/", &[]), "app-backend-v1", APP_NS)
                },
            ),
        ],
    )
}
