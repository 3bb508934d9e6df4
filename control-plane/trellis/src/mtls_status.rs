//! `trellis mtls-status [POD]`: per pod in the mesh, the identity its sidecar presents and the
//! mutual-TLS mode of its ports (from the control plane's `/status`), with what its sidecar
//! saw on the inbound side: TLS handshakes completed, TLS failures (no certificate, a
//! certificate of another CA), plaintext connections refused for want of a chain (STRICT), and
//! when the certificate it serves expires — read from the sidecar's Prometheus port (15090) at
//! the pod's IP; `-` when unreachable.

use anyhow::Context;
use clap::Args;
use std::time::Duration;
use trellis_controller::SidecarReport;

/// Arguments of `trellis mtls-status`.
#[derive(Debug, Args)]
pub struct MtlsStatusArgs {
    /// Only this pod, `namespace/name`.
    pub pod: Option<String>,
    /// How to reach the control plane's admin endpoint.
    #[command(flatten)]
    pub admin: crate::admin::AdminClient,
}

/// What one sidecar counted on its inbound listener.
#[derive(Debug, Default, PartialEq, Eq)]
struct Inbound {
    handshakes: u64,
    failures: u64,
    refused: u64,
    /// When the certificate its inbound listener serves expires (seconds since the epoch).
    expires: Option<u64>,
}

/// Fetches `/status` and each pod's sidecar stats, and prints the table.
pub fn run(args: &MtlsStatusArgs) -> anyhow::Result<()> {
    let body = crate::admin::get_blocking(&args.admin, "/status")?;
    let report: trellis_controller::StatusReport =
        serde_json::from_str(&body).context("unexpected /status response")?;
    let pods: Vec<&SidecarReport> = report
        .sidecars
        .iter()
        .filter(|s| args.pod.as_ref().is_none_or(|p| &s.pod == p))
        .collect();
    if pods.is_empty() {
        match &args.pod {
            Some(p) => anyhow::bail!("{p} is not a pod in the mesh"),
            None => println!("No pods in the mesh."),
        }
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for s in pods {
        let inbound = s.status.ips.first().and_then(|ip| {
            let address = format!("{ip}:{}", trellis_capture::STATS_PORT);
            let stats = runtime.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(2),
                    crate::admin::get(&address, "/stats/prometheus", None),
                )
                .await
            });
            stats.ok()?.ok().map(|text| inbound_counts(&text))
        });
        rows.push(row(s, inbound.as_ref()));
    }
    print!("{}", render(&rows));
    if report.sidecars.iter().all(|s| s.status.identity.is_none()) {
        println!(
            "\nMutual TLS is off: the control plane runs without a certificate authority \
             (trellis serve --ca-dir)."
        );
    }
    Ok(())
}

/// The inbound listener's counters from a sidecar's Prometheus text.
fn inbound_counts(text: &str) -> Inbound {
    let mut out = Inbound::default();
    for line in text.lines() {
        if !line.contains("envoy_listener_address=\"0.0.0.0_15006\"") {
            continue;
        }
        let value: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64);
        let name = line.split('{').next().unwrap_or_default();
        if name.ends_with("expiration_unix_time_seconds") && line.contains("default") {
            out.expires = Some(value);
            continue;
        }
        match name {
            "envoy_listener_ssl_handshake" => out.handshakes += value,
            "envoy_listener_ssl_connection_error"
            | "envoy_listener_ssl_fail_verify_no_cert"
            | "envoy_listener_ssl_fail_verify_error" => out.failures += value,
            "envoy_listener_no_filter_chain_match" => out.refused += value,
            _ => {}
        }
    }
    out
}

/// How long until `expires` (seconds since the epoch), as `23h59m`, or `expired`.
fn time_left(expires: u64, now: u64) -> String {
    match expires.checked_sub(now) {
        None | Some(0) => "expired".to_string(),
        Some(s) if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        Some(s) => format!("{}m{:02}s", s / 60, s % 60),
    }
}

fn row(s: &SidecarReport, inbound: Option<&Inbound>) -> [String; 8] {
    let count = |f: fn(&Inbound) -> u64| inbound.map_or("-".to_string(), |i| f(i).to_string());
    let (mode, ports) = match &s.status.mtls {
        Some(m) => (
            m.mode.as_str().to_string(),
            m.ports
                .iter()
                .map(|(p, mode)| format!("{p}={}", mode.as_str()))
                .collect::<Vec<_>>()
                .join(","),
        ),
        None => ("OFF".to_string(), String::new()),
    };
    [
        s.pod.clone(),
        s.status.identity.clone().unwrap_or_else(|| "-".to_string()),
        mode,
        if ports.is_empty() {
            "-".to_string()
        } else {
            ports
        },
        count(|i| i.handshakes),
        count(|i| i.failures),
        count(|i| i.refused),
        inbound
            .and_then(|i| i.expires)
            .map_or("-".to_string(), |e| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                time_left(e, now)
            }),
    ]
}

fn render(rows: &[[String; 8]]) -> String {
    let header = [
        "POD",
        "IDENTITY",
        "MODE",
        "PORT MODES",
        "TLS HANDSHAKES",
        "TLS FAILURES",
        "PLAINTEXT REFUSED",
        "CERTIFICATE EXPIRES IN",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_counters_are_read_from_prometheus_text() {
        let text = "envoy_listener_ssl_handshake{envoy_listener_address=\"0.0.0.0_15006\"} 12\n\
                    envoy_listener_ssl_handshake{envoy_listener_address=\"0.0.0.0_15001\"} 99\n\
                    envoy_listener_ssl_fail_verify_no_cert{envoy_listener_address=\"0.0.0.0_15006\"} 2\n\
                    envoy_listener_ssl_fail_verify_error{envoy_listener_address=\"0.0.0.0_15006\"} 1\n\
                    envoy_listener_no_filter_chain_match{envoy_listener_address=\"0.0.0.0_15006\"} 3\n\
                    envoy_listener_ssl_certificate_default_expiration_unix_time_seconds{envoy_listener_address=\"0.0.0.0_15006\"} 1796358882\n\
                    envoy_listener_ssl_certificate_ROOTCA_expiration_unix_time_seconds{envoy_listener_address=\"0.0.0.0_15006\"} 2111715280\n";
        assert_eq!(
            inbound_counts(text),
            Inbound {
                handshakes: 12,
                failures: 3,
                refused: 3,
                expires: Some(1_796_358_882),
            }
        );
        assert_eq!(time_left(1000 + 86_340, 1000), "23h59m");
        assert_eq!(time_left(1000 + 125, 1000), "2m05s");
        assert_eq!(time_left(1000, 2000), "expired");
    }
}
