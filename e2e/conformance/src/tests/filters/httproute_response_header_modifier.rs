//! Encodes upstream's `HTTPRouteResponseHeaderModifier` (v1.6.1): a route whose rules carry
//! ResponseHeaderModifier filters is Accepted with ResolvedRefs, and the responses of
//! `infra-backend-v1` (which sets the headers it is asked to via `X-Echo-Set-Header`) reach
//! the client with headers set (overwriting), added (appended), removed, all at once, with
//! names of any case, and together with a RequestHeaderModifier on the same rule.

use crate::dsl::{get, headers, names, routed_to};
use crate::http::{ExpectedRequest, ExpectedResponse, Response};
use crate::tests::common::{
    CASE_INSENSITIVITY, MULTIPLE, SET_ADD_REMOVE, same_namespace_route_ready,
};
use crate::{ConformanceTest, INFRA_NS, Suite};

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
        backend_set_response_headers: headers(backend_sets),
        response: Response {
            headers: headers(want),
            absent_headers: names(absent),
            ..Default::default()
        },
        ..routed_to(get(path), "infra-backend-v1", INFRA_NS)
    }
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_ready(s, "response-header-modifier")?;
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
    let mut cases: Vec<ExpectedResponse> = SET_ADD_REMOVE
        .iter()
        .map(|(path, sets, want, absent)| case(path, sets, want, absent))
        .collect();
    // The backend also sets `X-Header-Remove-1`, which the filter removes.
    let (path, sets, want, absent) = MULTIPLE;
    let sets = [sets, &[("X-Header-Remove-1", "val")]].concat();
    cases.push(case(path, &sets, want, absent));
    let (path, sets, want, absent) = CASE_INSENSITIVITY;
    let want = [
        want,
        &[
            ("X-Lowercase-Add", "lowercase-add"),
            ("X-Mixedcase-Add-1", "mixedcase-add-1"),
            ("X-Mixedcase-Add-2", "mixedcase-add-2"),
            ("X-Uppercase-Add", "uppercase-add"),
        ],
    ]
    .concat();
    cases.push(case(path, sets, &want, absent));
    cases.push(both);
    s.expect_cases(&addr, &cases)
}
