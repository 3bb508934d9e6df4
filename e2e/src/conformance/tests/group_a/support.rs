//! Assertions and client capabilities batch A needs beyond [`crate::conformance::checks`],
//! each following the upstream helper it names:
//!
//! - [`Subtests`]: upstream's `t.Run` (each subtest runs even when an earlier one failed);
//! - [`namespaces_must_be_ready`] and [`gateway_class_must_have_accepted_condition_any`];
//! - [`generation_must_change`]: the step between a patch and upstream's checks (the API server
//!   bumps `metadata.generation` synchronously; Trellis reports it once it has read the file);
//! - [`expect_h2_tls`]: HTTP/2 over TLS as upstream's `H2Protocol` requests make it (ALPN
//!   `h2` only; server name verified with Go's rules by [`GoNameVerifier`]); the shared client
//!   speaks HTTP/1.1 only.

use crate::conformance::Suite;
use crate::conformance::checks::{Cond, ListenerExpect, Nn, cond, has_condition, latest, resolve};
use crate::conformance::cluster::ObjId;
use crate::conformance::http::{
    self, Captured, ExpectedResponse, Tls, await_convergence, is_redirect, parse_location,
    wire_request,
};
use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Annotation that excludes a Gateway from upstream's namespace readiness check.
const SKIP_READINESS: &str = "gateway-api/skip-this-for-readiness";

/// Upstream's `t.Run` subtests: each runs even when an earlier one failed (a failing subtest
/// stops only itself), and the test then fails listing every failed subtest.
#[derive(Debug, Default)]
pub struct Subtests {
    failures: Vec<String>,
}

impl Subtests {
    /// No subtest run yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs one subtest, noting its failure.
    pub fn run(
        &mut self,
        s: &mut Suite,
        name: &str,
        f: impl FnOnce(&mut Suite) -> anyhow::Result<()>,
    ) {
        s.logf(format!("subtest: {name}"));
        if let Err(e) = f(s) {
            let e = format!("{e:#}");
            // Request expectations already name their case.
            let failure = if e.starts_with(name) {
                e
            } else {
                format!("{name}: {e}")
            };
            s.logf(format!("subtest failed: {failure}"));
            self.failures.push(failure);
        }
    }

    /// The outcome: an error listing the failed subtests, if any.
    pub fn finish(self) -> anyhow::Result<()> {
        match self.failures.len() {
            0 => Ok(()),
            1 => bail!("subtest {}", self.failures.join("")),
            n => bail!("{n} subtests failed:\n- {}", self.failures.join("\n- ")),
        }
    }
}

/// Upstream's `NamespacesMustBeReady`: in each namespace, every Gateway not annotated
/// `gateway-api/skip-this-for-readiness: "true"` has its conditions at the latest generation
/// and is Accepted and Programmed, and the namespace has pods (ours are ready once started).
pub fn namespaces_must_be_ready(s: &Suite, namespaces: &[&str]) -> anyhow::Result<()> {
    s.eventually(&format!("namespaces {namespaces:?} to be ready"), |s| {
        for ns in namespaces {
            let ids = s.cluster.ids();
            for id in ids
                .iter()
                .filter(|id| id.kind == "Gateway" && id.namespace == *ns)
            {
                let skipped = s
                    .cluster
                    .get(id)
                    .is_some_and(|g| g["metadata"]["annotations"][SKIP_READINESS] == "true");
                if skipped {
                    continue;
                }
                let Some(o) = s.status("Gateway", ns, &id.name)? else {
                    bail!("{id} has no status yet");
                };
                let generation = o["metadata"]["generation"].as_i64().unwrap_or(0);
                let conditions = &o["status"]["conditions"];
                if !latest(conditions, generation) {
                    bail!("{id} conditions are not at generation {generation}: {conditions}");
                }
                for t in ["Accepted", "Programmed"] {
                    if !has_condition(conditions, &cond(t, "True", "")) {
                        bail!("{id} is not {t} yet: {conditions}");
                    }
                }
            }
            let has_pods = ids
                .iter()
                .filter(|id| id.kind == "Deployment" && id.namespace == *ns)
                .any(|d| !s.cluster.pods(ns, &d.name).is_empty());
            if !has_pods {
                bail!("no pods deployed in {ns} yet");
            }
        }
        Ok(Some(()))
    })
}

/// Shorthand for an expected listener status whose kinds are HTTPRoute (or none when
/// `http_route` is false).
pub fn listener(name: &str, http_route: bool, attached: i64, conds: &[Cond]) -> ListenerExpect {
    ListenerExpect {
        name: name.into(),
        supported_kinds: if http_route {
            vec!["HTTPRoute".into()]
        } else {
            Vec::new()
        },
        attached_routes: attached,
        conditions: conds.to_vec(),
    }
}

/// Upstream's `GWCMustHaveAcceptedConditionAny`: the GatewayClass's conditions carry its
/// generation and it has an Accepted condition (any status).
pub fn gateway_class_must_have_accepted_condition_any(s: &Suite, name: &str) -> anyhow::Result<()> {
    s.eventually(
        &format!("GatewayClass {name} to have an Accepted condition"),
        |s| {
            let Some(o) = s.status("GatewayClass", "", name)? else {
                return Ok(None);
            };
            let generation = o["metadata"]["generation"].as_i64().unwrap_or(0);
            let conditions = &o["status"]["conditions"];
            if !latest(conditions, generation) {
                bail!("conditions are not at generation {generation}: {conditions}");
            }
            if has_condition(conditions, &cond("Accepted", "", "")) {
                Ok(Some(()))
            } else {
                Err(anyhow!("conditions are {conditions}"))
            }
        },
    )
}

/// Upstream's `HTTPRouteMustHaveResolvedRefsConditionsTrue`.
pub fn route_must_have_resolved_refs(s: &Suite, route: &Nn, gateway: &Nn) -> anyhow::Result<()> {
    s.http_route_must_have_condition(route, gateway, cond("ResolvedRefs", "True", "ResolvedRefs"))
}

/// Upstream's `MakeTLSRequestAndExpectEventuallyConsistentResponse` with the `H2Protocol`
/// request protocol: each attempt is an HTTP/2 request over a new TLS connection that offers
/// only ALPN `h2` (as Go's `http2.Transport`), sends `tls.server_name` as SNI, trusts only
/// `tls.trusted_pem` with Go's name rules ([`GoNameVerifier`]); the request's host is the
/// `:authority`.
pub fn expect_h2_tls(
    s: &mut Suite,
    gateway: &str,
    expected: &ExpectedResponse,
    tls: &Tls,
) -> anyhow::Result<()> {
    let addr = resolve(gateway, true)?;
    let req = wire_request(expected);
    let timeouts = s.timeouts;
    let name = expected.name(0);
    await_convergence(
        timeouts.required_successes,
        timeouts.max_time_to_consistency,
        |_| {
            let captured = h2_round_trip(addr, &req, tls, timeouts.request)?;
            http::compare("https", &captured, expected)
        },
    )
    .with_context(|| {
        format!(
            "{name}: SNI {} :authority {} {}",
            tls.server_name, expected.request.host, expected.request.path
        )
    })?;
    s.logf(format!("passed: {name} (SNI {})", tls.server_name));
    Ok(())
}

/// One HTTP/2 request over a new TLS connection (ALPN `h2` only); fails, as Go's
/// `http2.Transport` does, unless the server negotiates `h2`.
pub fn h2_round_trip(
    addr: SocketAddr,
    req: &http::Request,
    tls: &Tls,
    timeout: Duration,
) -> anyhow::Result<Captured> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        tokio::time::timeout(timeout, h2_exchange(addr, req, tls))
            .await
            .map_err(|_| anyhow!("HTTP/2 request to {addr} timed out after {timeout:?}"))?
    })
}

/// A server certificate verifier with Go's `crypto/x509` semantics: the chain must lead to a
/// trusted certificate (webpki checks it, before the name), and the name is matched with
/// [`http::go_hostname_matches`] when webpki's stricter wildcard rules refuse it (webpki refuses
/// the SAN `*.org` for `example.org`; Go accepts it).
#[derive(Debug)]
pub struct GoNameVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl GoNameVerifier {
    /// A verifier trusting the certificates in `trusted_pem` (upstream refuses an HTTPS
    /// request without trusted certificates).
    pub fn new(
        trusted_pem: &str,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> anyhow::Result<Self> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        if trusted_pem.is_empty() {
            bail!("https request has no trusted certificates configured");
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(trusted_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let inner =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()?;
        Ok(Self { inner })
    }
}

impl rustls::client::danger::ServerCertVerifier for GoNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // A name error means the chain is trusted; only the name is in question.
            Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected,
                presented,
            })) => {
                let host = expected.to_str();
                // webpki lists each DNS SAN as `DnsName("<name>")`.
                let matched = presented.iter().any(|p| {
                    p.strip_prefix("DnsName(\"")
                        .and_then(|rest| rest.strip_suffix("\")"))
                        .is_some_and(|name| name != "*" && http::go_hostname_matches(name, &host))
                });
                if matched {
                    Ok(rustls::client::danger::ServerCertVerified::assertion())
                } else {
                    Err(Error::InvalidCertificate(
                        CertificateError::NotValidForNameContext {
                            expected,
                            presented,
                        },
                    ))
                }
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn h2_client_config(tls: &Tls) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = GoNameVerifier::new(&tls.trusted_pem, provider.clone())?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match &tls.client_cert {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>()?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

async fn h2_exchange(addr: SocketAddr, req: &http::Request, tls: &Tls) -> anyhow::Result<Captured> {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let connector = tokio_rustls::TlsConnector::from(Arc::new(h2_client_config(tls)?));
    let name = rustls::pki_types::ServerName::try_from(tls.server_name.clone())
        .context("invalid server name")?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let stream = connector
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {addr} (SNI {})", tls.server_name))?;
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    if alpn.as_deref() != Some(b"h2".as_slice()) {
        bail!(
            "http2: unexpected ALPN protocol {:?}; want \"h2\"",
            alpn.map(|a| String::from_utf8_lossy(&a).to_string())
        );
    }
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .context("HTTP/2 handshake")?;
    let driver = tokio::spawn(conn);
    let method = if req.method.is_empty() {
        "GET"
    } else {
        req.method.as_str()
    };
    let authority = if req.host.is_empty() {
        addr.ip().to_string()
    } else {
        req.host.clone()
    };
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(format!("https://{authority}{}", req.path));
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let body = http_body_util::Full::new(bytes::Bytes::from(req.body.clone()));
    let response = sender
        .send_request(builder.body(body)?)
        .await
        .context("HTTP/2 request")?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.context("HTTP/2 body")?.to_bytes();
    driver.abort();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_ascii_lowercase())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).to_string());
    }
    let body = String::from_utf8_lossy(&body).to_string();
    let echo: Option<Value> = headers
        .get("content-type")
        .filter(|v| v.iter().any(|v| v.starts_with("application/json")))
        .and_then(|_| serde_json::from_str(&body).ok());
    let status = parts.status.as_u16();
    let redirect = if is_redirect(status) {
        headers
            .get("location")
            .and_then(|l| l.first())
            .map(|l| parse_location(l))
    } else {
        None
    };
    Ok(Captured {
        status,
        protocol: "HTTP/2.0".into(),
        headers,
        echo,
        redirect,
        body,
    })
}

/// The generation of an object as applied to the cluster, from Trellis's status.
pub fn generation_of(s: &Suite, id: &ObjId) -> anyhow::Result<i64> {
    s.generation(&id.kind, &id.namespace, &id.name)
}

/// Waits until Trellis reports a generation for `id` different from `before`; returns it.
pub fn generation_must_change(s: &Suite, id: &ObjId, before: i64) -> anyhow::Result<i64> {
    s.eventually(
        &format!("the generation of {id} to change from {before}"),
        |s| {
            let now = generation_of(s, id)?;
            Ok((now != before).then_some(now))
        },
    )
}
