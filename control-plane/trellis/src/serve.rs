//! `trellis serve`: wires the pipeline together.
//!
//! ```text
//!  file provider ─┐
//!   (watch, debounce)                                                          
//!                 ├─Load─► control loop ──translate──► SnapshotWriter ──► ADS server ──► Envoy
//!  Kubernetes ────┘             │                                            │
//!   provider                    ├──► status report ──► admin /status, status files
//!   (--kubernetes)              │        └──► (Kubernetes) status writer ──► /status subresources
//!                               └──────────────────────── SyncRegistry ◄──────┘
//! ```
//!
//! Exactly one source: `--config-dir` or `--kubernetes` (see [`crate::kubernetes`]).

use crate::admin::{self, AdminState};
use crate::kubernetes::{KubeArgs, Kubernetes, StatusHooks};
use anyhow::Context;
use clap::Args;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tracing::{error, info, warn};
use trellis_controller::{
    AddressPool, StateDir, StatusTracker, StatusWriter, apply_proxy_sync, resolve_node,
};
use trellis_modules::ModuleStore;
use trellis_sources::Load;
use trellis_translate::ir::EndpointIr;
use trellis_translate::policy::{LastGood, ModuleOptions, used_modules, wanted_modules};
use trellis_translate::{Options, proxy_key, translate};
use trellis_xds::{AdsServer, CsdsServer, NodeResolver, SnapshotWriter, snapshot_cache};

/// Arguments of `trellis serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A directory of Kubernetes YAML (Gateway API objects, Services, EndpointSlices, Secrets,
    /// Namespaces), watched for changes. Exactly one of this and `--kubernetes`.
    #[arg(
        long,
        env = "TRELLIS_CONFIG_DIR",
        required_unless_present = "kubernetes",
        conflicts_with = "kubernetes"
    )]
    pub config_dir: Option<PathBuf>,
    /// The Kubernetes source.
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Where the xDS (ADS) gRPC server listens. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:18000", env = "TRELLIS_XDS_ADDRESS")]
    pub xds_address: SocketAddr,
    /// Where the admin HTTP endpoint listens (`/status`, `/proxies`, `/metrics`, `/readyz`).
    #[arg(long, default_value = "127.0.0.1:18001", env = "TRELLIS_ADMIN_ADDRESS")]
    pub admin_address: SocketAddr,
    /// Write each object's status as YAML under this directory.
    #[arg(long, env = "TRELLIS_STATUS_DIR")]
    pub status_dir: Option<PathBuf>,
    /// Keep what must survive a restart here: the last good content of every config file and
    /// each object's generation and creation time (file mode), the last valid spec of every
    /// policy, and verified Wasm modules. Without it, a restart forgets them: a broken file
    /// then contributes nothing and an invalid policy is not applied.
    #[arg(long, env = "TRELLIS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The window (milliseconds) that coalesces bursts of changes (files, objects in the API).
    /// A change after this long without one is applied after a 10 ms settle; changes that
    /// follow within the window are gathered and applied together once it passes.
    #[arg(long, default_value_t = 100)]
    pub debounce_ms: u64,
    /// Give each Gateway without `spec.addresses` its own address from this range (for
    /// example 127.1.0.0/16 on a development machine), published in `status.addresses`.
    #[arg(long)]
    pub gateway_address_pool: Option<IpNet>,
    /// Write the bound xDS and admin addresses to this file (`xds=HOST:PORT` and
    /// `admin=HOST:PORT` lines) once both listen.
    #[arg(long)]
    pub address_file: Option<PathBuf>,
    /// Log format: `text` or `json`.
    #[arg(long, default_value = "text")]
    pub log_format: String,
    /// The policy filter module (`trellis_policy_wasm.wasm`) served to proxies for
    /// AuthorizationPolicy and RateLimitPolicy; read and hashed once at start. Without it those
    /// policies are reported as not applied.
    #[arg(long, env = "TRELLIS_POLICY_MODULE")]
    pub policy_module: Option<PathBuf>,
    /// A file holding the admin endpoint's bearer token (at least 16 characters). Required
    /// when `--admin-address` is not a loopback address; then every admin path but `/healthz`,
    /// `/readyz`, `/metrics` and `/wasm/...` needs `Authorization: Bearer TOKEN`.
    #[arg(long, env = "TRELLIS_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The certificate authority's directory (its root and token key; created 0700 when
    /// missing). The xDS port then also serves `trellis.ca.v1.CertificateService`, which signs
    /// workload certificates for callers holding a `trellis token` (in Kubernetes mode: a
    /// projected ServiceAccount token). In Kubernetes mode without it, the root is kept in
    /// Secret `trellis-ca` of the control plane's namespace. Required in file mode unless
    /// `--insecure-xds`.
    #[arg(long, env = "TRELLIS_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
    /// The trust domain of workload identities (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`).
    #[arg(long, default_value = trellis_ca::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Serve xDS in plaintext (development only: refused unless `--xds-address` is a loopback
    /// address). Without it the xDS port takes mutual TLS, with the CA of `--ca-dir` (or in
    /// Kubernetes mode of Secret `trellis-ca`): every ADS stream must present the workload
    /// certificate of the proxy it claims to be.
    #[arg(long)]
    pub insecure_xds: bool,
    /// The mesh's root namespace: a PeerAuthentication there without a selector sets the
    /// mutual-TLS mode of the whole mesh (Istio's `rootNamespace`).
    #[arg(long, default_value = "trellis-system")]
    pub root_namespace: String,
    /// Serve `/healthz`, `/readyz` and `/metrics` (nothing else, no token) on a listener of
    /// their own at this address too: for probes and scrapers while the admin endpoint stays
    /// on loopback.
    #[arg(long, env = "TRELLIS_PROBE_ADDRESS")]
    pub probe_address: Option<SocketAddr>,
    /// Serve Wasm modules (only `GET /wasm/<sha256>`) on a listener of their own at this
    /// address, instead of on the admin endpoint.
    #[arg(long, env = "TRELLIS_MODULE_SERVER_ADDRESS")]
    pub module_server_address: Option<SocketAddr>,
    /// Where proxies fetch Wasm modules, `HOST:PORT` (an address or a DNS name). Defaults to
    /// where modules are served (which must then not be a wildcard address).
    #[arg(long, env = "TRELLIS_MODULE_ADDRESS")]
    pub module_address: Option<String>,
    /// Connections the xDS listener holds at once.
    #[arg(long, default_value_t = 20_000)]
    pub xds_max_connections: usize,
    /// Connections the xDS listener holds at once from one peer address.
    #[arg(long, default_value_t = 1_000)]
    pub xds_max_connections_per_peer: usize,
    /// Where WasmFilter modules may come from.
    #[command(flatten)]
    pub modules: ModuleArgs,
    /// The sidecar injection webhook (Kubernetes mode).
    #[command(flatten)]
    pub injection: crate::injection::InjectionArgs,
    /// Receive OTLP (traces and metrics, gRPC) on a listener of its own at this address too,
    /// with the xDS port's mutual TLS; proxies reach it when their bootstraps say
    /// `trellis bootstrap --telemetry-address`. The xDS port always receives them as well.
    #[arg(long, env = "TRELLIS_TELEMETRY_ADDRESS")]
    pub telemetry_address: Option<SocketAddr>,
    /// The trace store's bound, in MiB: the oldest traces go first, errors and slow traces
    /// (a quarter of the bound) last.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub trace_store_mib: u32,
    /// Also send every trace export to this OTLP/gRPC collector (`http://HOST:PORT`, plaintext),
    /// through a bounded queue: what it cannot take in time is dropped and counted
    /// (`trellis_otlp_forward_dropped_total`).
    #[arg(long)]
    pub trace_forward_address: Option<String>,
    /// Export the control plane's own spans (each translation, each push of snapshots) to this
    /// OTLP/gRPC endpoint, `http://HOST:PORT` (plaintext): a collector, or the control plane's
    /// own receiver when xDS is plaintext.
    #[arg(long, env = "TRELLIS_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The window health scores are computed over, in seconds (a multiple of 10).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(30..=3600))]
    pub health_window_secs: u64,
}

/// Where WasmFilter modules may come from, and the bounds on getting them. By default a
/// WasmFilter can name neither a local path nor a URL: the operator opts in to each.
#[derive(Debug, Args)]
pub struct ModuleArgs {
    /// The directory WasmFilters may name local modules in (`spec.module.path`, relative to it
    /// or absolute under it). Without it, local paths are refused.
    #[arg(long, env = "TRELLIS_MODULE_DIR")]
    pub module_dir: Option<PathBuf>,
    /// Hosts WasmFilters may name in `spec.module.url`, comma-separated: exact names or
    /// addresses, or `*.example.com`. Without it, module URLs are refused.
    #[arg(long, env = "TRELLIS_MODULE_URL_HOSTS", value_delimiter = ',')]
    pub module_url_hosts: Vec<String>,
    /// Allow plain `http://` module URLs (the default: HTTPS only).
    #[arg(long)]
    pub allow_http_module_urls: bool,
    /// PEM certificates of authorities trusted for HTTPS module URLs besides the system's.
    #[arg(long, env = "TRELLIS_MODULE_CA_FILE")]
    pub module_ca_file: Option<PathBuf>,
    /// The largest module accepted, in MiB.
    #[arg(long, default_value_t = 64)]
    pub max_module_mib: u64,
    /// The most MiB of verified modules held in memory; modules no WasmFilter uses are evicted
    /// first, and a module that does not fit is refused with a reason.
    #[arg(long, default_value_t = 256)]
    pub module_cache_mib: u64,
}

impl ModuleArgs {
    /// The module store's configuration.
    pub fn config(
        &self,
        disk_cache: Option<PathBuf>,
    ) -> anyhow::Result<trellis_modules::ModuleConfig> {
        let extra_roots = match &self.module_ca_file {
            Some(path) => {
                use rustls_pki_types::pem::PemObject;
                let certs: Result<Vec<_>, _> =
                    rustls_pki_types::CertificateDer::pem_file_iter(path)
                        .with_context(|| format!("cannot read {}", path.display()))?
                        .collect();
                certs.with_context(|| {
                    format!("{} holds no valid PEM certificates", path.display())
                })?
            }
            None => Vec::new(),
        };
        Ok(trellis_modules::ModuleConfig {
            module_dir: self.module_dir.clone(),
            urls: trellis_modules::UrlPolicy {
                hosts: self.module_url_hosts.clone(),
                allow_http: self.allow_http_module_urls,
                extra_roots,
            },
            limits: trellis_modules::Limits {
                max_module_bytes: self.max_module_mib << 20,
                cache_bytes: self.module_cache_mib << 20,
                ..trellis_modules::Limits::default()
            },
            disk_cache,
        })
    }
}

/// Runs the control plane until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The OTLP exporter's channel lives on the runtime.
    let provider = {
        let _runtime = runtime.enter();
        init_logging(
            &args.log_format,
            args.otlp_endpoint.as_deref(),
            &args.root_namespace,
        )?
    };
    let result = runtime.block_on(serve(args));
    if let Some(provider) = provider {
        // Whatever spans are still batched go out before the process ends.
        let _ = provider.shutdown();
    }
    result
}

/// Logs to stderr (text or JSON); with `otlp`, also exports the control plane's own spans
/// (`translate`, `push`) over OTLP/gRPC as service `<root-namespace>/trellis`.
fn init_logging(
    format: &str,
    otlp: Option<&str>,
    root_namespace: &str,
) -> anyhow::Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // kube-rs logs every failed request at error level; Trellis reports an unreachable API
    // server once, with its cause, so those are off unless RUST_LOG names kube_client.
    let mut directives = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
    if !directives.contains("kube_client") {
        directives.push_str(",kube_client::client::builder=off");
    }
    let filter = tracing_subscriber::EnvFilter::new(directives);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if format == "json" {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let (otel, provider) = match otlp {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .with_context(|| format!("--otlp-endpoint {endpoint}"))?;
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(format!("{root_namespace}/trellis"))
                        .build(),
                )
                .build();
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("trellis"))
                // Only the control plane's own spans, not its dependencies'.
                .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                    m.target().starts_with("trellis")
                }));
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .init();
    Ok(provider)
}

/// The control plane's own identity (`spiffe://<td>/ns/<root-namespace>/sa/trellis`) and the
/// DNS name clients verify it by (`trellis.<root-namespace>.svc`).
pub fn control_plane_identity(trust_domain: &str, root_namespace: &str) -> (String, String) {
    (
        format!("spiffe://{trust_domain}/ns/{root_namespace}/sa/trellis"),
        format!("trellis.{root_namespace}.svc"),
    )
}

/// How long the control plane's xDS serving certificate lives; it is renewed at half-life.
const SERVING_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Mutual TLS for the xDS port: a serving certificate from the CA (renewed at half-life, in
/// place), and client certificates verified against the CA's root.
fn xds_tls(args: &ServeArgs, ca: Arc<trellis_ca::Ca>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (id, dns) = control_plane_identity(&args.trust_domain, &args.root_namespace);
    let identity = trellis_ca::SpiffeId::parse(&id).context("the control plane's identity")?;
    let issue = {
        let ca = ca.clone();
        move || {
            ca.issue_serving(
                &identity,
                std::slice::from_ref(&dns),
                SERVING_LIFETIME,
                std::time::SystemTime::now(),
            )
        }
    };
    let first = issue().context("issuing the xDS serving certificate")?;
    let certificate =
        trellis_runtime::tls::ServerCertificate::new(&first.chain_pem, &first.key_pem)
            .map_err(|e| anyhow::anyhow!("the xDS serving certificate: {e}"))?;
    let config = trellis_runtime::tls::server_config(certificate.clone(), ca.root_pem())
        .map_err(|e| anyhow::anyhow!("xDS TLS: {e}"))?;
    info!(identity = %id, "xDS takes mutual TLS: proxies authenticate with their workload certificates");
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SERVING_LIFETIME / 2).await;
            match issue() {
                Ok(next) => {
                    if let Err(e) = certificate.replace(&next.chain_pem, &next.key_pem) {
                        warn!("cannot renew the xDS serving certificate: {e}");
                    }
                }
                Err(e) => warn!("cannot renew the xDS serving certificate: {e}"),
            }
        }
    });
    Ok(config)
}

/// Which proxy a client certificate may be: a sidecar's stream (`pod/<ns>/<name>`) needs the
/// pod's identity, a gateway proxy's (`gateway/<ns>/<name>`) the Gateway's proxies'; anything
/// else, or no certificate, is refused.
fn stream_authorizer(state: Arc<AdminState>, args: &ServeArgs) -> trellis_xds::StreamAuthorizer {
    let trust_domain = args.trust_domain.clone();
    Arc::new(move |identity: Option<&str>, key: &str| {
        let Some(identity) = identity else {
            return Err(
                "no client certificate: with mutual TLS on the xDS port, a proxy \
                        presents its workload certificate (run trellis agent beside Envoy)"
                    .to_string(),
            );
        };
        let expected = match key.split('/').collect::<Vec<_>>().as_slice() {
            ["pod", ns, name] => {
                let account = state.pod_service_account(ns, name).ok_or_else(|| {
                    format!("{identity} claims pod {ns}/{name}, which does not exist")
                })?;
                format!("spiffe://{trust_domain}/ns/{ns}/sa/{account}")
            }
            ["gateway", ns, name] => format!(
                "spiffe://{trust_domain}/ns/{ns}/sa/{}",
                trellis_ca::gateway_service_account(name)
            ),
            _ => return Err(format!("{identity} asks for {key}, which is no proxy's")),
        };
        if identity == expected {
            Ok(())
        } else {
            Err(format!(
                "the client certificate says {identity}, but {key} is served to {expected} only"
            ))
        }
    })
}

/// ADS streams one xDS connection may carry at once.
const XDS_STREAMS_PER_CONNECTION: u32 = 16;

/// The admin endpoint's authentication: a token from `--admin-token-file`, which a
/// non-loopback admin address requires.
fn admin_auth(args: &ServeArgs) -> anyhow::Result<trellis_runtime::AdminAuth> {
    match &args.admin_token_file {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --admin-token-file {}", path.display()))?;
            trellis_runtime::AdminAuth::bearer(&token)
                .map_err(|e| anyhow::anyhow!("--admin-token-file {}: {e}", path.display()))
        }
        None if args.admin_address.ip().is_loopback() => Ok(trellis_runtime::AdminAuth::none()),
        None => anyhow::bail!(
            "--admin-address {} is not a loopback address: give --admin-token-file (clients \
             then send Authorization: Bearer TOKEN), or listen on 127.0.0.1",
            args.admin_address
        ),
    }
}

/// Where proxies fetch modules: `--module-address HOST:PORT`, or the address modules are served
/// on (which must then be one proxies can reach).
fn module_endpoint(given: Option<&str>, serving: SocketAddr) -> anyhow::Result<EndpointIr> {
    let Some(given) = given else {
        if serving.ip().is_unspecified() {
            warn!(
                "modules are served on {serving}: set --module-address to an address proxies can reach"
            );
        }
        return Ok(EndpointIr {
            address: serving.ip().to_string(),
            port: serving.port(),
            mtls: false,
        });
    };
    let parsed = given
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
        .filter(|(host, _)| !host.is_empty());
    let Some((host, port)) = parsed else {
        anyhow::bail!("--module-address {given} is not HOST:PORT");
    };
    Ok(EndpointIr {
        address: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
        mtls: false,
    })
}

/// The CA in Kubernetes mode: its root from Secret `trellis-ca` of the control plane's
/// namespace (created when missing), retried while the API server does not answer.
async fn kube_ca(kube: &Kubernetes, trust_domain: &str) -> anyhow::Result<trellis_ca::Ca> {
    let namespace = kube.namespace().to_string();
    let secret = trellis_kube::identity::CA_SECRET;
    let mut last = None;
    for _ in 0..12 {
        match trellis_kube::identity::load_or_create_ca(
            &kube.client(),
            &namespace,
            secret,
            trust_domain,
        )
        .await
        {
            Ok(ca) => {
                info!(secret = %format!("{namespace}/{secret}"), trust_domain = %trust_domain, "certificate service on the xDS port");
                return Ok(ca);
            }
            // A Secret that holds no usable root is for an operator to fix, not to wait out.
            Err(e @ trellis_kube::identity::CaSecretError::Unusable { .. }) => {
                return Err(e).context("loading the certificate authority");
            }
            Err(e) => {
                warn!(error = %e, "cannot load the CA's root yet; retrying");
                last = Some(e);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
    Err(anyhow::anyhow!(
        "cannot load the CA's root from Secret {namespace}/{secret}: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// Checks that xDS is either mutual TLS (a CA from `--ca-dir`, or in Kubernetes mode from its
/// Secret) or plaintext by choice (`--insecure-xds`) and then only on loopback.
pub fn check_xds(args: &ServeArgs) -> anyhow::Result<()> {
    if args.insecure_xds {
        if !args.xds_address.ip().is_loopback() {
            anyhow::bail!(
                "--insecure-xds: --xds-address {} is not a loopback address (plaintext xDS is \
                 for development on one machine; drop --insecure-xds for mutual TLS)",
                args.xds_address
            );
        }
    } else if args.ca_dir.is_none() && !args.kube.kubernetes {
        anyhow::bail!(
            "xDS takes mutual TLS: give --ca-dir DIR (the certificate authority, created 0700 \
             when missing), or --insecure-xds for plaintext on a loopback --xds-address \
             (development only)"
        );
    }
    Ok(())
}

/// Checks what clap cannot: the Kubernetes flags only go with `--kubernetes`.
pub fn check_source(args: &ServeArgs) -> anyhow::Result<()> {
    if args.injection.injection_address.is_some() && !args.kube.kubernetes {
        anyhow::bail!("--injection-address needs --kubernetes (file mode has no admission)");
    }
    if !args.kube.kubernetes {
        if args.kube.kubeconfig.is_some() {
            anyhow::bail!("--kubeconfig needs --kubernetes");
        }
        if !args.kube.watch_namespaces.is_empty() {
            anyhow::bail!("--watch-namespaces needs --kubernetes");
        }
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    check_source(&args)?;
    check_xds(&args)?;
    if let Some(dir) = &args.config_dir {
        if !dir.is_dir() {
            anyhow::bail!("--config-dir {} is not a directory", dir.display());
        }
        // Files written there would be read back as configuration.
        let config = dir.canonicalize()?;
        for (flag, other) in [
            ("--status-dir", &args.status_dir),
            ("--state-dir", &args.state_dir),
        ] {
            if let Some(other) = other {
                std::fs::create_dir_all(other)
                    .with_context(|| format!("cannot create {flag} {}", other.display()))?;
                if other.canonicalize()?.starts_with(&config) {
                    anyhow::bail!(
                        "{flag} {} is inside --config-dir {}: give it a directory of its own",
                        other.display(),
                        dir.display()
                    );
                }
            }
        }
    }
    let (writer, cache) = snapshot_cache();
    let mut telemetry = crate::telemetry::Telemetry::new(trellis_telemetry::traces::StoreConfig {
        max_bytes: args.trace_store_mib as usize * 1024 * 1024,
        ..Default::default()
    });
    if let Some(endpoint) = &args.trace_forward_address {
        if !(endpoint.starts_with("http://") && endpoint.len() > "http://".len()) {
            anyhow::bail!("--trace-forward-address {endpoint}: give http://HOST:PORT");
        }
        telemetry = telemetry.forward_traces(endpoint.clone());
    }
    if !args.health_window_secs.is_multiple_of(10) {
        anyhow::bail!(
            "--health-window-secs {}: give a multiple of 10 (scores are kept in 10-s buckets)",
            args.health_window_secs
        );
    }
    let telemetry = telemetry.with_window(Duration::from_secs(args.health_window_secs));
    let state = Arc::new(AdminState {
        telemetry,
        ..AdminState::default()
    });
    let resolver: NodeResolver = Arc::new(resolve_node);
    let ads = AdsServer::new(cache, state.registry.clone(), resolver);

    let admin_auth = admin_auth(&args)?;
    let xds_listener = TcpListener::bind(args.xds_address)
        .await
        .with_context(|| format!("cannot listen for xDS on {}", args.xds_address))?;
    let admin_listener = TcpListener::bind(args.admin_address)
        .await
        .with_context(|| format!("cannot listen for admin on {}", args.admin_address))?;
    let module_listener = match args.module_server_address {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for modules on {address}"))?,
        ),
        None => None,
    };
    let probe_listener = match args.probe_address {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for probes on {address}"))?,
        ),
        None => None,
    };
    let telemetry_listener = match args.telemetry_address {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for telemetry on {address}"))?,
        ),
        None => None,
    };
    let xds_bound = xds_listener.local_addr()?;
    let admin_bound = admin_listener.local_addr()?;
    let modules_bound = match &module_listener {
        Some(l) => l.local_addr()?,
        None => admin_bound,
    };
    let source = match &args.config_dir {
        Some(dir) => dir.display().to_string(),
        None => "kubernetes".to_string(),
    };
    let telemetry_bound = match &telemetry_listener {
        Some(l) => l.local_addr()?,
        None => xds_bound,
    };
    info!(xds = %xds_bound, admin = %admin_bound, telemetry = %telemetry_bound, source = %source, "trellis serving");
    if let Some(path) = &args.address_file {
        let text = format!(
            "xds={xds_bound}\nadmin={admin_bound}\nmodules={modules_bound}\ntelemetry={telemetry_bound}\n"
        );
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }

    let state_dir = match &args.state_dir {
        Some(dir) => Some(
            StateDir::open(dir)
                .with_context(|| format!("cannot use --state-dir {}", dir.display()))?,
        ),
        None => None,
    };
    let module_cache = state_dir.as_ref().map(StateDir::modules_dir);
    let store = ModuleStore::start(args.modules.config(module_cache)?).with_context(|| {
        format!(
            "cannot use --module-dir {}",
            args.modules
                .module_dir
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        )
    })?;
    let _ = state.modules.set(store.clone());
    let policy_module = match &args.policy_module {
        Some(path) => {
            let digest = store.pin_file(path).with_context(|| {
                format!(
                    "cannot load the policy filter module (--policy-module {})",
                    path.display()
                )
            })?;
            info!(path = %path.display(), sha256 = %digest, "policy filter module loaded");
            Some(digest)
        }
        None => None,
    };
    let module_server = module_endpoint(args.module_address.as_deref(), modules_bound)?;
    let modules = Modules {
        store,
        options: ModuleOptions {
            policy_module,
            modules: BTreeMap::new(),
            server: Some(module_server),
        },
    };

    let debounce = Duration::from_millis(args.debounce_ms);
    let kube = match (&args.config_dir, args.kube.kubernetes) {
        (_, true) => {
            let kube = Kubernetes::start(&args.kube).await?;
            let _ = state.kubernetes.set(kube.health.clone());
            Some(kube)
        }
        (Some(_), false) => None,
        (None, false) => anyhow::bail!("give --config-dir or --kubernetes"),
    };
    let file_loads = match (&args.config_dir, &kube) {
        (Some(dir), None) => Some(
            trellis_sources::watch_with(
                dir.clone(),
                debounce,
                state_dir.as_ref().map(StateDir::config_dir),
            )
            .context("cannot watch the config directory")?,
        ),
        _ => None,
    };

    let hits = state.limit_hits.clone();
    let ads = ads.with_limits(trellis_xds::ServerLimits::default(), hits.clone());
    let xds_connections = trellis_runtime::ConnectionLimits {
        max_connections: args.xds_max_connections,
        max_per_peer: args.xds_max_connections_per_peer,
        ..trellis_runtime::ConnectionLimits::xds()
    };
    let ca = match (&args.ca_dir, &kube) {
        (Some(dir), _) => {
            let ca = trellis_ca::Ca::load_or_create(dir, &args.trust_domain, SystemTime::now())
                .context("loading the certificate authority")?;
            info!(dir = %dir.display(), trust_domain = %args.trust_domain, "certificate service on the xDS port");
            Some(ca)
        }
        (None, Some(kube)) => {
            let ca = kube_ca(kube, &args.trust_domain).await?;
            Some(ca)
        }
        (None, None) => None,
    };
    let ca = ca.map(Arc::new);
    if let (Some(_), Some(kube), Some(ca)) = (args.injection.injection_address, &kube, &ca) {
        crate::injection::start(crate::injection::Injection {
            args: &args.injection,
            ca: ca.clone(),
            state: state.clone(),
            client: kube.client(),
            leader: kube.leader(),
            namespace: kube.namespace().to_string(),
            trust_domain: args.trust_domain.clone(),
        })
        .await?;
    }
    let (certificates, xds_tls) = match ca {
        Some(ca) => {
            let now = SystemTime::now();
            // Warn well ahead of the root's expiry: every workload certificate depends on it.
            let left = ca.not_after().duration_since(now).unwrap_or_default();
            if left < Duration::from_secs(90 * 24 * 3600) {
                warn!(
                    days_left = left.as_secs() / 86400,
                    "the CA's root certificate expires soon: rotate it before workload certificates stop verifying"
                );
            }
            let root_expiry = ca.not_after();
            // Who callers are: in Kubernetes mode their projected ServiceAccount tokens, checked
            // with TokenReview; in file mode `trellis token`s signed with the CA's token key.
            let auth: Arc<dyn trellis_ca::service::Authenticate> = match (&kube, &args.ca_dir) {
                (Some(kube), _) => Arc::new(trellis_kube::identity::TokenReviews::new(
                    kube.client(),
                    &args.trust_domain,
                )),
                (None, Some(dir)) => {
                    let tokens = trellis_ca::TokenKey::load_or_create(dir)
                        .context("loading the token key")?;
                    let pods = state.clone();
                    let lookup: trellis_ca::service::PodLookup =
                        Arc::new(move |w| pods.workload_service_account(w));
                    Arc::new(trellis_ca::service::FileTokens::new(
                        Arc::new(tokens),
                        lookup,
                    ))
                }
                (None, None) => unreachable!("a CA comes from --ca-dir or Kubernetes"),
            };
            let certificates = trellis_ca::service::Certificates::new(ca.clone(), auth, None);
            let _ = state.ca.set((root_expiry, certificates.stats()));
            let tls = if args.insecure_xds {
                None
            } else {
                Some(xds_tls(&args, ca)?)
            };
            (Some(certificates.into_server()), tls)
        }
        None => (None, None),
    };
    if xds_tls.is_none() {
        warn!(
            address = %args.xds_address,
            "--insecure-xds: xDS is plaintext and unauthenticated (anything that reaches it can \
             claim to be any proxy and fetch Gateway keys); for development on loopback only"
        );
    }
    let telemetry_server = telemetry_server(
        telemetry_listener,
        xds_tls.clone(),
        &state.telemetry,
        xds_connections.clone(),
        hits.clone(),
    );
    let xds_incoming =
        trellis_runtime::guarded_incoming(xds_listener, xds_connections, "xds", hits.clone());
    let mut xds_builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        // Envoy opens one ADS stream per connection; a few more leave room for CSDS.
        .max_concurrent_streams(Some(XDS_STREAMS_PER_CONNECTION))
        .http2_max_header_list_size(Some(16 * 1024));
    let xds_server: std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match xds_tls {
        Some(tls) => {
            // Every stream is checked against the proxy it claims to be; CSDS (every proxy's
            // configuration status) stays off this port: `trellis proxy-status` reads it from
            // the admin endpoint.
            let ads = ads.with_authorizer(stream_authorizer(state.clone(), &args));
            let incoming =
                trellis_runtime::tls::tls_incoming(xds_incoming, tls, trellis_ca::uri_san);
            Box::pin(
                xds_builder
                    .add_service(ads.into_service())
                    .add_service(state.telemetry.receiver(true))
                    .add_service(state.telemetry.trace_receiver(true))
                    .add_optional_service(certificates)
                    .serve_with_incoming(incoming),
            )
        }
        None => Box::pin(
            xds_builder
                .add_service(ads.into_service())
                .add_service(CsdsServer::new(state.registry.clone()).into_service())
                .add_service(state.telemetry.receiver(false))
                .add_service(state.telemetry.trace_receiver(false))
                .add_optional_service(certificates)
                .serve_with_incoming(xds_incoming),
        ),
    };
    // Health scores: every proxy's stats deltas, evaluated every 10 s.
    tokio::spawn(state.telemetry.clone().run());
    let admin_router = trellis_runtime::auth::protect(admin::router(state.clone()), admin_auth);
    let admin_server = trellis_runtime::serve_http(
        admin_listener,
        admin_router,
        trellis_runtime::HttpLimits::default(),
        "admin",
        hits.clone(),
    );
    let probe_server = async {
        match probe_listener {
            Some(listener) => {
                trellis_runtime::serve_http(
                    listener,
                    admin::probe_router(state.clone()),
                    trellis_runtime::HttpLimits::default(),
                    "probes",
                    hits.clone(),
                )
                .await
            }
            None => std::future::pending().await,
        }
    };
    let module_server = async {
        match module_listener {
            Some(listener) => {
                trellis_runtime::serve_http(
                    listener,
                    admin::module_router(state.clone()),
                    trellis_runtime::HttpLimits::default(),
                    "modules",
                    hits.clone(),
                )
                .await
            }
            None => std::future::pending().await,
        }
    };
    let control = async {
        // The last valid policy specs from before this process: the state directory's, else
        // (Kubernetes) what the replicas kept in their ConfigMap.
        let mut kept = state_dir
            .as_ref()
            .map(StateDir::read_policies)
            .unwrap_or_default();
        if kept.is_empty()
            && let Some(kube) = &kube
            && let Some(json) = kube.read_last_good().await
        {
            kept = LastGood::from_json(&json);
        }
        // The file provider has its first load already; the Kubernetes provider waits for its
        // initial sync (the xDS and admin servers answer meanwhile; /readyz says why not ready).
        let (loads, hooks) = match (file_loads, &kube) {
            (Some(loads), _) => (loads, None),
            (None, Some(kube)) => (kube.loads(debounce).await, Some(kube.hooks())),
            (None, None) => return,
        };
        control_loop(
            loads,
            writer,
            state.clone(),
            Kept {
                status_dir: args.status_dir.clone(),
                state_dir,
                last_good: kept,
                // With a CA (its directory, or in Kubernetes mode its Secret), sidecars get
                // identities and speak mutual TLS.
                mesh_identity: (args.ca_dir.is_some() || args.kube.kubernetes).then(|| {
                    trellis_translate::security::MeshIdentity {
                        trust_domain: args.trust_domain.clone(),
                        root_namespace: args.root_namespace.clone(),
                    }
                }),
                // Every proxy on a mutual-TLS xDS port presents its workload certificate, a
                // Gateway's too, so Gateways can originate the mesh's mutual TLS; on a
                // plaintext xDS port (development) they may hold none, and send plaintext.
                gateway_mtls: !args.insecure_xds,
            },
            args.gateway_address_pool,
            hooks,
            modules,
        )
        .await;
    };

    let result = tokio::select! {
        r = xds_server => r.context("xDS server failed"),
        r = telemetry_server => r.context("telemetry server failed"),
        () = admin_server => Err(anyhow::anyhow!("the admin server stopped")),
        () = module_server => Err(anyhow::anyhow!("the module server stopped")),
        () = probe_server => Err(anyhow::anyhow!("the probe server stopped")),
        () = control => Ok(()),
        () = shutdown_signal() => {
            info!("shutting down");
            Ok(())
        }
    };
    if let Some(kube) = kube {
        kube.shutdown().await;
    }
    result
}

/// The OTLP receivers on `--telemetry-address`, with the xDS port's mutual TLS (when it has
/// it): a listener of their own, so that a flood of spans cannot crowd out configuration.
fn telemetry_server(
    listener: Option<TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    telemetry: &crate::telemetry::Telemetry,
    limits: trellis_runtime::ConnectionLimits,
    hits: Arc<trellis_xds::LimitHits>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>>
{
    let Some(listener) = listener else {
        return Box::pin(std::future::pending());
    };
    let incoming = trellis_runtime::guarded_incoming(listener, limits, "telemetry", hits);
    let builder = || {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .max_concurrent_streams(Some(XDS_STREAMS_PER_CONNECTION))
            .http2_max_header_list_size(Some(16 * 1024))
    };
    match tls {
        Some(tls) => {
            let incoming = trellis_runtime::tls::tls_incoming(incoming, tls, trellis_ca::uri_san);
            Box::pin(
                builder()
                    .add_service(telemetry.receiver(true))
                    .add_service(telemetry.trace_receiver(true))
                    .serve_with_incoming(incoming),
            )
        }
        None => Box::pin(
            builder()
                .add_service(telemetry.receiver(false))
                .add_service(telemetry.trace_receiver(false))
                .serve_with_incoming(incoming),
        ),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// The module store and what the translator is told of it.
struct Modules {
    store: ModuleStore,
    options: ModuleOptions,
}

/// What the control loop keeps outside itself: status files, the state that survives
/// restarts, and the last valid policy specs from before this process.
struct Kept {
    status_dir: Option<PathBuf>,
    state_dir: Option<StateDir>,
    last_good: LastGood,
    /// Workload identity for the mesh's mutual TLS (with a CA).
    mesh_identity: Option<trellis_translate::security::MeshIdentity>,
    /// Whether Gateway proxies hold workload certificates (xDS over mutual TLS).
    gateway_mtls: bool,
}

async fn control_loop(
    mut loads: tokio::sync::watch::Receiver<Arc<Load>>,
    writer: SnapshotWriter,
    state: Arc<AdminState>,
    kept: Kept,
    pool: Option<IpNet>,
    hooks: Option<StatusHooks>,
    mut modules: Modules,
) {
    let mut peer_changes = hooks.as_ref().map(StatusHooks::peer_changes);
    let mut status = StatusPublisher {
        tracker: StatusTracker::default(),
        writer: kept.status_dir.map(StatusWriter::new),
        state: state.clone(),
        hooks,
    };
    let mut pool = pool.map(AddressPool::new);
    let mut sync_changes = state.registry.subscribe();
    let mut module_changes = modules.store.changes();
    let mut resources = trellis_translate::envoy::ResourceCache::default();
    // The last valid spec of every policy: an invalid change leaves the previous one in force
    // (across restarts too, with a state directory).
    let state_dir = kept.state_dir;
    let mut last_good = kept.last_good;
    // Whether the last valid specs were handed on since start (the first translation always
    // does, so that the kept copy is the current one).
    let mut kept_once = false;
    if !last_good.is_empty() {
        info!(
            policies = last_good.len(),
            "last valid policy specs from before this process are in force where needed"
        );
    }
    loop {
        let load = loads.borrow_and_update().clone();
        // The Services whose health is scored, with their endpoints.
        state
            .telemetry
            .set_services(crate::telemetry::capacities(&load.input));
        // Only the certificate service (`--ca-dir`) asks which service account a pod has.
        if state.ca.get().is_some() {
            state.set_pod_accounts(&load.input);
        }
        // Modules are read and fetched by the store's worker: a new one is reported as not
        // fetched yet, and its arrival is a change of its own (below).
        module_changes.borrow_and_update();
        modules.store.want(wanted_modules(&load.input, &last_good));
        modules.options.modules = modules.store.states();
        let started = Instant::now();
        let options = Options {
            assigned_addresses: pool
                .as_mut()
                .map(|p| p.assign(&load.input))
                .unwrap_or_default(),
            modules: modules.options.clone(),
            last_good: std::mem::take(&mut last_good),
            mesh_identity: kept.mesh_identity.clone(),
            gateway_mtls: kept.gateway_mtls,
        };
        let translation = tracing::info_span!("translate", objects = load.input.len())
            .in_scope(|| translate(&load.input, &options));
        state.telemetry.set_objectives(
            translation
                .objectives
                .iter()
                .map(|(k, o)| {
                    (
                        (k.namespace.clone(), k.name.clone()),
                        trellis_health::Objectives {
                            availability: o.availability,
                            p99_ms: o.p99_latency_ms,
                        },
                    )
                })
                .collect(),
            crate::telemetry::objective_routes(&translation.ir, &translation.objectives),
        );
        if translation.last_good != options.last_good || !kept_once {
            kept_once = true;
            if let Some(state) = &state_dir
                && let Err(e) = state.write_policies(&translation.last_good)
            {
                warn!("cannot keep the last valid policy specs in the state directory: {e}");
            }
            if let Some(hooks) = &status.hooks {
                hooks.publish_last_good(&translation.last_good.to_json());
            }
        }
        last_good = translation.last_good.clone();
        // Modules the last valid specs keep in force are wanted too.
        modules.store.want(wanted_modules(&load.input, &last_good));
        modules.store.serve(
            used_modules(&translation.ir)
                .into_iter()
                .chain(modules.options.policy_module.clone())
                .collect(),
        );
        let push = tracing::info_span!("push", proxies = tracing::field::Empty);
        let _push = push.enter();
        let snapshots = trellis_translate::envoy::snapshots_cached(&translation.ir, &mut resources);
        push.record("proxies", snapshots.len());
        let versions: BTreeMap<String, String> = snapshots
            .iter()
            .map(|(key, snapshot)| (key.clone(), snapshot.version()))
            .collect();
        // A sidecar's key is its pod's, an alias of its class's snapshot.
        let aliases = translation
            .ir
            .pods
            .iter()
            .map(|(pod, class)| (trellis_controller::node::pod_proxy_key(pod), class.clone()))
            .collect();
        writer.publish_aliased(snapshots, &aliases);
        drop(_push);
        drop(push);
        let elapsed = started.elapsed();
        let count = state.translations.fetch_add(1, Ordering::Relaxed) + 1;
        state
            .translation_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        state.ready.store(true, Ordering::Relaxed);
        info!(
            objects = load.input.len(),
            proxies = versions.len(),
            problems = load.diagnostics.len(),
            micros = elapsed.as_micros() as u64,
            "configuration published"
        );
        let published = Published {
            load,
            translation: Arc::new(translation),
            versions,
            count,
        };
        status.publish(&published);
        // Until the next configuration: follow the proxies' progress (debounced).
        loop {
            tokio::select! {
                changed = loads.changed() => {
                    if changed.is_err() {
                        warn!("the config watcher stopped; serving the last configuration");
                        std::future::pending::<()>().await;
                    }
                    break;
                }
                changed = sync_changes.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(SYNC_STATUS_DEBOUNCE).await;
                    sync_changes.borrow_and_update();
                    status.publish(&published);
                }
                changed = module_changes.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                    if modules.store.states() != modules.options.modules {
                        info!("module availability changed; translating again");
                        break;
                    }
                }
                changed = peer_changed(&mut peer_changes) => {
                    if changed {
                        tokio::time::sleep(SYNC_STATUS_DEBOUNCE).await;
                        status.publish(&published);
                    } else {
                        peer_changes = None;
                    }
                }
            }
        }
    }
}

/// Waits for the other replicas' proxy reports to change; false when they never will again.
async fn peer_changed(changes: &mut Option<tokio::sync::watch::Receiver<u64>>) -> bool {
    match changes {
        Some(rx) => {
            let changed = rx.changed().await.is_ok();
            rx.borrow_and_update();
            changed
        }
        None => std::future::pending().await,
    }
}

/// How long proxy sync changes are gathered before status is refreshed.
const SYNC_STATUS_DEBOUNCE: Duration = Duration::from_millis(50);

/// The last published configuration.
struct Published {
    load: Arc<Load>,
    translation: Arc<trellis_translate::Translation>,
    /// Snapshot version by proxy key.
    versions: BTreeMap<String, String>,
    count: u64,
}

/// Turns a translation and the proxies' sync state into the status report, status files and
/// admin view.
struct StatusPublisher {
    tracker: StatusTracker,
    writer: Option<StatusWriter>,
    state: Arc<AdminState>,
    /// With `--kubernetes`: proxy reports shared between replicas, status to write back.
    hooks: Option<StatusHooks>,
}

impl StatusPublisher {
    fn publish(&mut self, p: &Published) {
        let mut status = p.translation.status.clone();
        let peers = self.hooks.as_ref().map(StatusHooks::peers);
        let mut local = trellis_kube::replicas::SyncSummary::new();
        for (key, gw) in status.gateways.iter_mut() {
            let proxy = proxy_key(key);
            let Some(version) = p.versions.get(&proxy) else {
                continue;
            };
            let mut sync = self.state.registry.key_state(&proxy, version);
            if let Some(peers) = &peers {
                let gateway = key.to_string();
                if sync.connected > 0 {
                    local.insert(gateway.clone(), crate::kubernetes::summary_of(&sync));
                }
                sync = crate::kubernetes::with_peers(sync, peers.get(&gateway));
            }
            apply_proxy_sync(gw, &sync);
        }
        let now = trellis_model::core::Time(now_timestamp());
        let report =
            self.tracker
                .report(&p.load.input, &status, &p.load.diagnostics, p.count, &now);
        if let Some(w) = self.writer.as_mut()
            && let Err(e) = w.write(&report)
        {
            error!("cannot write status files: {e:#}");
        }
        if let Some(hooks) = &self.hooks {
            hooks.publish_local(local);
            hooks.publish_desired(&report);
        }
        self.state.set_report(report);
        self.state.set_load(p.load.clone());
        self.state.set_translation(p.translation.clone());
        self.state.set_vet(trellis_vet::vet(
            &p.load.input,
            &p.translation,
            &p.load.diagnostics,
        ));
    }
}

fn now_timestamp() -> trellis_model::core::jiff::Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    trellis_model::core::jiff::Timestamp::from_second(secs)
        .unwrap_or(trellis_model::core::jiff::Timestamp::UNIX_EPOCH)
}
