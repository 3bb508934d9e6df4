//! Encodes upstream's `HTTPRoute308Redirect` (v1.6.1): a route whose rule redirects with status code 308
//! (no other redirect field) is Accepted with ResolvedRefs, and `GET /permanent` (redirect not
//! followed) answers 308 with a `Location` keeping the scheme, host, default port and path.

use crate::tests::common::redirect_status;
use crate::{ConformanceTest, Suite};

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
    redirect_status(s, "308-redirect", "GET", "/permanent", 308)
}
