//! Encodes upstream `GatewayInvalidTLSConfiguration` (gateway-invalid-tls-configuration.go): an
//! HTTPS listener whose certificateRef is a missing Secret, has an unsupported group or kind, or
//! names a malformed Secret is ResolvedRefs False / InvalidCertificateRef, keeps HTTPRoute as a
//! supported kind and has no attached routes.

use crate::checks::{cond, nn};
use crate::dsl::listener;
use crate::subtests::Subtests;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "GatewayInvalidTLSConfiguration",
    description: "A Gateway should fail to become ready if the Gateway has an invalid TLS configuration",
    features: &["Gateway"],
    manifests: &["tests/gateway-invalid-tls-configuration.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let expected = [listener(
        "https",
        true,
        0,
        &[cond("ResolvedRefs", "False", "InvalidCertificateRef")],
    )];
    let mut subtests = Subtests::new();
    for (case, gateway) in [
        (
            "Nonexistent secret referenced as CertificateRef in a Gateway listener",
            "gateway-certificate-nonexistent-secret",
        ),
        (
            "Unsupported group resource referenced as CertificateRef in a Gateway listener",
            "gateway-certificate-unsupported-group",
        ),
        (
            "Unsupported kind resource referenced as CertificateRef in a Gateway listener",
            "gateway-certificate-unsupported-kind",
        ),
        (
            "Malformed secret referenced as CertificateRef in a Gateway listener",
            "gateway-certificate-malformed-secret",
        ),
    ] {
        subtests.run(s, case, |s| {
            s.gateway_status_must_have_listeners(&nn(INFRA_NS, gateway), &expected)
        });
    }
    subtests.finish()
}
