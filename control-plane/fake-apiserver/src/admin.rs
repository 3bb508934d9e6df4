//! The `/fake/...` admin API: the fault hooks and a few inspection and seeding endpoints, for
//! tests that drive the server as a separate process. Never refused or delayed by faults.
//!
//! | request | effect |
//! |---|---|
//! | `POST /fake/drop-watches` | end every open watch stream |
//! | `POST /fake/compact` | forget the history (older resourceVersions get 410) |
//! | `POST /fake/refuse?seconds=N&mode=503\|close` | refuse requests for N seconds (no `seconds`: until recover) |
//! | `POST /fake/recover` | stop refusing |
//! | `POST /fake/latency?ms=N` | delay every request by N ms (0: off) |
//! | `POST /fake/kinds` | register a kind: `{"group","version","kind","plural","namespaced","statusSubresource"}` |
//! | `POST /fake/objects` | create or replace the objects of a YAML stream (status kept) |
//! | `POST /fake/tokens?namespace=NS&pod=NAME&audience=AUD&seconds=N` | a token bound to the pod, as the kubelet projects: `{"token"}` |
//! | `GET /fake/state` | `{"resourceVersion","oldestResourceVersion","openWatches","refusing","requests"}` |

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::faults::Refusal;
use crate::kinds::ResourceKind;
use crate::service::{State, error_response, json_response};

/// Handles one admin request.
pub(crate) fn handle(
    state: &State,
    method: &Method,
    path: &str,
    query: &str,
    body: &Bytes,
) -> Response<Body> {
    match dispatch(state, method, path, query, body) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => error_response(&e),
    }
}

fn dispatch(
    state: &State,
    method: &Method,
    path: &str,
    query: &str,
    body: &Bytes,
) -> Result<Value, ApiError> {
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let number = |k: &str| -> Result<Option<u64>, ApiError> {
        param(k)
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::BadRequest(format!("{k} must be a number, not {v:?}")))
            })
            .transpose()
    };
    let faults = state.faults();
    let done = |what: &str| Ok(json!({ "done": what }));
    match (method, path.trim_end_matches('/')) {
        (&Method::GET, "/fake/state") => Ok(json!({
            "resourceVersion": state.store.resource_version().to_string(),
            "oldestResourceVersion": state.store.oldest_resource_version().to_string(),
            "openWatches": faults.open_watches(),
            "refusing": match faults.refusing() {
                Some(Refusal::ServiceUnavailable) => "503",
                Some(Refusal::CloseConnection) => "close",
                None => "",
            },
            "requests": state.requests.lock().map(|l| l.len()).unwrap_or(0),
        })),
        (&Method::POST, "/fake/drop-watches") => {
            faults.drop_watches();
            done("drop-watches")
        }
        (&Method::POST, "/fake/compact") => {
            faults.compact();
            done("compact")
        }
        (&Method::POST, "/fake/refuse") => {
            let how = match param("mode").unwrap_or("503") {
                "503" => Refusal::ServiceUnavailable,
                "close" => Refusal::CloseConnection,
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "mode must be 503 or close, not {other:?}"
                    )));
                }
            };
            match number("seconds")? {
                Some(s) => faults.refuse_for_with(Duration::from_secs(s), how),
                None => faults.refuse(how),
            }
            done("refuse")
        }
        (&Method::POST, "/fake/recover") => {
            faults.recover();
            done("recover")
        }
        (&Method::POST, "/fake/latency") => {
            faults.set_latency(Duration::from_millis(number("ms")?.unwrap_or(0)));
            done("latency")
        }
        (&Method::POST, "/fake/kinds") => {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))?;
            let field = |k: &str| v[k].as_str().unwrap_or("").to_string();
            let mut kind = ResourceKind::new(
                field("group"),
                field("version"),
                field("kind"),
                field("plural"),
                v["namespaced"].as_bool().unwrap_or(true),
            );
            kind.status_subresource = v["statusSubresource"].as_bool().unwrap_or(true);
            if kind.version.is_empty() || kind.kind.is_empty() || kind.plural.is_empty() {
                return Err(ApiError::BadRequest(
                    "version, kind and plural are required".into(),
                ));
            }
            state.register(kind);
            done("kinds")
        }
        (&Method::POST, "/fake/objects") => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))?;
            let count = crate::load::load_text(state, text)?;
            Ok(json!({ "loaded": count }))
        }
        (&Method::POST, "/fake/tokens") => {
            let required = |k: &str| {
                param(k)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| ApiError::BadRequest(format!("{k} is required")))
            };
            let token = state.tokens.issue(
                &state.store,
                required("namespace")?,
                required("pod")?,
                required("audience")?,
                Duration::from_secs(number("seconds")?.unwrap_or(3600)),
            )?;
            Ok(json!({ "token": token }))
        }
        _ => Err(ApiError::NoSuchResource),
    }
}
