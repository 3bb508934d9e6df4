//! The Traces pages: a search (by Service, request id, errors) over the trace store, and one
//! trace as a waterfall, with the policy decision and each service's health beside its spans.

use crate::data::{ServiceRow, SpanView, TraceRow, TraceView};
use crate::html::{badge, esc, page, url};
use std::collections::BTreeMap;
use std::fmt::Write as _;

fn duration(nanos: u64) -> String {
    let ms = nanos as f64 / 1e6;
    if ms < 1.0 {
        format!("{:.0} µs", nanos as f64 / 1e3)
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// A table of trace summaries, each linking to its waterfall.
pub fn trace_rows(rows: &[TraceRow]) -> String {
    let mut out = String::from(
        "<table class=\"traces\"><thead><tr><th>Trace</th><th>Root</th><th class=\"num\">Duration</th>\
         <th class=\"num\">Spans</th><th>Status</th><th>Request id</th><th>Services</th></tr></thead><tbody>",
    );
    for t in rows {
        let _ = write!(
            out,
            "<tr data-spans=\"{}\"><td><a class=\"trace\" href=\"/ui/traces/{}\"><code>{}</code></a></td><td>{} {}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            t.spans,
            url(&t.trace_id),
            esc(&t.trace_id.chars().take(16).collect::<String>()),
            esc(&t.root_service),
            esc(&t.root_name),
            duration(t.duration_nanos),
            t.spans,
            if t.error {
                badge("error")
            } else {
                "ok".to_string()
            },
            esc(t.request_id.as_deref().unwrap_or("–")),
            esc(&t.services.join(", "))
        );
    }
    if rows.is_empty() {
        out.push_str(
            "<tr><td colspan=\"7\" class=\"muted\">No trace held. A TracingPolicy samples \
            requests (1% by default); see docs/observability.md.</td></tr>",
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The search form's current values.
#[derive(Clone, Debug, Default)]
pub struct TraceQuery {
    /// `ns/name`.
    pub service: Option<String>,
    /// A request id.
    pub request_id: Option<String>,
    /// Only traces with an error span.
    pub errors: bool,
}

/// The Traces page: the search form and its results.
pub fn traces_page(query: &TraceQuery, rows: &[TraceRow]) -> String {
    let mut body = String::from("<h1>Traces</h1>");
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/ui/traces\" class=\"filters\">\
         <label>Service <input name=\"service\" placeholder=\"namespace/name\" value=\"{}\"></label> \
         <label>Request id <input name=\"request_id\" value=\"{}\"></label> \
         <label><input type=\"checkbox\" name=\"status\" value=\"error\"{}> errors only</label> \
         <button type=\"submit\">Search</button></form>",
        esc(query.service.as_deref().unwrap_or("")),
        esc(query.request_id.as_deref().unwrap_or("")),
        if query.errors { " checked" } else { "" }
    );
    body.push_str(&trace_rows(rows));
    body.push_str("<p class=\"muted\">JSON: <a href=\"/api/traces\">/api/traces</a></p>");
    page("Traces", "/ui/traces", None, &body)
}

/// Spans in tree order (each after its parent, siblings by start) with their depth.
fn tree(spans: &[SpanView]) -> Vec<(&SpanView, usize)> {
    let ids: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: BTreeMap<Option<&str>, Vec<&SpanView>> = BTreeMap::new();
    for s in spans {
        // A span whose parent is not held is shown as a root.
        let parent = s.parent_span_id.as_deref().filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(s);
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| (s.start_unix_nanos, s.span_id.clone()));
    }
    let mut out = Vec::with_capacity(spans.len());
    let mut stack: Vec<(&SpanView, usize)> = children
        .get(&None)
        .map_or_else(Vec::new, |r| r.iter().rev().map(|s| (*s, 0)).collect());
    while let Some((s, depth)) = stack.pop() {
        out.push((s, depth));
        if out.len() > spans.len() {
            break; // Never loops: every span is pushed once, as the child of one parent.
        }
        if let Some(kids) = children.get(&Some(s.span_id.as_str())) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    out
}

/// The Service a span is about: its own service when that is one (a sidecar's `ns/name`), else
/// the one its upstream cluster (`service/<ns>/<name>/<port>`, or its stat name
/// `service_<ns>_<name>_<port>` in the span's name) belongs to.
fn health_of<'a>(
    span: &SpanView,
    health: &'a BTreeMap<String, ServiceRow>,
) -> Option<&'a ServiceRow> {
    if let Some(h) = health.get(&span.service) {
        return Some(h);
    }
    let cluster = span
        .attributes
        .get("upstream_cluster.name")
        .or_else(|| span.attributes.get("upstream_cluster"))
        .cloned()
        .or_else(|| {
            span.name
                .split_whitespace()
                .find(|w| w.starts_with("service"))
                .map(str::to_string)
        })?;
    let parts: Vec<&str> = cluster.split(['/', '_']).collect();
    match parts.as_slice() {
        ["service", ns, name, port] if port.parse::<u16>().is_ok() => {
            health.get(&format!("{ns}/{name}"))
        }
        _ => None,
    }
}

/// One trace as a waterfall. `health`: the health of the services its spans name
/// (`ns/name`), shown beside them.
pub fn waterfall_page(trace: &TraceView, health: &BTreeMap<String, ServiceRow>) -> String {
    let start = trace
        .spans
        .iter()
        .map(|s| s.start_unix_nanos)
        .min()
        .unwrap_or(0);
    let end = trace
        .spans
        .iter()
        .map(|s| s.start_unix_nanos.saturating_add(s.duration_nanos))
        .max()
        .unwrap_or(start);
    let total = (end - start).max(1) as f64;
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Trace <code>{}</code></h1><p>{} spans over {}</p>\
         <table id=\"waterfall\"><thead><tr><th>Service</th><th>Span</th><th>Decision</th>\
         <th>Service health</th><th class=\"num\">Duration</th><th style=\"width:40%\">Timeline</th></tr></thead><tbody>",
        esc(&trace.trace_id),
        trace.spans.len(),
        duration(end - start)
    );
    for (s, depth) in tree(&trace.spans) {
        let left = (s.start_unix_nanos - start) as f64 / total * 100.0;
        let width = (s.duration_nanos as f64 / total * 100.0).max(0.3);
        let decision = match (
            s.attributes.get("trellis.decision"),
            s.attributes.get("trellis.rule"),
        ) {
            (Some(d), Some(r)) => format!("{} <span class=\"muted\">{}</span>", esc(d), esc(r)),
            (Some(d), None) => esc(d),
            _ => "–".to_string(),
        };
        let service_health = health_of(s, health).map_or_else(
            || "–".to_string(),
            |h| {
                format!(
                    "{} {}",
                    badge(&h.health_state),
                    h.health_score.map(|x| x.to_string()).unwrap_or_default()
                )
            },
        );
        let status = s
            .attributes
            .get("http.status_code")
            .cloned()
            .unwrap_or_default();
        let failed = s.status == "error";
        let _ = write!(
            body,
            "<tr class=\"span\" data-span=\"{}\"><td>{}</td><td style=\"padding-left:{}px\">{} <span class=\"muted\">{} {}</span></td>\
             <td>{decision}</td><td>{service_health}</td><td class=\"num\">{}</td>\
             <td><div class=\"wf\"><span{} style=\"left:{left:.2}%;width:{width:.2}%\"></span></div></td></tr>",
            esc(&s.span_id),
            esc(&s.service),
            8 + depth * 16,
            esc(&s.name),
            esc(&s.kind),
            esc(&status),
            duration(s.duration_nanos),
            if failed { " class=\"err\"" } else { "" }
        );
    }
    body.push_str("</tbody></table>");
    let _ = write!(
        body,
        "<p class=\"muted\">JSON: <a href=\"/api/traces/{0}\">/api/traces/{0}</a></p>",
        url(&trace.trace_id)
    );
    page("Trace", "/ui/traces", None, &body)
}
