//! The echo backend behind the `trellis-echo` binary.
//!
//! This module owns everything the echo server does: reading its configuration from
//! the environment, binding the HTTP, h2c and HTTPS listeners, answering each request
//! with a JSON description of what it received, and the special paths (`/health`,
//! `/status/NNN`, `/retry/...`, `/ws`, the `delay` query parameter). It is a drop-in
//! replacement for the Gateway API conformance image `echo-basic`, so the JSON shape,
//! the environment variables and the per-request log line follow that server.
//!
//! The binary (`src/bin/trellis-echo.rs`) only parses the command line and calls
//! [`EchoServer::bind`], [`EchoServer::announce`] and [`EchoServer::serve`].

pub mod client;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// Default port of the HTTP/1.1 + h2c listener (`HTTP_PORT`).
pub const DEFAULT_HTTP_PORT: u16 = 3000;
/// Default port of the h2c listener (`H2C_PORT`).
pub const DEFAULT_H2C_PORT: u16 = 3001;
/// Default port of the HTTPS listener (`HTTPS_PORT`).
pub const DEFAULT_HTTPS_PORT: u16 = 8443;

/// How long a TLS client may take to finish its handshake before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Response headers that `X-Echo-Set-Header` may not set, because they would break the
/// framing of the response (hyper trusts them) rather than just add a header.
const UNSETTABLE_HEADERS: [HeaderName; 2] = [header::CONTENT_LENGTH, header::TRANSFER_ENCODING];

/// Where the server runs, as the `POD_NAME`, `NAMESPACE`, `SERVICE_NAME` and
/// `INGRESS_NAME` environment variables tell it; echoed in every JSON body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EchoContext {
    /// `NAMESPACE`.
    pub namespace: String,
    /// `INGRESS_NAME`.
    pub ingress: String,
    /// `SERVICE_NAME`.
    pub service: String,
    /// `POD_NAME`.
    pub pod: String,
}

/// The files that turn the HTTPS listener on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first (`TLS_SERVER_CERT`).
    pub cert: PathBuf,
    /// PEM private key (`TLS_SERVER_PRIVKEY`).
    pub key: PathBuf,
    /// Optional PEM bundle of CA certificates (`TLS_CLIENT_CACERTS`). When set, the server
    /// asks clients for a certificate, verifies one against these CAs if given, still
    /// accepts clients without one, and echoes the client chain in `tls.peerCertificates`.
    pub client_ca: Option<PathBuf>,
}

/// Everything the echo server needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The IP every listener binds.
    pub address: IpAddr,
    /// Port of the HTTP/1.1 + h2c listener; 0 picks an ephemeral port.
    pub http_port: u16,
    /// Port of the second HTTP/1.1 + h2c listener; 0 picks an ephemeral port.
    pub h2c_port: u16,
    /// Port of the HTTPS listener (only bound when [`Config::tls`] is set); 0 picks an
    /// ephemeral port.
    pub https_port: u16,
    /// Certificate and key for HTTPS, if both were given.
    pub tls: Option<TlsFiles>,
    /// The values echoed as `namespace`, `ingress`, `service` and `pod`.
    pub context: EchoContext,
    /// A service to call before answering each request (`CALL_URL`), as an app of a mesh
    /// calls the services behind it.
    pub call: Option<Call>,
}

/// The call an echo server makes before answering each request (except `/health`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `http://host[:port]/path` (`CALL_URL`).
    pub url: String,
    /// Whether the trace context of the request being answered goes on the call
    /// (`FORWARD_TRACE_CONTEXT`, default `true`): the headers [`TRACE_CONTEXT_HEADERS`] list.
    /// An app that does not forward it breaks its callers' traces in two.
    pub forward_trace_context: bool,
}

/// The headers that carry a request's trace context, which an app must copy from the request
/// it serves onto the calls it makes for it (W3C Trace Context, Envoy's request id, B3).
pub const TRACE_CONTEXT_HEADERS: [&str; 9] = [
    "traceparent",
    "tracestate",
    "x-request-id",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// How long the call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl Config {
    /// Reads the configuration from the process environment (see [`Config::from_lookup`]).
    pub fn from_env(address: IpAddr) -> anyhow::Result<Self> {
        Self::from_lookup(address, |name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, which returns the value of an environment
    /// variable. An unset or empty variable takes its default: `HTTP_PORT` 3000,
    /// `H2C_PORT` 3001, `HTTPS_PORT` 8443, the context fields empty, and HTTPS off unless
    /// both `TLS_SERVER_CERT` and `TLS_SERVER_PRIVKEY` are set. `CALL_URL` makes the server
    /// call that URL before answering each request, forwarding the trace context unless
    /// `FORWARD_TRACE_CONTEXT` is `false`.
    pub fn from_lookup(
        address: IpAddr,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let var = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let port = |name: &str, default: u16| -> anyhow::Result<u16> {
            match var(name) {
                None => Ok(default),
                Some(value) => value
                    .trim()
                    .parse()
                    .with_context(|| format!("{name}={value:?} is not a port number")),
            }
        };
        let tls = match (var("TLS_SERVER_CERT"), var("TLS_SERVER_PRIVKEY")) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
                client_ca: var("TLS_CLIENT_CACERTS").map(PathBuf::from),
            }),
            _ => None,
        };
        Ok(Self {
            address,
            http_port: port("HTTP_PORT", DEFAULT_HTTP_PORT)?,
            h2c_port: port("H2C_PORT", DEFAULT_H2C_PORT)?,
            https_port: port("HTTPS_PORT", DEFAULT_HTTPS_PORT)?,
            tls,
            context: EchoContext {
                namespace: var("NAMESPACE").unwrap_or_default(),
                ingress: var("INGRESS_NAME").unwrap_or_default(),
                service: var("SERVICE_NAME").unwrap_or_default(),
                pod: var("POD_NAME").unwrap_or_default(),
            },
            call: match var("CALL_URL") {
                None => None,
                Some(url) => Some(Call {
                    url,
                    forward_trace_context: match var("FORWARD_TRACE_CONTEXT").as_deref() {
                        None | Some("true") => true,
                        Some("false") => false,
                        Some(other) => {
                            anyhow::bail!("FORWARD_TRACE_CONTEXT={other:?} is not true or false")
                        }
                    },
                }),
            },
        })
    }
}

/// Which kind of listener a socket is; printed in the `listening ...` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// The `HTTP_PORT` listener: HTTP/1.1 and h2c prior knowledge.
    Http,
    /// The `H2C_PORT` listener: h2c prior knowledge and HTTP/1.1.
    H2c,
    /// The `HTTPS_PORT` listener: TLS with ALPN `h2` and `http/1.1`.
    Https,
}

impl fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http => "http",
            Self::H2c => "h2c",
            Self::Https => "https",
        })
    }
}

/// Shared by every connection of one server.
struct Shared {
    context: EchoContext,
    call: Option<Call>,
    /// Requests seen so far per `uuid` on `/retry/...`.
    retries: Mutex<HashMap<String, u64>>,
    builder: auto::Builder<TokioExecutor>,
}

/// One bound listener.
struct Bound {
    kind: ListenerKind,
    listener: TcpListener,
    local: SocketAddr,
    tls: Option<TlsAcceptor>,
}

/// A bound echo server, ready to [`serve`](EchoServer::serve).
pub struct EchoServer {
    listeners: Vec<Bound>,
    shared: Arc<Shared>,
}

impl EchoServer {
    /// Binds every listener of `config` (HTTPS only when TLS files are set) and loads the
    /// TLS material. Fails if a port cannot be bound or a TLS file cannot be read.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        let tls = match &config.tls {
            Some(files) => Some(tls_acceptor(files)?),
            None => None,
        };
        let mut wanted = vec![
            (ListenerKind::Http, config.http_port, None),
            (ListenerKind::H2c, config.h2c_port, None),
        ];
        if let Some(acceptor) = tls {
            wanted.push((ListenerKind::Https, config.https_port, Some(acceptor)));
        }
        let mut listeners = Vec::with_capacity(wanted.len());
        for (kind, port, tls) in wanted {
            let addr = SocketAddr::new(config.address, port);
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the {kind} listener on {addr}"))?;
            let local = listener.local_addr()?;
            listeners.push(Bound {
                kind,
                listener,
                local,
                tls,
            });
        }

        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new());
        builder.http2().timer(TokioTimer::new());
        Ok(Self {
            listeners,
            shared: Arc::new(Shared {
                context: config.context,
                call: config.call,
                retries: Mutex::new(HashMap::new()),
                builder,
            }),
        })
    }

    /// The kind and actual local address of every bound listener, in the order
    /// http, h2c, https.
    pub fn local_addrs(&self) -> Vec<(ListenerKind, SocketAddr)> {
        self.listeners.iter().map(|b| (b.kind, b.local)).collect()
    }

    /// Prints one `listening <kind> <ip:port>` line per listener to stdout and flushes it.
    pub fn announce(&self) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        for (kind, addr) in self.local_addrs() {
            writeln!(out, "listening {kind} {addr}")?;
        }
        out.flush()
    }

    /// Accepts and serves connections on every listener until the future is dropped.
    /// Errors on single connections are logged and never stop the server.
    pub async fn serve(self) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for bound in self.listeners {
            tasks.spawn(accept_loop(bound, self.shared.clone()));
        }
        while let Some(done) = tasks.join_next().await {
            done.context("a listener task stopped")?;
        }
        Ok(())
    }
}

/// Builds the TLS acceptor from PEM files: ring provider, TLS 1.2 and 1.3, ALPN h2 and
/// http/1.1, and optional client certificate verification.
fn tls_acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading a private key from {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(path)? {
                roots
                    .add(cert)
                    .with_context(|| format!("adding a CA from {}", path.display()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not fit")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", path.display());
    }
    Ok(certs)
}

async fn accept_loop(bound: Bound, shared: Arc<Shared>) {
    let port = bound.local.port();
    loop {
        let (stream, remote) = match bound.listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, listener = %bound.kind, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = bound.tls.clone();
        tokio::spawn(async move {
            serve_connection(stream, remote, port, tls, shared).await;
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    port: u16,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let socket = duplicate(&stream);
    match tls {
        None => {
            let conn = ConnInfo {
                remote,
                port,
                tls: None,
                socket,
            };
            serve_io(TokioIo::new(stream), conn, shared).await;
        }
        Some(acceptor) => {
            let stream =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, %remote, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
            let conn = ConnInfo {
                remote,
                port,
                tls: Some(TlsInfo::from_connection(stream.get_ref().1)),
                socket,
            };
            serve_io(TokioIo::new(stream), conn, shared).await;
        }
    }
}

async fn serve_io<I>(io: I, conn: ConnInfo, shared: Arc<Shared>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let handler_shared = shared.clone();
    let service = service_fn(move |req| {
        let shared = handler_shared.clone();
        let conn = conn.clone();
        async move { handle(&shared, &conn, req).await }
    });
    if let Err(error) = shared
        .builder
        .serve_connection_with_upgrades(io, service)
        .await
    {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// What the server knows about one connection.
struct ConnInfo {
    remote: SocketAddr,
    /// The local port of the listener, echoed as `httpPort`.
    port: u16,
    tls: Option<TlsInfo>,
    /// A second handle on the connection's socket, to abort it with a TCP RST.
    socket: Option<std::net::TcpStream>,
}

impl ConnInfo {
    /// Makes the connection end with a TCP RST when it closes (SO_LINGER 0).
    fn reset_on_close(&self) {
        if let Some(socket) = &self.socket {
            let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
        }
    }
}

/// Why a request gets no response: the connection is aborted.
#[derive(Debug)]
struct Abort;

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection aborted on purpose")
    }
}

impl std::error::Error for Abort {}

/// A second handle on a socket (shares the connection; closing both ends it).
fn duplicate(stream: &TcpStream) -> Option<std::net::TcpStream> {
    use std::os::fd::AsFd;
    stream
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(std::net::TcpStream::from)
}

/// The `tls` object of the JSON body, as upstream echo-basic writes it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct TlsInfo {
    version: String,
    peer_certificates: Vec<String>,
    server_name: String,
    negotiated_protocol: String,
    cipher_suite: String,
}

impl TlsInfo {
    fn from_connection(conn: &rustls::ServerConnection) -> Self {
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        let cipher_suite = conn
            .negotiated_cipher_suite()
            .map(|suite| cipher_suite_name(suite.suite()))
            .unwrap_or_default();
        Self {
            version,
            peer_certificates: conn
                .peer_certificates()
                .unwrap_or_default()
                .iter()
                .map(|cert| pem_encode("CERTIFICATE", cert))
                .collect(),
            server_name: conn.server_name().unwrap_or_default().to_owned(),
            negotiated_protocol: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default(),
            cipher_suite,
        }
    }
}

/// The IANA name of a cipher suite the way Go's `tls.CipherSuiteName` spells it
/// (rustls calls the TLS 1.3 suites `TLS13_...`, Go `TLS_...`).
fn cipher_suite_name(suite: rustls::CipherSuite) -> String {
    match suite.as_str() {
        Some(name) => match name.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => name.to_owned(),
        },
        None => format!("{suite:?}"),
    }
}

/// Encodes DER bytes as a PEM block, 64 base64 characters a line, like Go's `pem.Encode`.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]);
            } else {
                b64.push(b'=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The JSON body of an echo response; field names and order follow echo-basic.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EchoBody<'a> {
    path: String,
    host: String,
    method: &'a str,
    proto: &'static str,
    headers: BTreeMap<String, Vec<String>>,
    namespace: &'a str,
    ingress: &'a str,
    service: &'a str,
    pod: &'a str,
    http_port: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<&'a TlsInfo>,
    /// Upstream fills this only through a sniffing hack; here it is the SNI on HTTPS.
    sni: &'a str,
}

/// The request target as received, like Go's `RequestURI`: the `:path` for HTTP/2, the
/// request-target (origin or absolute form) for HTTP/1.
fn request_uri<B>(req: &Request<B>) -> String {
    if req.version() == Version::HTTP_2 {
        req.uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned())
    } else {
        req.uri().to_string()
    }
}

/// The host the client asked for: the authority of the request URI (HTTP/2 `:authority`
/// or an absolute-form HTTP/1 target), else the `Host` header.
fn request_host<B>(req: &Request<B>) -> String {
    if let Some(authority) = req.uri().authority() {
        return authority.as_str().to_owned();
    }
    req.headers()
        .get(header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

fn proto_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Canonicalizes a header name the way Go's `http.CanonicalHeaderKey` does: the first
/// letter and every letter after a hyphen upper case, the rest lower case
/// (`x-foo-bar` becomes `X-Foo-Bar`). A name with a byte that is not a token character
/// is returned unchanged, as Go does.
pub fn canonical_header_name(name: &str) -> String {
    let is_token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(is_token) {
        return name.to_owned();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

fn echoed_headers(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if name == header::HOST {
            continue;
        }
        out.entry(canonical_header_name(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    out
}

/// Parses a duration in Go's `time.ParseDuration` syntax: an optional sign, then one or
/// more decimal numbers, each with an optional fraction and a unit among `ns`, `us`
/// (`µs`, `μs`), `ms`, `s`, `m`, `h`, such as `300ms`, `1.5s` or `1h2m3s`; `0` alone
/// needs no unit. Negative durations come back as zero.
pub fn parse_go_duration(input: &str) -> anyhow::Result<Duration> {
    let invalid = || anyhow!("time: invalid duration {input:?}");
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, tail) = rest.split_at(digits);
        let (fraction, tail) = match tail.strip_prefix('.') {
            Some(tail) => {
                let n = tail.bytes().take_while(u8::is_ascii_digit).count();
                tail.split_at(n)
            }
            None => ("", tail),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let unit_len = tail
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per_unit: f64 = match unit {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(anyhow!("time: missing unit in duration {input:?}")),
            _ => return Err(anyhow!("time: unknown unit {unit:?} in duration {input:?}")),
        };
        let number: f64 = format!(
            "{}.{}",
            if whole.is_empty() { "0" } else { whole },
            fraction
        )
        .trim_end_matches('.')
        .parse()
        .map_err(|_| invalid())?;
        total_nanos += number * nanos_per_unit;
        if total_nanos > i64::MAX as f64 {
            return Err(invalid());
        }
        rest = tail;
    }
    if negative {
        return Ok(Duration::ZERO);
    }
    Ok(Duration::from_nanos(total_nanos as u64))
}

/// The first value of query parameter `name` in `query` (without the `?`),
/// percent-decoded with `+` as space, like Go's `FormValue`.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| percent_decode(key) == name)
        .map(|(_, value)| percent_decode(value))
}

fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(byte) = hex {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes one line to stdout and flushes it; errors (a closed pipe) are ignored.
fn log_line(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(args);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
}

/// Routes with doubled slashes collapsed, like upstream's `preserveSlashes`.
fn route_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(text.to_owned())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// A `{"message": ...}` JSON error, as upstream's `processError` writes it.
fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

async fn handle(
    shared: &Shared,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Abort> {
    answer(shared, conn, req).await
}

async fn answer(
    shared: &Shared,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Abort> {
    let uri = request_uri(&req);
    log_line(format_args!(
        "Echoing back request made to {uri} to client ({})",
        conn.remote
    ));
    let path = route_path(req.uri().path());
    let query = req.uri().query().unwrap_or_default().to_owned();

    if is_websocket_upgrade(&req) && req.version() == Version::HTTP_11 {
        return Ok(websocket_upgrade(&mut req));
    }

    // Read the request body fully and throw it away.
    let (parts, mut body) = req.into_parts();
    while let Some(frame) = body.frame().await {
        if let Err(error) = frame {
            tracing::debug!(%error, "reading the request body failed");
            return Ok(json_error(StatusCode::BAD_REQUEST, &error.to_string()));
        }
    }
    let req = Request::from_parts(parts, ());

    if let Some(delay) = query_param(&query, "delay").filter(|d| !d.is_empty()) {
        match parse_go_duration(&delay) {
            Ok(delay) => tokio::time::sleep(delay).await,
            Err(error) => {
                return Ok(json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &error.to_string(),
                ));
            }
        }
    }

    if path == "/health" {
        return Ok(plain(StatusCode::OK, "OK"));
    }
    let called = match &shared.call {
        Some(call) => Some(make_call(call, &req).await),
        None => None,
    };
    let status = if path == "/ws" {
        return Ok(json_error(
            StatusCode::BAD_REQUEST,
            "expected a websocket upgrade",
        ));
    } else if let Some(code) = path.strip_prefix("/status/") {
        status_from_path(code)
    } else if path == "/retry" || path.starts_with("/retry/") {
        match retry_status(shared, &query) {
            Retry::Answer(status) => status,
            Retry::Reset => {
                conn.reset_on_close();
                return Err(Abort);
            }
        }
    } else {
        StatusCode::OK
    };
    let mut response = echo_response(shared, conn, &req, &uri, status);
    if let Some(called) = called
        && let Ok(value) = HeaderValue::from_str(&called)
    {
        response.headers_mut().insert("x-echo-call-status", value);
    }
    Ok(response)
}

/// Calls `call.url` (with the request's trace context if `call` says so); the status it
/// answered, or why there was none.
async fn make_call(call: &Call, req: &Request<()>) -> String {
    let mut headers = Vec::new();
    if call.forward_trace_context {
        for name in TRACE_CONTEXT_HEADERS {
            for value in req.headers().get_all(name) {
                if let Ok(value) = value.to_str() {
                    headers.push((name.to_string(), value.to_string()));
                }
            }
        }
    }
    let url = call.url.clone();
    match tokio::task::spawn_blocking(move || client::status(&url, &headers, CALL_TIMEOUT)).await {
        Ok(Ok(status)) => status.to_string(),
        Ok(Err(error)) => format!("error: {error:#}"),
        Err(error) => format!("error: {error}"),
    }
}

/// The status for `/status/NNN`: NNN if it is three digits in 100..=599, else 400.
/// hyper cannot send a 1xx status as the final answer; Go's server answers 200 after
/// the informational response, and so does this one.
fn status_from_path(code: &str) -> StatusCode {
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return StatusCode::BAD_REQUEST;
    }
    match code.parse::<u16>().ok().map(StatusCode::from_u16) {
        Some(Ok(status)) if (100..200).contains(&status.as_u16()) => StatusCode::OK,
        Some(Ok(status)) if status.as_u16() < 600 => status,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// What `/retry/...` does with one request.
enum Retry {
    /// Answer with this status.
    Answer(StatusCode),
    /// Abort the connection with a TCP RST, without an answer.
    Reset,
}

/// `/retry/...?uuid=ID&succeedAfter=N[&responseCode=NNN]`, as upstream's retry simulation: the
/// first N requests for ID fail (answered with `responseCode` when given, else the connection is
/// reset), later ones succeed. Without `uuid` or `succeedAfter` the answer is 400.
fn retry_status(shared: &Shared, query: &str) -> Retry {
    let Some(uuid) = query_param(query, "uuid").filter(|u| !u.is_empty()) else {
        return Retry::Answer(StatusCode::BAD_REQUEST);
    };
    let Some(succeed_after) =
        query_param(query, "succeedAfter").and_then(|n| n.trim().parse::<u64>().ok())
    else {
        return Retry::Answer(StatusCode::BAD_REQUEST);
    };
    let response_code = query_param(query, "responseCode")
        .and_then(|c| c.trim().parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok());
    let seen = {
        let mut retries = shared
            .retries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = retries.entry(uuid).or_insert(0);
        *count += 1;
        *count
    };
    if seen > succeed_after {
        return Retry::Answer(StatusCode::OK);
    }
    match response_code {
        Some(status) => Retry::Answer(status),
        None => Retry::Reset,
    }
}

fn echo_response(
    shared: &Shared,
    conn: &ConnInfo,
    req: &Request<()>,
    uri: &str,
    status: StatusCode,
) -> Response<Full<Bytes>> {
    let ctx = &shared.context;
    let tls = conn.tls.as_ref();
    let body = EchoBody {
        path: uri.to_owned(),
        host: request_host(req),
        method: req.method().as_str(),
        proto: proto_name(req.version()),
        headers: echoed_headers(req.headers()),
        namespace: &ctx.namespace,
        ingress: &ctx.ingress,
        service: &ctx.service,
        pod: &ctx.pod,
        http_port: conn.port.to_string(),
        tls,
        sni: tls.map(|t| t.server_name.as_str()).unwrap_or_default(),
    };
    let mut json = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(
        &mut json,
        serde_json::ser::PrettyFormatter::with_indent(b" "),
    );
    if let Err(error) = body.serialize(&mut serializer) {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string());
    }

    let mut headers = HeaderMap::new();
    set_echo_headers(&mut headers, req.headers());
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );

    let no_body = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
        || status.is_informational();
    let body = if no_body {
        Bytes::new()
    } else if req.method() == Method::HEAD {
        // Headers only, but with the length the body would have had.
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(json.len()));
        Bytes::new()
    } else {
        Bytes::from(json)
    };
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    res
}

/// Applies every `X-Echo-Set-Header: Name: value, Other: value` request header to the
/// response; a name given twice gets its values joined with `,`.
fn set_echo_headers(response: &mut HeaderMap, request: &HeaderMap) {
    for list in request.get_all("x-echo-set-header") {
        let Ok(list) = list.to_str() else { continue };
        for pair in list.split(',') {
            let pair = pair.trim();
            let (name, value) = pair.split_once(':').unwrap_or((pair, ""));
            let (name, value) = (name.trim(), value.trim());
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            if UNSETTABLE_HEADERS.contains(&name) {
                continue;
            }
            let joined = match response.get(&name).and_then(|v| v.to_str().ok()) {
                Some(existing) => format!("{existing},{value}"),
                None => value.to_owned(),
            };
            if let Ok(value) = HeaderValue::from_str(&joined) {
                response.insert(name, value);
            }
        }
    }
}

/// Answers a websocket handshake with 101 and echoes messages on the upgraded
/// connection in a task of its own.
fn websocket_upgrade(req: &mut Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return json_error(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    if req.method() != Method::GET {
        return json_error(
            StatusCode::BAD_REQUEST,
            "a websocket handshake must be a GET",
        );
    }
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    if !version_ok {
        let mut res = json_error(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported Sec-WebSocket-Version",
        );
        res.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return res;
    }
    let accept = derive_accept_key(key.as_bytes());
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "bad accept key");
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                echo_websocket(ws).await;
            }
            Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
        }
    });
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = res.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    res
}

/// Sends every text and binary message back until the peer closes; pings are answered
/// and the close handshake is completed by tungstenite itself.
async fn echo_websocket<S>(mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = ws.next().await {
        match message {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                if let Err(error) = ws.send(message).await {
                    tracing::debug!(%error, "websocket send failed");
                    break;
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "websocket read failed");
                break;
            }
        }
    }
}
