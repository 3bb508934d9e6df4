//! What the pages show, as their `/api` twins serve it: every type here reads the twin's JSON,
//! so a page never shows something its twin does not say.

use serde::{Deserialize, Serialize};

/// One Service's health (a row of `GET /api/services`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceRow {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Requests per second over the window.
    pub rps: f64,
    /// Failed share of requests.
    pub error_rate: f64,
    /// Median latency (ms).
    #[serde(default)]
    pub p50_ms: Option<f64>,
    /// 99th percentile latency (ms).
    #[serde(default)]
    pub p99_ms: Option<f64>,
    /// Share of requests within the latency objective, when timed.
    #[serde(default)]
    pub within_objective: Option<f64>,
    /// Share of the attempts sent to it that were retries.
    #[serde(default)]
    pub retry_ratio: f64,
    /// 0–100.
    #[serde(default)]
    pub health_score: Option<u8>,
    /// `healthy`, `degraded`, `failing`, `idle` or `learning`.
    pub health_state: String,
    /// Why.
    #[serde(default)]
    pub health_reason: String,
}

/// A Service's health as seen from one caller (an entry of `edges`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeRow {
    /// The caller: its SPIFFE ID (authenticated with mutual TLS), or `other`.
    pub caller: String,
    /// Whether its calls take the mesh's mutual TLS: the caller holds a workload certificate
    /// and the Service's endpoints take mutual TLS.
    #[serde(default)]
    pub mtls: bool,
    /// The health of its calls.
    #[serde(flatten)]
    pub health: ServiceRow,
}

/// One evaluation of a Service's score (`history`, oldest first, one per 10 s).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// The score.
    #[serde(default)]
    pub score: Option<u8>,
    /// The state.
    pub state: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Requests in the window.
    #[serde(default)]
    pub requests: u64,
    /// Failed requests in the window.
    #[serde(default)]
    pub failures: u64,
    /// Median latency (ms).
    #[serde(default)]
    pub p50_ms: Option<f64>,
    /// 99th percentile latency (ms).
    #[serde(default)]
    pub p99_ms: Option<f64>,
    /// How fast the error budget burns (1: exactly as fast as the objective allows).
    #[serde(default)]
    pub burn_rate: Option<f64>,
}

/// A status condition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConditionView {
    /// Its type (`Accepted`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// The reason.
    #[serde(default)]
    pub reason: String,
    /// The message.
    #[serde(default)]
    pub message: String,
}

/// An object that concerns a Service (a route to it, a policy on it), with its conditions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RelatedObject {
    /// Its kind.
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// How it concerns the Service (`backend`, `parent`, `target`).
    pub relation: String,
    /// Its conditions (for every parent or ancestor), labelled with the parent.
    #[serde(default)]
    pub conditions: Vec<(String, ConditionView)>,
}

/// An endpoint of a Service, and the proxy beside it if any.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointView {
    /// Address.
    pub address: String,
    /// Ready.
    pub ready: bool,
    /// The pod (`ns/name`), when known.
    #[serde(default)]
    pub pod: Option<String>,
    /// Its sidecar's proxy key and sync state (`SYNCED`, `STALE`, …), when it has one.
    #[serde(default)]
    pub proxy: Option<String>,
    /// Its sidecar's SPIFFE ID, with workload identity.
    #[serde(default)]
    pub identity: Option<String>,
}

/// A trace summary (a row of `GET /api/traces`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceRow {
    /// Trace id (hex).
    pub trace_id: String,
    /// The root span's service.
    #[serde(default)]
    pub root_service: String,
    /// The root span's name.
    #[serde(default)]
    pub root_name: String,
    /// Start (Unix ns).
    #[serde(default)]
    pub start_unix_nanos: u64,
    /// Duration (ns).
    #[serde(default)]
    pub duration_nanos: u64,
    /// Spans held.
    #[serde(default)]
    pub spans: usize,
    /// Whether a span failed.
    #[serde(default)]
    pub error: bool,
    /// The request id.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Services it went through.
    #[serde(default)]
    pub services: Vec<String>,
}

/// A span (of `GET /api/traces/{id}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpanView {
    /// Span id.
    pub span_id: String,
    /// Parent span id.
    #[serde(default)]
    pub parent_span_id: Option<String>,
    /// Service.
    #[serde(default)]
    pub service: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// `server`, `client`, …
    #[serde(default)]
    pub kind: String,
    /// Start (Unix ns).
    #[serde(default)]
    pub start_unix_nanos: u64,
    /// Duration (ns).
    #[serde(default)]
    pub duration_nanos: u64,
    /// `ok`, `error` or `unset`.
    #[serde(default)]
    pub status: String,
    /// Attributes.
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// A whole trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceView {
    /// Trace id.
    pub trace_id: String,
    /// Its spans.
    pub spans: Vec<SpanView>,
}

/// A vet finding (of `GET /api/vet`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FindingView {
    /// `error`, `warning` or `info`.
    pub severity: String,
    /// `TRLnnnn`.
    pub code: String,
    /// The object.
    pub object: ObjectView,
    /// The field.
    #[serde(default)]
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    #[serde(default)]
    pub fix: String,
}

/// An object named by a finding.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectView {
    /// Kind.
    pub kind: String,
    /// Namespace.
    #[serde(default)]
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Everything the Service page shows (`GET /api/services/{ns}/{name}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceDetail {
    /// Its health now.
    pub service: ServiceRow,
    /// Its callers.
    #[serde(default)]
    pub edges: Vec<EdgeRow>,
    /// Its score history, oldest first.
    #[serde(default)]
    pub history: Vec<HistoryPoint>,
    /// Routes to it and policies on it.
    #[serde(default)]
    pub objects: Vec<RelatedObject>,
    /// Its endpoints.
    #[serde(default)]
    pub endpoints: Vec<EndpointView>,
    /// Recent traces through it, errors and slow ones first.
    #[serde(default)]
    pub traces: Vec<TraceRow>,
    /// Vet findings about it and its objects.
    #[serde(default)]
    pub findings: Vec<FindingView>,
}
