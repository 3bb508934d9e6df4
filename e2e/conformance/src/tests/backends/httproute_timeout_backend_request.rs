//! Encodes upstream's `HTTPRouteTimeoutBackendRequest` (v1.6.1): a route with `timeouts.backendRequest: 500ms` on
//! `/backend-timeout` and `0s` (no timeout) on `/disable-backend-timeout` is Accepted with ResolvedRefs;
//! `/backend-timeout` answers 200, with a backend delay of 1s it answers 504 (any timeout status
//! counts, as upstream's `IsTimeoutError`), and `/disable-backend-timeout` with the same delay
//! answers 200.

use crate::tests::common::timeout_applies;
use crate::{ConformanceTest, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteTimeoutBackendRequest",
    description: "An HTTPRoute with backend request timeout",
    features: &["Gateway", "HTTPRoute", "HTTPRouteBackendTimeout"],
    manifests: &["tests/httproute-timeout-backend-request.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    timeout_applies(
        s,
        "backend-request-timeout",
        "/backend-timeout",
        "/disable-backend-timeout",
    )
}
