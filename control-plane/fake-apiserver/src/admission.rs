//! Mutating admission for Pod creations, as the real API server runs it: every
//! MutatingWebhookConfiguration stored is consulted, in name order.
//!
//! ```text
//!  POST /api/v1/namespaces/NS/pods ──► each webhook whose rules match CREATE pods and whose
//!     namespaceSelector (the Namespace's labels) and objectSelector (the pod's) match
//!     ──► AdmissionReview over HTTPS (clientConfig.url, or clientConfig.service through a
//!         route the test registered; verified with clientConfig.caBundle, as <svc>.<ns>.svc)
//!     ──► allowed: its JSON patch applied ─ denied: 400 with its message
//!     ──► unreachable, timed out or a bad answer: failurePolicy Fail (default) refuses the
//!         pod with 500, Ignore creates it unmodified
//! ```
//!
//! Approximations: only Pod CREATE is admitted (no other kinds, operations or subresources),
//! webhooks are not reinvoked, selectors support matchLabels and matchExpressions (In, NotIn,
//! Exists, DoesNotExist), and no validating webhooks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::kinds::ResourceKind;
use crate::service::State;
use crate::store::ListOptions;

/// The largest webhook answer read.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

fn webhook_kind() -> ResourceKind {
    ResourceKind::new(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
    )
}

/// Whether `labels` satisfy a LabelSelector object (`None`: everything).
fn selects(selector: Option<&Value>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector.filter(|s| s.is_object()) else {
        return true;
    };
    let match_labels = selector["matchLabels"].as_object();
    let labels_ok = match_labels.is_none_or(|m| {
        m.iter()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
    });
    let expressions_ok = selector["matchExpressions"].as_array().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let key = e["key"].as_str().unwrap_or("");
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let value = labels.get(key).map(String::as_str);
            match e["operator"].as_str().unwrap_or("") {
                "In" => value.is_some_and(|v| values.contains(&v)),
                "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
    });
    labels_ok && expressions_ok
}

fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a webhook's rules cover Pod CREATE.
fn covers_pod_create(webhook: &Value) -> bool {
    let has = |list: &Value, want: &str| {
        list.as_array()
            .is_some_and(|l| l.iter().any(|v| v == want || v == "*"))
    };
    webhook["rules"].as_array().is_some_and(|rules| {
        rules.iter().any(|r| {
            has(&r["operations"], "CREATE")
                && has(&r["apiGroups"], "")
                && has(&r["resources"], "pods")
                && (r["apiVersions"].is_null() || has(&r["apiVersions"], "v1"))
        })
    })
}

/// Where a webhook is reached: the address, the TLS server name and the path.
fn endpoint(state: &State, client: &Value) -> Result<(SocketAddr, String, String), String> {
    if let Some(url) = client["url"].as_str() {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("clientConfig.url {url:?} is not https"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let address: SocketAddr = authority
            .parse()
            .map_err(|_| format!("clientConfig.url: {authority:?} is not an IP:port"))?;
        return Ok((address, address.ip().to_string(), path));
    }
    let service = &client["service"];
    let (namespace, name) = (
        service["namespace"].as_str().unwrap_or(""),
        service["name"].as_str().unwrap_or(""),
    );
    let port = service["port"].as_u64().unwrap_or(443) as u16;
    let path = service["path"].as_str().unwrap_or("/").to_string();
    let address = state
        .webhook_route(namespace, name, port)
        .ok_or_else(|| format!("no route to service {namespace}/{name}:{port}"))?;
    Ok((address, format!("{name}.{namespace}.svc"), path))
}

/// Sends `review` to the webhook and returns its AdmissionReview answer.
async fn call(
    state: &State,
    webhook: &Value,
    review: &Value,
    timeout: Duration,
) -> Result<Value, String> {
    let client = &webhook["clientConfig"];
    let (address, server_name, path) = endpoint(state, client)?;
    let bundle = client["caBundle"]
        .as_str()
        .ok_or("clientConfig.caBundle is empty")?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(bundle)
        .map_err(|_| "clientConfig.caBundle is not base64")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
        let cert: rustls_pki_types::CertificateDer<'static> =
            cert.map_err(|e| format!("caBundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect {address}: {e}"))?;
        let name = rustls_pki_types::ServerName::try_from(server_name.clone())
            .map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS to {server_name}: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = hyper::Request::post(path)
            .header("host", server_name.clone())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                serde_json::to_vec(review).unwrap_or_default(),
            )))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        serde_json::from_slice::<Value>(&body).map_err(|e| format!("the answer is not JSON: {e}"))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

/// Runs mutating admission on a Pod creation (`path`, `body`); returns the body to store.
pub(crate) async fn admit(state: &State, path: &str, body: &Bytes) -> Result<Bytes, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let ["api", "v1", "namespaces", namespace, "pods"] = segments.as_slice() else {
        return Ok(body.clone());
    };
    let configurations = state
        .store
        .list(&webhook_kind(), None, &ListOptions::default())?;
    let mut configurations: Vec<Value> = configurations["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if configurations.is_empty() {
        return Ok(body.clone());
    }
    configurations.sort_by_key(|c| c["metadata"]["name"].as_str().unwrap_or("").to_string());
    let mut pod: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))?;
    pod["metadata"]["namespace"] = json!(namespace);
    let namespace_labels = state
        .store
        .get(
            &ResourceKind::new("", "v1", "Namespace", "namespaces", false),
            "",
            namespace,
        )
        .map(|ns| labels_of(&ns))
        .unwrap_or_default();
    let mut uid = 0u64;
    for configuration in &configurations {
        for webhook in configuration["webhooks"].as_array().into_iter().flatten() {
            let name = webhook["name"].as_str().unwrap_or("");
            if !covers_pod_create(webhook)
                || !selects(webhook.get("namespaceSelector"), &namespace_labels)
                || !selects(webhook.get("objectSelector"), &labels_of(&pod))
            {
                continue;
            }
            uid += 1;
            let review = json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": format!("fake-admission-{}-{uid}", state.store.resource_version()),
                    "kind": { "group": "", "version": "v1", "kind": "Pod" },
                    "resource": { "group": "", "version": "v1", "resource": "pods" },
                    "requestKind": { "group": "", "version": "v1", "kind": "Pod" },
                    "requestResource": { "group": "", "version": "v1", "resource": "pods" },
                    "name": pod["metadata"]["name"],
                    "namespace": namespace,
                    "operation": "CREATE",
                    "userInfo": { "username": "fake-apiserver" },
                    "object": pod,
                    "oldObject": null,
                    "dryRun": false,
                    "options": { "apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions" },
                },
            });
            let timeout = Duration::from_secs(
                webhook["timeoutSeconds"]
                    .as_u64()
                    .unwrap_or(10)
                    .clamp(1, 30),
            );
            let fail = webhook["failurePolicy"].as_str() != Some("Ignore");
            let answer = match call(state, webhook, &review, timeout).await {
                Ok(answer) => answer,
                Err(e) if fail => {
                    return Err(ApiError::Internal(format!(
                        "Internal error occurred: failed calling webhook \"{name}\": {e}"
                    )));
                }
                Err(e) => {
                    tracing::info!(webhook = name, "failurePolicy Ignore: {e}");
                    continue;
                }
            };
            let response = &answer["response"];
            if response["allowed"].as_bool() != Some(true) {
                return Err(ApiError::BadRequest(format!(
                    "admission webhook \"{name}\" denied the request: {}",
                    response["status"]["message"].as_str().unwrap_or("")
                )));
            }
            if let Some(patch) = response["patch"].as_str() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(patch)
                    .map_err(|_| {
                        ApiError::Internal(format!("webhook \"{name}\": the patch is not base64"))
                    })?;
                let patch: json_patch::Patch = serde_json::from_slice(&bytes).map_err(|e| {
                    ApiError::Internal(format!("webhook \"{name}\": the patch does not parse: {e}"))
                })?;
                json_patch::patch(&mut pod, &patch).map_err(|e| {
                    ApiError::Internal(format!("webhook \"{name}\": the patch does not apply: {e}"))
                })?;
            }
        }
    }
    Ok(Bytes::from(serde_json::to_vec(&pod).unwrap_or_default()))
}
