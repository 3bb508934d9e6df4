//! Requests through a Gateway and what the suite expects of their answers: the request, the
//! echoed request (path, host, method, headers, namespace, pod), the response (status codes,
//! headers, redirect target), with upstream's convergence rule: an expectation holds when it
//! is met a number of times in a row, within a deadline, retrying every second on failure.

use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A request to send.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Host header (the Gateway's address when empty).
    pub host: String,
    /// Method, GET when empty.
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Headers to send.
    pub headers: Vec<(String, String)>,
    /// Do not follow a redirect (redirects are never followed by this client).
    pub unfollow_redirect: bool,
    /// Body to send.
    pub body: String,
}

/// What the backend should have received.
#[derive(Clone, Debug, Default)]
pub struct ExpectedRequest {
    /// Expected host (not checked when empty).
    pub host: String,
    /// Expected method (GET when empty).
    pub method: String,
    /// Expected path with query (the request's when empty).
    pub path: String,
    /// Headers that must be present with these values (multiple values joined by ",").
    pub headers: Vec<(String, String)>,
    /// Headers that must be absent.
    pub absent_headers: Vec<String>,
    /// The backend's port, when checked.
    pub http_port: String,
}

/// Where a redirect should point.
#[derive(Clone, Debug, Default)]
pub struct RedirectRequest {
    /// Scheme (the request's when empty).
    pub scheme: String,
    /// Host (not checked when empty).
    pub host: String,
    /// Port; empty means "the scheme's default or none".
    pub port: String,
    /// Path (the request's when empty).
    pub path: String,
}

/// What the response should be.
#[derive(Clone, Debug, Default)]
pub struct Response {
    /// One acceptable status (added to `status_codes`); 200 when both are empty.
    pub status_code: u16,
    /// Acceptable statuses.
    pub status_codes: Vec<u16>,
    /// Headers that must have these values.
    pub headers: Vec<(String, String)>,
    /// Headers that must have one of these values.
    pub valid_header_values: Vec<(String, Vec<String>)>,
    /// Headers that must be absent.
    pub absent_headers: Vec<String>,
    /// Compare header values ignoring spaces.
    pub ignore_whitespace: bool,
}

/// A backend a request should be mirrored to.
#[derive(Clone, Debug, Default)]
pub struct MirroredBackend {
    /// Service (and Deployment) name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Percentage of requests expected to be mirrored, when not all.
    pub percent: Option<u32>,
}

/// One expectation, modelled on upstream's `http.ExpectedResponse`.
#[derive(Clone, Debug, Default)]
pub struct ExpectedResponse {
    /// The request.
    pub request: Request,
    /// What the backend should see (the request itself when `None`).
    pub expected_request: Option<ExpectedRequest>,
    /// Where a redirect should point.
    pub redirect_request: Option<RedirectRequest>,
    /// Headers the backend is asked to set on its response (`X-Echo-Set-Header`).
    pub backend_set_response_headers: Vec<(String, String)>,
    /// The response.
    pub response: Response,
    /// Prefix of the pod that must answer (a Deployment name).
    pub backend: String,
    /// Namespace the answering pod must be in.
    pub namespace: String,
    /// Backends the request must be mirrored to.
    pub mirrored_to: Vec<MirroredBackend>,
    /// Name of the case, for reports.
    pub test_case_name: String,
    /// Server name (SNI) for HTTPS requests.
    pub server_name: String,
}

impl ExpectedResponse {
    /// The case's name, as upstream derives it.
    pub fn name(&self, i: usize) -> String {
        if !self.test_case_name.is_empty() {
            return self.test_case_name.clone();
        }
        let headers = if self.request.headers.is_empty() {
            ""
        } else {
            " with headers"
        };
        let req = format!(
            "{i} request to '{}{}'{headers}",
            self.request.host, self.request.path
        );
        if self.backend.is_empty() {
            format!("{req} should receive one of {:?}", self.statuses())
        } else {
            format!("{req} should go to {}", self.backend)
        }
    }

    fn statuses(&self) -> Vec<u16> {
        let mut s = self.response.status_codes.clone();
        if self.response.status_code != 0 && !s.contains(&self.response.status_code) {
            s.push(self.response.status_code);
        }
        if s.is_empty() {
            s.push(200);
        }
        // As upstream: when a timeout (408 or 504) is expected, either is accepted.
        if s.iter().any(|c| matches!(c, 408 | 504)) {
            for c in [408, 504] {
                if !s.contains(&c) {
                    s.push(c);
                }
            }
        }
        s
    }
}

/// TLS settings of a request.
#[derive(Clone, Debug, Default)]
pub struct Tls {
    /// SNI to send.
    pub server_name: String,
    /// PEM certificates to trust (any certificate is accepted when empty).
    pub trusted_pem: String,
    /// Client certificate and key (PEM), if any.
    pub client_cert: Option<(String, String)>,
}

/// What came back.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    /// Status code.
    pub status: u16,
    /// Response protocol (`HTTP/1.1`).
    pub protocol: String,
    /// Response headers, names lower-case, values per name.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The echoed request when the body was echo JSON.
    pub echo: Option<serde_json::Value>,
    /// Parsed `Location` of a redirect: (scheme, host, port, path).
    pub redirect: Option<RedirectRequest>,
    /// Response body.
    pub body: String,
}

/// Whether a status code is a redirect.
pub fn is_redirect(status: u16) -> bool {
    matches!(status, 300..=399)
}

/// A certificate verifier that accepts any server certificate (for tests that do not check
/// server identity).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Whether a certificate's DNS name matches a host name the way Go's `crypto/x509` matches
/// them: case-insensitive, same number of labels, `*` allowed as the whole first label (so
/// `*.org` matches `example.org`, which webpki refuses).
pub fn go_hostname_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if pattern.is_empty() || host.is_empty() {
        return false;
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    p.len() == h.len()
        && p.iter()
            .zip(&h)
            .enumerate()
            .all(|(i, (p, h))| (i == 0 && *p == "*") || p == h)
}

/// A server certificate verifier with Go's rules: the chain must lead to the trusted roots
/// (webpki), and the name is matched as Go does ([`go_hostname_matches`]) when webpki's
/// stricter wildcard rules refuse it.
#[derive(Debug)]
struct GoNameVerifier(Arc<rustls::client::WebPkiServerVerifier>);

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
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // webpki checks the chain before the name, so only the name is in question here.
            Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected,
                presented,
            })) => {
                let host = expected.to_str();
                let matched = presented.iter().any(|p| {
                    p.strip_prefix("DnsName(\"")
                        .and_then(|rest| rest.strip_suffix("\")"))
                        .is_some_and(|name| go_hostname_matches(name, &host))
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
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn tls_config(tls: &Tls) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?;
    let builder = if tls.trusted_pem.is_empty() {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(tls.trusted_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let webpki =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(GoNameVerifier(webpki)))
    };
    let config = match &tls.client_cert {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>()?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// Sends one request on a new connection (HTTP/1.1, over TLS when `tls` is given).
pub fn round_trip(
    addr: SocketAddr,
    req: &Request,
    tls: Option<&Tls>,
    timeout: Duration,
) -> anyhow::Result<Captured> {
    let stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let method = if req.method.is_empty() {
        "GET"
    } else {
        &req.method
    };
    // Without a Host, Go's client sends the address, with the port unless it is the scheme's
    // default (upstream's CalculateHost).
    let host = if !req.host.is_empty() {
        req.host.clone()
    } else if (tls.is_none() && addr.port() == 80) || (tls.is_some() && addr.port() == 443) {
        addr.ip().to_string()
    } else {
        addr.to_string()
    };
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n",
        req.path
    );
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", req.body.len()));
    let mut raw = Vec::new();
    match tls {
        None => {
            let mut s = stream;
            s.write_all(head.as_bytes())?;
            s.write_all(req.body.as_bytes())?;
            read_all(&mut s, &mut raw)?;
        }
        Some(tls) => {
            let name = rustls::pki_types::ServerName::try_from(tls.server_name.clone())
                .context("invalid server name")?;
            let conn = rustls::ClientConnection::new(Arc::new(tls_config(tls)?), name)?;
            let mut s = rustls::StreamOwned::new(conn, stream);
            s.write_all(head.as_bytes())?;
            s.write_all(req.body.as_bytes())?;
            read_all(&mut s, &mut raw)?;
        }
    }
    parse(&raw)
}

/// Reads one response: up to the end of its body (by Content-Length or the last chunk), or to
/// EOF when it has neither. Not waiting for the server to close saves its delayed close.
/// Tolerates a TLS peer that closes without close_notify.
fn read_all(s: &mut impl Read, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut buf = [0u8; 16384];
    loop {
        if response_complete(out) {
            return Ok(());
        }
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether `raw` holds a whole response.
fn response_complete(raw: &[u8]) -> bool {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return true;
    }
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("content-length:") {
            return v.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return body.ends_with(b"0\r\n\r\n");
        }
    }
    false
}

fn parse(raw: &[u8]) -> anyhow::Result<Captured> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("incomplete HTTP response")?;
    let head = std::str::from_utf8(&raw[..split])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("empty response")?;
    let mut parts = status_line.split_whitespace();
    let protocol = parts.next().unwrap_or_default().to_string();
    let status: u16 = parts.next().context("no status")?.parse()?;
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers
                .entry(k.trim().to_ascii_lowercase())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.iter().any(|v| v.eq_ignore_ascii_case("chunked")))
    {
        let mut out = Vec::new();
        let mut rest = body.as_slice();
        while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..pos])?.trim(), 16)?;
            rest = &rest[pos + 2..];
            if size == 0 || rest.len() < size {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[(size + 2).min(rest.len())..];
        }
        body = out;
    }
    let body = String::from_utf8_lossy(&body).to_string();
    let echo = headers
        .get("content-type")
        .filter(|v| v.iter().any(|v| v.starts_with("application/json")))
        .and_then(|_| serde_json::from_str(&body).ok());
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
        protocol,
        headers,
        echo,
        redirect,
        body,
    })
}

/// Splits an absolute URL into scheme, host, port and path.
pub fn parse_location(location: &str) -> RedirectRequest {
    let (scheme, rest) = location.split_once("://").unwrap_or(("", location));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h, p),
        _ => (authority, ""),
    };
    RedirectRequest {
        scheme: scheme.to_string(),
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: port.to_string(),
        path: path.to_string(),
    }
}

/// Checks a captured exchange against an expectation (`scheme` is the request's).
pub fn compare(
    scheme: &str,
    captured: &Captured,
    expected: &ExpectedResponse,
) -> anyhow::Result<()> {
    let req = &expected.request;
    let statuses = expected.statuses();
    if !statuses.contains(&captured.status) {
        bail!(
            "expected status one of {statuses:?}, got {} ({})",
            captured.status,
            captured.body.chars().take(200).collect::<String>()
        );
    }
    if captured.status == 200 || captured.status == 204 {
        let echo = captured.echo.clone().unwrap_or_default();
        // Without an explicit expectation, the backend must see the request as sent.
        let default = ExpectedRequest {
            host: req.host.clone(),
            method: req.method.clone(),
            path: req.path.clone(),
            headers: req.headers.clone(),
            ..Default::default()
        };
        let er = expected.expected_request.clone().unwrap_or(default);
        let method = if er.method.is_empty() {
            "GET"
        } else {
            &er.method
        };
        // As upstream: an explicit expectation's path is compared as written (empty included).
        let path = er.path.clone();
        let got = |k: &str| {
            // A response that is not echo JSON: assume the request was made as sent.
            if k == "method" && captured.echo.is_none() {
                return if req.method.is_empty() {
                    "GET".to_string()
                } else {
                    req.method.clone()
                };
            }
            echo[k].as_str().unwrap_or_default().to_string()
        };
        if !er.host.is_empty() && er.host != got("host") {
            bail!("expected host {}, got {}", er.host, got("host"));
        }
        if path != got("path") {
            bail!("expected path {path}, got {}", got("path"));
        }
        if method != got("method") {
            bail!("expected method {method}, got {}", got("method"));
        }
        if expected.namespace != got("namespace") {
            bail!(
                "expected namespace {:?}, got {:?}",
                expected.namespace,
                got("namespace")
            );
        }
        let echoed_headers: BTreeMap<String, String> = echo["headers"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let joined = v
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|x| x.as_str())
                                    .collect::<Vec<_>>()
                                    .join(",")
                            })
                            .unwrap_or_default();
                        (k.to_ascii_lowercase(), joined)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (name, value) in &er.headers {
            match echoed_headers.get(&name.to_ascii_lowercase()) {
                None => bail!("expected request header {name} to be set; got {echoed_headers:?}"),
                Some(v) if v != value => bail!("expected request header {name}: {value}, got {v}"),
                _ => {}
            }
        }
        if !er.http_port.is_empty() && er.http_port != got("httpPort") {
            bail!(
                "expected httpPort {}, got {}",
                er.http_port,
                got("httpPort")
            );
        }
        let norm = |s: &str| {
            if expected.response.ignore_whitespace {
                s.replace(' ', "")
            } else {
                s.to_string()
            }
        };
        for (name, values) in &expected.response.valid_header_values {
            let actual = captured
                .headers
                .get(&name.to_ascii_lowercase())
                .map(|v| v.join(","))
                .with_context(|| format!("expected response header {name} to be set"))?;
            if !values.iter().any(|v| norm(v) == norm(&actual)) {
                bail!("expected response header {name} to be one of {values:?}, got {actual}");
            }
        }
        for (name, value) in &expected.response.headers {
            let actual = captured
                .headers
                .get(&name.to_ascii_lowercase())
                .map(|v| v.join(","))
                .with_context(|| {
                    format!(
                        "expected response header {name} to be set; got {:?}",
                        captured.headers
                    )
                })?;
            if norm(value) != norm(&actual) {
                bail!("expected response header {name}: {value}, got {actual}");
            }
        }
        for name in &expected.response.absent_headers {
            if let Some(v) = captured.headers.get(&name.to_ascii_lowercase()) {
                bail!("expected response header {name} to be absent, got {v:?}");
            }
        }
        for name in &er.absent_headers {
            if let Some(v) = echoed_headers.get(&name.to_ascii_lowercase()) {
                bail!("expected request header {name} to be absent, got {v}");
            }
        }
        if !got("pod").starts_with(&expected.backend) {
            bail!(
                "expected pod name to start with {}, got {}",
                expected.backend,
                got("pod")
            );
        }
    } else if is_redirect(captured.status) {
        let Some(want) = &expected.redirect_request else {
            return Ok(());
        };
        let got = captured
            .redirect
            .clone()
            .context("redirect without Location")?;
        let host = if want.host.is_empty() {
            got.host.clone()
        } else {
            want.host.clone()
        };
        let want_scheme = if want.scheme.is_empty() {
            scheme.to_string()
        } else {
            want.scheme.clone()
        };
        let request_path = req.path.split('?').next().unwrap_or_default().to_string();
        let want_path = if want.path.is_empty() {
            request_path
        } else {
            want.path.clone()
        };
        if host != got.host {
            bail!("expected redirect host {host:?}, got {:?}", got.host);
        }
        if want.port.is_empty() {
            let s = got.scheme.to_ascii_lowercase();
            if s == "http" && !(got.port.is_empty() || got.port == "80") {
                bail!(
                    "for http, expected redirect port 80 or none, got {:?}",
                    got.port
                );
            }
            if s == "https" && !(got.port.is_empty() || got.port == "443") {
                bail!(
                    "for https, expected redirect port 443 or none, got {:?}",
                    got.port
                );
            }
        } else if want.port != got.port {
            bail!("expected redirect port {:?}, got {:?}", want.port, got.port);
        }
        if want_scheme != got.scheme {
            bail!(
                "expected redirect scheme {want_scheme:?}, got {:?}",
                got.scheme
            );
        }
        if want_path != got.path {
            bail!("expected redirect path {want_path:?}, got {:?}", got.path);
        }
    }
    Ok(())
}

/// Timeouts, after upstream's defaults.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// How long an expectation may take to hold.
    pub max_time_to_consistency: Duration,
    /// Consecutive successes needed.
    pub required_successes: u32,
    /// Timeout of one request.
    pub request: Duration,
    /// How long status may take to be as expected.
    pub status: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            max_time_to_consistency: Duration::from_secs(30),
            required_successes: 3,
            request: Duration::from_secs(10),
            status: Duration::from_secs(60),
        }
    }
}

/// Calls `f` until it succeeds `threshold` times in a row, waiting a second after each
/// failure, for at most `max` (upstream's `AwaitConvergence`).
pub fn await_convergence(
    threshold: u32,
    max: Duration,
    mut f: impl FnMut(Duration) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut successes = 0;
    let mut last_error = String::from("no attempt made");
    loop {
        if start.elapsed() > max {
            bail!(
                "did not converge within {max:?} ({successes}/{threshold} successes): {last_error}"
            );
        }
        match f(start.elapsed()) {
            Ok(()) => {
                successes += 1;
                if successes >= threshold {
                    return Ok(());
                }
                continue;
            }
            Err(e) => {
                successes = 0;
                last_error = format!("{e:#}");
            }
        }
        std::thread::sleep(Duration::from_secs(1).min(max.saturating_sub(start.elapsed())));
    }
}

/// Builds the request actually sent for an expectation (with `X-Echo-Set-Header`).
pub fn wire_request(expected: &ExpectedResponse) -> Request {
    let mut req = expected.request.clone();
    if req.method.is_empty() {
        req.method = "GET".into();
    }
    let set: Vec<String> = expected
        .backend_set_response_headers
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    req.headers
        .push(("X-Echo-Set-Header".into(), set.join(",")));
    req
}
