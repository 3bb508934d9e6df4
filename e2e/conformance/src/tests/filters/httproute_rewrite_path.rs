//! Encodes upstream's `HTTPRouteRewritePath` (v1.6.1): a route with URLRewrite path filters
//! (ReplacePrefixMatch, including a prefix replaced by `/`, and ReplaceFullPath, alone or with
//! a RequestHeaderModifier) is Accepted with ResolvedRefs, and `infra-backend-v1` receives
//! each request with the rewritten path (and modified headers where configured).

use crate::dsl::{reaches, with_modified_headers};
use crate::http::ExpectedResponse;
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRewritePath",
    description: "An HTTPRoute with path rewrite filter",
    features: &["Gateway", "HTTPRoute", "HTTPRoutePathRewrite"],
    manifests: &["tests/httproute-rewrite-path.yaml"],
    provisional: false,
    run,
};

/// A request to `path` that must reach `infra-backend-v1` at `rewritten`.
fn case(path: &str, rewritten: &str) -> ExpectedResponse {
    reaches(path, "infra-backend-v1", rewritten)
}

/// The same, with the header changes of the rules that also modify headers (the request also
/// sets `X-Header-Set`, which the backend must see overwritten).
fn with_header_changes(path: &str, rewritten: &str) -> ExpectedResponse {
    let mut c = with_modified_headers(case(path, rewritten));
    c.request
        .headers
        .push(("X-Header-Set".into(), "set-val".into()));
    c
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_ready(s, "rewrite-path")?;
    let cases = [
        case("/prefix/one/two", "/one/two"),
        case("/strip-prefix/three", "/three"),
        case("/strip-prefix", "/"),
        case("/full/one/two", "/one"),
        with_header_changes("/full/rewrite-path-and-modify-headers/test", "/test"),
        with_header_changes("/prefix/rewrite-path-and-modify-headers/one", "/prefix/one"),
    ];
    s.expect_cases(&addr, &cases)
}
