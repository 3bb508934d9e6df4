//! Encodes upstream's `HTTPRouteRequestMultipleMirrors` (v1.6.1): a route with two
//! RequestMirror filters (to `infra-backend-v2` and `infra-backend-v3`) is Accepted;
//! `/multi-mirror` and `/multi-mirror-and-modify-request-headers` reach `infra-backend-v1` as
//! expected, and the pods of both mirror backends log the same request.

use super::httproute_request_mirror::{expect_with_mirrors, mirror};
use super::support::{headers, names};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::{ExpectedRequest, ExpectedResponse, Request};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRequestMultipleMirrors",
    description: "An HTTPRoute with multiple request mirror filters",
    features: &[
        "Gateway",
        "HTTPRoute",
        "HTTPRouteRequestMirror",
        "HTTPRouteRequestMultipleMirrors",
    ],
    manifests: &["tests/httproute-request-multiple-mirrors.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "request-multiple-mirrors");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    let mirrors = || vec![mirror("infra-backend-v2"), mirror("infra-backend-v3")];
    let cases = vec![
        ExpectedResponse {
            request: Request {
                path: "/multi-mirror".into(),
                ..Default::default()
            },
            expected_request: Some(ExpectedRequest {
                path: "/multi-mirror".into(),
                ..Default::default()
            }),
            backend: "infra-backend-v1".into(),
            mirrored_to: mirrors(),
            namespace: INFRA_NS.into(),
            ..Default::default()
        },
        ExpectedResponse {
            request: Request {
                path: "/multi-mirror-and-modify-request-headers".into(),
                headers: headers(&[
                    ("X-Header-Remove", "remove-val"),
                    ("X-Header-Add-Append", "append-val-1"),
                ]),
                ..Default::default()
            },
            expected_request: Some(ExpectedRequest {
                path: "/multi-mirror-and-modify-request-headers".into(),
                headers: headers(&[
                    ("X-Header-Add", "header-val-1"),
                    ("X-Header-Add-Append", "append-val-1,header-val-2"),
                    ("X-Header-Set", "set-overwrites-values"),
                ]),
                absent_headers: names(&["X-Header-Remove"]),
                ..Default::default()
            }),
            backend: "infra-backend-v1".into(),
            mirrored_to: mirrors(),
            namespace: INFRA_NS.into(),
            ..Default::default()
        },
    ];
    expect_with_mirrors(s, &addr, cases)
}
