//! Health scores from what the proxies count.
//!
//! ```text
//!  every proxy's bootstrap: Envoy's OpenTelemetry stats sink, deltas every 10 s, over the
//!  xDS cluster (the same mutual TLS) ──► MetricsService/Export on the xDS port
//!      ──► trellis_telemetry::ingest ──► per-cluster deltas; `service_<ns>_<name>_<port>`
//!          clusters of Services the model holds are summed per Service (every caller's proxy
//!          counts its own requests, so nothing is counted twice); anything else is dropped
//!  every 10 s: each Service's bucket ──► trellis_health::Health::observe (capacity from its
//!      EndpointSlices, objectives from its HealthPolicy) ──► GET /api/services,
//!      /api/services/NS/NAME, /metrics
//!
//!  the same exports also carry, kept per key over the window for vet: plaintext connections
//!      sidecars took beside mutual TLS (by the sidecar's identity and port), and span exports
//!      to users' collectors (by TracingPolicy), failed or answered
//!
//!  TracingPolicy ─► Envoy's OpenTelemetry tracer ─► TraceService/Export (same ports)
//!      ──► trellis_telemetry::traces::TraceStore (byte-bounded; errors and slow traces kept
//!          longer) ──► GET /api/traces; and, with --trace-forward-address, a copy of every
//!          export to the user's collector (a bounded queue: dropped, and counted, when full)
//! ```

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tonic::{Request, Response, Status};
use trellis_health::{Bucket, Capacity, Evaluation, Health, Objectives};
use trellis_telemetry::traces::{StoreConfig, TraceStore};

/// A Service, by namespace and name.
pub type ServiceKey = (String, String);
/// A Service and one of its callers (the SPIFFE ID its proxy authenticated with).
type Edge = (ServiceKey, String);

/// Callers kept per Service; the rest are counted as [`OTHER_CALLERS`].
const MAX_CALLERS: usize = 64;
/// The caller the callers past [`MAX_CALLERS`] are counted as.
pub const OTHER_CALLERS: &str = "other";
/// The caller of requests whose proxy did not authenticate (plaintext xDS, development only).
pub const UNAUTHENTICATED: &str = "unauthenticated";

/// Evaluations kept per Service for its history.
const HISTORY: usize = 60;

#[derive(Default)]
struct Inner {
    /// Services the model holds, with their endpoints.
    known: BTreeMap<ServiceKey, Capacity>,
    /// Objectives of the Services a HealthPolicy targets.
    objectives: BTreeMap<ServiceKey, Objectives>,
    /// The routes (by name) the policy filter times against a Service's latency objective.
    objective_routes: BTreeMap<String, Vec<ServiceKey>>,
    /// Per Service: the most endpoints any proxy reported ejected by outlier detection since
    /// the last evaluation.
    ejected: BTreeMap<ServiceKey, u32>,
    /// Buckets in a Service's window (0: the default, 5 minutes).
    window_buckets: usize,
    /// Per edge (a Service and a caller's workload identity): what arrived since the last
    /// evaluation, and the edge's health.
    edge_pending: BTreeMap<Edge, Bucket>,
    edges: BTreeMap<Edge, (Health, Evaluation)>,
    pending: BTreeMap<ServiceKey, Bucket>,
    health: BTreeMap<ServiceKey, Health>,
    latest: BTreeMap<ServiceKey, Vec<Evaluation>>,
    /// Connections to destinations outside the mesh's Services since start, by the caller's
    /// namespace and where they went (at most [`MAX_EGRESS_SERIES`]).
    egress: BTreeMap<(String, trellis_telemetry::Egress), u64>,
    /// Plaintext connections sidecars accepted beside mutual TLS, by the sidecar's workload
    /// identity and port.
    plaintext: Windowed<PlaintextKey, 1>,
    /// Span exports to users' collectors per TracingPolicy: failed, answered.
    collectors: Windowed<PolicyKey, 2>,
}

/// Counts per key over the health window: what arrived since the last evaluation, then one
/// entry per evaluation (newest last). A key whose window holds nothing any more is forgotten;
/// at most [`MAX_WINDOWED_SERIES`] keys are kept, later ones are not counted.
#[derive(Debug)]
struct Windowed<K, const N: usize> {
    pending: BTreeMap<K, [u64; N]>,
    windows: BTreeMap<K, std::collections::VecDeque<[u64; N]>>,
}

impl<K, const N: usize> Default for Windowed<K, N> {
    fn default() -> Self {
        Windowed {
            pending: BTreeMap::new(),
            windows: BTreeMap::new(),
        }
    }
}

/// Series kept at most by each windowed count (identities × ports, policies).
pub const MAX_WINDOWED_SERIES: usize = 4096;

impl<K: Ord + Clone, const N: usize> Windowed<K, N> {
    /// Adds `counts` to what arrived for `key` since the last evaluation.
    fn add(&mut self, key: K, counts: [u64; N]) {
        let known = self.windows.contains_key(&key) || self.pending.contains_key(&key);
        if !known && self.windows.len() + self.pending.len() >= MAX_WINDOWED_SERIES {
            return;
        }
        let total = self.pending.entry(key).or_insert([0; N]);
        for (t, n) in total.iter_mut().zip(counts) {
            *t = t.saturating_add(n);
        }
    }

    /// Closes the current bucket of every key, keeping `buckets` of them.
    fn evaluate(&mut self, buckets: usize) {
        let mut pending = std::mem::take(&mut self.pending);
        for (key, window) in &mut self.windows {
            window.push_back(pending.remove(key).unwrap_or([0; N]));
            while window.len() > buckets {
                window.pop_front();
            }
        }
        for (key, counts) in pending {
            self.windows
                .insert(key, std::collections::VecDeque::from([counts]));
        }
        self.windows
            .retain(|_, window| window.iter().flatten().any(|n| *n > 0));
    }

    /// Every key's sums over its window.
    fn sums(&self) -> BTreeMap<K, [u64; N]> {
        self.windows
            .iter()
            .map(|(k, window)| {
                let mut sum = [0u64; N];
                for counts in window {
                    for (s, n) in sum.iter_mut().zip(counts) {
                        *s = s.saturating_add(*n);
                    }
                }
                (k.clone(), sum)
            })
            .collect()
    }
}

/// A TracingPolicy, by namespace and name.
pub type PolicyKey = (String, String);

/// A sidecar's workload identity and one of its ports (`None`: the ports without a chain of
/// their own).
pub type PlaintextKey = (String, Option<u16>);

/// Egress series kept at most (namespaces × destinations); later ones are not counted.
pub const MAX_EGRESS_SERIES: usize = 4096;

/// The namespace of a SPIFFE ID (`spiffe://<td>/ns/<ns>/sa/<sa>`).
fn namespace_of(identity: &str) -> Option<&str> {
    let path = identity.strip_prefix("spiffe://")?.split_once('/')?.1;
    path.strip_prefix("ns/")?.split('/').next()
}

/// The aggregator, shared by the receivers, the evaluation task and the admin endpoint.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Mutex<Inner>>,
    traces: Arc<Mutex<TraceStore>>,
    forward: Option<tokio::sync::mpsc::Sender<ExportTraceServiceRequest>>,
    /// Exports not forwarded because the queue was full (or the forwarder gone).
    pub forward_dropped: Arc<AtomicU64>,
    /// Spans refused by the store (malformed, or over a limit).
    pub spans_refused: Arc<AtomicU64>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new(StoreConfig::default())
    }
}

/// Exports waiting to be forwarded at most.
const FORWARD_QUEUE: usize = 256;

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

/// One row of `GET /api/services`.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceHealth {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Requests per second over the window.
    pub rps: f64,
    /// Failed share of requests over the window.
    pub error_rate: f64,
    /// Median latency (ms).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency (ms).
    pub p99_ms: Option<f64>,
    /// The share of requests within the Service's latency objective, timed exactly by the
    /// policy filter (Gateways with the filter, Services with a HealthPolicy p99 objective).
    pub within_objective: Option<f64>,
    /// The share of the attempts sent to it that were retries (its callers' proxies retried
    /// failed attempts, as routes' retry policies say).
    pub retry_ratio: f64,
    /// 0–100 (the last one while idle).
    pub health_score: Option<u8>,
    /// `healthy`, `degraded`, `failing`, `idle` or `learning`.
    pub health_state: trellis_health::State,
    /// Why.
    pub health_reason: String,
}

/// A Service's health as seen from one caller.
#[derive(Clone, Debug, Serialize)]
pub struct EdgeHealth {
    /// The caller's workload identity (SPIFFE ID), [`OTHER_CALLERS`] or [`UNAUTHENTICATED`].
    pub caller: String,
    /// The Service's numbers for this caller's requests.
    #[serde(flatten)]
    pub health: ServiceHealth,
}

/// A row of `/api/services` from an evaluation over a window that covers `span` so far.
fn row(namespace: &str, name: &str, e: &Evaluation, span: std::time::Duration) -> ServiceHealth {
    let requests = e.totals.requests as f64;
    let window = span.as_secs_f64().max(trellis_health::BUCKET.as_secs_f64());
    ServiceHealth {
        namespace: namespace.to_string(),
        name: name.to_string(),
        rps: requests / window,
        error_rate: if requests > 0.0 {
            e.totals.failures as f64 / requests
        } else {
            0.0
        },
        // Envoy counts a response once, after its retries: the attempts are both.
        retry_ratio: if e.totals.retries > 0 {
            e.totals.retries as f64 / (requests + e.totals.retries as f64)
        } else {
            0.0
        },
        p50_ms: e.totals.p50_ms,
        p99_ms: e.totals.p99_ms,
        within_objective: e.totals.within_objective,
        health_score: e.score,
        health_state: e.state,
        health_reason: e.reason.clone(),
    }
}

/// A Service's (or edge's) health over a window of `buckets` (0: the default, 5 minutes).
fn new_health(buckets: usize) -> Health {
    let mut health = Health::default();
    if buckets > 0 {
        health.window = trellis_health::Window::with_buckets(buckets);
    }
    health
}

/// Every edge evaluated on what arrived for it; an edge whose window has emptied is forgotten
/// (its caller stopped calling), and edges of Services no longer known go.
fn self_evaluate_edges(inner: &mut Inner) {
    let buckets = inner.window_buckets;
    let pending = std::mem::take(&mut inner.edge_pending);
    let mut keys: BTreeSet<Edge> = inner.edges.keys().cloned().collect();
    keys.extend(pending.keys().cloned());
    for edge in keys {
        let Some(capacity) = inner.known.get(&edge.0).copied() else {
            inner.edges.remove(&edge);
            continue;
        };
        let objectives = inner.objectives.get(&edge.0).copied().unwrap_or_default();
        let bucket = pending.get(&edge).cloned().unwrap_or_default();
        let mut health = match inner.edges.remove(&edge) {
            Some((health, _)) => health,
            None => new_health(buckets),
        };
        let evaluation = health.observe(bucket, &capacity, &objectives);
        if evaluation.totals.requests > 0 {
            inner.edges.insert(edge, (health, evaluation));
        }
    }
}

/// `service_<ns>_<name>_<port>` (a Service port's cluster, as its stats name it).
fn service_of(cluster: &str) -> Option<ServiceKey> {
    let mut parts = cluster.split('_');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("service"), Some(ns), Some(name), Some(port), None)
            if port.parse::<u16>().is_ok() =>
        {
            Some((ns.to_string(), name.to_string()))
        }
        _ => None,
    }
}

impl Telemetry {
    /// An aggregator whose trace store is bounded as `store` says.
    pub fn new(store: StoreConfig) -> Self {
        Telemetry {
            inner: Arc::default(),
            traces: Arc::new(Mutex::new(TraceStore::new(store))),
            forward: None,
            forward_dropped: Arc::default(),
            spans_refused: Arc::default(),
        }
    }

    /// Also sends a copy of every trace export to the OTLP/gRPC collector at `endpoint`
    /// (`http://HOST:PORT`), through a bounded queue: when the collector is slow or away,
    /// exports are dropped and counted rather than held.
    pub fn forward_traces(mut self, endpoint: String) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ExportTraceServiceRequest>(FORWARD_QUEUE);
        let dropped = self.forward_dropped.clone();
        tokio::spawn(async move {
            let channel = match tonic::transport::Endpoint::from_shared(endpoint.clone()) {
                Ok(e) => e
                    .connect_timeout(std::time::Duration::from_secs(5))
                    .timeout(std::time::Duration::from_secs(10))
                    .connect_lazy(),
                Err(e) => {
                    tracing::error!(%endpoint, error = %e, "--trace-forward-address: not a usable endpoint");
                    return;
                }
            };
            let mut client = TraceServiceClient::new(channel);
            while let Some(request) = rx.recv().await {
                if let Err(status) = client.export(request).await {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%endpoint, %status, "trace export not forwarded");
                }
            }
        });
        self.forward = Some(tx);
        self
    }

    /// Takes one trace export into the store (and the forwarding queue).
    pub fn ingest_traces(&self, request: ExportTraceServiceRequest) {
        let ingested = self
            .traces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ingest(&request);
        self.spans_refused
            .fetch_add(ingested.refused as u64, Ordering::Relaxed);
        if let Some(tx) = &self.forward
            && tx.try_send(request).is_err()
        {
            self.forward_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs `f` on the trace store.
    pub fn with_traces<T>(&self, f: impl FnOnce(&TraceStore) -> T) -> T {
        f(&self.traces.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Scores over a window of `window` (rounded to whole 10-s buckets) instead of 5 minutes.
    pub fn with_window(self, window: std::time::Duration) -> Self {
        let buckets = (window.as_secs() / trellis_health::BUCKET.as_secs()).max(1) as usize;
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .window_buckets = buckets;
        self
    }

    /// Replaces the objectives of Services (from the latest translation's HealthPolicies), and
    /// the routes timed against them.
    pub fn set_objectives(
        &self,
        objectives: BTreeMap<ServiceKey, Objectives>,
        routes: BTreeMap<String, Vec<ServiceKey>>,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.objectives = objectives;
        inner.objective_routes = routes;
    }

    /// Replaces the set of Services (from the latest load), with their endpoints.
    pub fn set_services(&self, services: BTreeMap<ServiceKey, Capacity>) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.health.retain(|k, _| services.contains_key(k));
        inner.latest.retain(|k, _| services.contains_key(k));
        inner.pending.retain(|k, _| services.contains_key(k));
        inner.known = services;
    }

    /// Takes one export's deltas, sent by the proxy of `caller` (its workload identity).
    pub fn ingest(&self, request: &ExportMetricsServiceRequest, caller: Option<&str>) {
        let deltas = trellis_telemetry::ingest(request);
        let timed = trellis_telemetry::objective_counts(request);
        let ejections = trellis_telemetry::ejections(request);
        let egress = trellis_telemetry::egress(request);
        let caller = caller.unwrap_or(UNAUTHENTICATED);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let namespace = namespace_of(caller).unwrap_or(UNAUTHENTICATED).to_string();
        for (destination, n) in egress {
            let key = (namespace.clone(), destination);
            if inner.egress.contains_key(&key) || inner.egress.len() < MAX_EGRESS_SERIES {
                let total = inner.egress.entry(key).or_insert(0);
                *total = total.saturating_add(n);
            }
        }
        if caller != UNAUTHENTICATED {
            for (port, n) in trellis_telemetry::plaintext_inbound(request) {
                inner.plaintext.add((caller.to_string(), port), [n]);
            }
        }
        for (policy, (failed, answered)) in trellis_telemetry::collector_exports(request) {
            inner.collectors.add(policy, [failed, answered]);
        }
        for (cluster, ejected) in ejections {
            let Some(service) = service_of(&cluster) else {
                continue;
            };
            if inner.known.contains_key(&service) {
                let entry = inner.ejected.entry(service).or_default();
                *entry = (*entry).max(u32::try_from(ejected).unwrap_or(u32::MAX));
            }
        }
        for (route, (within, over)) in timed {
            let services = inner
                .objective_routes
                .get(&route)
                .cloned()
                .unwrap_or_default();
            for service in services {
                if !inner.known.contains_key(&service) {
                    continue;
                }
                let bucket = inner.pending.entry(service).or_default();
                bucket.within_objective = bucket.within_objective.saturating_add(within);
                bucket.over_objective = bucket.over_objective.saturating_add(over);
            }
        }
        for (cluster, bucket) in deltas {
            let Some(service) = service_of(&cluster) else {
                continue;
            };
            if !inner.known.contains_key(&service) {
                continue;
            }
            inner
                .pending
                .entry(service.clone())
                .or_default()
                .add(&bucket);
            let mut edge = (service, caller.to_string());
            if !inner.edges.contains_key(&edge) && !inner.edge_pending.contains_key(&edge) {
                let callers = inner
                    .edges
                    .keys()
                    .chain(inner.edge_pending.keys())
                    .filter(|(s, _)| *s == edge.0)
                    .map(|(_, c)| c)
                    .collect::<BTreeSet<_>>()
                    .len();
                if callers >= MAX_CALLERS {
                    edge.1 = OTHER_CALLERS.to_string();
                }
            }
            inner.edge_pending.entry(edge).or_default().add(&bucket);
        }
    }

    /// Evaluates every Service on what arrived since the last evaluation.
    pub fn evaluate(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let known: Vec<(ServiceKey, Capacity)> =
            inner.known.iter().map(|(k, c)| (k.clone(), *c)).collect();
        for (service, mut capacity) in known {
            let bucket = inner.pending.remove(&service).unwrap_or_default();
            // Ejected endpoints (outlier detection, as the callers' proxies see it) count
            // against capacity.
            capacity.ejected = inner.ejected.remove(&service).unwrap_or(0);
            let objectives = inner.objectives.get(&service).copied().unwrap_or_default();
            let buckets = inner.window_buckets;
            let evaluation = inner
                .health
                .entry(service.clone())
                .or_insert_with(|| new_health(buckets))
                .observe(bucket, &capacity, &objectives);
            let history = inner.latest.entry(service).or_default();
            if history.len() == HISTORY {
                history.remove(0);
            }
            history.push(evaluation);
        }
        self_evaluate_edges(&mut inner);
        let buckets = match inner.window_buckets {
            0 => trellis_health::WINDOW_BUCKETS,
            n => n,
        };
        inner.plaintext.evaluate(buckets);
        inner.collectors.evaluate(buckets);
    }

    /// Plaintext connections each sidecar (by workload identity) accepted per port beside
    /// mutual TLS over the window; only series with some.
    pub fn plaintext_connections(&self) -> BTreeMap<PlaintextKey, u64> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .plaintext
            .sums()
            .into_iter()
            .map(|(k, [n])| (k, n))
            .collect()
    }

    /// Span exports to users' collectors over the window, per TracingPolicy: (failed,
    /// answered); only policies with some.
    pub fn collector_exports(&self) -> BTreeMap<PolicyKey, (u64, u64)> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .collectors
            .sums()
            .into_iter()
            .map(|(k, [failed, answered])| (k, (failed, answered)))
            .collect()
    }

    /// The latest evaluation of every caller of a Service (busiest first).
    pub fn edges(&self, namespace: &str, name: &str) -> Vec<EdgeHealth> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let service = (namespace.to_string(), name.to_string());
        let mut out: Vec<EdgeHealth> = inner
            .edges
            .range((service.clone(), String::new())..)
            .take_while(|((s, _), _)| *s == service)
            .map(|((_, caller), (health, e))| EdgeHealth {
                caller: caller.clone(),
                // Over the Service's window, so that the edges' rates add up to the Service's.
                health: row(
                    namespace,
                    name,
                    e,
                    inner
                        .health
                        .get(&service)
                        .map_or(health.window.span(), |h| h.window.span()),
                ),
            })
            .collect();
        out.sort_by(|a, b| b.health.rps.total_cmp(&a.health.rps));
        out
    }

    /// Every edge's latest evaluation.
    pub fn all_edges(&self) -> Vec<EdgeHealth> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .edges
            .iter()
            .map(|((service, caller), (health, e))| EdgeHealth {
                caller: caller.clone(),
                health: row(
                    &service.0,
                    &service.1,
                    e,
                    inner
                        .health
                        .get(service)
                        .map_or(health.window.span(), |h| h.window.span()),
                ),
            })
            .collect()
    }

    /// Connections to destinations outside the mesh's Services since start: (caller's
    /// namespace, destination, count).
    pub fn egress(&self) -> Vec<(String, trellis_telemetry::Egress, u64)> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .egress
            .iter()
            .map(|((ns, d), n)| (ns.clone(), d.clone(), *n))
            .collect()
    }

    /// The latest evaluation of every Service.
    pub fn services(&self) -> Vec<ServiceHealth> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .latest
            .iter()
            .filter_map(|((namespace, name), history)| {
                let e = history.last()?;
                // Over the time the window covers so far (a new Service's is shorter).
                let span = inner
                    .health
                    .get(&(namespace.clone(), name.clone()))
                    .map(|h| h.window.span())
                    .unwrap_or_default();
                Some(row(namespace, name, e, span))
            })
            .collect()
    }

    /// A Service's recent evaluations, oldest first.
    pub fn history(&self, namespace: &str, name: &str) -> Option<Vec<Evaluation>> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .latest
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Evaluates every [`trellis_health::BUCKET`], forever.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(trellis_health::BUCKET);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.evaluate();
        }
    }

    /// The OTLP metrics receiver, for the xDS server. With `authenticated`, an export must come
    /// over a connection with a verified workload certificate.
    pub fn receiver(&self, authenticated: bool) -> MetricsServiceServer<Receiver> {
        MetricsServiceServer::new(Receiver {
            telemetry: self.clone(),
            authenticated,
        })
        .max_decoding_message_size(4 * 1024 * 1024)
    }
}

impl Telemetry {
    /// The OTLP trace receiver; `authenticated` as for [`Telemetry::receiver`].
    pub fn trace_receiver(&self, authenticated: bool) -> TraceServiceServer<TraceReceiver> {
        TraceServiceServer::new(TraceReceiver {
            telemetry: self.clone(),
            authenticated,
        })
        .max_decoding_message_size(4 * 1024 * 1024)
    }
}

/// The workload identity of the connection a request came over, if it has a verified one.
fn identity<T>(request: &Request<T>) -> Option<&str> {
    request
        .extensions()
        .get::<trellis_xds::PeerInfo>()
        .and_then(|p| p.identity.as_deref())
}

/// The TraceService the proxies' OpenTelemetry tracers export to.
pub struct TraceReceiver {
    telemetry: Telemetry,
    authenticated: bool,
}

#[tonic::async_trait]
impl TraceService for TraceReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        if self.authenticated && identity(&request).is_none() {
            return Err(Status::unauthenticated(
                "spans are taken from proxies with a workload certificate only",
            ));
        }
        self.telemetry.ingest_traces(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The MetricsService the proxies' stats sinks export to.
pub struct Receiver {
    telemetry: Telemetry,
    authenticated: bool,
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let caller = identity(&request);
        if self.authenticated && caller.is_none() {
            return Err(Status::unauthenticated(
                "metrics are taken from proxies with a workload certificate only",
            ));
        }
        self.telemetry.ingest(request.get_ref(), caller);
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// The routes (by name) of every Gateway that the policy filter times against a latency
/// objective, and the Services (with an objective) they send to.
pub fn objective_routes(
    ir: &trellis_translate::ir::Ir,
    objectives: &BTreeMap<trellis_model::ObjectKey, trellis_translate::telemetry::ObjectiveIr>,
) -> BTreeMap<String, Vec<ServiceKey>> {
    let mut out = BTreeMap::new();
    let routes = ir
        .proxies
        .values()
        .flat_map(|p| &p.listeners)
        .flat_map(|l| &l.chains)
        .filter(|c| {
            c.http_filters
                .iter()
                .any(|f| f.name == trellis_translate::policy::POLICY_FILTER)
        })
        .flat_map(|c| &c.virtual_hosts)
        .flat_map(|vh| &vh.routes);
    for r in routes {
        let trellis_translate::ir::ActionIr::Forward(forward) = &r.action else {
            continue;
        };
        let services: BTreeSet<ServiceKey> = forward
            .backends
            .iter()
            .filter_map(|b| trellis_translate::policy::cluster_service(b.cluster.as_deref()?))
            .filter_map(|key| {
                objectives
                    .get(&key)?
                    .p99_latency_ms
                    .map(|_| (key.namespace, key.name))
            })
            .collect();
        if !services.is_empty() {
            out.insert(r.origin.route_name(), services.into_iter().collect());
        }
    }
    out
}

/// Each Service's endpoints in `input`: desired (every endpoint of its slices) and ready.
pub fn capacities(input: &trellis_model::InputSet) -> BTreeMap<ServiceKey, Capacity> {
    let mut out: BTreeMap<ServiceKey, Capacity> = input
        .services
        .keys()
        .map(|k| ((k.namespace.clone(), k.name.clone()), Capacity::default()))
        .collect();
    let mut seen: BTreeSet<(ServiceKey, String)> = BTreeSet::new();
    for (key, slice) in &input.endpoint_slices {
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            continue;
        };
        let service = (key.namespace.clone(), service.clone());
        let Some(capacity) = out.get_mut(&service) else {
            continue;
        };
        // An endpoint is an address and port (two slices may list one address with different
        // ports: two backends on one host).
        let ports: Vec<String> = slice
            .ports
            .iter()
            .flatten()
            .map(|p| p.port.unwrap_or_default().to_string())
            .collect();
        let ports = ports.join(",");
        for endpoint in &slice.endpoints {
            let address = endpoint.addresses.first().cloned().unwrap_or_default();
            if !seen.insert((service.clone(), format!("{address}:{ports}"))) {
                continue;
            }
            capacity.desired += 1;
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            capacity.ready += u32::from(ready);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_ejected_by_outlier_detection_count_against_capacity() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        use opentelemetry_proto::tonic::metrics::v1::{
            AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
            Sum, metric::Data, number_data_point,
        };
        let attr = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        };
        let point = |attributes: Vec<KeyValue>, n: i64| NumberDataPoint {
            attributes,
            value: Some(number_data_point::Value::AsInt(n)),
            ..Default::default()
        };
        let export = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        Metric {
                            name: trellis_telemetry::RESPONSES.into(),
                            data: Some(Data::Sum(Sum {
                                data_points: vec![point(
                                    vec![
                                        attr("envoy.cluster_name", "service_shop_b_80"),
                                        attr("envoy.response_code_class", "2"),
                                    ],
                                    100,
                                )],
                                aggregation_temporality: AggregationTemporality::Delta as i32,
                                is_monotonic: true,
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: trellis_telemetry::EJECTIONS.into(),
                            data: Some(Data::Gauge(Gauge {
                                data_points: vec![point(
                                    vec![attr("envoy.cluster_name", "service_shop_b_80")],
                                    1,
                                )],
                            })),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let telemetry = Telemetry::default();
        telemetry.set_services(
            [(
                ("shop".to_string(), "b".to_string()),
                Capacity {
                    desired: 2,
                    ready: 2,
                    ejected: 0,
                },
            )]
            .into(),
        );
        telemetry.ingest(&export, None);
        telemetry.evaluate();
        let row = telemetry.services().pop().unwrap();
        assert_eq!(row.health_score, Some(50), "{row:?}");
        assert!(row.health_reason.contains("ejected"), "{row:?}");
    }

    #[test]
    fn plaintext_connections_are_kept_per_identity_and_port_over_the_window() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        use opentelemetry_proto::tonic::metrics::v1::{
            AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
            metric::Data, number_data_point,
        };
        let export = |n: i64| ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: trellis_telemetry::HTTP_CONNECTIONS.into(),
                        data: Some(Data::Sum(Sum {
                            data_points: vec![NumberDataPoint {
                                attributes: vec![KeyValue {
                                    key: trellis_telemetry::HCM_ATTRIBUTE.into(),
                                    value: Some(AnyValue {
                                        value: Some(any_value::Value::StringValue(
                                            "inbound_8080_plaintext".into(),
                                        )),
                                    }),
                                    ..Default::default()
                                }],
                                value: Some(number_data_point::Value::AsInt(n)),
                                ..Default::default()
                            }],
                            aggregation_temporality: AggregationTemporality::Delta as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let telemetry = Telemetry::default().with_window(std::time::Duration::from_secs(20));
        let b = "spiffe://cluster.local/ns/shop/sa/b";
        telemetry.ingest(&export(3), Some(b));
        telemetry.ingest(&export(2), Some(b));
        // A proxy without an identity says nothing of whom it serves.
        telemetry.ingest(&export(50), None);
        telemetry.evaluate();
        let key = (b.to_string(), Some(8080));
        assert_eq!(telemetry.plaintext_connections()[&key], 5);
        telemetry.ingest(&export(1), Some(b));
        telemetry.evaluate();
        assert_eq!(telemetry.plaintext_connections()[&key], 6);
        // Two quiet evaluations later (a 20-s window: two buckets) it is forgotten.
        telemetry.evaluate();
        assert_eq!(telemetry.plaintext_connections()[&key], 1);
        telemetry.evaluate();
        assert!(telemetry.plaintext_connections().is_empty());
    }

    #[test]
    fn service_clusters_are_recognised_by_their_stat_names() {
        assert_eq!(
            service_of("service_shop_b_80"),
            Some(("shop".into(), "b".into()))
        );
        assert_eq!(service_of("service_shop_b_x"), None);
        assert_eq!(service_of("trellis-xds"), None);
        assert_eq!(service_of("service_a_b_c_80"), None);
    }
}
