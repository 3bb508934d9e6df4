//! Encodes upstream's `HTTPRouteRedirectHostAndStatus` (v1.6.1): a route redirecting to
//! another hostname is Accepted with ResolvedRefs; `/hostname-redirect` answers 302 and
//! `/host-and-status` (statusCode 301) answers 301, both pointing at `example.org` with the
//! request's scheme and path and the scheme's default port.

use crate::dsl::redirect_case;
use crate::http::RedirectRequest;
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRedirectHostAndStatus",
    description: "An HTTPRoute with hostname and statusCode redirect filters",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-redirect-host-and-status.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_ready(s, "redirect-host-and-status")?;
    let to_example_org = || RedirectRequest {
        host: "example.org".into(),
        ..Default::default()
    };
    let cases = [
        redirect_case("/hostname-redirect", 302, to_example_org()),
        redirect_case("/host-and-status", 301, to_example_org()),
    ];
    s.expect_cases(&addr, &cases)
}
