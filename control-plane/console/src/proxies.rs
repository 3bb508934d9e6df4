//! The Proxies page: every connected proxy with its sync state per resource type, the
//! configuration it rejected (NACK) with the proxy's error and the resources named in it, and
//! the time its workload certificate has left. The same words as `trellis proxy-status`.

use crate::html::{esc, page};
use std::fmt::Write as _;
use trellis_xds::{ProxySync, ResourceType, SyncStatus};

/// The resource types in the order tables show them.
pub const TYPES: [ResourceType; 5] = [
    ResourceType::Cluster,
    ResourceType::Listener,
    ResourceType::Endpoint,
    ResourceType::Route,
    ResourceType::Secret,
];

/// `SYNCED`, `STALE`, `NACKED` or `NOT SENT`.
pub fn label(status: Option<SyncStatus>) -> &'static str {
    match status {
        Some(SyncStatus::Synced) => "SYNCED",
        Some(SyncStatus::Stale) => "STALE",
        Some(SyncStatus::Nacked) => "NACKED",
        Some(SyncStatus::NotSent) | None => "NOT SENT",
    }
}

/// How long a certificate expiring at `not_after` (seconds since the epoch) has left at `now`:
/// `23h59m`, `4m10s`, `EXPIRED`; a `!` marks less than a quarter of a day left.
pub fn time_left(not_after: u64, now: std::time::SystemTime) -> String {
    let now = now
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let Some(left) = not_after.checked_sub(now).filter(|l| *l > 0) else {
        return "EXPIRED".to_string();
    };
    let text = if left >= 3600 {
        format!("{}h{:02}m", left / 3600, left % 3600 / 60)
    } else {
        format!("{}m{:02}s", left / 60, left % 60)
    };
    if left < 6 * 3600 {
        format!("{text}!")
    } else {
        text
    }
}

/// The Proxies page at `now`.
pub fn proxies_page(proxies: &[ProxySync], now: std::time::SystemTime) -> String {
    let mut body = String::from(
        "<h1>Proxies</h1><table id=\"proxies\"><thead><tr><th>Node</th><th>Proxy</th><th>Class</th><th>Envoy</th><th>ADS</th>",
    );
    for t in TYPES {
        let _ = write!(body, "<th>{t}</th>");
    }
    body.push_str("<th>Certificate</th></tr></thead><tbody>");
    let mut nacks = String::new();
    for p in proxies {
        let _ = write!(
            body,
            "<tr data-proxy=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            esc(&p.key),
            esc(&p.node_id),
            esc(&p.key),
            esc(p.class.as_deref().unwrap_or("–")),
            esc(p.build.as_deref().unwrap_or("–")),
            match p.protocol {
                trellis_xds::Protocol::Sotw => "SotW",
                trellis_xds::Protocol::Delta => "Delta",
            }
        );
        for t in TYPES {
            let ts = p.types.get(&t);
            let state = label(ts.and_then(|ts| ts.status));
            let class = match state {
                "SYNCED" => "cond-ok",
                "NACKED" | "STALE" => "cond-bad",
                _ => "muted",
            };
            let _ = write!(body, "<td class=\"{class}\">{state}</td>");
            if let Some(nack) = ts.and_then(|ts| ts.nack.as_ref()) {
                let _ = write!(
                    nacks,
                    "<tr><td>{}</td><td>{t}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                    esc(&p.key),
                    esc(&nack.version),
                    esc(&nack.resources.join(", ")),
                    esc(&nack.error)
                );
            }
        }
        let cert = p.certificate.as_ref().map_or_else(
            || "–".to_string(),
            |c| {
                format!(
                    "{} <span class=\"muted\">{}</span>",
                    time_left(c.not_after, now),
                    esc(&c.identity)
                )
            },
        );
        let _ = write!(body, "<td>{cert}</td></tr>");
    }
    if proxies.is_empty() {
        body.push_str("<tr><td colspan=\"11\" class=\"muted\">No proxy is connected.</td></tr>");
    }
    body.push_str("</tbody></table>");
    if !nacks.is_empty() {
        body.push_str("<h2>Rejected configuration</h2><table id=\"nacks\"><thead><tr><th>Proxy</th>\
            <th>Type</th><th>Version</th><th>Resources</th><th>Envoy's error</th></tr></thead><tbody>");
        body.push_str(&nacks);
        body.push_str("</tbody></table>");
    }
    body.push_str(
        "<p class=\"muted\">JSON: <a href=\"/proxies\">/proxies</a> · the same in a terminal: \
        <code>trellis proxy-status</code></p>",
    );
    page("Proxies", "/ui/proxies", Some(10), &body)
}
