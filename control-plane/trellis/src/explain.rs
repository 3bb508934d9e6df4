//! `trellis explain`: which listener, virtual host, route, rule and backend a request would take
//! through a Gateway's proxies (`--gateway NS/NAME`) or from a pod's sidecar (`--from NS/POD`),
//! the filters and policies that apply, and for a 404 or a 500 why. Offline on a directory
//! (`trellis explain DIR …`), or online against a running control plane's `GET /api/explain`.

use crate::admin::AdminState;
use crate::render::object_key as key;
use anyhow::{Context, bail};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::path::PathBuf;
use std::sync::Arc;
use trellis_explain::{Entry, Explanation, Request, explain, render_text};

/// Arguments of `trellis explain`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("entry").required(true).args(["gateway", "from"])))]
pub struct ExplainArgs {
    /// A directory of Kubernetes YAML to explain offline; without it, the control plane at
    /// `--admin-address` explains what it serves.
    pub dir: Option<PathBuf>,
    /// The request arrives at this Gateway's proxies.
    #[arg(long, value_name = "NS/NAME")]
    pub gateway: Option<String>,
    /// The request leaves this pod through its sidecar.
    #[arg(long, value_name = "NS/POD")]
    pub from: Option<String>,
    /// The request's host (a Gateway hostname, or from a pod a Service: `name.ns`).
    #[arg(long)]
    pub host: String,
    /// Its path, with the query string if any.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Its method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// A header, `name: value` (repeat for more).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The listener port (Gateways with listeners on several ports) or the Service port (from a
    /// pod; default 80).
    #[arg(long)]
    pub port: Option<u16>,
    /// Print the explanation as JSON.
    #[arg(long)]
    pub json: bool,
    /// How to reach the control plane (online).
    #[command(flatten)]
    pub admin: crate::admin::AdminClient,
}

fn header(text: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = text
        .split_once(':')
        .with_context(|| format!("--header {text:?}: give NAME: VALUE"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// Runs `trellis explain`.
pub fn run(args: &ExplainArgs) -> anyhow::Result<()> {
    let request = Request {
        host: args.host.clone(),
        path: args.path.clone(),
        method: args.method.clone(),
        headers: args
            .headers
            .iter()
            .map(|h| header(h))
            .collect::<anyhow::Result<_>>()?,
        port: args.port,
    };
    let entry = match (&args.gateway, &args.from) {
        (Some(g), _) => Entry::Gateway(key(g, "--gateway")?),
        (_, Some(p)) => Entry::Pod(key(p, "--from")?),
        _ => bail!("give --gateway NS/NAME or --from NS/POD"),
    };
    let explanation: Explanation = match &args.dir {
        Some(dir) => {
            if !dir.is_dir() {
                bail!("{} is not a directory", dir.display());
            }
            let offline = trellis_vet::Offline::read(dir);
            explain(
                &offline.translation.ir,
                &offline.translation.status,
                &entry,
                &request,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?
        }
        None => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            match &entry {
                Entry::Gateway(k) => query.append_pair("gateway", &k.to_string()),
                Entry::Pod(k) => query.append_pair("from", &k.to_string()),
            };
            query
                .append_pair("host", &request.host)
                .append_pair("path", &request.path)
                .append_pair("method", &request.method);
            for (k, v) in &request.headers {
                query.append_pair("header", &format!("{k}: {v}"));
            }
            if let Some(p) = request.port {
                query.append_pair("port", &p.to_string());
            }
            let path = format!("/api/explain?{}", query.finish());
            let body = crate::admin::get_blocking(&args.admin, &path)?;
            let reply: serde_json::Value =
                serde_json::from_str(&body).context("unexpected /api/explain response")?;
            if args.json {
                return crate::render::print_out(&format!("{:#}\n", reply["explanation"]));
            }
            return crate::render::print_out(reply["text"].as_str().unwrap_or_default());
        }
    };
    if args.json {
        crate::render::print_out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&explanation)?
        ))
    } else {
        crate::render::print_out(&render_text(&explanation))
    }
}

/// `GET /api/explain?gateway=NS/NAME|from=NS/POD&host=H[&path=P][&method=M][&header=N: V]…[&port=N]`:
/// `{"explanation": {...}, "text": "..."}` for what the control plane serves.
pub async fn api(State(state): State<Arc<AdminState>>, uri: axum::http::Uri) -> Response {
    let pairs: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let bad = |m: String| (StatusCode::BAD_REQUEST, format!("{m}\n")).into_response();
    let entry = match (get("gateway"), get("from")) {
        (Some(g), _) => match key(&g, "gateway") {
            Ok(k) => Entry::Gateway(k),
            Err(e) => return bad(e.to_string()),
        },
        (_, Some(p)) => match key(&p, "from") {
            Ok(k) => Entry::Pod(k),
            Err(e) => return bad(e.to_string()),
        },
        _ => return bad("give gateway=NS/NAME or from=NS/POD".to_string()),
    };
    let Some(host) = get("host") else {
        return bad("give host=HOST".to_string());
    };
    let mut headers = Vec::new();
    for (_, h) in pairs.iter().filter(|(k, _)| k == "header").take(64) {
        match header(h) {
            Ok(h) => headers.push(h),
            Err(e) => return bad(e.to_string()),
        }
    }
    let request = Request {
        host,
        path: get("path").unwrap_or_else(|| "/".to_string()),
        method: get("method").unwrap_or_else(|| "GET".to_string()),
        headers,
        port: match get("port").map(|p| p.parse::<u16>()) {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(_)) => return bad("port: a number from 1 to 65535".to_string()),
        },
    };
    let translation = state.translation();
    match explain(&translation.ir, &translation.status, &entry, &request) {
        Ok(e) => axum::Json(serde_json::json!({"text": render_text(&e), "explanation": e}))
            .into_response(),
        Err(e) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
    }
}
