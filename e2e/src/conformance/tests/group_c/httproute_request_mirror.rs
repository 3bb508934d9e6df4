//! Encodes upstream's `HTTPRouteRequestMirror` (v1.6.1): a route that mirrors to
//! `infra-backend-v2` is Accepted; `/mirror` and `/mirror-and-modify-headers` (with a
//! RequestHeaderModifier before the mirror) reach `infra-backend-v1` as expected, and the
//! pods of `infra-backend-v2` log the same request (told apart by a request ID in the query).

use super::support::{add_request_id_query_param, headers, names, new_uuid};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::{ExpectedRequest, ExpectedResponse, MirroredBackend, Request};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};
use anyhow::Context;

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRequestMirror",
    description: "An HTTPRoute with request mirror filter",
    features: &["Gateway", "HTTPRoute", "HTTPRouteRequestMirror"],
    manifests: &["tests/httproute-request-mirror.yaml"],
    provisional: false,
    run,
};

/// A backend of the infra namespace requests are mirrored to.
pub(super) fn mirror(name: &str) -> MirroredBackend {
    MirroredBackend {
        name: name.into(),
        namespace: INFRA_NS.into(),
        percent: None,
    }
}

/// Upstream's mirror subtest: a fresh request ID goes into the path, the request must meet
/// the expectation, and every mirror backend must log the request.
pub(super) fn expect_with_mirrors(
    s: &mut Suite,
    gateway: &str,
    cases: Vec<ExpectedResponse>,
) -> anyhow::Result<()> {
    for (i, mut case) in cases.into_iter().enumerate() {
        let name = case.name(i);
        add_request_id_query_param(&mut case, &new_uuid());
        s.expect(gateway, &case)
            .and_then(|()| s.expect_mirrored(&case.mirrored_to, &case.request.path))
            .with_context(|| format!("case {name}"))?;
    }
    Ok(())
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "request-mirror");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    let cases = vec![
        ExpectedResponse {
            request: Request {
                path: "/mirror".into(),
                ..Default::default()
            },
            expected_request: Some(ExpectedRequest {
                path: "/mirror".into(),
                ..Default::default()
            }),
            backend: "infra-backend-v1".into(),
            mirrored_to: vec![mirror("infra-backend-v2")],
            namespace: INFRA_NS.into(),
            ..Default::default()
        },
        ExpectedResponse {
            request: Request {
                path: "/mirror-and-modify-headers".into(),
                headers: headers(&[
                    ("X-Header-Remove", "remove-val"),
                    ("X-Header-Add-Append", "append-val-1"),
                ]),
                ..Default::default()
            },
            expected_request: Some(ExpectedRequest {
                path: "/mirror-and-modify-headers".into(),
                headers: headers(&[
                    ("X-Header-Add", "header-val-1"),
                    ("X-Header-Add-Append", "append-val-1,header-val-2"),
                    ("X-Header-Set", "set-overwrites-values"),
                ]),
                absent_headers: names(&["X-Header-Remove"]),
                ..Default::default()
            }),
            backend: "infra-backend-v1".into(),
            mirrored_to: vec![mirror("infra-backend-v2")],
            namespace: INFRA_NS.into(),
            ..Default::default()
        },
    ];
    expect_with_mirrors(s, &addr, cases)
}
