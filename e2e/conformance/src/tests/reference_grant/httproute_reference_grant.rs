//! Encodes upstream's HTTPRouteReferenceGrant: a route in the infra namespace whose backend is
//! `web-backend` in the web backend namespace, allowed by a ReferenceGrant there, is Accepted
//! and ResolvedRefs True and reaches `web-backend`; once the ReferenceGrant is deleted, the
//! same request answers 500.

use crate::cluster::ObjId;
use crate::dsl::{answered, request};
use crate::subtests::Subtests;
use crate::tests::common::{same_namespace_route_ready, web_backend};
use crate::{ConformanceTest, Suite, WEB_NS};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteReferenceGrant",
    description: "A single HTTPRoute in the gateway-conformance-infra namespace, with a backendRef in the gateway-conformance-web-backend namespace, should attach to Gateway in the gateway-conformance-infra namespace",
    features: &["Gateway", "HTTPRoute", "ReferenceGrant"],
    manifests: &["tests/httproute-reference-grant.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_ready(s, "reference-grant")?;
    let mut t = Subtests::new();
    t.run(s, "Simple HTTP request should reach web-backend", |s| {
        s.expect(&addr, &web_backend(200))
    });
    let grant = ObjId::new("ReferenceGrant", WEB_NS, "reference-grant");
    s.cluster.must_exist(&grant)?;
    s.cluster.delete(&[grant])?;
    t.run(
        s,
        "Simple HTTP request should return 500 after deleting the relevant reference grant",
        |s| s.expect(&addr, &answered(request("GET", "", "/", &[]), 500)),
    );
    t.finish()
}
