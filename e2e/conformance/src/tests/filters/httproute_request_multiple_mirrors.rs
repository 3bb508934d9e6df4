//! Encodes upstream's `HTTPRouteRequestMultipleMirrors` (v1.6.1): a route with two
//! RequestMirror filters (to `infra-backend-v2` and `infra-backend-v3`) is Accepted;
//! `/multi-mirror` and `/multi-mirror-and-modify-request-headers` reach `infra-backend-v1` as
//! expected, and the pods of both mirror backends log the same request.

use crate::dsl::{mirror, reaches, with_modified_headers};
use crate::http::ExpectedResponse;
use crate::tests::common::{expect_with_mirrors, same_namespace_route_accepted};
use crate::{ConformanceTest, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRequestMultipleMirrors",
    description: "An HTTPRoute with multiple request mirror filters",
    features: &[
        "Gateway",
        "HTTPRoute",
        "HTTPRouteRequestMirror",
        "HTTPRouteRequestMultipleMirrors",
    ],
    manifests: &["tests/httproute-request-multiple-mirrors.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_accepted(s, "request-multiple-mirrors")?;
    let case = |path: &str| ExpectedResponse {
        mirrored_to: vec![
            mirror("infra-backend-v2", None),
            mirror("infra-backend-v3", None),
        ],
        ..reaches(path, "infra-backend-v1", path)
    };
    let cases = vec![
        case("/multi-mirror"),
        with_modified_headers(case("/multi-mirror-and-modify-request-headers")),
    ];
    expect_with_mirrors(s, &addr, cases)
}
