//! An explanation as text, as `trellis explain` prints it.

use crate::Explanation;
use std::fmt::Write as _;

/// The explanation in lines: the request, each step, the outcome, the closest routes.
pub fn render_text(e: &Explanation) -> String {
    let r = &e.request;
    let mut out = String::new();
    let headers: Vec<String> = r
        .headers
        .iter()
        .map(|(k, v)| format!(" {k}: {v}"))
        .collect();
    let _ = writeln!(
        out,
        "request: {} http://{}{}{}",
        r.method,
        r.host,
        r.path,
        if headers.is_empty() {
            String::new()
        } else {
            format!(" with{}", headers.join(","))
        }
    );
    for s in &e.steps {
        let _ = writeln!(out, "  {:<13} {}", format!("{}:", s.what), s.detail);
    }
    let _ = match e.outcome.status {
        Some(status) => writeln!(out, "=> {status}: {}", e.outcome.summary),
        None => writeln!(out, "=> {}", e.outcome.summary),
    };
    if !e.candidates.is_empty() {
        let _ = writeln!(out, "closest routes:");
        for c in &e.candidates {
            let _ = writeln!(out, "  {} ({}): {}", c.route, c.matcher, c.failed);
        }
    }
    out
}
