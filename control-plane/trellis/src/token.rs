//! `trellis token --pod NS/NAME`: prints a token that says which pod its holder is, signed by
//! the control plane's token key (in the CA directory), for the certificate service in file
//! mode. The operator runs it for each pod and hands the token to that pod's agent; the pod is
//! looked up in the config directory, and its service account becomes the token's identity.

use anyhow::{Context, bail};
use clap::Args;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use trellis_ca::{SpiffeId, TokenKey};
use trellis_model::ObjectKey;
use trellis_model::mesh::pod_service_account;
use trellis_sources::FileProvider;

/// Arguments of `trellis token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The pod, `namespace/name`.
    #[arg(long, required_unless_present = "gateway", conflicts_with = "gateway")]
    pub pod: Option<String>,
    /// Instead of a pod: the Gateway, `namespace/name`, whose proxies the token is for (their
    /// identity is service account `<name>-gateway` of the Gateway's namespace).
    #[arg(long)]
    pub gateway: Option<String>,
    /// The config directory holding the Pod object.
    #[arg(long)]
    pub config_dir: PathBuf,
    /// The control plane's CA directory (its token key is created there if missing).
    #[arg(long)]
    pub ca_dir: PathBuf,
    /// The trust domain of the identity.
    #[arg(long, default_value = trellis_ca::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// How long the token is valid, in hours.
    #[arg(long, default_value_t = 24)]
    pub hours: u64,
}

/// Looks the pod up and prints its token.
pub fn run(args: &TokenArgs) -> anyhow::Result<()> {
    let load = FileProvider::new(&args.config_dir).load();
    let lifetime = Duration::from_secs(args.hours.clamp(1, 24 * 30) * 3600);
    let token_key = TokenKey::load_or_create(&args.ca_dir)?;
    if let Some(gateway) = &args.gateway {
        let Some((namespace, name)) = gateway.split_once('/') else {
            bail!("--gateway must be namespace/name, not {gateway:?}");
        };
        if !load
            .input
            .gateways
            .contains_key(&ObjectKey::new(namespace, name))
        {
            bail!("no Gateway {gateway} in {}", args.config_dir.display());
        }
        let token =
            token_key.issue_gateway(&args.trust_domain, gateway, lifetime, SystemTime::now())?;
        eprintln!(
            "token for the proxies of Gateway {gateway} as service account {}",
            trellis_ca::gateway_service_account(name)
        );
        println!("{token}");
        return Ok(());
    }
    let pod_arg = args.pod.as_deref().unwrap_or_default();
    let Some((namespace, name)) = pod_arg.split_once('/') else {
        bail!("--pod must be namespace/name, not {pod_arg:?}");
    };
    let key = ObjectKey::new(namespace, name);
    let pod =
        load.input.pods.get(&key).with_context(|| {
            format!("no Pod {namespace}/{name} in {}", args.config_dir.display())
        })?;
    let identity = SpiffeId::new(&args.trust_domain, namespace, &pod_service_account(pod))?;
    let token = token_key.issue(&identity, pod_arg, lifetime, SystemTime::now())?;
    eprintln!("token for pod {pod_arg} as {identity}");
    println!("{token}");
    Ok(())
}
