//! Encodes upstream's `HTTPRouteRequestHeaderModifierBackendWeights` (v1.6.1): two weighted
//! backendRefs each set a `Backend` request header naming themselves; once the route is
//! Accepted with ResolvedRefs and `/` answers 200, each of 100 requests must carry exactly
//! one `Backend` header naming the backend whose pod answered.

use super::support::accepted_with_resolved_refs;
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::{ExpectedResponse, Request, Response, wire_request};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};
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
    let route = nn(INFRA_NS, "request-header-modifier-backend-weights");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = accepted_with_resolved_refs(s, &gw, &route)?;
    let expected = ExpectedResponse {
        request: Request {
            path: "/".into(),
            ..Default::default()
        },
        response: Response {
            status_code: 200,
            ..Default::default()
        },
        namespace: INFRA_NS.into(),
        ..Default::default()
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
