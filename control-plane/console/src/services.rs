//! The Services page: every Service's health in one table, sortable by any column (on the
//! server, through the query string, so sorting works without a script), filterable by
//! namespace, under a roll-up of each namespace that names its worst member.

use crate::data::{FindingView, ServiceRow};
use crate::html::{badge, esc, millis, page, percent, rate, score, url};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The columns a table can be sorted by, as `?sort=` takes them.
pub const SORT_KEYS: [&str; 8] = [
    "health_score",
    "health_state",
    "rps",
    "error_rate",
    "p50_ms",
    "p99_ms",
    "namespace",
    "name",
];

/// How bad a state is, worst first (for sorting by state).
fn state_rank(state: &str) -> u8 {
    match state {
        "failing" => 0,
        "degraded" => 1,
        "learning" => 2,
        "healthy" => 3,
        "idle" => 4,
        _ => 5,
    }
}

/// Sorts `rows` by `key` in its natural order: the worst first for health (lowest score,
/// failing state), the busiest or slowest first for numbers, alphabetical for names; ties by
/// namespace and name. Unknown values (no latency yet, no score) go last. Returns an error
/// naming the keys when `key` is not one.
pub fn sort_services(rows: &mut [ServiceRow], key: &str) -> Result<(), String> {
    let name = |r: &ServiceRow| (r.namespace.clone(), r.name.clone());
    let desc = |x: Option<f64>| x.map_or(f64::INFINITY, |v| -v);
    match key {
        "health_score" => rows.sort_by_key(|r| (r.health_score.map_or(101, u16::from), name(r))),
        "health_state" => rows.sort_by_key(|r| {
            (
                state_rank(&r.health_state),
                r.health_score.map_or(101, u16::from),
                name(r),
            )
        }),
        "rps" => rows.sort_by(|a, b| {
            (-a.rps)
                .total_cmp(&-b.rps)
                .then_with(|| name(a).cmp(&name(b)))
        }),
        "error_rate" => rows.sort_by(|a, b| {
            (-a.error_rate)
                .total_cmp(&-b.error_rate)
                .then_with(|| name(a).cmp(&name(b)))
        }),
        "p50_ms" => rows.sort_by(|a, b| {
            desc(a.p50_ms)
                .total_cmp(&desc(b.p50_ms))
                .then_with(|| name(a).cmp(&name(b)))
        }),
        "p99_ms" => rows.sort_by(|a, b| {
            desc(a.p99_ms)
                .total_cmp(&desc(b.p99_ms))
                .then_with(|| name(a).cmp(&name(b)))
        }),
        "namespace" => rows.sort_by_key(name),
        "name" => rows.sort_by(|a, b| (&a.name, &a.namespace).cmp(&(&b.name, &b.namespace))),
        other => {
            return Err(format!("sort={other:?}: sort by {}", SORT_KEYS.join(", ")));
        }
    }
    Ok(())
}

/// One namespace summed up: its Services, their requests, and its worst member.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Rollup {
    /// The namespace.
    pub namespace: String,
    /// Services scored in it.
    pub services: usize,
    /// Their requests per second together.
    pub rps: f64,
    /// Their failed share together (weighted by requests).
    pub error_rate: f64,
    /// The member with the lowest score (a failing one before a degraded one).
    pub worst: ServiceRow,
}

/// The roll-up of every namespace, worst first.
pub fn rollups(rows: &[ServiceRow]) -> Vec<Rollup> {
    let mut by_ns: BTreeMap<&str, Vec<&ServiceRow>> = BTreeMap::new();
    for r in rows {
        by_ns.entry(&r.namespace).or_default().push(r);
    }
    let mut out: Vec<Rollup> = by_ns
        .into_iter()
        .filter_map(|(ns, members)| {
            let worst = members.iter().min_by_key(|r| {
                (
                    r.health_score.map_or(101, u16::from),
                    state_rank(&r.health_state),
                    r.name.clone(),
                )
            })?;
            let rps: f64 = members.iter().map(|r| r.rps).sum();
            let failed: f64 = members.iter().map(|r| r.rps * r.error_rate).sum();
            Some(Rollup {
                namespace: ns.to_string(),
                services: members.len(),
                rps,
                error_rate: if rps > 0.0 { failed / rps } else { 0.0 },
                worst: (*worst).clone(),
            })
        })
        .collect();
    out.sort_by_key(|r| {
        (
            r.worst.health_score.map_or(101, u16::from),
            state_rank(&r.worst.health_state),
            r.namespace.clone(),
        )
    });
    out
}

/// The link to a Service's page.
pub fn service_link(namespace: &str, name: &str) -> String {
    format!(
        "<a href=\"/ui/services/{}/{}\">{}</a>",
        url(namespace),
        url(name),
        esc(name)
    )
}

fn header(label: &str, key: &str, sorted: &str, namespace: Option<&str>, numeric: bool) -> String {
    let ns = namespace
        .map(|n| format!("&namespace={}", url(n)))
        .unwrap_or_default();
    let class = if numeric { " class=\"num\"" } else { "" };
    let link_class = if key == sorted {
        " class=\"sorted\""
    } else {
        ""
    };
    format!(
        "<th{class}><a{link_class} href=\"/ui/services?sort={key}{ns}\" data-sort=\"{key}\">{label}</a></th>"
    )
}

/// The notice of faults injected on purpose.
fn chaos_notice(chaos: &[FindingView], body: &mut String) {
    if chaos.is_empty() {
        return;
    }
    {
        body.push_str("<div id=\"chaos\" class=\"notice\"><strong>Faults are being injected on purpose.</strong><ul>");
        for f in chaos {
            let _ = write!(
                body,
                "<li>{}: {}</li>",
                crate::vet::object_link(&f.object),
                esc(f.message.trim_start_matches("chaos is on: "))
            );
        }
        body.push_str("</ul></div>");
    }
}

/// The namespace roll-ups and the namespace filter.
fn namespace_tables(namespaces: &[Rollup], sort: &str, namespace: Option<&str>, body: &mut String) {
    body.push_str("<h2>Namespaces</h2><table id=\"namespaces\"><thead><tr><th>Namespace</th>\
        <th class=\"num\">Services</th><th class=\"num\">Requests/s</th><th class=\"num\">Errors</th>\
        <th>Worst member</th><th class=\"num\">Score</th><th>State</th><th>Why</th></tr></thead><tbody>");
    for r in namespaces {
        let _ = write!(
            body,
            "<tr class=\"rollup\"><td><a href=\"/ui/services?namespace={}&sort={sort}\">{}</a></td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            url(&r.namespace),
            esc(&r.namespace),
            r.services,
            rate(r.rps),
            percent(r.error_rate),
            service_link(&r.worst.namespace, &r.worst.name),
            score(r.worst.health_score),
            badge(&r.worst.health_state),
            esc(&r.worst.health_reason)
        );
    }
    body.push_str("</tbody></table>");
    body.push_str("<div class=\"filters\">Namespace: ");
    let all_class = if namespace.is_none() {
        " class=\"active\""
    } else {
        ""
    };
    let _ = write!(
        body,
        "<a href=\"/ui/services?sort={sort}\"{all_class}>all</a>"
    );
    for r in namespaces {
        let class = if namespace == Some(r.namespace.as_str()) {
            " class=\"active\""
        } else {
            ""
        };
        let _ = write!(
            body,
            "<a href=\"/ui/services?namespace={}&sort={sort}\"{class}>{}</a>",
            url(&r.namespace),
            esc(&r.namespace)
        );
    }
    body.push_str("</div>");
}

/// The Services page: `rows` as the server holds them, sorted by `sort`, only `namespace`'s
/// when given, under a notice of the faults injected on purpose (`chaos`: vet's TRL0201
/// findings). Errors (an unknown sort key) are the caller's 400.
pub fn services_page(
    mut rows: Vec<ServiceRow>,
    sort: &str,
    namespace: Option<&str>,
    chaos: &[FindingView],
) -> Result<String, String> {
    let namespaces: Vec<Rollup> = rollups(&rows);
    if let Some(ns) = namespace {
        rows.retain(|r| r.namespace == ns);
    }
    sort_services(&mut rows, sort)?;
    let mut body = String::with_capacity(256 * rows.len() + 4096);
    body.push_str("<h1>Services</h1>");
    chaos_notice(chaos, &mut body);
    namespace_tables(&namespaces, sort, namespace, &mut body);
    body.push_str("<table id=\"services\"><thead><tr>");
    for (label, key, numeric) in [
        ("Namespace", "namespace", false),
        ("Service", "name", false),
        ("Requests/s", "rps", true),
        ("Errors", "error_rate", true),
        ("p50", "p50_ms", true),
        ("p99", "p99_ms", true),
        ("Score", "health_score", true),
        ("State", "health_state", false),
    ] {
        body.push_str(&header(label, key, sort, namespace, numeric));
    }
    body.push_str("<th>Why</th></tr></thead><tbody>");
    for r in &rows {
        let _ = write!(
            body,
            "<tr data-service=\"{}/{}\" data-score=\"{}\"><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.namespace),
            esc(&r.name),
            r.health_score.map_or(-1, i16::from),
            esc(&r.namespace),
            service_link(&r.namespace, &r.name),
            rate(r.rps),
            percent(r.error_rate),
            millis(r.p50_ms),
            millis(r.p99_ms),
            score(r.health_score),
            badge(&r.health_state),
            esc(&r.health_reason)
        );
    }
    if rows.is_empty() {
        body.push_str(
            "<tr><td colspan=\"9\" class=\"muted\">No Service has been scored yet: \
            scores come from the proxies' stats every 10 s.</td></tr>",
        );
    }
    body.push_str("</tbody></table>");
    let _ = write!(
        body,
        "<p class=\"muted\">{} Services. JSON: <a href=\"/api/services?sort={sort}\">/api/services</a></p>",
        rows.len()
    );
    Ok(page("Services", "/ui/services", Some(10), &body))
}
