//! Encodes upstream's `HTTPRouteRedirectPortAndScheme` (v1.6.1): redirects that set a
//! hostname with or without a scheme and a port, on three Gateways (HTTP on 80, HTTP on 8080,
//! HTTPS on 443). Each route is Accepted with ResolvedRefs; each case answers 302 with a
//! `Location` whose scheme is the redirect's (else the listener's), and whose port is the
//! redirect's, else the scheme's well-known one when a scheme is set, else the listener's
//! (80/443 may be left out).

use super::support::{
    accepted_with_resolved_refs, calculate_host, expect_tls_go_names, redirect_case,
};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::{ExpectedResponse, RedirectRequest};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};
use anyhow::Context;

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

/// Plain HTTP cases; the `Host` is the one a Go client sends to the address (`ip:8080` on a
/// non-default port), since the redirect may keep it.
fn expect_http(
    s: &mut Suite,
    listener: &str,
    addr: &str,
    cases: Vec<ExpectedResponse>,
) -> anyhow::Result<()> {
    for (i, mut c) in cases.into_iter().enumerate() {
        c.request.host = calculate_host(addr, "http");
        s.expect(addr, &c)
            .with_context(|| format!("{listener}/{}", c.name(i)))?;
    }
    Ok(())
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let gw80 = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr80 = accepted_with_resolved_refs(
        s,
        &gw80,
        &nn(INFRA_NS, "http-route-for-listener-on-port-80"),
    )?;
    let gw8080 = GatewayRef::new(INFRA_NS, "same-namespace-with-http-listener-on-8080");
    let addr8080 = accepted_with_resolved_refs(
        s,
        &gw8080,
        &nn(INFRA_NS, "http-route-for-listener-on-port-8080"),
    )?;
    let gw443 = GatewayRef::new(INFRA_NS, "same-namespace-with-https-listener");
    let addr443 = accepted_with_resolved_refs(
        s,
        &gw443,
        &nn(INFRA_NS, "http-route-for-listener-on-port-443"),
    )?;
    // Upstream reads the server certificate from the Secret `tls-validity-checks-certificate`.
    if s.tls_validity_cert.is_empty() {
        anyhow::bail!("missing required server certificate pem for the test");
    }

    expect_http(
        s,
        "http-listener-on-80",
        &addr80,
        vec![
            case("/scheme-nil-and-port-nil", "http", ""),
            case("/scheme-nil-and-port-80", "http", ""),
            case("/scheme-nil-and-port-8080", "http", "8080"),
            case("/scheme-https-and-port-nil", "https", ""),
            case("/scheme-https-and-port-443", "https", ""),
            case("/scheme-https-and-port-8443", "https", "8443"),
        ],
    )?;

    expect_http(
        s,
        "http-listener-on-8080",
        &addr8080,
        vec![
            case("/scheme-nil-and-port-nil", "http", "8080"),
            case("/scheme-nil-and-port-80", "http", ""),
            case("/scheme-https-and-port-nil", "https", ""),
        ],
    )?;

    // Upstream's Go client trusts that certificate and checks the name `example.org`
    // against its `*.org` with Go's rules (which webpki's stricter wildcard rules refuse).
    let trusted = s.tls_validity_cert.clone();
    let https_cases = [
        case("/scheme-nil-and-port-nil", "https", ""),
        case("/scheme-nil-and-port-443", "https", ""),
        case("/scheme-nil-and-port-8443", "https", "8443"),
        case("/scheme-http-and-port-nil", "http", ""),
        case("/scheme-http-and-port-80", "http", ""),
        case("/scheme-http-and-port-8080", "http", "8080"),
    ];
    for (i, mut c) in https_cases.into_iter().enumerate() {
        c.request.host = "example.org".into();
        expect_tls_go_names(s, &addr443, &c, "example.org", &trusted)
            .with_context(|| format!("https-listener-on-443/{}", c.name(i)))?;
    }
    Ok(())
}
