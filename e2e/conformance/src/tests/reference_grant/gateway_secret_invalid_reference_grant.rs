//! Encodes upstream `GatewaySecretInvalidReferenceGrant`
//! (gateway-secret-invalid-reference-grant.go): an HTTPS listener whose certificateRef is a Secret
//! in another namespace, with ReferenceGrants there that each miss (wrong namespace, from
//! group/kind/namespace, to group/kind/name), is ResolvedRefs False / RefNotPermitted.

use crate::checks::cond;
use crate::tests::common::https_listener_must_have;
use crate::{ConformanceTest, Suite};

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
    https_listener_must_have(
        s,
        "Gateway listener should have a false ResolvedRefs condition with reason RefNotPermitted",
        "gateway-secret-invalid-reference-grant",
        &[cond("ResolvedRefs", "False", "RefNotPermitted")],
    )
}
