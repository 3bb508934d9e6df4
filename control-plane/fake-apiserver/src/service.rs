//! The HTTP surface: a tower [`Service`] that routes Kubernetes REST paths to the store, the
//! watch streams, discovery and the `/fake/...` admin API. The same service is used in-process
//! (`kube::Client::new(service, "default")`) and behind the TCP listener.
//!
//! ```text
//!  Request ─► /fake/... ───────────────────────────────► admin (never refused or delayed)
//!          └► fault gate: refuse (503 | error) ─► latency ─► route:
//!               /version /api /apis /apis/{g}                  discovery
//!               /api/v1/..., /apis/{g}/{v}/...
//!                 [namespaces/{ns}/]{plural}                   GET list | GET ?watch | POST | DELETE
//!                 [namespaces/{ns}/]{plural}/{name}[/status]   GET | PUT | PATCH | DELETE
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tower::{BoxError, Service};

use crate::discovery;
use crate::error::ApiError;
use crate::faults::{FaultState, Faults, Refusal};
use crate::kinds::{Registry, ResourceKind};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{ListOptions, Patch, Preconditions, Store, Subresource};
use crate::watch::{Projection, WatchHooks, WatchRequest, WatchStart, watch_stream};

/// How many requests the request log keeps.
const REQUEST_LOG: usize = 4096;

/// One handled request, as kept in the request log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The HTTP method.
    pub method: String,
    /// The path.
    pub path: String,
    /// The query string (may be empty).
    pub query: String,
    /// The status code answered (0 when the connection was closed by a fault).
    pub status: u16,
}

impl RequestRecord {
    /// Whether this was a watch (`?watch=true`).
    pub fn is_watch(&self) -> bool {
        self.method == "GET" && query_flag(&self.query, "watch")
    }

    /// Whether this was a list (a GET on a collection that is not a watch). Only resource
    /// paths count, not discovery.
    pub fn is_list_of(&self, plural: &str) -> bool {
        self.method == "GET" && !self.is_watch() && self.path.ends_with(&format!("/{plural}"))
    }
}

/// Settings fixed when the server is built.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub bookmark_interval: Duration,
    pub default_watch_timeout: Duration,
}

/// Everything the service shares: store, registry, faults, request log.
#[derive(Debug)]
pub(crate) struct State {
    pub store: Arc<Store>,
    pub registry: RwLock<Registry>,
    pub faults: Arc<FaultState>,
    pub settings: Settings,
    pub requests: Mutex<VecDeque<RequestRecord>>,
    pub tokens: crate::tokens::Tokens,
    /// Where webhooks' Services are reached: (namespace, name, port) -> address.
    pub webhook_routes:
        Mutex<std::collections::HashMap<(String, String, u16), std::net::SocketAddr>>,
}

impl State {
    /// Where the webhook Service `namespace/name:port` is reached, if a test said.
    pub(crate) fn webhook_route(
        &self,
        namespace: &str,
        name: &str,
        port: u16,
    ) -> Option<std::net::SocketAddr> {
        self.webhook_routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(namespace.to_string(), name.to_string(), port))
            .copied()
    }

    pub(crate) fn registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn register(&self, kind: ResourceKind) {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .register(kind);
    }

    fn log(&self, record: RequestRecord) {
        let mut log = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() == REQUEST_LOG {
            log.pop_front();
        }
        log.push_back(record);
    }

    pub(crate) fn faults(&self) -> Faults {
        Faults {
            state: self.faults.clone(),
            store: self.store.clone(),
        }
    }

    /// Registers the kinds a stored CustomResourceDefinition serves.
    pub(crate) fn register_crd(&self, crd: &Value) {
        for kind in crd_kinds(crd) {
            self.register(kind);
        }
    }
}

/// The kinds a CustomResourceDefinition object serves (`spec.versions[*]` with `served: true`).
pub(crate) fn crd_kinds(crd: &Value) -> Vec<ResourceKind> {
    let spec = &crd["spec"];
    let (Some(group), Some(kind), Some(plural)) = (
        spec["group"].as_str(),
        spec["names"]["kind"].as_str(),
        spec["names"]["plural"].as_str(),
    ) else {
        return Vec::new();
    };
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .filter_map(|v| v["name"].as_str())
        .map(|version| {
            let mut k = ResourceKind::new(group, version, kind, plural, namespaced);
            k.status_subresource = spec["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"].as_str() == Some(version))
                .is_some_and(|v| v["subresources"]["status"].is_object());
            k
        })
        .collect()
}

/// The fake API server as a tower service. Clone it freely; clones share one server.
#[derive(Debug, Clone)]
pub struct FakeService {
    pub(crate) state: Arc<State>,
}

/// The future a [`FakeService`] returns.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

impl<B> Service<Request<B>> for FakeService
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.map_err(Into::into)?.to_bytes();
            let path = parts.uri.path().to_string();
            let query = parts.uri.query().unwrap_or("").to_string();
            let record = |status: u16| RequestRecord {
                method: parts.method.to_string(),
                path: path.clone(),
                query: query.clone(),
                status,
            };
            if path.starts_with("/fake/") || path == "/fake" {
                return Ok(crate::admin::handle(
                    &state,
                    &parts.method,
                    &path,
                    &query,
                    &body,
                ));
            }
            match state.faults.refusal() {
                Some(Refusal::ServiceUnavailable) => {
                    state.log(record(503));
                    let mut response = error_response(&ApiError::ServiceUnavailable);
                    response
                        .headers_mut()
                        .insert("retry-after", HeaderValue::from_static("1"));
                    return Ok(response);
                }
                Some(Refusal::CloseConnection) => {
                    state.log(record(0));
                    return Err(Box::new(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "fake-apiserver: connection closed by an injected fault",
                    )) as BoxError);
                }
                None => {}
            }
            let latency = state.faults.latency();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            // Mutating admission (Pod creations only), before the object is stored.
            let body = if parts.method == Method::POST && !query_flag(&query, "dryRun") {
                match crate::admission::admit(&state, &path, &body).await {
                    Ok(body) => body,
                    Err(e) => {
                        let response = error_response(&e);
                        state.log(record(response.status().as_u16()));
                        return Ok(response);
                    }
                }
            } else {
                body
            };
            let response = route(&state, &parts.method, &path, &query, &parts.headers, &body)
                .unwrap_or_else(|e| error_response(&e));
            state.log(record(response.status().as_u16()));
            Ok(response)
        })
    }
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An API error as a `Status` response.
pub(crate) fn error_response(error: &ApiError) -> Response<Body> {
    json_response(
        StatusCode::from_u16(error.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &error.status_json(),
    )
}

/// The query parameters of one request.
#[derive(Debug, Default)]
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Self {
        Self(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }

    fn list_options(&self) -> Result<ListOptions, ApiError> {
        let limit = match self.get("limit") {
            Some(l) => l
                .parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid limit {l:?}")))?
                .max(0),
            None => 0,
        };
        Ok(ListOptions {
            labels: LabelSelector::parse(self.get("labelSelector").unwrap_or(""))?,
            fields: FieldSelector::parse(self.get("fieldSelector").unwrap_or(""))?,
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            continue_token: self
                .get("continue")
                .filter(|c| !c.is_empty())
                .map(String::from),
        })
    }
}

fn query_flag(query: &str, key: &str) -> bool {
    Query::parse(query).flag(key)
}

/// Which object(s) a resource path names.
#[derive(Debug)]
struct Target {
    kind: ResourceKind,
    /// `Some(ns)` for a namespaced path; `None` for cluster-scoped kinds or all namespaces.
    namespace: Option<String>,
    name: Option<String>,
    subresource: Subresource,
}

fn route(
    state: &State,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response<Body>, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    match segments.as_slice() {
        ["version"] => ok(discovery::version()),
        ["healthz" | "readyz" | "livez"] => {
            let mut r = Response::new(Body::from("ok"));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Ok(r)
        }
        ["api"] => ok(discovery::core_versions()),
        ["apis"] => ok(discovery::groups(&state.registry())),
        ["apis", group] => discovery::group(&state.registry(), group)
            .map(|v| json_response(StatusCode::OK, &v))
            .ok_or(ApiError::NoSuchResource),
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] if *method == Method::POST => {
            let request = parse_json(body)?;
            state
                .tokens
                .review(&state.store, &request)
                .map(|v| json_response(StatusCode::CREATED, &v))
        }
        ["api", version, rest @ ..] => {
            resource(state, method, "", version, rest, query, headers, body)
        }
        ["apis", group, version, rest @ ..] => {
            resource(state, method, group, version, rest, query, headers, body)
        }
        _ => Err(ApiError::NoSuchResource),
    }
}

#[allow(clippy::too_many_arguments)]
fn resource(
    state: &State,
    method: &Method,
    group: &str,
    version: &str,
    rest: &[&str],
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response<Body>, ApiError> {
    if rest.is_empty() {
        if method != Method::GET {
            return Err(ApiError::MethodNotAllowed);
        }
        return discovery::resources(&state.registry(), group, version)
            .map(|v| json_response(StatusCode::OK, &v))
            .ok_or(ApiError::NoSuchResource);
    }
    let target = {
        let registry = state.registry();
        let namespaced = match rest {
            ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => registry
                .by_plural(group, version, plural)
                .filter(|k| k.namespaced)
                .map(|k| (k.clone(), Some(ns.to_string()), tail)),
            _ => None,
        };
        let (kind, namespace, tail) = match namespaced {
            Some(t) => t,
            None => {
                let (plural, tail) = rest.split_first().ok_or(ApiError::NoSuchResource)?;
                let kind = registry
                    .by_plural(group, version, plural)
                    .ok_or(ApiError::NoSuchResource)?
                    .clone();
                if kind.namespaced && !tail.is_empty() {
                    return Err(ApiError::NoSuchResource);
                }
                (kind, None, tail)
            }
        };
        let (name, subresource) = match tail {
            [] => (None, Subresource::Main),
            [name] => (Some(name.to_string()), Subresource::Main),
            [name, "status"] => (Some(name.to_string()), Subresource::Status),
            _ => return Err(ApiError::NoSuchResource),
        };
        Target {
            kind,
            namespace,
            name,
            subresource,
        }
    };
    let q = Query::parse(query);
    let projection = projection(headers);
    let ns = target.namespace.as_deref().unwrap_or("");
    let store = &state.store;
    let kind = &target.kind;
    let respond = |status: StatusCode, v: Value| json_response(status, &projection.apply_any(v));
    match (&target.name, method) {
        (None, &Method::GET) if q.flag("watch") => watch(state, &target, &q, projection),
        (None, &Method::GET) => {
            let list = store.list(kind, target.namespace.as_deref(), &q.list_options()?)?;
            Ok(respond(StatusCode::OK, list))
        }
        (None, &Method::POST) => {
            if kind.namespaced && target.namespace.is_none() {
                return Err(ApiError::BadRequest(
                    "a namespaced object must be created in a namespace".into(),
                ));
            }
            let created = store.create(kind, ns, parse_json(body)?, q.dry_run())?;
            after_write(state, kind, &created);
            Ok(respond(StatusCode::CREATED, created))
        }
        (None, &Method::DELETE) => {
            let deleted = store.delete_collection(
                kind,
                target.namespace.as_deref(),
                &q.list_options()?,
                q.dry_run(),
            )?;
            Ok(respond(StatusCode::OK, deleted))
        }
        (None, _) => Err(ApiError::MethodNotAllowed),
        (Some(name), &Method::GET) => Ok(respond(StatusCode::OK, store.get(kind, ns, name)?)),
        (Some(name), &Method::PUT) => {
            let replaced = store.replace(
                kind,
                ns,
                name,
                parse_json(body)?,
                target.subresource,
                q.dry_run(),
            )?;
            after_write(state, kind, &replaced);
            Ok(respond(StatusCode::OK, replaced))
        }
        (Some(name), &Method::PATCH) => {
            let patch = parse_patch(headers, body, &q)?;
            let creates =
                matches!(patch, Patch::Apply { .. }) && store.get(kind, ns, name).is_err();
            let patched = store.patch(kind, ns, name, patch, target.subresource, q.dry_run())?;
            after_write(state, kind, &patched);
            let status = if creates {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(respond(status, patched))
        }
        (Some(name), &Method::DELETE) => {
            let options = if body.is_empty() {
                Value::Null
            } else {
                parse_json(body)?
            };
            let preconditions = Preconditions {
                uid: options["preconditions"]["uid"].as_str().map(String::from),
                resource_version: options["preconditions"]["resourceVersion"]
                    .as_str()
                    .map(String::from),
            };
            let dry_run = q.dry_run()
                || options["dryRun"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|v| v == "All"));
            Ok(respond(
                StatusCode::OK,
                store.delete(kind, ns, name, &preconditions, dry_run)?,
            ))
        }
        (Some(_), _) => Err(ApiError::MethodNotAllowed),
    }
}

impl Projection {
    /// Projects an object or a list.
    fn apply_any(self, value: Value) -> Value {
        if self == Projection::Full {
            return value;
        }
        match value.get("items").and_then(Value::as_array) {
            Some(items) => json!({
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadataList",
                "metadata": value.get("metadata").cloned().unwrap_or_else(|| json!({})),
                "items": items.iter().cloned().map(|i| self.apply(i)).collect::<Vec<_>>(),
            }),
            None => self.apply(value),
        }
    }
}

/// Metadata-only responses when the client asks for `as=PartialObjectMetadata[List]`.
fn projection(headers: &HeaderMap) -> Projection {
    let accept = headers
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("as=PartialObjectMetadata") {
        Projection::Metadata
    } else {
        Projection::Full
    }
}

fn after_write(state: &State, kind: &ResourceKind, object: &Value) {
    if kind.group == "apiextensions.k8s.io" && kind.plural == "customresourcedefinitions" {
        state.register_crd(object);
    }
}

fn watch(
    state: &State,
    target: &Target,
    q: &Query,
    projection: Projection,
) -> Result<Response<Body>, ApiError> {
    let options = q.list_options()?;
    let start =
        if q.flag("sendInitialEvents") {
            WatchStart::InitialEvents
        } else {
            match q.get("resourceVersion") {
                None | Some("" | "0") => WatchStart::Now,
                Some(rv) => WatchStart::After(rv.parse().map_err(|_| {
                    ApiError::BadRequest(format!("invalid resource version {rv:?}"))
                })?),
            }
        };
    let timeout = match q.get("timeoutSeconds") {
        Some(s) => Duration::from_secs(
            s.parse()
                .map_err(|_| ApiError::BadRequest(format!("invalid timeoutSeconds {s:?}")))?,
        ),
        None => state.settings.default_watch_timeout,
    };
    let request = WatchRequest {
        kind: target.kind.clone(),
        namespace: target.namespace.clone(),
        labels: options.labels,
        fields: options.fields,
        start,
        bookmarks: q.flag("allowWatchBookmarks"),
        timeout,
        projection,
    };
    let hooks = WatchHooks {
        drop: state.faults.drop_signal(),
        bookmark_interval: state.settings.bookmark_interval,
        open: state.faults.open_watches.clone(),
    };
    let stream = watch_stream(state.store.clone(), hooks, request);
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))
}

fn parse_patch(headers: &HeaderMap, body: &Bytes, q: &Query) -> Result<Patch, ApiError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    match content_type.as_str() {
        "application/merge-patch+json" => Ok(Patch::Merge(parse_json(body)?)),
        "application/strategic-merge-patch+json" => Ok(Patch::Strategic(parse_json(body)?)),
        "application/json-patch+json" => {
            let ops = serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
            Ok(Patch::Json(ops))
        }
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
            let manager = q
                .get("fieldManager")
                .filter(|m| !m.is_empty())
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "PATCH, application/apply-patch+yaml requires fieldManager to be set"
                            .into(),
                    )
                })?
                .to_string();
            let object = match serde_json::from_slice::<Value>(body) {
                Ok(v) => v,
                Err(_) => {
                    let text = std::str::from_utf8(body)
                        .map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))?;
                    serde_saphyr::from_str::<Value>(text).map_err(|e| {
                        ApiError::BadRequest(format!("the applied object is not valid YAML: {e}"))
                    })?
                }
            };
            Ok(Patch::Apply {
                object,
                manager,
                force: q.flag("force"),
            })
        }
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_register_every_served_version_with_its_scope_and_status() {
        let crd = json!({
            "spec": {
                "group": "policy.trellis.dev",
                "names": { "kind": "MeshPolicy", "plural": "meshpolicies" },
                "scope": "Cluster",
                "versions": [
                    { "name": "v1alpha1", "served": true, "subresources": { "status": {} } },
                    { "name": "v1alpha0", "served": false },
                ],
            }
        });
        let kinds = crd_kinds(&crd);
        assert_eq!(kinds.len(), 1);
        assert_eq!(kinds[0].api_version(), "policy.trellis.dev/v1alpha1");
        assert!(!kinds[0].namespaced);
        assert!(kinds[0].status_subresource);
    }
}
