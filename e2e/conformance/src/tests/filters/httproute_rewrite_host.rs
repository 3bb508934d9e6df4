//! Encodes upstream's `HTTPRouteRewriteHost` (v1.6.1): a route for `rewrite.example` with
//! URLRewrite hostname filters is Accepted with ResolvedRefs; `/one` reaches
//! `infra-backend-v1` as `one.example.org`, `/two` (the catch-all rule) reaches
//! `infra-backend-v2` as `example.org`, and `/rewrite-host-and-modify-headers` reaches
//! `infra-backend-v2` as `test.example.org` with its headers modified.

use crate::dsl::{reaches, with_modified_headers};
use crate::http::ExpectedResponse;
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRewriteHost",
    description: "An HTTPRoute with hostname rewrite filter",
    features: &["Gateway", "HTTPRoute", "HTTPRouteHostRewrite"],
    manifests: &["tests/httproute-rewrite-host.yaml"],
    provisional: false,
    run,
};

/// A request to `rewrite.example` that must reach `backend` with host `rewritten`.
fn case(path: &str, rewritten: &str, backend: &str) -> ExpectedResponse {
    let mut case = reaches(path, backend, path);
    case.request.host = "rewrite.example".into();
    if let Some(er) = case.expected_request.as_mut() {
        er.host = rewritten.into();
    }
    case
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_ready(s, "rewrite-host")?;
    let cases = [
        case("/one", "one.example.org", "infra-backend-v1"),
        case("/two", "example.org", "infra-backend-v2"),
        with_modified_headers(case(
            "/rewrite-host-and-modify-headers",
            "test.example.org",
            "infra-backend-v2",
        )),
    ];
    s.expect_cases(&addr, &cases)
}
