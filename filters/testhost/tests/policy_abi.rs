//! The real `trellis-policy-wasm` module through the proxy-wasm ABI: configuration, allow,
//! deny, audit, rate limiting across two VMs sharing one proxy, CAS retries, metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use trellis_wasm_host::{Action, LogLevel, Module, TestHost, Vm, build_module};

fn module() -> Module {
    let path = build_module("trellis-policy-wasm").unwrap();
    Module::load(path).unwrap()
}

const POLICY: &str = r#"{
  "policies": [
    {"name": "default/deny-admin",
     "scope": {"route_prefixes": ["httproute/default/web/"]},
     "default_action": "allow",
     "rules": [
       {"name": "admin-health", "action": "allow", "paths": [{"exact": "/admin/health"}]},
       {"name": "admin", "action": "deny", "paths": [{"prefix": "/admin"}]}
     ]},
    {"name": "default/audit-deletes", "mode": "audit", "default_action": "allow",
     "rules": [{"name": "deletes", "action": "deny", "methods": ["DELETE"]}]}
  ]
}"#;

/// Sends a request's headers through `vm` from `client` on `route`; returns the action and the
/// local response's status, body and retry-after header, if one was sent.
fn request(
    vm: &mut Vm,
    method: &str,
    path: &str,
    client: &str,
    route: &str,
) -> (Action, Option<(u32, String, Option<String>)>) {
    let mut stream = vm.http_stream().unwrap();
    stream
        .set_property(&["source", "address"], client)
        .set_property(&["xds", "route_name"], route);
    let action = stream
        .on_request_headers(
            &[(":method", method), (":path", path), (":authority", "web")],
            true,
        )
        .unwrap();
    let local = stream.local_response().map(|response| {
        (
            response.status,
            response.body_text(),
            response.header("retry-after").map(str::to_string),
        )
    });
    stream.finish().unwrap();
    (action, local)
}

const WEB: &str = "httproute/default/web/rule/0/match/0";

#[test]
fn the_module_imports_only_what_the_test_host_provides() {
    let imports = module().imports();
    let wasi: Vec<&String> = imports
        .iter()
        .filter(|i| i.starts_with("wasi_snapshot_preview1."))
        .collect();
    assert!(wasi.len() <= 6, "unexpected WASI imports: {wasi:?}");
    for import in &imports {
        assert!(
            import.starts_with("env.proxy_") || import.starts_with("wasi_snapshot_preview1."),
            "{import}"
        );
    }
}

#[test]
fn a_bad_configuration_is_refused_with_a_logged_reason() {
    let host = TestHost::new();
    let mut vm = host.start_vm(&module()).unwrap();
    let accepted = vm
        .configure(r#"{"policies": [{"name": "p", "default_action": "block"}]}"#)
        .unwrap();
    assert!(!accepted);
    let logs = host.logs();
    let error = logs
        .iter()
        .find(|l| l.level == LogLevel::Error)
        .expect("an error is logged");
    assert!(
        error.message.contains("policies[0].default_action")
            && error.message.contains("unknown variant `block`"),
        "{logs:?}"
    );
}

#[test]
fn a_good_configuration_is_accepted_and_defines_its_counters() {
    let host = TestHost::new();
    host.start_configured(&module(), POLICY).unwrap();
    assert!(host.logged("trellis-policy: configured: 2 policies (3 rules), 0 rate limits"));
    assert_eq!(
        host.metric("trellis_policy_denied_total.policy.default/deny-admin.rule.admin"),
        Some(0)
    );
    assert_eq!(
        host.metric("trellis_policy_audit_denied_total.policy.default/audit-deletes.rule.deletes"),
        Some(0)
    );
}

#[test]
fn a_denied_request_is_answered_403_and_counted() {
    let host = TestHost::new();
    let mut vm = host.start_configured(&module(), POLICY).unwrap();
    let (action, local) = request(&mut vm, "GET", "/admin/users", "10.0.0.1:4000", WEB);
    assert_eq!(action, Action::Pause);
    assert_eq!(
        local,
        Some((403, "denied by policy default/deny-admin".to_string(), None))
    );
    assert_eq!(
        host.metric("trellis_policy_denied_total.policy.default/deny-admin.rule.admin"),
        Some(1)
    );
}

#[test]
fn allowed_requests_continue_untouched() {
    let host = TestHost::new();
    let mut vm = host.start_configured(&module(), POLICY).unwrap();
    assert_eq!(
        request(&mut vm, "GET", "/admin/health", "10.0.0.1:4000", WEB),
        (Action::Continue, None)
    );
    assert_eq!(
        request(&mut vm, "GET", "/home", "10.0.0.1:4000", WEB),
        (Action::Continue, None)
    );
    // Out of the policy's scope, /admin is not its business.
    let other = "httproute/default/other/rule/0/match/0";
    assert_eq!(
        request(&mut vm, "GET", "/admin", "10.0.0.1:4000", other),
        (Action::Continue, None)
    );
    assert_eq!(
        host.metric("trellis_policy_allowed_total.policy.default/deny-admin.rule.admin-health"),
        Some(1)
    );
    assert_eq!(
        host.metric("trellis_policy_allowed_total.policy.default/deny-admin.rule.(default)"),
        Some(1)
    );
}

#[test]
fn audit_mode_logs_and_counts_but_lets_the_request_through() {
    let host = TestHost::new();
    let mut vm = host.start_configured(&module(), POLICY).unwrap();
    assert_eq!(
        request(&mut vm, "DELETE", "/items/1", "10.0.0.9:4000", WEB),
        (Action::Continue, None)
    );
    assert_eq!(
        host.metric("trellis_policy_audit_denied_total.policy.default/audit-deletes.rule.deletes"),
        Some(1)
    );
    let audit = host
        .logs()
        .into_iter()
        .find(|l| l.message.contains("would deny"))
        .expect("an audit line");
    assert_eq!(audit.level, LogLevel::Info);
    assert!(
        audit.message.contains("DELETE /items/1 from 10.0.0.9"),
        "{audit:?}"
    );
}

const LIMIT: &str = r#"{"rate_limits": [
  {"name": "per-client", "key": "client_ip", "requests": 2, "per": "second", "burst": 4}
]}"#;

#[test]
fn two_workers_share_one_bucket_per_client() {
    let host = TestHost::new();
    let module = module();
    let mut workers = [
        host.start_configured(&module, LIMIT).unwrap(),
        host.start_configured(&module, LIMIT).unwrap(),
    ];
    let mut outcomes = Vec::new();
    for i in 0..8 {
        let (_, local) = request(&mut workers[i % 2], "GET", "/", "10.0.0.1:1", WEB);
        outcomes.push(local.map(|(status, _, retry)| (status, retry)));
    }
    let allowed = outcomes.iter().filter(|o| o.is_none()).count();
    assert_eq!(allowed, 4, "the burst, across both workers: {outcomes:?}");
    assert_eq!(outcomes[4], Some((429, Some("1".to_string()))));
    assert_eq!(
        host.metric("trellis_policy_rate_limited_total.limit.per-client"),
        Some(4)
    );
    // Another client has its own bucket.
    assert_eq!(
        request(&mut workers[1], "GET", "/", "10.0.0.2:1", WEB).1,
        None
    );
    // Half a second later one token (2/s) is back, whichever worker serves it.
    host.advance(Duration::from_millis(500));
    assert_eq!(
        request(&mut workers[1], "GET", "/", "10.0.0.1:1", WEB).1,
        None
    );
    assert!(
        request(&mut workers[0], "GET", "/", "10.0.0.1:1", WEB)
            .1
            .is_some()
    );
}

#[test]
fn a_lost_compare_and_swap_is_retried() {
    let host = TestHost::new();
    let mut vm = host.start_configured(&module(), LIMIT).unwrap();
    assert_eq!(request(&mut vm, "GET", "/", "10.0.0.1:1", WEB).1, None);
    // The client's bucket: the one slot of the limit in use (fingerprint, tokens, refill).
    let key = host
        .shared_keys()
        .into_iter()
        .find(|k| k.starts_with("trellis.policy.rl.v2/per-client/") && !k.contains('~'))
        .unwrap();
    let key = key.as_str();
    let (before, _) = host.shared_data(key).unwrap();
    // Another worker takes a token between each of the next two reads and writes.
    host.interfere_with_cas_writes(key, 2, |bytes| {
        let mut tokens = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
        tokens -= 1_000_000;
        let mut out = bytes[..8].to_vec();
        out.extend_from_slice(&tokens.to_le_bytes());
        out.extend_from_slice(&bytes[16..]);
        out
    });
    assert_eq!(request(&mut vm, "GET", "/", "10.0.0.1:1", WEB).1, None);
    assert_eq!(host.cas_mismatches(), 2);
    let (after, _) = host.shared_data(key).unwrap();
    let tokens = |b: &[u8]| u64::from_le_bytes(b[8..16].try_into().unwrap());
    assert_eq!(
        tokens(&before) - tokens(&after),
        3_000_000,
        "theirs (2) and ours (1)"
    );
}

#[test]
fn an_empty_configuration_lets_everything_through() {
    let host = TestHost::new();
    let mut vm = host.start_configured(&module(), "").unwrap();
    assert_eq!(
        request(&mut vm, "POST", "/admin", "10.0.0.1:1", WEB),
        (Action::Continue, None)
    );
    assert!(host.metrics().is_empty());
}

/// The policy filter with every telemetry part on.
const TELEMETRY: &str = r#"{
  "policies": [
    {"name": "default/deny-admin", "default_action": "allow",
     "rules": [{"name": "admin", "action": "deny", "paths": [{"prefix": "/admin"}]}]}
  ],
  "telemetry": {
    "span_tags": true,
    "baggage_tags": ["tenant"],
    "latency_objectives": [
      {"scope": {"routes": ["httproute/default/web/rule/0/match/0"]}, "objective_ms": 250}
    ],
    "peer_counters": true
  }
}"#;

const SLO_GOOD: &str =
    "trellis_slo_requests_total.route.httproute/default/web/rule/0/match/0.class.good";
const SLO_BAD: &str =
    "trellis_slo_requests_total.route.httproute/default/web/rule/0/match/0.class.bad";

/// Runs one request with telemetry through `vm`: headers, then `request.duration` (as Envoy
/// serializes it: 8 bytes, little-endian nanoseconds) and the end of the stream. Returns the
/// properties the module set and the local response's status.
fn telemetry_request(
    vm: &mut Vm,
    path: &str,
    peer: &str,
    baggage: &str,
    duration: Duration,
) -> (Vec<(Vec<String>, String)>, Option<u32>) {
    let mut stream = vm.http_stream().unwrap();
    stream
        .set_property(&["source", "address"], "10.0.0.1:4000")
        .set_property(&["xds", "route_name"], WEB)
        .set_property(&["connection", "uri_san_peer_certificate"], peer);
    stream
        .on_request_headers(
            &[(":method", "GET"), (":path", path), ("baggage", baggage)],
            true,
        )
        .unwrap();
    let set = stream
        .properties_set()
        .into_iter()
        .map(|(path, value)| (path, String::from_utf8(value).unwrap()))
        .collect();
    let status = stream.local_response().map(|r| r.status);
    let nanos = i64::try_from(duration.as_nanos()).unwrap();
    stream.set_property(&["request", "duration"], nanos.to_le_bytes());
    stream.finish().unwrap();
    (set, status)
}

fn state(name: &str, value: &str) -> (Vec<String>, String) {
    (vec![name.to_string()], value.to_string())
}

#[test]
fn telemetry_sets_filter_state_and_counts_objectives_and_peers() {
    let host = TestHost::new();
    let mut vm = host.start_configured(&module(), TELEMETRY).unwrap();
    assert!(host.logged(
        "configured: 1 policy (1 rule), 0 rate limits, telemetry: span tags, 1 baggage tag, \
         1 latency objective, peer counters (max 100)"
    ));
    // Defined up front.
    for name in [
        SLO_GOOD,
        SLO_BAD,
        "trellis_inbound_requests_total.peer.none",
        "trellis_inbound_requests_total.peer.other",
    ] {
        assert_eq!(host.metric(name), Some(0), "{name}");
    }
    let peer = "spiffe://cluster.local/ns/shop/sa/web";

    // Exactly at the objective: good.
    let (set, status) = telemetry_request(
        &mut vm,
        "/home",
        peer,
        "plan=gold, tenant=acme;ttl=5",
        Duration::from_millis(250),
    );
    assert_eq!(status, None);
    assert_eq!(
        set,
        [
            state("trellis.baggage.tenant", "acme"),
            state("trellis.decision", "allow"),
            state("trellis.rule", "default/deny-admin/default"),
        ]
    );
    assert_eq!(host.metric(SLO_GOOD), Some(1));

    // Denied, and over the objective by a nanosecond: the state is set, the request is bad.
    let (set, status) = telemetry_request(
        &mut vm,
        "/admin/users",
        peer,
        "tenant=a%20b",
        Duration::from_nanos(250_000_001),
    );
    assert_eq!(status, Some(403));
    assert_eq!(
        set,
        [
            state("trellis.baggage.tenant", "a b"),
            state("trellis.decision", "deny"),
            state("trellis.rule", "default/deny-admin/rule/admin"),
        ]
    );
    assert_eq!(host.metric(SLO_GOOD), Some(1));
    assert_eq!(host.metric(SLO_BAD), Some(1));
    assert_eq!(
        host.metric("trellis_inbound_requests_total.peer.spiffe://cluster_local/ns/shop/sa/web"),
        Some(2)
    );

    // Without telemetry the module sets no property.
    let mut plain = host.start_configured(&module(), POLICY).unwrap();
    let (set, _) = telemetry_request(
        &mut plain,
        "/home",
        peer,
        "tenant=acme",
        Duration::from_millis(1),
    );
    assert!(set.is_empty(), "{set:?}");
}

#[test]
fn peers_are_bounded_across_workers() {
    let config = r#"{"telemetry": {"peer_counters": true, "max_peers": 1}}"#;
    let host = TestHost::new();
    let module = module();
    let mut workers = [
        host.start_configured(&module, config).unwrap(),
        host.start_configured(&module, config).unwrap(),
    ];
    let a = "spiffe://cluster.local/ns/a/sa/a";
    let b = "spiffe://cluster.local/ns/b/sa/b";
    for (worker, peer) in [(0, a), (1, b), (1, a), (0, b), (1, "")] {
        telemetry_request(
            &mut workers[worker],
            "/",
            peer,
            "",
            Duration::from_millis(1),
        );
    }
    let peers: Vec<(String, i64)> = host
        .metrics()
        .into_iter()
        .filter(|(name, _)| name.starts_with("trellis_inbound_requests_total."))
        .collect();
    assert_eq!(
        peers,
        [
            ("trellis_inbound_requests_total.peer.none".to_string(), 1),
            ("trellis_inbound_requests_total.peer.other".to_string(), 2),
            (
                "trellis_inbound_requests_total.peer.spiffe://cluster_local/ns/a/sa/a".to_string(),
                2
            ),
        ]
    );
}
