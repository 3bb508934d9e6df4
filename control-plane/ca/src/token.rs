//! Tokens that say which pod a caller is, for file mode (in Kubernetes mode a projected
//! ServiceAccount token, checked with TokenReview, plays this part).
//!
//! ```text
//!  trellis token --pod NS/NAME ──► base64url(claims JSON) "." base64url(ECDSA P-256 signature)
//!  authenticate(token, now, pods) ──► signature, audience, expiry, size; the pod must still
//!      exist with the service account the token names ──► the caller's SpiffeId
//! ```
//!
//! The key is the control plane's own (`token-key.pk8` beside the root, owner-only), so only
//! whoever can read the CA directory can mint tokens.

use crate::{CaError, SpiffeId};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The audience tokens are minted for: the certificate service.
pub const AUDIENCE: &str = "trellis-ca";
/// The largest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
const KEY_FILE: &str = "token-key.pk8";

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// The identity, `spiffe://…/ns/<ns>/sa/<sa>`.
    pub sub: String,
    /// The pod, `namespace/name` (empty in a Gateway proxy's token).
    pub pod: String,
    /// A Gateway proxy's token: the Gateway, `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The audience, [`AUDIENCE`].
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expires at (seconds since the epoch).
    pub exp: u64,
}

/// What a token names: a pod, or the proxies of a Gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload<'a> {
    /// A pod (its sidecar).
    Pod {
        /// Its namespace.
        namespace: &'a str,
        /// Its name.
        name: &'a str,
    },
    /// A Gateway (its proxies).
    Gateway {
        /// Its namespace.
        namespace: &'a str,
        /// Its name.
        name: &'a str,
    },
}

/// Why a token is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not two base64url parts, too large, or claims that do not parse.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The signature is not the control plane's.
    #[error("the token's signature is not valid")]
    BadSignature,
    /// For another audience.
    #[error("the token is for audience {0:?}, not {AUDIENCE}")]
    WrongAudience(String),
    /// Past its expiry.
    #[error("the token expired")]
    Expired,
    /// The pod it names does not exist (any more).
    #[error("pod {0} does not exist")]
    NoSuchPod(String),
    /// The Gateway it names does not exist (any more).
    #[error("Gateway {0} does not exist")]
    NoSuchGateway(String),
    /// The pod runs as another service account than the token says.
    #[error("pod {pod} runs as service account {actual}, not the token's {claimed}")]
    ServiceAccountMismatch {
        /// The pod.
        pod: String,
        /// The service account the token names.
        claimed: String,
        /// The pod's.
        actual: String,
    },
    /// The identity in the token does not parse.
    #[error("{0}")]
    Identity(#[from] crate::IdentityError),
}

/// The control plane's token key.
pub struct TokenKey {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey").finish_non_exhaustive()
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl TokenKey {
    /// The key stored in the CA directory `dir`, or a new one written there (the directory
    /// 0700 and the key 0600, as [`crate::Ca::load_or_create`] keeps the root).
    pub fn load_or_create(dir: &Path) -> Result<TokenKey, CaError> {
        crate::ensure_dir(dir)?;
        let path = dir.join(KEY_FILE);
        let rng = SystemRandom::new();
        let pkcs8 = if path.exists() {
            crate::owner_only(&path)?;
            std::fs::read(&path).map_err(crate::io(&path))?
        } else {
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| CaError::BadRoot("cannot generate a token key".into()))?;
            crate::write_owner_only(&path, doc.as_ref())?;
            doc.as_ref().to_vec()
        };
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|_| CaError::BadRoot(format!("{} is not a P-256 key", path.display())))?;
        Ok(TokenKey { key, rng })
    }

    /// A token for a pod running as `identity`, valid from `now` for `lifetime`.
    pub fn issue(
        &self,
        identity: &SpiffeId,
        pod: &str,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<String, CaError> {
        let claims = Claims {
            sub: identity.to_string(),
            pod: pod.to_string(),
            gateway: None,
            aud: AUDIENCE.to_string(),
            iat: secs(now),
            exp: secs(now + lifetime),
        };
        self.sign_claims(&claims)
    }

    /// A token for the proxies of Gateway `gateway` (`namespace/name`), whose identity is
    /// [`crate::gateway_service_account`] in the Gateway's namespace.
    pub fn issue_gateway(
        &self,
        trust_domain: &str,
        gateway: &str,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<String, CaError> {
        let (namespace, name) = gateway
            .split_once('/')
            .ok_or_else(|| CaError::BadCsr(format!("{gateway:?} is not namespace/name")))?;
        let identity = SpiffeId::new(
            trust_domain,
            namespace,
            &crate::gateway_service_account(name),
        )?;
        let claims = Claims {
            sub: identity.to_string(),
            pod: String::new(),
            gateway: Some(gateway.to_string()),
            aud: AUDIENCE.to_string(),
            iat: secs(now),
            exp: secs(now + lifetime),
        };
        self.sign_claims(&claims)
    }

    fn sign_claims(&self, claims: &Claims) -> Result<String, CaError> {
        let body = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(claims).map_err(|e| CaError::BadRoot(e.to_string()))?);
        let signature = self
            .key
            .sign(&self.rng, body.as_bytes())
            .map_err(|_| CaError::BadRoot("signing the token failed".into()))?;
        Ok(format!(
            "{body}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// Checks a token's size, signature, audience and expiry, then that its pod still exists
    /// and runs as the token's service account (`pod_service_account` looks a pod up by
    /// namespace and name). The caller's identity comes from here, never from what it asks for.
    pub fn authenticate(
        &self,
        token: &str,
        now: SystemTime,
        service_account: impl Fn(Workload<'_>) -> Option<String>,
    ) -> Result<SpiffeId, TokenError> {
        let claims = self.verify(token, now)?;
        let identity = SpiffeId::parse(&claims.sub)?;
        let named = claims.gateway.as_deref().unwrap_or(&claims.pod);
        let (namespace, name) = named
            .split_once('/')
            .ok_or(TokenError::Malformed("the workload is not namespace/name"))?;
        if namespace != identity.namespace() {
            return Err(TokenError::Malformed(
                "the workload's namespace is not the identity's",
            ));
        }
        let workload = match claims.gateway {
            Some(_) => Workload::Gateway { namespace, name },
            None => Workload::Pod { namespace, name },
        };
        let actual = service_account(workload).ok_or_else(|| match workload {
            Workload::Gateway { .. } => TokenError::NoSuchGateway(named.to_string()),
            Workload::Pod { .. } => TokenError::NoSuchPod(named.to_string()),
        })?;
        if actual != identity.service_account() {
            return Err(TokenError::ServiceAccountMismatch {
                pod: named.to_string(),
                claimed: identity.service_account().to_string(),
                actual,
            });
        }
        Ok(identity)
    }

    /// The claims of a token this key signed, if it is well-formed, for us and not expired.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed("too large"));
        }
        let (body, signature) = token
            .trim()
            .split_once('.')
            .ok_or(TokenError::Malformed("not two parts"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed("the signature is not base64url"))?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(body.as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed("the claims are not base64url"))?;
        let claims: Claims = serde_json::from_slice(&json)
            .map_err(|_| TokenError::Malformed("the claims do not parse"))?;
        if claims.aud != AUDIENCE {
            return Err(TokenError::WrongAudience(
                claims.aud.chars().take(80).collect(),
            ));
        }
        if secs(now) >= claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (tempfile::TempDir, TokenKey) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        crate::Ca::load_or_create(&dir, "cluster.local", SystemTime::now()).unwrap();
        let key = TokenKey::load_or_create(&dir).unwrap();
        (tmp, key)
    }

    fn pods(workload: Workload<'_>) -> Option<String> {
        match workload {
            Workload::Pod {
                namespace: "shop",
                name: "orders-1",
            } => Some("orders".into()),
            Workload::Gateway {
                namespace: "edge",
                name: "web",
            } => Some(crate::gateway_service_account("web")),
            _ => None,
        }
    }

    #[test]
    fn a_gateway_token_names_the_gateways_proxies_while_it_exists() {
        let (_tmp, key) = key();
        let now = SystemTime::now();
        let token = key
            .issue_gateway("cluster.local", "edge/web", Duration::from_secs(3600), now)
            .unwrap();
        assert_eq!(
            key.authenticate(&token, now, pods).unwrap().to_string(),
            "spiffe://cluster.local/ns/edge/sa/web-gateway"
        );
        let gone = key
            .issue_gateway("cluster.local", "edge/api", Duration::from_secs(3600), now)
            .unwrap();
        assert_eq!(
            key.authenticate(&gone, now, pods).unwrap_err(),
            TokenError::NoSuchGateway("edge/api".into())
        );
    }

    #[test]
    fn a_token_names_its_pod_and_identity_while_the_pod_exists() {
        let (_tmp, key) = key();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders").unwrap();
        let now = SystemTime::now();
        let token = key
            .issue(&id, "shop/orders-1", Duration::from_secs(3600), now)
            .unwrap();
        assert_eq!(key.authenticate(&token, now, pods).unwrap(), id);
        // The pod is gone: refused.
        assert_eq!(
            key.authenticate(&token, now, |_| None).unwrap_err(),
            TokenError::NoSuchPod("shop/orders-1".into())
        );
        // It now runs as another service account: refused.
        assert!(matches!(
            key.authenticate(&token, now, |_| Some("admin".into())),
            Err(TokenError::ServiceAccountMismatch { .. })
        ));
        // Expired.
        let later = now + Duration::from_secs(3601);
        assert_eq!(
            key.authenticate(&token, later, pods).unwrap_err(),
            TokenError::Expired
        );
    }

    #[test]
    fn forged_and_altered_tokens_are_refused() {
        let (_tmp, key) = key();
        let (_other_tmp, other) = self::key();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders").unwrap();
        let now = SystemTime::now();
        let forged = other
            .issue(&id, "shop/orders-1", Duration::from_secs(60), now)
            .unwrap();
        assert_eq!(
            key.verify(&forged, now).unwrap_err(),
            TokenError::BadSignature
        );
        // Claims swapped for another identity, signature kept.
        let token = key
            .issue(&id, "shop/orders-1", Duration::from_secs(60), now)
            .unwrap();
        let (_, signature) = token.split_once('.').unwrap();
        let admin = SpiffeId::parse("spiffe://cluster.local/ns/kube-system/sa/admin").unwrap();
        let admin_token = key
            .issue(&admin, "kube-system/x", Duration::from_secs(60), now)
            .unwrap();
        let (admin_body, _) = admin_token.split_once('.').unwrap();
        assert_eq!(
            key.verify(&format!("{admin_body}.{signature}"), now)
                .unwrap_err(),
            TokenError::BadSignature
        );
        for bad in [
            "",
            "a",
            "a.b.c",
            "!!!.???",
            &"x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(key.verify(bad, now).is_err(), "{bad:.20}");
        }
    }

    #[test]
    fn the_key_is_kept_and_reused() {
        let (tmp, key) = key();
        let dir = tmp.path().join("ca");
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders").unwrap();
        let now = SystemTime::now();
        let token = key
            .issue(&id, "shop/orders-1", Duration::from_secs(60), now)
            .unwrap();
        let again = TokenKey::load_or_create(&dir).unwrap();
        assert!(again.verify(&token, now).is_ok());
    }
}
