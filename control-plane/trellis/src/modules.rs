//! The module store: Wasm modules read from a path or fetched from an HTTP URL, checked against
//! the SHA-256 their WasmFilter names, kept by digest and served to proxies at
//! `GET /wasm/<sha256>` on the admin endpoint.
//!
//! ```text
//!  WasmFilter.spec.module {path | url, sha256}
//!        │ resolve() (control loop, before translating)
//!        ▼
//!  read / fetch ──sha256──► matches? ──yes──► verified bytes by digest ──► GET /wasm/<sha256>
//!        │                     └─no──► ModuleState::Problem (ChecksumMismatch)       (Envoy
//!        └─ error ──────────────────► ModuleState::Problem (ModuleNotFound)   checks it again)
//! ```
//!
//! The translator only sees the resulting [`ModuleState`]s. Verified bytes are never replaced:
//! a digest names one content. A module that is not available yet is tried again by the control
//! loop every few seconds; a verified one is not read again.

use anyhow::Context;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use trellis_model::InputSet;
use trellis_model::policy::WasmModule;
use trellis_translate::policy::{ModuleState, policy_reasons};

/// The largest module accepted.
const MAX_MODULE_BYTES: usize = 64 << 20;
/// How long a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Verified module bytes by hex SHA-256, shared with the admin endpoint.
#[derive(Debug, Default)]
pub struct VerifiedModules {
    by_digest: RwLock<HashMap<String, Bytes>>,
}

impl VerifiedModules {
    /// The bytes of a verified module.
    pub fn get(&self, sha256: &str) -> Option<Bytes> {
        self.by_digest.read().ok()?.get(sha256).cloned()
    }

    fn insert(&self, sha256: String, bytes: Bytes) {
        if let Ok(mut map) = self.by_digest.write() {
            map.entry(sha256).or_insert(bytes);
        }
    }
}

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads, fetches and verifies the modules WasmFilters name.
#[derive(Debug)]
pub struct ModuleStore {
    verified: Arc<VerifiedModules>,
    states: BTreeMap<WasmModule, ModuleState>,
}

impl ModuleStore {
    /// A store publishing into `verified`.
    pub fn new(verified: Arc<VerifiedModules>) -> Self {
        Self {
            verified,
            states: BTreeMap::new(),
        }
    }

    /// Reads a module the control plane ships (the policy filter) and returns its digest.
    pub fn add_file(&self, path: &Path) -> anyhow::Result<String> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let digest = sha256_hex(&bytes);
        self.verified.insert(digest.clone(), Bytes::from(bytes));
        Ok(digest)
    }

    /// Brings the state of every module the input names up to date (reading and fetching those
    /// not verified yet) and returns them, with every module verified before: its bytes stay
    /// servable, and the last valid version of a WasmFilter may still use it.
    pub async fn resolve(&mut self, input: &InputSet) -> BTreeMap<WasmModule, ModuleState> {
        let wanted: Vec<WasmModule> = input
            .wasm_filters
            .values()
            .filter_map(|f| f.spec.get("module"))
            .filter_map(|m| serde_json::from_value::<WasmModule>(m.clone()).ok())
            .collect();
        let mut next: BTreeMap<WasmModule, ModuleState> = self
            .states
            .iter()
            .filter(|(_, s)| matches!(s, ModuleState::Verified))
            .map(|(m, s)| (m.clone(), s.clone()))
            .collect();
        for module in wanted {
            if next.contains_key(&module) {
                continue;
            }
            let state = self.check(&module).await;
            match &state {
                ModuleState::Verified => {
                    tracing::info!(sha256 = %module.sha256, "module verified")
                }
                ModuleState::Problem { message, .. } => {
                    tracing::warn!(sha256 = %module.sha256, "module unavailable: {message}")
                }
            }
            next.insert(module, state);
        }
        self.states = next.clone();
        next
    }

    /// Whether some module is waiting to be retried.
    pub fn has_problems(&self) -> bool {
        self.states
            .values()
            .any(|s| matches!(s, ModuleState::Problem { .. }))
    }

    async fn check(&self, module: &WasmModule) -> ModuleState {
        let not_found = |message: String| ModuleState::Problem {
            reason: policy_reasons::MODULE_NOT_FOUND.to_string(),
            message,
        };
        let bytes = match (&module.path, &module.url) {
            (Some(path), None) => match tokio::fs::read(path).await {
                Ok(b) if b.len() > MAX_MODULE_BYTES => {
                    return not_found(format!("{path} is larger than {MAX_MODULE_BYTES} bytes"));
                }
                Ok(b) => Bytes::from(b),
                Err(e) => return not_found(format!("cannot read {path}: {e}")),
            },
            (None, Some(url)) => match tokio::time::timeout(FETCH_TIMEOUT, fetch(url)).await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return not_found(format!("cannot fetch {url}: {e:#}")),
                Err(_) => return not_found(format!("cannot fetch {url}: timed out")),
            },
            _ => return not_found("set exactly one of path and url".to_string()),
        };
        let digest = sha256_hex(&bytes);
        if digest != module.sha256 {
            return ModuleState::Problem {
                reason: policy_reasons::CHECKSUM_MISMATCH.to_string(),
                message: format!(
                    "checksum mismatch: the module's sha256 is {digest}, the spec says {}",
                    module.sha256
                ),
            };
        }
        self.verified.insert(digest, bytes);
        ModuleState::Verified
    }
}

/// `GET` an `http://` URL (HTTP/1.1), returning the body of a 200 answer.
async fn fetch(url: &str) -> anyhow::Result<Bytes> {
    let rest = url.strip_prefix("http://").with_context(
        || "only http:// URLs can be fetched; serve the module over plain HTTP or use a path",
    )?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            (h, p.parse::<u16>().context("bad port in the URL")?)
        }
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("cannot connect to {authority}"))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    if !status.is_success() {
        anyhow::bail!("answered {status}");
    }
    let body = Limited::new(response.into_body(), MAX_MODULE_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(body.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use trellis_model::Object;
    use trellis_model::core::ObjectMeta;
    use trellis_model::policy::WasmFilter;

    fn input(module: serde_json::Value) -> InputSet {
        let mut input = InputSet::default();
        input.insert(Object::WasmFilter(Arc::new(WasmFilter::new(
            ObjectMeta {
                name: Some("f".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            serde_json::json!({ "module": module }),
        ))));
        input
    }

    #[tokio::test]
    async fn modules_are_verified_against_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, b"\0asm module").unwrap();
        let digest = sha256_hex(b"\0asm module");
        let verified = Arc::new(VerifiedModules::default());
        let mut store = ModuleStore::new(verified.clone());

        let good = serde_json::json!({"path": path, "sha256": digest});
        let states = store.resolve(&input(good.clone())).await;
        assert_eq!(states.values().next(), Some(&ModuleState::Verified));
        assert_eq!(verified.get(&digest).as_deref(), Some(&b"\0asm module"[..]));

        let module =
            |v: &serde_json::Value| serde_json::from_value::<WasmModule>(v.clone()).unwrap();
        let wrong = serde_json::json!({"path": path, "sha256": "0".repeat(64)});
        let states = store.resolve(&input(wrong.clone())).await;
        // The verified module stays known (a last valid WasmFilter may use it).
        assert_eq!(states.get(&module(&good)), Some(&ModuleState::Verified));
        let Some(ModuleState::Problem { reason, message }) = states.get(&module(&wrong)) else {
            panic!("{states:?}")
        };
        assert_eq!(reason, "ChecksumMismatch");
        assert!(message.contains(&digest), "{message}");
        assert!(store.has_problems());
        assert!(verified.get(&"0".repeat(64)).is_none());

        let missing = serde_json::json!({"path": dir.path().join("nope.wasm"), "sha256": digest});
        let states = store.resolve(&input(missing.clone())).await;
        let Some(ModuleState::Problem { reason, .. }) = states.get(&module(&missing)) else {
            panic!("{states:?}")
        };
        assert_eq!(reason, "ModuleNotFound");
    }
}
