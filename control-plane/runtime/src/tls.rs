//! Mutual TLS for the xDS port: a server certificate that can be replaced while serving (the
//! control plane renews its own), client certificates verified against the mesh's root when a
//! client presents one, and handshakes done off the accept loop within a deadline.
//!
//! ```text
//!  guarded_incoming ──► handshake task per connection (deadline) ──► TlsConnection
//!                                   │ verified client chain? first URI SAN
//!                                   ▼
//!                       PeerInfo { remote, identity } in each request's extensions
//! ```
//!
//! A client without a certificate may connect (an agent asking for its first certificate with
//! a token); whatever it calls decides whether that is enough (ADS refuses it).

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_stream::Stream;
use trellis_xds::PeerInfo;

use crate::Guarded;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS cannot be set up.
#[derive(Debug)]
pub struct TlsError(pub String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

fn certified_key(chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("the certificate chain does not parse: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError(format!("the private key does not parse: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| TlsError(format!("the key does not fit the certificate: {e}")))
}

/// The server's certificate, replaceable while connections come and go.
#[derive(Debug)]
pub struct ServerCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCertificate {
    /// A certificate from its chain (leaf first) and key, PEM.
    pub fn new(chain_pem: &str, key_pem: &str) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(ServerCertificate {
            current: RwLock::new(Arc::new(certified_key(chain_pem, key_pem)?)),
        }))
    }

    /// Replaces it: new handshakes present the new one.
    pub fn replace(&self, chain_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        let key = Arc::new(certified_key(chain_pem, key_pem)?);
        if let Ok(mut current) = self.current.write() {
            *current = key;
        }
        Ok(())
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

/// A server configuration: `certificate`, and client certificates (optional) verified against
/// `root_pem`; HTTP/2 only (gRPC).
pub fn server_config(
    certificate: Arc<ServerCertificate>,
    root_pem: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsError(format!("the root does not parse: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| TlsError(format!("the root is not usable: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError(format!("client verification: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A connection after its handshake, with who is at the other end.
pub struct TlsConnection {
    inner: tokio_rustls::server::TlsStream<Guarded<TcpStream>>,
    info: PeerInfo,
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Reads a verified client certificate's identity (its first URI SAN).
pub type IdentityOf = fn(&[u8]) -> Option<String>;

/// TLS over `incoming`: each connection's handshake runs on its own task within
/// [`HANDSHAKE_TIMEOUT`] (a slow or silent client holds no one else up); failed handshakes are
/// dropped and logged at debug level.
pub fn tls_incoming(
    incoming: impl Stream<Item = io::Result<Guarded<TcpStream>>> + Send + 'static,
    config: Arc<ServerConfig>,
    identity_of: IdentityOf,
) -> impl Stream<Item = io::Result<TlsConnection>> + Send + 'static {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<TlsConnection>>(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        let mut incoming = Box::pin(incoming);
        while let Some(next) = incoming.next().await {
            let stream = match next {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!("accept failed: {e}");
                    continue;
                }
            };
            let remote = {
                use tonic::transport::server::Connected;
                stream.connect_info().remote_addr()
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let identity = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .and_then(|leaf| identity_of(leaf.as_ref()));
                        let _ = tx
                            .send(Ok(TlsConnection {
                                inner: tls,
                                info: PeerInfo { remote, identity },
                            }))
                            .await;
                    }
                    Ok(Err(e)) => tracing::debug!(?remote, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(?remote, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
