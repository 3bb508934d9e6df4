//! What Envoy's OpenTelemetry stats sink sends (OTLP `ExportMetricsServiceRequest`, deltas,
//! Envoy's tags as attributes), turned into health buckets per upstream cluster.
//!
//! ```text
//!  cluster.upstream_rq_xx   {envoy.cluster_name, envoy.response_code_class}  Sum, delta
//!      ──► requests (every class), failures (class 5: upstream 5xx and Envoy's own 503/504)
//!  cluster.upstream_rq_time {envoy.cluster_name}  Histogram, delta, ms
//!      ──► the latency histogram, each of Envoy's buckets counted in the first of ours whose
//!          bound is at or above its upper bound
//!  cluster.upstream_rq_retry {envoy.cluster_name}  Sum, delta ──► retries (a retried
//!      response is not counted above: Envoy counts the final one)
//!  anything else, cumulative points, and points without a cluster ──► ignored
//! ```
//!
//! Deltas keep the control plane stateless per proxy: a restarted proxy or a reset counter
//! needs no handling. The number of clusters taken from one export is capped
//! ([`MAX_CLUSTERS_PER_EXPORT`]); the aggregator keeps only clusters its model knows.

pub mod traces;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, metric::Data, number_data_point,
};
use std::collections::BTreeMap;
use trellis_health::{BUCKET_BOUNDS_MS, BUCKETS, Bucket};

/// Envoy's counter of upstream responses by class.
pub const RESPONSES: &str = "cluster.upstream_rq_xx";
/// Envoy's histogram of upstream request time (ms).
pub const REQUEST_TIME: &str = "cluster.upstream_rq_time";
/// Envoy's counter of retries a cluster's requests took.
pub const RETRIES: &str = "cluster.upstream_rq_retry";
/// The attribute naming the cluster.
pub const CLUSTER_ATTRIBUTE: &str = "envoy.cluster_name";
/// The attribute naming the response class (`2`, `5`, ...).
pub const CLASS_ATTRIBUTE: &str = "envoy.response_code_class";
/// Clusters taken from one export at most (a proxy holds far fewer).
pub const MAX_CLUSTERS_PER_EXPORT: usize = 4096;

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
}

fn is_delta(temporality: i32) -> bool {
    temporality == AggregationTemporality::Delta as i32
}

/// Every metric of an export.
fn metrics(request: &ExportMetricsServiceRequest) -> impl Iterator<Item = &Metric> {
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
}

/// A number point's value as a count (negative, NaN and missing: 0).
fn count(point: &NumberDataPoint) -> u64 {
    match point.value {
        Some(number_data_point::Value::AsInt(n)) => u64::try_from(n).unwrap_or(0),
        Some(number_data_point::Value::AsDouble(d)) if d.is_finite() && d > 0.0 => d as u64,
        _ => 0,
    }
}

/// The export's deltas per cluster name.
pub fn ingest(request: &ExportMetricsServiceRequest) -> BTreeMap<String, Bucket> {
    let mut out: BTreeMap<String, Bucket> = BTreeMap::new();
    fn entry<'a>(out: &'a mut BTreeMap<String, Bucket>, cluster: &str) -> Option<&'a mut Bucket> {
        if !out.contains_key(cluster) && out.len() >= MAX_CLUSTERS_PER_EXPORT {
            return None;
        }
        Some(out.entry(cluster.to_string()).or_default())
    }
    for metric in metrics(request) {
        match (metric.name.as_str(), &metric.data) {
            (RESPONSES, Some(Data::Sum(sum))) if is_delta(sum.aggregation_temporality) => {
                for point in &sum.data_points {
                    let Some(cluster) = attribute(&point.attributes, CLUSTER_ATTRIBUTE) else {
                        continue;
                    };
                    let count = count(point);
                    let failed = attribute(&point.attributes, CLASS_ATTRIBUTE) == Some("5");
                    if let Some(bucket) = entry(&mut out, cluster) {
                        bucket.requests = bucket.requests.saturating_add(count);
                        if failed {
                            bucket.failures = bucket.failures.saturating_add(count);
                        }
                    }
                }
            }
            (RETRIES, Some(Data::Sum(sum))) if is_delta(sum.aggregation_temporality) => {
                for point in &sum.data_points {
                    let Some(cluster) = attribute(&point.attributes, CLUSTER_ATTRIBUTE) else {
                        continue;
                    };
                    if let Some(bucket) = entry(&mut out, cluster) {
                        bucket.retries = bucket.retries.saturating_add(count(point));
                    }
                }
            }
            (REQUEST_TIME, Some(Data::Histogram(histogram)))
                if is_delta(histogram.aggregation_temporality) =>
            {
                for point in &histogram.data_points {
                    let Some(cluster) = attribute(&point.attributes, CLUSTER_ATTRIBUTE) else {
                        continue;
                    };
                    let Some(bucket) = entry(&mut out, cluster) else {
                        continue;
                    };
                    for (i, count) in point.bucket_counts.iter().enumerate() {
                        let upper = point
                            .explicit_bounds
                            .get(i)
                            .copied()
                            .unwrap_or(f64::INFINITY);
                        let ours = BUCKET_BOUNDS_MS
                            .iter()
                            .position(|b| upper <= *b)
                            .unwrap_or(BUCKETS - 1);
                        bucket.latency[ours] = bucket.latency[ours].saturating_add(*count);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Envoy's counter of connections a cluster opened.
pub const CONNECTIONS: &str = "cluster.upstream_cx_total";
/// Envoy's counter of connections a cluster could not open for want of a healthy endpoint (the
/// blackhole cluster's every connection).
pub const NO_HEALTHY: &str = "cluster.upstream_cx_none_healthy";

/// Where a sidecar's connection to something outside the mesh's Services went.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Egress {
    /// An undeclared destination, let through (the `passthrough` cluster).
    Passthrough,
    /// An undeclared destination, refused (the `blackhole` cluster).
    Blocked,
    /// A declared one: the ExternalService port `<ns>/<name>/<port name>`.
    External(String),
}

/// A cluster's stat name as an egress destination, if it is one.
fn egress_of(cluster: &str) -> Option<Egress> {
    match cluster {
        "passthrough" => Some(Egress::Passthrough),
        "blackhole" => Some(Egress::Blocked),
        // `external/<ns>/<name>/<port>` with `_` for `/`; none of the parts holds a `_`.
        _ => {
            let rest = cluster.strip_prefix("external_")?;
            let parts: Vec<&str> = rest.split('_').collect();
            (parts.len() == 3 && parts.iter().all(|p| !p.is_empty()))
                .then(|| Egress::External(parts.join("/")))
        }
    }
}

/// Connections to destinations outside the mesh's Services in one export (deltas): let
/// through, blocked, or to each declared external service.
pub fn egress(request: &ExportMetricsServiceRequest) -> BTreeMap<Egress, u64> {
    let mut out = BTreeMap::new();
    for metric in metrics(request) {
        let (name, Some(Data::Sum(sum))) = (metric.name.as_str(), &metric.data) else {
            continue;
        };
        if !is_delta(sum.aggregation_temporality) {
            continue;
        }
        for point in &sum.data_points {
            let Some(destination) =
                attribute(&point.attributes, CLUSTER_ATTRIBUTE).and_then(egress_of)
            else {
                continue;
            };
            let counted = match destination {
                Egress::Blocked => name == NO_HEALTHY,
                _ => name == CONNECTIONS,
            };
            if counted && (out.contains_key(&destination) || out.len() < MAX_CLUSTERS_PER_EXPORT) {
                let n = out.entry(destination).or_insert(0u64);
                *n = n.saturating_add(count(point));
            }
        }
    }
    out
}

/// Envoy's counter of a connection manager's downstream connections.
pub const HTTP_CONNECTIONS: &str = "http.downstream_cx_total";
/// Envoy's counter of a TCP proxy's downstream connections.
pub const TCP_CONNECTIONS: &str = "tcp.downstream_cx_total";
/// The attribute naming a connection manager's stat prefix.
pub const HCM_ATTRIBUTE: &str = "envoy.http_conn_manager_prefix";
/// The attribute naming a TCP proxy's stat prefix.
pub const TCP_ATTRIBUTE: &str = "envoy.tcp_prefix";

/// The port of a sidecar's plaintext inbound chain by its stat prefix
/// (`inbound_<port>_plaintext`: `Some(port)`; `inbound_tcp_plaintext`, every other port: `None`).
fn plaintext_port(prefix: &str) -> Option<Option<u16>> {
    let scope = prefix
        .strip_prefix("inbound_")?
        .strip_suffix("_plaintext")?;
    match scope {
        "tcp" => Some(None),
        port => port.parse::<u16>().ok().map(Some),
    }
}

/// Plaintext connections a sidecar accepted beside mutual TLS in one export (deltas), per port
/// (`None`: the ports without a chain of their own). Its chains count them under
/// `inbound_<port>_plaintext`.
pub fn plaintext_inbound(request: &ExportMetricsServiceRequest) -> BTreeMap<Option<u16>, u64> {
    let mut out = BTreeMap::new();
    for metric in metrics(request) {
        let attribute_name = match metric.name.as_str() {
            HTTP_CONNECTIONS => HCM_ATTRIBUTE,
            TCP_CONNECTIONS => TCP_ATTRIBUTE,
            _ => continue,
        };
        let Some(Data::Sum(sum)) = &metric.data else {
            continue;
        };
        if !is_delta(sum.aggregation_temporality) {
            continue;
        }
        for point in &sum.data_points {
            let Some(port) = attribute(&point.attributes, attribute_name).and_then(plaintext_port)
            else {
                continue;
            };
            // A port is a u16: the map holds at most 65537 keys.
            let n = out.entry(port).or_insert(0u64);
            *n = n.saturating_add(count(point));
        }
    }
    out
}

/// Envoy's counter of a cluster's failed connection attempts.
pub const CONNECT_FAILURES: &str = "cluster.upstream_cx_connect_fail";

/// The TracingPolicy (`ns`, `name`) of a user's collector cluster by its stat name
/// (`tracing_<ns>_<name>`; Kubernetes names hold no `_`).
fn collector_policy(cluster: &str) -> Option<(String, String)> {
    let rest = cluster.strip_prefix("tracing_")?;
    let (ns, name) = rest.split_once('_')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains('_'))
        .then(|| (ns.to_string(), name.to_string()))
}

/// Per TracingPolicy with a collector of its own (`destination.otlp`), in one export (deltas):
/// the span exports that failed (a connection the collector refused or never answered, or a
/// 5xx) and those it answered otherwise.
pub fn collector_exports(
    request: &ExportMetricsServiceRequest,
) -> BTreeMap<(String, String), (u64, u64)> {
    let mut out: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for metric in metrics(request) {
        let (name, Some(Data::Sum(sum))) = (metric.name.as_str(), &metric.data) else {
            continue;
        };
        if !is_delta(sum.aggregation_temporality) || (name != CONNECT_FAILURES && name != RESPONSES)
        {
            continue;
        }
        for point in &sum.data_points {
            let Some(policy) =
                attribute(&point.attributes, CLUSTER_ATTRIBUTE).and_then(collector_policy)
            else {
                continue;
            };
            let failed = name == CONNECT_FAILURES
                || attribute(&point.attributes, CLASS_ATTRIBUTE) == Some("5");
            if !out.contains_key(&policy) && out.len() >= MAX_CLUSTERS_PER_EXPORT {
                continue;
            }
            let entry = out.entry(policy).or_default();
            let n = count(point);
            if failed {
                entry.0 = entry.0.saturating_add(n);
            } else {
                entry.1 = entry.1.saturating_add(n);
            }
        }
    }
    out
}

/// Envoy's gauge of a cluster's endpoints ejected by outlier detection.
pub const EJECTIONS: &str = "cluster.outlier_detection.ejections_active";

/// Per cluster: endpoints outlier detection holds ejected now, as one proxy sees them (a
/// gauge, sent with every flush; at most [`MAX_CLUSTERS_PER_EXPORT`] clusters).
pub fn ejections(request: &ExportMetricsServiceRequest) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for metric in metrics(request) {
        let (EJECTIONS, Some(Data::Gauge(gauge))) = (metric.name.as_str(), &metric.data) else {
            continue;
        };
        for point in &gauge.data_points {
            let Some(cluster) = attribute(&point.attributes, CLUSTER_ATTRIBUTE) else {
                continue;
            };
            let value = count(point);
            if out.len() < MAX_CLUSTERS_PER_EXPORT || out.contains_key(cluster) {
                let entry: &mut u64 = out.entry(cluster.to_string()).or_default();
                *entry = (*entry).max(value);
            }
        }
    }
    out
}

/// The policy filter's latency-objective counter (`trellis_slo_requests_total`, tags `route`
/// and `class`), as the stats sink names it.
pub const OBJECTIVE_COUNTER: &str = "wasmcustom.trellis_slo_requests_total";

/// Per route: requests within and over their latency objective, from the policy filter's
/// counters in one export (deltas only; at most [`MAX_CLUSTERS_PER_EXPORT`] routes).
pub fn objective_counts(request: &ExportMetricsServiceRequest) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for metric in metrics(request) {
        let (OBJECTIVE_COUNTER, Some(Data::Sum(sum))) = (metric.name.as_str(), &metric.data) else {
            continue;
        };
        if !is_delta(sum.aggregation_temporality) {
            continue;
        }
        for point in &sum.data_points {
            let (Some(route), Some(class)) = (
                attribute(&point.attributes, "route"),
                attribute(&point.attributes, "class"),
            ) else {
                continue;
            };
            let count = count(point);
            if !out.contains_key(route) && out.len() >= MAX_CLUSTERS_PER_EXPORT {
                continue;
            }
            let entry = out.entry(route.to_string()).or_default();
            match class {
                "good" => entry.0 = entry.0.saturating_add(count),
                "bad" => entry.1 = entry.1.saturating_add(count),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::metrics::v1::{
        Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };

    fn attrs(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
        pairs
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.to_string(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(v.to_string())),
                }),
                ..Default::default()
            })
            .collect()
    }

    fn responses(points: &[(&str, &str, i64)], temporality: AggregationTemporality) -> Metric {
        Metric {
            name: RESPONSES.into(),
            data: Some(Data::Sum(Sum {
                data_points: points
                    .iter()
                    .map(|(cluster, class, n)| NumberDataPoint {
                        attributes: attrs(&[
                            (CLUSTER_ATTRIBUTE, cluster),
                            (CLASS_ATTRIBUTE, class),
                        ]),
                        value: Some(number_data_point::Value::AsInt(*n)),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: temporality as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        }
    }

    fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn counter(name: &str, points: &[(&str, i64)]) -> Metric {
        counter_by(name, CLUSTER_ATTRIBUTE, points)
    }

    /// A delta counter with a point per value of `attribute`.
    fn counter_by(name: &str, attribute: &str, points: &[(&str, i64)]) -> Metric {
        Metric {
            name: name.into(),
            data: Some(Data::Sum(Sum {
                data_points: points
                    .iter()
                    .map(|(value, n)| NumberDataPoint {
                        attributes: attrs(&[(attribute, value)]),
                        value: Some(number_data_point::Value::AsInt(*n)),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        }
    }

    #[test]
    fn egress_counts_passthrough_blocked_and_declared_destinations() {
        let r = request(vec![
            counter(
                CONNECTIONS,
                &[
                    ("passthrough", 3),
                    ("blackhole", 9),
                    ("external_team_api_http", 2),
                    ("service_shop_b_80", 7),
                    ("external_bad", 1),
                ],
            ),
            counter(NO_HEALTHY, &[("blackhole", 5), ("passthrough", 4)]),
        ]);
        let got: Vec<(Egress, u64)> = egress(&r).into_iter().collect();
        assert_eq!(
            got,
            [
                (Egress::Passthrough, 3),
                (Egress::Blocked, 5),
                (Egress::External("team/api/http".into()), 2),
            ]
        );
    }

    #[test]
    fn envoy_deltas_become_requests_failures_and_latency_per_cluster() {
        // Envoy's default bounds are 0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, ... ms.
        let bounds = vec![0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0];
        let time = Metric {
            name: REQUEST_TIME.into(),
            data: Some(Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: attrs(&[(CLUSTER_ATTRIBUTE, "service/shop/b/80")]),
                    count: 100,
                    bucket_counts: vec![0, 0, 10, 80, 8, 0, 0, 1, 1],
                    explicit_bounds: bounds,
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Delta as i32,
            })),
            ..Default::default()
        };
        let got = ingest(&request(vec![
            responses(
                &[
                    ("service/shop/b/80", "2", 80),
                    ("service/shop/b/80", "5", 20),
                    ("service/shop/a/80", "2", 7),
                ],
                AggregationTemporality::Delta,
            ),
            time,
            counter(RETRIES, &[("service/shop/b/80", 12)]),
            // Cumulative points need per-proxy state: skipped.
            responses(
                &[("service/shop/b/80", "5", 1000)],
                AggregationTemporality::Cumulative,
            ),
            Metric {
                name: "server.uptime".into(),
                ..Default::default()
            },
        ]));
        let b = &got["service/shop/b/80"];
        assert_eq!((b.requests, b.failures, b.retries), (100, 20, 12));
        assert_eq!(b.latency.iter().sum::<u64>(), 100);
        // Envoy's default bounds map to ours (which include 5, 10, 25 and 250 ms); +inf → the
        // last.
        let at = |ms: f64| BUCKET_BOUNDS_MS.iter().position(|b| *b == ms).unwrap();
        assert_eq!(b.latency[at(5.0)], 10);
        assert_eq!(b.latency[at(10.0)], 80);
        assert_eq!(b.latency[at(25.0)], 8);
        assert_eq!(b.latency[at(250.0)], 1);
        assert_eq!(b.latency[BUCKETS - 1], 1);
        let p50 = trellis_health::quantile(&b.latency, 0.5).unwrap();
        let objectives = objective_counts(&request(vec![Metric {
            name: OBJECTIVE_COUNTER.into(),
            data: Some(Data::Sum(Sum {
                data_points: [("good", 7), ("bad", 3), ("other", 9)]
                    .iter()
                    .map(|(class, n)| NumberDataPoint {
                        attributes: attrs(&[
                            ("route", "httproute/shop/r/rule/0/match/0"),
                            ("class", class),
                        ]),
                        value: Some(number_data_point::Value::AsInt(*n)),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        }]));
        assert_eq!(objectives["httproute/shop/r/rule/0/match/0"], (7, 3));
        let ejected = ejections(&request(vec![Metric {
            name: EJECTIONS.into(),
            data: Some(Data::Gauge(
                opentelemetry_proto::tonic::metrics::v1::Gauge {
                    data_points: vec![NumberDataPoint {
                        attributes: attrs(&[(CLUSTER_ATTRIBUTE, "service_shop_b_80")]),
                        value: Some(number_data_point::Value::AsInt(2)),
                        ..Default::default()
                    }],
                },
            )),
            ..Default::default()
        }]));
        assert_eq!(ejected["service_shop_b_80"], 2);
        assert!((5.0..=10.0).contains(&p50), "{p50}");
        assert_eq!(got["service/shop/a/80"].requests, 7);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn exports_to_a_users_collector_are_counted_failed_or_answered_per_policy() {
        let r = request(vec![
            counter(
                CONNECT_FAILURES,
                &[("tracing_shop_edge", 4), ("service_shop_b_80", 9)],
            ),
            responses(
                &[
                    ("tracing_shop_edge", "2", 10),
                    ("tracing_shop_edge", "5", 1),
                    ("tracing_bad", "2", 1),
                ],
                AggregationTemporality::Delta,
            ),
        ]);
        let got: Vec<((String, String), (u64, u64))> = collector_exports(&r).into_iter().collect();
        assert_eq!(got, [(("shop".into(), "edge".into()), (5, 10))]);
    }

    #[test]
    fn plaintext_connections_are_counted_per_port_from_the_plaintext_chains_only() {
        let connections = counter_by;
        let r = request(vec![
            connections(
                HTTP_CONNECTIONS,
                HCM_ATTRIBUTE,
                &[
                    ("inbound_8080_plaintext", 3),
                    ("inbound_8080", 40),
                    ("outbound_shop_b_80", 7),
                    ("inbound_99999_plaintext", 1),
                ],
            ),
            connections(
                TCP_CONNECTIONS,
                TCP_ATTRIBUTE,
                &[("inbound_tcp_plaintext", 2), ("inbound_9000_plaintext", 5)],
            ),
        ]);
        let got: Vec<(Option<u16>, u64)> = plaintext_inbound(&r).into_iter().collect();
        assert_eq!(got, [(None, 2), (Some(8080), 3), (Some(9000), 5)]);
    }

    #[test]
    fn a_flood_of_cluster_names_is_capped() {
        let names: Vec<String> = (0..MAX_CLUSTERS_PER_EXPORT + 100)
            .map(|i| format!("c{i}"))
            .collect();
        let points: Vec<(&str, &str, i64)> = names.iter().map(|n| (n.as_str(), "2", 1)).collect();
        let got = ingest(&request(vec![responses(
            &points,
            AggregationTemporality::Delta,
        )]));
        assert_eq!(got.len(), MAX_CLUSTERS_PER_EXPORT);
    }
}
