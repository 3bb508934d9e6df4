//! `trellis agent`: runs beside an Envoy. It obtains the workload's certificate from the
//! control plane's certificate service with the pod's token (a key generated here, which never
//! leaves), renews it at half-life, and serves it to Envoy over SDS on a Unix socket (secrets
//! `default` and `ROOTCA`); see [`trellis_agent`].

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

/// Arguments of `trellis agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The control plane's certificate service (its xDS address).
    #[arg(long)]
    pub ca_address: String,
    /// A file holding the pod's token (`trellis token`).
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
}

/// Runs the agent until interrupted.
#[tokio::main(flavor = "current_thread")]
pub async fn run(args: &AgentArgs) -> anyhow::Result<()> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading {}", args.token_file.display()))?;
    let channel = match &args.root_cert {
        Some(path) => {
            let root = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
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
        token.trim().to_string(),
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
    let sds = tonic::transport::Server::builder()
        .add_service(trellis_agent::Sds::new(rx).into_server())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        );
    let result = sds.await.context("SDS server");
    rotation.abort();
    result
}
