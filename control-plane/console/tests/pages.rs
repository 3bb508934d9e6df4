//! The console's pages from fixed data: view logic (sorting, roll-ups, the graph's collapsing,
//! the waterfall's tree) as assertions, and every page as golden HTML under `testdata/`
//! (`TRELLIS_UPDATE_GOLDEN=1` rewrites them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use trellis_console::data::{
    ConditionView, EdgeRow, EndpointView, FindingView, HistoryPoint, ObjectView, RelatedObject,
    ServiceDetail, ServiceRow, SpanView, TraceRow, TraceView,
};
use trellis_console::graph::{MAX_NODES, Workload, graph};
use trellis_console::services::{rollups, services_page, sort_services};

fn svc(ns: &str, name: &str, score: Option<u8>, state: &str, rps: f64, errors: f64) -> ServiceRow {
    ServiceRow {
        namespace: ns.into(),
        name: name.into(),
        rps,
        error_rate: errors,
        p50_ms: score.map(|_| 4.0),
        p99_ms: score.map(|s| 250.0 - f64::from(s)),
        within_objective: None,
        retry_ratio: 0.0,
        health_score: score,
        health_state: state.into(),
        health_reason: format!("{state} reason"),
    }
}

fn rows() -> Vec<ServiceRow> {
    vec![
        svc("shop", "cart", Some(100), "healthy", 12.5, 0.0),
        svc("shop", "checkout", Some(0), "failing", 3.2, 0.2),
        svc("shop", "search", Some(80), "degraded", 40.0, 0.004),
        svc("blog", "posts", Some(100), "learning", 0.5, 0.0),
        svc("blog", "quiet", None, "idle", 0.0, 0.0),
    ]
}

fn golden(name: &str, html: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    if std::env::var_os("TRELLIS_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, html).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        want == html,
        "{} differs (TRELLIS_UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

fn names(rows: &[ServiceRow]) -> Vec<String> {
    rows.iter().map(|r| r.name.clone()).collect()
}

#[test]
fn the_services_table_sorts_worst_first_by_health_and_busiest_first_by_rate() {
    let mut r = rows();
    sort_services(&mut r, "health_score").unwrap();
    assert_eq!(
        names(&r),
        ["checkout", "search", "posts", "cart", "quiet"],
        "ties by namespace"
    );
    sort_services(&mut r, "health_state").unwrap();
    assert_eq!(names(&r), ["checkout", "search", "posts", "cart", "quiet"]);
    sort_services(&mut r, "rps").unwrap();
    assert_eq!(names(&r), ["search", "cart", "checkout", "posts", "quiet"]);
    sort_services(&mut r, "p99_ms").unwrap();
    assert_eq!(
        names(&r),
        ["checkout", "search", "posts", "cart", "quiet"],
        "unknown last"
    );
    let e = sort_services(&mut r, "colour").unwrap_err();
    assert!(e.contains("health_score"), "{e}");
}

#[test]
fn each_namespace_rolls_up_to_its_worst_member() {
    let r = rollups(&rows());
    assert_eq!(r[0].namespace, "shop");
    assert_eq!(r[0].worst.name, "checkout");
    assert_eq!(r[0].services, 3);
    assert!((r[0].rps - 55.7).abs() < 1e-9);
    assert_eq!(r[1].namespace, "blog");
    assert_eq!(
        r[1].worst.name, "posts",
        "a scored member is worse than an idle one"
    );
}

#[test]
fn the_services_page_filters_by_namespace_and_marks_the_sorted_column() {
    let html = services_page(rows(), "health_score", None, &[chaos()]).unwrap();
    assert!(html.contains("Faults are being injected on purpose."));
    golden("services.html", &html);
    let shop = services_page(rows(), "rps", Some("shop"), &[]).unwrap();
    assert!(shop.contains("data-service=\"shop/search\""));
    assert!(!shop.contains("data-service=\"blog/posts\""));
    assert!(shop.contains("class=\"sorted\" href=\"/ui/services?sort=rps&namespace=shop\""));
    assert!(services_page(rows(), "nope", None, &[]).is_err());
    let hostile = vec![svc(
        "a",
        "<script>alert(1)</script>",
        None,
        "idle",
        0.0,
        0.0,
    )];
    let html = services_page(hostile, "name", None, &[]).unwrap();
    assert!(!html.contains("<script>alert"), "names are escaped");
}

fn edge(caller: &str, ns: &str, name: &str, rps: f64, state: &str) -> EdgeRow {
    EdgeRow {
        caller: caller.into(),
        mtls: caller.starts_with("spiffe://"),
        health: svc(ns, name, Some(90), state, rps, 0.0),
    }
}

#[test]
fn the_graph_draws_services_by_identity_and_collapses_other_namespaces() {
    let rows = rows();
    let mut edges = BTreeMap::new();
    edges.insert(
        ("shop".to_string(), "checkout".to_string()),
        vec![
            edge(
                "spiffe://cluster.local/ns/shop/sa/cart",
                "shop",
                "checkout",
                2.0,
                "failing",
            ),
            edge(
                "spiffe://cluster.local/ns/blog/sa/posts",
                "shop",
                "checkout",
                1.0,
                "healthy",
            ),
        ],
    );
    edges.insert(
        ("shop".to_string(), "cart".to_string()),
        vec![
            edge(
                "spiffe://cluster.local/ns/shop/sa/web-gateway",
                "shop",
                "cart",
                5.0,
                "healthy",
            ),
            edge("other", "shop", "cart", 0.1, "healthy"),
        ],
    );
    let mut workloads = BTreeMap::new();
    workloads.insert(
        ("shop".to_string(), "cart".to_string()),
        vec![Workload::Service("shop".into(), "cart".into())],
    );
    workloads.insert(
        ("shop".to_string(), "web-gateway".to_string()),
        vec![Workload::Gateway("shop".into(), "web".into())],
    );
    let g = graph("shop", &rows, &edges, &workloads);
    let ids: Vec<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "gateway:shop/web",
            "namespace:blog",
            "other",
            "service:shop/cart",
            "service:shop/checkout",
            "service:shop/search"
        ]
    );
    let e: Vec<(&str, &str, bool, &str)> = g
        .edges
        .iter()
        .map(|e| (e.from.as_str(), e.to.as_str(), e.mtls, e.state.as_str()))
        .collect();
    assert_eq!(
        e,
        [
            ("gateway:shop/web", "service:shop/cart", true, "healthy"),
            ("namespace:blog", "service:shop/checkout", true, "healthy"),
            ("other", "service:shop/cart", false, "healthy"),
            (
                "service:shop/cart",
                "service:shop/checkout",
                true,
                "failing"
            ),
        ]
    );
    let page = trellis_console::graph::graph_page(&g, &["blog".into(), "shop".into()]);
    assert!(page.contains("data-nodes=\"6\" data-edges=\"4\""));
    golden("graph.html", &page);
}

#[test]
fn a_namespace_of_thousands_of_services_is_capped() {
    let many: Vec<ServiceRow> = (0..2000)
        .map(|i| {
            svc(
                "big",
                &format!("s{i:04}"),
                Some(100),
                "healthy",
                f64::from(i),
                0.0,
            )
        })
        .collect();
    let mut edges = BTreeMap::new();
    for i in 0..2000 {
        edges.insert(
            ("big".to_string(), format!("s{i:04}")),
            vec![edge("other", "big", &format!("s{i:04}"), 1.0, "healthy")],
        );
    }
    let g = graph("big", &many, &edges, &BTreeMap::new());
    assert!(g.nodes.len() <= MAX_NODES + 1, "{}", g.nodes.len());
    assert_eq!(g.collapsed, 2000 - (MAX_NODES - 1));
    assert!(
        g.nodes.iter().any(|n| n.id == "service:big/s1999"),
        "the busiest stay"
    );
    assert!(g.nodes.iter().any(|n| n.id == "more"));
}

fn span(id: &str, parent: Option<&str>, service: &str, start: u64, dur: u64) -> SpanView {
    SpanView {
        span_id: id.into(),
        parent_span_id: parent.map(str::to_string),
        service: service.into(),
        name: format!("{service} op"),
        kind: "server".into(),
        start_unix_nanos: start,
        duration_nanos: dur,
        status: if id == "c" {
            "error".into()
        } else {
            "unset".into()
        },
        attributes: BTreeMap::new(),
    }
}

#[test]
fn a_trace_is_a_waterfall_in_tree_order_with_health_beside_its_spans() {
    let mut root = span("a", None, "shop/web", 1_000, 9_000_000);
    root.attributes
        .insert("trellis.decision".into(), "allow".into());
    root.attributes
        .insert("trellis.rule".into(), "shop/guard/default".into());
    let trace = TraceView {
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        spans: vec![
            span("c", Some("b"), "shop/checkout", 3_000_000, 2_000_000),
            root,
            SpanView {
                name: "router service_shop_search_80 egress".into(),
                ..span("d", Some("a"), "gateway/shop/web", 6_000_000, 1_000_000)
            },
            span("b", Some("a"), "shop/cart", 2_000_000, 4_000_000),
            span("orphan", Some("zz"), "blog/posts", 8_000_000, 500_000),
        ],
    };
    let health: BTreeMap<String, ServiceRow> = rows()
        .into_iter()
        .map(|r| (format!("{}/{}", r.namespace, r.name), r))
        .collect();
    let html = trellis_console::traces::waterfall_page(&trace, &health);
    let order: Vec<usize> = [
        "data-span=\"a\"",
        "data-span=\"b\"",
        "data-span=\"c\"",
        "data-span=\"d\"",
        "data-span=\"orphan\"",
    ]
    .iter()
    .map(|m| html.find(m).unwrap())
    .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "tree order: {order:?}"
    );
    assert!(html.contains("allow <span class=\"muted\">shop/guard/default</span>"));
    assert!(html.contains("<span class=\"badge failing\">failing</span>"));
    let d = &html[html.find("data-span=\"d\"").unwrap()..];
    assert!(
        d[..d.find("</tr>").unwrap()].contains("badge degraded"),
        "a gateway's client span shows its upstream Service's health"
    );
    golden("trace.html", &html);
}

#[test]
fn the_service_vet_and_proxies_pages_render() {
    let detail = ServiceDetail {
        service: svc("shop", "checkout", Some(0), "failing", 3.2, 0.2),
        edges: vec![
            edge(
                "spiffe://cluster.local/ns/shop/sa/cart",
                "shop",
                "checkout",
                2.0,
                "failing",
            ),
            // A meshed caller whose requests go in plaintext (the port's mode is DISABLE).
            EdgeRow {
                mtls: false,
                ..edge(
                    "spiffe://cluster.local/ns/shop/sa/legacy",
                    "shop",
                    "checkout",
                    0.5,
                    "healthy",
                )
            },
        ],
        history: (0..12)
            .map(|i| HistoryPoint {
                score: Some(100 - i * 8),
                state: "degraded".into(),
                reason: String::new(),
                requests: 100,
                failures: u64::from(i) * 2,
                p50_ms: Some(4.0),
                p99_ms: Some(20.0 + f64::from(i)),
                burn_rate: None,
            })
            .collect(),
        objects: vec![RelatedObject {
            kind: "HTTPRoute".into(),
            namespace: "shop".into(),
            name: "checkout".into(),
            relation: "backend".into(),
            conditions: vec![(
                "Gateway web".into(),
                ConditionView {
                    type_: "ResolvedRefs".into(),
                    status: "False".into(),
                    reason: "BackendNotFound".into(),
                    message: "Service shop/gone does not exist".into(),
                },
            )],
        }],
        endpoints: vec![EndpointView {
            address: "10.244.0.7".into(),
            ready: true,
            pod: Some("shop/checkout-1".into()),
            proxy: Some("pod/shop/checkout-1 SYNCED".into()),
            identity: Some("spiffe://cluster.local/ns/shop/sa/checkout".into()),
        }],
        traces: vec![TraceRow {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            root_service: "shop".into(),
            root_name: "ingress".into(),
            duration_nanos: 12_000_000,
            spans: 4,
            error: true,
            request_id: Some("r-1".into()),
            services: vec!["shop/checkout".into()],
            ..Default::default()
        }],
        findings: vec![finding()],
    };
    golden(
        "service.html",
        &trellis_console::service::service_page(&detail),
    );
    golden("vet.html", &trellis_console::vet::vet_page(&[finding()]));
    let now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    golden(
        "proxies.html",
        &trellis_console::proxies::proxies_page(&[], now),
    );
}

fn finding() -> FindingView {
    FindingView {
        severity: "warning".into(),
        code: "TRL0173".into(),
        object: ObjectView {
            kind: "HTTPRoute".into(),
            namespace: "shop".into(),
            name: "checkout".into(),
        },
        field: "spec.rules[0].backendRefs[0]".into(),
        message: "Service shop/checkout has no ready endpoints".into(),
        fix: "check the selector".into(),
    }
}

fn chaos() -> FindingView {
    FindingView {
        severity: "info".into(),
        code: "TRL0201".into(),
        object: ObjectView {
            kind: "BackendTrafficPolicy".into(),
            namespace: "shop".into(),
            name: "chaos".into(),
        },
        field: String::new(),
        message: "chaos is on: Injecting faults into 1 route (counted per proxy): abort with HTTP 503 for 30% of requests".into(),
        fix: String::new(),
    }
}
