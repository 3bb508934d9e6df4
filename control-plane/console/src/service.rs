//! The Service page: its score with the reason, charts of its score, latency and errors over
//! the window, its callers (with mutual-TLS state), the routes and policies that concern it
//! with their conditions, its endpoints and their proxies, recent and notable traces, and vet
//! findings. Charts are SVG drawn on the server.

use crate::data::{HistoryPoint, ServiceDetail};
use crate::html::{badge, esc, millis, page, percent, rate, score, url};
use crate::traces::trace_rows;
use std::fmt::Write as _;

/// One series of a chart: label, colour, values (None: no data at that point).
pub struct Series<'a> {
    /// Legend.
    pub label: &'a str,
    /// Stroke colour.
    pub colour: &'a str,
    /// Values, oldest first.
    pub values: Vec<Option<f64>>,
}

/// A line chart of `series` over the same points, from 0 to the largest value (or `y_max`).
pub fn line_chart(title: &str, unit: &str, series: &[Series<'_>], y_max: Option<f64>) -> String {
    const W: f64 = 420.0;
    const H: f64 = 120.0;
    let points = series.iter().map(|s| s.values.len()).max().unwrap_or(0);
    let top = y_max.unwrap_or_else(|| {
        series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied())
            .fold(0.0, f64::max)
            .max(f64::MIN_POSITIVE)
    });
    let mut out = String::new();
    let _ = write!(
        out,
        "<figure style=\"display:inline-block;margin:0 16px 12px 0\"><figcaption>{} <span class=\"muted\">(max {}{})</span></figcaption>\
         <svg class=\"chart\" width=\"{W}\" height=\"{}\" data-points=\"{points}\"><rect width=\"{W}\" height=\"{H}\" fill=\"#f7f8fa\"/>",
        esc(title),
        if top >= 10.0 {
            format!("{top:.0}")
        } else {
            format!("{top:.2}")
        },
        if unit.is_empty() {
            String::new()
        } else {
            format!(" {}", esc(unit))
        },
        H + 18.0
    );
    let step = if points > 1 {
        W / (points - 1) as f64
    } else {
        W
    };
    for (k, s) in series.iter().enumerate() {
        let mut d = String::new();
        let mut pen_down = false;
        for (i, v) in s.values.iter().enumerate() {
            match v {
                Some(v) => {
                    let x = i as f64 * step;
                    let y = H - (v / top).clamp(0.0, 1.0) * (H - 4.0) - 2.0;
                    let _ = write!(d, "{}{x:.1},{y:.1} ", if pen_down { "L" } else { "M" });
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if !d.is_empty() {
            let _ = write!(
                out,
                "<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>",
                d.trim_end(),
                s.colour
            );
        }
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" fill=\"{}\">{}</text>",
            8 + k * 110,
            H + 14.0,
            s.colour,
            esc(s.label)
        );
    }
    out.push_str("</svg></figure>");
    out
}

fn charts(history: &[HistoryPoint]) -> String {
    let mut out = String::new();
    out.push_str(&line_chart(
        "Health score",
        "",
        &[Series {
            label: "score",
            colour: "#1a7f37",
            values: history.iter().map(|h| h.score.map(f64::from)).collect(),
        }],
        Some(100.0),
    ));
    out.push_str(&line_chart(
        "Latency",
        "ms",
        &[
            Series {
                label: "p50",
                colour: "#3b7dd8",
                values: history.iter().map(|h| h.p50_ms).collect(),
            },
            Series {
                label: "p99",
                colour: "#8e44ad",
                values: history.iter().map(|h| h.p99_ms).collect(),
            },
        ],
        None,
    ));
    out.push_str(&line_chart(
        "Errors",
        "%",
        &[Series {
            label: "error %",
            colour: "#c62828",
            values: history
                .iter()
                .map(|h| (h.requests > 0).then(|| 100.0 * h.failures as f64 / h.requests as f64))
                .collect(),
        }],
        None,
    ));
    out
}

fn callers(d: &ServiceDetail, body: &mut String) {
    body.push_str(
        "<h2>Callers</h2><table id=\"callers\"><thead><tr><th>Caller</th><th>Mutual TLS</th>\
        <th class=\"num\">Requests/s</th><th class=\"num\">Errors</th><th class=\"num\">p99</th>\
        <th>State</th></tr></thead><tbody>",
    );
    for e in &d.edges {
        let mtls = if e.mtls { "yes" } else { "no" };
        let _ = write!(
            body,
            "<tr><td><code>{}</code></td><td>{mtls}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&e.caller),
            rate(e.health.rps),
            percent(e.health.error_rate),
            millis(e.health.p99_ms),
            badge(&e.health.health_state)
        );
    }
    if d.edges.is_empty() {
        body.push_str(
            "<tr><td colspan=\"6\" class=\"muted\">No caller seen by a sidecar of this \
            Service (callers are counted by their identity on sidecars with mutual TLS).</td></tr>",
        );
    }
    body.push_str("</tbody></table>");
}

fn objects(d: &ServiceDetail, body: &mut String) {
    body.push_str(
        "<h2>Routes and policies</h2><table id=\"objects\"><thead><tr><th>Object</th>\
        <th>Relation</th><th>Conditions</th></tr></thead><tbody>",
    );
    for o in &d.objects {
        let mut conditions = String::new();
        for (parent, c) in &o.conditions {
            let ok = (c.status == "True")
                != matches!(c.type_.as_str(), "Conflicted" | "OverlappingTLSConfig");
            let _ = write!(
                conditions,
                "<div class=\"{}\">{}: {} {} ({}){}</div>",
                if ok { "cond-ok" } else { "cond-bad" },
                esc(parent),
                esc(&c.type_),
                esc(&c.status),
                esc(&c.reason),
                if ok || c.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", esc(&c.message))
                }
            );
        }
        let _ = write!(
            body,
            "<tr><td>{} <a href=\"/ui/objects/{}/{}/{}\">{}/{}</a></td><td>{}</td><td>{conditions}</td></tr>",
            esc(&o.kind),
            url(&o.kind),
            url(&o.namespace),
            url(&o.name),
            esc(&o.namespace),
            esc(&o.name),
            esc(&o.relation)
        );
    }
    if d.objects.is_empty() {
        body.push_str("<tr><td colspan=\"3\" class=\"muted\">No route or policy names this Service.</td></tr>");
    }
    body.push_str("</tbody></table>");
}

fn endpoints(d: &ServiceDetail, body: &mut String) {
    body.push_str(
        "<h2>Endpoints</h2><table id=\"endpoints\"><thead><tr><th>Address</th><th>Ready</th>\
        <th>Pod</th><th>Sidecar</th><th>Identity</th></tr></thead><tbody>",
    );
    for e in &d.endpoints {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.address),
            if e.ready {
                "yes"
            } else {
                "<span class=\"cond-bad\">no</span>"
            },
            esc(e.pod.as_deref().unwrap_or("–")),
            esc(e.proxy.as_deref().unwrap_or("–")),
            e.identity
                .as_deref()
                .map_or_else(|| "–".to_string(), |i| format!("<code>{}</code>", esc(i)))
        );
    }
    if d.endpoints.is_empty() {
        body.push_str("<tr><td colspan=\"5\" class=\"cond-bad\">No endpoints: requests to this Service fail with 503.</td></tr>");
    }
    body.push_str("</tbody></table>");
}

/// The Service page.
pub fn service_page(d: &ServiceDetail) -> String {
    let s = &d.service;
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Service {}/{} {}</h1><p id=\"score\">Score <strong>{}</strong>: {}</p>\
         <p>{} req/s · {} errors · p50 {} · p99 {}</p>",
        esc(&s.namespace),
        esc(&s.name),
        badge(&s.health_state),
        score(s.health_score),
        esc(&s.health_reason),
        rate(s.rps),
        percent(s.error_rate),
        millis(s.p50_ms),
        millis(s.p99_ms)
    );
    body.push_str(&charts(&d.history));
    callers(d, &mut body);
    objects(d, &mut body);
    endpoints(d, &mut body);
    body.push_str("<h2>Recent and notable traces</h2>");
    body.push_str(&trace_rows(&d.traces));
    if !d.findings.is_empty() {
        body.push_str("<h2>Vet findings</h2>");
        body.push_str(&crate::vet::findings_table(&d.findings));
    }
    let _ = write!(
        body,
        "<p class=\"muted\">JSON: <a href=\"/api/services/{0}/{1}\">/api/services/{0}/{1}</a> · \
         <a href=\"/ui/graph?namespace={0}\">graph of {0}</a></p>",
        url(&s.namespace),
        url(&s.name)
    );
    page(
        &format!("{}/{}", s.namespace, s.name),
        "/ui/services",
        Some(10),
        &body,
    )
}
