//! The certificate service (`trellis.ca.v1.CertificateService`, `proto/`): a caller sends a CSR
//! with a token in its `authorization` metadata (`Bearer <token>`); an [`Authenticate`] decides
//! the identity from the token alone (in file mode [`FileTokens`]: a `trellis token` checked
//! with the control plane's key; in Kubernetes mode a projected ServiceAccount token checked
//! with TokenReview); the CA signs the CSR's public key for it.
//!
//! Errors are gRPC statuses: `UNAUTHENTICATED` without a valid token (or for a pod that is
//! gone), `INVALID_ARGUMENT` for a CSR the CA refuses.

use crate::token::Workload;
use crate::{Ca, DEFAULT_LEAF_LIFETIME, SpiffeId, TokenKey};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tonic::{Request, Response, Status};
use trellis_proto::ca::v1::certificate_service_server::{
    CertificateService, CertificateServiceServer,
};
use trellis_proto::ca::v1::{CreateCertificateRequest, CreateCertificateResponse};

/// Looks a workload up (a pod, or a Gateway's proxies): its service account, while it exists.
pub type PodLookup = Arc<dyn Fn(Workload<'_>) -> Option<String> + Send + Sync>;

/// Who a caller is, as its token proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Its identity: what its certificate will name.
    pub identity: SpiffeId,
    /// Its workload, as proxies name themselves to xDS: `pod/<ns>/<name>` or
    /// `gateway/<ns>/<name>`.
    pub workload: String,
}

/// Decides who holds a bearer token.
#[tonic::async_trait]
pub trait Authenticate: Send + Sync + 'static {
    /// The caller `token` proves, or why it proves nothing.
    async fn authenticate(&self, token: &str, now: SystemTime) -> Result<Caller, String>;
}

/// File mode: tokens `trellis token` signed with the control plane's key, for workloads that
/// still exist.
pub struct FileTokens {
    key: Arc<TokenKey>,
    workloads: PodLookup,
}

impl FileTokens {
    /// Tokens `key` signed, for workloads `workloads` finds.
    pub fn new(key: Arc<TokenKey>, workloads: PodLookup) -> FileTokens {
        FileTokens { key, workloads }
    }
}

#[tonic::async_trait]
impl Authenticate for FileTokens {
    async fn authenticate(&self, token: &str, now: SystemTime) -> Result<Caller, String> {
        let identity = self
            .key
            .authenticate(token, now, |w| (self.workloads)(w))
            .map_err(|e| e.to_string())?;
        let claims = self.key.verify(token, now).map_err(|e| e.to_string())?;
        let workload = match claims.gateway {
            Some(gateway) => format!("gateway/{gateway}"),
            None => format!("pod/{}", claims.pod),
        };
        Ok(Caller { identity, workload })
    }
}

/// What the service did since start, for metrics and `trellis proxy-status`.
#[derive(Debug, Default)]
pub struct CaStats {
    /// Certificates issued.
    pub issued: AtomicU64,
    /// Requests refused for want of a valid token (or for a pod that is gone).
    pub unauthenticated: AtomicU64,
    /// Requests refused for their CSR.
    pub bad_csr: AtomicU64,
    /// The latest certificate issued to each workload (`pod/…` or `gateway/…`).
    latest: Mutex<BTreeMap<String, IssuedTo>>,
}

/// The latest certificate a workload was issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedTo {
    /// The identity it names.
    pub identity: String,
    /// When it was issued.
    pub issued_at: SystemTime,
    /// When it expires.
    pub not_after: SystemTime,
}

/// Workloads remembered in [`CaStats`] at most (those whose certificates expired go first).
const MAX_REMEMBERED: usize = 100_000;

impl CaStats {
    /// The latest certificate issued to `workload` (`pod/<ns>/<name>` or
    /// `gateway/<ns>/<name>`) since the control plane started.
    pub fn latest(&self, workload: &str) -> Option<IssuedTo> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(workload)
            .cloned()
    }

    fn remember(&self, workload: &str, issued: IssuedTo) {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        if latest.len() >= MAX_REMEMBERED && !latest.contains_key(workload) {
            let now = SystemTime::now();
            latest.retain(|_, i| i.not_after > now);
            if latest.len() >= MAX_REMEMBERED {
                return;
            }
        }
        latest.insert(workload.to_string(), issued);
    }
}

/// The service's state.
pub struct Certificates {
    ca: Arc<Ca>,
    auth: Arc<dyn Authenticate>,
    lifetime: Duration,
    stats: Arc<CaStats>,
}

impl Certificates {
    /// A service signing with `ca` for callers `auth` authenticates, for at most `lifetime`
    /// ([`DEFAULT_LEAF_LIFETIME`] when `None`).
    pub fn new(
        ca: Arc<Ca>,
        auth: Arc<dyn Authenticate>,
        lifetime: Option<Duration>,
    ) -> Certificates {
        Certificates {
            ca,
            auth,
            lifetime: lifetime.unwrap_or(DEFAULT_LEAF_LIFETIME),
            stats: Arc::default(),
        }
    }

    /// Its counters, shared with whoever reports them.
    pub fn stats(&self) -> Arc<CaStats> {
        self.stats.clone()
    }

    /// The tonic service, to add to a server.
    pub fn into_server(self) -> CertificateServiceServer<Certificates> {
        CertificateServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl CertificateService for Certificates {
    async fn create_certificate(
        &self,
        request: Request<CreateCertificateRequest>,
    ) -> Result<Response<CreateCertificateResponse>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                self.stats.unauthenticated.fetch_add(1, Ordering::Relaxed);
                Status::unauthenticated("no bearer token in authorization")
            })?;
        if token.len() > crate::token::MAX_TOKEN_BYTES {
            self.stats.unauthenticated.fetch_add(1, Ordering::Relaxed);
            return Err(Status::unauthenticated("the token is too large"));
        }
        let now = SystemTime::now();
        let caller = self.auth.authenticate(token, now).await.map_err(|e| {
            self.stats.unauthenticated.fetch_add(1, Ordering::Relaxed);
            Status::unauthenticated(e)
        })?;
        let asked = request.get_ref().validity_duration;
        let lifetime = match u64::try_from(asked) {
            Ok(secs) if secs > 0 => Duration::from_secs(secs).min(self.lifetime),
            _ => self.lifetime,
        };
        let issued = self
            .ca
            .sign(&request.get_ref().csr, &caller.identity, lifetime, now)
            .map_err(|e| {
                self.stats.bad_csr.fetch_add(1, Ordering::Relaxed);
                Status::invalid_argument(e.to_string())
            })?;
        self.stats.issued.fetch_add(1, Ordering::Relaxed);
        self.stats.remember(
            &caller.workload,
            IssuedTo {
                identity: caller.identity.to_string(),
                issued_at: now,
                not_after: issued.not_after,
            },
        );
        let cert_chain = issued
            .chain_pem
            .split_inclusive("-----END CERTIFICATE-----\n")
            .map(str::to_string)
            .collect();
        Ok(Response::new(CreateCertificateResponse { cert_chain }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SpiffeId;
    use rcgen::{CertificateParams, KeyPair, SanType};
    use tonic::transport::{Channel, Server};
    use trellis_proto::ca::v1::certificate_service_client::CertificateServiceClient;

    struct Bed {
        _tmp: tempfile::TempDir,
        tokens: Arc<TokenKey>,
        client: CertificateServiceClient<Channel>,
        stats: Arc<CaStats>,
    }

    async fn bed() -> Bed {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        let ca = Arc::new(Ca::load_or_create(&dir, "cluster.local", SystemTime::now()).unwrap());
        let tokens = Arc::new(TokenKey::load_or_create(&dir).unwrap());
        let pods: PodLookup = Arc::new(|w| {
            (w == Workload::Pod {
                namespace: "shop",
                name: "orders-1",
            })
            .then(|| "orders".to_string())
        });
        let certificates =
            Certificates::new(ca, Arc::new(FileTokens::new(tokens.clone(), pods)), None);
        let stats = certificates.stats();
        let service = certificates.into_server();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let client = CertificateServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        Bed {
            _tmp: tmp,
            tokens,
            client,
            stats,
        }
    }

    fn csr_for(san: &str) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(san.try_into().unwrap())];
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn with_token(csr: String, token: Option<&str>) -> Request<CreateCertificateRequest> {
        let mut request = Request::new(CreateCertificateRequest {
            csr,
            validity_duration: 0,
        });
        if let Some(t) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        request
    }

    #[tokio::test]
    async fn a_caller_gets_a_certificate_for_its_own_identity_only() {
        let mut b = bed().await;
        let me = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders").unwrap();
        let token = b
            .tokens
            .issue(
                &me,
                "shop/orders-1",
                Duration::from_secs(600),
                SystemTime::now(),
            )
            .unwrap();
        // The CSR asks for another identity: the certificate names the caller's.
        let response = b
            .client
            .create_certificate(with_token(
                csr_for("spiffe://cluster.local/ns/kube-system/sa/admin"),
                Some(&token),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.cert_chain.len(), 2, "leaf and root");
        use x509_parser::prelude::*;
        let (_, pem) = parse_x509_pem(response.cert_chain[0].as_bytes()).unwrap();
        let (_, leaf) = X509Certificate::from_der(&pem.contents).unwrap();
        let sans: Vec<String> = leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(sans, [format!("URI({me})")]);
        // Remembered for `trellis proxy-status`, under the name the pod's proxy uses in xDS.
        let latest = b.stats.latest("pod/shop/orders-1").unwrap();
        assert_eq!(latest.identity, me.to_string());
        assert!(latest.not_after > SystemTime::now());
        assert!(b.stats.latest("pod/shop/other").is_none());
    }

    #[tokio::test]
    async fn callers_without_a_valid_token_are_refused() {
        let mut b = bed().await;
        let csr = csr_for("spiffe://cluster.local/ns/shop/sa/orders");
        let status = b
            .client
            .create_certificate(with_token(csr.clone(), None))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let status = b
            .client
            .create_certificate(with_token(csr.clone(), Some("not.a-token")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        // A token for a pod that is gone.
        let gone = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders").unwrap();
        let token = b
            .tokens
            .issue(
                &gone,
                "shop/orders-2",
                Duration::from_secs(600),
                SystemTime::now(),
            )
            .unwrap();
        let status = b
            .client
            .create_certificate(with_token(csr, Some(&token)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(
            status.message().contains("does not exist"),
            "{}",
            status.message()
        );
        // A valid token with a garbled CSR.
        let me = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders").unwrap();
        let token = b
            .tokens
            .issue(
                &me,
                "shop/orders-1",
                Duration::from_secs(600),
                SystemTime::now(),
            )
            .unwrap();
        let status = b
            .client
            .create_certificate(with_token("garbage".into(), Some(&token)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let stats = &b.stats;
        assert_eq!(stats.unauthenticated.load(Ordering::Relaxed), 3);
        assert_eq!(stats.bad_csr.load(Ordering::Relaxed), 1);
        assert_eq!(stats.issued.load(Ordering::Relaxed), 0);
    }
}
