//! Encodes upstream's `HTTPRoute307Redirect` (v1.6.1): a route whose rule redirects with status code 307
//! (no other redirect field) is Accepted with ResolvedRefs, and `GET /temporary` (redirect not
//! followed) answers 307 with a `Location` keeping the scheme, host, default port and path.

use crate::tests::common::redirect_status;
use crate::{ConformanceTest, Suite};

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
    redirect_status(s, "307-redirect", "GET", "/temporary", 307)
}
