//! HTTPRouteWeight: weighted backends receive traffic in proportion (70/30/0).

use crate::dsl::get;
use crate::http::{ExpectedResponse, Response};
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteWeight",
    description: "An HTTPRoute with weighted backends",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-weight.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_ready(s, "weighted-backends")?;
    let expected = ExpectedResponse {
        request: get("/"),
        response: Response {
            status_codes: vec![200],
            ..Default::default()
        },
        namespace: INFRA_NS.into(),
        ..Default::default()
    };
    s.expect(&addr, &expected)?;
    s.expect_weighted_distribution(
        &addr,
        &expected,
        &[
            ("infra-backend-v1", 0.7),
            ("infra-backend-v2", 0.3),
            ("infra-backend-v3", 0.0),
        ],
    )
}
