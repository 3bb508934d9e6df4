//! `trellis proxy-status`: every connected proxy and, per resource type, whether it holds what it
//! should (SYNCED), is behind (STALE), has not asked (NOT SENT) or rejected the last
//! configuration (NACKED, with the proxy's error) — like `istioctl proxy-status`. The data comes
//! from the admin endpoint's `/proxies`; the same data is served over CSDS on the xDS port.
//! Sidecars show their pod and class; pods in the mesh with no sidecar connected follow the
//! table, with what keeps them from taking traffic (from `/status`).

use anyhow::Context;
use clap::Args;
use trellis_console::proxies::{TYPES, label, time_left};
use trellis_controller::SidecarReport;
use trellis_xds::ProxySync;

/// Arguments of `trellis proxy-status`.
#[derive(Debug, Args)]
pub struct ProxyStatusArgs {
    /// How to reach the control plane's admin endpoint.
    #[command(flatten)]
    pub admin: crate::admin::AdminClient,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Fetches `/proxies` and prints it.
pub fn run(args: &ProxyStatusArgs) -> anyhow::Result<()> {
    let body = crate::admin::get_blocking(&args.admin, "/proxies")?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let proxies: Vec<ProxySync> =
        serde_json::from_str(&body).context("unexpected /proxies response")?;
    let status = crate::admin::get_blocking(&args.admin, "/status")?;
    let report: trellis_controller::StatusReport =
        serde_json::from_str(&status).context("unexpected /status response")?;
    print!("{}", render(&proxies, std::time::SystemTime::now()));
    print!("{}", render_unconnected(&proxies, &report.sidecars));
    Ok(())
}

/// Pods in the mesh whose sidecar is not connected, with their problem when they have one.
pub fn render_unconnected(proxies: &[ProxySync], sidecars: &[SidecarReport]) -> String {
    let connected: std::collections::BTreeSet<&str> =
        proxies.iter().map(|p| p.key.as_str()).collect();
    let missing: Vec<&SidecarReport> = sidecars
        .iter()
        .filter(|s| !connected.contains(format!("pod/{}", s.pod).as_str()))
        .collect();
    if missing.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\nPods in the mesh without a connected sidecar ({} of {}):\n",
        missing.len(),
        sidecars.len()
    );
    for s in missing {
        out.push_str(&format!("  {}  {}", s.pod, s.status.class));
        if let Some(problem) = &s.status.problem {
            out.push_str(&format!("  ({problem})"));
        }
        out.push('\n');
    }
    out
}

/// The proxies as a table (with the time each one's workload certificate has left, when the
/// control plane runs the CA), then the NACK errors.
pub fn render(proxies: &[ProxySync], now: std::time::SystemTime) -> String {
    let mut rows = vec![
        [
            "NODE", "PROXY", "CLASS", "ADS", "CDS", "LDS", "EDS", "RDS", "SDS", "CERT",
        ]
        .map(str::to_string)
        .to_vec(),
    ];
    let mut nacks = Vec::new();
    for p in proxies {
        let mut row = vec![
            p.node_id.clone(),
            p.key.clone(),
            p.class.clone().unwrap_or_else(|| "-".to_string()),
            match p.protocol {
                trellis_xds::Protocol::Sotw => "SotW".to_string(),
                trellis_xds::Protocol::Delta => "Delta".to_string(),
            },
        ];
        for t in TYPES {
            let ts = p.types.get(&t);
            row.push(label(ts.and_then(|ts| ts.status)).to_string());
            if let Some(nack) = ts.and_then(|ts| ts.nack.as_ref()) {
                nacks.push(format!(
                    "  {} {}: {} (version {})",
                    p.node_id, t, nack.error, nack.version
                ));
            }
        }
        row.push(
            p.certificate
                .as_ref()
                .map(|c| time_left(c.not_after, now))
                .unwrap_or_else(|| "-".to_string()),
        );
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}", w = *w))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if !nacks.is_empty() {
        out.push_str("\nRejected configuration:\n");
        for n in nacks {
            out.push_str(&n);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn proxy(key: &str, not_after: Option<u64>) -> ProxySync {
        ProxySync {
            node_id: key.replace('/', "."),
            node_cluster: "c".into(),
            key: key.into(),
            protocol: trellis_xds::Protocol::Sotw,
            connected_at: 0,
            types: Default::default(),
            synced_version: None,
            class: None,
            certificate: not_after.map(|not_after| trellis_xds::ProxyCertificate {
                identity: "spiffe://cluster.local/ns/shop/sa/a".into(),
                not_after,
            }),
            build: None,
        }
    }

    #[test]
    fn each_proxy_shows_the_time_its_certificate_has_left() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let table = render(
            &[
                proxy("pod/shop/a", Some(1_000_000 + 86_399)),
                proxy("pod/shop/b", Some(1_000_000 + 250)),
                proxy("pod/shop/c", Some(999_000)),
                proxy("gateway/shop/web", None),
            ],
            now,
        );
        let cert_of = |key: &str| {
            table
                .lines()
                .find(|l| l.contains(key))
                .and_then(|l| l.split_whitespace().last())
                .unwrap()
                .to_string()
        };
        assert!(table.lines().next().unwrap().ends_with("CERT"), "{table}");
        assert_eq!(cert_of("pod/shop/a"), "23h59m");
        assert_eq!(cert_of("pod/shop/b"), "4m10s!");
        assert_eq!(cert_of("pod/shop/c"), "EXPIRED");
        assert_eq!(cert_of("gateway/shop/web"), "-");
    }
}
