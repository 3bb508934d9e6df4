//! `memory`: the control plane's resident memory with a small configuration, a large one, and
//! the small one again (does memory come back?).

use crate::procfs;
use crate::scenario::{self, GATEWAY, NAMESPACE};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use trellis_harness::ControlPlane;
use trellis_harness::xds_client::{self, ClientConfig};

/// Seconds between a configuration being applied and the RSS sample.
const SETTLE_SECS: u64 = 3;

/// Options of `trellis-bench memory`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Routes in the small configuration.
    #[arg(long, default_value_t = 10)]
    pub small: usize,
    /// Routes in the large configuration.
    #[arg(long, default_value_t = 1000)]
    pub large: usize,
    /// Small -> large -> small cycles.
    #[arg(long, default_value_t = 2)]
    pub cycles: usize,
}

/// Runs the benchmark and prints its figures.
pub fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let work = tmp.path().to_path_buf();
    let config = work.join("config");
    std::fs::create_dir_all(&config)?;
    scenario::write_atomic(
        &config.join("gateway.yaml"),
        &scenario::gateway_yaml([127, 0, 0, 1].into(), 18080),
    )?;
    let backend = SocketAddr::from(([10, 0, 0, 1], 8080));
    let routes_file = config.join("routes.yaml");
    scenario::write_atomic(&routes_file, &scenario::routes_yaml(args.small, &[backend]))?;
    let cp = ControlPlane::start(&config, &work, &[])?;
    let pid = cp
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the control plane is not running"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // One proxy (a simulated Envoy speaking Delta) holds the configuration throughout, so
    // the figures include what serving it costs.
    let _proxy = runtime.block_on(async {
        let channel = xds_client::connect(cp.xds).await?;
        xds_client::start(
            channel,
            ClientConfig {
                node_id: "bench-memory".into(),
                gateway: GATEWAY.into(),
                delta: true,
                nack: Default::default(),
                pod: None,
            },
        )
        .await
    })?;
    println!(
        "memory: control plane RSS with {} routes, then {}, then {} again ({} cycles); each \
         route has its own Service and EndpointSlice; one connected proxy",
        args.small, args.large, args.small, args.cycles
    );
    let mut steps = vec![args.small];
    for _ in 0..args.cycles {
        steps.push(args.large);
        steps.push(args.small);
    }
    let mut figures = Vec::new();
    for (i, routes) in steps.iter().enumerate() {
        if i > 0 {
            scenario::write_atomic(&routes_file, &scenario::routes_yaml(*routes, &[backend]))?;
        }
        let took = settle(&cp, *routes)?;
        // The control plane gives freed memory back a second after a change; samples taken
        // later (tried up to 14 s) read the same.
        std::thread::sleep(Duration::from_secs(SETTLE_SECS));
        let rss = procfs::rss_kib(pid)? as f64 / 1024.0;
        println!(
            "  {routes:>5} routes: RSS {rss:6.1} MiB (applied by the proxy {:.0} ms after the write)",
            took.as_secs_f64() * 1000.0
        );
        figures.push((*routes, rss));
    }
    let first = figures[0].1;
    let peak = figures
        .iter()
        .filter(|(r, _)| *r == args.large)
        .map(|(_, m)| *m)
        .fold(0.0, f64::max);
    let last = figures.last().map_or(first, |f| f.1);
    println!(
        "memory result: {peak:.1} MiB at {} routes (target < 64 MiB): {}; back at {} routes \
         {last:.1} MiB, {:+.0}% of the first {first:.1} MiB (target within 20%): {}",
        args.large,
        if peak < 64.0 { "MET" } else { "MISSED" },
        args.small,
        (last / first - 1.0) * 100.0,
        if (last / first - 1.0).abs() <= 0.20 {
            "MET"
        } else {
            "MISSED"
        }
    );
    drop(cp);
    Ok(())
}

/// Waits until the Gateway reports `routes` attached routes and its proxy has applied the
/// configuration (Programmed by the proxy's ACK).
fn settle(cp: &ControlPlane, routes: usize) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let name = format!("{NAMESPACE}/edge");
    loop {
        if let Some(status) = cp.object_status("Gateway", &name)? {
            let attached = status["status"]["listeners"][0]["attachedRoutes"].as_u64();
            let programmed = status["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Programmed"))
                .is_some_and(|c| {
                    c["status"] == "True"
                        && c["message"]
                            .as_str()
                            .is_some_and(|m| m.starts_with("Applied by 1 of 1"))
                });
            if attached == Some(routes as u64) && programmed {
                return Ok(t0.elapsed());
            }
        }
        if t0.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("the Gateway did not settle on {routes} routes within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
