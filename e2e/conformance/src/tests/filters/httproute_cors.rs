//! Encodes upstream `HTTPRouteCORS` (httproute-cors.go): routes with CORS filters (listed
//! origins with a `*` subdomain wildcard, wildcard origin, wildcard methods and headers, with and
//! without credentials). Preflight requests (OPTIONS with `Origin` and
//! `Access-Control-Request-*`) from allowed origins are answered by the Gateway (200 or 204, not
//! echoed by a backend) with the allow-origin/methods/headers, expose-headers, max-age and
//! allow-credentials headers; disallowed origins get no allow-origin header; simple requests
//! reach the backend and carry allow-origin (and allow-credentials only when allowed).

use crate::checks::nn;
use crate::dsl::{header_values, headers, names, request};
use crate::http::{ExpectedRequest, ExpectedResponse, Response};
use crate::subtests::Subtests;
use crate::tests::common::same_namespace;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteCORS",
    description: "An HTTPRoute with CORS filter should allow CORS requests from specified origins",
    features: &["Gateway", "HTTPRoute", "HTTPRouteCORS"],
    manifests: &["tests/httproute-cors.yaml"],
    provisional: false,
    run,
};

/// A preflight case: upstream expects the answer not to come from a backend (its expected
/// request is OPTIONS with an empty path, and no namespace).
fn preflight(name: &str, path: &str, req: &[(&str, &str)], response: Response) -> ExpectedResponse {
    ExpectedResponse {
        test_case_name: name.into(),
        request: request("OPTIONS", "", path, req),
        expected_request: Some(ExpectedRequest {
            method: "OPTIONS".into(),
            ..Default::default()
        }),
        namespace: String::new(),
        response,
        ..Default::default()
    }
}

/// A request that reaches the backend (the echo must show the request as sent).
fn simple(
    name: &str,
    path: &str,
    method: &str,
    req: &[(&str, &str)],
    response: Response,
) -> ExpectedResponse {
    ExpectedResponse {
        test_case_name: name.into(),
        request: request(method, "", path, req),
        namespace: INFRA_NS.into(),
        response,
        ..Default::default()
    }
}

fn cases() -> Vec<ExpectedResponse> {
    let full_preflight = |origin: &str| Response {
        status_codes: vec![200, 204],
        valid_header_values: header_values(&[
            ("access-control-allow-origin", &[origin]),
            (
                "access-control-allow-methods",
                &["GET, OPTIONS", "OPTIONS, GET"],
            ),
            (
                "access-control-allow-headers",
                &["x-header-1, x-header-2", "x-header-2, x-header-1"],
            ),
            (
                "access-control-expose-headers",
                &["x-header-3, x-header-4", "x-header-4, x-header-3"],
            ),
            ("access-control-max-age", &["3600"]),
            ("access-control-allow-credentials", &["true"]),
        ]),
        ignore_whitespace: true,
        ..Default::default()
    };
    let preflight_get = |origin: &'static str| {
        [
            ("Origin", origin),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "x-header-1, x-header-2"),
        ]
    };
    // Preflights and simple requests from origins `/cors-1` allows.
    let allowed_preflight = |name: &str, origin: &'static str| {
        preflight(
            name,
            "/cors-1",
            &preflight_get(origin),
            full_preflight(origin),
        )
    };
    let allowed_simple = |name: &str, origin: &'static str| {
        let response = Response {
            status_code: 200,
            headers: headers(&[("access-control-allow-origin", origin)]),
            ..Default::default()
        };
        simple(name, "/cors-1", "GET", &preflight_get(origin), response)
    };
    // A GET preflight's headers from an origin `/cors-1` does not allow.
    let not_allowed = [
        ("Origin", "https://foobar.com"),
        ("access-control-request-method", "GET"),
    ];
    vec![
        allowed_preflight(
            "CORS preflight request from an exact matching origin should be allowed",
            "https://www.foo.com",
        ),
        allowed_preflight(
            "CORS preflight request from a wildcard matching origin should be allowed",
            "https://www.bar.com",
        ),
        allowed_preflight(
            "CORS preflight request from a wildcard matching any number of periods left to '*' should be allowed",
            "https://xpto.www.bar.com",
        ),
        preflight(
            "CORS preflight request from a non-matching origin should not be allowed",
            "/cors-1",
            &not_allowed,
            Response {
                status_codes: vec![200, 204, 403],
                absent_headers: names(&["access-control-allow-origin"]),
                ..Default::default()
            },
        ),
        allowed_simple(
            "Simple request from an exact matching origin should be allowed",
            "https://www.foo.com",
        ),
        allowed_simple(
            "Simple request from a wildcard matching origin should be allowed",
            "https://www.bar.com",
        ),
        simple(
            "Simple request from a non-matching origin should not be allowed",
            "/cors-1",
            "GET",
            &not_allowed,
            Response {
                absent_headers: names(&["access-control-allow-origin"]),
                ..Default::default()
            },
        ),
        preflight(
            "CORS preflight request with POST method should be allowed by allowMethods with wildcard",
            "/cors-2",
            &[
                ("Origin", "https://www.foo.com"),
                ("access-control-request-method", "POST"),
            ],
            Response {
                status_codes: vec![200, 204],
                valid_header_values: header_values(&[(
                    "access-control-allow-methods",
                    &["POST", "*"],
                )]),
                headers: headers(&[("access-control-allow-origin", "https://www.foo.com")]),
                absent_headers: names(&["access-control-allow-credentials"]),
                ..Default::default()
            },
        ),
        preflight(
            "CORS preflight request should not receive access-control-allow-credentials header without access-control-allow-credentials set to true",
            "/cors-2",
            &[
                ("Origin", "https://www.foo.com"),
                ("access-control-request-method", "POST"),
            ],
            Response {
                status_codes: vec![200, 204],
                absent_headers: names(&["Access-Control-Allow-Credentials"]),
                ..Default::default()
            },
        ),
        preflight(
            "CORS preflight request from a wildcard origin should return header with '*' or with the requested Origin",
            "/cors-wildcard-origin",
            &[
                ("Origin", "https://foobar.com"),
                ("access-control-request-method", "PUT"),
            ],
            Response {
                status_codes: vec![200, 204],
                valid_header_values: header_values(&[
                    ("access-control-allow-origin", &["https://foobar.com", "*"]),
                    ("access-control-allow-methods", &["PUT"]),
                ]),
                absent_headers: names(&["Access-Control-Allow-Credentials"]),
                ..Default::default()
            },
        ),
        preflight(
            "CORS preflight request from a wildcard origin containing a port should return header with '*' or with the requested Origin",
            "/cors-wildcard-origin",
            &[
                ("Origin", "https://foobar.com:12345"),
                ("access-control-request-method", "PUT"),
            ],
            Response {
                status_codes: vec![200, 204],
                valid_header_values: header_values(&[
                    (
                        "access-control-allow-origin",
                        &["https://foobar.com:12345", "*"],
                    ),
                    ("access-control-allow-methods", &["PUT"]),
                ]),
                absent_headers: names(&["Access-Control-Allow-Credentials"]),
                ..Default::default()
            },
        ),
        simple(
            "Request from a wildcard origin containing a port should return header with '*' or with the requested Origin",
            "/cors-wildcard-origin",
            "PUT",
            &[("Origin", "https://foobar.com:12345")],
            Response {
                status_code: 200,
                valid_header_values: header_values(&[(
                    "access-control-allow-origin",
                    &["https://foobar.com:12345", "*"],
                )]),
                ..Default::default()
            },
        ),
        simple(
            "Simple request from a wildcard origin should return header with '*' or with the requested Origin",
            "/cors-wildcard-origin",
            "PUT",
            &[("Origin", "https://foobar.com")],
            Response {
                status_code: 200,
                valid_header_values: header_values(&[(
                    "access-control-allow-origin",
                    &["https://foobar.com", "*"],
                )]),
                absent_headers: names(&["Access-Control-Allow-Credentials"]),
                ..Default::default()
            },
        ),
        preflight(
            "CORS preflight request requesting specific method and headers should be allowed and always echo the origin with allowCredentials set to true",
            "/cors-wildcard-methods-headers",
            &[
                ("Origin", "https://other.foo.com"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-header-1, x-header-2"),
            ],
            Response {
                status_codes: vec![200, 204],
                valid_header_values: header_values(&[
                    ("access-control-allow-origin", &["https://other.foo.com"]),
                    ("access-control-allow-methods", &["PUT"]),
                    (
                        "access-control-allow-headers",
                        &["x-header-1, x-header-2", "x-header-2, x-header-1"],
                    ),
                    ("access-control-allow-credentials", &["true"]),
                ]),
                ignore_whitespace: true,
                ..Default::default()
            },
        ),
        preflight(
            "CORS preflight request requesting specific method and headers should hide access-control-allow-credentials headers with allowCredentials set to false",
            "/cors-wildcard-methods-headers-unauth",
            &[
                ("Origin", "https://other.foo.com"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-header-1, x-header-2"),
            ],
            Response {
                status_codes: vec![200, 204],
                valid_header_values: header_values(&[
                    (
                        "access-control-allow-origin",
                        &["https://other.foo.com", "*"],
                    ),
                    ("access-control-allow-methods", &["PUT", "*"]),
                    (
                        "access-control-allow-headers",
                        &["x-header-1, x-header-2", "x-header-2, x-header-1", "*"],
                    ),
                ]),
                absent_headers: names(&["access-control-allow-credentials"]),
                ignore_whitespace: true,
                ..Default::default()
            },
        ),
        simple(
            "CORS request should receive access-control-allow-credentials header with allowCredentials set to true",
            "/cors-wildcard-methods-headers",
            "GET",
            &[("Origin", "https://other.foo.com")],
            Response {
                status_code: 200,
                valid_header_values: header_values(&[
                    ("access-control-allow-origin", &["https://other.foo.com"]),
                    ("access-control-allow-credentials", &["true"]),
                ]),
                ..Default::default()
            },
        ),
        simple(
            "CORS request should not receive access-control-allow-credentials header without allowCredentials set to true",
            "/cors-wildcard-methods-headers-unauth",
            "GET",
            &[("Origin", "https://other.foo.com")],
            Response {
                status_code: 200,
                valid_header_values: header_values(&[(
                    "access-control-allow-origin",
                    &["https://other.foo.com", "*"],
                )]),
                absent_headers: names(&["access-control-allow-credentials"]),
                ..Default::default()
            },
        ),
    ]
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let routes = [
        nn(INFRA_NS, "cors-multiple-origins-methods-headers"),
        nn(INFRA_NS, "cors-wildcard-methods"),
        nn(INFRA_NS, "cors-wildcard-origin"),
        nn(INFRA_NS, "cors-wildcard-methods-headers"),
    ];
    let gw = same_namespace();
    // Upstream waits for acceptance of the first two routes only, then for ResolvedRefs of all.
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, &routes[..2])?;
    for route in &routes {
        s.http_route_must_have_resolved_refs(route, &gw.nn)?;
    }
    let mut subtests = Subtests::new();
    for case in cases() {
        subtests.run(s, &case.test_case_name, |s| s.expect(&addr, &case));
    }
    subtests.finish()
}
