//! Encodes upstream's `HTTPRoute308Redirect` (v1.6.1): a route whose rule redirects with status code 308
//! (no other redirect field) is Accepted with ResolvedRefs, and `GET /permanent` (redirect not
//! followed) answers 308 with a `Location` keeping the scheme, host, default port and path.

use super::support::{accepted_with_resolved_refs, redirect_case};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::RedirectRequest;
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRoute308Redirect",
    description: "An HTTPRoute with a 308 path redirect filter",
    features: &["Gateway", "HTTPRoute", "HTTPRoute308RedirectStatusCode"],
    manifests: &["tests/httproute-308-redirect.yaml"],
    provisional: true,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "308-redirect");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = accepted_with_resolved_refs(s, &gw, &route)?;
    let case = redirect_case(
        "/permanent",
        308,
        RedirectRequest {
            path: "/permanent".into(),
            ..Default::default()
        },
    );
    s.expect(&addr, &case)
}
