//! Encodes upstream `GatewaySecretReferenceGrantAllInNamespace`
//! (gateway-secret-reference-grant-all-in-namespace.go): an HTTPS listener whose certificateRef is
//! a Secret in another namespace, allowed by a ReferenceGrant to all Secrets there, is ResolvedRefs
//! True and Programmed True / Programmed.

use crate::checks::cond;
use crate::tests::common::https_listener_must_have;
use crate::{ConformanceTest, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "GatewaySecretReferenceGrantAllInNamespace",
    description: "A Gateway in the gateway-conformance-infra namespace should become programmed if the Gateway has a certificateRef for a Secret in the gateway-conformance-web-backend namespace and a ReferenceGrant granting permission to all Secrets in the namespace exists",
    features: &["Gateway", "ReferenceGrant"],
    manifests: &["tests/gateway-secret-reference-grant-all-in-namespace.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    https_listener_must_have(
        s,
        "Gateway listener should have a true ResolvedRefs condition and a true Programmed condition",
        "gateway-secret-reference-grant-all-in-namespace",
        &[
            cond("Programmed", "True", "Programmed"),
            cond("ResolvedRefs", "True", ""),
        ],
    )
}
