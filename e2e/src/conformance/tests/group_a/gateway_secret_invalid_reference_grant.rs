//! Encodes upstream `GatewaySecretInvalidReferenceGrant`
//! (gateway-secret-invalid-reference-grant.go): an HTTPS listener whose certificateRef is a Secret
//! in another namespace, with ReferenceGrants there that each miss (wrong namespace, from
//! group/kind/namespace, to group/kind/name), is ResolvedRefs False / RefNotPermitted.

use super::support::listener;
use crate::conformance::checks::{cond, nn};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "GatewaySecretInvalidReferenceGrant",
    description: "A Gateway in the gateway-conformance-infra namespace should fail to become ready if the Gateway has a certificateRef for a Secret in the gateway-conformance-web-backend namespace and a ReferenceGrant exists but does not grant permission to that specific Secret",
    features: &["Gateway", "ReferenceGrant"],
    manifests: &["tests/gateway-secret-invalid-reference-grant.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    s.logf("subtest: Gateway listener should have a false ResolvedRefs condition with reason RefNotPermitted");
    s.gateway_status_must_have_listeners(
        &nn(INFRA_NS, "gateway-secret-invalid-reference-grant"),
        &[listener(
            "https",
            true,
            0,
            &[cond("ResolvedRefs", "False", "RefNotPermitted")],
        )],
    )
}
