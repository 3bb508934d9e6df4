//! Encodes upstream's HTTPRouteCrossNamespace: a route in the web backend namespace attaches
//! to the infra namespace's `backend-namespaces` Gateway (Accepted, ResolvedRefs True), and a
//! request to `/` reaches `web-backend` in its namespace.

use crate::checks::{GatewayRef, nn};
use crate::tests::common::web_backend;
use crate::{ConformanceTest, INFRA_NS, Suite, WEB_NS};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteCrossNamespace",
    description: "A single HTTPRoute in the gateway-conformance-web-backend namespace should attach to Gateway in another namespace",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-cross-namespace.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = s.routes_must_be_accepted_and_resolved(
        &GatewayRef::new(INFRA_NS, "backend-namespaces"),
        &[nn(WEB_NS, "cross-namespace")],
    )?;
    // Subtest: simple HTTP request should reach web-backend.
    s.expect(&addr, &web_backend(200))
}
