//! The sidecar injection webhook of `trellis serve --kubernetes --injection-address ADDR`.
//!
//! ```text
//!  API server ──POST /inject (AdmissionReview, TLS)──► trellis_inject::review ──► JSON patch
//!     the serving certificate: from the CA, for trellis.<namespace>.svc, renewed at half-life
//!  the leader, every 30 s ──► MutatingWebhookConfiguration <name>: each webhook's
//!     clientConfig.caBundle set to the CA's root (merge patch, resourceVersion precondition)
//! ```
//!
//! Whether a namespace is in the mesh comes from the provider's Namespaces; a namespace not seen
//! yet is trusted to the webhook's namespaceSelector.

use crate::admin::AdminState;
use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use clap::Args;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// The injection flags of `trellis serve --kubernetes`.
#[derive(Debug, Args)]
pub struct InjectionArgs {
    /// Serve the sidecar injection webhook (`POST /inject`, TLS) here; the
    /// MutatingWebhookConfiguration's Service points at it.
    #[arg(long, env = "TRELLIS_INJECTION_ADDRESS")]
    pub injection_address: Option<SocketAddr>,
    /// The sidecar image injected (`trellis` and Envoy; the Dockerfile's `sidecar` stage).
    #[arg(long, default_value = "ghcr.io/trellis-mesh/trellis-sidecar:0.1.0")]
    pub sidecar_image: String,
    /// Where injected sidecars reach xDS (default `trellis.<namespace>.svc:18000`).
    #[arg(long)]
    pub injection_xds_address: Option<String>,
    /// The MutatingWebhookConfiguration whose `caBundle` the leader keeps current.
    #[arg(long, default_value = "trellis-sidecar-injector")]
    pub injection_webhook: String,
}

/// What the webhook needs from the rest of the control plane.
pub struct Injection<'a> {
    /// The flags.
    pub args: &'a InjectionArgs,
    /// The CA (the serving certificate, the root for caBundle and the sidecars).
    pub ca: Arc<trellis_ca::Ca>,
    /// Namespaces seen.
    pub state: Arc<AdminState>,
    /// The API server.
    pub client: Client,
    /// Whether this replica leads.
    pub leader: watch::Receiver<bool>,
    /// The control plane's namespace.
    pub namespace: String,
    /// The trust domain (the control plane's identity in its serving certificate).
    pub trust_domain: String,
}

/// How long the webhook's serving certificate lives; renewed at half-life.
const SERVING_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Starts the webhook and the caBundle keeper; returns once the webhook listens.
pub async fn start(injection: Injection<'_>) -> anyhow::Result<SocketAddr> {
    let Some(address) = injection.args.injection_address else {
        anyhow::bail!("no --injection-address");
    };
    let dns = format!("trellis.{}.svc", injection.namespace);
    let identity =
        trellis_ca::SpiffeId::new(&injection.trust_domain, &injection.namespace, "trellis")
            .context("the control plane's identity")?;
    let ca = injection.ca.clone();
    let issue = {
        let dns = dns.clone();
        move || {
            ca.issue_serving(
                &identity,
                std::slice::from_ref(&dns),
                SERVING_LIFETIME,
                std::time::SystemTime::now(),
            )
        }
    };
    let first = issue().context("issuing the webhook's serving certificate")?;
    let certificate =
        trellis_runtime::tls::ServerCertificate::new(&first.chain_pem, &first.key_pem)
            .map_err(|e| anyhow::anyhow!("the webhook's serving certificate: {e}"))?;
    let mut tls =
        (*trellis_runtime::tls::server_config(certificate.clone(), injection.ca.root_pem())
            .map_err(|e| anyhow::anyhow!("webhook TLS: {e}"))?)
        .clone();
    // The API server speaks HTTP/2 or HTTP/1.1 to webhooks.
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SERVING_LIFETIME / 2).await;
            match issue() {
                Ok(next) => {
                    if let Err(e) = certificate.replace(&next.chain_pem, &next.key_pem) {
                        warn!("cannot renew the webhook's serving certificate: {e}");
                    }
                }
                Err(e) => warn!("cannot renew the webhook's serving certificate: {e}"),
            }
        }
    });
    let xds = injection
        .args
        .injection_xds_address
        .clone()
        .unwrap_or_else(|| format!("{dns}:18000"));
    let mut config = trellis_inject::Config::new(
        &injection.args.sidecar_image,
        &xds,
        &injection.namespace,
        injection.ca.root_pem(),
    );
    config.control_plane_name = dns.clone();
    let webhook = Arc::new(Webhook {
        config,
        state: injection.state.clone(),
    });
    let app = axum::Router::new()
        .route("/inject", axum::routing::post(inject))
        .layer(DefaultBodyLimit::max(trellis_inject::MAX_REVIEW_BYTES))
        .with_state(webhook);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for the injection webhook on {address}"))?;
    let bound = listener.local_addr()?;
    let hits = injection.state.limit_hits.clone();
    let incoming = trellis_runtime::guarded_incoming(
        listener,
        trellis_runtime::ConnectionLimits {
            max_connections: 1024,
            max_per_peer: 256,
            ..trellis_runtime::ConnectionLimits::http()
        },
        "injection",
        hits,
    );
    let incoming = trellis_runtime::tls::tls_incoming(incoming, Arc::new(tls), trellis_ca::uri_san);
    tokio::spawn(serve_connections(incoming, app));
    info!(address = %bound, dns = %dns, image = %injection.args.sidecar_image, "sidecar injection webhook");
    let bundle = injection.ca.root_pem().to_string();
    tokio::spawn(keep_ca_bundle(
        injection.client.clone(),
        injection.args.injection_webhook.clone(),
        bundle,
        injection.leader.clone(),
    ));
    Ok(bound)
}

/// Serves HTTP (1.1 or 2) on each TLS connection.
async fn serve_connections(
    incoming: impl tokio_stream::Stream<Item = std::io::Result<trellis_runtime::tls::TlsConnection>>
    + Send
    + 'static,
    app: axum::Router,
) {
    use tokio_stream::StreamExt;
    let mut incoming = Box::pin(incoming);
    while let Some(connection) = incoming.next().await {
        let Ok(connection) = connection else { continue };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let io = hyper_util::rt::TokioIo::new(connection);
            if let Err(e) = builder.serve_connection(io, service).await {
                tracing::debug!("injection webhook connection: {e}");
            }
        });
    }
}

struct Webhook {
    config: trellis_inject::Config,
    state: Arc<AdminState>,
}

async fn inject(State(webhook): State<Arc<Webhook>>, body: Bytes) -> Response {
    let state = webhook.state.clone();
    match trellis_inject::review(&body, |ns| state.namespace_meshed(ns), &webhook.config) {
        Ok((answer, decision)) => {
            let pod = answer["response"]["uid"].as_str().unwrap_or("").to_string();
            match &decision {
                trellis_inject::Decision::Inject { warnings, .. } => {
                    info!(request = %pod, warnings = ?warnings, "sidecar injected")
                }
                trellis_inject::Decision::Skip(why) => {
                    info!(request = %pod, reason = %why, "no sidecar injected")
                }
            }
            axum::Json(answer).into_response()
        }
        Err(e) => {
            warn!("injection webhook: {e}");
            (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
        }
    }
}

/// While this replica leads: the webhook configuration's `caBundle` is the CA's root.
async fn keep_ca_bundle(
    client: Client,
    name: String,
    root_pem: String,
    mut leader: watch::Receiver<bool>,
) {
    let bundle = base64::engine::general_purpose::STANDARD.encode(root_pem.as_bytes());
    let mut missing_said = false;
    loop {
        if *leader.borrow_and_update() {
            match sync_ca_bundle(&client, &name, &bundle).await {
                Ok(Some(changed)) => {
                    missing_said = false;
                    if changed > 0 {
                        info!(webhook = %name, webhooks = changed, "caBundle set to the CA's root");
                    }
                }
                Ok(None) if !missing_said => {
                    warn!(webhook = %name, "MutatingWebhookConfiguration not found: no sidecar is injected until it exists");
                    missing_said = true;
                }
                Ok(None) => {}
                Err(e) => warn!(webhook = %name, "cannot update caBundle: {e}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            changed = leader.changed() => if changed.is_err() { return },
        }
    }
}

/// Sets every webhook's `clientConfig.caBundle` of configuration `name` to `bundle` (base64):
/// how many changed, or `None` when the configuration does not exist.
pub async fn sync_ca_bundle(
    client: &Client,
    name: &str,
    bundle: &str,
) -> Result<Option<usize>, kube::Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(current) = api.get_opt(name).await? else {
        return Ok(None);
    };
    let mut value = serde_json::to_value(&current).map_err(kube::Error::SerdeError)?;
    let mut changed = 0;
    if let Some(webhooks) = value.get_mut("webhooks").and_then(|w| w.as_array_mut()) {
        for webhook in webhooks {
            if webhook["clientConfig"]["caBundle"].as_str() != Some(bundle) {
                webhook["clientConfig"]["caBundle"] = serde_json::json!(bundle);
                changed += 1;
            }
        }
    }
    if changed == 0 {
        return Ok(Some(0));
    }
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": current.metadata.resource_version },
        "webhooks": value["webhooks"],
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(Some(changed))
}
