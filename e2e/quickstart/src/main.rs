//! `trellis-quickstart`: the main job of `./dev up`.
//!
//! Runs the Trellis control plane on a config directory (by default `deploy/quickstart`), a
//! real Envoy for every Gateway in it, and an echo backend for every endpoint its
//! EndpointSlices list, then prints the requests that reach them. Everything stops on Ctrl-C.
//! With `--check` it sends those requests itself, reports, and exits (non-zero on failure).

use anyhow::{Context, bail};
use clap::Parser;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use trellis_harness::{ControlPlane, Echo, Envoy, eventually, request, workspace_root};
use trellis_model::gateway::{HttpRoute, PathMatchType};
use trellis_model::{InputSet, ObjectKey};
use trellis_sources::{FileProvider, Severity};

/// Command line of `trellis-quickstart`.
#[derive(Debug, Parser)]
#[command(name = "trellis-quickstart", about)]
struct Args {
    /// The config directory to serve.
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Connect Envoy with incremental (Delta) ADS.
    #[arg(long)]
    delta: bool,
    /// Send the sample requests, report, and exit instead of running until Ctrl-C.
    #[arg(long)]
    check: bool,
    /// Keep logs and status under this directory (a temporary one by default).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// A sample request derived from a route.
#[derive(Debug)]
struct Sample {
    gateway: SocketAddr,
    method: String,
    host: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Sample {
    fn curl(&self) -> String {
        let mut cmd = String::from("curl -si");
        if self.method != "GET" {
            cmd.push_str(&format!(" -X {}", self.method));
        }
        cmd.push_str(&format!(" -H 'Host: {}'", self.host));
        for (k, v) in &self.headers {
            cmd.push_str(&format!(" -H '{k}: {v}'"));
        }
        cmd.push_str(&format!(" http://{}{}", self.gateway, self.path));
        cmd
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config_dir = args
        .config_dir
        .clone()
        .unwrap_or_else(|| workspace_root().join("deploy/quickstart"));
    let config_dir = config_dir
        .canonicalize()
        .with_context(|| format!("config directory {}", config_dir.display()))?;
    let _tmp;
    let work = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            let tmp = tempfile::tempdir()?;
            let path = tmp.path().to_path_buf();
            _tmp = tmp;
            path
        }
    };

    let load = FileProvider::new(&config_dir).load();
    for d in &load.diagnostics {
        let level = if d.severity == Severity::Error {
            "error"
        } else {
            "warning"
        };
        eprintln!("{level}: {d}");
    }
    let input = load.input;

    // The Gateways' addresses must be free: another process there would share or steal them.
    let gateways = gateway_addresses(&input);
    for (key, addresses) in &gateways {
        for addr in addresses {
            std::net::TcpListener::bind(addr).with_context(|| {
                format!("Gateway {key} listens on {addr}, which is in use on this machine; stop what uses it or change the Gateway")
            })?;
        }
    }

    println!("Starting the sample backends...");
    let mut pods = Vec::new();
    for (key, slice) in &input.endpoint_slices {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find_map(|p| p.port)
            .unwrap_or(3000);
        for (i, endpoint) in slice.endpoints.iter().enumerate() {
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let pod = endpoint
                .target_ref
                .as_ref()
                .and_then(|t| t.name.clone())
                .unwrap_or_else(|| format!("{}-{i}", key.name));
            let port = u16::try_from(port).context("endpoint port out of range")?;
            pods.push(
                Echo::start_at(&work, ip, port, &pod, &key.namespace)
                    .with_context(|| format!("starting echo pod {pod} on {ip}:{port}"))?,
            );
        }
    }
    println!("  {} echo pods", pods.len());

    println!("Starting the control plane on {}...", config_dir.display());
    let control_plane = ControlPlane::start(&config_dir, &work, &[])?;
    println!(
        "  xDS on {}, admin on {}",
        control_plane.xds, control_plane.admin
    );

    let mut envoys = Vec::new();
    for key in gateways.keys() {
        let gateway = format!("{}/{}", key.namespace, key.name);
        let bootstrap =
            control_plane.bootstrap(&gateway, args.delta, &format!("quickstart-{}", key.name))?;
        let envoy = Envoy::start(&bootstrap, &work, &format!("envoy-{}", key.name), 2)?;
        println!(
            "Started Envoy for Gateway {gateway} (admin on {})",
            envoy.admin
        );
        envoys.push(envoy);
    }

    let samples = samples(&input, &gateways);
    // Wait until every sample answers as it should.
    for s in &samples {
        eventually(
            &format!("{} to answer", s.curl()),
            Duration::from_secs(20),
            || {
                let headers: Vec<(&str, &str)> = s
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let reply = request(s.gateway, &s.method, &s.host, &s.path, &headers)?;
                Ok(reply.status < 400)
            },
        )?;
    }

    println!();
    println!("Trellis is routing. Try:");
    println!();
    for s in &samples {
        println!("  {}", s.curl());
    }
    println!();
    println!("Status of every object:");
    println!(
        "  cargo run -q -p trellis -- status --admin-address {}",
        control_plane.admin
    );
    println!("Metrics and connected proxies:");
    println!("  curl -s http://{}/metrics", control_plane.admin);
    println!("  curl -s http://{}/proxies", control_plane.admin);
    println!();
    println!(
        "Edit the files in {} and watch the changes apply.",
        config_dir.display()
    );
    println!("Logs are in {}.", work.display());

    if args.check {
        let mut failed = 0;
        for s in &samples {
            let headers: Vec<(&str, &str)> = s
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let reply = request(s.gateway, &s.method, &s.host, &s.path, &headers)?;
            let who = reply.json()["pod"]
                .as_str()
                .map(str::to_string)
                .or_else(|| reply.header("location").map(|l| format!("-> {l}")));
            println!(
                "check: {} -> {} {}",
                s.curl(),
                reply.status,
                who.unwrap_or_default()
            );
            if reply.status >= 400 {
                failed += 1;
            }
        }
        if failed > 0 {
            bail!("{failed} sample requests failed");
        }
        println!("check: all {} sample requests answered", samples.len());
        return Ok(());
    }

    println!();
    println!("Press Ctrl-C to stop.");
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc_channel(tx)?;
    let _ = rx.recv();
    println!("Stopping.");
    drop(envoys);
    drop(control_plane);
    drop(pods);
    Ok(())
}

/// Every Gateway's listen addresses (its first requested IP, each listener port).
fn gateway_addresses(input: &InputSet) -> std::collections::BTreeMap<ObjectKey, Vec<SocketAddr>> {
    input
        .gateways
        .iter()
        .map(|(key, gw)| {
            let ip: Ipv4Addr = gw
                .spec
                .addresses
                .iter()
                .find_map(|a| a.value.as_deref()?.parse().ok())
                .unwrap_or(Ipv4Addr::LOCALHOST);
            let addrs = gw
                .spec
                .listeners
                .iter()
                .filter(|l| l.protocol == "HTTP")
                .filter_map(|l| u16::try_from(l.port).ok())
                .map(|port| SocketAddr::from((ip, port)))
                .collect();
            (key.clone(), addrs)
        })
        .collect()
}

/// One sample request per route match: its host, path, headers and method.
fn samples(
    input: &InputSet,
    gateways: &std::collections::BTreeMap<ObjectKey, Vec<SocketAddr>>,
) -> Vec<Sample> {
    let mut out = Vec::new();
    for (key, route) in &input.http_routes {
        let HttpRoute { spec, .. } = &**route;
        let Some(gateway) = spec.parent_refs.first().and_then(|p| {
            let ns = p.namespace.clone().unwrap_or_else(|| key.namespace.clone());
            gateways
                .get(&ObjectKey::new(ns, p.name.clone()))?
                .first()
                .copied()
        }) else {
            continue;
        };
        let host = spec
            .hostnames
            .first()
            .cloned()
            .unwrap_or_else(|| "example.com".into());
        for rule in &spec.rules {
            for m in &rule.matches {
                let path = match m.path.type_ {
                    PathMatchType::Exact | PathMatchType::PathPrefix => m.path.value.clone(),
                    PathMatchType::RegularExpression => continue,
                };
                let mut path = path;
                if let Some(q) = m.query_params.first() {
                    path.push_str(&format!("?{}={}", q.name, q.value));
                }
                out.push(Sample {
                    gateway,
                    method: m
                        .method
                        .map(|m| m.as_str().to_string())
                        .unwrap_or_else(|| "GET".into()),
                    host: host.replace('*', "any"),
                    path,
                    headers: m
                        .headers
                        .iter()
                        .map(|h| (h.name.clone(), h.value.clone()))
                        .collect(),
                });
            }
        }
    }
    out
}

/// Sends on `tx` when SIGINT or SIGTERM arrives.
fn ctrlc_channel(tx: std::sync::mpsc::Sender<()>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            }
        });
        let _ = tx.send(());
    });
    Ok(())
}
