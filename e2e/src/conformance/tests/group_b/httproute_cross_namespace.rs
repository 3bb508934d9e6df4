//! Encodes upstream's HTTPRouteCrossNamespace: a route in the web backend namespace attaches
//! to the infra namespace's `backend-namespaces` Gateway (Accepted, ResolvedRefs True), and a
//! request to `/` reaches `web-backend` in its namespace.

use super::support::{request, resolved_refs_true};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::{ExpectedResponse, Response};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite, WEB_NS};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteCrossNamespace",
    description: "A single HTTPRoute in the gateway-conformance-web-backend namespace should attach to Gateway in another namespace",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-cross-namespace.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(WEB_NS, "cross-namespace");
    let gw = GatewayRef::new(INFRA_NS, "backend-namespaces");
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    resolved_refs_true(s, &route, &gw.nn)?;
    // Subtest: simple HTTP request should reach web-backend.
    s.expect(
        &addr,
        &ExpectedResponse {
            request: request("", "", "/", &[]),
            response: Response {
                status_code: 200,
                ..Default::default()
            },
            backend: "web-backend".into(),
            namespace: WEB_NS.into(),
            ..Default::default()
        },
    )
}
