//! Tests of the `trellis-echo` binary and the helpers in `trellis_echo`.
//!
//! Each server test spawns the built binary with every port set to 0, reads its
//! `listening ...` lines, talks to it over real sockets (HTTP/1.1, h2c prior knowledge,
//! WebSocket, HTTPS with rcgen certificates) and kills it when the guard drops.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::http::response::Parts;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use trellis_echo::{
    Config, EchoContext, canonical_header_name, parse_go_duration, pem_encode, query_param,
};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Every environment variable the server reads, cleared before each spawn.
const ECHO_ENV: &[&str] = &[
    "ECHO_ADDRESS",
    "HTTP_PORT",
    "H2C_PORT",
    "HTTPS_PORT",
    "TLS_SERVER_CERT",
    "TLS_SERVER_PRIVKEY",
    "TLS_CLIENT_CACERTS",
    "POD_NAME",
    "NAMESPACE",
    "SERVICE_NAME",
    "INGRESS_NAME",
];

/// A running `trellis-echo`; killed when dropped.
struct Echo {
    child: Child,
    http: SocketAddr,
    h2c: SocketAddr,
    https: Option<SocketAddr>,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Echo {
    fn spawn(env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trellis-echo"));
        for name in ECHO_ENV {
            cmd.env_remove(name);
        }
        cmd.env("HTTP_PORT", "0")
            .env("H2C_PORT", "0")
            .env("HTTPS_PORT", "0");
        for (name, value) in env {
            cmd.env(name, value);
        }
        let want_https = env.iter().any(|(name, _)| *name == "TLS_SERVER_CERT");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn trellis-echo");
        let stdout = child.stdout.take().expect("piped stdout");

        // Drain stdout for the whole life of the child so it never blocks on a full pipe.
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("listening ") {
                    let _ = tx.send(line.clone());
                }
                collected.lock().expect("stdout lock").push(line);
            }
        });

        let unbound: SocketAddr = "0.0.0.0:0".parse().expect("address");
        let mut echo = Echo {
            child,
            http: unbound,
            h2c: unbound,
            https: None,
            stdout: lines,
        };
        let expected = if want_https { 3 } else { 2 };
        let deadline = Instant::now() + TIMEOUT;
        let (mut http, mut h2c) = (None, None);
        for _ in 0..expected {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("trellis-echo printed its listening lines");
            let mut words = line.split_whitespace().skip(1);
            let kind = words.next().expect("listener kind");
            let addr: SocketAddr = words.next().expect("address").parse().expect("ip:port");
            assert_eq!(addr.ip().to_string(), "127.0.0.1", "{line}");
            assert_ne!(addr.port(), 0, "{line}");
            match kind {
                "http" => http = Some(addr),
                "h2c" => h2c = Some(addr),
                "https" => echo.https = Some(addr),
                other => panic!("unexpected listener {other}"),
            }
        }
        echo.http = http.expect("http listener");
        echo.h2c = h2c.expect("h2c listener");
        assert_eq!(echo.https.is_some(), want_https);
        echo
    }

    /// Waits until a stdout line contains `needle`.
    fn assert_logged(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self
                .stdout
                .lock()
                .expect("stdout lock")
                .iter()
                .any(|l| l.contains(needle))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no stdout line contains {needle:?}: {:?}",
                self.stdout.lock().expect("stdout lock")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn within<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, fut).await.expect("timed out")
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// Sends `req` over a fresh HTTP/1.1 connection on `io`.
async fn send_h1<I>(io: I, req: Request<Full<Bytes>>) -> (Parts, Bytes)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    within(async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(conn);
        let res = sender.send_request(req).await.expect("HTTP/1.1 response");
        let (parts, body) = res.into_parts();
        (
            parts,
            body.collect().await.expect("response body").to_bytes(),
        )
    })
    .await
}

/// Sends `req` over a fresh HTTP/2 (prior knowledge) connection on `io`.
async fn send_h2<I>(io: I, req: Request<Full<Bytes>>) -> (Parts, Bytes)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    within(async {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        let res = sender.send_request(req).await.expect("HTTP/2 response");
        let (parts, body) = res.into_parts();
        (
            parts,
            body.collect().await.expect("response body").to_bytes(),
        )
    })
    .await
}

async fn connect(addr: SocketAddr) -> TcpStream {
    within(TcpStream::connect(addr)).await.expect("connect")
}

/// GET `path` over HTTP/1.1 on `addr`.
async fn h1_get(addr: SocketAddr, path: &str) -> (Parts, Bytes) {
    send_h1(connect(addr).await, get(path)).await
}

fn json(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get(name)
        .map(|v| v.to_str().expect("ASCII header value"))
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn echoes_request_fields_headers_and_context() {
    let echo = Echo::spawn(&[
        ("POD_NAME", "pod-1"),
        ("NAMESPACE", "ns-1"),
        ("SERVICE_NAME", "svc-1"),
    ]);
    let req = Request::get("/some/path?a=b&c=d")
        .header("host", "echo.example.com")
        .header("x-foo-bar", "1")
        .header("x-foo-bar", "2")
        .header("accept", "text/plain, application/json")
        .header("X-Echo-Set-Header", "X-Foo: bar, X-Baz: qux")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, body) = send_h1(connect(echo.http).await, req).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(header(&parts, "content-type"), Some("application/json"));
    assert_eq!(header(&parts, "x-foo"), Some("bar"));
    assert_eq!(header(&parts, "x-baz"), Some("qux"));

    let body = json(&body);
    assert_eq!(body["path"], "/some/path?a=b&c=d");
    assert_eq!(body["host"], "echo.example.com");
    assert_eq!(body["method"], "GET");
    assert_eq!(body["proto"], "HTTP/1.1");
    assert_eq!(body["pod"], "pod-1");
    assert_eq!(body["namespace"], "ns-1");
    assert_eq!(body["service"], "svc-1");
    assert_eq!(body["ingress"], "");
    assert_eq!(body["httpPort"], echo.http.port().to_string());
    assert!(body.get("tls").is_none(), "no tls on plain HTTP: {body}");

    let headers = body["headers"].as_object().unwrap();
    assert_eq!(headers["X-Foo-Bar"], serde_json::json!(["1", "2"]));
    assert_eq!(
        headers["Accept"],
        serde_json::json!(["text/plain, application/json"])
    );
    assert_eq!(
        headers["X-Echo-Set-Header"],
        serde_json::json!(["X-Foo: bar, X-Baz: qux"])
    );
    assert!(!headers.contains_key("Host"), "Host is not echoed: {body}");
    assert!(
        headers.keys().all(|k| *k == canonical_header_name(k)),
        "header names are canonical: {body}"
    );

    echo.assert_logged("Echoing back request made to /some/path?a=b&c=d to client (127.0.0.1:");
}

#[tokio::test]
async fn drains_request_bodies_and_answers_head_with_headers_only() {
    let echo = Echo::spawn(&[]);
    let io = TokioIo::new(connect(echo.h2c).await);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);

    let payload = Bytes::from(vec![b'x'; 256 * 1024]);
    let post = Request::post("/upload")
        .header("host", "upload.test")
        .body(Full::new(payload))
        .unwrap();
    let res = within(sender.send_request(post)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = json(&res.into_body().collect().await.unwrap().to_bytes());
    assert_eq!(body["method"], "POST");
    assert_eq!(
        body["headers"]["Content-Length"],
        serde_json::json!(["262144"])
    );
    assert_eq!(body["httpPort"], echo.h2c.port().to_string());

    // HEAD on the same keep-alive connection: headers, no body.
    let head = Request::head("/head")
        .header("host", "upload.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = within(sender.send_request(head)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/json"
    );
    let length: usize = res.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(length > 0);
    assert!(
        res.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );

    // The connection is still usable afterwards.
    let again = Request::get("/after-head")
        .header("host", "upload.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = within(sender.send_request(again)).await.unwrap();
    let body = json(&res.into_body().collect().await.unwrap().to_bytes());
    assert_eq!(body["path"], "/after-head");
}

#[tokio::test]
async fn status_and_health_paths() {
    let echo = Echo::spawn(&[]);

    let (parts, body) = h1_get(echo.http, "/status/503").await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(&body)["path"], "/status/503");

    let (parts, body) = h1_get(echo.http, "/status/418").await;
    assert_eq!(parts.status.as_u16(), 418);
    assert_eq!(json(&body)["method"], "GET");

    let (parts, body) = h1_get(echo.http, "/status/204").await;
    assert_eq!(parts.status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());

    let (parts, _) = h1_get(echo.http, "/status/abc").await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST);
    let (parts, _) = h1_get(echo.http, "/status/5030").await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST);

    let (parts, body) = h1_get(echo.http, "/health").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, "OK");

    echo.assert_logged("Echoing back request made to /status/503 to client (127.0.0.1:");
}

#[tokio::test]
async fn delay_query_parameter_waits() {
    let echo = Echo::spawn(&[]);
    let started = Instant::now();
    let (parts, body) = h1_get(echo.http, "/slow?delay=300ms").await;
    let elapsed = started.elapsed();
    assert_eq!(parts.status, StatusCode::OK);
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert_eq!(json(&body)["path"], "/slow?delay=300ms");

    let started = Instant::now();
    let (parts, _) = h1_get(echo.http, "/status/503?delay=0.2s").await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() >= Duration::from_millis(200));

    let (parts, body) = h1_get(echo.http, "/?delay=soon").await;
    assert_eq!(parts.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(json(&body)["message"].as_str().unwrap().contains("soon"));
}

#[tokio::test]
async fn retry_fails_with_the_response_code_until_succeed_after() {
    let echo = Echo::spawn(&[]);

    let uuid = unique("retry");
    let path = format!("/retry/thing?uuid={uuid}&succeedAfter=2&responseCode=503");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (parts, _) = h1_get(echo.http, &path).await;
        statuses.push(parts.status.as_u16());
    }
    assert_eq!(statuses, [503, 503, 200, 200]);

    // Without uuid or succeedAfter the simulation refuses the request.
    let (parts, _) = h1_get(echo.http, "/retry/no-uuid?succeedAfter=5").await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn retry_without_a_response_code_resets_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = Echo::spawn(&[]);
    let uuid = unique("retry-reset");
    let request = format!(
        "GET /retry/x?uuid={uuid}&succeedAfter=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    // First attempt: no answer, the connection is reset.
    let mut stream = tokio::net::TcpStream::connect(echo.http).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let read = stream.read_to_end(&mut buf).await;
    assert!(
        matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
            || buf.is_empty(),
        "expected a reset, got {read:?} and {} bytes",
        buf.len()
    );
    // Second attempt succeeds.
    let mut stream = tokio::net::TcpStream::connect(echo.http).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn h2c_prior_knowledge_on_both_ports() {
    let echo = Echo::spawn(&[("NAMESPACE", "h2-ns")]);
    for addr in [echo.http, echo.h2c] {
        let req = Request::get("http://h2.example.com/h2?x=1")
            .header("x-h2-test", "yes")
            .header("x-echo-set-header", "X-From-H2: ok")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (parts, body) = send_h2(connect(addr).await, req).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(parts.version, hyper::Version::HTTP_2);
        assert_eq!(header(&parts, "x-from-h2"), Some("ok"));
        let body = json(&body);
        assert_eq!(body["proto"], "HTTP/2.0");
        assert_eq!(body["path"], "/h2?x=1");
        assert_eq!(body["host"], "h2.example.com");
        assert_eq!(body["namespace"], "h2-ns");
        assert_eq!(body["headers"]["X-H2-Test"], serde_json::json!(["yes"]));
        assert_eq!(body["httpPort"], addr.port().to_string());
    }
    // HTTP/1.1 works on the h2c port too.
    let (_, body) = h1_get(echo.h2c, "/plain").await;
    assert_eq!(json(&body)["proto"], "HTTP/1.1");
}

#[tokio::test]
async fn websocket_round_trip() {
    let echo = Echo::spawn(&[]);
    for path in ["/ws", "/any/other/path"] {
        let url = format!("ws://{}{path}", echo.http);
        let (mut ws, res) = within(tokio_tungstenite::client_async(
            url.as_str(),
            connect(echo.http).await,
        ))
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);

        within(ws.send(Message::text("hello"))).await.unwrap();
        let reply = within(ws.next()).await.unwrap().unwrap();
        assert_eq!(reply, Message::text("hello"));

        within(ws.send(Message::binary(vec![0u8, 1, 2, 255])))
            .await
            .unwrap();
        let reply = within(ws.next()).await.unwrap().unwrap();
        assert_eq!(reply, Message::binary(vec![0u8, 1, 2, 255]));

        within(ws.close(None)).await.unwrap();
        // The server completes the close handshake.
        while let Some(message) = within(ws.next()).await {
            match message {
                Ok(Message::Close(_)) => {}
                Ok(other) => panic!("unexpected message after close: {other:?}"),
                Err(_) => break,
            }
        }
        echo.assert_logged(&format!("Echoing back request made to {path} to client"));
    }

    // A plain GET of /ws is refused rather than echoed.
    let (parts, _) = h1_get(echo.http, "/ws").await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST);
}

/// A self-signed server certificate for `localhost`, written as PEM into `dir`.
fn write_server_cert(dir: &Path) -> (String, String, CertificateDer<'static>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert_path = dir.join("server.crt");
    let key_path = dir.join("server.key");
    std::fs::write(&cert_path, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key");
    (
        cert_path.to_str().expect("UTF-8 path").to_owned(),
        key_path.to_str().expect("UTF-8 path").to_owned(),
        certified.cert.der().clone(),
    )
}

fn client_config(
    server_cert: CertificateDer<'static>,
    alpn: &[&[u8]],
    client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_cert).expect("root certificate");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots);
    let mut config = match client_auth {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let name = ServerName::try_from("localhost").expect("server name");
    within(connector.connect(name, connect(addr).await))
        .await
        .expect("TLS handshake")
}

#[tokio::test]
async fn https_reports_tls_details() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = write_server_cert(dir.path());
    let echo = Echo::spawn(&[
        ("TLS_SERVER_CERT", &cert),
        ("TLS_SERVER_PRIVKEY", &key),
        ("POD_NAME", "tls-pod"),
    ]);
    let https = echo.https.unwrap();

    // HTTP/2 negotiated with ALPN.
    let connector = client_config(der.clone(), &[b"h2", b"http/1.1"], None);
    let stream = tls_connect(&connector, https).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let req = Request::get("https://localhost/secure?q=1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, body) = send_h2(stream, req).await;
    assert_eq!(parts.status, StatusCode::OK);
    let body = json(&body);
    assert_eq!(body["proto"], "HTTP/2.0");
    assert_eq!(body["path"], "/secure?q=1");
    assert_eq!(body["pod"], "tls-pod");
    assert_eq!(body["httpPort"], https.port().to_string());
    let tls = &body["tls"];
    assert_eq!(tls["serverName"], "localhost");
    assert_eq!(tls["version"], "TLSv1.3");
    assert_eq!(tls["negotiatedProtocol"], "h2");
    assert!(
        tls["cipherSuite"].as_str().unwrap().starts_with("TLS_"),
        "{tls}"
    );
    assert_eq!(tls["peerCertificates"], serde_json::json!([]));

    // HTTP/1.1 negotiated with ALPN.
    let connector = client_config(der, &[b"http/1.1"], None);
    let stream = tls_connect(&connector, https).await;
    let req = Request::get("/one")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (_, body) = send_h1(stream, req).await;
    let body = json(&body);
    assert_eq!(body["proto"], "HTTP/1.1");
    assert_eq!(body["tls"]["negotiatedProtocol"], "http/1.1");
    assert_eq!(body["tls"]["serverName"], "localhost");

    // Plain HTTP listeners are still there and report no TLS.
    let (_, body) = h1_get(echo.http, "/plain").await;
    assert!(json(&body).get("tls").is_none());
}

#[tokio::test]
async fn https_echoes_verified_client_certificates() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    let dir = tempfile::tempdir().unwrap();
    let (cert, key, server_der) = write_server_cert(dir.path());

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "trellis test client ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca_path = dir.path().join("client-ca.crt");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "trellis test client");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();
    let client_der = client_cert.der().clone();
    let client_key_der =
        PrivateKeyDer::from_pem_slice(client_key.serialize_pem().as_bytes()).unwrap();

    let echo = Echo::spawn(&[
        ("TLS_SERVER_CERT", &cert),
        ("TLS_SERVER_PRIVKEY", &key),
        ("TLS_CLIENT_CACERTS", ca_path.to_str().unwrap()),
    ]);
    let https = echo.https.unwrap();

    let connector = client_config(
        server_der.clone(),
        &[b"h2"],
        Some((vec![client_der.clone()], client_key_der)),
    );
    let stream = tls_connect(&connector, https).await;
    let req = Request::get("https://localhost/mtls")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (_, body) = send_h2(stream, req).await;
    let body = json(&body);
    let peers = body["tls"]["peerCertificates"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{body}");
    let echoed = CertificateDer::from_pem_slice(peers[0].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(echoed, client_der);

    // Clients without a certificate are still served.
    let connector = client_config(server_der, &[b"h2"], None);
    let stream = tls_connect(&connector, https).await;
    let req = Request::get("https://localhost/anonymous")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, body) = send_h2(stream, req).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(
        json(&body)["tls"]["peerCertificates"],
        serde_json::json!([])
    );
}

#[tokio::test]
async fn bad_connections_do_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = write_server_cert(dir.path());
    let echo = Echo::spawn(&[("TLS_SERVER_CERT", &cert), ("TLS_SERVER_PRIVKEY", &key)]);

    for addr in [echo.http, echo.h2c, echo.https.unwrap()] {
        let mut stream = connect(addr).await;
        stream
            .write_all(b"\x16\x03garbage that is no protocol at all\r\n\r\n")
            .await
            .unwrap();
        let mut sink = Vec::new();
        let _ = within(stream.read_to_end(&mut sink)).await;
    }
    // A connection that closes mid-request.
    let mut stream = connect(echo.http).await;
    stream
        .write_all(b"POST /cut HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        .await
        .unwrap();
    drop(stream);
    // A websocket handshake with a version the server does not speak.
    let mut stream = connect(echo.http).await;
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = [0u8; 12];
    within(stream.read_exact(&mut head)).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 426");

    let (parts, _) = h1_get(echo.http, "/still-alive").await;
    assert_eq!(parts.status, StatusCode::OK);
    let connector = client_config(der, &[b"http/1.1"], None);
    let stream = tls_connect(&connector, echo.https.unwrap()).await;
    let req = Request::get("/still-alive")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, _) = send_h1(stream, req).await;
    assert_eq!(parts.status, StatusCode::OK);
}

#[test]
fn go_durations() {
    let ms = Duration::from_millis;
    assert_eq!(parse_go_duration("1s").unwrap(), ms(1000));
    assert_eq!(parse_go_duration("500ms").unwrap(), ms(500));
    assert_eq!(parse_go_duration("1.5s").unwrap(), ms(1500));
    assert_eq!(parse_go_duration(".5s").unwrap(), ms(500));
    assert_eq!(parse_go_duration("1m30s").unwrap(), ms(90_000));
    assert_eq!(parse_go_duration("1h").unwrap(), ms(3_600_000));
    assert_eq!(parse_go_duration("+2s").unwrap(), ms(2000));
    assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
    assert_eq!(parse_go_duration("-3s").unwrap(), Duration::ZERO);
    assert_eq!(
        parse_go_duration("10us").unwrap(),
        Duration::from_micros(10)
    );
    assert_eq!(
        parse_go_duration("10µs").unwrap(),
        Duration::from_micros(10)
    );
    assert_eq!(parse_go_duration("7ns").unwrap(), Duration::from_nanos(7));
    for bad in [
        "",
        "1",
        "s",
        "1x",
        "1.s.",
        "abc",
        "-",
        "1s2",
        "99999999999999h",
    ] {
        assert!(parse_go_duration(bad).is_err(), "{bad:?} should not parse");
    }
}

#[test]
fn go_canonical_header_names() {
    assert_eq!(canonical_header_name("x-foo-bar"), "X-Foo-Bar");
    assert_eq!(canonical_header_name("USER-AGENT"), "User-Agent");
    assert_eq!(canonical_header_name("accept"), "Accept");
    assert_eq!(canonical_header_name("x-b3-traceid"), "X-B3-Traceid");
    assert_eq!(canonical_header_name("-x"), "-X");
    assert_eq!(canonical_header_name("bad header"), "bad header");
}

#[test]
fn query_parameters() {
    let query = "uuid=a%20b&succeedAfter=3&delay=1s&empty&plus=x+y&dup=1&dup=2";
    assert_eq!(query_param(query, "uuid").as_deref(), Some("a b"));
    assert_eq!(query_param(query, "succeedAfter").as_deref(), Some("3"));
    assert_eq!(query_param(query, "delay").as_deref(), Some("1s"));
    assert_eq!(query_param(query, "empty").as_deref(), Some(""));
    assert_eq!(query_param(query, "plus").as_deref(), Some("x y"));
    assert_eq!(query_param(query, "dup").as_deref(), Some("1"));
    assert_eq!(query_param(query, "missing"), None);
    assert_eq!(query_param("", "x"), None);
}

#[test]
fn pem_encoding_round_trips() {
    for len in [0usize, 1, 2, 3, 47, 48, 49, 1000] {
        let der: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        let pem = pem_encode("CERTIFICATE", &der);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
        assert!(pem.lines().all(|line| line.len() <= 64));
        if len > 0 {
            let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(back.as_ref(), der.as_slice());
        }
    }
}

#[test]
fn config_from_environment() {
    let addr = "127.0.0.1".parse().unwrap();
    let defaults = Config::from_lookup(addr, |_| None).unwrap();
    assert_eq!(
        (defaults.http_port, defaults.h2c_port, defaults.https_port),
        (3000, 3001, 8443)
    );
    assert_eq!(defaults.tls, None);
    assert_eq!(defaults.context, EchoContext::default());

    let env = |name: &str| {
        Some(
            match name {
                "HTTP_PORT" => "0",
                "H2C_PORT" => "",
                "TLS_SERVER_CERT" => "/c.pem",
                "POD_NAME" => "p",
                "INGRESS_NAME" => "i",
                _ => return None,
            }
            .to_owned(),
        )
    };
    let config = Config::from_lookup(addr, env).unwrap();
    assert_eq!((config.http_port, config.h2c_port), (0, 3001));
    assert_eq!(config.tls, None, "HTTPS needs both cert and key");
    assert_eq!(config.context.pod, "p");
    assert_eq!(config.context.ingress, "i");

    let bad = Config::from_lookup(addr, |name| (name == "HTTPS_PORT").then(|| "x".to_owned()));
    assert!(bad.is_err());
}

/// A one-shot HTTP server: answers the first request with 204 and returns its head.
fn capture_one_request() -> (SocketAddr, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        stream
            .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        String::from_utf8_lossy(&head).to_lowercase()
    });
    (addr, handle)
}

#[tokio::test]
async fn call_url_is_called_with_the_trace_context_unless_told_not_to_forward_it() {
    for forward in ["true", "false"] {
        let (upstream, seen) = capture_one_request();
        let url = format!("http://{upstream}/next");
        let echo = Echo::spawn(&[("CALL_URL", &url), ("FORWARD_TRACE_CONTEXT", forward)]);
        let req = Request::get("/")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .header("x-request-id", "r-1")
            .header("x-other", "not forwarded")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (parts, _) = send_h1(connect(echo.http).await, req).await;
        assert_eq!(header(&parts, "x-echo-call-status"), Some("204"));
        let head = seen.join().unwrap();
        assert!(head.starts_with("get /next http/1.1"), "{head}");
        assert!(!head.contains("x-other"), "{head}");
        let carried = head
            .contains("traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            && head.contains("x-request-id: r-1");
        assert_eq!(
            carried,
            forward == "true",
            "FORWARD_TRACE_CONTEXT={forward}: {head}"
        );
    }
    let bad = Config::from_lookup("127.0.0.1".parse().unwrap(), |name| match name {
        "CALL_URL" => Some("http://x/".to_owned()),
        "FORWARD_TRACE_CONTEXT" => Some("maybe".to_owned()),
        _ => None,
    });
    assert!(bad.is_err());
}
