//! Encodes upstream's `HTTPRouteRequestHeaderModifier` (v1.6.1): a route whose rules carry
//! RequestHeaderModifier filters is Accepted with ResolvedRefs, and `infra-backend-v1`
//! receives the requests with headers set (overwriting), added (appended to what the client
//! sent), removed, all three at once, and with filter names matched case-insensitively.
//! [`check`] is shared with `HTTPRouteBackendRequestHeaderModifier`, which runs the same test
//! with the filters on the backendRefs.

use crate::dsl::{headers, names, reaches};
use crate::http::ExpectedResponse;
use crate::tests::common::{
    CASE_INSENSITIVITY, MULTIPLE, SET_ADD_REMOVE, same_namespace_route_ready,
};
use crate::{ConformanceTest, Suite};

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
    let mut case = reaches(path, "infra-backend-v1", path);
    case.request.headers = headers(sent);
    if let Some(er) = case.expected_request.as_mut() {
        er.headers = headers(seen);
        er.absent_headers = names(absent);
    }
    case
}

/// The body of upstream's test, on the route `request-header-modifier` of `same-namespace`.
pub(super) fn check(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_ready(s, "request-header-modifier")?;
    let cases: Vec<ExpectedResponse> = SET_ADD_REMOVE
        .iter()
        .chain([&MULTIPLE, &CASE_INSENSITIVITY])
        .map(|(path, sent, seen, absent)| case(path, sent, seen, absent))
        .collect();
    s.expect_cases(&addr, &cases)
}
