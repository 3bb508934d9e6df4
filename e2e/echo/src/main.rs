//! `trellis-echo`: the echo backend for end-to-end and Gateway API conformance tests.
//!
//! A drop-in replacement for the upstream `echo-basic` image. This file only owns the
//! command line, logging setup and signal handling; the server lives in
//! [`trellis_echo`]. Ports and the echoed context come from the environment
//! (`HTTP_PORT`, `H2C_PORT`, `HTTPS_PORT`, `TLS_SERVER_CERT`, `TLS_SERVER_PRIVKEY`,
//! `TLS_CLIENT_CACERTS`, `POD_NAME`, `NAMESPACE`, `SERVICE_NAME`, `INGRESS_NAME`; and, for a
//! chain of services, `CALL_URL` and `FORWARD_TRACE_CONTEXT`).

use std::net::IpAddr;

use anyhow::Context as _;
use clap::Parser;
use trellis_echo::{Config, EchoServer};

/// Command line of `trellis-echo`.
#[derive(Debug, Parser)]
#[command(name = "trellis-echo", version, about)]
struct Args {
    /// The IP address every listener binds.
    #[arg(long, env = "ECHO_ADDRESS", default_value = "127.0.0.1")]
    address: IpAddr,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Make HTTP requests and print what came back as the conformance suite's echo client
    /// does (`StatusCode=`, `Hostname=`, `RequestHeader=`, ...).
    Client {
        /// `http://host[:port]/path`.
        url: String,
        /// A request header, `Name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// How many requests.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Seconds each request may take.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Client {
        url,
        headers,
        method,
        count,
        timeout,
    }) = args.command
    {
        let headers = headers
            .iter()
            .map(|h| {
                let (k, v) = h
                    .split_once(':')
                    .with_context(|| format!("header {h:?} is not Name: value"))?;
                Ok((k.trim().to_string(), v.trim().to_string()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        print!(
            "{}",
            trellis_echo::client::run(&trellis_echo::client::ClientRequest {
                url,
                headers,
                method,
                count,
                timeout: std::time::Duration::from_secs(timeout),
            })
        );
        return Ok(());
    }
    serve(args.address)
}

#[tokio::main]
async fn serve(address: IpAddr) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let config = Config::from_env(address)?;
    let server = EchoServer::bind(config).await?;
    server
        .announce()
        .context("printing the listening addresses")?;
    tokio::select! {
        result = server.serve() => result,
        () = shutdown_signal() => Ok(()),
    }
}

/// Resolves on SIGINT or SIGTERM, so the server stops promptly even as PID 1 in a pod.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
