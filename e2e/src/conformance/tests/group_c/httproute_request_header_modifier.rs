//! Encodes upstream's `HTTPRouteRequestHeaderModifier` (v1.6.1): a route whose rules carry
//! RequestHeaderModifier filters is Accepted with ResolvedRefs, and `infra-backend-v1`
//! receives the requests with headers set (overwriting), added (appended to what the client
//! sent), removed, all three at once, and with filter names matched case-insensitively.
//! [`check`] is shared with `HTTPRouteBackendRequestHeaderModifier`, which runs the same test
//! with the filters on the backendRefs.

use super::support::{accepted_with_resolved_refs, expect_all, headers, names};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::{ExpectedRequest, ExpectedResponse, Request};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRequestHeaderModifier",
    description: "An HTTPRoute has request header modifier filters applied correctly",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-request-header-modifier.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    check(s)
}

/// A case: the request's path and headers, and the headers the backend must see and not see.
fn case(
    path: &str,
    sent: &[(&str, &str)],
    seen: &[(&str, &str)],
    absent: &[&str],
) -> ExpectedResponse {
    ExpectedResponse {
        request: Request {
            path: path.into(),
            headers: headers(sent),
            ..Default::default()
        },
        expected_request: Some(ExpectedRequest {
            path: path.into(),
            headers: headers(seen),
            absent_headers: names(absent),
            ..Default::default()
        }),
        backend: "infra-backend-v1".into(),
        namespace: INFRA_NS.into(),
        ..Default::default()
    }
}

/// The body of upstream's test, on the route `request-header-modifier` of `same-namespace`.
pub(super) fn check(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "request-header-modifier");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = accepted_with_resolved_refs(s, &gw, &route)?;
    let cases = [
        case(
            "/set",
            &[("Some-Other-Header", "val")],
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Set", "set-overwrites-values"),
            ],
            &[],
        ),
        case(
            "/set",
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Set", "some-other-value"),
            ],
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Set", "set-overwrites-values"),
            ],
            &[],
        ),
        case(
            "/add",
            &[("Some-Other-Header", "val")],
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Add", "add-appends-values"),
            ],
            &[],
        ),
        case(
            "/add",
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Add", "some-other-value"),
            ],
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Add", "some-other-value,add-appends-values"),
            ],
            &[],
        ),
        case(
            "/remove",
            &[("X-Header-Remove", "val")],
            &[],
            &["X-Header-Remove"],
        ),
        case(
            "/multiple",
            &[
                ("X-Header-Set-2", "set-val-2"),
                ("X-Header-Add-2", "add-val-2"),
                ("X-Header-Remove-2", "remove-val-2"),
                ("Another-Header", "another-header-val"),
            ],
            &[
                ("X-Header-Set-1", "header-set-1"),
                ("X-Header-Set-2", "header-set-2"),
                ("X-Header-Add-1", "header-add-1"),
                ("X-Header-Add-2", "add-val-2,header-add-2"),
                ("X-Header-Add-3", "header-add-3"),
                ("Another-Header", "another-header-val"),
            ],
            &["X-Header-Remove-1", "X-Header-Remove-2"],
        ),
        // The filter uses canonical header names, the request lower-case ones.
        case(
            "/case-insensitivity",
            &[
                ("x-header-set", "original-val-set"),
                ("x-header-add", "original-val-add"),
                ("x-header-remove", "original-val-remove"),
                ("Another-Header", "another-header-val"),
            ],
            &[
                ("X-Header-Set", "header-set"),
                ("X-Header-Add", "original-val-add,header-add"),
                ("Another-Header", "another-header-val"),
            ],
            &["x-header-remove", "X-Header-Remove"],
        ),
    ];
    expect_all(s, &addr, &cases)
}
