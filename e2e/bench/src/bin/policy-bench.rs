//! `policy-bench`: Envoy CPU time per request with the policy filter (an AuthorizationPolicy
//! of 10 rules and a RateLimitPolicy set high enough never to limit) against the same kind of
//! route without it, measured side by side in one run.
//!
//! ```text
//!  core 1: this process (load generator), trellis serve, trellis-echo
//!  core 0: Envoy --concurrency 1
//!  rounds: A B B A A B …  (A = plain.example.com, B = policy.example.com)
//!  A and B are on two listeners (ports) of one Gateway, so A's filter chain has no Wasm filter
//!  at all, while B's runs the policy filter (Envoy shares one V8 VM per worker).
//!  CPU per request = Δ(Σ per-thread run time of Envoy, /proc/<pid>/task/*/schedstat) / requests
//! ```
//!
//! ```sh
//! cargo run --release -p trellis-e2e --bin policy-bench -- [--rounds 8] [--requests 20000]
//! ```

use anyhow::{Context, bail};
use clap::Parser;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};
use trellis_harness::load::{KeepAlive, wasm_module};
use trellis_harness::{
    ControlPlane, Echo, Envoy, echo_bin, eventually, private_loopback, request, trellis_bin,
};

/// Measure Envoy's CPU time per request with and without the policy filter.
#[derive(Debug, Parser)]
struct Args {
    /// Rounds per route (A and B alternate).
    #[arg(long, default_value_t = 8)]
    rounds: usize,
    /// Requests per round.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Keep-alive connections the load generator uses.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The ratio the policy route must stay under (printed, and the exit status).
    #[arg(long, default_value_t = 1.15)]
    target: f64,
    /// What route B gets: `full` (10 rules + rate limit), `authz` (10 rules), `limit` (the rate
    /// limit), `empty` (an allow-all policy without rules: the cost of the filter itself).
    #[arg(long, default_value = "full")]
    variant: String,
}

const NS: &str = "bench";

fn config(ip: Ipv4Addr, ports: [u16; 2], pod: &Echo, variant: &str) -> anyhow::Result<String> {
    let route = |name: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  parentRefs: [{{name: web, sectionName: {name}}}]\n  hostnames: [{name}.example.com]\n  rules:\n  - backendRefs: [{{name: app, port: 80}}]\n"
        )
    };
    let base = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: trellis}}
spec: {{controllerName: trellis.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: {NS}}}
spec:
  gatewayClassName: trellis
  addresses: [{{type: IPAddress, value: {ip}}}]
  listeners:
  - {{name: plain, port: {plain_port}, protocol: HTTP}}
  - {{name: policy, port: {policy_port}, protocol: HTTP}}
---
apiVersion: v1
kind: Service
metadata: {{name: app, namespace: {NS}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: app-1, namespace: {NS}, labels: {{kubernetes.io/service-name: app}}}}
addressType: IPv4
ports: [{{name: http, port: {pod_port}}}]
endpoints: [{{addresses: ["{pod_ip}"]}}]
{plain}{policy}"#,
        pod_ip = pod.http.ip(),
        pod_port = pod.http.port(),
        plain_port = ports[0],
        policy_port = ports[1],
        plain = route("plain"),
        policy = route("policy"),
    );
    let authz = format!(
        r#"---
apiVersion: policy.trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: ten-rules, namespace: {NS}}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: policy}}]
  defaultAction: Deny
  rules:
  - {{name: admin, action: Deny, paths: [{{type: Prefix, value: /admin}}]}}
  - {{name: internal, action: Deny, paths: [{{type: RegularExpression, value: "/internal/[0-9]+"}}]}}
  - {{name: debug, action: Deny, paths: [{{type: Exact, value: /debug}}]}}
  - {{name: deletes, action: Deny, methods: [DELETE]}}
  - {{name: guests, action: Deny, headers: [{{name: x-role, values: [guest, anonymous]}}]}}
  - {{name: private-net, action: Deny, sourceIPs: [10.0.0.0/8, 192.168.0.0/16]}}
  - {{name: untrusted-peers, action: Deny, principals: ["spiffe://cluster.local/ns/untrusted/*"]}}
  - {{name: private-writes, action: Deny, methods: [POST, PUT], paths: [{{type: Prefix, value: /private}}]}}
  - {{name: public, action: Allow, paths: [{{type: Prefix, value: /public}}]}}
  - {{name: api-keys, action: Allow, headers: [{{name: x-api-key, values: [k1, k2, k3]}}]}}
"#
    );
    let empty = format!(
        r#"---
apiVersion: policy.trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: allow-all, namespace: {NS}}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: policy}}]
  defaultAction: Allow
"#
    );
    let limit = format!(
        r#"---
apiVersion: policy.trellis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {{name: generous, namespace: {NS}}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: policy}}]
  limits:
  - {{name: per-client, key: {{type: ClientIP}}, requests: 1000000, per: Second, burst: 1000000}}
"#
    );
    Ok(match variant {
        "full" => format!("{base}{authz}{limit}"),
        "authz" => format!("{base}{authz}"),
        "limit" => format!("{base}{empty}{limit}"),
        "empty" => format!("{base}{empty}"),
        other if other.starts_with("file:") => {
            // Policies from a file (to measure one kind of rule at a time).
            let text = std::fs::read_to_string(&other[5..])?;
            format!("{base}{}", text.replace("NAMESPACE", NS))
        }
        other => match other.strip_prefix("wasm:") {
            // Any module as a WasmFilter on route B, configured like header-stamp.
            Some(path) => format!(
                "{base}---\napiVersion: policy.trellis.dev/v1alpha1\nkind: WasmFilter\nmetadata: {{name: module, namespace: {NS}}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: policy}}]\n  module: {{path: \"{path}\", sha256: \"{sha}\"}}\n  config: {{header: x-bench, value: b}}\n",
                sha = trellis_harness::load::sha256_file(std::path::Path::new(path))?
            ),
            None => bail!("unknown --variant {other:?} (full, authz, limit, empty, wasm:PATH)"),
        },
    })
}

/// Pins a process (every thread) to one CPU.
fn pin(pid: u32, cpu: usize) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("taskset (util-linux) is needed to pin processes")?;
    if !status.success() {
        bail!("taskset failed for pid {pid}");
    }
    Ok(())
}

/// CPU time of every thread of a process so far, in nanoseconds (`schedstat` run time).
fn cpu_nanos(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = entry?.path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// Sends `requests` GETs over `connections` keep-alive connections; every answer must be 200.
fn drive(
    gateway: SocketAddr,
    host: &str,
    requests: usize,
    connections: usize,
) -> anyhow::Result<()> {
    let per = requests / connections;
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let host = host.to_string();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut client =
                    KeepAlive::new(gateway, &host, "/api/items", &[("x-api-key", "k2")]);
                for _ in 0..per {
                    let status = client.send()?;
                    if status != 200 {
                        bail!("{host} answered {status}");
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    }
    Ok(())
}

/// A port free on `ip` other than `taken`.
fn free_port(ip: Ipv4Addr, taken: u16) -> anyhow::Result<u16> {
    loop {
        let port = std::net::TcpListener::bind((ip, 0))?.local_addr()?.port();
        if port != taken {
            return Ok(port);
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("the benchmark needs two CPUs (Envoy on one, the load on the other)");
    }
    // Build everything first, on every core.
    let module = wasm_module("trellis-policy-wasm")?;
    trellis_bin()?;
    echo_bin()?;
    // This process and everything it starts run on core 1; Envoy is moved to core 0.
    pin(std::process::id(), 1)?;

    let tmp = tempfile::tempdir()?;
    let work = tmp.path();
    let config_dir = work.join("config");
    std::fs::create_dir_all(&config_dir)?;
    let (ip, port) = private_loopback();
    let pod = Echo::start(work, Ipv4Addr::LOCALHOST, "app-1", NS)?;
    let ports = [port, free_port(ip, port)?];
    std::fs::write(
        config_dir.join("bench.yaml"),
        config(ip, ports, &pod, &args.variant)?,
    )?;
    let module_arg = module.to_string_lossy().to_string();
    let control_plane = ControlPlane::start(&config_dir, work, &["--policy-module", &module_arg])?;
    let bootstrap = control_plane.bootstrap(&format!("{NS}/web"), false, "bench-proxy")?;
    let envoy = Envoy::start(&bootstrap, work, "envoy", 1)?;
    let pid = envoy.pid().context("Envoy has no pid")?;
    pin(pid, 0)?;
    let gateways = ports.map(|p| SocketAddr::from((ip, p)));
    eventually("both routes", Duration::from_secs(60), || {
        let plain = request(gateways[0], "GET", "plain.example.com", "/api/items", &[])?.status;
        let denied = request(gateways[1], "GET", "policy.example.com", "/admin", &[])?.status;
        let want = if args.variant.contains("full") || args.variant == "authz" {
            403
        } else {
            200
        };
        Ok(plain == 200 && denied == want)
    })?;
    for (gateway, host) in gateways
        .iter()
        .zip(["plain.example.com", "policy.example.com"])
    {
        drive(*gateway, host, 2_000, args.connections)?; // warm up
    }

    println!(
        "policy-bench: Envoy 1 worker on CPU 0; load ({} connections), control plane and echo on CPU 1",
        args.connections
    );
    println!(
        "{} rounds x {} requests per route, alternating; CPU = Envoy's user+system time (schedstat)\n",
        args.rounds, args.requests
    );
    println!("round  route                requests  Envoy CPU ms  µs/request  req/s");
    let mut results: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let policy_name = format!("policy ({})", args.variant);
    let names = ["plain (no filter)", policy_name.as_str()];
    let hosts = ["plain.example.com", "policy.example.com"];
    for round in 0..args.rounds {
        // Alternate which goes first, so drift does not favour one side.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let before = cpu_nanos(pid)?;
            let started = Instant::now();
            drive(gateways[i], hosts[i], args.requests, args.connections)?;
            let elapsed = started.elapsed().as_secs_f64();
            let used = cpu_nanos(pid)? - before;
            let sent = (args.requests / args.connections * args.connections) as f64;
            let per = used as f64 / 1_000.0 / sent;
            results[i].push(per);
            println!(
                "{:>5}  {:<20} {:>8}  {:>12.1}  {:>10.2}  {:>6.0}",
                round + 1,
                names[i],
                sent,
                used as f64 / 1e6,
                per,
                sent / elapsed
            );
        }
    }
    let plain = median(&mut results[0].clone());
    let policy = median(&mut results[1].clone());
    // Each round measures A and B back to back: their ratio sees the same machine load.
    let pairs: Vec<f64> = results[1]
        .iter()
        .zip(&results[0])
        .map(|(b, a)| b / a)
        .collect();
    let ratio = median(&mut pairs.clone());
    println!();
    println!("median Envoy CPU per request: plain {plain:.2} µs, policy {policy:.2} µs");
    println!(
        "ratio of the medians: {:.3}; per-round ratios: {}",
        policy / plain,
        pairs
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "median per-round ratio policy/plain: {ratio:.3} (target ≤ {:.2}): {}",
        args.target,
        if ratio <= args.target {
            "MET"
        } else {
            "MISSED"
        }
    );
    // The rate limit must not have limited anything.
    let prom = trellis_harness::http_get_text(envoy.admin, "/stats/prometheus")?;
    let limited = trellis_harness::load::prometheus_value(
        &prom,
        "trellis_policy_rate_limited_total",
        &[("limit", "bench/generous/per-client")],
    )
    .unwrap_or(-1.0);
    println!("trellis_policy_rate_limited_total{{limit=\"bench/generous/per-client\"}} {limited}");
    drop(envoy);
    drop(control_plane);
    // `exit` runs no destructors: stop the backend and remove the work directory first.
    drop(pod);
    drop(tmp);
    if ratio > args.target {
        std::process::exit(1);
    }
    Ok(())
}
