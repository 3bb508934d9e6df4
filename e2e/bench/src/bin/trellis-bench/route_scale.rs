//! `route-scale`: N HTTPRoutes written at once; how long until every one answers 200 through
//! a real Envoy.

use crate::scenario::{self, GATEWAY, NAMESPACE};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trellis_harness::{ControlPlane, Echo, Envoy, private_loopback};

/// Options of `trellis-bench route-scale`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of HTTPRoutes (each with its own Service and EndpointSlice).
    #[arg(long, default_value_t = 1000)]
    pub routes: usize,
    /// Measurements to take (routes written, measured, removed).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Envoy speaks state-of-the-world ADS instead of Delta.
    #[arg(long)]
    pub sotw: bool,
    /// The control plane's debounce window (`trellis serve --debounce-ms`).
    #[arg(long, default_value_t = 100)]
    pub debounce_ms: u64,
    /// Concurrent probing connections.
    #[arg(long, default_value_t = 8)]
    pub probes: usize,
    /// Envoy worker threads (`--concurrency`).
    #[arg(long, default_value_t = 2)]
    pub envoy_workers: u32,
}

/// Runs the benchmark and prints its figures.
pub fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let work = tmp.path().to_path_buf();
    let config = work.join("config");
    std::fs::create_dir_all(&config)?;
    let (echo_ip, _) = private_loopback();
    let echo = Echo::start(&work, echo_ip, "backend-5d8f7c9b6-x2x7q", NAMESPACE)?;
    let (gw_ip, gw_port) = private_loopback();
    let gateway = SocketAddr::from((gw_ip, gw_port));
    scenario::write_atomic(
        &config.join("gateway.yaml"),
        &scenario::gateway_yaml(gw_ip, gw_port),
    )?;
    let debounce = args.debounce_ms.to_string();
    let cp = ControlPlane::start(&config, &work, &["--debounce-ms", &debounce])?;
    let bootstrap = cp.bootstrap(GATEWAY, !args.sotw, "bench-envoy")?;
    let envoy = Envoy::start(&bootstrap, &work, "envoy", args.envoy_workers)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "route-scale: {} HTTPRoutes (each with a Service and an EndpointSlice) written at once to \
         one Gateway; time until every route answers 200 through Envoy 1.40 ({} ADS, debounce {} ms, \
         {} Envoy workers, {} probing connections)",
        args.routes,
        if args.sotw { "SotW" } else { "Delta" },
        args.debounce_ms,
        args.envoy_workers,
        args.probes
    );
    // The listener is up once an unknown host gets Envoy's 404.
    runtime.block_on(probe(gateway, 1, 404, Duration::from_secs(30), 1))?;
    let routes_file = config.join("routes.yaml");
    let mut results = Vec::new();
    for run in 1..=args.runs {
        let text = scenario::routes_yaml(args.routes, &[echo.http]);
        let cpu_before = cp_cpu(&cp);
        let t0 = Instant::now();
        let wall0 = jiff::Timestamp::now();
        scenario::write_atomic(&routes_file, &text)?;
        let times = runtime.block_on(probe_from(
            t0,
            gateway,
            args.routes,
            200,
            Duration::from_secs(60),
            args.probes,
        ))?;
        let mut sorted = times.clone();
        sorted.sort();
        let all = sorted.last().copied().unwrap_or_default();
        let first = sorted.first().copied().unwrap_or_default();
        let half = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
        let log = cp.log();
        let logged = |message: &str| {
            logged_after(&log, message, wall0).map_or("?".to_string(), |d| format!("{:.0}", ms(d)))
        };
        println!(
            "  run {run}: first route answered 200 after {:>5.0} ms, half after {:>5.0} ms, all {} \
             after {:>5.0} ms (control plane: read after {} ms, published after {} ms, CPU {:.2} \
             s)",
            ms(first),
            ms(half),
            args.routes,
            ms(all),
            logged("config directory reloaded"),
            logged("configuration published"),
            cp_cpu(&cp) - cpu_before
        );
        results.push(all);
        std::fs::remove_file(&routes_file)?;
        runtime.block_on(probe(
            gateway,
            args.routes,
            404,
            Duration::from_secs(60),
            args.probes,
        ))?;
    }
    results.sort();
    let median = results[results.len() / 2];
    println!(
        "route-scale result: median {:.0} ms until all {} routes answer 200 (target < 1000 ms): {}",
        ms(median),
        args.routes,
        if median < Duration::from_secs(1) {
            "MET"
        } else {
            "MISSED"
        }
    );
    drop(envoy);
    drop(cp);
    drop(echo);
    Ok(())
}

/// How long after `since` the control plane first logged `message` (its text log lines start
/// with an RFC 3339 timestamp).
fn logged_after(log: &str, message: &str, since: jiff::Timestamp) -> Option<Duration> {
    log.lines()
        .filter(|line| line.contains(message))
        .filter_map(|line| {
            line.split_whitespace()
                .next()?
                .parse::<jiff::Timestamp>()
                .ok()
        })
        .find(|at| *at >= since)
        .and_then(|at| Duration::try_from(at.duration_since(since)).ok())
}

fn cp_cpu(cp: &ControlPlane) -> f64 {
    cp.pid()
        .and_then(|pid| crate::procfs::cpu_seconds(pid).ok())
        .unwrap_or(0.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn probe(
    gateway: SocketAddr,
    n: usize,
    want: u16,
    timeout: Duration,
    workers: usize,
) -> anyhow::Result<Vec<Duration>> {
    probe_from(Instant::now(), gateway, n, want, timeout, workers).await
}

/// Sends requests for routes `0..n` through `gateway` until each has answered `want`; returns
/// when each first did, counted from `t0`. Probing is gentle until the first route answers;
/// after that, a pass that finds nothing new waits 2 ms before the next.
async fn probe_from(
    t0: Instant,
    gateway: SocketAddr,
    n: usize,
    want: u16,
    timeout: Duration,
    workers: usize,
) -> anyhow::Result<Vec<Duration>> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(workers)
        .build_http();
    let mut first = vec![None; n];
    // Until one route answers, a single connection probes them in turn, a millisecond apart:
    // probing every route at full speed would take the CPU the control plane and Envoy need.
    let mut i = 0;
    loop {
        if t0.elapsed() > timeout {
            anyhow::bail!("no route answers {want} after {timeout:?}");
        }
        if probe_once(&client, gateway, i).await? == Some(want) {
            first[i] = Some(t0.elapsed());
            break;
        }
        i = (i + 1) % n;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Then every route, on `workers` connections.
    let done: Arc<Mutex<Vec<Option<Duration>>>> = Arc::new(Mutex::new(first));
    let mut tasks = Vec::new();
    for w in 0..workers.min(n) {
        let client = client.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let pending: Vec<usize> = {
                    let d = done.lock().unwrap_or_else(|e| e.into_inner());
                    (w..n)
                        .step_by(workers)
                        .filter(|i| d[*i].is_none())
                        .collect()
                };
                if pending.is_empty() {
                    return Ok(());
                }
                if t0.elapsed() > timeout {
                    anyhow::bail!(
                        "{} routes still do not answer {want} after {timeout:?}",
                        pending.len()
                    );
                }
                let mut progress = false;
                for i in pending {
                    if probe_once(&client, gateway, i).await? == Some(want) {
                        done.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(t0.elapsed());
                        progress = true;
                    }
                }
                if !progress {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let done = done.lock().unwrap_or_else(|e| e.into_inner());
    Ok(done.iter().map(|d| d.unwrap_or_default()).collect())
}

/// One GET for route `i` through `gateway`: its status, or `None` if the request failed.
async fn probe_once<C>(
    client: &Client<C, Empty<Bytes>>,
    gateway: SocketAddr,
    i: usize,
) -> anyhow::Result<Option<u16>>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let request = hyper::Request::get(format!("http://{gateway}/"))
        .header(hyper::header::HOST, scenario::host(i))
        .body(Empty::<Bytes>::new())?;
    let Ok(response) = client.request(request).await else {
        return Ok(None);
    };
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok(Some(status))
}
