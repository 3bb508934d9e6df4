//! `fake-apiserver`: the fake Kubernetes API server as a process, for end-to-end tests that run
//! the real `trellis` binary against it.
//!
//! ```text
//! fake-apiserver --kubeconfig-out PATH [--address 127.0.0.1:0] [--load DIR]... [--kind SPEC]...
//!   binds, loads DIRs, writes PATH (atomically), prints `listening on http://ADDR`, serves
//!   until SIGINT/SIGTERM; fault hooks at POST /fake/drop-watches, /fake/compact,
//!   /fake/refuse?seconds=N[&mode=close], /fake/recover, /fake/latency?ms=N; GET /fake/state.
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use trellis_fake_apiserver::{FakeApiServer, ResourceKind};

/// A fake Kubernetes API server (in-memory, plain HTTP, no auth) with fault-injection hooks.
#[derive(Debug, Parser)]
#[command(name = "fake-apiserver", version)]
struct Args {
    /// Where to write a kubeconfig pointing at the server.
    #[arg(long)]
    kubeconfig_out: PathBuf,
    /// The address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    address: SocketAddr,
    /// A directory of YAML/JSON objects to load at startup (repeatable; CRDs register kinds).
    #[arg(long)]
    load: Vec<PathBuf>,
    /// An extra kind: `group/version/Kind/plural[/cluster]` (empty group for core; repeatable).
    #[arg(long = "kind")]
    kinds: Vec<String>,
    /// How many changes to keep for watches to resume from.
    #[arg(long, default_value_t = trellis_fake_apiserver::DEFAULT_HISTORY)]
    history: usize,
    /// Milliseconds between watch bookmarks.
    #[arg(long, default_value_t = 1000)]
    bookmark_interval_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FAKE_APISERVER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let kinds = args
        .kinds
        .iter()
        .map(|s| ResourceKind::parse_spec(s))
        .collect::<Result<Vec<_>, _>>()?;
    let server = FakeApiServer::builder()
        .kinds(kinds)
        .history(args.history)
        .bookmark_interval(Duration::from_millis(args.bookmark_interval_ms))
        .build();
    for dir in &args.load {
        let n = server
            .load_dir(dir)
            .with_context(|| format!("loading {}", dir.display()))?;
        tracing::info!(dir = %dir.display(), objects = n, "loaded");
    }
    let running = server.serve(args.address).await?;
    running.write_kubeconfig(&args.kubeconfig_out)?;
    println!("listening on {}", running.url());
    shutdown_signal().await?;
    running.shutdown();
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
