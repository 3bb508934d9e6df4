//! Traffic capture for a sidecar: the `iptables` rules (nat table, IPv4) that, inside a pod's
//! network namespace, send the app's outbound TCP to its Envoy's outbound listener (15001) and
//! inbound TCP to its inbound listener (15006), without ever capturing Envoy's own traffic.
//!
//! Ports, uid and the inbound passthrough source follow Istio's conventions, so operators'
//! knowledge carries over:
//!
//! ```text
//!  PREROUTING ─► TRELLIS_INBOUND ── excluded ports (15021 readiness, 15090 stats) ─► RETURN
//!                                 └─ every other TCP port ─► TRELLIS_IN_REDIRECT ─► :15006
//!  OUTPUT ────► TRELLIS_OUTPUT ─── from 127.0.0.6 on lo (Envoy's hop to the app) ─► RETURN
//!                               ├─ the proxy (uid/gid 1337) to its own pod IP on lo ─► TRELLIS_IN_REDIRECT
//!                               ├─ others on lo (the app talking to localhost) ─► RETURN
//!                               ├─ the proxy's own traffic (uid/gid 1337) ─► RETURN
//!                               ├─ 127.0.0.1, excluded ports and CIDRs ─► RETURN
//!                               └─ everything else (or only included CIDRs) ─► TRELLIS_REDIRECT ─► :15001
//! ```
//!
//! [`rules`] renders them for `iptables-restore`; [`apply`] installs them (after removing any
//! earlier Trellis rules, so it can run again); [`remove`] takes them out.

use ipnet::Ipv4Net;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// What to capture, and what to leave alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    /// The uid Envoy runs as: its traffic is never captured.
    pub proxy_uid: u32,
    /// The gid Envoy runs as: its traffic is never captured either.
    pub proxy_gid: u32,
    /// Envoy's outbound listener port.
    pub outbound_port: u16,
    /// Envoy's inbound listener port.
    pub inbound_port: u16,
    /// Inbound ports to capture; every port when empty.
    pub inbound_ports: Vec<u16>,
    /// Inbound ports never captured (the proxy's readiness and stats ports).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports never captured.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destinations never captured.
    pub exclude_outbound_cidrs: Vec<Ipv4Net>,
    /// Outbound destinations to capture; every destination when empty.
    pub include_outbound_cidrs: Vec<Ipv4Net>,
}

/// The source address Envoy's inbound listener uses to reach the app, so that hop is not
/// captured again.
pub const INBOUND_PASSTHROUGH_SOURCE: &str = "127.0.0.6";

/// The proxy's uid and gid by default.
pub const PROXY_UID: u32 = 1337;
/// Envoy's outbound listener port.
pub const OUTBOUND_PORT: u16 = 15001;
/// Envoy's inbound listener port.
pub const INBOUND_PORT: u16 = 15006;
/// The sidecar's readiness port (a static listener answering from Envoy's own state).
pub const READINESS_PORT: u16 = 15021;
/// The sidecar's Prometheus stats port.
pub const STATS_PORT: u16 = 15090;
/// The sidecar's admin port (bound to loopback only).
pub const ADMIN_PORT: u16 = 15000;

impl Default for Capture {
    fn default() -> Self {
        Capture {
            proxy_uid: PROXY_UID,
            proxy_gid: PROXY_UID,
            outbound_port: OUTBOUND_PORT,
            inbound_port: INBOUND_PORT,
            inbound_ports: Vec::new(),
            exclude_inbound_ports: vec![READINESS_PORT, STATS_PORT],
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
            include_outbound_cidrs: Vec::new(),
        }
    }
}

/// The chains Trellis owns in the nat table.
const CHAINS: [&str; 4] = [
    "TRELLIS_INBOUND",
    "TRELLIS_IN_REDIRECT",
    "TRELLIS_OUTPUT",
    "TRELLIS_REDIRECT",
];

/// Why the rules could not be checked or installed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The configuration contradicts itself.
    #[error("{0}")]
    Invalid(String),
    /// `iptables-restore` (or `iptables`) could not be run.
    #[error("cannot run {program}: {source}")]
    Run {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// `iptables-restore` refused the rules.
    #[error("{program} refused the rules: {stderr}")]
    Refused {
        /// The program.
        program: String,
        /// What it said.
        stderr: String,
    },
}

impl Capture {
    /// Checks what no rule could express.
    pub fn check(&self) -> Result<(), CaptureError> {
        if self.outbound_port == 0 || self.inbound_port == 0 {
            return Err(CaptureError::Invalid(
                "the outbound and inbound ports must not be 0".into(),
            ));
        }
        if self.outbound_port == self.inbound_port {
            return Err(CaptureError::Invalid(format!(
                "the outbound and inbound ports must differ (both {})",
                self.outbound_port
            )));
        }
        for port in [self.outbound_port, self.inbound_port] {
            if self.inbound_ports.contains(&port) {
                return Err(CaptureError::Invalid(format!(
                    "inbound port {port} is the proxy's own listener: capturing it would loop"
                )));
            }
        }
        Ok(())
    }
}

/// The rules, as `iptables-restore` reads them (nat table only; the chains are declared, so
/// restoring flushes them first).
pub fn rules(c: &Capture) -> String {
    let mut r = String::from("*nat\n");
    for chain in CHAINS {
        let _ = writeln!(r, ":{chain} - [0:0]");
    }
    let _ = writeln!(
        r,
        "-A TRELLIS_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        c.outbound_port
    );
    let _ = writeln!(
        r,
        "-A TRELLIS_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        c.inbound_port
    );
    r.push_str("-A PREROUTING -p tcp -j TRELLIS_INBOUND\n");
    if c.inbound_ports.is_empty() {
        for port in sorted(&c.exclude_inbound_ports) {
            let _ = writeln!(r, "-A TRELLIS_INBOUND -p tcp --dport {port} -j RETURN");
        }
        r.push_str("-A TRELLIS_INBOUND -p tcp -j TRELLIS_IN_REDIRECT\n");
    } else {
        for port in sorted(&c.inbound_ports) {
            let _ = writeln!(
                r,
                "-A TRELLIS_INBOUND -p tcp --dport {port} -j TRELLIS_IN_REDIRECT"
            );
        }
    }
    r.push_str("-A OUTPUT -p tcp -j TRELLIS_OUTPUT\n");
    let _ = writeln!(
        r,
        "-A TRELLIS_OUTPUT -o lo -s {INBOUND_PASSTHROUGH_SOURCE}/32 -j RETURN"
    );
    for (flag, id) in [("--uid-owner", c.proxy_uid), ("--gid-owner", c.proxy_gid)] {
        // The proxy calling its own pod's IP (a Service backed by this pod) goes to the app
        // through the inbound listener.
        let _ = writeln!(
            r,
            "-A TRELLIS_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner {flag} {id} -j TRELLIS_IN_REDIRECT"
        );
        let _ = writeln!(
            r,
            "-A TRELLIS_OUTPUT -o lo -m owner ! {flag} {id} -j RETURN"
        );
        let _ = writeln!(r, "-A TRELLIS_OUTPUT -m owner {flag} {id} -j RETURN");
    }
    r.push_str("-A TRELLIS_OUTPUT -d 127.0.0.1/32 -j RETURN\n");
    for port in sorted(&c.exclude_outbound_ports) {
        let _ = writeln!(r, "-A TRELLIS_OUTPUT -p tcp --dport {port} -j RETURN");
    }
    for cidr in sorted(&c.exclude_outbound_cidrs) {
        let _ = writeln!(r, "-A TRELLIS_OUTPUT -d {} -j RETURN", cidr.trunc());
    }
    if c.include_outbound_cidrs.is_empty() {
        r.push_str("-A TRELLIS_OUTPUT -j TRELLIS_REDIRECT\n");
    } else {
        for cidr in sorted(&c.include_outbound_cidrs) {
            let _ = writeln!(
                r,
                "-A TRELLIS_OUTPUT -d {} -j TRELLIS_REDIRECT",
                cidr.trunc()
            );
        }
    }
    r.push_str("COMMIT\n");
    r
}

fn sorted<T: Ord + Clone>(items: &[T]) -> Vec<T> {
    let mut v = items.to_vec();
    v.sort();
    v.dedup();
    v
}

/// Installs the rules in the current network namespace: any earlier Trellis rules are removed
/// first, so running it again leaves one set. Needs `CAP_NET_ADMIN` (root in the pod's network
/// namespace, as an init container has).
pub fn apply(c: &Capture) -> Result<(), CaptureError> {
    c.check()?;
    remove()?;
    run_restore(&rules(c))
}

/// Removes Trellis's rules and chains from the current network namespace (nothing happens
/// when there are none).
pub fn remove() -> Result<(), CaptureError> {
    for (hook, chain) in [
        ("PREROUTING", "TRELLIS_INBOUND"),
        ("OUTPUT", "TRELLIS_OUTPUT"),
    ] {
        // Delete every jump (a rule may have been added twice by hand).
        while iptables(&["-t", "nat", "-D", hook, "-p", "tcp", "-j", chain])? {}
    }
    for chain in CHAINS {
        iptables(&["-t", "nat", "-F", chain])?;
    }
    for chain in CHAINS {
        iptables(&["-t", "nat", "-X", chain])?;
    }
    Ok(())
}

/// Runs `iptables ARGS`; whether it succeeded (a missing rule or chain is not an error here).
fn iptables(args: &[&str]) -> Result<bool, CaptureError> {
    let status = Command::new("iptables")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|source| CaptureError::Run {
            program: "iptables".into(),
            source,
        })?;
    Ok(status.success())
}

fn run_restore(text: &str) -> Result<(), CaptureError> {
    let program = "iptables-restore";
    let run = |source| CaptureError::Run {
        program: program.into(),
        source,
    };
    let mut child = Command::new(program)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(run)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).map_err(run)?;
    }
    let out = child.wait_with_output().map_err(run)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(CaptureError::Refused {
            program: program.into(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::Path;

    /// Compares with `testdata/<name>.rules`; `TRELLIS_UPDATE_GOLDEN=1` rewrites it.
    fn golden(name: &str, actual: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(format!("{name}.rules"));
        if std::env::var_os("TRELLIS_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            expected,
            actual,
            "{} differs; regenerate with ./dev golden and review the diff",
            path.display()
        );
    }

    #[test]
    fn the_default_rules_capture_everything_but_the_proxy_and_its_ports() {
        golden("default", &rules(&Capture::default()));
    }

    #[test]
    fn inbound_ports_and_outbound_exclusions_narrow_the_capture() {
        let c = Capture {
            inbound_ports: vec![9090, 8080, 8080],
            exclude_outbound_ports: vec![5432],
            exclude_outbound_cidrs: vec!["169.254.169.254/32".parse().unwrap()],
            include_outbound_cidrs: vec![
                "10.96.0.0/12".parse().unwrap(),
                "10.244.0.1/16".parse().unwrap(),
            ],
            proxy_uid: 2000,
            proxy_gid: 2001,
            ..Capture::default()
        };
        golden("narrowed", &rules(&c));
    }

    #[test]
    fn contradictions_are_refused_before_any_rule_is_written() {
        let same = Capture {
            inbound_port: OUTBOUND_PORT,
            ..Capture::default()
        };
        assert!(
            same.check()
                .unwrap_err()
                .to_string()
                .contains("must differ")
        );
        let loops = Capture {
            inbound_ports: vec![INBOUND_PORT],
            ..Capture::default()
        };
        assert!(loops.check().unwrap_err().to_string().contains("loop"));
        assert!(Capture::default().check().is_ok());
    }
}
