//! Fetching a module over HTTP(S), only from the hosts the operator allows.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use rustls_pki_types::{CertificateDer, ServerName};
use std::sync::Arc;

/// Which URLs the control plane may fetch modules from. The default allows none: fetching is
/// opt-in, so a WasmFilter cannot make the control plane connect anywhere (server-side
/// request forgery) unless the operator names the hosts.
#[derive(Clone, Debug, Default)]
pub struct UrlPolicy {
    /// Hosts that may be fetched from: a name or address matched exactly (ignoring case), or
    /// `*.example.com` for any name under `example.com`.
    pub hosts: Vec<String>,
    /// Whether plain `http://` is allowed too (the default: HTTPS only).
    pub allow_http: bool,
    /// Certificate authorities trusted for HTTPS besides the system's.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl UrlPolicy {
    /// Whether `host` is on the allow-list.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.hosts.iter().any(|pattern| {
            let pattern = pattern.trim_start_matches('[').trim_end_matches(']');
            match pattern.strip_prefix("*.") {
                Some(domain) => {
                    host.len() > domain.len() + 1
                        && host
                            .get(host.len() - domain.len()..)
                            .is_some_and(|end| end.eq_ignore_ascii_case(domain))
                        && host.as_bytes().get(host.len() - domain.len() - 1) == Some(&b'.')
                }
                None => host.eq_ignore_ascii_case(pattern),
            }
        })
    }

    /// Checks `url` against the policy, returning what to connect to.
    pub(crate) fn check(&self, url: &str) -> Result<Target, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url} is not a valid URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if self.allow_http => false,
            Some("http") => {
                return Err(format!(
                    "{url}: plain HTTP module URLs are not allowed (use https://, or the operator \
                     allows HTTP with --allow-http-module-urls)"
                ));
            }
            _ => return Err(format!("{url}: only https:// URLs are fetched")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("{url} names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if self.hosts.is_empty() {
            return Err(format!(
                "{url}: fetching module URLs is disabled (the operator allows hosts with \
                 --module-url-hosts)"
            ));
        }
        if !self.allows_host(&host) {
            return Err(format!(
                "{url}: host {host} is not on the control plane's allow-list for module URLs"
            ));
        }
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string());
        Ok(Target {
            https,
            host,
            port,
            path,
        })
    }
}

/// Where a checked URL leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    https: bool,
    host: String,
    port: u16,
    path: String,
}

/// The TLS client used for HTTPS fetches: the system's roots and the operator's.
pub(crate) fn tls_config(policy: &UrlPolicy) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    for cert in &policy.extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| format!("a module CA certificate is not usable: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `GET`s the target (HTTP/1.1), returning the body of a 200 answer, at most `max` bytes.
/// Redirects are not followed.
pub(crate) async fn fetch(
    target: &Target,
    tls: &Arc<rustls::ClientConfig>,
    max: u64,
) -> Result<Bytes, String> {
    let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect: {}", e.kind()))?;
    let authority = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    if target.https {
        let name = ServerName::try_from(target.host.clone())
            .map_err(|_| format!("{} is not a valid TLS server name", target.host))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        get(stream, &authority, &target.path, max).await
    } else {
        get(stream, &authority, &target.path, max).await
    }
}

async fn get<S>(stream: S, authority: &str, path: &str, max: u64) -> Result<Bytes, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let connection = tokio::spawn(connection);
    let result = async {
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::USER_AGENT, "trellis-module-fetch")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status != hyper::StatusCode::OK {
            return Err(format!("answered {status} (redirects are not followed)"));
        }
        let declared = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max) {
            return Err(format!("the module is larger than {max} bytes"));
        }
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("the module is larger than {max} bytes")
                } else {
                    format!("reading the body: {e}")
                }
            })?;
        Ok(body.to_bytes())
    }
    .await;
    connection.abort();
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn policy(hosts: &[&str], allow_http: bool) -> UrlPolicy {
        UrlPolicy {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            allow_http,
            extra_roots: Vec::new(),
        }
    }

    #[test]
    fn urls_are_refused_unless_their_host_is_allowed() {
        let none = policy(&[], true);
        assert!(
            none.check("https://modules.example.com/m.wasm")
                .unwrap_err()
                .contains("disabled")
        );
        let some = policy(
            &["modules.example.com", "*.cdn.example.net", "10.0.0.5"],
            false,
        );
        assert!(some.check("https://modules.example.com/m.wasm").is_ok());
        assert!(some.check("https://MODULES.example.com/m.wasm").is_ok());
        assert!(some.check("https://a.cdn.example.net/m.wasm").is_ok());
        assert!(some.check("https://a.b.cdn.example.net/m.wasm").is_ok());
        assert!(some.check("https://10.0.0.5:8443/m.wasm").is_ok());
        for refused in [
            "https://cdn.example.net/m.wasm",
            "https://evilcdn.example.net/m.wasm",
            "https://modules.example.com.evil.org/m.wasm",
            "https://169.254.169.254/latest/meta-data/",
            "https://127.0.0.1:18001/status",
            "https://kubernetes.default.svc/api",
        ] {
            assert!(
                some.check(refused).unwrap_err().contains("allow-list"),
                "{refused}"
            );
        }
    }

    #[test]
    fn plain_http_needs_the_operator_to_allow_it() {
        let https_only = policy(&["modules.example.com"], false);
        assert!(
            https_only
                .check("http://modules.example.com/m.wasm")
                .unwrap_err()
                .contains("plain HTTP")
        );
        assert!(https_only.check("ftp://modules.example.com/m").is_err());
        let with_http = policy(&["modules.example.com"], true);
        let target = with_http
            .check("http://modules.example.com:8080/a/m.wasm?v=1")
            .unwrap();
        assert_eq!(
            target,
            Target {
                https: false,
                host: "modules.example.com".into(),
                port: 8080,
                path: "/a/m.wasm?v=1".into()
            }
        );
    }
}
