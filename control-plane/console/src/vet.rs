//! The Vet page: every finding about what is served (docs/vet.md), each linked to its object,
//! and the object page: an object's status conditions and its findings.

use crate::data::{ConditionView, FindingView, ObjectView};
use crate::html::{badge, esc, page, url};
use std::fmt::Write as _;

/// The link to an object's page (a Service's own page for Services).
pub fn object_link(o: &ObjectView) -> String {
    let text = if o.namespace.is_empty() {
        format!("{} {}", o.kind, o.name)
    } else {
        format!("{} {}/{}", o.kind, o.namespace, o.name)
    };
    match o.kind.as_str() {
        "File" => esc(&text),
        "Service" => format!(
            "<a href=\"/ui/services/{}/{}\">{}</a>",
            url(&o.namespace),
            url(&o.name),
            esc(&text)
        ),
        _ => format!(
            "<a href=\"/ui/objects/{}/{}/{}\">{}</a>",
            url(&o.kind),
            url(if o.namespace.is_empty() {
                "-"
            } else {
                &o.namespace
            }),
            url(&o.name),
            esc(&text)
        ),
    }
}

/// A table of findings.
pub fn findings_table(findings: &[FindingView]) -> String {
    let mut out = String::from(
        "<table class=\"findings\"><thead><tr><th>Severity</th><th>Code</th><th>Object</th><th>Field</th>\
         <th>Finding</th><th>Fix</th></tr></thead><tbody>",
    );
    for f in findings {
        let _ = write!(
            out,
            "<tr data-code=\"{}\"><td>{}</td><td><code title=\"docs/vet.md#{}\">{}</code></td><td>{}</td>\
             <td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&f.code),
            badge(&f.severity),
            esc(&f.code.to_lowercase()),
            esc(&f.code),
            object_link(&f.object),
            esc(&f.field),
            esc(&f.message),
            esc(&f.fix)
        );
    }
    if findings.is_empty() {
        out.push_str("<tr><td colspan=\"6\" class=\"muted\">Nothing found.</td></tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// The Vet page.
pub fn vet_page(findings: &[FindingView]) -> String {
    let count = |s: &str| findings.iter().filter(|f| f.severity == s).count();
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Vet</h1><p>{} errors, {} warnings, {} infos about what the control plane serves. \
         Each code is explained in docs/vet.md; <code>trellis vet DIR</code> finds the same \
         offline.</p>",
        count("error"),
        count("warning"),
        count("info")
    );
    body.push_str(&findings_table(findings));
    body.push_str("<p class=\"muted\">JSON: <a href=\"/api/vet\">/api/vet</a></p>");
    page("Vet", "/ui/vet", Some(10), &body)
}

/// An object's page: its conditions (labelled by parent or ancestor) and its findings.
pub fn object_page(
    object: &ObjectView,
    conditions: &[(String, ConditionView)],
    findings: &[FindingView],
) -> String {
    let title = if object.namespace.is_empty() {
        format!("{} {}", object.kind, object.name)
    } else {
        format!("{} {}/{}", object.kind, object.namespace, object.name)
    };
    let mut body = format!(
        "<h1>{}</h1><h2>Conditions</h2><table id=\"conditions\"><thead><tr>\
        <th>For</th><th>Type</th><th>Status</th><th>Reason</th><th>Message</th></tr></thead><tbody>",
        esc(&title)
    );
    for (at, c) in conditions {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(at),
            esc(&c.type_),
            esc(&c.status),
            esc(&c.reason),
            esc(&c.message)
        );
    }
    if conditions.is_empty() {
        body.push_str("<tr><td colspan=\"5\" class=\"muted\">No status is reported for this object.</td></tr>");
    }
    body.push_str("</tbody></table><h2>Vet findings</h2>");
    body.push_str(&findings_table(findings));
    page(&title, "/ui/vet", None, &body)
}
