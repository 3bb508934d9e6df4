//! `trellis status`: fetches the report the admin endpoint serves and prints it (the report,
//! the status files and the table are built in [`trellis_controller`]).

use anyhow::Context;
use clap::Args;
use trellis_controller::{StatusReport, render_table};

/// Arguments of `trellis status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// How to reach the control plane's admin endpoint.
    #[command(flatten)]
    pub admin: crate::admin::AdminClient,
    /// Print the full report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Fetches `/status` from a running control plane and prints it.
pub fn run_command(args: &StatusArgs) -> anyhow::Result<()> {
    let body = crate::admin::get_blocking(&args.admin, "/status")?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let report: StatusReport =
        serde_json::from_str(&body).context("unexpected /status response")?;
    print!("{}", render_table(&report));
    Ok(())
}
