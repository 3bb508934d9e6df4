//! Encodes upstream `HTTPRouteNamedRule` (httproute-named-rule.go): a route whose first rule has
//! a `name` is accepted and both its named and unnamed rules serve traffic (200 from the infra
//! namespace; upstream does not check which backend).

use super::support::{self, Subtests};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::{ExpectedResponse, Request, Response};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteNamedRule",
    description: "An HTTPRoute with a named HTTPRouteRule",
    features: &["Gateway", "HTTPRoute", "HTTPRouteNamedRouteRule"],
    manifests: &["tests/httproute-named-rule.yaml"],
    provisional: true,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "http-named-rules");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    support::route_must_have_resolved_refs(s, &route, &gw.nn)?;
    let mut subtests = Subtests::new();
    for (i, path) in ["/named", "/unnamed"].into_iter().enumerate() {
        let mut expected = ExpectedResponse {
            request: Request {
                path: path.into(),
                ..Default::default()
            },
            response: Response {
                status_code: 200,
                ..Default::default()
            },
            namespace: INFRA_NS.into(),
            ..Default::default()
        };
        expected.test_case_name = expected.name(i);
        subtests.run(s, &expected.test_case_name, |s| s.expect(&addr, &expected));
    }
    subtests.finish()
}
