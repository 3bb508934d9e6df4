//! `console-bench [--services N] [--runs R]`: how long the console's pages take to build on
//! the server at N simulated Services (default 2000): the Services table (sorted, with its
//! namespace roll-ups), the graph of a namespace holding all of them (capped and collapsed),
//! one Service's page, and a vet page of N/4 findings. Prints the median and the slowest of R
//! runs (default 50) and each page's size. Run it on a release build:
//! `cargo run --release -p trellis-console --bin console-bench`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use trellis_console::data::{
    EdgeRow, FindingView, HistoryPoint, ObjectView, ServiceDetail, ServiceRow,
};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn service(i: usize, namespaces: usize) -> ServiceRow {
    let state = match i % 10 {
        0 => "failing",
        1 | 2 => "degraded",
        3 => "idle",
        _ => "healthy",
    };
    ServiceRow {
        namespace: format!("team-{}", i % namespaces),
        name: format!("service-{i:05}"),
        rps: (i % 97) as f64 * 1.7,
        error_rate: (i % 13) as f64 / 1000.0,
        p50_ms: Some((i % 40) as f64 + 1.0),
        p99_ms: Some((i % 400) as f64 + 10.0),
        within_objective: None,
        retry_ratio: 0.0,
        health_score: (state != "idle").then_some((i % 101) as u8),
        health_state: state.to_string(),
        health_reason: "error rate 0.4% burns the 99.9% objective 4.0x".to_string(),
    }
}

/// Times `f` `runs` times: (median, slowest, output size).
fn time(runs: usize, mut f: impl FnMut() -> String) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(runs);
    let mut size = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let out = f();
        times.push(started.elapsed());
        size = out.len();
    }
    times.sort();
    (times[times.len() / 2], times[times.len() - 1], size)
}

fn main() {
    let n = arg("--services", 2000);
    let runs = arg("--runs", 50).max(1);
    let rows: Vec<ServiceRow> = (0..n).map(|i| service(i, 20)).collect();
    // One namespace holding all N, each called by three others.
    let crowd: Vec<ServiceRow> = (0..n)
        .map(|i| ServiceRow {
            namespace: "crowd".into(),
            ..service(i, 1)
        })
        .collect();
    let mut edges = BTreeMap::new();
    for (i, r) in crowd.iter().enumerate() {
        let callers = (1..=3)
            .map(|k| EdgeRow {
                caller: format!(
                    "spiffe://cluster.local/ns/crowd/sa/service-{:05}",
                    (i + k * 7) % n
                ),
                mtls: true,
                health: service(i, 1),
            })
            .collect();
        edges.insert((r.namespace.clone(), r.name.clone()), callers);
    }
    let workloads = crowd
        .iter()
        .map(|r| {
            (
                ("crowd".to_string(), r.name.clone()),
                vec![trellis_console::graph::Workload::Service(
                    "crowd".into(),
                    r.name.clone(),
                )],
            )
        })
        .collect();
    let detail = ServiceDetail {
        service: rows[0].clone(),
        edges: (0..64)
            .map(|i| EdgeRow {
                caller: format!("spiffe://cluster.local/ns/a/sa/c{i}"),
                mtls: true,
                health: service(i, 1),
            })
            .collect(),
        history: (0..30)
            .map(|i| HistoryPoint {
                score: Some(90 - i as u8),
                state: "degraded".into(),
                requests: 1000,
                failures: i,
                p50_ms: Some(3.0),
                p99_ms: Some(40.0),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let findings: Vec<FindingView> = (0..n / 4)
        .map(|i| FindingView {
            severity: "warning".into(),
            code: "TRL0173".into(),
            object: ObjectView { kind: "HTTPRoute".into(), namespace: format!("team-{}", i % 20), name: format!("route-{i}") },
            field: "spec.rules[0].backendRefs[0]".into(),
            message: "Service team/x has no ready endpoints: the requests this rule sends to it are answered 503".into(),
            fix: "check the Service's selector".into(),
        })
        .collect();
    println!("console pages at {n} Services ({runs} runs each, median / slowest, size):");
    let report = |page: &str, (median, slowest, size): (Duration, Duration, usize)| {
        println!(
            "  {page:<34} {:>8.2} ms / {:>8.2} ms  {:>8} bytes",
            median.as_secs_f64() * 1e3,
            slowest.as_secs_f64() * 1e3,
            size
        );
    };
    report(
        "/ui/services (sorted by score)",
        time(runs, || {
            trellis_console::services::services_page(rows.clone(), "health_score", None, &[])
                .unwrap_or_default()
        }),
    );
    report(
        "/ui/services?sort=p99_ms",
        time(runs, || {
            trellis_console::services::services_page(rows.clone(), "p99_ms", None, &[])
                .unwrap_or_default()
        }),
    );
    report(
        "/ui/services?namespace=team-3",
        time(runs, || {
            trellis_console::services::services_page(
                rows.clone(),
                "health_score",
                Some("team-3"),
                &[],
            )
            .unwrap_or_default()
        }),
    );
    report(
        &format!("/ui/graph ({n} in one namespace)"),
        time(runs, || {
            let g = trellis_console::graph::graph("crowd", &crowd, &edges, &workloads);
            trellis_console::graph::graph_page(&g, &["crowd".to_string()])
        }),
    );
    report(
        "/ui/services/{ns}/{name}",
        time(runs, || trellis_console::service::service_page(&detail)),
    );
    report(
        &format!("/ui/vet ({} findings)", findings.len()),
        time(runs, || trellis_console::vet::vet_page(&findings)),
    );
}
