//! HTML building blocks: escaping, the page shell (navigation, style, the refresh script),
//! number formats and health badges. Everything the console serves is built from these; the
//! style and script are the console's own (no third-party code, nothing fetched).

use std::fmt::Write as _;

/// `text` escaped for HTML text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` escaped for a URL query value or path segment.
pub fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// The console's sections, in navigation order: (path, label).
pub const SECTIONS: [(&str, &str); 5] = [
    ("/ui/services", "Services"),
    ("/ui/graph", "Graph"),
    ("/ui/traces", "Traces"),
    ("/ui/proxies", "Proxies"),
    ("/ui/vet", "Vet"),
];

const STYLE: &str = r#"
:root{--fg:#1d232b;--muted:#5b6673;--line:#d9dee4;--bg:#fff;--head:#f3f5f7;--link:#0b5cad;
--healthy:#1a7f37;--degraded:#b35900;--failing:#c62828;--idle:#6b7785;--learning:#1a7f37}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;align-items:center;gap:24px;padding:10px 20px;border-bottom:1px solid var(--line);background:var(--head)}
header .brand{font-weight:700;letter-spacing:.02em}
header nav a{margin-right:16px;color:var(--muted);text-decoration:none}
header nav a.active{color:var(--fg);font-weight:600;border-bottom:2px solid var(--fg)}
main{padding:16px 20px;max-width:1400px}
h1{font-size:20px;margin:4px 0 12px}h2{font-size:16px;margin:20px 0 8px}
a{color:var(--link)}
table{border-collapse:collapse;width:100%;margin-bottom:12px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--head);font-weight:600;white-space:nowrap}
th a{color:inherit;text-decoration:none}th a.sorted{text-decoration:underline}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.rollup td{background:#fafbfc;font-weight:600}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;font-weight:600;color:#fff}
.healthy,.learning{background:var(--healthy)}.degraded{background:var(--degraded)}
.failing{background:var(--failing)}.idle{background:var(--idle)}
.error{background:var(--failing)}.warning{background:var(--degraded)}.info{background:var(--idle)}
.muted{color:var(--muted)}.filters{margin:0 0 12px}.filters a{margin-right:10px}
.filters a.active{font-weight:600;color:var(--fg)}
.wf{position:relative;height:16px;background:#f0f2f4;min-width:300px}
.wf span{position:absolute;top:2px;height:12px;background:#3b7dd8;border-radius:2px}
.wf span.err{background:var(--failing)}
code{font:12px ui-monospace,monospace;background:#f3f5f7;padding:1px 4px;border-radius:3px}
svg text{font:12px system-ui,sans-serif}
.cond-ok{color:var(--healthy)}.cond-bad{color:var(--failing)}
.notice{border:1px solid var(--degraded);background:#fff6ec;padding:8px 12px;margin:0 0 12px;border-radius:4px}
.notice ul{margin:4px 0 0;padding-left:20px}
"#;

/// Reloads the page every `data-refresh` seconds while it is visible (the console's only
/// script: every page works without it).
const SCRIPT: &str = r#"(function(){var s=document.body.getAttribute('data-refresh');
if(!s)return;setInterval(function(){if(!document.hidden)location.reload();},Number(s)*1000);})();"#;

/// A whole page: `title`, the section it belongs to (highlighted in the navigation), and its
/// body. `refresh`: seconds between reloads (live pages), if any.
pub fn page(title: &str, section: &str, refresh: Option<u32>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 4096);
    out.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">");
    // No icon to fetch.
    out.push_str("<link rel=\"icon\" href=\"data:,\">");
    let _ = write!(
        out,
        "<title>{} · Trellis</title><style>{STYLE}</style></head>",
        esc(title)
    );
    match refresh {
        Some(s) => {
            let _ = write!(out, "<body data-refresh=\"{s}\">");
        }
        None => out.push_str("<body>"),
    }
    out.push_str("<header><span class=\"brand\">Trellis</span><nav>");
    for (path, label) in SECTIONS {
        let class = if path == section {
            " class=\"active\""
        } else {
            ""
        };
        let _ = write!(out, "<a href=\"{path}\"{class}>{label}</a>");
    }
    out.push_str("</nav></header><main>");
    out.push_str(body);
    let _ = write!(out, "</main><script>{SCRIPT}</script></body></html>");
    out
}

/// A health state as a coloured badge.
pub fn badge(state: &str) -> String {
    let class = match state {
        "healthy" | "degraded" | "failing" | "idle" | "learning" | "error" | "warning" | "info" => {
            state
        }
        _ => "idle",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(state))
}

/// A rate per second: `0`, `0.42`, `12.3`, `1234`.
pub fn rate(x: f64) -> String {
    if x == 0.0 {
        "0".to_string()
    } else if x < 1.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// A share as a percentage: `0%`, `0.12%`, `20.0%`.
pub fn percent(x: f64) -> String {
    let p = x * 100.0;
    if p == 0.0 {
        "0%".to_string()
    } else if p < 1.0 {
        format!("{p:.2}%")
    } else {
        format!("{p:.1}%")
    }
}

/// Milliseconds, or `–` when unknown.
pub fn millis(x: Option<f64>) -> String {
    match x {
        None => "–".to_string(),
        Some(ms) if ms < 10.0 => format!("{ms:.1} ms"),
        Some(ms) => format!("{ms:.0} ms"),
    }
}

/// A score, or `–`.
pub fn score(x: Option<u8>) -> String {
    x.map_or_else(|| "–".to_string(), |s| s.to_string())
}
