//! Encodes upstream's `HTTPRouteRewritePath` (v1.6.1): a route with URLRewrite path filters
//! (ReplacePrefixMatch, including a prefix replaced by `/`, and ReplaceFullPath, alone or with
//! a RequestHeaderModifier) is Accepted with ResolvedRefs, and `infra-backend-v1` receives
//! each request with the rewritten path (and modified headers where configured).

use super::support::{accepted_with_resolved_refs, expect_all, headers, names};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::{ExpectedRequest, ExpectedResponse, Request};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRewritePath",
    description: "An HTTPRoute with path rewrite filter",
    features: &["Gateway", "HTTPRoute", "HTTPRoutePathRewrite"],
    manifests: &["tests/httproute-rewrite-path.yaml"],
    provisional: false,
    run,
};

/// A request to `path` that must reach `infra-backend-v1` at `rewritten`.
fn case(path: &str, rewritten: &str) -> ExpectedResponse {
    ExpectedResponse {
        request: Request {
            path: path.into(),
            ..Default::default()
        },
        expected_request: Some(ExpectedRequest {
            path: rewritten.into(),
            ..Default::default()
        }),
        backend: "infra-backend-v1".into(),
        namespace: INFRA_NS.into(),
        ..Default::default()
    }
}

/// The same, with the header changes of the rules that also modify headers.
fn with_header_changes(path: &str, rewritten: &str) -> ExpectedResponse {
    let mut c = case(path, rewritten);
    c.request.headers = headers(&[
        ("X-Header-Remove", "remove-val"),
        ("X-Header-Add-Append", "append-val-1"),
        ("X-Header-Set", "set-val"),
    ]);
    if let Some(er) = c.expected_request.as_mut() {
        er.headers = headers(&[
            ("X-Header-Add", "header-val-1"),
            ("X-Header-Add-Append", "append-val-1,header-val-2"),
            ("X-Header-Set", "set-overwrites-values"),
        ]);
        er.absent_headers = names(&["X-Header-Remove"]);
    }
    c
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "rewrite-path");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = accepted_with_resolved_refs(s, &gw, &route)?;
    let cases = [
        case("/prefix/one/two", "/one/two"),
        case("/strip-prefix/three", "/three"),
        case("/strip-prefix", "/"),
        case("/full/one/two", "/one"),
        with_header_changes("/full/rewrite-path-and-modify-headers/test", "/test"),
        with_header_changes("/prefix/rewrite-path-and-modify-headers/one", "/prefix/one"),
    ];
    expect_all(s, &addr, &cases)
}
