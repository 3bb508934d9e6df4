//! Workload identity in Kubernetes mode: the CA's root kept in a Secret of the control plane's
//! namespace, and the certificate service's callers authenticated with TokenReview.
//!
//! ```text
//!  load_or_create_ca(ns) ──get Secret trellis-ca──► found: the stored root
//!                         └─ 404 ──► generate, create the Secret ──► 409 (another replica won
//!                                    the race) ──► get again: every replica signs with one root
//!  TokenReviews::authenticate(token) ──POST tokenreviews {token, audiences: [trellis-ca]}──►
//!      authenticated, `system:serviceaccount:<ns>:<sa>`, bound to a pod (extra pod-name)
//!      ──► spiffe://<trust-domain>/ns/<ns>/sa/<sa>, workload pod/<ns>/<pod>
//! ```
//!
//! The API server checks the token's signature, expiry and audience, and that the pod it is
//! bound to still exists; a token not bound to a pod (a legacy Secret token) is refused.

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use trellis_ca::service::{Authenticate, Caller};
use trellis_ca::{Ca, SpiffeId};

/// The Secret holding the CA's root, in the control plane's namespace.
pub const CA_SECRET: &str = "trellis-ca";
/// The Secret's key holding the root certificate (PEM).
pub const CERT_KEY: &str = "root-cert.pem";
/// The Secret's key holding the root's private key (PEM).
pub const KEY_KEY: &str = "root-key.pem";
/// The `extra` key of a TokenReview naming the pod a token is bound to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the CA cannot be loaded from (or stored in) its Secret.
#[derive(Debug, thiserror::Error)]
pub enum CaSecretError {
    /// The API server refused or failed the request.
    #[error("Secret {namespace}/{name}: {source}")]
    Api {
        /// The Secret's namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The API server did not answer in time.
    #[error("Secret {namespace}/{name}: the API server did not answer within {timeout:?}")]
    Timeout {
        /// The Secret's namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// How long was waited.
        timeout: Duration,
    },
    /// The Secret exists but does not hold a usable root.
    #[error("Secret {namespace}/{name}: {reason}")]
    Unusable {
        /// The Secret's namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A new root could not be generated.
    #[error("generating the CA: {0}")]
    Generate(#[from] trellis_ca::CaError),
}

async fn timed<T>(
    namespace: &str,
    name: &str,
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, CaSecretError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(result) => result.map_err(|source| CaSecretError::Api {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source: Box::new(source),
        }),
        Err(_) => Err(CaSecretError::Timeout {
            namespace: namespace.to_string(),
            name: name.to_string(),
            timeout: REQUEST_TIMEOUT,
        }),
    }
}

fn from_secret(namespace: &str, name: &str, secret: &Secret) -> Result<Ca, CaSecretError> {
    let unusable = |reason: String| CaSecretError::Unusable {
        namespace: namespace.to_string(),
        name: name.to_string(),
        reason,
    };
    let field = |key: &str| -> Result<String, CaSecretError> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .ok_or_else(|| unusable(format!("data.{key} is missing")))?;
        String::from_utf8(bytes.0.clone()).map_err(|_| unusable(format!("data.{key} is not PEM")))
    };
    Ca::from_pem(&field(CERT_KEY)?, &field(KEY_KEY)?).map_err(|e| unusable(e.to_string()))
}

/// The CA whose root Secret `name` in `namespace` holds; created (a new root for
/// `trust_domain`) when there is none. Replicas racing to create it end up with the same root.
pub async fn load_or_create_ca(
    client: &Client,
    namespace: &str,
    name: &str,
    trust_domain: &str,
) -> Result<Ca, CaSecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(secret) = timed(namespace, name, api.get_opt(name)).await? {
        return from_secret(namespace, name, &secret);
    }
    let ca = Ca::generate(trust_domain, SystemTime::now())?;
    let data = BTreeMap::from([
        (
            CERT_KEY.to_string(),
            ByteString(ca.root_pem().as_bytes().to_vec()),
        ),
        (KEY_KEY.to_string(), ByteString(ca.key_pem().into_bytes())),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                "trellis".to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Default::default()
    };
    match timed(namespace, name, api.create(&PostParams::default(), &secret)).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), "created the CA's root");
            Ok(ca)
        }
        Err(CaSecretError::Api { source, .. }) if matches!(&*source, kube::Error::Api(status) if status.code == 409) =>
        {
            // Another replica created it first: use that one.
            let secret = timed(namespace, name, api.get(name)).await?;
            from_secret(namespace, name, &secret)
        }
        Err(e) => Err(e),
    }
}

/// Authenticates the certificate service's callers with TokenReview: projected ServiceAccount
/// tokens for the audience [`trellis_ca::token::AUDIENCE`], bound to a pod.
pub struct TokenReviews {
    client: Client,
    trust_domain: String,
}

impl TokenReviews {
    /// Reviews through `client`; identities in `trust_domain`.
    pub fn new(client: Client, trust_domain: &str) -> TokenReviews {
        TokenReviews {
            client,
            trust_domain: trust_domain.to_string(),
        }
    }
}

/// The caller a TokenReview's answer names, or why it names none.
pub fn caller_of(review: &TokenReview, trust_domain: &str) -> Result<Caller, String> {
    let status = review
        .status
        .as_ref()
        .ok_or("the TokenReview has no status")?;
    if status.authenticated != Some(true) {
        return Err(format!(
            "the API server did not authenticate the token: {}",
            status.error.as_deref().unwrap_or("no reason given")
        ));
    }
    let user = status
        .user
        .as_ref()
        .ok_or("the TokenReview names no user")?;
    let username = user.username.as_deref().unwrap_or("");
    let (namespace, service_account) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(|| format!("{username:?} is not a ServiceAccount"))?;
    let pod = user
        .extra
        .as_ref()
        .and_then(|extra| extra.get(POD_NAME_EXTRA))
        .and_then(|pods| pods.first())
        .ok_or("the token is not bound to a pod (use a projected ServiceAccount token)")?;
    let identity =
        SpiffeId::new(trust_domain, namespace, service_account).map_err(|e| e.to_string())?;
    Ok(Caller {
        identity,
        workload: format!("pod/{namespace}/{pod}"),
    })
}

#[tonic::async_trait]
impl Authenticate for TokenReviews {
    async fn authenticate(&self, token: &str, _now: SystemTime) -> Result<Caller, String> {
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![trellis_ca::token::AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let answer =
            tokio::time::timeout(REQUEST_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| "the API server did not answer the TokenReview in time".to_string())?
                .map_err(|e| format!("the TokenReview failed: {e}"))?;
        caller_of(&answer, &self.trust_domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use trellis_fake_apiserver::FakeApiServer;

    async fn pod(server: &FakeApiServer, ns: &str, name: &str, sa: &str) {
        let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(server.client(), ns);
        let pod = serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": { "serviceAccountName": sa, "containers": [{ "name": "app" }] },
        }))
        .unwrap();
        api.create(&PostParams::default(), &pod).await.unwrap();
    }

    #[tokio::test]
    async fn replicas_share_one_root_kept_in_a_secret() {
        let server = FakeApiServer::new();
        let client = server.client();
        let first = load_or_create_ca(&client, "trellis-system", CA_SECRET, "cluster.local")
            .await
            .unwrap();
        let second = load_or_create_ca(&client, "trellis-system", CA_SECRET, "cluster.local")
            .await
            .unwrap();
        assert_eq!(first.root_pem(), second.root_pem());
        // Two replicas starting at once: both end up with the same root.
        let (a, b) = tokio::join!(
            load_or_create_ca(&client, "other", CA_SECRET, "cluster.local"),
            load_or_create_ca(&client, "other", CA_SECRET, "cluster.local"),
        );
        assert_eq!(a.unwrap().root_pem(), b.unwrap().root_pem());

        // A Secret that holds no usable root is an error naming it, not a new root.
        let api: Api<Secret> = Api::namespaced(client.clone(), "broken");
        let bad: Secret = serde_json::from_value(json!({
            "metadata": { "name": CA_SECRET },
            "data": { CERT_KEY: "bm90IFBFTQ==" },
        }))
        .unwrap();
        api.create(&PostParams::default(), &bad).await.unwrap();
        let e = load_or_create_ca(&client, "broken", CA_SECRET, "cluster.local")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("broken/trellis-ca") && e.contains(KEY_KEY),
            "{e}"
        );
    }

    #[tokio::test]
    async fn token_reviews_decide_the_callers_identity_from_its_pod() {
        let server = FakeApiServer::new();
        pod(&server, "shop", "orders-1", "orders").await;
        let reviews = TokenReviews::new(server.client(), "cluster.local");
        let token = server
            .issue_token(
                "shop",
                "orders-1",
                trellis_ca::token::AUDIENCE,
                Duration::from_secs(600),
            )
            .unwrap();
        let caller = reviews
            .authenticate(&token, SystemTime::now())
            .await
            .unwrap();
        assert_eq!(
            caller.identity.to_string(),
            "spiffe://cluster.local/ns/shop/sa/orders"
        );
        assert_eq!(caller.workload, "pod/shop/orders-1");

        // A token for another audience, a forged one: refused with the API server's reason.
        let other = server
            .issue_token(
                "shop",
                "orders-1",
                "https://kubernetes.default.svc",
                Duration::from_secs(600),
            )
            .unwrap();
        for token in [other.as_str(), "forged"] {
            let e = reviews
                .authenticate(token, SystemTime::now())
                .await
                .unwrap_err();
            assert!(e.contains("did not authenticate"), "{e}");
        }
        // The pod is deleted: its token no longer gets a certificate.
        let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(server.client(), "shop");
        api.delete("orders-1", &Default::default()).await.unwrap();
        let e = reviews
            .authenticate(&token, SystemTime::now())
            .await
            .unwrap_err();
        assert!(e.contains("not found"), "{e}");
    }

    #[test]
    fn a_token_not_bound_to_a_pod_is_refused() {
        let review: TokenReview = serde_json::from_value(json!({
            "spec": {},
            "status": { "authenticated": true, "user": {
                "username": "system:serviceaccount:shop:orders" } },
        }))
        .unwrap();
        assert!(
            caller_of(&review, "cluster.local")
                .unwrap_err()
                .contains("not bound to a pod")
        );
        let review: TokenReview = serde_json::from_value(json!({
            "spec": {},
            "status": { "authenticated": true, "user": { "username": "alice",
                "extra": { POD_NAME_EXTRA: ["x"] } } },
        }))
        .unwrap();
        assert!(
            caller_of(&review, "cluster.local")
                .unwrap_err()
                .contains("not a ServiceAccount")
        );
    }
}
