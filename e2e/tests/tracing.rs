//! Tracing through a real Envoy: a TracingPolicy on the Gateway turns on Envoy's OpenTelemetry
//! tracer, which exports spans to the control plane's trace store; `/api/traces` finds them.
//!
//! ```text
//!  client ──► Envoy (gateway: span "ingress", child span "router … egress") ──► echo
//!               │ OTLP/gRPC spans (trellis-telemetry cluster)
//!               ▼
//!        trellis serve ──► GET /api/traces?request_id=…, /api/traces/{id}, ?service=NS/NAME
//! ```
//!
//! Also: sampling at 10% over 1000 requests lands within statistical bounds, incoming trace
//! context from an untrusted client starts a fresh trace, and a flood of spans leaves the
//! store within its bound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use trellis_harness::scenario::{GatewayBed, NAMESPACE, ROUTES};
use trellis_harness::{ControlPlane, eventually, http_get_text, private_loopback, request};

/// The scenario's Gateway with `policy` (a TracingPolicy spec, YAML) attached to it.
fn bed(policy: &str, serve_args: &[&str]) -> GatewayBed {
    bed_with(policy, "", serve_args)
}

/// [`bed`], with `extra` (more objects, YAML) in the configuration.
fn bed_with(policy: &str, extra: &str, serve_args: &[&str]) -> GatewayBed {
    let objects = format!(
        "---\n{ROUTES}---\napiVersion: telemetry.trellis.dev/v1alpha1\nkind: TracingPolicy\n\
         metadata: {{name: edge, namespace: {NAMESPACE}}}\nspec:\n  targetRefs: \
         [{{group: gateway.networking.k8s.io, kind: Gateway, name: web}}]\n{policy}{extra}"
    );
    GatewayBed::start(&objects, serve_args, "other.example.com").unwrap()
}

fn header<'a>(reply: &'a trellis_harness::Reply, name: &str) -> Option<&'a str> {
    reply
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn get_json(admin: SocketAddr, path: &str) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(&http_get_text(admin, path)?)?)
}

/// The trace of a request, once the store holds all of `spans` of it.
fn trace_of(bed: &GatewayBed, request_id: &str, spans: usize) -> Value {
    let mut found = Value::Null;
    eventually("the trace in /api/traces", Duration::from_secs(30), || {
        found = get_json(
            bed.cp.admin,
            &format!("/api/traces?request_id={request_id}"),
        )
        .unwrap_or(Value::Null);
        Ok(found["spans"].as_array().is_some_and(|s| s.len() >= spans))
    })
    .unwrap_or_else(|e| panic!("{e}\nlast answer: {found}\n{}", bed.envoy.log()));
    found
}

#[test]
fn a_request_through_the_gateway_is_found_by_its_request_id_with_parent_and_child_spans() {
    let bed = bed("  samplingPercent: 100\n", &[]);
    let reply = request(bed.gateway, "GET", "other.example.com", "/checkout", &[]).unwrap();
    assert_eq!(reply.status, 200);
    let request_id = header(&reply, "x-request-id")
        .expect("the gateway returns the request's id")
        .to_string();
    // The backend got W3C trace context.
    let echoed = reply.json();
    let traceparent = echoed["headers"]["Traceparent"]
        .as_array()
        .and_then(|v| v.first())
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no traceparent reached the backend: {echoed}"))
        .to_string();

    let trace = trace_of(&bed, &request_id, 2);
    let spans = trace["spans"].as_array().unwrap();
    let server = spans
        .iter()
        .find(|s| s["kind"] == "server")
        .unwrap_or_else(|| panic!("no server span: {trace}"));
    let client = spans
        .iter()
        .find(|s| s["kind"] == "client")
        .unwrap_or_else(|| panic!("no client span: {trace}"));
    assert_eq!(server["parent_span_id"], Value::Null, "{trace}");
    assert_eq!(client["parent_span_id"], server["span_id"], "{trace}");
    assert_eq!(server["service"], "gateway/shop/web");
    assert_eq!(
        client["attributes"]["upstream_cluster"],
        "service/shop/other/80"
    );
    let trace_id = trace["trace_id"].as_str().unwrap();
    assert!(
        traceparent.contains(trace_id),
        "{traceparent} is of trace {trace_id}"
    );
    println!(
        "request {request_id}: trace {trace_id}, spans {}",
        spans
            .iter()
            .map(|s| format!(
                "{} {} (span {}, parent {}, {} µs)",
                s["kind"],
                s["name"],
                s["span_id"],
                s["parent_span_id"],
                s["duration_nanos"].as_u64().unwrap_or(0) / 1000
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );

    // The same trace by id, and among the Service's.
    let by_id = get_json(bed.cp.admin, &format!("/api/traces/{trace_id}")).unwrap();
    assert_eq!(by_id["trace_id"], trace_id);
    let listed = get_json(bed.cp.admin, "/api/traces?service=shop/other&limit=5").unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["trace_id"] == trace_id),
        "{listed}"
    );

    // A client's own trace context is not trusted at the edge: a fresh trace starts.
    let foreign = "0af7651916cd43dd8448eb211c80319c";
    let reply = request(
        bed.gateway,
        "GET",
        "other.example.com",
        "/",
        &[("traceparent", &format!("00-{foreign}-b7ad6b7169203331-01"))],
    )
    .unwrap();
    let request_id = header(&reply, "x-request-id").unwrap().to_string();
    let trace = trace_of(&bed, &request_id, 2);
    assert_ne!(trace["trace_id"], foreign, "{trace}");
    assert!(
        trace["spans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "server" && s["parent_span_id"].is_null()),
        "{trace}"
    );
    println!(
        "untrusted traceparent of trace {foreign}: request {request_id} started trace {}",
        trace["trace_id"]
    );
}

#[test]
fn ten_percent_sampling_over_a_thousand_requests_lands_within_bounds() {
    let bed = bed("  samplingPercent: 10\n", &[]);
    let mut ids = Vec::new();
    for _ in 0..1000 {
        let reply = request(bed.gateway, "GET", "other.example.com", "/", &[]).unwrap();
        assert_eq!(reply.status, 200);
        ids.push(header(&reply, "x-request-id").unwrap().to_string());
    }
    // Envoy flushes spans in batches (every 5 s at the latest): wait for two flushes.
    std::thread::sleep(Duration::from_secs(12));
    let traced = ids
        .iter()
        .filter(|id| {
            get_json(bed.cp.admin, &format!("/api/traces?request_id={id}"))
                .is_ok_and(|t| t["trace_id"].is_string())
        })
        .count();
    // Binomial(1000, 0.1): mean 100, standard deviation 9.5; ±4.5 sd.
    println!("10% sampling: {traced} of 1000 requests traced (expected 100 ± 43)");
    assert!((57..=143).contains(&traced), "{traced} of 1000 traced");
}

#[test]
fn a_flood_of_spans_leaves_the_trace_store_within_its_bound() {
    let bed = bed("  samplingPercent: 100\n", &["--trace-store-mib", "1"]);
    // Long tags make big spans: a few thousand requests overflow 1 MiB several times.
    let tag = "x".repeat(200);
    let started = std::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(20) {
        let path = format!("/flood/{sent}/{tag}");
        request(bed.gateway, "GET", "other.example.com", &path, &[]).unwrap();
        sent += 1;
    }
    std::thread::sleep(Duration::from_secs(8));
    let metrics = http_get_text(bed.cp.admin, "/metrics").unwrap();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing"))
            .trim()
            .parse()
            .unwrap()
    };
    let (bytes, max, evicted, spans) = (
        value("trellis_trace_store_bytes"),
        value("trellis_trace_store_max_bytes"),
        value("trellis_trace_store_evicted_traces_total"),
        value("trellis_trace_store_spans"),
    );
    println!(
        "flood: {sent} requests in 20 s; store {bytes} of {max} bytes, {spans} spans held, {evicted} traces evicted"
    );
    assert_eq!(max, 1024 * 1024);
    assert!(bytes <= max);
    assert!(evicted > 0, "the flood should have overflowed the store");
}

#[test]
fn spans_carry_the_policy_decision_its_rule_and_allow_listed_baggage() {
    let module = trellis_harness::load::wasm_module("trellis-policy-wasm").unwrap();
    let module = module.display().to_string();
    let extra = format!(
        "---\napiVersion: policy.trellis.dev/v1alpha1\nkind: AuthorizationPolicy\n\
         metadata: {{name: no-admin, namespace: {NAMESPACE}}}\n\
         spec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: web}}]\n  \
         defaultAction: Allow\n  rules:\n  - {{name: admin, action: Deny, paths: [{{type: Prefix, value: /admin}}]}}\n"
    );
    let bed = bed_with(
        "  samplingPercent: 100\n  baggageTags: [tenant]\n",
        &extra,
        &["--policy-module", &module],
    );
    let tags = |path: &str| {
        let reply = request(
            bed.gateway,
            "GET",
            "other.example.com",
            path,
            &[("baggage", "tenant=acme,plan=gold")],
        )
        .unwrap();
        let id = header(&reply, "x-request-id").unwrap().to_string();
        let trace = trace_of(&bed, &id, 1);
        let server = trace["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == "server")
            .cloned()
            .unwrap_or_else(|| panic!("{trace}"));
        (reply.status, server["attributes"].clone())
    };
    let (status, allowed) = tags("/");
    println!(
        "GET / -> {status}: trellis.decision={} trellis.rule={} baggage.tenant={}",
        allowed["trellis.decision"], allowed["trellis.rule"], allowed["baggage.tenant"]
    );
    assert_eq!(status, 200);
    assert_eq!(allowed["trellis.decision"], "allow");
    assert_eq!(allowed["baggage.tenant"], "acme");
    assert!(
        allowed.get("baggage.plan").is_none(),
        "plan is not allow-listed"
    );
    let (status, denied) = tags("/admin");
    println!(
        "GET /admin -> {status}: trellis.decision={} trellis.rule={}",
        denied["trellis.decision"], denied["trellis.rule"]
    );
    assert_eq!(status, 403);
    assert_eq!(denied["trellis.decision"], "deny");
    assert!(
        denied["trellis.rule"]
            .as_str()
            .unwrap()
            .contains("no-admin/rule/admin"),
        "{denied}"
    );
}

#[test]
fn the_control_planes_own_translations_and_pushes_are_traced() {
    // The control plane exports its own spans to its own OTLP receiver (a listener of its own).
    let (ip, port) = private_loopback();
    let telemetry = format!("{ip}:{port}");
    let endpoint = format!("http://{telemetry}");
    let bed = bed(
        "  samplingPercent: 0\n",
        &[
            "--telemetry-address",
            &telemetry,
            "--otlp-endpoint",
            &endpoint,
        ],
    );
    let mut listed = Value::Null;
    eventually("the control plane's spans", Duration::from_secs(30), || {
        listed = get_json(
            bed.cp.admin,
            "/api/traces?service=trellis-system/trellis&limit=50",
        )?;
        Ok(listed.as_array().is_some_and(|l| {
            l.iter().any(|t| t["root_name"] == "translate")
                && l.iter().any(|t| t["root_name"] == "push")
        }))
    })
    .unwrap_or_else(|e| panic!("{e}: {listed}"));
    let translate = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["root_name"] == "translate")
        .unwrap();
    let trace = get_json(
        bed.cp.admin,
        &format!("/api/traces/{}", translate["trace_id"].as_str().unwrap()),
    )
    .unwrap();
    println!("the control plane's own span: {}", trace["spans"][0]);
    assert_eq!(trace["spans"][0]["service"], "trellis-system/trellis");
    assert!(trace["spans"][0]["attributes"]["objects"].is_string());
}

/// A second control plane to act as the user's OTLP collector: its receiver on `ip:port`,
/// plaintext (file mode on loopback).
fn collector() -> (ControlPlane, String, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let (ip, port) = private_loopback();
    let address = format!("{ip}:{port}");
    let cp = ControlPlane::start(&config, tmp.path(), &["--telemetry-address", &address]).unwrap();
    (cp, address, tmp)
}

#[test]
fn spans_go_to_a_users_collector_directly_or_forwarded() {
    // destination.otlp: Envoy exports straight to the collector; the control plane never
    // sees those spans.
    let (direct, address, _d) = collector();
    let sender = bed(
        &format!("  samplingPercent: 100\n  destination: {{otlp: \"{address}\"}}\n"),
        &[],
    );
    let reply = request(sender.gateway, "GET", "other.example.com", "/", &[]).unwrap();
    let id = header(&reply, "x-request-id").unwrap().to_string();
    let mut found = Value::Null;
    eventually("the trace at the user's collector", Duration::from_secs(30), || {
        found = get_json(direct.admin, &format!("/api/traces?request_id={id}"))
            .unwrap_or(Value::Null);
        Ok(found["spans"].as_array().is_some_and(|s| s.len() >= 2))
    })
    .unwrap_or_else(|e| {
        let dump = sender.envoy.config_dump().unwrap_or_default().to_string();
        panic!(
            "{e}: {found}\ncluster tracing/shop/edge: rq {:?} 200s {:?} cx_fail {:?}; spans sent {:?}; tracer configured: {}; collector holds {:?}\n{}",
            sender.envoy.stat("cluster.tracing_shop_edge.upstream_rq_total"),
            sender.envoy.stat("cluster.tracing_shop_edge.upstream_rq_200"),
            sender.envoy.stat("cluster.tracing_shop_edge.upstream_cx_connect_fail"),
            sender.envoy.stat("tracing.opentelemetry.spans_sent"),
            dump.contains("tracing/shop/edge"),
            http_get_text(direct.admin, "/api/traces"),
            sender.envoy.log()
        )
    });
    let own = get_json(sender.cp.admin, &format!("/api/traces?request_id={id}"));
    assert!(
        own.is_err(),
        "the control plane kept a span sent elsewhere: {own:?}"
    );
    println!(
        "destination.otlp: request {id} found at the user's collector as trace {} ({} spans), not in the control plane's store",
        found["trace_id"],
        found["spans"].as_array().unwrap().len()
    );

    // --trace-forward-address: the control plane stores the spans and forwards a copy.
    let (forwarded, address, _f) = collector();
    let forward = format!("http://{address}");
    let forwarder = bed(
        "  samplingPercent: 100\n",
        &["--trace-forward-address", &forward],
    );
    let reply = request(forwarder.gateway, "GET", "other.example.com", "/", &[]).unwrap();
    let id = header(&reply, "x-request-id").unwrap().to_string();
    trace_of(&forwarder, &id, 2);
    eventually("the forwarded copy", Duration::from_secs(30), || {
        found = get_json(forwarded.admin, &format!("/api/traces?request_id={id}"))
            .unwrap_or(Value::Null);
        Ok(found["spans"].as_array().is_some_and(|s| s.len() >= 2))
    })
    .unwrap_or_else(|e| panic!("{e}: {found}"));
    println!(
        "--trace-forward-address: request {id} in the control plane's store and forwarded ({} spans)",
        found["spans"].as_array().unwrap().len()
    );
}

/// A TracingPolicy whose own collector (`destination.otlp`) is not there: the Gateway's
/// exports fail, its stats say so, and `/api/vet` reports TRL0156 on the policy.
#[test]
fn a_collector_that_is_not_there_is_a_vet_finding() {
    // An address nothing listens on.
    let (ip, port) = private_loopback();
    let bed = bed(
        &format!("  samplingPercent: 100\n  destination: {{otlp: \"{ip}:{port}\"}}\n"),
        &[],
    );
    let mut finding = Value::Null;
    let started = std::time::Instant::now();
    eventually(
        "vet to report the collector (TRL0156)",
        Duration::from_secs(60),
        || {
            for _ in 0..20 {
                let _ = request(bed.gateway, "GET", "other.example.com", "/", &[]);
            }
            std::thread::sleep(Duration::from_millis(500));
            let vet = get_json(bed.cp.admin, "/api/vet?code=TRL0156")?;
            finding = vet["findings"][0].clone();
            Ok(!finding.is_null())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: Envoy counted {:?} failed connections to the collector",
            bed.envoy
                .stat("cluster.tracing_shop_edge.upstream_cx_connect_fail")
        )
    });
    println!("after {:?}: {}", started.elapsed(), finding["message"]);
    assert_eq!(finding["object"]["kind"], "TracingPolicy");
    assert_eq!(finding["object"]["name"], "edge");
    assert!(
        finding["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{ip}:{port}")),
        "{finding}"
    );
}
