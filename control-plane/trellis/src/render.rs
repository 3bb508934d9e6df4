//! `trellis render DIR --gateway NS/NAME` (or `--pod NS/NAME`): the Envoy configuration that
//! proxy would receive, offline, as readable YAML (or JSON): its listeners, routes, clusters,
//! endpoints and secrets (private keys redacted), read and translated as `trellis serve
//! --config-dir` would.

use anyhow::{Context, bail};
use clap::ValueEnum;
use std::path::PathBuf;
use trellis_model::ObjectKey;

/// Arguments of `trellis render`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("proxy").required(true).args(["gateway", "pod"])))]
pub struct RenderArgs {
    /// The directory of Kubernetes YAML (read like `trellis serve --config-dir`).
    pub dir: PathBuf,
    /// The Gateway whose proxies' configuration to print.
    #[arg(long, value_name = "NS/NAME")]
    pub gateway: Option<String>,
    /// The pod whose sidecar's configuration to print.
    #[arg(long, value_name = "NS/NAME")]
    pub pod: Option<String>,
    /// How to print it.
    #[arg(long, value_enum, default_value_t = Format::Yaml)]
    pub output: Format,
}

/// How `trellis render` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// YAML, like Envoy's own configuration files.
    Yaml,
    /// JSON, as Envoy's admin `config_dump` writes it.
    Json,
}

/// `NAMESPACE/NAME` given to `flag`, or why it is not one.
pub fn object_key(text: &str, flag: &str) -> anyhow::Result<ObjectKey> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(ObjectKey::new(ns, name))
        }
        _ => bail!("{flag} must be NAMESPACE/NAME, got {text:?}"),
    }
}

/// The snapshot key of the proxy asked for, or why there is none.
fn proxy_key(args: &RenderArgs, ir: &trellis_translate::ir::Ir) -> anyhow::Result<String> {
    if let Some(g) = &args.gateway {
        let k = trellis_translate::proxy_key(&object_key(g, "--gateway")?);
        if !ir.proxies.contains_key(&k) {
            let known: Vec<&str> = ir
                .proxies
                .keys()
                .map(|k| k.trim_start_matches("gateway/"))
                .collect();
            bail!(
                "no Gateway {g} is served (Gateways of Trellis's classes: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
        return Ok(k);
    }
    let p = args.pod.as_deref().unwrap_or_default();
    let pod = object_key(p, "--pod")?;
    ir.pods.get(&pod).cloned().with_context(|| {
        format!("pod {p} has no sidecar (it does not exist, or its namespace is not in the mesh, or it opted out)")
    })
}

/// Runs `trellis render`.
pub fn run(args: &RenderArgs) -> anyhow::Result<()> {
    if !args.dir.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    let offline = trellis_vet::Offline::read(&args.dir);
    for d in &offline.load.diagnostics {
        eprintln!("{d}");
    }
    let key = proxy_key(args, &offline.translation.ir)?;
    // Only the asked-for proxy's resources are rendered.
    let resources = match trellis_translate::envoy::snapshots(&offline.translation.ir).get(&key) {
        Some(snapshot) => trellis_render::render_snapshot(snapshot, trellis_render::Keys::Redacted)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Default::default(),
    };
    let mut doc = serde_json::Map::new();
    for (short, name) in [
        ("LDS", "listeners"),
        ("RDS", "routes"),
        ("CDS", "clusters"),
        ("EDS", "endpoints"),
        ("SDS", "secrets"),
    ] {
        if let Some(list) = resources.get(short) {
            doc.insert(name.to_string(), serde_json::Value::Array(list.clone()));
        }
    }
    let doc = serde_json::Value::Object(doc);
    let text = match args.output {
        Format::Json => format!("{doc:#}\n"),
        Format::Yaml => format!(
            "# {key}: the Envoy resources its proxies receive over xDS (private keys redacted)\n{}",
            serde_saphyr::to_string(&doc).context("YAML")?
        ),
    };
    print_out(&text)
}

/// Writes `text` to standard output; a reader that went away (`| head`) is not an error.
pub fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
