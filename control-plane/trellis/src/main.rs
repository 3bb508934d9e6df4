//! `trellis`: the Trellis control plane and its tools.
//!
//! - `trellis serve` runs the control plane: sources -> translate -> snapshots -> ADS.
//! - `trellis bootstrap` prints the Envoy bootstrap a gateway proxy starts with.
//! - `trellis status` prints the status the control plane reports.
//! - `trellis proxy-status` prints each proxy's sync state (SYNCED / STALE / NACKED per type).

mod admin;
mod bootstrap;
mod modules;
mod proxy_status;
mod serve;
mod status;

use clap::{Parser, Subcommand};

/// Trellis: a Gateway API control plane for stock Envoy.
#[derive(Debug, Parser)]
#[command(name = "trellis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane.
    Serve(serve::ServeArgs),
    /// Print an Envoy bootstrap for a proxy serving one Gateway.
    Bootstrap(bootstrap::BootstrapArgs),
    /// Print the status of Gateway API objects as the control plane reports it.
    Status(status::StatusArgs),
    /// Print every connected proxy's sync state per resource type.
    ProxyStatus(proxy_status::ProxyStatusArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Bootstrap(args) => bootstrap::run(&args),
        Command::Status(args) => status::run_command(&args),
        Command::ProxyStatus(args) => proxy_status::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
