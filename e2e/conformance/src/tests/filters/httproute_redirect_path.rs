//! Encodes upstream's `HTTPRouteRedirectPath` (v1.6.1): a route with path redirects
//! (ReplacePrefixMatch and ReplaceFullPath, alone or with a hostname or a status code) is
//! Accepted with ResolvedRefs, and each of its six paths answers 302 (or 301) with the
//! replaced path in `Location` (and `example.org` where a hostname is set).

use crate::dsl::redirect_case;
use crate::http::RedirectRequest;
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRedirectPath",
    description: "An HTTPRoute with scheme redirect filter",
    features: &["Gateway", "HTTPRoute", "HTTPRoutePathRedirect"],
    manifests: &["tests/httproute-redirect-path.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_ready(s, "redirect-path")?;
    let to = |host: &str, path: &str| RedirectRequest {
        host: host.into(),
        path: path.into(),
        ..Default::default()
    };
    let cases = [
        redirect_case(
            "/original-prefix/lemon",
            302,
            to("", "/replacement-prefix/lemon"),
        ),
        redirect_case("/full/path/original", 302, to("", "/full-path-replacement")),
        redirect_case(
            "/path-and-host",
            302,
            to("example.org", "/replacement-prefix"),
        ),
        redirect_case("/path-and-status", 301, to("", "/replacement-prefix")),
        redirect_case(
            "/full-path-and-host",
            302,
            to("example.org", "/replacement-full"),
        ),
        redirect_case("/full-path-and-status", 301, to("", "/replacement-full")),
    ];
    s.expect_cases(&addr, &cases)
}
