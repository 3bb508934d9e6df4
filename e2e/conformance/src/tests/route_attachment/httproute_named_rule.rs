//! Encodes upstream `HTTPRouteNamedRule` (httproute-named-rule.go): a route whose first rule has
//! a `name` is accepted and both its named and unnamed rules serve traffic (200 from the infra
//! namespace; upstream does not check which backend).

use crate::dsl::{answered, get};
use crate::http::ExpectedResponse;
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteNamedRule",
    description: "An HTTPRoute with a named HTTPRouteRule",
    features: &["Gateway", "HTTPRoute", "HTTPRouteNamedRouteRule"],
    manifests: &["tests/httproute-named-rule.yaml"],
    provisional: true,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_ready(s, "http-named-rules")?;
    let cases = ["/named", "/unnamed"].map(|path| ExpectedResponse {
        namespace: INFRA_NS.into(),
        ..answered(get(path), 200)
    });
    s.expect_cases(&addr, &cases)
}
