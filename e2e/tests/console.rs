//! The console in a real browser: headless Chromium (Debian's, through ChromeDriver) loads every
//! page of `/ui` from a running control plane whose gateway Envoy carries live traffic, sorts
//! the Services table by clicking its headers, opens a trace's waterfall, finds a vet finding,
//! and saves screenshots of the Services page and the graph under `target/console-screenshots/`.
//!
//! ```text
//!  load (20 % of "other" answered 500) ──► Envoy (gateway, traced 100 %) ──► echo backends
//!                                            │ stats and spans (OTLP)
//!                                            ▼
//!  Chromium ◄── ChromeDriver ◄── this test ──► trellis serve /ui
//! ```
//!
//! Needs Chromium and ChromeDriver (`./dev setup` installs them as root). Without them the test
//! says why and passes, unless `TRELLIS_REQUIRE_BROWSER` is set, as CI sets it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use trellis_harness::browser::Browser;
use trellis_harness::scenario::{GatewayBed, ROUTES};
use trellis_harness::{http_get_text, request};

fn screenshots() -> PathBuf {
    trellis_harness::workspace_root().join("target/console-screenshots")
}

/// Sends a second of traffic: `other` fails every fifth request, `api` answers.
fn traffic(gateway: SocketAddr) {
    for i in 0..20 {
        let path = if i % 5 == 4 { "/status/500" } else { "/" };
        let _ = request(gateway, "GET", "other.example.com", path, &[]);
        let _ = request(gateway, "GET", "shop.example.com", "/api", &[]);
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The Services table's rows as (service, score) in page order (-1: no score).
fn rows(browser: &Browser) -> Vec<(String, i64)> {
    browser
        .find_all("#services tbody tr[data-service]")
        .unwrap()
        .iter()
        .map(|row| {
            let service = browser
                .attribute(row, "data-service")
                .unwrap()
                .unwrap_or_default();
            let score = browser
                .attribute(row, "data-score")
                .unwrap()
                .and_then(|s| s.parse().ok())
                .unwrap_or(-1);
            (service, score)
        })
        .collect()
}

#[test]
fn every_console_page_loads_in_a_browser_with_live_traffic() {
    if let Err(why) = trellis_harness::browser::installed() {
        if std::env::var_os("TRELLIS_REQUIRE_BROWSER").is_some() {
            panic!("TRELLIS_REQUIRE_BROWSER is set (as CI sets it), but {why}");
        }
        eprintln!("every_console_page_loads_in_a_browser: skipped: {why}");
        return;
    }
    // ROUTES has a rule to a Service that does not exist: a vet finding (TRL0101).
    let objects = format!(
        "---\n{ROUTES}---\napiVersion: telemetry.trellis.dev/v1alpha1\nkind: TracingPolicy\n\
         metadata: {{name: all, namespace: shop}}\n\
         spec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: web}}]\n  \
         samplingPercent: 100\n"
    );
    let bed = GatewayBed::start(
        &objects,
        &["--health-window-secs", "60"],
        "other.example.com",
    )
    .unwrap();
    let (cp, gateway, work) = (&bed.cp, bed.gateway, bed.work.path());

    // Traffic until the scores say "other" is failing and "api" is scored.
    let started = Instant::now();
    loop {
        traffic(gateway);
        let services: serde_json::Value =
            serde_json::from_str(&http_get_text(cp.admin, "/api/services").unwrap()).unwrap();
        let state = |name: &str| {
            services
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name)
                .map(|s| s["health_state"].as_str().unwrap_or_default().to_string())
        };
        if state("other").as_deref() == Some("failing") && state("api").is_some_and(|s| s != "idle")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no scores: {services}"
        );
    }
    println!("scores after {:?} of traffic", started.elapsed());

    let browser = Browser::start(work).unwrap();
    let base = format!("http://{}", cp.admin);
    let shots = screenshots();

    // Services: sorted worst first; a click on a header sorts by it, on Score back again.
    browser.goto(&format!("{base}/ui")).unwrap();
    assert!(browser.url().unwrap().ends_with("/ui/services"));
    let by_score = rows(&browser);
    println!("services by score: {by_score:?}");
    assert_eq!(by_score[0].0, "shop/other", "the failing Service first");
    browser
        .click(&browser.find("th a[data-sort=rps]").unwrap())
        .unwrap();
    assert!(browser.url().unwrap().contains("sort=rps"));
    browser
        .click(&browser.find("th a[data-sort=health_score]").unwrap())
        .unwrap();
    let again = rows(&browser);
    let scored: Vec<i64> = again.iter().map(|r| r.1).filter(|s| *s >= 0).collect();
    assert!(
        scored.windows(2).all(|w| w[0] <= w[1]),
        "ascending: {again:?}"
    );
    let first_unscored = again.iter().position(|r| r.1 < 0).unwrap_or(again.len());
    assert!(
        again[first_unscored..].iter().all(|r| r.1 < 0),
        "unscored last: {again:?}"
    );
    let rollup = browser
        .text(&browser.find("#namespaces tbody tr").unwrap())
        .unwrap();
    assert!(
        rollup.contains("other"),
        "the namespace's worst member: {rollup}"
    );
    browser.screenshot(&shots.join("services.png")).unwrap();

    // A Service's page: charts, and the routes that send to it with their conditions.
    browser
        .click(&browser.find("tr[data-service='shop/other'] a").unwrap())
        .unwrap();
    let heading = browser.text(&browser.find("h1").unwrap()).unwrap();
    assert!(heading.contains("shop/other"), "{heading}");
    assert_eq!(browser.find_all("svg.chart").unwrap().len(), 3);
    let objects = browser.text(&browser.find("#objects").unwrap()).unwrap();
    assert!(objects.contains("HTTPRoute shop/other"), "{objects}");

    // The graph of namespace shop.
    browser
        .goto(&format!("{base}/ui/graph?namespace=shop"))
        .unwrap();
    let svg = browser.find("svg#graph").unwrap();
    let nodes: usize = browser
        .attribute(&svg, "data-nodes")
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    let edges: usize = browser
        .attribute(&svg, "data-edges")
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    println!("graph of shop: {nodes} nodes, {edges} edges");
    assert!(nodes >= 3 && edges >= 2, "{nodes} nodes, {edges} edges");
    browser.screenshot(&shots.join("graph.png")).unwrap();

    // Traces: the list, then one trace's waterfall.
    // (The newest trace may still lack a span that is on its way: take one with two or more.)
    browser.goto(&format!("{base}/ui/traces")).unwrap();
    browser
        .click(
            &browser
                .find("table.traces tr:not([data-spans='1']) a.trace")
                .unwrap(),
        )
        .unwrap();
    let spans = browser.find_all("#waterfall tr.span").unwrap();
    let waterfall = browser.text(&browser.find("#waterfall").unwrap()).unwrap();
    println!("waterfall: {} spans", spans.len());
    assert!(!spans.is_empty());
    assert!(waterfall.contains("ingress"), "{waterfall}");
    browser.screenshot(&shots.join("trace.png")).unwrap();

    // Vet: the route to a Service that does not exist.
    browser.goto(&format!("{base}/ui/vet")).unwrap();
    let finding = browser
        .text(&browser.find("tr[data-code=TRL0101]").unwrap())
        .unwrap();
    println!("vet: {finding}");
    assert!(finding.contains("does-not-exist"), "{finding}");
    browser
        .click(&browser.find("tr[data-code=TRL0101] td a").unwrap())
        .unwrap();
    let object = browser.text(&browser.find("#conditions").unwrap()).unwrap();
    assert!(object.contains("BackendNotFound"), "{object}");

    // Proxies: the gateway's, synced.
    browser.goto(&format!("{base}/ui/proxies")).unwrap();
    let proxy = browser
        .text(&browser.find("tr[data-proxy='gateway/shop/web']").unwrap())
        .unwrap();
    assert!(proxy.contains("SYNCED"), "{proxy}");
    assert!(
        proxy.contains("envoy/1.40."),
        "the build from its ADS node: {proxy}"
    );
    browser.goto(&format!("{base}/ui/vet")).unwrap();
    assert!(
        browser
            .find_all("tr[data-code=TRL0158]")
            .unwrap()
            .is_empty(),
        "the real Envoy is the supported release"
    );

    let errors = browser.console_errors().unwrap();
    assert!(
        errors.is_empty(),
        "errors in the browser's console: {errors:?}"
    );
    println!("screenshots in {}", shots.display());
}
