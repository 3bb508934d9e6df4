//! `trellis-echo client`: one or more HTTP/1.1 requests, and what came back in the lines the
//! Gateway API conformance suite's echo client prints (`StatusCode=`, `Hostname=`,
//! `RequestHeader=`, `ResponseHeader=`, `URL=`), so a mesh test runs it inside a pod and reads
//! the answer as upstream's suite would.
//!
//! It never follows redirects, sends each request on a new connection (so each goes through the
//! sidecar's routing afresh), and resolves names with the pod's hosts file.

use anyhow::{Context, bail};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// One request to make, `count` times.
#[derive(Clone, Debug)]
pub struct ClientRequest {
    /// `http://host[:port]/path?query`.
    pub url: String,
    /// Request headers, `Name: value`.
    pub headers: Vec<(String, String)>,
    /// The method.
    pub method: String,
    /// How many times.
    pub count: usize,
    /// Per request.
    pub timeout: Duration,
}

/// The parts of `http://host[:port]/path`.
fn split_url(url: &str) -> anyhow::Result<(String, u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url:?}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || p.parse::<u16>().is_ok() => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse::<u16>()
                .with_context(|| format!("bad port in {url:?}"))?,
        ),
        _ => (authority.to_string(), 80),
    };
    if host.is_empty() {
        bail!("{url:?} has no host");
    }
    Ok((host, port, path.to_string()))
}

/// What one exchange printed.
fn exchange(req: &ClientRequest, index: usize) -> anyhow::Result<String> {
    let raw = send(req)?;
    render(&raw, &req.url, index)
}

/// Sends one request and reads its response.
fn send(req: &ClientRequest) -> anyhow::Result<Vec<u8>> {
    let (host, port, path) = split_url(&req.url)?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, req.timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(req.timeout))?;
    stream.set_write_timeout(Some(req.timeout))?;
    let has_host = req
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("host"));
    let mut head = format!("{} {path} HTTP/1.1\r\n", req.method);
    if !has_host {
        let authority = if port == 80 {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        let _ = write!(head, "Host: {authority}\r\n");
    }
    for (k, v) in &req.headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    read_response(&mut stream).context("reading the response")
}

/// One GET of `url` with `headers`; the status it answered. The echo server's `CALL_URL`.
pub fn status(url: &str, headers: &[(String, String)], timeout: Duration) -> anyhow::Result<u16> {
    let req = ClientRequest {
        url: url.to_string(),
        headers: headers.to_vec(),
        method: "GET".to_string(),
        count: 1,
        timeout,
    };
    let raw = send(&req)?;
    status_code(&String::from_utf8_lossy(&raw))?
        .parse()
        .context("the status is not a number")
}

/// The status code of a response's first line.
fn status_code(response: &str) -> anyhow::Result<&str> {
    response
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no status line")
}

/// Reads one response: its head, then a body of `Content-Length` bytes, else up to the end of
/// the connection. Waiting for the end when the length is known would cost a proxy's delayed
/// close (Envoy waits a second for the client to close after a local reply).
fn read_response(stream: &mut impl Read) -> anyhow::Result<Vec<u8>> {
    // A bound on what is read: an echo answer is small.
    const LIMIT: usize = 1 << 20;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 || raw.len() > LIMIT {
            return Ok(raw);
        }
        raw.extend_from_slice(&chunk[..n]);
    };
    let length = String::from_utf8_lossy(&raw[..head_end])
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        });
    match length {
        Some(length) => {
            let total = head_end.saturating_add(length).min(LIMIT);
            while raw.len() < total {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&chunk[..n]);
            }
            raw.truncate(total);
        }
        None => {
            stream.take(LIMIT as u64).read_to_end(&mut raw)?;
        }
    }
    Ok(raw)
}

/// The lines for one raw response.
fn render(raw: &[u8], url: &str, index: usize) -> anyhow::Result<String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("the response has no end of headers")?;
    let status = status_code(head)?;
    let lines = head.lines().skip(1);
    let mut out = format!("[{index}] URL={url}\n[{index}] StatusCode={status}\n");
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let _ = writeln!(out, "[{index}] ResponseHeader={}:{}", k.trim(), v.trim());
        }
    }
    // The echo server answers with JSON naming its pod and the request it saw.
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(body.trim()) {
        if let Some(pod) = json.get("pod").and_then(|p| p.as_str()) {
            let _ = writeln!(out, "[{index}] Hostname={pod}");
        }
        if let Some(path) = json.get("path").and_then(|p| p.as_str()) {
            let _ = writeln!(out, "[{index}] Path={path}");
        }
        if let Some(headers) = json.get("headers").and_then(|h| h.as_object()) {
            for (name, values) in headers {
                for v in values.as_array().into_iter().flatten() {
                    if let Some(v) = v.as_str() {
                        let _ = writeln!(out, "[{index}] RequestHeader={name}:{v}");
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Makes the requests and returns what they printed; a failed request prints `Error=`.
pub fn run(req: &ClientRequest) -> String {
    let mut out = String::new();
    for i in 0..req.count.max(1) {
        match exchange(req, i) {
            Ok(text) => out.push_str(&text),
            Err(e) => {
                let _ = writeln!(out, "[{i}] Error={e:#}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_with_a_length_is_read_without_waiting_for_the_end() {
        // The reader would fail if asked for more than the response.
        struct Once(Option<Vec<u8>>);
        impl Read for Once {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let data = self.0.take().ok_or(std::io::ErrorKind::WouldBlock)?;
                buf[..data.len()].copy_from_slice(&data);
                Ok(data.len())
            }
        }
        let text = b"HTTP/1.1 302 Found\r\nlocation: http://x/\r\ncontent-length: 0\r\n\r\n";
        let raw = read_response(&mut Once(Some(text.to_vec()))).unwrap();
        assert_eq!(raw, text);
    }

    #[test]
    fn urls_split_into_host_port_and_path() {
        assert_eq!(
            split_url("http://echo/v2?x=1").unwrap(),
            ("echo".into(), 80, "/v2?x=1".into())
        );
        assert_eq!(
            split_url("http://10.96.0.1:8080").unwrap(),
            ("10.96.0.1".into(), 8080, "/".into())
        );
        assert!(split_url("https://echo/").is_err());
    }

    #[test]
    fn a_response_prints_like_the_conformance_echo_client() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"pod\":\"echo-v1\",\"path\":\"/x\",\"headers\":{\"X-Header-Set\":[\"set\"]}}";
        let out = render(raw, "http://echo/x", 0).unwrap();
        assert!(out.contains("[0] StatusCode=200\n"), "{out}");
        assert!(out.contains("[0] Hostname=echo-v1\n"));
        assert!(out.contains("[0] RequestHeader=X-Header-Set:set\n"));
        assert!(out.contains("[0] ResponseHeader=content-type:application/json\n"));
    }
}
