//! Encodes upstream's `HTTPRouteRequestPercentageMirror` (v1.6.1): a route mirroring to
//! `infra-backend-v2` a percentage of requests (`percent: 20`, `fraction: 25/50`, and
//! `percent: 35` after a RequestHeaderModifier) is Accepted with ResolvedRefs; each path
//! reaches `infra-backend-v1` as expected, and of 500 requests the mirror logs a share within
//! three standard deviations of the configured one (up to five attempts).

use crate::dsl::{mirror, reaches, with_modified_headers};
use crate::http::ExpectedResponse;
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, Suite};
use anyhow::Context;

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRequestPercentageMirror",
    description: "An HTTPRoute with percentage based request mirroring",
    features: &["Gateway", "HTTPRoute", "HTTPRouteRequestPercentageMirror"],
    manifests: &["tests/httproute-request-percentage-mirror.yaml"],
    provisional: true,
    run,
};

/// `GET path` reaches `infra-backend-v1`, and `infra-backend-v2` receives `percent`% of such
/// requests as mirrors.
fn case(path: &str, percent: u32) -> ExpectedResponse {
    ExpectedResponse {
        mirrored_to: vec![mirror("infra-backend-v2", Some(percent))],
        ..reaches(path, "infra-backend-v1", path)
    }
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_ready(s, "request-percentage-mirror")?;
    let cases = [
        case("/percent-mirror", 20),
        case("/percent-mirror-fraction", 50),
        with_modified_headers(case("/percent-mirror-and-modify-headers", 35)),
    ];
    for (i, case) in cases.iter().enumerate() {
        let name = case.name(i);
        // The request succeeds before the distribution is checked.
        s.expect(&addr, case)
            .and_then(|()| s.expect_mirrored_percentage(&addr, case))
            .with_context(|| format!("case {name}"))?;
    }
    Ok(())
}
