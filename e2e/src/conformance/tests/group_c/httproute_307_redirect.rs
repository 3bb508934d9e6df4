//! Encodes upstream's `HTTPRoute307Redirect` (v1.6.1): a route whose rule redirects with status code 307
//! (no other redirect field) is Accepted with ResolvedRefs, and `GET /temporary` (redirect not
//! followed) answers 307 with a `Location` keeping the scheme, host, default port and path.

use super::support::{accepted_with_resolved_refs, redirect_case};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::RedirectRequest;
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRoute307Redirect",
    description: "An HTTPRoute with a 307 path redirect filter",
    features: &["Gateway", "HTTPRoute", "HTTPRoute307RedirectStatusCode"],
    manifests: &["tests/httproute-307-redirect.yaml"],
    provisional: true,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "307-redirect");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = accepted_with_resolved_refs(s, &gw, &route)?;
    let case = redirect_case(
        "/temporary",
        307,
        RedirectRequest {
            path: "/temporary".into(),
            ..Default::default()
        },
    );
    s.expect(&addr, &case)
}
