//! Requests through a Gateway and what the suite expects of their answers: the request, the
//! echoed request (path, host, method, headers, namespace, pod), the response (status codes,
//! headers, redirect target), with upstream's convergence rule: an expectation holds when it
//! is met a number of times in a row, within a deadline, retrying every second on failure.
//!
//! The one client of the suite lives here too, modelled on upstream's round tripper: HTTP/1.1
//! (plain or over TLS), HTTP/2 over TLS (ALPN `h2`) and HTTP/2 with prior knowledge (h2c), as
//! [`Request::protocol`] asks; server names are verified with Go's rules ([`GoNameVerifier`]);
//! plus the websocket echo probe and upstream's request IDs in the query.

use anyhow::{Context, anyhow, bail};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a request is sent (upstream's `roundtripper.Request.Protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, plain or over TLS (upstream's `HTTP` and `HTTPS`).
    #[default]
    Http1,
    /// HTTP/2 over TLS, offering only ALPN `h2` (upstream's `H2`).
    H2,
    /// HTTP/2 with prior knowledge over plain TCP (upstream's `H2C_PRIOR_KNOWLEDGE`).
    H2c,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::H2 => "HTTP/2",
            Protocol::H2c => "h2c",
        })
    }
}

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
    /// How to send it.
    pub protocol: Protocol,
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

    /// Upstream's `AddRequestIDQueryParam`: puts the request ID in the request's query, and in
    /// the expected backend request's (which takes the request's path when it has none), so
    /// that echo logs of this very request can be told apart.
    pub fn add_request_id_query_param(&mut self, request_id: &str) {
        let path = set_query_param(&self.request.path, REQUEST_ID_QUERY_PARAM, request_id);
        if let Some(er) = self.expected_request.as_mut() {
            er.path = if er.path.is_empty() {
                path.clone()
            } else {
                set_query_param(&er.path, REQUEST_ID_QUERY_PARAM, request_id)
            };
        }
        self.request.path = path;
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
    /// SNI to send, and the name the server certificate must be valid for.
    pub server_name: String,
    /// PEM certificates to trust (required, as upstream requires them).
    pub trusted_pem: String,
    /// Client certificate and key (PEM), if any.
    pub client_cert: Option<(String, String)>,
}

/// What came back.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    /// Status code.
    pub status: u16,
    /// Response protocol (`HTTP/1.1`, `HTTP/2.0`).
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

impl Captured {
    /// A response from its parts: the echo JSON is read from a JSON body, the redirect target
    /// from the `Location` of a redirect.
    pub fn new(
        status: u16,
        protocol: String,
        headers: BTreeMap<String, Vec<String>>,
        body: &[u8],
    ) -> Self {
        let body = String::from_utf8_lossy(body).to_string();
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
        Self {
            status,
            protocol,
            headers,
            echo,
            redirect,
            body,
        }
    }
}

/// Whether a status code is a redirect.
pub fn is_redirect(status: u16) -> bool {
    matches!(status, 300..=399)
}

/// Whether a certificate's DNS name matches a host name the way Go's `crypto/x509` matches
/// them: case-insensitive, same number of labels, `*` allowed as the whole first label (so
/// `*.org` matches `example.org`, which webpki refuses). A pattern Go does not take as one (a
/// bare `*`, an empty label) only matches the very same name.
pub fn go_hostname_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    if pattern.is_empty() || pattern == "." || host.is_empty() || host == "." {
        return false;
    }
    if pattern == "*" || pattern.split('.').any(str::is_empty) {
        return pattern == host;
    }
    let host = host.strip_suffix('.').unwrap_or(&host);
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    p.len() == h.len()
        && p.iter()
            .zip(&h)
            .enumerate()
            .all(|(i, (p, h))| (i == 0 && *p == "*") || p == h)
}

/// A server certificate verifier with Go's `crypto/x509` semantics: the chain must lead to a
/// trusted certificate (webpki checks it, before the name), and the name is matched with
/// [`go_hostname_matches`] when webpki's stricter wildcard rules refuse it.
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

/// The client TLS configuration of upstream's round tripper: a server name is required, only
/// `tls.trusted_pem` is trusted (names checked by [`GoNameVerifier`]), the client certificate
/// is presented when given, and `alpn` is offered (nothing for HTTP/1.1, `h2` for HTTP/2).
pub fn tls_config(tls: &Tls, alpn: &[&[u8]]) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    if tls.server_name.is_empty() {
        bail!("https request has no server name configured");
    }
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
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Upstream's `CalculateHost`: the `Host` a Go client sends to a Gateway address, without the
/// port when it is the scheme's default, with it otherwise.
pub fn calculate_host(gateway: &str, scheme: &str) -> String {
    match gateway.parse::<SocketAddr>() {
        Ok(addr) => default_host(addr, scheme == "https"),
        Err(_) => gateway.to_string(),
    }
}

/// [`calculate_host`] for a resolved address.
fn default_host(addr: SocketAddr, https: bool) -> String {
    let default_port = if https { 443 } else { 80 };
    match addr {
        SocketAddr::V4(a) if a.port() == default_port => a.ip().to_string(),
        SocketAddr::V6(a) if a.port() == default_port => format!("[{}]", a.ip()),
        _ => addr.to_string(),
    }
}

/// Sends one request on a new connection, as `req.protocol` asks: HTTP/1.1 (over TLS when
/// `tls` is given), HTTP/2 over TLS (`tls` required) or h2c (`tls` refused, as upstream does).
/// Without a host, the request carries the one a Go client would ([`calculate_host`]).
pub fn round_trip(
    addr: SocketAddr,
    req: &Request,
    tls: Option<&Tls>,
    timeout: Duration,
) -> anyhow::Result<Captured> {
    let host = if req.host.is_empty() {
        default_host(addr, tls.is_some())
    } else {
        req.host.clone()
    };
    match (req.protocol, tls) {
        (Protocol::Http1, _) => http1_round_trip(addr, &host, req, tls, timeout),
        (Protocol::H2, Some(tls)) => block_on_with_timeout(addr, timeout, async {
            h2_over_tls(addr, &host, req, tls).await
        }),
        (Protocol::H2, None) => bail!("https request has no server name configured"),
        (Protocol::H2c, None) => block_on_with_timeout(addr, timeout, async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            h2_exchange(hyper_util::rt::TokioIo::new(tcp), "http", &host, req).await
        }),
        (Protocol::H2c, Some(_)) => {
            bail!(
                "request has configured trusted CA certificates but h2 prior knowledge is not encrypted"
            )
        }
    }
}

/// One HTTP/1.1 exchange, written and read by hand (`Connection: close`).
fn http1_round_trip(
    addr: SocketAddr,
    host: &str,
    req: &Request,
    tls: Option<&Tls>,
    timeout: Duration,
) -> anyhow::Result<Captured> {
    let stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n",
        method_of(req),
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
            let conn = rustls::ClientConnection::new(Arc::new(tls_config(tls, &[])?), name)?;
            let mut s = rustls::StreamOwned::new(conn, stream);
            s.write_all(head.as_bytes())?;
            s.write_all(req.body.as_bytes())?;
            read_all(&mut s, &mut raw)?;
        }
    }
    let parsed = trellis_harness::parse_http1_response(&raw)?;
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in parsed.headers {
        headers.entry(k).or_default().push(v);
    }
    Ok(Captured::new(
        parsed.status,
        parsed.protocol,
        headers,
        &parsed.body,
    ))
}

/// The request's method, GET when empty.
fn method_of(req: &Request) -> &str {
    if req.method.is_empty() {
        "GET"
    } else {
        &req.method
    }
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

/// Runs an async exchange with `addr` on a one-off runtime, within `timeout`.
fn block_on_with_timeout<T>(
    addr: SocketAddr,
    timeout: Duration,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::time::timeout(timeout, f)
            .await
            .map_err(|_| anyhow!("request to {addr} timed out after {timeout:?}"))?
    })
}

/// HTTP/2 over a new TLS connection that offers only ALPN `h2` (as Go's `http2.Transport`);
/// fails, as that transport does, unless the server negotiates `h2`.
async fn h2_over_tls(
    addr: SocketAddr,
    authority: &str,
    req: &Request,
    tls: &Tls,
) -> anyhow::Result<Captured> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(tls, &[b"h2"])?));
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
    h2_exchange(
        hyper_util::rt::TokioIo::new(stream),
        "https",
        authority,
        req,
    )
    .await
}

/// One HTTP/2 request on an established connection; `authority` is the `:authority`.
async fn h2_exchange<I>(
    io: I,
    scheme: &str,
    authority: &str,
    req: &Request,
) -> anyhow::Result<Captured>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .context("HTTP/2 handshake")?;
    let driver = tokio::spawn(conn);
    let mut builder = hyper::Request::builder()
        .method(method_of(req))
        .uri(format!("{scheme}://{authority}{}", req.path));
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
    Ok(Captured::new(
        parts.status.as_u16(),
        format!("{:?}", parts.version),
        headers,
        &body,
    ))
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
    /// How long a route may take to show no accepted parent (polled every second).
    pub route_must_not_have_parents: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            max_time_to_consistency: Duration::from_secs(30),
            required_successes: 3,
            request: Duration::from_secs(10),
            status: Duration::from_secs(60),
            route_must_not_have_parents: Duration::from_secs(60),
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

/// Upstream's query parameter carrying a request ID.
pub const REQUEST_ID_QUERY_PARAM: &str = "gateway-api-conformance-request-id";

/// A random version-4 UUID string (upstream uses `uuid.NewString()` for request IDs).
pub fn new_uuid() -> String {
    let mut bytes = [0u8; 16];
    for chunk in bytes.chunks_mut(4) {
        let r = trellis_harness::rand_u32().to_be_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Percent-encodes a query key or value like Go's `url.QueryEscape` (space becomes `+`).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Encodes query parameters like Go's `url.Values.Encode`: sorted by key, values in order.
pub fn encode_query(values: &[(&str, &str)]) -> String {
    let mut sorted: Vec<&(&str, &str)> = values.iter().collect();
    sorted.sort_by_key(|(k, _)| *k);
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Sets query parameter `name` to `value` in a path with an optional query, like upstream's
/// `addQueryParam`: any previous value of `name` is replaced and the query is re-encoded with
/// its keys sorted.
pub fn set_query_param(path: &str, name: &str, value: &str) -> String {
    let (base, query) = path.split_once('?').unwrap_or((path, ""));
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .filter(|(k, _)| k != name)
        .collect();
    pairs.push((query_escape(name), query_escape(value)));
    // `Encode` sorts by key; the kept pairs are already escaped.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!("{base}?{query}")
}

/// One websocket session like upstream's `HTTPRouteBackendProtocolWebSocket` probe: dials
/// `ws://<gateway>/ws` with the given `Origin`, sends a text message and a binary message, and
/// checks that each comes back unchanged.
pub fn websocket_echo(addr: SocketAddr, origin: &str, timeout: Duration) -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
    let stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!("ws://{addr}/ws").into_client_request()?;
    request
        .headers_mut()
        .insert("Origin", tungstenite::http::HeaderValue::from_str(origin)?);
    let (mut ws, _) =
        tungstenite::client(request, stream).map_err(|e| anyhow!("failed to dial: {e}"))?;
    // The next data frame; control frames are handled by the library, like x/net/websocket.
    let receive = |ws: &mut tungstenite::WebSocket<std::net::TcpStream>| loop {
        match ws.read()? {
            m @ (Message::Text(_) | Message::Binary(_)) => break anyhow::Ok(m.into_data()),
            Message::Close(frame) => bail!("connection closed: {frame:?}"),
            _ => continue,
        }
    };
    let text = "Websocket Support!";
    ws.send(Message::text(text))
        .context("failed to send text frame")?;
    let reply = receive(&mut ws).context("failed to receive text frame")?;
    if reply.as_ref() != text.as_bytes() {
        bail!(
            "unexpected reply - want: {text} got: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    let binary: Vec<u8> = vec![1, 2, 3, 4, 5, 6, 7];
    ws.send(Message::binary(binary.clone()))
        .context("failed to send binary frame")?;
    let reply = receive(&mut ws).context("failed to receive binary frame")?;
    if reply.as_ref() != binary.as_slice() {
        bail!(
            "unexpected reply - want: {binary:?} got: {:?}",
            reply.as_ref()
        );
    }
    let _ = ws.close(None);
    Ok(())
}
