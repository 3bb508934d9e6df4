//! `trellis-quickstart`: the main job of `./dev up`.
//!
//! Runs the Trellis control plane on a config directory (by default `deploy/quickstart`), a
//! real Envoy for every Gateway in it, and an echo backend for every endpoint its
//! EndpointSlices list, then prints the requests that reach them. As root it also runs the
//! mesh: every Pod of the directory as a network namespace, with an Envoy sidecar when the pod
//! is in the mesh ([`mesh`]), and prints a request from one pod to another's Service that a
//! GAMMA HTTPRoute routes. Everything stops on Ctrl-C. With `--check` it sends those requests
//! itself, reports, and exits (non-zero on failure).

mod chaos;
mod mesh;

use anyhow::{Context, bail};
use clap::Parser;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use trellis_harness::{ControlPlane, Echo, eventually, request, workspace_root};
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
    /// The second octet of the pods' network (10.N.0.0/16): the Pods' IPs in the config
    /// directory must be in it.
    #[arg(long, default_value_t = mesh::POD_NETWORK)]
    pod_network: u8,
    /// Keep logs and status under this directory (a temporary one by default).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// A sample request derived from a route.
#[derive(Clone, Debug)]
struct Sample {
    /// The HTTPRoute it exercises.
    route: ObjectKey,
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

    // Pods of the mesh run in network namespaces (root), not as loopback echo backends.
    let mesh_pods = mesh::pods_with_ips(&input, args.pod_network);
    let mesh_ips: std::collections::BTreeSet<Ipv4Addr> =
        mesh_pods.iter().map(|(_, ip)| *ip).collect();
    let network = if mesh_pods.is_empty() {
        Err("the config directory has no Pods".to_string())
    } else {
        mesh::network(args.pod_network)
    };

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
            if mesh_ips.contains(&ip) {
                continue;
            }
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
    // With the pods' network, xDS listens on its bridge so sidecars reach it (Gateways too).
    // With a CA: workload identity, mutual TLS on xDS and between sidecars; every proxy runs
    // beside `trellis agent`.
    let ca_dir = work.join("ca").display().to_string();
    let ca = ["--ca-dir", ca_dir.as_str()];
    let control_plane = match &network {
        Ok(net) => {
            ControlPlane::start_with_xds(&config_dir, &work, &format!("{}:0", net.gateway), &ca)?
        }
        Err(_) => ControlPlane::start(&config_dir, &work, &ca)?,
    };
    println!(
        "  xDS on {}, admin on {}",
        control_plane.xds, control_plane.admin
    );

    let mut envoys = Vec::new();
    for key in gateways.keys() {
        let gateway = format!("{}/{}", key.namespace, key.name);
        let envoy = control_plane.start_gateway_proxy(
            &gateway,
            args.delta,
            &format!("quickstart-{}", key.name),
            &format!("envoy-{}", key.name),
            2,
        )?;
        println!(
            "Started Envoy for Gateway {gateway} (admin on {})",
            envoy.admin
        );
        envoys.push(envoy);
    }

    let mesh = match network {
        Ok(net) => {
            println!(
                "Starting the mesh's pods (network namespaces on {})...",
                net.bridge
            );
            let mesh = mesh::start(net, &input, &work, &control_plane)?;
            println!(
                "  {} pods, {} with a sidecar",
                mesh.pods.len(),
                mesh.pods.iter().filter(|p| p.sidecar).count()
            );
            Some(mesh)
        }
        Err(why) => {
            if !mesh_pods.is_empty() {
                println!(
                    "The mesh's {} pods are not started: {why}. Run `sudo ./dev up` to see \
                     requests between pods go through their sidecars.",
                    mesh_pods.len()
                );
            }
            None
        }
    };
    let mesh_samples = mesh
        .as_ref()
        .map(|m| mesh::samples(&input, m))
        .unwrap_or_default();
    if let Some(m) = &mesh {
        for s in &mesh_samples {
            eventually(
                &format!("{} to answer", s.command(m)),
                Duration::from_secs(20),
                || Ok(s.send(m)?.0 < 400),
            )?;
        }
    }

    let missing_pods = if mesh.is_some() {
        Default::default()
    } else {
        mesh_ips.clone()
    };
    let samples = samples(&input, &gateways, &missing_pods);
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
    let chaos = chaos::samples(&input, &samples);
    for c in &chaos {
        println!();
        println!(
            "Chaos on purpose (BackendTrafficPolicy {}: {} for {}% of the requests tagged so):",
            c.policy, c.status, c.percent
        );
        println!();
        println!("  {}", c.sample.curl());
    }
    if let Some(m) = &mesh {
        println!();
        println!("Inside the mesh, from one pod to another's Service (GAMMA HTTPRoutes):");
        println!();
        for s in &mesh_samples {
            println!("  {}", s.command(m));
        }
        println!();
        println!("Each sidecar, its class and its sync state:");
        println!(
            "  cargo run -q -p trellis -- proxy-status --admin-address {}",
            control_plane.admin
        );
    }
    println!();
    println!("Status of every object:");
    println!(
        "  cargo run -q -p trellis -- status --admin-address {}",
        control_plane.admin
    );
    println!("The console (services, graph, traces, proxies, vet findings):");
    println!("  http://{}/ui", control_plane.admin);
    println!("Which route a request takes, and why a 404 or a 500:");
    println!(
        "  cargo run -q -p trellis -- explain --admin-address {} --gateway demo/web --host store.example.com --header 'x-canary: true'",
        control_plane.admin
    );
    println!("Configuration mistakes, offline (exit status 1 on errors):");
    println!("  cargo run -q -p trellis -- vet {}", config_dir.display());
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
            // A pod in the mesh names its caller: the Gateway, over the mesh's mutual TLS.
            let caller = reply.json()["headers"]["X-Forwarded-Client-Cert"][0]
                .as_str()
                .and_then(|x| x.split(';').find_map(|p| p.strip_prefix("URI=")))
                .map(|uri| format!(" (mutual TLS from {uri})"));
            println!(
                "check: {} -> {} {}{}",
                s.curl(),
                reply.status,
                who.unwrap_or_default(),
                caller.as_deref().unwrap_or_default()
            );
            if reply.status >= 400 {
                failed += 1;
            }
            // Into STRICT namespace shop: the Gateway's identity arrived.
            if mesh.is_some()
                && s.host == "shop.example.com"
                && caller.as_deref()
                    != Some(" (mutual TLS from spiffe://cluster.local/ns/demo/sa/web-gateway)")
            {
                println!(
                    "check: the Gateway's request reached shop without the Gateway's identity"
                );
                failed += 1;
            }
        }
        for c in &chaos {
            let (aborted, sent) = c.try_it()?;
            println!(
                "check: {} -> {aborted} of {sent} answered {} (BackendTrafficPolicy {}, {}%)",
                c.sample.curl(),
                c.status,
                c.policy,
                c.percent
            );
            if !c.plausible(aborted, sent) {
                failed += 1;
            }
        }
        // The console and its vet findings answer; the quickstart has no error or warning
        // (its chaos policy is an info: faults on purpose).
        let page = trellis_harness::http_get_text(control_plane.admin, "/ui/services")?;
        let vet: serde_json::Value = serde_json::from_str(&trellis_harness::http_get_text(
            control_plane.admin,
            "/api/vet",
        )?)?;
        println!(
            "check: http://{}/ui/services -> {} bytes; /api/vet -> {} errors, {} warnings, {} infos",
            control_plane.admin,
            page.len(),
            vet["errors"],
            vet["warnings"],
            vet["infos"]
        );
        let explained: serde_json::Value = serde_json::from_str(&trellis_harness::http_get_text(
            control_plane.admin,
            "/api/explain?gateway=demo/web&host=store.example.com&header=x-canary%3A%20true",
        )?)?;
        let text = explained["text"].as_str().unwrap_or_default();
        println!("check: /api/explain of a canary request:\n{text}");
        if !text.contains("service/demo/store-v2/80") {
            failed += 1;
        }
        if !page.contains("<h1>Services</h1>") || vet["errors"] != 0 || vet["warnings"] != 0 {
            println!("check: unexpected: {vet}");
            failed += 1;
        }
        if let Some(m) = &mesh {
            for s in &mesh_samples {
                let (status, pod, route) = s.send(m)?;
                let headers: Vec<String> = s
                    .headers
                    .iter()
                    .map(|(k, v)| format!(" -H '{k}: {v}'"))
                    .collect();
                println!(
                    "check: {}{} -> {status} {pod} (x-mesh-route: {})",
                    s.url,
                    headers.concat(),
                    route.as_deref().unwrap_or("-")
                );
                if status >= 400 {
                    failed += 1;
                }
            }
        }
        if failed > 0 {
            bail!("{failed} sample requests failed");
        }
        println!(
            "check: all {} sample requests answered",
            samples.len() + mesh_samples.len()
        );
        return Ok(());
    }

    println!();
    println!("Press Ctrl-C to stop.");
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc_channel(tx)?;
    let _ = rx.recv();
    println!("Stopping.");
    drop(envoys);
    drop(mesh);
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
    missing_pods: &std::collections::BTreeSet<Ipv4Addr>,
) -> Vec<Sample> {
    let mut out = Vec::new();
    for (key, route) in &input.http_routes {
        let HttpRoute { spec, .. } = &**route;
        if !missing_pods.is_empty() && only_reaches(input, key, route, missing_pods) {
            println!(
                "HTTPRoute {key} routes to pods of the mesh, which are not running: no sample \
                 request"
            );
            continue;
        }
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
                    route: key.clone(),
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

/// Whether every endpoint of every backend of the route is one of `ips`.
fn only_reaches(
    input: &InputSet,
    key: &ObjectKey,
    route: &HttpRoute,
    ips: &std::collections::BTreeSet<Ipv4Addr>,
) -> bool {
    let mut endpoints = input
        .endpoint_slices
        .iter()
        .filter(|(slice_key, slice)| {
            route
                .spec
                .rules
                .iter()
                .flat_map(|r| &r.backend_refs)
                .any(|b| {
                    let ns = b.namespace.as_deref().unwrap_or(&key.namespace);
                    slice_key.namespace == ns
                        && slice
                            .metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("kubernetes.io/service-name"))
                            == Some(&b.name)
                })
        })
        .flat_map(|(_, slice)| slice.endpoints.iter().flat_map(|e| &e.addresses))
        .peekable();
    endpoints.peek().is_some()
        && endpoints.all(|a| a.parse::<Ipv4Addr>().is_ok_and(|ip| ips.contains(&ip)))
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
