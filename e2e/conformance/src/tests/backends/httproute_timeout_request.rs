//! Encodes upstream's `HTTPRouteTimeoutRequest` (v1.6.1): a route with `timeouts.request: 500ms` on
//! `/request-timeout` and `0s` (no timeout) on `/disable-request-timeout` is Accepted with ResolvedRefs;
//! `/request-timeout` answers 200, with a backend delay of 1s it answers 504 (any timeout status
//! counts, as upstream's `IsTimeoutError`), and `/disable-request-timeout` with the same delay
//! answers 200.

use crate::tests::common::timeout_applies;
use crate::{ConformanceTest, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteTimeoutRequest",
    description: "An HTTPRoute with request timeout",
    features: &["Gateway", "HTTPRoute", "HTTPRouteRequestTimeout"],
    manifests: &["tests/httproute-timeout-request.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    timeout_applies(
        s,
        "request-timeout",
        "/request-timeout",
        "/disable-request-timeout",
    )
}
