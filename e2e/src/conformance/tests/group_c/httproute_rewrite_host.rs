//! Encodes upstream's `HTTPRouteRewriteHost` (v1.6.1): a route for `rewrite.example` with
//! URLRewrite hostname filters is Accepted with ResolvedRefs; `/one` reaches
//! `infra-backend-v1` as `one.example.org`, `/two` (the catch-all rule) reaches
//! `infra-backend-v2` as `example.org`, and `/rewrite-host-and-modify-headers` reaches
//! `infra-backend-v2` as `test.example.org` with its headers modified.

use super::support::{accepted_with_resolved_refs, expect_all, headers, names};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::{ExpectedRequest, ExpectedResponse, Request};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRewriteHost",
    description: "An HTTPRoute with hostname rewrite filter",
    features: &["Gateway", "HTTPRoute", "HTTPRouteHostRewrite"],
    manifests: &["tests/httproute-rewrite-host.yaml"],
    provisional: false,
    run,
};

/// A request to `rewrite.example` that must reach `backend` with host `rewritten`.
fn case(path: &str, rewritten: &str, backend: &str) -> ExpectedResponse {
    ExpectedResponse {
        request: Request {
            path: path.into(),
            host: "rewrite.example".into(),
            ..Default::default()
        },
        expected_request: Some(ExpectedRequest {
            path: path.into(),
            host: rewritten.into(),
            ..Default::default()
        }),
        backend: backend.into(),
        namespace: INFRA_NS.into(),
        ..Default::default()
    }
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "rewrite-host");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = accepted_with_resolved_refs(s, &gw, &route)?;
    let mut modify = case(
        "/rewrite-host-and-modify-headers",
        "test.example.org",
        "infra-backend-v2",
    );
    modify.request.headers = headers(&[
        ("X-Header-Remove", "remove-val"),
        ("X-Header-Add-Append", "append-val-1"),
    ]);
    if let Some(er) = modify.expected_request.as_mut() {
        er.headers = headers(&[
            ("X-Header-Add", "header-val-1"),
            ("X-Header-Add-Append", "append-val-1,header-val-2"),
            ("X-Header-Set", "set-overwrites-values"),
        ]);
        er.absent_headers = names(&["X-Header-Remove"]);
    }
    let cases = [
        case("/one", "one.example.org", "infra-backend-v1"),
        case("/two", "example.org", "infra-backend-v2"),
        modify,
    ];
    expect_all(s, &addr, &cases)
}
