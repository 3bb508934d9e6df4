//! The mesh's benchmarks:
//!
//! - `sidecar-latency`: what a pair of sidecars adds to a request. Pods as network namespaces
//!   (root): a client and a server without sidecars, and a client and a server with them; the
//!   same open-loop load (keep-alive connections, requests at fixed times, latency counted from
//!   the time a request was due) against each in turn, p50/p99 side by side.
//! - `sidecar-memory`: one real sidecar's RSS with 10, 100 and 1000 Services in the mesh.
//! - `mesh-fanout`: simulated sidecars (pods of many namespaces, so many classes) on one
//!   control plane; one EndpointSlice changes; how long until every sidecar has it, and the
//!   control plane's memory per sidecar.

use crate::fanout::{first_after, holds_endpoints, percentile, summary, verdict, wait_until};
use crate::procfs;
use anyhow::{Context, anyhow};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use trellis_harness::ControlPlane;
use trellis_harness::mesh::{APP_PORT, MeshPod, PodSpec, Workload, namespace_yaml, service_yaml};
use trellis_harness::netns::{Netns, Network, unavailable};
use trellis_harness::xds_client::{self, ClientConfig, types};

/// Options of `trellis-bench sidecar-latency`.
#[derive(Debug, clap::Args)]
pub struct LatencyArgs {
    /// Requests per second, spread over the connections.
    #[arg(long, default_value_t = 1000)]
    pub rps: u32,
    /// Keep-alive connections the load is spread over.
    #[arg(long, default_value_t = 10)]
    pub connections: u32,
    /// Seconds of load per round and path.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Rounds: each runs the direct path, then the path through both sidecars.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Run the control plane with a CA (every sidecar beside `trellis agent`) and measure a
    /// third path: through both sidecars with mutual TLS, beside the plaintext pair (its server
    /// opted out by a PeerAuthentication with mode DISABLE), with Envoy CPU per request of each.
    #[arg(long)]
    pub mtls: bool,
}

/// Options of `trellis-bench sidecar-memory`.
#[derive(Debug, clap::Args)]
pub struct MemoryArgs {
    /// Service counts to measure at, in order.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    pub services: Vec<usize>,
}

/// Options of `trellis-bench mesh-fanout`.
#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    /// Namespaces in the mesh, each with one Service and its pods: one sidecar class each.
    #[arg(long, default_value_t = 200)]
    pub classes: usize,
    /// Simulated sidecars (pods) per namespace.
    #[arg(long, default_value_t = 10)]
    pub sidecars_per_class: usize,
    /// EndpointSlice changes to measure, one after another.
    #[arg(long, default_value_t = 5)]
    pub changes: usize,
    /// Limit each namespace's sidecars to the Services of this many namespaces (its own and
    /// the next ones, by the annotation trellis.dev/egress-namespaces); 0 for every Service.
    #[arg(long, default_value_t = 0)]
    pub egress_namespaces: usize,
}

impl FanoutArgs {
    /// How many Services (namespaces) each sidecar holds.
    fn holds(&self) -> usize {
        match self.egress_namespaces {
            0 => self.classes,
            n => n.min(self.classes),
        }
    }

    /// Whether the sidecars of namespace `c` hold the Service of namespace `target`.
    fn in_scope(&self, c: usize, target: usize) -> bool {
        (0..self.holds()).any(|k| (c + k) % self.classes == target)
    }
}

/// A pod network with a control plane on its bridge and a meshed namespace `bench`.
struct Bed {
    pods: Vec<MeshPod>,
    cp: ControlPlane,
    ca_dir: Option<PathBuf>,
    config: PathBuf,
    work: PathBuf,
    _tmp: tempfile::TempDir,
    // Dropped last: the pods' namespaces go before the bridge.
    net: Network,
}

const NS: &str = "bench";

impl Bed {
    /// Plaintext between sidecars (PeerAuthentication DISABLE for the namespace); xDS still
    /// takes mutual TLS, as the control plane requires off loopback.
    fn start() -> anyhow::Result<Bed> {
        let bed = Self::start_with(true)?;
        bed.write(
            "plaintext.yaml",
            "apiVersion: security.trellis.dev/v1alpha1\nkind: PeerAuthentication\nmetadata: \
             {name: plaintext, namespace: bench}\nspec:\n  mtls: {mode: DISABLE}\n",
        )?;
        Ok(bed)
    }

    /// With `ca`, the control plane runs a CA and every sidecar an agent.
    fn start_with(ca: bool) -> anyhow::Result<Bed> {
        if let Some(why) = unavailable() {
            anyhow::bail!("this benchmark runs pods as network namespaces, but {why}");
        }
        let net = Network::create()?;
        let tmp = tempfile::tempdir()?;
        let work = tmp.path().to_path_buf();
        let config = work.join("config");
        std::fs::create_dir_all(&config)?;
        std::fs::write(config.join("namespace.yaml"), namespace_yaml(NS, true))?;
        let xds = format!("{}:0", net.gateway);
        let ca_dir = ca.then(|| work.join("ca"));
        let ca_arg = ca_dir.as_ref().map(|d| d.display().to_string());
        let mut args = vec!["--debounce-ms", "50"];
        if let Some(dir) = &ca_arg {
            args.extend(["--ca-dir", dir.as_str()]);
        }
        let cp = ControlPlane::start_with_xds(&config, &work, &xds, &args)?;
        Ok(Bed {
            pods: Vec::new(),
            cp,
            ca_dir,
            config,
            work,
            _tmp: tmp,
            net,
        })
    }

    fn pod(&mut self, name: &str, sidecar: bool) -> anyhow::Result<usize> {
        let spec = PodSpec {
            namespace: NS,
            name,
            labels: &[("app", name)],
            sidecar,
            ip: None,
            app_env: &[],
        };
        let workload = self.ca_dir.as_ref().map(|ca_dir| Workload {
            service_account: name,
            config_dir: &self.config,
            ca_dir,
            lifetime_secs: 24 * 3600,
            write_pod: true,
        });
        let pod = MeshPod::start_with(
            &self.net,
            &self.work,
            &spec,
            self.cp.xds,
            workload.as_ref().filter(|_| sidecar),
        )?;
        std::fs::write(self.config.join(format!("pod-{name}.yaml")), pod.pod_yaml())?;
        self.pods.push(pod);
        Ok(self.pods.len() - 1)
    }

    fn write(&self, file: &str, yaml: &str) -> anyhow::Result<()> {
        let tmp = self.config.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml)?;
        std::fs::rename(tmp, self.config.join(file))?;
        Ok(())
    }
}

/// Runs `sidecar-latency`.
pub fn latency(args: LatencyArgs) -> anyhow::Result<()> {
    if args.mtls {
        return latency_mtls(args);
    }
    let mut bed = Bed::start()?;
    let plain_client = bed.pod("plain-client", false)?;
    let plain_server = bed.pod("plain-server", false)?;
    let client = bed.pod("client", true)?;
    let server = bed.pod("server", true)?;
    let cluster_ip = bed.net.service_ip(10);
    let server_ip = bed.pods[server].ip();
    bed.write(
        "service.yaml",
        &service_yaml(
            NS,
            "server",
            cluster_ip,
            80,
            &[("app", "server")],
            &[(server_ip, "server")],
        ),
    )?;
    for i in [client, server] {
        let pod = &mut bed.pods[i];
        pod.wait_sidecar_ready()
            .with_context(|| pod.sidecar_log())?;
    }
    let meshed = SocketAddr::from((cluster_ip, 80));
    let direct = SocketAddr::from((bed.pods[plain_server].ip(), APP_PORT));
    trellis_harness::wait_for(
        "the client's sidecar to route to the server",
        Duration::from_secs(30),
        || match bed.pods[client].request(meshed, "server.bench", "/", &[]) {
            Ok(r) if r.status == 200 && r.pod() == "server" => Some(()),
            _ => None,
        },
    )?;
    println!(
        "sidecar-latency: {} rps over {} keep-alive connections, {} s per path and round, {} \
         rounds; GET / to the echo app (HTTP/1.1, plaintext); Envoy with 1 worker per sidecar",
        args.rps, args.connections, args.seconds, args.rounds
    );
    let (mut all_direct, mut all_meshed) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let d = load(&bed.pods[plain_client].netns, direct, "plain-server", &args)?;
        let m = load(&bed.pods[client].netns, meshed, "server.bench", &args)?;
        println!(
            "  round {round}: direct {}; through both sidecars {}",
            d.describe(),
            m.describe()
        );
        all_direct.push(d);
        all_meshed.push(m);
    }
    let mut direct: Vec<Duration> = all_direct
        .iter()
        .flat_map(|r| r.latencies.clone())
        .collect();
    let mut meshed: Vec<Duration> = all_meshed
        .iter()
        .flat_map(|r| r.latencies.clone())
        .collect();
    let (d50, d99) = (percentile(&mut direct, 0.5), percentile(&mut direct, 0.99));
    let (m50, m99) = (percentile(&mut meshed, 0.5), percentile(&mut meshed, 0.99));
    let added99 = m99.saturating_sub(d99);
    println!(
        "  client sidecar: {} requests to the server's Service; server sidecar inbound: {}",
        bed.pods[client].sidecar_stat("http.outbound_bench_server_80.downstream_rq_2xx")?,
        bed.pods[server].sidecar_stat(&format!("http.inbound_{APP_PORT}.downstream_rq_2xx"))?
    );
    println!(
        "sidecar-latency result: direct p50 {:.3} ms, p99 {:.3} ms; through both sidecars p50 \
         {:.3} ms, p99 {:.3} ms; added p50 {:.3} ms, p99 {:.3} ms (target: p99 added < 1 ms): {}",
        ms(d50),
        ms(d99),
        ms(m50),
        ms(m99),
        ms(m50.saturating_sub(d50)),
        ms(added99),
        verdict(added99 < Duration::from_millis(1))
    );
    Ok(())
}

/// `sidecar-latency --mtls`: direct, through a plaintext sidecar pair, and through a
/// mutual-TLS pair, in each round; Envoy CPU per request for both pairs.
fn latency_mtls(args: LatencyArgs) -> anyhow::Result<()> {
    let mut bed = Bed::start_with(true)?;
    let plain_client = bed.pod("plain-client", false)?;
    let plain_server = bed.pod("plain-server", false)?;
    let client = bed.pod("client", true)?;
    let server_tls = bed.pod("server-tls", true)?;
    let server_plain = bed.pod("server-plain", true)?;
    let mut services = String::new();
    for (i, name, pod) in [
        (10, "server-tls", server_tls),
        (11, "server-plain", server_plain),
    ] {
        let ip = bed.pods[pod].ip();
        services.push_str(&service_yaml(
            NS,
            name,
            bed.net.service_ip(i),
            80,
            &[("app", name)],
            &[(ip, name)],
        ));
        services.push_str("---\n");
    }
    services.push_str(
        "apiVersion: security.trellis.dev/v1alpha1\nkind: PeerAuthentication\nmetadata: \
         {name: plaintext, namespace: bench}\nspec:\n  selector: {matchLabels: {app: \
         server-plain}}\n  mtls: {mode: DISABLE}\n---\napiVersion: \
         security.trellis.dev/v1alpha1\nkind: PeerAuthentication\nmetadata: {name: strict, \
         namespace: bench}\nspec:\n  mtls: {mode: STRICT}\n",
    );
    bed.write("services.yaml", &services)?;
    for i in [client, server_tls, server_plain] {
        let pod = &mut bed.pods[i];
        pod.wait_sidecar_ready()
            .with_context(|| pod.sidecar_log())?;
    }
    let tls = SocketAddr::from((bed.net.service_ip(10), 80));
    let plain = SocketAddr::from((bed.net.service_ip(11), 80));
    let direct = SocketAddr::from((bed.pods[plain_server].ip(), APP_PORT));
    for (to, host, pod) in [
        (tls, "server-tls.bench", "server-tls"),
        (plain, "server-plain.bench", "server-plain"),
    ] {
        trellis_harness::wait_for(
            "the client's sidecar to route to the servers",
            Duration::from_secs(30),
            || match bed.pods[client].request(to, host, "/", &[]) {
                Ok(r) if r.status == 200 && r.pod() == pod => Some(()),
                _ => None,
            },
        )?;
    }
    println!(
        "sidecar-latency --mtls: {} rps over {} keep-alive connections, {} s per path and round, \
         {} rounds; GET / to the echo app (HTTP/1.1); Envoy with 1 worker per sidecar; both \
         pairs with agents and access logs, one pair's server in mode DISABLE (plaintext), the \
         other STRICT (mutual TLS 1.3, ECDSA P-256)",
        args.rps, args.connections, args.seconds, args.rounds
    );
    let cpu = |pod: usize| -> anyhow::Result<f64> {
        let pid = bed.pods[pod]
            .sidecar_pid()
            .ok_or_else(|| anyhow!("no sidecar"))?;
        procfs::cpu_seconds(pid)
    };
    let mut paths: [(Vec<Duration>, f64, usize); 3] = Default::default();
    for round in 1..=args.rounds {
        let d = load(&bed.pods[plain_client].netns, direct, "plain-server", &args)?;
        let mut line = format!("  round {round}: direct {}", d.describe());
        paths[0].0.extend(d.latencies.iter().copied());
        for (slot, to, host, server) in [
            (1, plain, "server-plain.bench", server_plain),
            (2, tls, "server-tls.bench", server_tls),
        ] {
            let before = cpu(client)? + cpu(server)?;
            let l = load(&bed.pods[client].netns, to, host, &args)?;
            paths[slot].1 += cpu(client)? + cpu(server)? - before;
            paths[slot].2 += l.latencies.len();
            paths[slot].0.extend(l.latencies.iter().copied());
            let what = if slot == 1 {
                "plaintext pair"
            } else {
                "mTLS pair"
            };
            line.push_str(&format!("; {what} {}", l.describe()));
        }
        println!("{line}");
    }
    let handshakes =
        bed.pods[client].sidecar_stat("cluster.service_bench_server-tls_80.ssl.handshake")?;
    println!("  client sidecar TLS handshakes to server-tls: {handshakes}");
    let (d50, d99) = (
        percentile(&mut paths[0].0, 0.5),
        percentile(&mut paths[0].0, 0.99),
    );
    let (p50, p99) = (
        percentile(&mut paths[1].0, 0.5),
        percentile(&mut paths[1].0, 0.99),
    );
    let (t50, t99) = (
        percentile(&mut paths[2].0, 0.5),
        percentile(&mut paths[2].0, 0.99),
    );
    let per_request = |(cpu, n): (f64, usize)| cpu * 1e6 / n.max(1) as f64;
    let added = t99.saturating_sub(d99);
    println!(
        "sidecar-latency --mtls result: direct p50 {:.3} ms, p99 {:.3} ms; plaintext pair p50 \
         {:.3} ms, p99 {:.3} ms (added p99 {:.3} ms); mTLS pair p50 {:.3} ms, p99 {:.3} ms \
         (added p99 {:.3} ms, target < 1 ms: {}); Envoy CPU per request (both sidecars): \
         plaintext {:.1} µs, mTLS {:.1} µs",
        ms(d50),
        ms(d99),
        ms(p50),
        ms(p99),
        ms(p99.saturating_sub(d99)),
        ms(t50),
        ms(t99),
        ms(added),
        verdict(added < Duration::from_millis(1)),
        per_request((paths[1].1, paths[1].2)),
        per_request((paths[2].1, paths[2].2)),
    );
    Ok(())
}

struct Load {
    latencies: Vec<Duration>,
    errors: usize,
    late: usize,
}

impl Load {
    fn describe(&self) -> String {
        let mut l = self.latencies.clone();
        format!(
            "{} ok, {} errors, {} sent more than 1 ms late; p50 {:.3} ms, p99 {:.3} ms",
            self.latencies.len(),
            self.errors,
            self.late,
            ms(percentile(&mut l, 0.5)),
            ms(percentile(&mut l, 0.99))
        )
    }
}

/// Open-loop load from inside `netns`: each connection sends at fixed times; a request's
/// latency runs from when it was due, so a slow answer also counts against the ones it delays.
fn load(netns: &Netns, to: SocketAddr, host: &str, args: &LatencyArgs) -> anyhow::Result<Load> {
    let connections = args.connections.max(1);
    let interval = Duration::from_secs_f64(f64::from(connections) / f64::from(args.rps.max(1)));
    let count = (args.seconds as f64 / interval.as_secs_f64()) as usize;
    let start = Instant::now() + Duration::from_millis(200);
    let request =
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: trellis-bench\r\n\r\n").into_bytes();
    let threads: Vec<_> = (0..connections)
        .map(|k| {
            let request = request.clone();
            let offset = interval * k / connections;
            netns.spawn(move || run_connection(to, &request, start + offset, interval, count))
        })
        .collect();
    let mut out = Load {
        latencies: Vec::new(),
        errors: 0,
        late: 0,
    };
    for t in threads {
        let part = t.join().map_err(|_| anyhow!("a load thread panicked"))??;
        out.latencies.extend(part.latencies);
        out.errors += part.errors;
        out.late += part.late;
    }
    Ok(out)
}

fn run_connection(
    to: SocketAddr,
    request: &[u8],
    start: Instant,
    interval: Duration,
    count: usize,
) -> Load {
    let mut out = Load {
        latencies: Vec::with_capacity(count),
        errors: 0,
        late: 0,
    };
    let mut conn: Option<TcpStream> = None;
    let mut buf = vec![0u8; 16 * 1024];
    for i in 0..count {
        let due = start + interval * i as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > Duration::from_millis(1) {
            out.late += 1;
        }
        let stream = match conn.take() {
            Some(s) => s,
            None => match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    s
                }
                Err(_) => {
                    out.errors += 1;
                    continue;
                }
            },
        };
        match exchange(stream, request, &mut buf) {
            Ok(stream) => {
                out.latencies.push(due.elapsed());
                conn = Some(stream);
            }
            Err(_) => out.errors += 1,
        }
    }
    out
}

/// Sends one request and reads its response (with a Content-Length body) on a kept-alive
/// connection; a 200 is required.
fn exchange(mut stream: TcpStream, request: &[u8], buf: &mut [u8]) -> anyhow::Result<TcpStream> {
    stream.write_all(request)?;
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..])?;
        anyhow::ensure!(n > 0, "connection closed");
        filled += n;
        let Some(end) = find(&buf[..filled], b"\r\n\r\n") else {
            anyhow::ensure!(filled < buf.len(), "headers too large");
            continue;
        };
        let head = std::str::from_utf8(&buf[..end])?;
        anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "not a 200");
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .context("no content-length")?;
        let total = end + 4 + length;
        anyhow::ensure!(total <= buf.len(), "body too large");
        while filled < total {
            let n = stream.read(&mut buf[filled..])?;
            anyhow::ensure!(n > 0, "connection closed");
            filled += n;
        }
        return Ok(stream);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The ClusterIP of benchmark Service `i` (10.97.0.0/16, never routed: only ever captured).
fn service_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 97, (i / 250) as u8, (i % 250) as u8 + 1)
}

/// Services `0..n` in `namespace`, each with one endpoint at a made-up pod IP.
fn services_yaml(namespace: &str, n: usize) -> String {
    let mut yaml = String::new();
    for i in 0..n {
        let endpoint = Ipv4Addr::new(10, 98, (i / 250) as u8, (i % 250) as u8 + 1);
        yaml.push_str(&service_yaml(
            namespace,
            &format!("svc-{i}"),
            service_ip(i),
            80,
            &[("app", &format!("svc-{i}"))],
            &[(endpoint, &format!("svc-{i}-pod"))],
        ));
        yaml.push_str("---\n");
    }
    yaml
}

/// Runs `sidecar-memory`.
pub fn memory(args: MemoryArgs) -> anyhow::Result<()> {
    let mut bed = Bed::start()?;
    let pod = bed.pod("sidecar", true)?;
    bed.pods[pod]
        .wait_sidecar_ready()
        .with_context(|| bed.pods[pod].sidecar_log())?;
    let pid = bed.pods[pod]
        .sidecar_pid()
        .context("the sidecar has no process id")?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    println!(
        "sidecar-memory: one sidecar (Envoy 1.40, 1 worker; process {}) with N Services in the \
         mesh, each one HTTP port and one endpoint",
        comm.trim()
    );
    let cp_pid = bed.cp.pid();
    let mut figures = Vec::new();
    for &n in &args.services {
        let t0 = Instant::now();
        bed.write("services.yaml", &services_yaml(NS, n))?;
        let pod = &bed.pods[pod];
        trellis_harness::wait_for(
            "the sidecar to hold every Service",
            Duration::from_secs(120),
            || {
                let clusters = pod.sidecar_stat("cluster_manager.active_clusters").ok()?;
                let listeners = pod
                    .sidecar_stat("listener_manager.total_listeners_active")
                    .ok()?;
                // Every Service's cluster and outbound listener, plus the pass-through clusters.
                (clusters as usize >= n + 3 && listeners as usize >= n + 2).then_some(())
            },
        )?;
        let applied = t0.elapsed();
        std::thread::sleep(Duration::from_secs(3));
        let rss = procfs::rss_kib(pid)? as f64 / 1024.0;
        let memory: serde_json::Value = serde_json::from_str(&pod.admin("/memory")?)?;
        let number = |k: &str| {
            memory[k]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_default()
                / (1024.0 * 1024.0)
        };
        let cp = cp_pid
            .and_then(|p| procfs::rss_kib(p).ok())
            .map_or("?".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        println!(
            "  {n:>5} Services: sidecar RSS {rss:.1} MiB (heap {:.1} MiB, allocated {:.1} MiB); \
             applied {:.0} ms after the write; control plane RSS {cp}",
            number("heap_size"),
            number("allocated"),
            applied.as_secs_f64() * 1000.0
        );
        figures.push(format!("{n}: {rss:.1} MiB"));
    }
    println!(
        "sidecar-memory result: sidecar RSS by Services in the mesh: {}",
        figures.join(", ")
    );
    Ok(())
}

/// Runs `mesh-fanout`.
pub fn fanout(args: FanoutArgs) -> anyhow::Result<()> {
    let sidecars = args.classes * args.sidecars_per_class;
    let fd_limit = procfs::raise_fd_limit();
    anyhow::ensure!(
        fd_limit >= sidecars as u64 + 256,
        "the open-file limit is {fd_limit}; {sidecars} sidecars need about {} (raise it with \
         `ulimit -n`)",
        sidecars + 256
    );
    let tmp = tempfile::tempdir()?;
    let work = tmp.path().to_path_buf();
    let config = work.join("config");
    std::fs::create_dir_all(&config)?;
    let cp = ControlPlane::start(
        &config,
        &work,
        &[
            "--debounce-ms",
            "100",
            "--xds-max-connections-per-peer",
            "100000",
            "--xds-max-connections",
            "100000",
        ],
    )?;
    // Namespace c holds Service svc-c (one endpoint) and its pods, which all share a class.
    let mut yaml = String::new();
    for c in 0..args.classes {
        let ns = format!("mesh-{c}");
        if args.egress_namespaces > 0 {
            let scope: Vec<String> = (1..args.holds())
                .map(|k| format!("mesh-{}", (c + k) % args.classes))
                .collect();
            yaml.push_str(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: \
                 {{trellis.dev/mesh: enabled}}\n  annotations: {{trellis.dev/egress-namespaces: \
                 \"{}\"}}\n---\n",
                scope.join(",")
            ));
        } else {
            yaml.push_str(&namespace_yaml(&ns, true));
        }
        yaml.push_str(&service_yaml(
            &ns,
            "svc",
            service_ip(c),
            80,
            &[("app", "svc")],
            &[(
                Ipv4Addr::new(10, 98, (c / 250) as u8, (c % 250) as u8 + 1),
                "pod-0",
            )],
        ));
        for p in 0..args.sidecars_per_class {
            let n = c * args.sidecars_per_class + p;
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{p}, namespace: {ns}, \
                 labels: {{app: svc}}}}\nspec:\n  containers: [{{name: app, ports: \
                 [{{containerPort: {APP_PORT}}}]}}]\nstatus:\n  podIP: {}\n  conditions: \
                 [{{type: Ready, status: \"True\"}}]\n---\n",
                Ipv4Addr::new(10, 99, (n / 250) as u8, (n % 250) as u8 + 1)
            ));
        }
    }
    std::fs::write(config.join("mesh.yaml"), yaml)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(fanout_measure(&args, &cp, &config))
}

async fn fanout_measure(args: &FanoutArgs, cp: &ControlPlane, config: &Path) -> anyhow::Result<()> {
    let sidecars = args.classes * args.sidecars_per_class;
    let pid = cp.pid();
    let rss = || pid.and_then(|p| procfs::rss_kib(p).ok());
    let cpu = || pid.and_then(|p| procfs::cpu_seconds(p).ok());
    println!(
        "mesh-fanout: {sidecars} simulated sidecars (Delta ADS) in {} namespaces, so {} sidecar \
         classes; each sidecar holds the listener, cluster and endpoints of {} Services{}",
        args.classes,
        args.classes,
        args.holds(),
        if args.egress_namespaces > 0 {
            " (trellis.dev/egress-namespaces)"
        } else {
            " (every Service)"
        }
    );
    let expected: Vec<bool> = (0..args.classes)
        .flat_map(|c| std::iter::repeat_n(args.in_scope(c, 0), args.sidecars_per_class))
        .collect();
    let expected_count = expected.iter().filter(|e| **e).count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = cp.status()?;
    let classes: std::collections::BTreeSet<String> = status["sidecars"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["class"].as_str().map(str::to_string))
        .collect();
    let rss_idle = rss();
    let started = Instant::now();
    let mut clients = Vec::with_capacity(sidecars);
    for c in 0..args.classes {
        for p in 0..args.sidecars_per_class {
            let channel = xds_client::connect(cp.xds).await?;
            let config = ClientConfig {
                node_id: format!("pod-{p}.mesh-{c}"),
                gateway: String::new(),
                delta: true,
                nack: Default::default(),
                pod: Some(format!("mesh-{c}/pod-{p}")),
            };
            clients.push(xds_client::start(channel, config).await?);
        }
    }
    let wanted = args.holds();
    wait_until(Duration::from_secs(600), || {
        clients.iter().all(|c| holds_endpoints(c) >= wanted)
    })
    .await
    .map_err(|_| {
        let synced = clients
            .iter()
            .filter(|c| holds_endpoints(c) >= wanted)
            .count();
        anyhow!("only {synced} of {sidecars} sidecars received their configuration")
    })?;
    println!(
        "  {sidecars} sidecars of {} classes connected and holding their configuration after \
         {:.1} s",
        classes.len(),
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let (Some(idle), Some(connected)) = (rss_idle, rss()) {
        let per = connected.saturating_sub(idle) as f64 * 1024.0 / sidecars as f64;
        println!(
            "  control plane RSS: {:.1} MiB before the sidecars connected (the {} class \
             snapshots built), {:.1} MiB with {sidecars} sidecars: {:.1} KB per connected \
             sidecar",
            idle as f64 / 1024.0,
            classes.len(),
            connected as f64 / 1024.0,
            per / 1000.0
        );
    }
    let mut all = Vec::new();
    let slice = config.join("change.yaml");
    for change in 1..=args.changes {
        let cpu_before = cpu();
        let t0 = Instant::now();
        // Service svc of namespace mesh-0 gets another endpoint.
        let mut yaml = service_yaml(
            "mesh-0",
            "svc",
            service_ip(0),
            80,
            &[("app", "svc")],
            &[
                (Ipv4Addr::new(10, 98, 0, 1), "pod-0"),
                (Ipv4Addr::new(10, 100, 0, change as u8), "pod-1"),
            ],
        );
        // Only the EndpointSlice: the Service stays in mesh.yaml.
        yaml = yaml
            .split("---\n")
            .find(|d| d.contains("kind: EndpointSlice"))
            .unwrap_or_default()
            .replace("name: svc-1,", "name: svc-extra,");
        std::fs::write(&slice, yaml)?;
        // The sidecars that hold mesh-0's Service must get the change; the others must not.
        let converged = wait_until(Duration::from_secs(60), || {
            clients
                .iter()
                .zip(&expected)
                .filter(|(_, e)| **e)
                .all(|(c, _)| first_after(c, types::ENDPOINT, t0).is_some())
        })
        .await;
        let got = clients
            .iter()
            .zip(&expected)
            .filter(|(c, e)| **e && first_after(c, types::ENDPOINT, t0).is_some())
            .count();
        anyhow::ensure!(
            converged.is_ok(),
            "change {change}: only {got} of {expected_count} sidecars got it within 60 s"
        );
        let mut times: Vec<Duration> = clients
            .iter()
            .zip(&expected)
            .filter(|(_, e)| **e)
            .map(|(c, _)| first_after(c, types::ENDPOINT, t0).unwrap_or(t0) - t0)
            .collect();
        let spent = cpu().zip(cpu_before).map(|(a, b)| a - b);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let others = clients
            .iter()
            .zip(&expected)
            .filter(|(c, e)| !**e && first_after(c, types::ENDPOINT, t0).is_some())
            .count();
        println!(
            "  change {change}: {got} sidecars updated (all that hold the Service; {others} of \
             the other {} got anything): {}; control plane CPU {}",
            sidecars - expected_count,
            summary(&mut times),
            spent.map_or("?".into(), |c| format!("{c:.2} s"))
        );
        all.extend(times);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "mesh-fanout result over {} changes reaching {expected_count} of {sidecars} sidecars ({} \
         classes): {}",
        args.changes,
        classes.len(),
        summary(&mut all)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
