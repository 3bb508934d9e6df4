//! Encodes upstream `GatewayInvalidRouteKind` (gateway-invalid-route-kind.go): a listener whose
//! `allowedRoutes.kinds` lists only an unknown kind is ResolvedRefs False / InvalidRouteKinds
//! with no supported kinds; when HTTPRoute is listed too, it is still ResolvedRefs False /
//! InvalidRouteKinds but HTTPRoute is among its supported kinds.

use crate::checks::{cond, nn};
use crate::dsl::listener;
use crate::subtests::Subtests;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "GatewayInvalidRouteKind",
    description: "A Gateway in the gateway-conformance-infra namespace should fail to become ready an invalid Route kind is specified.",
    features: &["Gateway"],
    manifests: &["tests/gateway-invalid-route-kind.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let invalid = [cond("ResolvedRefs", "False", "InvalidRouteKinds")];
    let mut subtests = Subtests::new();
    subtests.run(
        s,
        "Gateway listener should have a false ResolvedRefs condition with reason InvalidRouteKinds and no supportedKinds",
        |s| {
            s.gateway_status_must_have_listeners(
                &nn(INFRA_NS, "gateway-only-invalid-route-kind"),
                &[listener("http", false, 0, &invalid)],
            )
        },
    );
    subtests.run(
        s,
        "Gateway listener should have a false ResolvedRefs condition with reason InvalidRouteKinds and HTTPRoute must be put in the supportedKinds",
        |s| {
            s.gateway_status_must_have_listeners(
                &nn(INFRA_NS, "gateway-supported-and-invalid-route-kind"),
                &[listener("http", true, 0, &invalid)],
            )
        },
    );
    subtests.finish()
}
