//! Helpers the batch C tests need beyond the shared DSL, each modelled on an upstream helper:
//! request IDs in the query (`AddRequestIDQueryParam`), the `Host` a Go client sends
//! (`CalculateHost`), timeout status equivalence (`IsTimeoutError`), HTTP/2 prior-knowledge
//! (h2c) requests, HTTPS requests whose server name is checked with Go's rules (`*.org`
//! matches `example.org`), a websocket echo round trip, and the percentage-mirror
//! distribution check; plus shorthands shared by the batch's tests.

use crate::conformance::checks::{GatewayRef, Nn, cond, resolve};
use crate::conformance::http::{
    self, Captured, ExpectedResponse, RedirectRequest, Request, Response, await_convergence,
    compare, is_redirect, parse_location, round_trip, wire_request,
};
use crate::conformance::{INFRA_NS, Suite};
use anyhow::{Context, anyhow, bail};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Header pairs from string slices (upstream's `map[string]string` literals).
pub fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Names from string slices (upstream's `AbsentHeaders` literals).
pub fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Upstream's usual preamble: `GatewayAndHTTPRoutesMustBeAccepted` for one route, then
/// `HTTPRouteMustHaveResolvedRefsConditionsTrue`. Returns the Gateway's `ip:port`.
pub fn accepted_with_resolved_refs(
    s: &mut Suite,
    gw: &GatewayRef,
    route: &Nn,
) -> anyhow::Result<String> {
    let addr = s.gateway_and_http_routes_must_be_accepted(gw, std::slice::from_ref(route))?;
    s.http_route_must_have_condition(route, &gw.nn, cond("ResolvedRefs", "True", "ResolvedRefs"))?;
    Ok(addr)
}

/// A redirect case in the infra namespace: `GET path` (redirects not followed) answers `status`
/// with a `Location` matching `redirect` (empty fields take upstream's defaults).
pub fn redirect_case(path: &str, status: u16, redirect: RedirectRequest) -> ExpectedResponse {
    ExpectedResponse {
        request: Request {
            path: path.into(),
            unfollow_redirect: true,
            ..Default::default()
        },
        response: Response {
            status_code: status,
            ..Default::default()
        },
        redirect_request: Some(redirect),
        namespace: INFRA_NS.into(),
        ..Default::default()
    }
}

/// Runs cases in order with `Suite::expect` (upstream runs them as parallel subtests).
pub fn expect_all(s: &mut Suite, gateway: &str, cases: &[ExpectedResponse]) -> anyhow::Result<()> {
    for (i, case) in cases.iter().enumerate() {
        s.expect(gateway, case)
            .with_context(|| format!("case {}", case.name(i)))?;
    }
    Ok(())
}

/// Upstream's query parameter carrying a request ID.
pub const REQUEST_ID_QUERY_PARAM: &str = "gateway-api-conformance-request-id";

/// A random version-4 UUID string (upstream uses `uuid.NewString()` for request IDs).
pub fn new_uuid() -> String {
    let mut bytes = [0u8; 16];
    for chunk in bytes.chunks_mut(4) {
        let r = crate::harness::rand_u32().to_be_bytes();
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

/// Upstream's `ExpectedResponse.AddRequestIDQueryParam`: puts the request ID in the request's
/// query, and in the expected backend request's (which takes the request's path when it has
/// none), so that echo logs of this very request can be told apart.
pub fn add_request_id_query_param(expected: &mut ExpectedResponse, request_id: &str) {
    let path = set_query_param(&expected.request.path, REQUEST_ID_QUERY_PARAM, request_id);
    if let Some(er) = expected.expected_request.as_mut() {
        er.path = if er.path.is_empty() {
            path.clone()
        } else {
            set_query_param(&er.path, REQUEST_ID_QUERY_PARAM, request_id)
        };
    }
    expected.request.path = path;
}

/// Upstream's `CalculateHost`: the `Host` a Go client sends to a Gateway address, without the
/// port when it is the scheme's default, with it otherwise.
pub fn calculate_host(gateway: &str, scheme: &str) -> String {
    match gateway.rsplit_once(':') {
        Some((host, port))
            if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") =>
        {
            host.to_string()
        }
        _ => gateway.to_string(),
    }
}

/// Acceptable status codes as upstream's `CompareRoundTrip` treats them: when any expected code
/// is a timeout (408 or 504), any timeout code is accepted (`IsTimeoutError`).
pub fn with_timeout_equivalents(codes: &[u16]) -> Vec<u16> {
    let mut out = codes.to_vec();
    if codes.iter().any(|c| matches!(c, 408 | 504)) {
        for c in [408, 504] {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

/// Sends one request on an established connection with hyper (HTTP/1.1, or HTTP/2 with prior
/// knowledge) and captures the answer like `http::round_trip` does. `authority` becomes the
/// `Host` header (HTTP/1.1) or `:authority` (HTTP/2).
async fn hyper_exchange<I>(
    io: I,
    http2: bool,
    authority: &str,
    req: &http::Request,
) -> anyhow::Result<Captured>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let method = if req.method.is_empty() {
        "GET"
    } else {
        &req.method
    };
    let mut builder = hyper::Request::builder().method(method);
    builder = if http2 {
        builder.uri(format!("http://{authority}{}", req.path))
    } else {
        builder.uri(req.path.as_str()).header("host", authority)
    };
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let request = builder.body(http_body_util::Full::new(bytes::Bytes::from(
        req.body.clone(),
    )))?;
    let response = if http2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .context("HTTP/2 handshake")?;
        tokio::spawn(conn);
        sender.send_request(request).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(conn);
        sender.send_request(request).await?
    };
    let status = response.status().as_u16();
    let protocol = format!("{:?}", response.version());
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in response.headers() {
        headers
            .entry(name.as_str().to_ascii_lowercase())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let body = response.into_body().collect().await?.to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
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

/// Runs an async exchange on a one-off runtime, within `timeout`.
fn block_on_with_timeout<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::time::timeout(timeout, f)
            .await
            .map_err(|_| anyhow!("request timed out after {timeout:?}"))?
    })
}

/// Sends one request with HTTP/2 prior knowledge (h2c) on a new connection, as upstream's
/// `H2C_PRIOR_KNOWLEDGE` round tripper does; `authority` is the `:authority` to send.
pub fn h2c_round_trip(
    addr: SocketAddr,
    authority: &str,
    req: &http::Request,
    timeout: Duration,
) -> anyhow::Result<Captured> {
    block_on_with_timeout(timeout, async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        hyper_exchange(hyper_util::rt::TokioIo::new(tcp), true, authority, req).await
    })
}

/// `MakeRequestAndExpectEventuallyConsistentResponse` with an h2c prior-knowledge request:
/// the expectation must hold three times in a row within the consistency deadline.
pub fn expect_h2c(s: &mut Suite, gateway: &str, expected: &ExpectedResponse) -> anyhow::Result<()> {
    let addr = resolve(gateway, false)?;
    let authority = if expected.request.host.is_empty() {
        calculate_host(gateway, "http")
    } else {
        expected.request.host.clone()
    };
    let req = wire_request(expected);
    let timeouts = s.timeouts;
    let name = expected.name(0);
    await_convergence(
        timeouts.required_successes,
        timeouts.max_time_to_consistency,
        |_| {
            let captured = h2c_round_trip(addr, &authority, &req, timeouts.request)?;
            compare("http", &captured, expected)
        },
    )
    .with_context(|| format!("{name}: h2c {} {}", req.method, req.path))?;
    s.logf(format!("passed: {name} (h2c prior knowledge)"));
    Ok(())
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

/// Sends one HTTPS (HTTP/1.1) request on a new connection with SNI `server_name`, trusting
/// the PEM certificates in `trusted_pem` and matching names as Go does (upstream's
/// `MakeTLSRequestAndExpectEventuallyConsistentResponse` client).
pub fn tls_round_trip_go_names(
    addr: SocketAddr,
    req: &http::Request,
    server_name: &str,
    trusted_pem: &str,
    timeout: Duration,
) -> anyhow::Result<Captured> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(trusted_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(GoNameVerifier(webpki)))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .context("invalid server name")?;
    let host = if req.host.is_empty() {
        addr.ip().to_string()
    } else {
        req.host.clone()
    };
    block_on_with_timeout(timeout, async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        hyper_exchange(hyper_util::rt::TokioIo::new(tls), false, &host, req).await
    })
}

/// `MakeTLSRequestAndExpectEventuallyConsistentResponse` without a client certificate, with
/// Go's host name matching (see [`tls_round_trip_go_names`]).
pub fn expect_tls_go_names(
    s: &mut Suite,
    gateway: &str,
    expected: &ExpectedResponse,
    server_name: &str,
    trusted_pem: &str,
) -> anyhow::Result<()> {
    let addr = resolve(gateway, true)?;
    let req = wire_request(expected);
    let timeouts = s.timeouts;
    let name = expected.name(0);
    await_convergence(
        timeouts.required_successes,
        timeouts.max_time_to_consistency,
        |_| {
            let captured =
                tls_round_trip_go_names(addr, &req, server_name, trusted_pem, timeouts.request)?;
            compare("https", &captured, expected)
        },
    )
    .with_context(|| format!("{name}: https {} {}", req.method, req.path))?;
    s.logf(format!("passed: {name} (https)"));
    Ok(())
}

/// One websocket session like upstream's `HTTPRouteBackendProtocolWebSocket` probe: dials
/// `ws://<gateway>/ws` with the given `Origin`, sends a text message and a binary message, and
/// checks that each comes back unchanged.
pub fn websocket_echo(gateway: &str, origin: &str, timeout: Duration) -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
    let addr = resolve(gateway, false)?;
    let stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!("ws://{gateway}/ws").into_client_request()?;
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

/// How many times the pods of `namespace/deployment` logged a request to exactly `path`
/// (upstream's `GetMirrorLogRegexp` matches).
pub fn mirror_log_count(s: &Suite, namespace: &str, deployment: &str, path: &str) -> usize {
    let needle = format!("Echoing back request made to {path} to client");
    s.cluster
        .pods(namespace, deployment)
        .iter()
        .map(|p| s.cluster.pod_log(p).matches(&needle).count())
        .sum()
}

/// Upstream's percentage-mirror distribution check (`HTTPRouteRequestPercentageMirror`): up to
/// 5 times, a fresh request ID goes into the path and 500 requests (10 at a time, each retried
/// until it meets `expected` once) are sent; every mirror backend must then have logged
/// `500·p ± 3·√(500·p·(1−p))` of them, `p` being its `percent`.
///
/// Upstream reads the logs right after the requests return, through the Kubernetes log API; the
/// local pods' logs are read once their counts stop growing (mirrors are sent asynchronously).
pub fn expect_mirrored_percentage(
    s: &mut Suite,
    gateway: &str,
    expected: &ExpectedResponse,
) -> anyhow::Result<()> {
    const CONCURRENT_REQUESTS: usize = 10;
    const TOTAL_REQUESTS: usize = 500;
    const NUM_DISTRIBUTION_CHECKS: usize = 5;
    const TOLERANCE_STD_DEVS: f64 = 3.0;
    for m in &expected.mirrored_to {
        if m.name.is_empty() || m.percent.is_none() {
            bail!("mirrored backend without a name or percent: {m:?}");
        }
    }
    let addr = resolve(gateway, false)?;
    let timeouts = s.timeouts;
    let mut expected = expected.clone();
    let mut last = String::new();
    for check in 1..=NUM_DISTRIBUTION_CHECKS {
        add_request_id_query_param(&mut expected, &new_uuid());
        let req = wire_request(&expected);
        let counter = AtomicUsize::new(0);
        let error = Mutex::new(None::<String>);
        std::thread::scope(|scope| {
            for _ in 0..CONCURRENT_REQUESTS {
                scope.spawn(|| {
                    while counter.fetch_add(1, Ordering::Relaxed) < TOTAL_REQUESTS {
                        let result = await_convergence(1, timeouts.max_time_to_consistency, |_| {
                            let captured = round_trip(addr, &req, None, timeouts.request)?;
                            compare("http", &captured, &expected)
                        });
                        if let Err(e) = result
                            && let Ok(mut slot) = error.lock()
                        {
                            slot.get_or_insert(format!("{e:#}"));
                        }
                    }
                });
            }
        });
        if let Some(e) = error.into_inner().unwrap_or_default() {
            bail!("request {} failed: {e}", req.path);
        }
        let mut counts = Vec::new();
        for m in &expected.mirrored_to {
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut count = mirror_log_count(s, &m.namespace, &m.name, &expected.request.path);
            loop {
                std::thread::sleep(Duration::from_millis(300));
                let again = mirror_log_count(s, &m.namespace, &m.name, &expected.request.path);
                if again == count || Instant::now() > deadline {
                    count = again;
                    break;
                }
                count = again;
            }
            counts.push((m, count));
        }
        let mut problems = Vec::new();
        let mut observed = Vec::new();
        for (m, count) in counts {
            let p = f64::from(m.percent.unwrap_or_default()) / 100.0;
            let n = TOTAL_REQUESTS as f64;
            let want = n * p;
            let margin = TOLERANCE_STD_DEVS * (n * p * (1.0 - p)).sqrt();
            let (min, max) = (want - margin, want + margin);
            let actual = count as f64;
            observed.push(format!(
                "{}: {actual} (want {want} in [{min:.1}, {max:.1}])",
                m.name
            ));
            if actual < min || actual > max {
                problems.push(format!(
                    "pod {} did not meet the mirroring percentage within tolerance: expected between {min:.1} and {max:.1}, got {actual}",
                    m.name
                ));
            }
        }
        if problems.is_empty() {
            s.logf(format!(
                "mirror distribution held on check {check}: {}",
                observed.join("; ")
            ));
            return Ok(());
        }
        last = problems.join("; ");
        s.logf(format!(
            "traffic distribution check failed ({check}/{NUM_DISTRIBUTION_CHECKS}): {last}"
        ));
        std::thread::sleep(Duration::from_secs(2));
    }
    bail!("percentage based mirror distribution tests failed: {last}")
}
