//! Encodes upstream's `HTTPRouteRedirectPortAndScheme` (v1.6.1): redirects that set a
//! hostname with or without a scheme and a port, on three Gateways (HTTP on 80, HTTP on 8080,
//! HTTPS on 443). Each route is Accepted with ResolvedRefs; each case answers 302 with a
//! `Location` whose scheme is the redirect's (else the listener's), and whose port is the
//! redirect's, else the scheme's well-known one when a scheme is set, else the listener's
//! (80/443 may be left out).

use crate::checks::{GatewayRef, nn};
use crate::dsl::redirect_case;
use crate::http::{ExpectedResponse, RedirectRequest, Tls};
use crate::subtests::Subtests;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRedirectPortAndScheme",
    description: "An HTTPRoute with port and scheme redirect filter",
    features: &[
        "Gateway",
        "HTTPRoute",
        "HTTPRoutePortRedirect",
        "GatewayPort8080",
    ],
    manifests: &["tests/httproute-redirect-port-and-scheme.yaml"],
    provisional: false,
    run,
};

/// A case expecting a 302 to `scheme://example.org[:port]`; an empty port accepts the
/// scheme's default or none.
fn case(path: &str, scheme: &str, port: &str) -> ExpectedResponse {
    redirect_case(
        path,
        302,
        RedirectRequest {
            scheme: scheme.into(),
            host: "example.org".into(),
            port: port.into(),
            ..Default::default()
        },
    )
}

/// The Gateway's address once it and its route are ready.
fn ready(s: &mut Suite, gateway: &str, route: &str) -> anyhow::Result<String> {
    s.routes_must_be_accepted_and_resolved(
        &GatewayRef::new(INFRA_NS, gateway),
        &[nn(INFRA_NS, route)],
    )
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr80 = ready(s, "same-namespace", "http-route-for-listener-on-port-80")?;
    let addr8080 = ready(
        s,
        "same-namespace-with-http-listener-on-8080",
        "http-route-for-listener-on-port-8080",
    )?;
    let addr443 = ready(
        s,
        "same-namespace-with-https-listener",
        "http-route-for-listener-on-port-443",
    )?;
    // Upstream reads the server certificate from the Secret `tls-validity-checks-certificate`.
    if s.tls_validity_cert.is_empty() {
        anyhow::bail!("missing required server certificate pem for the test");
    }
    // Upstream's Go client trusts that certificate and checks the name `example.org` against
    // its `*.org` with Go's rules (which webpki's stricter wildcard rules refuse).
    let tls = Tls {
        server_name: "example.org".into(),
        trusted_pem: s.tls_validity_cert.clone(),
        client_cert: None,
    };
    let https = |mut c: ExpectedResponse| {
        c.request.host = "example.org".into();
        c
    };
    let listeners = [
        (
            "http-listener-on-80",
            &addr80,
            None,
            vec![
                case("/scheme-nil-and-port-nil", "http", ""),
                case("/scheme-nil-and-port-80", "http", ""),
                case("/scheme-nil-and-port-8080", "http", "8080"),
                case("/scheme-https-and-port-nil", "https", ""),
                case("/scheme-https-and-port-443", "https", ""),
                case("/scheme-https-and-port-8443", "https", "8443"),
            ],
        ),
        (
            "http-listener-on-8080",
            &addr8080,
            None,
            vec![
                case("/scheme-nil-and-port-nil", "http", "8080"),
                case("/scheme-nil-and-port-80", "http", ""),
                case("/scheme-https-and-port-nil", "https", ""),
            ],
        ),
        (
            "https-listener-on-443",
            &addr443,
            Some(&tls),
            vec![
                https(case("/scheme-nil-and-port-nil", "https", "")),
                https(case("/scheme-nil-and-port-443", "https", "")),
                https(case("/scheme-nil-and-port-8443", "https", "8443")),
                https(case("/scheme-http-and-port-nil", "http", "")),
                https(case("/scheme-http-and-port-80", "http", "")),
                https(case("/scheme-http-and-port-8080", "http", "8080")),
            ],
        ),
    ];
    let mut subtests = Subtests::new();
    for (listener, addr, tls, cases) in listeners {
        for (i, mut c) in cases.into_iter().enumerate() {
            c.test_case_name = format!("{listener}/{}", c.name(i));
            subtests.run(s, &c.test_case_name.clone(), |s| match tls {
                Some(tls) => s.expect_tls(addr, &c, tls),
                None => s.expect(addr, &c),
            });
        }
    }
    subtests.finish()
}
