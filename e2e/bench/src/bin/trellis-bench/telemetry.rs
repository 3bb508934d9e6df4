//! `telemetry`: thousands of simulated proxies pushing stats deltas (as Envoy's OpenTelemetry
//! stats sink does, every 10 s) and, optionally, spans to one control plane; what its receiver,
//! aggregator and trace store cost in memory and CPU.
//!
//! ```text
//!  N proxies (a gRPC connection each) ──ExportMetricsServiceRequest every flush──► trellis serve
//!      each: K Service clusters × (upstream_rq_xx 2xx + 5xx, upstream_rq_time 41 buckets)
//!  spans: batches of 5 (Envoy's default) at S spans/s ──ExportTraceServiceRequest──►
//!  measured: RSS idle vs loaded, CPU % of a core over the window, exports/s, bytes/s,
//!            Services scored (/api/services), trace store bytes (/metrics)
//! ```

use crate::procfs;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use trellis_harness::ControlPlane;

/// Options of `trellis-bench telemetry`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulated proxies, each on its own connection.
    #[arg(long, default_value_t = 2000)]
    pub proxies: usize,
    /// Services in the configuration (what the deltas are about).
    #[arg(long, default_value_t = 500)]
    pub services: usize,
    /// Service clusters each proxy reports per flush.
    #[arg(long, default_value_t = 5)]
    pub clusters_per_proxy: usize,
    /// Seconds between a proxy's flushes (Envoy's stats_flush_interval).
    #[arg(long, default_value_t = 10)]
    pub flush_secs: u64,
    /// Spans per second sent on top (0: stats only).
    #[arg(long, default_value_t = 0)]
    pub spans_per_second: u64,
    /// Seconds of load measured (after one warm-up flush interval).
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
}

fn attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// One flush of one proxy: `clusters` Service clusters with requests, failures and latency.
fn export(proxy: usize, clusters: usize, services: usize) -> ExportMetricsServiceRequest {
    let bounds: Vec<f64> = vec![
        1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0, 40.0,
        50.0, 60.0, 80.0, 100.0, 120.0, 150.0, 200.0, 250.0, 300.0, 400.0, 500.0, 600.0, 800.0,
        1000.0, 1200.0, 1500.0, 2000.0, 2500.0, 3000.0, 4000.0, 5000.0, 6000.0, 8000.0, 10000.0,
    ];
    let mut responses = Vec::new();
    let mut times = Vec::new();
    for c in 0..clusters {
        let service = (proxy * 7 + c * 13) % services;
        let cluster = format!("service_bench_s{service}_80");
        for (class, value) in [("2", 95), ("5", 5)] {
            responses.push(NumberDataPoint {
                attributes: vec![
                    attr("envoy.cluster_name", &cluster),
                    attr("envoy.response_code_class", class),
                ],
                value: Some(number_data_point::Value::AsInt(value)),
                ..Default::default()
            });
        }
        let mut counts = vec![0u64; bounds.len() + 1];
        for (i, n) in [(9, 60u64), (12, 30), (16, 9), (22, 1)] {
            counts[i] = n;
        }
        times.push(HistogramDataPoint {
            attributes: vec![attr("envoy.cluster_name", &cluster)],
            count: 100,
            sum: Some(1500.0),
            bucket_counts: counts,
            explicit_bounds: bounds.clone(),
            ..Default::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource::default()),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "cluster.upstream_rq_xx".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: responses,
                            aggregation_temporality: AggregationTemporality::Delta as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "cluster.upstream_rq_time".into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: times,
                            aggregation_temporality: AggregationTemporality::Delta as i32,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A batch of five spans (two traces of a server and a client span, and one more), as Envoy
/// exports them.
fn spans(seq: u64, services: usize) -> ExportTraceServiceRequest {
    let mut out = Vec::new();
    for i in 0..5u64 {
        let n = seq * 5 + i;
        let trace = (u128::from(n / 2) + 1).to_be_bytes().to_vec();
        let id = (n + 1).to_be_bytes().to_vec();
        let parent = if !n.is_multiple_of(2) {
            n.to_be_bytes().to_vec()
        } else {
            Vec::new()
        };
        let service = (n as usize / 2) % services;
        out.push(Span {
            trace_id: trace,
            span_id: id,
            parent_span_id: parent,
            name: if n.is_multiple_of(2) {
                "ingress".into()
            } else {
                format!("router service_bench_s{service}_80 egress")
            },
            kind: if n.is_multiple_of(2) { 2 } else { 3 },
            start_time_unix_nano: 1_700_000_000_000_000_000 + n * 1000,
            end_time_unix_nano: 1_700_000_000_000_000_000 + n * 1000 + 1_500_000,
            attributes: vec![
                attr("guid:x-request-id", &format!("{:032x}", n / 2)),
                attr("upstream_cluster", &format!("service/bench/s{service}/80")),
                attr("http.status_code", "200"),
                attr("http.url", "http://r1.bench.example/checkout/cart"),
                attr("component", "proxy"),
            ],
            status: Some(Status {
                code: status::StatusCode::Unset as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attr("service.name", "gateway/bench/edge")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: out,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn config(services: usize) -> String {
    let mut yaml = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n");
    for i in 0..services {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\n  namespace: bench\n\
             spec:\n  ports: [{{name: http, port: 80}}]\n"
        ));
    }
    yaml
}

/// The value of a sample line of `/metrics`.
fn metric_value(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs the benchmark and prints its figures.
pub fn run(args: Args) -> anyhow::Result<()> {
    let fd_limit = procfs::raise_fd_limit();
    if fd_limit < args.proxies as u64 + 256 {
        anyhow::bail!(
            "the open-file limit is {fd_limit}; {} proxies need more (ulimit -n)",
            args.proxies
        );
    }
    let tmp = tempfile::tempdir()?;
    let work = tmp.path().to_path_buf();
    let dir = work.join("config");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("services.yaml"), config(args.services))?;
    let cp = ControlPlane::start(
        &dir,
        &work,
        &[
            "--xds-max-connections-per-peer",
            "100000",
            "--xds-max-connections",
            "100000",
        ],
    )?;
    let pid = cp
        .pid()
        .ok_or_else(|| anyhow::anyhow!("no control-plane pid"))?;
    std::thread::sleep(Duration::from_secs(2));
    let idle_kib = procfs::rss_kib(pid)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let exports = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let span_batches = Arc::new(AtomicU64::new(0));
    let endpoint = format!("http://{}", cp.xds);
    let flush = Duration::from_secs(args.flush_secs);
    let stop = Instant::now() + flush + Duration::from_secs(args.seconds);
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for proxy in 0..args.proxies {
            let endpoint = endpoint.clone();
            let (exports, bytes, failures) = (exports.clone(), bytes.clone(), failures.clone());
            let request = export(proxy, args.clusters_per_proxy, args.services);
            let size = request.encoded_len() as u64;
            // Proxies flush at their own moments, spread over the interval.
            let offset = flush.mul_f64(proxy as f64 / args.proxies as f64);
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let Ok(channel) = tonic::transport::Endpoint::from_shared(endpoint)?
                    .connect()
                    .await
                else {
                    failures.fetch_add(1, Ordering::Relaxed);
                    return Ok::<(), anyhow::Error>(());
                };
                let mut client = MetricsServiceClient::new(channel);
                let mut tick = tokio::time::interval(flush);
                while Instant::now() < stop {
                    tick.tick().await;
                    match client.export(request.clone()).await {
                        Ok(_) => {
                            exports.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(size, Ordering::Relaxed);
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(())
            }));
        }
        if args.spans_per_second > 0 {
            let endpoint = endpoint.clone();
            let batches = span_batches.clone();
            let services = args.services;
            let per_second = args.spans_per_second;
            tasks.push(tokio::spawn(async move {
                let channel = tonic::transport::Endpoint::from_shared(endpoint)?
                    .connect()
                    .await?;
                let mut client = TraceServiceClient::new(channel);
                let period = Duration::from_secs_f64(5.0 / per_second as f64);
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut seq = 0;
                while Instant::now() < stop {
                    tick.tick().await;
                    let _ = client.export(spans(seq, services)).await;
                    seq += 1;
                    batches.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }));
        }
        // Warm-up: every proxy connected and flushed once.
        tokio::time::sleep(flush + Duration::from_secs(1)).await;
        let cpu0 = procfs::cpu_seconds(pid).unwrap_or(0.0);
        let (e0, b0, s0) = (
            exports.load(Ordering::Relaxed),
            bytes.load(Ordering::Relaxed),
            span_batches.load(Ordering::Relaxed),
        );
        let t0 = Instant::now();
        let mut peak_kib = 0;
        while Instant::now() + Duration::from_secs(1) < stop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            peak_kib = peak_kib.max(procfs::rss_kib(pid).unwrap_or(0));
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = procfs::cpu_seconds(pid).unwrap_or(0.0) - cpu0;
        let exports_s = (exports.load(Ordering::Relaxed) - e0) as f64 / elapsed;
        let bytes_s = (bytes.load(Ordering::Relaxed) - b0) as f64 / elapsed;
        let spans_s = (span_batches.load(Ordering::Relaxed) - s0) as f64 * 5.0 / elapsed;
        let services: serde_json::Value = serde_json::from_str(
            &trellis_harness::http_get_text(cp.admin, "/api/services").unwrap_or_default(),
        )
        .unwrap_or_default();
        let scored = services
            .as_array()
            .map(|s| {
                s.iter()
                    .filter(|s| s["rps"].as_f64().unwrap_or(0.0) > 0.0)
                    .count()
            })
            .unwrap_or(0);
        let metrics = trellis_harness::http_get_text(cp.admin, "/metrics").unwrap_or_default();
        println!(
            "telemetry: {} proxies x {} clusters every {} s, {} Services, {:.0} spans/s, {:.0} s measured",
            args.proxies, args.clusters_per_proxy, args.flush_secs, args.services, spans_s, elapsed
        );
        println!(
            "  exports/s {exports_s:.0}   payload {:.2} MB/s   failed exports {}",
            bytes_s / 1e6,
            failures.load(Ordering::Relaxed)
        );
        println!(
            "  control plane CPU {:.1}% of a core   RSS idle {:.1} MiB, loaded peak {:.1} MiB (+{:.1} MiB, {:.1} KiB per proxy)",
            cpu / elapsed * 100.0,
            idle_kib as f64 / 1024.0,
            peak_kib as f64 / 1024.0,
            (peak_kib.saturating_sub(idle_kib)) as f64 / 1024.0,
            peak_kib.saturating_sub(idle_kib) as f64 / args.proxies as f64
        );
        println!(
            "  Services scored {scored}   trace store {:.1} MiB, {} spans",
            metric_value(&metrics, "trellis_trace_store_bytes").unwrap_or(0.0) / 1048576.0,
            metric_value(&metrics, "trellis_trace_store_spans").unwrap_or(0.0)
        );
        for t in tasks {
            let _ = t.await;
        }
    });
    drop(cp);
    Ok(())
}
