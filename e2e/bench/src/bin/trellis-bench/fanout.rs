//! `fanout`: thousands of simulated proxies (Delta and SotW ADS streams, each with its own node
//! id) on one control plane; one EndpointSlice changes; how long until every proxy has the new
//! endpoints, what was sent, and what the control plane spent.

use crate::procfs;
use crate::scenario::{self, GATEWAY};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use trellis_harness::ControlPlane;
use trellis_harness::xds_client::{self, Client, ClientConfig, types};

/// Options of `trellis-bench fanout`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulated proxies speaking Delta ADS.
    #[arg(long, default_value_t = 5000)]
    pub delta_clients: usize,
    /// Simulated proxies speaking state-of-the-world ADS.
    #[arg(long, default_value_t = 1000)]
    pub sotw_clients: usize,
    /// HTTPRoutes (each with a Service and an EndpointSlice) in the configuration every proxy
    /// holds.
    #[arg(long, default_value_t = 50)]
    pub routes: usize,
    /// EndpointSlice changes to measure, one after another.
    #[arg(long, default_value_t = 5)]
    pub changes: usize,
    /// ADS streams sharing one HTTP/2 connection (1: a connection per proxy, like real Envoys).
    #[arg(long, default_value_t = 1)]
    pub streams_per_connection: usize,
    /// The control plane's debounce window when the benchmark starts its own.
    #[arg(long, default_value_t = 100)]
    pub debounce_ms: u64,
    /// Use a running `trellis serve` at this xDS address instead of starting one (with
    /// `--config-dir`, the directory it watches, where the benchmark writes its objects).
    #[arg(long, requires = "config_dir")]
    pub xds_address: Option<SocketAddr>,
    /// The running control plane's config directory (with `--xds-address`).
    #[arg(long, requires = "xds_address")]
    pub config_dir: Option<PathBuf>,
    /// The running control plane's process id, for its RSS and CPU (with `--xds-address`).
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// Runs the benchmark and prints its figures.
pub fn run(args: Args) -> anyhow::Result<()> {
    let fd_limit = procfs::raise_fd_limit();
    let clients = args.delta_clients + args.sotw_clients;
    let needed = (clients / args.streams_per_connection.max(1)) as u64 + 256;
    if fd_limit < needed {
        anyhow::bail!(
            "the open-file limit is {fd_limit}; {clients} proxies need about {needed} (raise it \
             with `ulimit -n`, or use --streams-per-connection)"
        );
    }
    let tmp = tempfile::tempdir()?;
    let work = tmp.path().to_path_buf();
    let (config, xds, pid, _cp) = match (&args.xds_address, &args.config_dir) {
        (Some(xds), Some(dir)) => (dir.clone(), *xds, args.server_pid, None),
        _ => {
            let config = work.join("config");
            std::fs::create_dir_all(&config)?;
            let debounce = args.debounce_ms.to_string();
            // Every simulated proxy connects from 127.0.0.1: lift the per-peer cap.
            let cp = ControlPlane::start(
                &config,
                &work,
                &[
                    "--debounce-ms",
                    &debounce,
                    "--xds-max-connections-per-peer",
                    "100000",
                    "--xds-max-connections",
                    "100000",
                ],
            )?;
            (config, cp.xds, cp.pid(), Some(cp))
        }
    };
    let gateway_file = config.join("bench-gateway.yaml");
    let routes_file = config.join("bench-routes.yaml");
    let slice_file = config.join("bench-slice.yaml");
    let backend =
        |n: usize| SocketAddr::from(([10, 0, (n / 250) as u8, (n % 250) as u8 + 1], 8080));
    scenario::write_atomic(
        &gateway_file,
        &scenario::gateway_yaml([127, 0, 0, 1].into(), 18080),
    )?;
    let mut routes = String::new();
    for i in 0..args.routes {
        routes.push_str(&scenario::route_and_service_yaml(i));
        if i > 0 {
            routes.push_str(&scenario::slice_yaml(i, &[backend(i)]));
        }
    }
    scenario::write_atomic(&routes_file, &routes)?;
    scenario::write_atomic(&slice_file, &scenario::slice_yaml(0, &[backend(0)]))?;
    std::thread::sleep(Duration::from_millis(args.debounce_ms + 500));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(measure(&args, xds, pid, &slice_file, backend));
    for f in [&gateway_file, &routes_file, &slice_file] {
        let _ = std::fs::remove_file(f);
    }
    drop(runtime);
    result
}

struct Proxy {
    delta: bool,
    client: Client,
}

async fn measure(
    args: &Args,
    xds: SocketAddr,
    pid: Option<u32>,
    slice_file: &std::path::Path,
    backend: impl Fn(usize) -> SocketAddr,
) -> anyhow::Result<()> {
    let rss = || pid.and_then(|p| procfs::rss_kib(p).ok());
    let cpu = || pid.and_then(|p| procfs::cpu_seconds(p).ok());
    let clients = args.delta_clients + args.sotw_clients;
    println!(
        "fanout: {} Delta + {} SotW simulated proxies of one Gateway ({} routes, {} clusters \
         each), {} stream(s) per connection",
        args.delta_clients,
        args.sotw_clients,
        args.routes,
        args.routes,
        args.streams_per_connection
    );
    // Let the control plane settle, then take its idle footprint.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss();

    let started = Instant::now();
    let mut proxies = Vec::with_capacity(clients);
    let mut channel = None;
    for k in 0..clients {
        if k % args.streams_per_connection.max(1) == 0 {
            channel = Some(xds_client::connect(xds).await?);
        }
        let delta = k < args.delta_clients;
        let config = ClientConfig {
            node_id: format!("bench-{}-{k}", if delta { "delta" } else { "sotw" }),
            gateway: GATEWAY.to_string(),
            delta,
            nack: Default::default(),
            pod: None,
        };
        let channel = channel
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no channel"))?;
        proxies.push(Proxy {
            delta,
            client: xds_client::start(channel, config).await?,
        });
    }
    let wanted = args.routes;
    wait_until(Duration::from_secs(300), || {
        proxies.iter().all(|p| holds_endpoints(&p.client) >= wanted)
    })
    .await
    .map_err(|_| {
        let synced = proxies
            .iter()
            .filter(|p| holds_endpoints(&p.client) >= wanted)
            .count();
        anyhow::anyhow!("only {synced} of {clients} proxies received their configuration")
    })?;
    println!(
        "  {clients} proxies connected and holding their configuration after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = rss();
    if let (Some(idle), Some(connected)) = (rss_idle, rss_connected) {
        let per_proxy = (connected.saturating_sub(idle)) as f64 * 1024.0 / clients as f64;
        println!(
            "  control plane RSS: {:.1} MiB idle, {:.1} MiB with {clients} proxies: {:.1} KB per \
             connected proxy (target < 50 KB): {}",
            idle as f64 / 1024.0,
            connected as f64 / 1024.0,
            per_proxy / 1000.0,
            verdict(per_proxy < 50_000.0)
        );
    }

    let mut all_delta = Vec::new();
    let mut all_sotw = Vec::new();
    for change in 1..=args.changes {
        let cpu_before = cpu();
        let own_cpu_before = procfs::cpu_seconds(std::process::id()).ok();
        let t0 = Instant::now();
        let endpoints = [backend(10_000 + change)];
        scenario::write_atomic(slice_file, &scenario::slice_yaml(0, &endpoints))?;
        let converged = wait_until(Duration::from_secs(60), || {
            proxies
                .iter()
                .all(|p| first_after(&p.client, types::ENDPOINT, t0).is_some())
        })
        .await;
        if converged.is_err() {
            let got = proxies
                .iter()
                .filter(|p| first_after(&p.client, types::ENDPOINT, t0).is_some())
                .count();
            anyhow::bail!("change {change}: only {got} of {clients} proxies got it within 60 s");
        }
        let cpu_spent = cpu().zip(cpu_before).map(|(a, b)| a - b);
        let own_cpu_spent = procfs::cpu_seconds(std::process::id())
            .ok()
            .zip(own_cpu_before)
            .map(|(a, b)| a - b);
        let mut delta = Vec::new();
        let mut sotw = Vec::new();
        let mut bytes: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
        for p in &proxies {
            let at = first_after(&p.client, types::ENDPOINT, t0).unwrap_or(t0);
            if p.delta {
                delta.push(at - t0);
            } else {
                sotw.push(at - t0);
            }
            let log = p.client.log.lock().unwrap_or_else(|e| e.into_inner());
            for r in log.received.iter().filter(|r| r.at > t0) {
                let e = bytes.entry(short(&r.type_url)).or_default();
                e.0 += r.bytes;
                e.1 += 1;
            }
        }
        let sent: Vec<String> = bytes
            .iter()
            .map(|(t, (b, n))| {
                format!(
                    "{t} {n} responses, {:.0} bytes per proxy",
                    *b as f64 / clients as f64
                )
            })
            .collect();
        println!(
            "  change {change}: Delta {}; SotW {}; CPU: control plane {}, simulated proxies {}; \
             sent: {}",
            summary(&mut delta),
            summary(&mut sotw),
            cpu_spent.map_or("?".into(), |c| format!("{c:.2} s")),
            own_cpu_spent.map_or("?".into(), |c| format!("{c:.2} s")),
            sent.join(", ")
        );
        all_delta.extend(delta);
        all_sotw.extend(sotw);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut all: Vec<Duration> = all_delta.iter().chain(&all_sotw).copied().collect();
    let p99 = percentile(&mut all, 0.99);
    println!(
        "fanout result over {} changes: Delta {}; SotW {}; all p99 {:.0} ms (target < 250 ms): {}",
        args.changes,
        summary(&mut all_delta),
        summary(&mut all_sotw),
        ms(p99),
        verdict(p99 < Duration::from_millis(250))
    );
    Ok(())
}

pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}

fn short(type_url: &str) -> &'static str {
    match type_url {
        types::CLUSTER => "CDS",
        types::ENDPOINT => "EDS",
        types::LISTENER => "LDS",
        types::ROUTE => "RDS",
        _ => "other",
    }
}

pub(crate) fn holds_endpoints(client: &Client) -> usize {
    let log = client.log.lock().unwrap_or_else(|e| e.into_inner());
    log.held.get(types::ENDPOINT).map_or(0, |h| h.len())
}

pub(crate) fn first_after(client: &Client, type_url: &str, t0: Instant) -> Option<Instant> {
    let log = client.log.lock().unwrap_or_else(|e| e.into_inner());
    log.received
        .iter()
        .rev()
        .take_while(|r| r.at > t0)
        .filter(|r| r.type_url == type_url)
        .map(|r| r.at)
        .min()
}

pub(crate) async fn wait_until(
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<(), ()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn percentile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    let i = ((values.len() as f64 * p).ceil() as usize).clamp(1, values.len()) - 1;
    values[i]
}

pub(crate) fn summary(values: &mut [Duration]) -> String {
    if values.is_empty() {
        return "none".into();
    }
    format!(
        "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        ms(percentile(values, 0.5)),
        ms(percentile(values, 0.99)),
        ms(percentile(values, 1.0))
    )
}
