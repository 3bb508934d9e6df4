//! `trellis agent`: runs beside an Envoy. It obtains the workload's certificate from the
//! control plane's certificate service with the pod's token (a key generated here, which never
//! leaves), renews it at half-life, and serves it to Envoy over SDS on a Unix socket (secrets
//! `default` and `ROOTCA`); see [`trellis_agent`].
//!
//! ```text
//!  token file ──(read for each request)──► certificate service ──► certificate ──► SDS socket
//!  --envoy BIN --bootstrap FILE: Envoy starts once the first certificate is held; the agent
//!      exits with Envoy's status, and passes SIGTERM/SIGINT on to it
//!  --readiness-address ADDR: GET /ready ── 200 once the certificate is held, Envoy ACKed it
//!      over SDS, and Envoy took its clusters and listeners from the control plane (and is
//!      LIVE); 503 with what is missing before
//! ```

use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use trellis_agent::Credentials;

/// Arguments of `trellis agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The control plane's certificate service (its xDS address).
    #[arg(long)]
    pub ca_address: String,
    /// A file holding the pod's token (`trellis token`, or a projected ServiceAccount token
    /// with audience `trellis-ca`); read again for each request, as the kubelet rotates it.
    #[arg(long)]
    pub token_file: PathBuf,
    /// Where to serve SDS to Envoy (a Unix socket, created 0600).
    #[arg(long)]
    pub sds_socket: PathBuf,
    /// The mesh's root certificate (PEM; `root-cert.pem` in the CA directory): the control
    /// plane's certificate service is then reached over TLS and verified against it, as
    /// `--control-plane-name`. Without it, plaintext (a control plane run with
    /// `--insecure-xds`).
    #[arg(long)]
    pub root_cert: Option<PathBuf>,
    /// The name the control plane's certificate carries (`trellis.<root-namespace>.svc`).
    #[arg(long, default_value = "trellis.trellis-system.svc")]
    pub control_plane_name: String,
    /// The certificate lifetime to ask for, in seconds (the control plane may shorten it).
    #[arg(long, default_value_t = 24 * 3600)]
    pub lifetime_secs: u64,
    /// Start this Envoy binary once the first certificate is held (with `--bootstrap`); the
    /// agent then exits with Envoy's exit status.
    #[arg(long, requires = "bootstrap")]
    pub envoy: Option<PathBuf>,
    /// Envoy's bootstrap (`trellis bootstrap --sds-socket ...` writes it).
    #[arg(long, requires = "envoy")]
    pub bootstrap: Option<PathBuf>,
    /// One more argument for Envoy (repeat for more), e.g. `--envoy-arg=--concurrency
    /// --envoy-arg=2`.
    #[arg(long = "envoy-arg", allow_hyphen_values = true, requires = "envoy")]
    pub envoy_args: Vec<String>,
    /// Envoy's admin address, where readiness looks at its state.
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub envoy_admin: SocketAddr,
    /// Serve `GET /ready` (and `/healthz`) here: the pod's readiness or startup probe.
    #[arg(long)]
    pub readiness_address: Option<SocketAddr>,
    /// The pod this sidecar serves (`NAMESPACE/NAME`): the agent then writes the sidecar's
    /// bootstrap to `--bootstrap` itself (as `trellis bootstrap --pod ... --sds-socket ...`),
    /// before starting Envoy. What an injected sidecar does.
    #[arg(long, requires_all = ["xds_address", "bootstrap"])]
    pub pod: Option<String>,
    /// With `--pod`: the control plane's xDS address(es) for the bootstrap.
    #[arg(long, value_delimiter = ',')]
    pub xds_address: Vec<String>,
    /// With `--pod`: where the sidecar sends stats and spans (`trellis serve
    /// --telemetry-address`); the xDS address(es) when not given.
    #[arg(long, value_delimiter = ',')]
    pub telemetry_address: Vec<String>,
    /// With `--pod`: the trust domain, for the control plane's identity in the bootstrap.
    #[arg(long, default_value = trellis_ca::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// With `--pod`: the control plane's namespace, for its identity in the bootstrap.
    #[arg(long, default_value = "trellis-system")]
    pub root_namespace: String,
    /// The mesh's root certificate as PEM text (instead of `--root-cert FILE`), as an injected
    /// sidecar gets it in its environment.
    #[arg(
        long,
        env = "TRELLIS_ROOT_CERT_PEM",
        conflicts_with = "root_cert",
        hide_env_values = true
    )]
    pub root_cert_pem: Option<String>,
}

/// With `--pod`: writes the sidecar's bootstrap (SDS from the agent's socket, xDS over mutual
/// TLS) to `--bootstrap`.
fn write_bootstrap(args: &AgentArgs) -> anyhow::Result<()> {
    let (Some(pod), Some(path)) = (&args.pod, &args.bootstrap) else {
        return Ok(());
    };
    let yaml = crate::bootstrap::render(&crate::bootstrap::BootstrapArgs {
        gateway: None,
        pod: Some(pod.clone()),
        xds_address: args.xds_address.clone(),
        delta: false,
        node_id: None,
        admin_address: "127.0.0.1".into(),
        admin_port: None,
        sds_socket: Some(args.sds_socket.clone()),
        insecure_xds: args.root_cert.is_none() && args.root_cert_pem.is_none(),
        trust_domain: args.trust_domain.clone(),
        root_namespace: args.root_namespace.clone(),
        telemetry_address: args.telemetry_address.clone(),
    })
    .context("--pod: the sidecar's bootstrap")?;
    std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Runs the agent until interrupted (or, with `--envoy`, until Envoy exits).
#[tokio::main(flavor = "current_thread")]
pub async fn run(args: &AgentArgs) -> anyhow::Result<()> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let token = trellis_agent::token_file(args.token_file.clone());
    token().context("--token-file")?;
    write_bootstrap(args)?;
    let root = match (&args.root_cert, &args.root_cert_pem) {
        (Some(path), _) => Some(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        (None, Some(pem)) => Some(pem.clone()),
        (None, None) => None,
    };
    let channel = match root {
        Some(root) => {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(root))
                .domain_name(args.control_plane_name.clone());
            tonic::transport::Endpoint::from_shared(format!("https://{}", args.ca_address))
                .context("--ca-address")?
                .tls_config(tls)
                .context("--root-cert")?
                .connect_lazy()
        }
        None => tonic::transport::Endpoint::from_shared(format!("http://{}", args.ca_address))
            .context("--ca-address")?
            .connect_lazy(),
    };
    let (tx, rx) = watch::channel(None);
    let rotation = tokio::spawn(trellis_agent::rotate(
        channel,
        token,
        Duration::from_secs(args.lifetime_secs.max(60)),
        tx,
    ));
    let _ = std::fs::remove_file(&args.sds_socket);
    let listener = tokio::net::UnixListener::bind(&args.sds_socket)
        .with_context(|| format!("cannot listen on {}", args.sds_socket.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&args.sds_socket, std::fs::Permissions::from_mode(0o600))?;
    }
    eprintln!("agent: SDS on {}", args.sds_socket.display());
    let sds = trellis_agent::Sds::new(rx.clone());
    let acked = sds.acked();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let sds_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(sds.into_server())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                },
            ),
    );
    if let Some(address) = args.readiness_address {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen for readiness on {address}"))?;
        eprintln!(
            "agent: readiness on http://{}/ready",
            listener.local_addr()?
        );
        let probe = Readiness {
            credentials: rx.clone(),
            acked,
            envoy_admin: args.envoy_admin,
        };
        tokio::spawn(serve_readiness(listener, probe));
    }
    let result = match (&args.envoy, &args.bootstrap) {
        (Some(envoy), Some(bootstrap)) => run_envoy(envoy, bootstrap, &args.envoy_args, rx).await,
        _ => {
            terminated().await;
            Ok(())
        }
    };
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), sds_server).await;
    rotation.abort();
    result
}

/// Resolves on SIGTERM or SIGINT.
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

/// Starts Envoy once a certificate is held; returns when it exits (an error unless it exited
/// cleanly), passing SIGTERM/SIGINT on to it.
async fn run_envoy(
    envoy: &std::path::Path,
    bootstrap: &std::path::Path,
    extra: &[String],
    mut credentials: watch::Receiver<Option<Arc<Credentials>>>,
) -> anyhow::Result<()> {
    tokio::select! {
        held = credentials.wait_for(Option::is_some) => {
            held.context("the certificate rotation stopped")?;
        }
        () = terminated() => return Ok(()),
    }
    let mut command = tokio::process::Command::new(envoy);
    command
        .arg("--config-path")
        .arg(bootstrap)
        .args(extra)
        .kill_on_drop(true);
    die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", envoy.display()))?;
    eprintln!(
        "agent: started {} (pid {})",
        envoy.display(),
        child.id().unwrap_or_default()
    );
    let status = tokio::select! {
        status = child.wait() => status?,
        () = terminated() => {
            // Envoy drains and exits on SIGTERM; it gets 20 s before it is killed.
            if let Some(pid) = child
                .id()
                .and_then(|p| i32::try_from(p).ok())
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
                Ok(status) => status?,
                Err(_) => {
                    child.kill().await?;
                    child.wait().await?
                }
            }
        }
    };
    eprintln!("agent: Envoy exited: {status}");
    anyhow::ensure!(
        status.success() || status.code().is_none(),
        "Envoy exited with {status}"
    );
    Ok(())
}

/// Envoy is killed when the agent dies, however it dies (even by SIGKILL): an Envoy left
/// behind would keep serving with a certificate nobody renews.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the child between fork and exec and only makes the prctl(2)
    // system call, which is async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

/// What readiness looks at.
#[derive(Clone)]
struct Readiness {
    credentials: watch::Receiver<Option<Arc<Credentials>>>,
    acked: watch::Receiver<Option<String>>,
    envoy_admin: SocketAddr,
}

impl Readiness {
    /// `Ok` when ready, else what is missing.
    async fn check(&self) -> Result<String, String> {
        let held = self.credentials.borrow().clone();
        let Some(credentials) = held else {
            return Err("no workload certificate yet".into());
        };
        if credentials.not_after <= SystemTime::now() {
            return Err("the workload certificate expired and cannot be renewed".into());
        }
        if self.acked.borrow().is_none() {
            return Err("Envoy has not taken the workload certificate over SDS yet".into());
        }
        let state = admin_get(self.envoy_admin, "/ready")
            .await
            .map_err(|e| format!("Envoy's admin endpoint: {e}"))?;
        if state.trim() != "LIVE" {
            return Err(format!("Envoy is {}", state.trim()));
        }
        let stats = admin_get(
            self.envoy_admin,
            "/stats?filter=^(cluster_manager.cds|listener_manager.lds).update_success$",
        )
        .await
        .map_err(|e| format!("Envoy's admin endpoint: {e}"))?;
        for stat in [
            "cluster_manager.cds.update_success",
            "listener_manager.lds.update_success",
        ] {
            let taken = stats
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{stat}: ")))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            if taken == 0 {
                return Err(format!(
                    "Envoy has not accepted configuration from the control plane yet ({stat} is 0)"
                ));
            }
        }
        Ok("ready: certificate held, Envoy took it and its configuration\n".into())
    }
}

/// `GET path` on Envoy's admin endpoint: the body of a 200, within 2 s.
async fn admin_get(admin: SocketAddr, path: &str) -> anyhow::Result<String> {
    tokio::time::timeout(
        Duration::from_secs(2),
        crate::admin::get(&admin.to_string(), path, None),
    )
    .await
    .context("no answer within 2 s")?
}

async fn serve_readiness(listener: tokio::net::TcpListener, probe: Readiness) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let ready = move || {
        let probe = probe.clone();
        async move {
            match probe.check().await {
                Ok(text) => (StatusCode::OK, text),
                Err(why) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            }
        }
    };
    let app = axum::Router::new()
        .route("/ready", get(ready))
        .route("/healthz", get(|| async { "ok\n" }));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!("the readiness endpoint stopped: {e}");
    }
}
