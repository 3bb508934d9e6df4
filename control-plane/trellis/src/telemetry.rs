//! Health scores from what the proxies count.
//!
//! ```text
//!  every proxy's bootstrap: Envoy's OpenTelemetry stats sink, deltas every 10 s, over the
//!  xDS cluster (the same mutual TLS) ──► MetricsService/Export on the xDS port
//!      ──► trellis_telemetry::ingest ──► per-cluster deltas; `service_<ns>_<name>_<port>`
//!          clusters of Services the model holds are summed per Service (every caller's proxy
//!          counts its own requests, so nothing is counted twice); anything else is dropped
//!  every 10 s: each Service's bucket ──► trellis_health::Health::observe (capacity from its
//!      EndpointSlices) ──► GET /api/services, /api/services/NS/NAME, /metrics
//! ```

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use tonic::{Request, Response, Status};
use trellis_health::{Bucket, Capacity, Evaluation, Health, Objectives};

/// A Service, by namespace and name.
pub type ServiceKey = (String, String);

/// Evaluations kept per Service for its history.
const HISTORY: usize = 60;

#[derive(Default)]
struct Inner {
    /// Services the model holds, with their endpoints.
    known: BTreeMap<ServiceKey, Capacity>,
    pending: BTreeMap<ServiceKey, Bucket>,
    health: BTreeMap<ServiceKey, Health>,
    latest: BTreeMap<ServiceKey, Vec<Evaluation>>,
}

/// The aggregator, shared by the receiver, the evaluation task and the admin endpoint.
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Arc<Mutex<Inner>>,
}

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
    /// 0–100 (the last one while idle).
    pub health_score: Option<u8>,
    /// `healthy`, `degraded`, `failing`, `idle` or `learning`.
    pub health_state: trellis_health::State,
    /// Why.
    pub health_reason: String,
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
    /// Replaces the set of Services (from the latest load), with their endpoints.
    pub fn set_services(&self, services: BTreeMap<ServiceKey, Capacity>) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.health.retain(|k, _| services.contains_key(k));
        inner.latest.retain(|k, _| services.contains_key(k));
        inner.pending.retain(|k, _| services.contains_key(k));
        inner.known = services;
    }

    /// Takes one export's deltas.
    pub fn ingest(&self, request: &ExportMetricsServiceRequest) {
        let deltas = trellis_telemetry::ingest(request);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for (cluster, bucket) in deltas {
            let Some(service) = service_of(&cluster) else {
                continue;
            };
            if !inner.known.contains_key(&service) {
                continue;
            }
            inner.pending.entry(service).or_default().add(&bucket);
        }
    }

    /// Evaluates every Service on what arrived since the last evaluation.
    pub fn evaluate(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let known: Vec<(ServiceKey, Capacity)> =
            inner.known.iter().map(|(k, c)| (k.clone(), *c)).collect();
        for (service, capacity) in known {
            let bucket = inner.pending.remove(&service).unwrap_or_default();
            let evaluation = inner.health.entry(service.clone()).or_default().observe(
                bucket,
                &capacity,
                &Objectives::default(),
            );
            let history = inner.latest.entry(service).or_default();
            if history.len() == HISTORY {
                history.remove(0);
            }
            history.push(evaluation);
        }
    }

    /// The latest evaluation of every Service.
    pub fn services(&self) -> Vec<ServiceHealth> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .latest
            .iter()
            .filter_map(|((namespace, name), history)| {
                let e = history.last()?;
                let requests = e.totals.requests as f64;
                // Over the time the window covers so far (a new Service's is shorter).
                let window = inner
                    .health
                    .get(&(namespace.clone(), name.clone()))
                    .map(|h| h.window.span().as_secs_f64())
                    .unwrap_or(0.0)
                    .max(trellis_health::BUCKET.as_secs_f64());
                Some(ServiceHealth {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    rps: requests / window,
                    error_rate: if requests > 0.0 {
                        e.totals.failures as f64 / requests
                    } else {
                        0.0
                    },
                    p50_ms: e.totals.p50_ms,
                    p99_ms: e.totals.p99_ms,
                    health_score: e.score,
                    health_state: e.state,
                    health_reason: e.reason.clone(),
                })
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
        if self.authenticated {
            let identity = request
                .extensions()
                .get::<trellis_xds::PeerInfo>()
                .and_then(|p| p.identity.clone());
            if identity.is_none() {
                return Err(Status::unauthenticated(
                    "metrics are taken from proxies with a workload certificate only",
                ));
            }
        }
        self.telemetry.ingest(request.get_ref());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
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
        for endpoint in &slice.endpoints {
            let address = endpoint.addresses.first().cloned().unwrap_or_default();
            if !seen.insert((service.clone(), address)) {
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
