//! Encodes upstream's HTTPRouteHeaderMatching: a route whose rules match on `Version` and
//! `Color` headers (exact values, ANDed within a match, ORed across matches) sends each
//! request to the backend upstream expects, and answers 404 when no rule matches.

use crate::dsl::{answered, request, routed_to};
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteHeaderMatching",
    description: "A single HTTPRoute with header matching for different backends",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-header-matching.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let ns = INFRA_NS;
    let addr = same_namespace_route_ready(s, "header-matching")?;
    let with = |headers: &[(&str, &str)]| request("", "", "/", headers);
    let (v1, v2) = ("infra-backend-v1", "infra-backend-v2");
    let cases = [
        routed_to(with(&[("Version", "one")]), v1, ns),
        routed_to(with(&[("Version", "two")]), v2, ns),
        routed_to(with(&[("Version", "two"), ("Color", "orange")]), v1, ns),
        routed_to(with(&[("Version", "two"), ("Color", "blue")]), v2, ns),
        answered(with(&[("Color", "orange")]), 404),
        answered(with(&[("Some-Other-Header", "one")]), 404),
        routed_to(with(&[("Color", "blue")]), v1, ns),
        routed_to(with(&[("Color", "green")]), v1, ns),
        routed_to(with(&[("Color", "red")]), v2, ns),
        routed_to(with(&[("Color", "yellow")]), v2, ns),
        answered(with(&[("Color", "purple")]), 404),
    ];
    s.expect_cases(&addr, &cases)
}
