//! Encodes upstream's HTTPRouteReferenceGrant: a route in the infra namespace whose backend is
//! `web-backend` in the web backend namespace, allowed by a ReferenceGrant there, is Accepted
//! and ResolvedRefs True and reaches `web-backend`; once the ReferenceGrant is deleted, the
//! same request answers 500.

use super::support::{Subtests, answered, request, resolved_refs_true};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::cluster::ObjId;
use crate::conformance::http::{ExpectedResponse, Response};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite, WEB_NS};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteReferenceGrant",
    description: "A single HTTPRoute in the gateway-conformance-infra namespace, with a backendRef in the gateway-conformance-web-backend namespace, should attach to Gateway in the gateway-conformance-infra namespace",
    features: &["Gateway", "HTTPRoute", "ReferenceGrant"],
    manifests: &["tests/httproute-reference-grant.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "reference-grant");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    resolved_refs_true(s, &route, &gw.nn)?;
    let mut t = Subtests::default();
    t.run(s, "Simple HTTP request should reach web-backend", |s| {
        s.expect(
            &addr,
            &ExpectedResponse {
                request: request("GET", "", "/", &[]),
                response: Response {
                    status_code: 200,
                    ..Default::default()
                },
                backend: "web-backend".into(),
                namespace: WEB_NS.into(),
                ..Default::default()
            },
        )
    });
    let grant = ObjId::new("ReferenceGrant", WEB_NS, "reference-grant");
    s.cluster.must_exist(&grant)?;
    s.cluster.delete(&[grant])?;
    t.run(
        s,
        "Simple HTTP request should return 500 after deleting the relevant reference grant",
        |s| s.expect(&addr, &answered(request("GET", "", "/", &[]), 500)),
    );
    t.finish()
}
