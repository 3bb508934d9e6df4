//! Encodes upstream's `HTTPRouteBackendRequestHeaderModifier` (v1.6.1), which runs the test
//! of `HTTPRouteRequestHeaderModifier` against a manifest where the RequestHeaderModifier
//! filters sit on the backendRefs instead of the rules: same route name, same cases (set,
//! add, remove, multiple, case-insensitive names) with the same expectations.

use crate::{ConformanceTest, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteBackendRequestHeaderModifier",
    description: "An HTTPRoute backend has request header modifier filters applied correctly",
    features: &[
        "Gateway",
        "HTTPRoute",
        "HTTPRouteBackendRequestHeaderModification",
    ],
    manifests: &["tests/httproute-request-header-modifier-backend.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    super::httproute_request_header_modifier::check(s)
}
