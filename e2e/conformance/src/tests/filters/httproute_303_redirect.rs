//! Encodes upstream's `HTTPRoute303Redirect` (v1.6.1): a route whose rule redirects with status code 303
//! (no other redirect field) is Accepted with ResolvedRefs, and `POST /see-other` (redirect not
//! followed) answers 303 with a `Location` keeping the scheme, host, default port and path.

use crate::tests::common::redirect_status;
use crate::{ConformanceTest, Suite};

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
    // Upstream sends this one as a POST.
    redirect_status(s, "303-redirect", "POST", "/see-other", 303)
}
