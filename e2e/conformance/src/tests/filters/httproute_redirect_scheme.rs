//! Encodes upstream's `HTTPRouteRedirectScheme` (v1.6.1): a route with scheme redirects to
//! https (alone, with a hostname, with a status code, with both) is Accepted with
//! ResolvedRefs, and each path answers 302 (or 301) with an `https` `Location` on port 443 or
//! none (and `example.org` where a hostname is set).

use crate::dsl::redirect_case;
use crate::http::RedirectRequest;
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRedirectScheme",
    description: "An HTTPRoute with a scheme redirect filter",
    features: &["Gateway", "HTTPRoute", "HTTPRouteSchemeRedirect"],
    manifests: &["tests/httproute-redirect-scheme.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_ready(s, "redirect-scheme")?;
    let to = |host: &str| RedirectRequest {
        scheme: "https".into(),
        host: host.into(),
        ..Default::default()
    };
    let cases = [
        redirect_case("/scheme", 302, to("")),
        redirect_case("/scheme-and-host", 302, to("example.org")),
        redirect_case("/scheme-and-status", 301, to("")),
        redirect_case("/scheme-and-host-and-status", 302, to("example.org")),
    ];
    s.expect_cases(&addr, &cases)
}
