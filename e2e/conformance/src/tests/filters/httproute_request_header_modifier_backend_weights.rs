//! Encodes upstream's `HTTPRouteRequestHeaderModifierBackendWeights` (v1.6.1): two weighted
//! backendRefs each set a `Backend` request header naming themselves; once the route is
//! Accepted with ResolvedRefs and `/` answers 200, each of 100 requests must carry exactly
//! one `Backend` header naming the backend whose pod answered.

use crate::dsl::{answered, get};
use crate::http::{ExpectedResponse, wire_request};
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, INFRA_NS, Suite};
use anyhow::bail;

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRequestHeaderModifierBackendWeights",
    description: "An HTTPRoute with backend request header modifier filter sends traffic to the correct backends",
    features: &[
        "Gateway",
        "HTTPRouteBackendRequestHeaderModification",
        "HTTPRoute",
    ],
    manifests: &["tests/httproute-request-header-modifier-backend-weights.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_ready(s, "request-header-modifier-backend-weights")?;
    let expected = ExpectedResponse {
        namespace: INFRA_NS.into(),
        ..answered(get("/"), 200)
    };
    let req = wire_request(&expected);
    // The request succeeds before traffic is checked.
    s.expect(&addr, &expected)?;
    for i in 0..100 {
        let captured = s.send(&addr, &req, None)?;
        let echo = captured.echo.unwrap_or_default();
        // The echoed headers use canonical names, as upstream's `cReq.Headers["Backend"]`.
        let backends: Vec<&str> = echo["headers"]["Backend"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let [backend] = backends[..] else {
            bail!(
                "request {i}: expected a single 'Backend' header to have been set, got {}",
                backends.len()
            );
        };
        let pod = echo["pod"].as_str().unwrap_or_default();
        if !pod.starts_with(backend) {
            bail!(
                "request {i}: expected the backendRef to have set the correct headers and sent the request to the correct pod, got {pod:?}, want {backend:?}"
            );
        }
    }
    s.logf("100 requests carried the Backend header of the backend that answered");
    Ok(())
}
