//! Encodes upstream `HTTPRouteHTTPSListener` (httproute-https-listener.go): routes attach to the
//! HTTPS listeners of `same-namespace-with-https-listener` (one by hostname `example.org`, one
//! by `sectionName` to the `second-example.org` listener); HTTPS requests (HTTP/1.1, SNI equal to
//! the host, trusting `tls-validity-checks-certificate`) reach their backends, and an unknown host
//! answers 404.

use super::support::{self, Subtests};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::{ExpectedResponse, Request, Response, Tls};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

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
    let route = nn(INFRA_NS, "httproute-https-test");
    let route_no_host = nn(INFRA_NS, "httproute-https-test-no-hostname");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace-with-https-listener");
    let addr =
        s.gateway_and_http_routes_must_be_accepted(&gw, &[route.clone(), route_no_host.clone()])?;
    support::route_must_have_resolved_refs(s, &route, &gw.nn)?;
    support::route_must_have_resolved_refs(s, &route_no_host, &gw.nn)?;
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
    for (i, (host, status, backend)) in cases.into_iter().enumerate() {
        let mut expected = ExpectedResponse {
            request: Request {
                host: host.into(),
                path: "/".into(),
                ..Default::default()
            },
            response: Response {
                status_code: status,
                ..Default::default()
            },
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
