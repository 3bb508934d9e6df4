//! Encodes upstream `HTTPRouteHTTPSListenerDetectMisdirectedRequests`
//! (httproute-https-listener-detect-misdirected-requests.go): four HTTPS listeners share port 443
//! (no hostname, `second-example.org`, `*.wildcard.org`, `fourth-example.wildcard.org`), each
//! with a route. HTTP/2 requests over TLS whose `:authority` belongs to a different listener
//! than the SNI's answer 421 Misdirected Request; matching ones reach the listener's backend;
//! hosts no listener routes answer 404 on the catch-all listener.

use crate::checks::{GatewayRef, nn};
use crate::dsl::request;
use crate::http::{ExpectedResponse, Response, Tls};
use crate::subtests::Subtests;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteHTTPSListenerDetectMisdirectedRequests",
    description: "HTTPS listeners on the same port detect misdirected requests and return HTTP 421 when appropriate",
    features: &[
        "Gateway",
        "GatewayHTTPSListenerDetectMisdirectedRequests",
        "HTTPRoute",
    ],
    manifests: &["tests/httproute-https-listener-detect-misdirected-requests.yaml"],
    provisional: false,
    run,
};

/// Upstream's cases: (SNI, host, status, backend).
const CASES: &[(&str, &str, u16, &str)] = &[
    ("example.org", "example.org", 200, "infra-backend-v1"),
    ("example.org", "second-example.org", 421, ""),
    ("example.org", "unknown-example.org", 404, ""),
    (
        "second-example.org",
        "second-example.org",
        200,
        "infra-backend-v2",
    ),
    ("second-example.org", "example.org", 421, ""),
    ("second-example.org", "unknown-example.org", 421, ""),
    (
        "third-example.wildcard.org",
        "third-example.wildcard.org",
        200,
        "infra-backend-v3",
    ),
    (
        "third-example.wildcard.org",
        "fith-example.wildcard.org",
        200,
        "infra-backend-v3",
    ),
    (
        "third-example.wildcard.org",
        "fourth-example.wildcard.org",
        421,
        "",
    ),
    ("third-example.wildcard.org", "second-example.org", 421, ""),
    ("third-example.wildcard.org", "unknown-example.org", 421, ""),
    // There is no infra-backend-v4; the fourth route reuses infra-backend-v1.
    (
        "fourth-example.wildcard.org",
        "fourth-example.wildcard.org",
        200,
        "infra-backend-v1",
    ),
    (
        "fourth-example.wildcard.org",
        "fith-example.wildcard.org",
        421,
        "",
    ),
    (
        "unknown-example.org",
        "example.org",
        200,
        "infra-backend-v1",
    ),
    ("unknown-example.org", "unknown-example.org", 404, ""),
];

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let routes: Vec<_> = (1..=4)
        .map(|i| {
            nn(
                INFRA_NS,
                &format!("https-listener-detect-misdirected-requests-test-{i}"),
            )
        })
        .collect();
    let gw = GatewayRef::new(INFRA_NS, "same-namespace-with-https-listener");
    let addr = s.routes_must_be_accepted_and_resolved(&gw, &routes)?;
    // Upstream trusts the certificate of the `tls-validity-checks-certificate` Secret.
    let server_cert = s.tls_validity_cert.clone();
    if server_cert.is_empty() {
        anyhow::bail!("missing required server certificate pem for the test");
    }
    let mut subtests = Subtests::new();
    for (i, (sni, host, status, backend)) in CASES.iter().enumerate() {
        let mut expected = ExpectedResponse {
            request: request("", host, "/detect-misdirected-requests", &[]),
            response: Response {
                status_codes: vec![*status],
                ..Default::default()
            },
            backend: (*backend).into(),
            namespace: INFRA_NS.into(),
            ..Default::default()
        };
        expected.test_case_name = format!("{} (SNI {sni})", expected.name(i));
        let tls = Tls {
            server_name: (*sni).into(),
            trusted_pem: server_cert.clone(),
            client_cert: None,
        };
        subtests.run(s, &expected.test_case_name, |s| {
            s.expect_h2(&addr, &expected, &tls)
        });
    }
    subtests.finish()
}
