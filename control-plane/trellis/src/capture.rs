//! `trellis capture`: installs (or prints, or removes) the rules that send a pod's traffic
//! through its sidecar, in the current network namespace. Run it as an init step with
//! `CAP_NET_ADMIN`, before the app starts; the rules are [`trellis_capture::rules`].

use anyhow::Context;
use clap::Args;
use ipnet::Ipv4Net;
use trellis_capture::Capture;

/// Arguments of `trellis capture`.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Print the rules (`iptables-restore` input) instead of installing them.
    #[arg(long)]
    pub print: bool,
    /// Remove Trellis's rules instead of installing them.
    #[arg(long, conflicts_with = "print")]
    pub remove: bool,
    /// The uid Envoy runs as (its traffic is never captured).
    #[arg(long, default_value_t = trellis_capture::PROXY_UID)]
    pub proxy_uid: u32,
    /// The gid Envoy runs as (its traffic is never captured).
    #[arg(long, default_value_t = trellis_capture::PROXY_UID)]
    pub proxy_gid: u32,
    /// Envoy's outbound listener port.
    #[arg(long, default_value_t = trellis_capture::OUTBOUND_PORT)]
    pub outbound_port: u16,
    /// Envoy's inbound listener port.
    #[arg(long, default_value_t = trellis_capture::INBOUND_PORT)]
    pub inbound_port: u16,
    /// Inbound ports to capture (comma-separated); every port when not given.
    #[arg(long, value_delimiter = ',')]
    pub inbound_ports: Vec<u16>,
    /// Inbound ports never captured (the sidecar's readiness and stats ports by default).
    #[arg(long, value_delimiter = ',', default_values_t = [trellis_capture::READINESS_PORT, trellis_capture::STATS_PORT])]
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports never captured.
    #[arg(long, value_delimiter = ',')]
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destination CIDRs never captured (say, a metadata server).
    #[arg(long, value_delimiter = ',')]
    pub exclude_outbound_cidrs: Vec<Ipv4Net>,
    /// Outbound destination CIDRs to capture; every destination when not given.
    #[arg(long, value_delimiter = ',')]
    pub include_outbound_cidrs: Vec<Ipv4Net>,
}

impl CaptureArgs {
    fn capture(&self) -> Capture {
        Capture {
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid,
            outbound_port: self.outbound_port,
            inbound_port: self.inbound_port,
            inbound_ports: self.inbound_ports.clone(),
            exclude_inbound_ports: self.exclude_inbound_ports.clone(),
            exclude_outbound_ports: self.exclude_outbound_ports.clone(),
            exclude_outbound_cidrs: self.exclude_outbound_cidrs.clone(),
            include_outbound_cidrs: self.include_outbound_cidrs.clone(),
        }
    }
}

/// Prints, installs or removes the rules.
pub fn run(args: &CaptureArgs) -> anyhow::Result<()> {
    if args.remove {
        return trellis_capture::remove().context("cannot remove the capture rules");
    }
    let capture = args.capture();
    capture.check()?;
    if args.print {
        print!("{}", trellis_capture::rules(&capture));
        return Ok(());
    }
    trellis_capture::apply(&capture).context("cannot install the capture rules")
}
