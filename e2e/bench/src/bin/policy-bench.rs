//! `policy-bench`: Envoy CPU time per request on route B against route A, measured side by side
//! in one run. By default B has the policy filter (an AuthorizationPolicy of 10 rules and a
//! RateLimitPolicy set high enough never to limit) and A has nothing; `--variant` and
//! `--baseline` choose what B and A get, `--stats-sink` measures Envoy's OpenTelemetry stats
//! sink instead.
//!
//! ```text
//!  core 1: this process (load generator), trellis serve, trellis-echo
//!  core 0: Envoy --concurrency 1
//!  rounds: A B B A A B …  (A = plain.example.com, B = policy.example.com)
//!  A and B are on two listeners (ports) of one Gateway, each route with its own Service (the
//!  same echo pod): with `--baseline none` A's filter chain has no Wasm filter at all, while
//!  B's runs the policy filter (Envoy shares one V8 VM per worker).
//!  CPU per request = Δ(Σ per-thread run time of Envoy, /proc/<pid>/task/*/schedstat) / requests
//! ```
//!
//! Variants (`--variant` for B, `--baseline` for A; every object is named after its route):
//!
//! - `none`: nothing (the default for A);
//! - `full` (10 rules + rate limit, the default for B), `authz` (the 10 rules), `limit` (the rate
//!   limit beside an allow-all policy), `empty` (an allow-all policy without rules: the cost of
//!   the filter itself);
//! - `tracing:P`: a TracingPolicy sampling P percent on the route's listener (Envoy's
//!   OpenTelemetry tracer, spans exported to the control plane);
//! - `X+tracing:P`: variant X plus that TracingPolicy;
//! - `X+telemetry`: variant X plus the policy filter's telemetry core: a TracingPolicy on the
//!   route's listener sampling 0% with `baggageTags: [tenant]`, and a HealthPolicy (p99 100 ms)
//!   on the route's Service. Every request of both routes then carries
//!   `baggage: tenant=acme,plan=gold`, so both sides parse the same bytes;
//! - `file:PATH`: the policies in a file, `NAMESPACE` and `ROUTE` replaced by the namespace and
//!   the route's name (to measure one kind of rule at a time);
//! - `wasm:PATH`: any module as a WasmFilter on the route, configured like header-stamp.
//!
//! `--stats-sink`: two Envoys on core 0, each serving its own Gateway (`web2` with route A
//! `nosink`, `web` with route B `sink`), both routes with `--variant`'s policies; B's Envoy runs
//! the bootstrap as generated (the OpenTelemetry stats sink, flushing every 10 s), A's the same
//! bootstrap without `stats_sinks`. Each Envoy's CPU is its own process's; since the sink costs
//! per flush rather than per request, the figure is the whole run's CPU of each Envoy (idle
//! time between its rounds included) per request, and rounds go on until `--min-seconds`.
//!
//! ```sh
//! cargo build --release -p trellis -p trellis-echo -p trellis-bench --bins
//! export TRELLIS_BIN=$PWD/target/release/trellis TRELLIS_ECHO_BIN=$PWD/target/release/trellis-echo
//! policy-bench [--rounds 8] [--requests 20000]                          # the policy filter vs nothing
//! policy-bench --baseline none --variant tracing:1 --target 1.10        # tracing at 1% vs off
//! policy-bench --baseline full --variant full+telemetry --target 1.05   # the telemetry core on the policy module
//! policy-bench --stats-sink --target 1.02                               # the OpenTelemetry stats sink
//! ```
//!
//! It ends with one line, `summary: B … vs A …: ratio B/A median X.XXX (target ≤ T): MET`
//! (with `--stats-sink`: `ratio B/A whole run X.XXX (target ≤ T)`, then the per-round median),
//! and exits with status 1 when that ratio is above the target.

use anyhow::{Context, bail};
use clap::Parser;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};
use trellis_harness::load::{KeepAlive, wasm_module};
use trellis_harness::{
    ControlPlane, Echo, Envoy, echo_bin, eventually, private_loopback, request, trellis_bin,
};

/// Measure Envoy's CPU time per request on route B against route A.
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
    /// The ratio B/A must stay under (printed, and the exit status).
    #[arg(long, default_value_t = 1.15)]
    target: f64,
    /// What route B gets: `full` (10 rules + rate limit), `authz` (10 rules), `limit` (the rate
    /// limit), `empty` (an allow-all policy without rules: the cost of the filter itself),
    /// `none`, `tracing:P` (a TracingPolicy sampling P%), `X+tracing:P`, `X+telemetry` (X plus
    /// the telemetry core: baggage tags and a latency objective), `file:PATH`, `wasm:PATH`.
    #[arg(long, default_value = "full", value_parser = Variant::parse)]
    variant: Variant,
    /// What route A gets: `none` (nothing), or any `--variant`.
    #[arg(long, default_value = "none", value_parser = Variant::parse)]
    baseline: Variant,
    /// Measure the OpenTelemetry stats sink instead: two Envoys, B's with the sink and A's
    /// without, both routes with `--variant`.
    #[arg(long)]
    stats_sink: bool,
    /// With `--stats-sink`, rounds go on (beyond `--rounds`) until this many seconds have
    /// passed: the sink flushes every 10 s.
    #[arg(long, default_value_t = 60)]
    min_seconds: u64,
}

const NS: &str = "bench";
/// The baggage every request carries when a route has the telemetry core.
const BAGGAGE: &str = "tenant=acme,plan=gold";

/// Policies of the policy filter (or another module) on a route.
#[derive(Clone, Debug, PartialEq)]
enum Policies {
    Full,
    Authz,
    Limit,
    Empty,
    File(String),
    Wasm(String),
}

/// Tracing on a route's listener.
#[derive(Clone, Debug, PartialEq)]
enum Tracing {
    /// A TracingPolicy sampling this percentage.
    Sampled(f64),
    /// The telemetry core: a TracingPolicy sampling 0% with baggage tags, a HealthPolicy.
    Telemetry,
}

/// What a route gets (`--variant`, `--baseline`).
#[derive(Clone, Debug, PartialEq)]
struct Variant {
    /// As given on the command line.
    text: String,
    policies: Option<Policies>,
    tracing: Option<Tracing>,
}

impl Variant {
    fn parse(text: &str) -> Result<Self, String> {
        let percent = |p: &str| -> Result<f64, String> {
            match p.parse::<f64>() {
                Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
                _ => Err(format!("tracing:{p}: the sampling percentage is 0–100")),
            }
        };
        let (base, tracing) = if let Some(base) = text.strip_suffix("+telemetry") {
            (base, Some(Tracing::Telemetry))
        } else if let Some(p) = text.strip_prefix("tracing:") {
            ("none", Some(Tracing::Sampled(percent(p)?)))
        } else if let Some((base, p)) = text.rsplit_once("+tracing:") {
            (base, Some(Tracing::Sampled(percent(p)?)))
        } else {
            (text, None)
        };
        let policies = match base {
            "none" => None,
            "full" => Some(Policies::Full),
            "authz" => Some(Policies::Authz),
            "limit" => Some(Policies::Limit),
            "empty" => Some(Policies::Empty),
            other => match (other.strip_prefix("file:"), other.strip_prefix("wasm:")) {
                (Some(path), _) => Some(Policies::File(path.to_string())),
                (_, Some(path)) => Some(Policies::Wasm(path.to_string())),
                _ => {
                    return Err(format!(
                        "unknown variant {text:?} (none, full, authz, limit, empty, tracing:P, \
                         X+tracing:P, X+telemetry, file:PATH, wasm:PATH)"
                    ));
                }
            },
        };
        Ok(Self {
            text: text.to_string(),
            policies,
            tracing,
        })
    }

    /// What `GET /admin` answers once the route's policies are applied, if known.
    fn admin_status(&self) -> Option<u16> {
        match self.policies {
            Some(Policies::Full | Policies::Authz) => Some(403),
            None | Some(Policies::Limit | Policies::Empty) => Some(200),
            Some(Policies::File(_) | Policies::Wasm(_)) => None,
        }
    }

    /// The rate limit's name (for its counter), when the route has one.
    fn limit(&self, route: &str) -> Option<String> {
        matches!(self.policies, Some(Policies::Full | Policies::Limit))
            .then(|| format!("{NS}/generous-{route}/per-client"))
    }

    /// The Trellis objects this renders (kind, name), to report their status.
    fn objects(&self, route: &str) -> Vec<(&'static str, String)> {
        let mut objects = Vec::new();
        match self.policies {
            Some(Policies::Full) => {
                objects.push(("AuthorizationPolicy", format!("ten-rules-{route}")));
                objects.push(("RateLimitPolicy", format!("generous-{route}")));
            }
            Some(Policies::Authz) => {
                objects.push(("AuthorizationPolicy", format!("ten-rules-{route}")));
            }
            Some(Policies::Limit) => {
                objects.push(("AuthorizationPolicy", format!("allow-all-{route}")));
                objects.push(("RateLimitPolicy", format!("generous-{route}")));
            }
            Some(Policies::Empty) => {
                objects.push(("AuthorizationPolicy", format!("allow-all-{route}")));
            }
            Some(Policies::Wasm(_)) => objects.push(("WasmFilter", format!("module-{route}"))),
            Some(Policies::File(_)) | None => {}
        }
        match self.tracing {
            Some(Tracing::Sampled(_)) => {
                objects.push(("TracingPolicy", format!("tracing-{route}")));
            }
            Some(Tracing::Telemetry) => {
                objects.push(("TracingPolicy", format!("telemetry-{route}")));
                objects.push(("HealthPolicy", format!("health-{route}")));
            }
            None => {}
        }
        objects
    }

    /// The YAML of this variant's objects for `side` (every name suffixed with the route's).
    fn render(&self, side: &Side) -> anyhow::Result<String> {
        let route = side.route;
        let to_route = format!(
            "targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: {route}}}]"
        );
        let authz = format!(
            r#"---
apiVersion: policy.trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: ten-rules-{route}, namespace: {NS}}}
spec:
  {to_route}
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
metadata: {{name: allow-all-{route}, namespace: {NS}}}
spec:
  {to_route}
  defaultAction: Allow
"#
        );
        let limit = format!(
            r#"---
apiVersion: policy.trellis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {{name: generous-{route}, namespace: {NS}}}
spec:
  {to_route}
  limits:
  - {{name: per-client, key: {{type: ClientIP}}, requests: 1000000, per: Second, burst: 1000000}}
"#
        );
        let mut yaml = match &self.policies {
            None => String::new(),
            Some(Policies::Full) => format!("{authz}{limit}"),
            Some(Policies::Authz) => authz,
            Some(Policies::Limit) => format!("{empty}{limit}"),
            Some(Policies::Empty) => empty,
            Some(Policies::File(path)) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
                let text = text.replace("NAMESPACE", NS).replace("ROUTE", route);
                if text.starts_with("---") {
                    text
                } else {
                    format!("---\n{text}\n")
                }
            }
            Some(Policies::Wasm(path)) => format!(
                "---\napiVersion: policy.trellis.dev/v1alpha1\nkind: WasmFilter\nmetadata: {{name: module-{route}, namespace: {NS}}}\nspec:\n  {to_route}\n  module: {{path: \"{path}\", sha256: \"{sha}\"}}\n  config: {{header: x-bench, value: b}}\n",
                sha = trellis_harness::load::sha256_file(std::path::Path::new(path))?
            ),
        };
        let to_listener = format!(
            "targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: {gateway}, sectionName: {route}}}]",
            gateway = side.gateway
        );
        match self.tracing {
            Some(Tracing::Sampled(percent)) => yaml.push_str(&format!(
                "---\napiVersion: telemetry.trellis.dev/v1alpha1\nkind: TracingPolicy\nmetadata: {{name: tracing-{route}, namespace: {NS}}}\nspec:\n  {to_listener}\n  samplingPercent: {percent}\n"
            )),
            Some(Tracing::Telemetry) => yaml.push_str(&format!(
                "---\napiVersion: telemetry.trellis.dev/v1alpha1\nkind: TracingPolicy\nmetadata: {{name: telemetry-{route}, namespace: {NS}}}\nspec:\n  {to_listener}\n  samplingPercent: 0\n  baggageTags: [tenant]\n\
                 ---\napiVersion: telemetry.trellis.dev/v1alpha1\nkind: HealthPolicy\nmetadata: {{name: health-{route}, namespace: {NS}}}\nspec:\n  targetRefs: [{{kind: Service, name: {service}}}]\n  p99LatencyMs: 100\n",
                service = side.service()
            )),
            None => {}
        }
        Ok(yaml)
    }
}

/// One side of the comparison: a route on its own listener (named like the route) of a
/// Gateway, to its own Service.
#[derive(Debug)]
struct Side<'a> {
    /// `A` or `B`.
    label: &'static str,
    /// The HTTPRoute's name, its listener's name and its host's first label.
    route: &'static str,
    /// The Gateway's name.
    gateway: &'static str,
    port: u16,
    variant: &'a Variant,
}

impl Side<'_> {
    fn host(&self) -> String {
        format!("{}.example.com", self.route)
    }

    fn service(&self) -> String {
        format!("app-{}", self.route)
    }

    /// As printed in the table: `A plain (none)`.
    fn name(&self) -> String {
        format!("{} {} ({})", self.label, self.route, self.variant.text)
    }
}

fn config(ip: Ipv4Addr, sides: &[Side; 2], pod: &Echo) -> anyhow::Result<String> {
    let mut yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: trellis}\nspec: {controllerName: trellis.dev/gateway-controller}\n".to_string();
    // A Gateway per distinct name, with a listener per side on it.
    let mut gateways: Vec<&str> = sides.iter().map(|s| s.gateway).collect();
    gateways.dedup();
    for gateway in gateways {
        yaml.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {gateway}, namespace: {NS}}}\nspec:\n  gatewayClassName: trellis\n  addresses: [{{type: IPAddress, value: {ip}}}]\n  listeners:\n"
        ));
        for side in sides.iter().filter(|s| s.gateway == gateway) {
            yaml.push_str(&format!(
                "  - {{name: {}, port: {}, protocol: HTTP}}\n",
                side.route, side.port
            ));
        }
    }
    for side in sides {
        let (route, service) = (side.route, side.service());
        yaml.push_str(&format!(
            r#"---
apiVersion: v1
kind: Service
metadata: {{name: {service}, namespace: {NS}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {service}-1, namespace: {NS}, labels: {{kubernetes.io/service-name: {service}}}}}
addressType: IPv4
ports: [{{name: http, port: {pod_port}}}]
endpoints: [{{addresses: ["{pod_ip}"]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {route}, namespace: {NS}}}
spec:
  parentRefs: [{{name: {gateway}, sectionName: {route}}}]
  hostnames: [{host}]
  rules:
  - backendRefs: [{{name: {service}, port: 80}}]
"#,
            pod_ip = pod.http.ip(),
            pod_port = pod.http.port(),
            gateway = side.gateway,
            host = side.host(),
        ));
        yaml.push_str(&side.variant.render(side)?);
    }
    Ok(yaml)
}

/// `bootstrap` without its top-level `stats_sinks:` list (the key and its entries, which are
/// indented or `- ` items under it).
fn without_stats_sinks(bootstrap: &str) -> anyhow::Result<String> {
    if !bootstrap.contains("envoy.stat_sinks.open_telemetry") {
        bail!("the bootstrap has no OpenTelemetry stats sink:\n{bootstrap}");
    }
    let mut out = String::with_capacity(bootstrap.len());
    let (mut keys, mut entries, mut inside) = (0, 0, false);
    for line in bootstrap.split_inclusive('\n') {
        if line.starts_with("stats_sinks:") {
            keys += 1;
            inside = true;
            continue;
        }
        if inside {
            if line.starts_with('-') {
                entries += 1;
                continue;
            }
            if line.starts_with([' ', '\t']) || line.trim().is_empty() {
                continue;
            }
            inside = false;
        }
        out.push_str(line);
    }
    if keys != 1 || entries == 0 || out.contains("stats_sinks") || out.contains("envoy.stat_sinks.")
    {
        bail!("could not remove stats_sinks ({keys} keys, {entries} entries):\n{out}");
    }
    Ok(out)
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

/// Sends `requests` GETs with `headers` over `connections` keep-alive connections; every
/// answer must be 200.
fn drive(
    gateway: SocketAddr,
    host: &str,
    headers: &[(&'static str, &'static str)],
    requests: usize,
    connections: usize,
) -> anyhow::Result<()> {
    let per = requests / connections;
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let host = host.to_string();
            let headers = headers.to_vec();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut client = KeepAlive::new(gateway, &host, "/api/items", &headers);
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

/// The `Accepted` condition of an object in the control plane's status, as
/// `Accepted=True` or `Accepted=False (reason: message)`.
fn accepted(control_plane: &ControlPlane, kind: &str, name: &str) -> String {
    fn find(value: &serde_json::Value) -> Option<&serde_json::Value> {
        match value {
            serde_json::Value::Object(map) if map.get("type").is_some_and(|t| t == "Accepted") => {
                Some(value)
            }
            serde_json::Value::Object(map) => map.values().find_map(find),
            serde_json::Value::Array(items) => items.iter().find_map(find),
            _ => None,
        }
    }
    match control_plane.object_status(kind, &format!("{NS}/{name}")) {
        Ok(Some(object)) => match find(&object) {
            Some(c) if c["status"] == "True" => "Accepted=True".to_string(),
            Some(c) => format!(
                "Accepted={} ({}: {})",
                c["status"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            ),
            None => "no Accepted condition".to_string(),
        },
        Ok(None) => "not in the control plane's status".to_string(),
        Err(e) => format!("status unavailable: {e:#}"),
    }
}

/// The names of an Envoy's dynamic listeners whose connection manager has the OpenTelemetry
/// tracer, from its config dump.
fn traced_listeners(envoy: &Envoy) -> anyhow::Result<Vec<String>> {
    let dump = envoy.config_dump()?;
    let mut names = Vec::new();
    for config in dump["configs"].as_array().into_iter().flatten() {
        for listener in config["dynamic_listeners"].as_array().into_iter().flatten() {
            if listener["active_state"]["listener"]
                .to_string()
                .contains("envoy.tracers.opentelemetry")
            {
                names.push(listener["name"].as_str().unwrap_or("?").to_string());
            }
        }
    }
    Ok(names)
}

/// Requests Envoy sent to the control plane's telemetry receiver (stats flushes and span
/// exports), from its admin stats.
fn telemetry_exports(envoy: &Envoy) -> u64 {
    envoy
        .stat("cluster.trellis-telemetry.upstream_rq_total")
        .ok()
        .flatten()
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("the benchmark needs two CPUs (Envoy on one, the load on the other)");
    }
    if args.stats_sink && args.baseline.text != "none" {
        bail!("--stats-sink gives both routes --variant's policies; --baseline does not apply");
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
    // A and B: two listeners of Gateway web on one Envoy, or (--stats-sink) Gateways web2 and
    // web on an Envoy each.
    let sides = if args.stats_sink {
        [
            Side {
                label: "A",
                route: "nosink",
                gateway: "web2",
                port: ports[0],
                variant: &args.variant,
            },
            Side {
                label: "B",
                route: "sink",
                gateway: "web",
                port: ports[1],
                variant: &args.variant,
            },
        ]
    } else {
        [
            Side {
                label: "A",
                route: "plain",
                gateway: "web",
                port: ports[0],
                variant: &args.baseline,
            },
            Side {
                label: "B",
                route: "policy",
                gateway: "web",
                port: ports[1],
                variant: &args.variant,
            },
        ]
    };
    std::fs::write(config_dir.join("bench.yaml"), config(ip, &sides, &pod)?)?;
    let module_arg = module.to_string_lossy().to_string();
    let control_plane = ControlPlane::start(&config_dir, work, &["--policy-module", &module_arg])?;
    // The Envoys, and which serves each side.
    let (envoys, serves): (Vec<Envoy>, [usize; 2]) = if args.stats_sink {
        let sink = control_plane.bootstrap(&format!("{NS}/web"), false, "bench-sink")?;
        let plain = control_plane.bootstrap(&format!("{NS}/web2"), false, "bench-nosink")?;
        let plain = without_stats_sinks(&plain)?;
        (
            vec![
                Envoy::start(&plain, work, "envoy-nosink", 1)?,
                Envoy::start(&sink, work, "envoy-sink", 1)?,
            ],
            [0, 1],
        )
    } else {
        let bootstrap = control_plane.bootstrap(&format!("{NS}/web"), false, "bench-proxy")?;
        (vec![Envoy::start(&bootstrap, work, "envoy", 1)?], [0, 0])
    };
    let pids = envoys
        .iter()
        .map(|e| e.pid().context("Envoy has no pid"))
        .collect::<anyhow::Result<Vec<u32>>>()?;
    for pid in &pids {
        pin(*pid, 0)?;
    }
    let mut headers = vec![("x-api-key", "k2")];
    if sides
        .iter()
        .any(|s| s.variant.tracing == Some(Tracing::Telemetry))
    {
        headers.push(("baggage", BAGGAGE));
    }
    let gateways = sides.each_ref().map(|s| SocketAddr::from((ip, s.port)));
    let hosts = sides.each_ref().map(Side::host);
    for (i, side) in sides.iter().enumerate() {
        let what = format!("route {} to answer", side.name());
        let result = eventually(&what, Duration::from_secs(60), || {
            let ok = request(gateways[i], "GET", &hosts[i], "/api/items", &headers)?.status;
            let admin = match side.variant.admin_status() {
                Some(want) => request(gateways[i], "GET", &hosts[i], "/admin", &[])?.status == want,
                None => true,
            };
            Ok(ok == 200 && admin)
        });
        if let Err(e) = result {
            bail!(
                "{e:#}\nEnvoy log:\n{}\ncontrol plane log:\n{}",
                envoys[serves[i]].log(),
                control_plane.log()
            );
        }
    }
    for i in 0..2 {
        drive(gateways[i], &hosts[i], &headers, 2_000, args.connections)?; // warm up
    }

    if args.stats_sink {
        println!(
            "policy-bench --stats-sink: two Envoys with 1 worker each on CPU 0 (B with the OpenTelemetry stats sink, flushing every 10 s; A without); load ({} connections), control plane and echo on CPU 1",
            args.connections
        );
    } else {
        println!(
            "policy-bench: Envoy 1 worker on CPU 0; load ({} connections), control plane and echo on CPU 1",
            args.connections
        );
    }
    for side in &sides {
        let objects = side.variant.objects(side.route);
        let mut status: Vec<String> = objects
            .iter()
            .map(|(kind, name)| format!("{kind} {name} {}", accepted(&control_plane, kind, name)))
            .collect();
        if let Some(Policies::File(path)) = &side.variant.policies {
            status.push(format!("the objects in {path} (not listed)"));
        }
        println!(
            "{}: {} on listener {} of Gateway {}, Service {}; {}",
            side.name(),
            side.host(),
            side.route,
            side.gateway,
            side.service(),
            if status.is_empty() {
                "no policies".to_string()
            } else {
                status.join(", ")
            }
        );
    }
    for (i, envoy) in envoys.iter().enumerate() {
        let traced = traced_listeners(envoy)?;
        println!(
            "{}: OpenTelemetry tracer on listeners: {}",
            if args.stats_sink {
                ["A's Envoy", "B's Envoy"][i]
            } else {
                "Envoy"
            },
            if traced.is_empty() {
                "none".to_string()
            } else {
                // Listeners are named by port (`gateway/<ns>/<name>/port/<port>`).
                traced
                    .iter()
                    .map(|name| {
                        match sides
                            .iter()
                            .find(|s| name.ends_with(&format!("/port/{}", s.port)))
                        {
                            Some(side) => format!("{name} (route {})", side.label),
                            None => name.clone(),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    if headers.iter().any(|(k, _)| *k == "baggage") {
        println!("every request of both routes carries baggage: {BAGGAGE}");
    }
    println!(
        "{} rounds x {} requests per route{}, alternating; CPU = Envoy's user+system time (schedstat)\n",
        args.rounds,
        args.requests,
        if args.stats_sink {
            format!(" (more until {} s have passed)", args.min_seconds)
        } else {
            String::new()
        }
    );
    let names = sides.each_ref().map(Side::name);
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(5);
    println!(
        "round  {:<width$}  requests  Envoy CPU ms  µs/request  req/s",
        "route"
    );
    let mut results: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let sent_per_round = (args.requests / args.connections * args.connections) as f64;
    let exports_before: Vec<u64> = envoys.iter().map(telemetry_exports).collect();
    let run_before = pids
        .iter()
        .map(|p| cpu_nanos(*p))
        .collect::<anyhow::Result<Vec<u64>>>()?;
    let run_started = Instant::now();
    let min_run = Duration::from_secs(if args.stats_sink { args.min_seconds } else { 0 });
    let mut round = 0;
    while round < args.rounds || run_started.elapsed() < min_run {
        // Alternate which goes first, so drift does not favour one side.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let pid = pids[serves[i]];
            let before = cpu_nanos(pid)?;
            let started = Instant::now();
            drive(
                gateways[i],
                &hosts[i],
                &headers,
                args.requests,
                args.connections,
            )?;
            let elapsed = started.elapsed().as_secs_f64();
            let used = cpu_nanos(pid)? - before;
            let per = used as f64 / 1_000.0 / sent_per_round;
            results[i].push(per);
            println!(
                "{:>5}  {:<width$}  {:>8}  {:>12.1}  {:>10.2}  {:>6.0}",
                round + 1,
                names[i],
                sent_per_round,
                used as f64 / 1e6,
                per,
                sent_per_round / elapsed
            );
        }
        round += 1;
    }
    let run_elapsed = run_started.elapsed().as_secs_f64();
    let run_used = pids
        .iter()
        .zip(&run_before)
        .map(|(p, before)| Ok(cpu_nanos(*p)? - before))
        .collect::<anyhow::Result<Vec<u64>>>()?;
    let exports: Vec<u64> = envoys
        .iter()
        .zip(&exports_before)
        .map(|(e, before)| telemetry_exports(e).saturating_sub(*before))
        .collect();

    let a = median(&mut results[0].clone());
    let b = median(&mut results[1].clone());
    // Each round measures A and B back to back: their ratio sees the same machine load.
    let pairs: Vec<f64> = results[1]
        .iter()
        .zip(&results[0])
        .map(|(b, a)| b / a)
        .collect();
    let ratio = median(&mut pairs.clone());
    println!();
    println!(
        "median Envoy CPU per request: {} {a:.2} µs, {} {b:.2} µs",
        names[0], names[1]
    );
    println!(
        "ratio of the medians: {:.3}; per-round ratios B/A: {}",
        b / a,
        pairs
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "requests to the control plane's telemetry receiver (stats flushes, span exports) over the {run_elapsed:.1} s of rounds: {}",
        if args.stats_sink {
            format!("A's Envoy {}, B's Envoy {}", exports[0], exports[1])
        } else {
            exports[0].to_string()
        }
    );
    // The figure held against the target.
    let figure = if args.stats_sink {
        // The sink costs per flush, every 10 s, not per request: a median of rounds would
        // leave out the rounds with a flush. Each Envoy's CPU over the whole run (its idle
        // time while the other is loaded included), per request it served.
        let served = sent_per_round * round as f64;
        let per = |i: usize| run_used[i] as f64 / 1_000.0 / served;
        let whole = per(1) / per(0);
        // Span exports, if any, are the same on both sides: the rest of B's are flushes.
        let flushes = exports[1].saturating_sub(exports[0]);
        println!(
            "whole run ({run_elapsed:.1} s, {flushes} flushes of B's sink): Envoy CPU per request A (no sink) {:.2} µs, B (sink) {:.2} µs; ratio sink/no-sink {whole:.3}",
            per(0),
            per(1)
        );
        if flushes < 3 {
            println!(
                "warning: fewer than 3 flushes in the run: the figure says little (raise --rounds, --requests or --min-seconds)"
            );
        }
        whole
    } else {
        ratio
    };
    // The rate limits must not have limited anything.
    for (i, side) in sides.iter().enumerate() {
        let Some(limit) = side.variant.limit(side.route) else {
            continue;
        };
        let prom = trellis_harness::http_get_text(envoys[serves[i]].admin, "/stats/prometheus")?;
        let limited = trellis_harness::load::prometheus_value(
            &prom,
            "trellis_policy_rate_limited_total",
            &[("limit", &limit)],
        )
        .unwrap_or(-1.0);
        println!("trellis_policy_rate_limited_total{{limit=\"{limit}\"}} {limited}");
    }
    let verdict = if figure <= args.target {
        "MET"
    } else {
        "MISSED"
    };
    if args.stats_sink {
        println!(
            "summary: B sink vs A no sink ({} on both): ratio B/A whole run {figure:.3} (target ≤ {:.2}): {verdict}; per-round median {ratio:.3}",
            args.variant.text, args.target
        );
    } else {
        println!(
            "summary: {} vs {}: ratio B/A median {figure:.3} (target ≤ {:.2}): {verdict}",
            names[1], names[0], args.target
        );
    }
    drop(envoys);
    drop(control_plane);
    // `exit` runs no destructors: stop the backend and remove the work directory first.
    drop(pod);
    drop(tmp);
    if figure > args.target {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_parse() {
        let v = Variant::parse("full+tracing:2.5").unwrap();
        assert_eq!(v.policies, Some(Policies::Full));
        assert_eq!(v.tracing, Some(Tracing::Sampled(2.5)));
        let v = Variant::parse("tracing:1").unwrap();
        assert_eq!((v.policies, v.tracing), (None, Some(Tracing::Sampled(1.0))));
        let v = Variant::parse("empty+telemetry").unwrap();
        assert_eq!(v.policies, Some(Policies::Empty));
        assert_eq!(v.tracing, Some(Tracing::Telemetry));
        assert_eq!(Variant::parse("none").unwrap().policies, None);
        assert_eq!(
            Variant::parse("wasm:/m.wasm").unwrap().policies,
            Some(Policies::Wasm("/m.wasm".into()))
        );
        for bad in [
            "fll",
            "tracing:",
            "tracing:101",
            "full+tracing:x",
            "bogus+telemetry",
        ] {
            assert!(Variant::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_stats_sinks_block_is_removed_and_nothing_else() {
        let bootstrap = "node:\n  id: x\nstats_flush_interval: 10s\nstats_sinks:\n- name: envoy.stat_sinks.open_telemetry\n  typed_config:\n    a: 1\n# next\ndeferred_stat_options:\n  enable_deferred_creation_stats: true\n";
        assert_eq!(
            without_stats_sinks(bootstrap).unwrap(),
            "node:\n  id: x\nstats_flush_interval: 10s\n# next\ndeferred_stat_options:\n  enable_deferred_creation_stats: true\n"
        );
        assert!(without_stats_sinks("node:\n  id: x\n").is_err());
    }
}
