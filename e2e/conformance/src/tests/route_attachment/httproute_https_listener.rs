//! Encodes upstream `HTTPRouteHTTPSListener` (httproute-https-listener.go): routes attach to the
//! HTTPS listeners of `same-namespace-with-https-listener` (one by hostname `example.org`, one
//! by `sectionName` to the `second-example.org` listener); HTTPS requests (HTTP/1.1, SNI equal to
//! the host, trusting `tls-validity-checks-certificate`) reach their backends, and an unknown host
//! answers 404.

use crate::checks::{GatewayRef, nn};
use crate::dsl::{request, status};
use crate::http::{ExpectedResponse, Tls};
use crate::subtests::Subtests;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteHTTPSListener",
    description: "HTTPRoute attaches to a Gateway's HTTPS listener in the same namespace",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-https-listener.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = s.routes_must_be_accepted_and_resolved(
        &GatewayRef::new(INFRA_NS, "same-namespace-with-https-listener"),
        &[
            nn(INFRA_NS, "httproute-https-test"),
            nn(INFRA_NS, "httproute-https-test-no-hostname"),
        ],
    )?;
    // Upstream trusts the certificate of the `tls-validity-checks-certificate` Secret.
    let server_cert = s.tls_validity_cert.clone();
    if server_cert.is_empty() {
        anyhow::bail!("missing required server certificate pem for the test");
    }
    let cases = [
        ("example.org", 200, "infra-backend-v1"),
        ("unknown-example.org", 404, ""),
        ("second-example.org", 200, "infra-backend-v2"),
    ];
    let mut subtests = Subtests::new();
    for (i, (host, code, backend)) in cases.into_iter().enumerate() {
        let mut expected = ExpectedResponse {
            request: request("", host, "/", &[]),
            response: status(code),
            backend: backend.into(),
            namespace: INFRA_NS.into(),
            ..Default::default()
        };
        expected.test_case_name = expected.name(i);
        let tls = Tls {
            server_name: host.into(),
            trusted_pem: server_cert.clone(),
            client_cert: None,
        };
        subtests.run(s, &expected.test_case_name, |s| {
            s.expect_tls(&addr, &expected, &tls)
        });
    }
    subtests.finish()
}
