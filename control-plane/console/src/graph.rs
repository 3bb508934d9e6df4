//! The Graph page: one namespace's Services and the traffic between them, as SVG laid out on
//! the server (no graph library, nothing to download). Callers are known by their workload
//! identity; an identity whose pods back exactly one Service is drawn as that Service. Other
//! namespaces collapse into one node each, and beyond [`MAX_NODES`] the quietest Services
//! collapse into one node, so a namespace of thousands of Services stays readable and fast.

use crate::data::{EdgeRow, ServiceRow};
use crate::html::{esc, page, percent, rate, url};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Nodes drawn at most; the quietest Services beyond it become one node.
pub const MAX_NODES: usize = 300;

/// What a workload identity stands for in the graph.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    /// The pods of one Service (`ns`, `name`).
    Service(String, String),
    /// A Gateway's proxies (`ns`, `name`).
    Gateway(String, String),
}

/// A node.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Node {
    /// Stable id: `service:ns/name`, `gateway:ns/name`, `identity:ns/sa`, `namespace:ns`,
    /// `more`, `other` (callers beyond the cap), `unauthenticated` (callers without identity).
    pub id: String,
    /// What is written on it.
    pub label: String,
    /// `service`, `gateway`, `identity`, `namespace`, `more` or `other`.
    pub kind: String,
    /// Its health state (Services), else empty.
    pub state: String,
    /// Its score.
    pub score: Option<u8>,
    /// Its requests per second (Services).
    pub rps: f64,
}

/// An edge: traffic from a caller to a Service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Edge {
    /// The caller's node.
    pub from: String,
    /// The callee's node.
    pub to: String,
    /// Requests per second.
    pub rps: f64,
    /// Failed share.
    pub error_rate: f64,
    /// The edge's health state (the worst of those merged into it).
    pub state: String,
    /// Whether the calls take the mesh's mutual TLS.
    pub mtls: bool,
}

/// The graph of one namespace (`GET /api/graph?namespace=NS`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Graph {
    /// The namespace.
    pub namespace: String,
    /// Nodes, sorted by id.
    pub nodes: Vec<Node>,
    /// Edges, sorted by (from, to).
    pub edges: Vec<Edge>,
    /// Services collapsed into the `more` node.
    pub collapsed: usize,
}

fn state_rank(state: &str) -> u8 {
    match state {
        "failing" => 0,
        "degraded" => 1,
        _ => 2,
    }
}

/// `spiffe://<td>/ns/<ns>/sa/<sa>` as (ns, sa).
fn identity(caller: &str) -> Option<(String, String)> {
    let path = caller.strip_prefix("spiffe://")?.split_once('/')?.1;
    let mut parts = path.split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => {
            Some((ns.to_string(), sa.to_string()))
        }
        _ => None,
    }
}

struct Builder<'a> {
    namespace: &'a str,
    shown: BTreeSet<(String, String)>,
    nodes: BTreeMap<String, Node>,
    edges: BTreeMap<(String, String), Edge>,
}

impl Builder<'_> {
    fn node(&mut self, id: String, label: String, kind: &str) -> String {
        self.nodes.entry(id.clone()).or_insert_with(|| Node {
            id: id.clone(),
            label,
            kind: kind.to_string(),
            state: String::new(),
            score: None,
            rps: 0.0,
        });
        id
    }

    /// The node of a Service: itself if shown, its namespace's if elsewhere, else `more`.
    fn service_node(&mut self, ns: &str, name: &str) -> String {
        if ns != self.namespace {
            return self.node(
                format!("namespace:{ns}"),
                format!("namespace {ns}"),
                "namespace",
            );
        }
        if self.shown.contains(&(ns.to_string(), name.to_string())) {
            return format!("service:{ns}/{name}");
        }
        self.node("more".to_string(), "more Services".to_string(), "more")
    }

    /// The node of a caller.
    fn caller_node(
        &mut self,
        caller: &str,
        workloads: &BTreeMap<(String, String), Vec<Workload>>,
    ) -> String {
        let Some((ns, sa)) = identity(caller) else {
            return if caller == "unauthenticated" {
                self.node(
                    "unauthenticated".to_string(),
                    "callers without identity".to_string(),
                    "other",
                )
            } else {
                self.node("other".to_string(), "other callers".to_string(), "other")
            };
        };
        match workloads.get(&(ns.clone(), sa.clone())).map(Vec::as_slice) {
            Some([Workload::Service(sns, sname)]) => {
                self.service_node(&sns.clone(), &sname.clone())
            }
            Some([Workload::Gateway(gns, gname)]) => self.node(
                format!("gateway:{gns}/{gname}"),
                format!("gateway {gns}/{gname}"),
                "gateway",
            ),
            _ if ns != self.namespace => self.node(
                format!("namespace:{ns}"),
                format!("namespace {ns}"),
                "namespace",
            ),
            _ => self.node(
                format!("identity:{ns}/{sa}"),
                format!("{ns}/{sa}"),
                "identity",
            ),
        }
    }

    fn edge(&mut self, from: String, to: String, e: &EdgeRow) {
        let mtls = e.mtls;
        let entry = self
            .edges
            .entry((from.clone(), to.clone()))
            .or_insert_with(|| Edge {
                from,
                to,
                rps: 0.0,
                error_rate: 0.0,
                state: e.health.health_state.clone(),
                mtls,
            });
        let failed = entry.rps * entry.error_rate + e.health.rps * e.health.error_rate;
        entry.rps += e.health.rps;
        entry.error_rate = if entry.rps > 0.0 {
            failed / entry.rps
        } else {
            0.0
        };
        if state_rank(&e.health.health_state) < state_rank(&entry.state) {
            entry.state = e.health.health_state.clone();
        }
        entry.mtls &= mtls;
    }
}

/// The graph of `namespace`: its Services (`rows` holds every Service), the callers of each
/// (`edges`, by Service), and what each workload identity stands for (`workloads`).
pub fn graph(
    namespace: &str,
    rows: &[ServiceRow],
    edges: &BTreeMap<(String, String), Vec<EdgeRow>>,
    workloads: &BTreeMap<(String, String), Vec<Workload>>,
) -> Graph {
    let mut members: Vec<&ServiceRow> = rows.iter().filter(|r| r.namespace == namespace).collect();
    // The busiest (and the failing) Services first: they keep their own nodes.
    members.sort_by(|a, b| {
        state_rank(&a.health_state)
            .cmp(&state_rank(&b.health_state))
            .then((-a.rps).total_cmp(&-b.rps))
            .then(a.name.cmp(&b.name))
    });
    let keep = members.len().min(MAX_NODES - 1);
    let mut b = Builder {
        namespace,
        shown: members[..keep]
            .iter()
            .map(|r| (r.namespace.clone(), r.name.clone()))
            .collect(),
        nodes: BTreeMap::new(),
        edges: BTreeMap::new(),
    };
    for r in &members[..keep] {
        b.nodes.insert(
            format!("service:{}/{}", r.namespace, r.name),
            Node {
                id: format!("service:{}/{}", r.namespace, r.name),
                label: r.name.clone(),
                kind: "service".to_string(),
                state: r.health_state.clone(),
                score: r.health_score,
                rps: r.rps,
            },
        );
    }
    for ((sns, sname), callers) in edges {
        let callee_here = sns == namespace;
        for e in callers {
            let caller_here = identity(&e.caller).is_some_and(|(ns, _)| ns == namespace);
            if !callee_here && !caller_here {
                continue;
            }
            let to = b.service_node(sns, sname);
            let from = b.caller_node(&e.caller, workloads);
            if from != to || callee_here {
                b.edge(from, to, e);
            }
        }
    }
    // Bounded: at most MAX_NODES nodes besides the other namespaces and gateways, which are
    // capped by what exists.
    Graph {
        namespace: namespace.to_string(),
        collapsed: members.len() - keep,
        nodes: b.nodes.into_values().collect(),
        edges: b.edges.into_values().collect(),
    }
}

/// Positions: callers to the left of what they call (layers by longest path from a node with
/// no callers, cycles cut), at most 24 nodes per column, nodes with traffic at the top.
fn layout(g: &Graph) -> BTreeMap<&str, (f64, f64)> {
    let mut layer: BTreeMap<&str, usize> = g.nodes.iter().map(|n| (n.id.as_str(), 0)).collect();
    // Longest-path layering, bounded by the node count (so a cycle cannot loop forever).
    for _ in 0..g.nodes.len().min(64) {
        let mut changed = false;
        for e in &g.edges {
            let from = layer.get(e.from.as_str()).copied().unwrap_or(0);
            if let Some(to) = layer.get_mut(e.to.as_str())
                && *to < from + 1
                && from + 1 < g.nodes.len()
            {
                *to = from + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut columns: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for n in &g.nodes {
        columns.entry(layer[n.id.as_str()]).or_default().push(&n.id);
    }
    // In each column, nodes with traffic first (so edges stay short), quiet ones below.
    let connected: std::collections::BTreeSet<&str> = g
        .edges
        .iter()
        .flat_map(|e| [e.from.as_str(), e.to.as_str()])
        .collect();
    for ids in columns.values_mut() {
        ids.sort_by_key(|id| (!connected.contains(id), *id));
    }
    let mut out = BTreeMap::new();
    let mut x = 20.0;
    for ids in columns.values() {
        for chunk in ids.chunks(24) {
            for (i, id) in chunk.iter().enumerate() {
                out.insert(*id, (x, 20.0 + i as f64 * 44.0));
            }
            x += 230.0;
        }
    }
    out
}

const NODE_W: f64 = 180.0;
const NODE_H: f64 = 30.0;

fn colour(state: &str) -> &'static str {
    match state {
        "failing" => "#c62828",
        "degraded" => "#b35900",
        "healthy" | "learning" => "#1a7f37",
        _ => "#6b7785",
    }
}

/// One edge: a curve from the caller's right side to the callee's left, with a padlock when
/// the caller was authenticated.
fn draw_edge(out: &mut String, e: &Edge, at: &BTreeMap<&str, (f64, f64)>) {
    let (Some(&(x1, y1)), Some(&(x2, y2))) = (at.get(e.from.as_str()), at.get(e.to.as_str()))
    else {
        return;
    };
    let (sx, sy, tx, ty) = (x1 + NODE_W, y1 + NODE_H / 2.0, x2, y2 + NODE_H / 2.0);
    let mid = (sx + tx) / 2.0;
    let width = 1.0 + (1.0 + e.rps).log10().min(4.0);
    let dash = if e.mtls {
        ""
    } else {
        " stroke-dasharray=\"5 4\""
    };
    let _ = write!(
        out,
        "<path class=\"edge\" data-from=\"{}\" data-to=\"{}\" data-mtls=\"{}\" d=\"M{sx:.0},{sy:.0} C{mid:.0},{sy:.0} {mid:.0},{ty:.0} {tx:.0},{ty:.0}\" \
         fill=\"none\" stroke=\"{}\" stroke-width=\"{width:.1}\"{dash}><title>{} → {}: {} req/s, {} errors, {}{}</title></path>",
        esc(&e.from),
        esc(&e.to),
        e.mtls,
        colour(&e.state),
        esc(&e.from),
        esc(&e.to),
        rate(e.rps),
        percent(e.error_rate),
        esc(&e.state),
        if e.mtls {
            ", mutual TLS"
        } else {
            ", caller not authenticated"
        }
    );
    if e.mtls {
        // A padlock: shackle and body.
        let (lx, ly) = (mid - 4.0, (sy + ty) / 2.0 - 5.0);
        let _ = write!(
            out,
            "<g class=\"lock\"><path d=\"M{:.0},{:.0} v-3 a3,3 0 0 1 6,0 v3\" fill=\"none\" stroke=\"#1d232b\" stroke-width=\"1.5\"/>\
             <rect x=\"{:.0}\" y=\"{:.0}\" width=\"8\" height=\"6\" rx=\"1\" fill=\"#1d232b\"/></g>",
            lx + 1.0,
            ly,
            lx,
            ly
        );
    }
}

/// The graph as SVG, with `data-nodes` and `data-edges` counts for tests.
pub fn svg(g: &Graph) -> String {
    let at = layout(g);
    let width = at.values().map(|p| p.0).fold(0.0, f64::max) + NODE_W + 40.0;
    let height = at.values().map(|p| p.1).fold(0.0, f64::max) + NODE_H + 40.0;
    let mut out = String::with_capacity(300 * (g.nodes.len() + g.edges.len()));
    let _ = write!(
        out,
        "<svg id=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         data-nodes=\"{}\" data-edges=\"{}\">",
        g.nodes.len(),
        g.edges.len()
    );
    for e in &g.edges {
        draw_edge(&mut out, e, &at);
    }
    for n in &g.nodes {
        let Some(&(x, y)) = at.get(n.id.as_str()) else {
            continue;
        };
        let label = if n.label.chars().count() > 24 {
            format!("{}…", n.label.chars().take(23).collect::<String>())
        } else {
            n.label.clone()
        };
        let score = n.score.map(|s| format!(" · {s}")).unwrap_or_default();
        let inner = format!(
            "<rect x=\"{x:.0}\" y=\"{y:.0}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"6\" fill=\"#fff\" \
             stroke=\"{}\" stroke-width=\"2\"/><text x=\"{:.0}\" y=\"{:.0}\">{}{}</text><title>{}</title>",
            colour(&n.state),
            x + 8.0,
            y + 19.0,
            esc(&label),
            esc(&score),
            esc(&n.label)
        );
        match n
            .id
            .strip_prefix("service:")
            .and_then(|s| s.split_once('/'))
        {
            Some((ns, name)) => {
                let _ = write!(
                    out,
                    "<a class=\"node\" data-id=\"{}\" href=\"/ui/services/{}/{}\">{inner}</a>",
                    esc(&n.id),
                    url(ns),
                    url(name)
                );
            }
            None => {
                let _ = write!(
                    out,
                    "<g class=\"node\" data-id=\"{}\">{inner}</g>",
                    esc(&n.id)
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

/// The Graph page for `g`, with links to the other namespaces.
pub fn graph_page(g: &Graph, namespaces: &[String]) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Graph of namespace {}</h1><div class=\"filters\">Namespace: ",
        esc(&g.namespace)
    );
    for ns in namespaces {
        let class = if *ns == g.namespace {
            " class=\"active\""
        } else {
            ""
        };
        let _ = write!(
            body,
            "<a href=\"/ui/graph?namespace={}\"{class}>{}</a>",
            url(ns),
            esc(ns)
        );
    }
    body.push_str(
        "</div><p class=\"muted\">Edges are coloured by the health of the calls \
        (green healthy, orange degraded, red failing); solid with a lock: the calls take the \
        mesh's mutual TLS; dashed: they do not. Other namespaces are one node each.</p>",
    );
    if g.collapsed > 0 {
        let _ = write!(
            body,
            "<p>{} more Services of this namespace are drawn as one node (the busiest and the \
             failing ones keep their own).</p>",
            g.collapsed
        );
    }
    if g.nodes.is_empty() {
        body.push_str("<p class=\"muted\">No Service of this namespace has been scored yet.</p>");
    }
    body.push_str("<div style=\"overflow:auto\">");
    body.push_str(&svg(g));
    let _ = write!(
        body,
        "</div><p class=\"muted\">JSON: <a href=\"/api/graph?namespace={}\">/api/graph</a></p>",
        url(&g.namespace)
    );
    page(
        &format!("Graph of {}", g.namespace),
        "/ui/graph",
        Some(10),
        &body,
    )
}
