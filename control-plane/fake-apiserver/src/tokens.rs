//! ServiceAccount tokens and `TokenReview`, as the kubelet and the real API server provide them.
//!
//! ```text
//!  issue(ns, pod, audience, ttl) ── what the kubelet projects into a pod: a token bound to the
//!                                  pod (its uid) and its service account, for one audience
//!  POST /apis/authentication.k8s.io/v1/tokenreviews {spec: {token, audiences}}
//!      ── status.authenticated when the token is known, unexpired, for one of the audiences,
//!         and its pod still exists with the same uid; then status.user is
//!         `system:serviceaccount:<ns>:<sa>` with the pod's name and uid in `extra`
//! ```
//!
//! Approximation: tokens are opaque random strings the server remembers (the real ones are
//! signed JWTs); a review's answer is what the real server answers for a bound token.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::kinds::ResourceKind;
use crate::store::Store;

/// The `extra` key holding the pod a bound token belongs to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// The `extra` key holding that pod's uid.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
/// Tokens remembered at once (older ones are forgotten first).
const MAX_TOKENS: usize = 10_000;

#[derive(Debug, Clone)]
struct Bound {
    namespace: String,
    pod: String,
    pod_uid: String,
    service_account: String,
    audience: String,
    expires: SystemTime,
    issued: u64,
}

/// The tokens issued so far.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    issued: Mutex<(u64, HashMap<String, Bound>)>,
}

fn random_hex() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // Not secret in a fake; unique is enough.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes[..16].copy_from_slice(&nanos.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn pod_kind() -> ResourceKind {
    ResourceKind::new("", "v1", "Pod", "pods", true)
}

impl Tokens {
    /// A token bound to pod `namespace/pod` (which must exist) and its service account, for
    /// `audience`, valid for `ttl`.
    pub(crate) fn issue(
        &self,
        store: &Store,
        namespace: &str,
        pod: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<String, ApiError> {
        let object = store.get(&pod_kind(), namespace, pod)?;
        let service_account = object
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string();
        let pod_uid = object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let token = format!("fake-sa-token.{}", random_hex());
        let mut guard = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        let (counter, map) = &mut *guard;
        *counter += 1;
        if map.len() >= MAX_TOKENS {
            let oldest = map
                .iter()
                .min_by_key(|(_, b)| b.issued)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(
            token.clone(),
            Bound {
                namespace: namespace.to_string(),
                pod: pod.to_string(),
                pod_uid,
                service_account,
                audience: audience.to_string(),
                expires: SystemTime::now() + ttl,
                issued: *counter,
            },
        );
        Ok(token)
    }

    /// Answers a `TokenReview` (the request body), as the real server does.
    pub(crate) fn review(&self, store: &Store, request: &Value) -> Result<Value, ApiError> {
        if request.pointer("/kind").and_then(Value::as_str) != Some("TokenReview") {
            return Err(ApiError::BadRequest("the body is not a TokenReview".into()));
        }
        let token = request
            .pointer("/spec/token")
            .and_then(Value::as_str)
            .unwrap_or("");
        let audiences: Vec<&str> = request
            .pointer("/spec/audiences")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let status = match self.check(store, token, &audiences) {
            Ok((bound, audience)) => json!({
                "authenticated": true,
                "audiences": [audience],
                "user": {
                    "username": format!(
                        "system:serviceaccount:{}:{}", bound.namespace, bound.service_account
                    ),
                    "uid": format!("sa-{}-{}", bound.namespace, bound.service_account),
                    "groups": [
                        "system:serviceaccounts",
                        format!("system:serviceaccounts:{}", bound.namespace),
                        "system:authenticated"
                    ],
                    "extra": {
                        POD_NAME_EXTRA: [bound.pod],
                        POD_UID_EXTRA: [bound.pod_uid],
                    }
                }
            }),
            Err(reason) => json!({ "authenticated": false, "error": reason, "user": {} }),
        };
        let mut response = request.clone();
        response["status"] = status;
        response["metadata"] = json!({ "creationTimestamp": null });
        Ok(response)
    }

    fn check(
        &self,
        store: &Store,
        token: &str,
        audiences: &[&str],
    ) -> Result<(Bound, String), String> {
        let bound = {
            let guard = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
            guard.1.get(token).cloned()
        }
        .ok_or("invalid bearer token")?;
        if bound.expires < SystemTime::now() {
            return Err("invalid bearer token, token has expired".into());
        }
        // Without audiences the API server's own applies, which a projected token for another
        // audience does not carry.
        if !audiences.contains(&bound.audience.as_str()) {
            return Err(
                "invalid bearer token, token audiences is invalid for the target audiences".into(),
            );
        }
        let pod = store
            .get(&pod_kind(), &bound.namespace, &bound.pod)
            .map_err(|_| format!("invalid bearer token, pod \"{}\" not found", bound.pod))?;
        let uid = pod
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        if uid != bound.pod_uid {
            return Err(format!(
                "invalid bearer token, the UID in the bound object reference ({}) does not match the object's ({uid})",
                bound.pod_uid
            ));
        }
        let audience = bound.audience.clone();
        Ok((bound, audience))
    }
}
