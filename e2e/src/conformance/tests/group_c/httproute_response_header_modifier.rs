//! Encodes upstream's `HTTPRouteResponseHeaderModifier` (v1.6.1): a route whose rules carry
//! ResponseHeaderModifier filters is Accepted with ResolvedRefs, and the responses of
//! `infra-backend-v1` (which sets the headers it is asked to via `X-Echo-Set-Header`) reach
//! the client with headers set (overwriting), added (appended), removed, all at once, with
//! names of any case, and together with a RequestHeaderModifier on the same rule.

use super::support::{accepted_with_resolved_refs, expect_all, headers, names};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::{ExpectedRequest, ExpectedResponse, Request, Response};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteResponseHeaderModifier",
    description: "An HTTPRoute has response header modifier filters applied correctly",
    features: &[
        "Gateway",
        "HTTPRoute",
        "HTTPRouteResponseHeaderModification",
    ],
    manifests: &["tests/httproute-response-header-modifier.yaml"],
    provisional: false,
    run,
};

/// A case: the path, what the backend is asked to set on its response, and the response
/// headers that must be there and must not.
fn case(
    path: &str,
    backend_sets: &[(&str, &str)],
    want: &[(&str, &str)],
    absent: &[&str],
) -> ExpectedResponse {
    ExpectedResponse {
        request: Request {
            path: path.into(),
            ..Default::default()
        },
        backend_set_response_headers: headers(backend_sets),
        response: Response {
            headers: headers(want),
            absent_headers: names(absent),
            ..Default::default()
        },
        backend: "infra-backend-v1".into(),
        namespace: INFRA_NS.into(),
        ..Default::default()
    }
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "response-header-modifier");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = accepted_with_resolved_refs(s, &gw, &route)?;
    let mut both = case(
        "/response-and-request-header-modifiers",
        &[
            ("X-Header-Set-2", "set-val-2"),
            ("X-Header-Add-2", "add-val-2"),
            ("X-Header-Remove-2", "remove-val-2"),
            ("Another-Header", "another-header-val"),
            ("X-Header-Remove-1", "remove-val-1"),
            ("X-Header-Echo", "echo"),
        ],
        &[
            ("X-Header-Set-1", "header-set-1"),
            ("X-Header-Set-2", "header-set-2"),
            ("X-Header-Add-1", "header-add-1"),
            ("X-Header-Add-2", "add-val-2,header-add-2"),
            ("Another-Header", "another-header-val"),
            ("X-Header-Echo", "echo"),
        ],
        &["X-Header-Remove-1", "X-Header-Remove-2"],
    );
    both.request.headers = headers(&[
        ("X-Header-Remove", "remove-val"),
        ("X-Header-Add-Append", "append-val-1"),
        ("X-Header-Echo", "echo"),
    ]);
    both.expected_request = Some(ExpectedRequest {
        path: "/response-and-request-header-modifiers".into(),
        headers: headers(&[
            ("X-Header-Add", "header-val-1"),
            ("X-Header-Set", "set-overwrites-values"),
            ("X-Header-Add-Append", "append-val-1,header-val-2"),
            ("X-Header-Echo", "echo"),
        ]),
        absent_headers: names(&["X-Header-Remove"]),
        ..Default::default()
    });
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
                ("X-Header-Remove-1", "val"),
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
                ("X-Lowercase-Add", "lowercase-add"),
                ("X-Mixedcase-Add-1", "mixedcase-add-1"),
                ("X-Mixedcase-Add-2", "mixedcase-add-2"),
                ("X-Uppercase-Add", "uppercase-add"),
                ("Another-Header", "another-header-val"),
            ],
            &["x-header-remove", "X-Header-Remove"],
        ),
        both,
    ];
    expect_all(s, &addr, &cases)
}
