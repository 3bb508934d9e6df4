//! Encodes upstream's `HTTPRouteTimeoutBackendRequest` (v1.6.1): a route with `timeouts.backendRequest: 500ms` on
//! `/backend-timeout` and `0s` (no timeout) on `/disable-backend-timeout` is Accepted with ResolvedRefs;
//! `/backend-timeout` answers 200, with a backend delay of 1s it answers 504 (any timeout status
//! counts, as upstream's `IsTimeoutError`), and `/disable-backend-timeout` with the same delay
//! answers 200.

use super::support::{accepted_with_resolved_refs, expect_all, with_timeout_equivalents};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::{ExpectedResponse, Request, Response};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteTimeoutBackendRequest",
    description: "An HTTPRoute with backend request timeout",
    features: &["Gateway", "HTTPRoute", "HTTPRouteBackendTimeout"],
    manifests: &["tests/httproute-timeout-backend-request.yaml"],
    provisional: false,
    run,
};

/// A request to `path` that must answer `status`.
fn case(path: &str, status: u16) -> ExpectedResponse {
    ExpectedResponse {
        request: Request {
            path: path.into(),
            ..Default::default()
        },
        response: Response {
            status_codes: with_timeout_equivalents(&[status]),
            ..Default::default()
        },
        namespace: INFRA_NS.into(),
        ..Default::default()
    }
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "backend-request-timeout");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = accepted_with_resolved_refs(s, &gw, &route)?;
    let cases = [
        case("/backend-timeout", 200),
        case("/backend-timeout?delay=1s", 504),
        case("/disable-backend-timeout?delay=1s", 200),
    ];
    expect_all(s, &addr, &cases)
}
