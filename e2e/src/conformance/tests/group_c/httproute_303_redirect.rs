//! Encodes upstream's `HTTPRoute303Redirect` (v1.6.1): a route whose rule redirects with status code 303
//! (no other redirect field) is Accepted with ResolvedRefs, and `POST /see-other` (redirect not
//! followed) answers 303 with a `Location` keeping the scheme, host, default port and path.

use super::support::{accepted_with_resolved_refs, redirect_case};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::RedirectRequest;
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRoute303Redirect",
    description: "An HTTPRoute with a 303 redirect filter",
    features: &["Gateway", "HTTPRoute", "HTTPRoute303RedirectStatusCode"],
    manifests: &["tests/httproute-303-redirect.yaml"],
    provisional: true,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "303-redirect");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = accepted_with_resolved_refs(s, &gw, &route)?;
    let mut case = redirect_case(
        "/see-other",
        303,
        RedirectRequest {
            path: "/see-other".into(),
            ..Default::default()
        },
    );
    // Upstream sends this one as a POST.
    case.request.method = "POST".into();
    s.expect(&addr, &case)
}
