//! Encodes upstream `GatewaySecretMissingReferenceGrant`
//! (gateway-secret-missing-reference-grant.go): an HTTPS listener whose certificateRef is a Secret
//! in another namespace, with no ReferenceGrant, is ResolvedRefs False / RefNotPermitted.

use crate::checks::cond;
use crate::tests::common::https_listener_must_have;
use crate::{ConformanceTest, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "GatewaySecretMissingReferenceGrant",
    description: "A Gateway in the gateway-conformance-infra namespace should fail to become programmed if the Gateway has a certificateRef for a Secret in the gateway-conformance-web-backend namespace and a ReferenceGrant granting permission to the Secret does not exist",
    features: &["Gateway", "ReferenceGrant"],
    manifests: &["tests/gateway-secret-missing-reference-grant.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    https_listener_must_have(
        s,
        "Gateway listener should have a false ResolvedRefs condition with reason RefNotPermitted",
        "gateway-secret-missing-reference-grant",
        &[cond("ResolvedRefs", "False", "RefNotPermitted")],
    )
}
