//! Encodes upstream's `HTTPRouteRequestMirror` (v1.6.1): a route that mirrors to
//! `infra-backend-v2` is Accepted; `/mirror` and `/mirror-and-modify-headers` (with a
//! RequestHeaderModifier before the mirror) reach `infra-backend-v1` as expected, and the
//! pods of `infra-backend-v2` log the same request (told apart by a request ID in the query).

use crate::dsl::{mirror, reaches, with_modified_headers};
use crate::http::ExpectedResponse;
use crate::tests::common::{expect_with_mirrors, same_namespace_route_accepted};
use crate::{ConformanceTest, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRequestMirror",
    description: "An HTTPRoute with request mirror filter",
    features: &["Gateway", "HTTPRoute", "HTTPRouteRequestMirror"],
    manifests: &["tests/httproute-request-mirror.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_accepted(s, "request-mirror")?;
    let case = |path: &str| ExpectedResponse {
        mirrored_to: vec![mirror("infra-backend-v2", None)],
        ..reaches(path, "infra-backend-v1", path)
    };
    let cases = vec![
        case("/mirror"),
        with_modified_headers(case("/mirror-and-modify-headers")),
    ];
    expect_with_mirrors(s, &addr, cases)
}
