//! Encodes upstream's `HTTPRouteRedirectPort` (v1.6.1): a route with port redirects (alone,
//! with a hostname, with a status code, with both) is Accepted with ResolvedRefs, and each
//! path answers 302 (or 301) with port 8083 in `Location` (and `example.org` where set).

use crate::dsl::redirect_case;
use crate::http::RedirectRequest;
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRedirectPort",
    description: "An HTTPRoute with a port redirect filter",
    features: &["Gateway", "HTTPRoute", "HTTPRoutePortRedirect"],
    manifests: &["tests/httproute-redirect-port.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_ready(s, "redirect-port")?;
    let to = |host: &str| RedirectRequest {
        host: host.into(),
        port: "8083".into(),
        ..Default::default()
    };
    let cases = [
        redirect_case("/port", 302, to("")),
        redirect_case("/port-and-host", 302, to("example.org")),
        redirect_case("/port-and-status", 301, to("")),
        redirect_case("/port-and-host-and-status", 302, to("example.org")),
    ];
    s.expect_cases(&addr, &cases)
}
