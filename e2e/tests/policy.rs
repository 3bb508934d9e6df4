//! Policies end to end with a real Envoy (two workers): AuthorizationPolicy, RateLimitPolicy
//! and WasmFilter files -> `trellis serve --policy-module` -> ADS -> Envoy fetching the verified
//! modules from the control plane -> echo backends.
//!
//! - allow/deny as configured, audit counts without blocking, requests without an identity
//!   denied under deny-by-default, a rate limit holding its rate within ±10% across both
//!   workers, the counters on Envoy's `/stats/prometheus`;
//! - bad policies (invalid regex, unknown field, wrong checksum) reported in status while the
//!   listener, the other routes and the last valid version of the policy keep working.
//!
//! `TRELLIS_E2E_KEEP=1` keeps the work directory; the figures are printed (`--nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use trellis_harness::load::{KeepAlive, prometheus_value, sha256_file, wasm_module};
use trellis_harness::{
    ControlPlane, Echo, Envoy, eventually, http_get_text, private_loopback, request,
};

const NS: &str = "shop";

struct Scenario {
    _tmp: Option<tempfile::TempDir>,
    config: PathBuf,
    gateway: SocketAddr,
    _pod: Echo,
    control_plane: ControlPlane,
    envoy: Envoy,
}

/// A Gateway, one echo Service and one HTTPRoute per host (`<name>.example.com`).
fn base_yaml(ip: Ipv4Addr, port: u16, pod: &Echo, routes: &[&str]) -> String {
    let mut yaml = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: trellis}}
spec: {{controllerName: trellis.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: {NS}}}
spec:
  gatewayClassName: trellis
  addresses: [{{type: IPAddress, value: {ip}}}]
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: app, namespace: {NS}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: app-1, namespace: {NS}, labels: {{kubernetes.io/service-name: app}}}}
addressType: IPv4
ports: [{{name: http, port: {pod_port}}}]
endpoints: [{{addresses: ["{pod_ip}"]}}]
"#,
        pod_ip = pod.http.ip(),
        pod_port = pod.http.port(),
    );
    for name in routes {
        yaml.push_str(&format!(
            r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {NS}}}
spec:
  parentRefs: [{{name: web}}]
  hostnames: [{name}.example.com]
  rules:
  - name: admin
    matches: [{{path: {{type: PathPrefix, value: /admin}}}}]
    backendRefs: [{{name: app, port: 80}}]
  - backendRefs: [{{name: app, port: 80}}]
"#
        ));
    }
    yaml
}

impl Scenario {
    fn start(routes: &[&str], policies: &[(&str, String)]) -> Scenario {
        let module = wasm_module("trellis-policy-wasm").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().to_path_buf();
        if std::env::var_os("TRELLIS_E2E_KEEP").is_some() {
            eprintln!("work directory: {}", work.display());
        }
        let config = work.join("config");
        std::fs::create_dir_all(&config).unwrap();
        let (ip, port) = private_loopback();
        let pod = Echo::start(&work, Ipv4Addr::LOCALHOST, "app-1", NS).unwrap();
        std::fs::write(config.join("base.yaml"), base_yaml(ip, port, &pod, routes)).unwrap();
        for (file, yaml) in policies {
            std::fs::write(config.join(file), yaml).unwrap();
        }
        let module_arg = module.to_string_lossy().to_string();
        // The filters built for tests live beside the policy module: WasmFilters may name them.
        let module_dir = module.parent().unwrap().to_string_lossy().to_string();
        let control_plane = ControlPlane::start(
            &config,
            &work,
            &[
                "--debounce-ms",
                "50",
                "--policy-module",
                &module_arg,
                "--module-dir",
                &module_dir,
            ],
        )
        .unwrap();
        let bootstrap = control_plane
            .bootstrap(&format!("{NS}/web"), false, "policy-proxy")
            .unwrap();
        let envoy = Envoy::start(&bootstrap, &work, "envoy", 2).unwrap();
        let s = Scenario {
            _tmp: if std::env::var_os("TRELLIS_E2E_KEEP").is_some() {
                let _ = tmp.keep();
                None
            } else {
                Some(tmp)
            },
            config,
            gateway: SocketAddr::from((ip, port)),
            _pod: pod,
            control_plane,
            envoy,
        };
        eventually("the gateway to route", Duration::from_secs(30), || {
            Ok(s.status(routes[0], "GET", "/", &[])? != 0)
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", s.debug()));
        s
    }

    fn status(
        &self,
        route: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<u16> {
        let host = format!("{route}.example.com");
        Ok(request(self.gateway, method, &host, path, headers)?.status)
    }

    fn expect(&self, route: &str, method: &str, path: &str, headers: &[(&str, &str)], want: u16) {
        let got = self.status(route, method, path, headers).unwrap();
        assert_eq!(
            got,
            want,
            "{method} {route}{path} {headers:?}\n{}",
            self.debug()
        );
    }

    fn write(&self, file: &str, text: &str) {
        let tmp = self.config.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.config.join(file)).unwrap();
    }

    fn prometheus(&self) -> String {
        http_get_text(self.envoy.admin, "/stats/prometheus").unwrap()
    }

    /// The Accepted and ResolvedRefs conditions of a policy's first ancestor.
    fn conditions(&self, kind: &str, name: &str) -> Option<(serde_json::Value, serde_json::Value)> {
        let status = self
            .control_plane
            .object_status(kind, &format!("{NS}/{name}"))
            .ok()??;
        let conditions = status["status"]["ancestors"][0]["conditions"]
            .as_array()?
            .clone();
        let find = |t: &str| conditions.iter().find(|c| c["type"] == t).cloned();
        Some((find("Accepted")?, find("ResolvedRefs")?))
    }

    fn lds_rejected(&self) -> u64 {
        self.envoy
            .stat("listener_manager.lds.update_rejected")
            .unwrap()
            .unwrap_or(0)
    }

    fn debug(&self) -> String {
        let tail = |t: String| {
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        format!(
            "--- trellis log ---\n{}\n--- envoy log ---\n{}",
            tail(self.control_plane.log()),
            tail(self.envoy.log())
        )
    }
}

fn target(kind: &str, name: &str) -> String {
    format!("  - {{group: gateway.networking.k8s.io, kind: {kind}, name: {name}}}\n")
}

fn authorization(name: &str, target: &str, body: &str) -> String {
    format!(
        "apiVersion: policy.trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  targetRefs:\n{target}{body}"
    )
}

/// A request (method, path, headers) and the status it must get.
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    u16,
);

const RATE: u32 = 50;
const BURST: u32 = 5;

#[test]
fn policies_allow_deny_audit_and_rate_limit_through_a_real_envoy() {
    let identity = authorization(
        "identity",
        &target("HTTPRoute", "secure"),
        r#"  defaultAction: Deny
  rules:
  - {name: no-admin, action: Deny, paths: [{type: Prefix, value: /admin}]}
  - {name: public, action: Allow, methods: [GET], paths: [{type: Prefix, value: /public/}]}
  - {name: internal-ids, action: Deny, paths: [{type: RegularExpression, value: "/items/[0-9]+/raw"}]}
  - {name: mesh-peers, action: Allow, principals: ["spiffe://cluster.local/ns/shop/*"]}
  - {name: api-key, action: Allow, headers: [{name: x-api-key, values: [k1, k2]}]}
"#,
    );
    let audit = authorization(
        "audit-writes",
        &target("HTTPRoute", "audited"),
        r#"  mode: Audit
  defaultAction: Deny
  rules:
  - {name: reads, action: Allow, methods: [GET, HEAD]}
"#,
    );
    let limit = format!(
        "apiVersion: policy.trellis.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{name: limited, namespace: {NS}}}\nspec:\n  targetRefs:\n{}  limits:\n  - {{name: per-client, key: {{type: ClientIP}}, requests: {RATE}, per: Second, burst: {BURST}}}\n",
        target("HTTPRoute", "limited")
    );
    let s = Scenario::start(
        &["open", "secure", "audited", "limited"],
        &[
            ("identity.yaml", identity),
            ("audit.yaml", audit),
            ("limit.yaml", limit),
        ],
    );
    eventually("the policy filter", Duration::from_secs(30), || {
        Ok(s.status("secure", "GET", "/private", &[])? == 403)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.debug()));

    let before = s.prometheus();
    // Allow and deny as configured.
    let mut denied = 0;
    let mut allowed = 0;
    let cases: &[Case] = &[
        ("GET", "/public/a", &[], 200),
        ("POST", "/public/a", &[], 403),
        ("GET", "/private", &[], 403), // no identity: deny by default
        ("GET", "/private", &[("x-api-key", "k2")], 200),
        ("GET", "/private", &[("x-api-key", "nope")], 403),
        ("GET", "/admin/users", &[("x-api-key", "k1")], 403),
        ("GET", "//admin/users", &[("x-api-key", "k1")], 403), // merged slashes
        ("GET", "/public/../admin", &[], 403),                 // normalized path
        ("GET", "/items/12/raw", &[("x-api-key", "k1")], 403),
        ("GET", "/items/12", &[("x-api-key", "k1")], 200),
    ];
    for (method, path, headers, want) in cases {
        s.expect("secure", method, path, headers, *want);
        if *want == 200 {
            allowed += 1;
        } else {
            denied += 1;
        }
    }
    // Other routes are not in the policy's scope.
    s.expect("open", "GET", "/private", &[], 200);
    s.expect("open", "GET", "/admin", &[], 200);

    // Audit: counted, not blocked.
    for _ in 0..3 {
        s.expect("audited", "DELETE", "/items/1", &[], 200);
    }
    s.expect("audited", "GET", "/items/1", &[], 200);

    let prom = s.prometheus();
    // Counted since `before` (the wait for the filter sent requests too).
    let value = |name: &str, labels: &[(&str, &str)]| {
        prometheus_value(&prom, name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in /stats/prometheus:\n{prom}"))
            - prometheus_value(&before, name, labels).unwrap_or(0.0)
    };
    let identity = "shop/identity";
    let denied_metric: f64 = ["no-admin", "(default)", "internal-ids"]
        .iter()
        .map(|rule| {
            value(
                "trellis_policy_denied_total",
                &[("policy", identity), ("rule", rule)],
            )
        })
        .sum();
    let allowed_metric: f64 = ["public", "api-key"]
        .iter()
        .map(|rule| {
            value(
                "trellis_policy_allowed_total",
                &[("policy", identity), ("rule", rule)],
            )
        })
        .sum();
    let audit_denied = value(
        "trellis_policy_audit_denied_total",
        &[("policy", "shop/audit-writes"), ("rule", "(default)")],
    );
    println!(
        "authorization: {allowed} allowed, {denied} denied by shop/identity (metrics: {allowed_metric} allowed, {denied_metric} denied); audit: 3 DELETEs answered 200, audit_denied {audit_denied}"
    );
    assert_eq!(allowed_metric, f64::from(allowed), "{prom}");
    assert_eq!(denied_metric, f64::from(denied), "{prom}");
    assert_eq!(audit_denied, 3.0, "{prom}");
    for line in prom.lines().filter(|l| {
        l.starts_with("trellis_policy_")
            && (l.contains("shop/identity") || l.contains("audit-writes"))
    }) {
        println!("  {line}");
    }

    // Rate limit: RATE/s with BURST, one bucket per client, shared by both Envoy workers.
    // Four connections (spread over the workers by the kernel) send as fast as they can.
    let window = Duration::from_secs(4);
    let start = Instant::now();
    let gateway = s.gateway;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = KeepAlive::new(gateway, "limited.example.com", "/", &[]);
                let (mut ok, mut limited, mut other) = (0u64, 0u64, 0u64);
                while start.elapsed() < window {
                    match client.send() {
                        Ok(200) => ok += 1,
                        Ok(429) => limited += 1,
                        _ => other += 1,
                    }
                }
                (ok, limited, other)
            })
        })
        .collect();
    let (mut ok, mut limited, mut other) = (0, 0, 0);
    for t in threads {
        let (a, b, c) = t.join().unwrap();
        ok += a;
        limited += b;
        other += c;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let measured = (ok as f64 - f64::from(BURST)) / elapsed;
    let workers: Vec<String> = http_get_text(s.envoy.admin, "/stats?filter=downstream_cx_total")
        .unwrap()
        .lines()
        .filter(|l| l.contains("worker_"))
        .map(str::to_string)
        .collect();
    println!(
        "rate limit: {ok} allowed, {limited} limited, {other} other in {elapsed:.2} s -> {measured:.1} req/s after the burst of {BURST} (configured {RATE}/s); per worker: {workers:?}"
    );
    assert_eq!(other, 0);
    assert!(limited > ok, "the load must exceed the limit");
    let error = (measured - f64::from(RATE)).abs() / f64::from(RATE);
    assert!(
        error <= 0.10,
        "measured {measured:.1} req/s, configured {RATE}/s"
    );
    let prom = s.prometheus();
    let limited_metric = prometheus_value(
        &prom,
        "trellis_policy_rate_limited_total",
        &[("limit", "shop/limited/per-client")],
    )
    .unwrap();
    println!(
        "  trellis_policy_rate_limited_total{{limit=\"shop/limited/per-client\"}} {limited_metric}"
    );
    assert_eq!(limited_metric, limited as f64);
    assert_eq!(s.lds_rejected(), 0);
}

#[test]
fn bad_policies_are_reported_and_never_take_down_the_listener() {
    let deny_admin = |regex: &str| {
        authorization(
            "no-admin",
            &target("HTTPRoute", "secure"),
            &format!(
                "  defaultAction: Allow\n  rules:\n  - {{name: admin, action: Deny, paths: [{{type: Prefix, value: /admin}}]}}\n  - {{name: raw, action: Deny, paths: [{{type: RegularExpression, value: \"{regex}\"}}]}}\n"
            ),
        )
    };
    let stamp = wasm_module("header-stamp-wasm").unwrap();
    let stamp_sha = sha256_file(&stamp).unwrap();
    let wasm_filter = |sha: &str| {
        format!(
            "apiVersion: policy.trellis.dev/v1alpha1\nkind: WasmFilter\nmetadata: {{name: stamp, namespace: {NS}}}\nspec:\n  targetRefs:\n{}  module: {{path: \"{}\", sha256: \"{sha}\"}}\n  config: {{header: x-stamped-by, value: trellis}}\n",
            target("HTTPRoute", "stamped"),
            stamp.display()
        )
    };
    let s = Scenario::start(
        &["open", "secure", "stamped"],
        &[
            ("no-admin.yaml", deny_admin("/items/[0-9]+/raw")),
            ("stamp.yaml", wasm_filter(&stamp_sha)),
        ],
    );
    let stamped = |s: &Scenario, host: &str| {
        request(s.gateway, "GET", host, "/", &[])
            .ok()
            .and_then(|r| r.header("x-stamped-by").map(str::to_string))
    };
    eventually("the policies", Duration::from_secs(30), || {
        Ok(s.status("secure", "GET", "/admin", &[])? == 403
            && stamped(&s, "stamped.example.com").as_deref() == Some("trellis"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.debug()));
    // The WasmFilter runs only on the routes of its HTTPRoute.
    assert_eq!(stamped(&s, "open.example.com"), None);
    s.expect("secure", "GET", "/items/1/raw", &[], 403);
    let accepted = |kind: &str, name: &str| s.conditions(kind, name).map(|(a, _)| a);
    assert_eq!(
        accepted("AuthorizationPolicy", "no-admin").unwrap()["status"],
        "True"
    );
    assert_eq!(accepted("WasmFilter", "stamp").unwrap()["status"], "True");

    let healthy = |s: &Scenario| {
        s.expect("open", "GET", "/", &[], 200);
        s.expect("secure", "GET", "/", &[], 200);
        assert_eq!(s.lds_rejected(), 0, "Envoy rejected a listener update");
    };

    // 1. An invalid regex: reported; the last valid version stays in force.
    s.write("no-admin.yaml", &deny_admin("/items/[0-9+/raw"));
    let mut seen = None;
    eventually("Invalid for the regex", Duration::from_secs(10), || {
        seen = s.conditions("AuthorizationPolicy", "no-admin");
        Ok(seen.as_ref().is_some_and(|(a, _)| a["reason"] == "Invalid"))
    })
    .unwrap();
    let (a, _) = seen.clone().unwrap();
    println!(
        "invalid regex -> Accepted={} {}: {}",
        a["status"], a["reason"], a["message"]
    );
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .contains("spec.rules[1].paths[0].value: is not a valid regular expression"),
        "{a}"
    );
    assert!(
        a["message"].as_str().unwrap().contains("stays in force"),
        "{a}"
    );
    s.expect("secure", "GET", "/admin", &[], 403);
    s.expect("secure", "GET", "/items/1/raw", &[], 403);
    healthy(&s);

    // 2. An unknown field in a new policy: reported, not applied.
    s.write(
        "typo.yaml",
        &authorization(
            "typo",
            &target("HTTPRoute", "open"),
            "  defaultAction: Deny\n  rules:\n  - {name: all, action: Allow, path: [{type: Prefix, value: /}]}\n",
        ),
    );
    eventually(
        "Invalid for the unknown field",
        Duration::from_secs(10),
        || {
            seen = s.conditions("AuthorizationPolicy", "typo");
            Ok(seen.is_some())
        },
    )
    .unwrap();
    let (a, _) = seen.clone().unwrap();
    println!(
        "unknown field -> Accepted={} {}: {}",
        a["status"], a["reason"], a["message"]
    );
    assert_eq!(a["status"], "False");
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.rules[0].path: unknown field `path`"),
        "{a}"
    );
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .ends_with("the policy is not applied"),
        "{a}"
    );
    healthy(&s);

    // 3. A wrong checksum on the WasmFilter: reported; the verified module stays in force.
    s.write("stamp.yaml", &wasm_filter(&"0".repeat(64)));
    eventually("ChecksumMismatch", Duration::from_secs(10), || {
        seen = s.conditions("WasmFilter", "stamp");
        Ok(seen
            .as_ref()
            .is_some_and(|(_, r)| r["reason"] == "ChecksumMismatch"))
    })
    .unwrap();
    let (a, r) = seen.clone().unwrap();
    println!(
        "wrong checksum -> Accepted={} {}: {}",
        a["status"], a["reason"], a["message"]
    );
    println!(
        "                  ResolvedRefs={} {}",
        r["status"], r["reason"]
    );
    assert_eq!(r["status"], "False");
    assert!(
        a["message"].as_str().unwrap().contains("stays in force"),
        "{a}"
    );
    assert_eq!(
        stamped(&s, "stamped.example.com").as_deref(),
        Some("trellis")
    );
    healthy(&s);

    // 4. A wrong checksum on a new WasmFilter: not applied at all.
    s.write(
        "stamp2.yaml",
        &wasm_filter(&"1".repeat(64))
            .replace("name: stamp,", "name: stamp-open,")
            .replace("name: stamped}", "name: open}"),
    );
    eventually(
        "ChecksumMismatch on the new filter",
        Duration::from_secs(10),
        || {
            seen = s.conditions("WasmFilter", "stamp-open");
            Ok(seen.is_some())
        },
    )
    .unwrap();
    let (a, r) = seen.unwrap();
    println!(
        "wrong checksum (new) -> Accepted={} {}: {}; ResolvedRefs={} {}",
        a["status"], a["reason"], a["message"], r["status"], r["reason"]
    );
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .ends_with("the policy is not applied"),
        "{a}"
    );
    assert_eq!(stamped(&s, "open.example.com"), None);
    healthy(&s);

    // Fixing the regex applies the new version.
    s.write("no-admin.yaml", &deny_admin("/items/[0-9]+/cooked"));
    eventually("the fixed policy", Duration::from_secs(10), || {
        Ok(s.status("secure", "GET", "/items/1/raw", &[])? == 200)
    })
    .unwrap();
    s.expect("secure", "GET", "/items/1/cooked", &[], 403);
    assert_eq!(
        accepted("AuthorizationPolicy", "no-admin").unwrap()["status"],
        "True"
    );
    healthy(&s);
}
