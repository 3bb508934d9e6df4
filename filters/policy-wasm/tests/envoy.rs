//! The policy module in a real Envoy (1.40, V8, two workers), with a static configuration and
//! no control plane: deny, allow and audit answers, a rate limit that holds across both
//! workers, the counters on `/stats/prometheus` with the `stats_tags` the control plane must put
//! in the bootstrap, Envoy refusing a bad plugin configuration, and telemetry (the decision and
//! baggage as filter state in an access log, latency objectives measured with
//! `request.duration` in the log phase, peer counters).
//!
//! Envoy: `ENVOY_BIN`, else `<workspace>/.venv/bin/envoy` (`./dev setup` installs it). The
//! module is built with `cargo build -p trellis-policy-wasm --target wasm32-wasip1 --profile
//! wasm` (or taken from `TRELLIS_WASM_TRELLIS_POLICY_WASM`). Set `TRELLIS_ENVOY_KEEP=1` to keep
//! the work directory (config and Envoy's log).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trellis_policy::metrics::STATS_TAGS;
use trellis_policy::telemetry::{DECISION_STATE, RULE_STATE, baggage_state};

fn envoy_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/envoy");
    assert!(
        venv.exists(),
        "no Envoy: set ENVOY_BIN or run ./dev setup (installs .venv/bin/envoy)"
    );
    venv
}

fn module_path() -> PathBuf {
    trellis_wasm_host::build_module("trellis-policy-wasm").unwrap()
}

const WEB_ROUTE: &str = "httproute/default/web/rule/0/match/0";
const API_ROUTE: &str = "httproute/default/api/rule/0/match/0";
const RATE: f64 = 50.0;
const BURST: f64 = 5.0;

fn plugin_config() -> String {
    serde_json::json!({
        "policies": [
            {
                "name": "default/deny-admin",
                "scope": {"route_prefixes": ["httproute/default/web/"]},
                "default_action": "allow",
                "rules": [
                    {"name": "admin-health", "action": "allow", "paths": [{"exact": "/admin/health"}]},
                    {"name": "admin", "action": "deny", "paths": [{"prefix": "/admin"}]}
                ]
            },
            {
                "name": "default/audit-deletes",
                "mode": "audit",
                "default_action": "allow",
                "rules": [{"name": "deletes", "action": "deny", "methods": ["DELETE"]}]
            }
        ],
        "rate_limits": [
            {
                "name": "api-per-client",
                "scope": {"route_prefixes": ["httproute/default/api/"]},
                "key": "client_ip",
                "requests": RATE as u32,
                "per": "second",
                "burst": BURST as u32
            }
        ]
    })
    .to_string()
}

/// The bootstrap: admin and listener on ephemeral ports, the control plane's `stats_tags`, the
/// Wasm filter, and two direct-response routes named like the translator names routes.
fn bootstrap(module: &Path, plugin_config: &str) -> String {
    let stats_tags: Vec<serde_json::Value> = STATS_TAGS
        .iter()
        .map(|(name, regex)| serde_json::json!({"tag_name": name, "regex": regex}))
        .collect();
    let route = |name: &str, prefix: &str| {
        serde_json::json!({
            "name": name,
            "match": {"prefix": prefix},
            "direct_response": {"status": 200, "body": {"inline_string": "ok"}}
        })
    };
    serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "stats_config": {"stats_tags": stats_tags},
        "static_resources": {"listeners": [{
            "name": "main",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "ingress",
                    "normalize_path": true,
                    "merge_slashes": true,
                    "route_config": {"name": "local", "virtual_hosts": [{
                        "name": "all", "domains": ["*"],
                        "routes": [route(API_ROUTE, "/api"), route(WEB_ROUTE, "/")]
                    }]},
                    "http_filters": [
                        {
                            "name": "envoy.filters.http.wasm",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                                "config": {
                                    "name": "trellis-policy",
                                    "vm_config": {
                                        "runtime": "envoy.wasm.runtime.v8",
                                        "code": {"local": {"filename": module}}
                                    },
                                    "configuration": {
                                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                                        "value": plugin_config
                                    }
                                }
                            }
                        },
                        {
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                        }
                    ]
                }
            }]}]
        }]}
    })
    .to_string()
}

/// A running Envoy, stopped (killed and reaped) when dropped.
struct Envoy {
    child: Child,
    admin: String,
    listener: u16,
    dir: tempfile::TempDir,
}

impl Envoy {
    fn start(config: &str) -> Envoy {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("envoy.json");
        std::fs::write(&config_path, config).unwrap();
        let admin_path = dir.path().join("admin-address");
        let log = std::fs::File::create(dir.path().join("envoy.log")).unwrap();
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config_path)
            .args(["--disable-hot-restart", "--concurrency", "2", "-l", "info"])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut envoy = Envoy {
            child,
            admin: String::new(),
            listener: 0,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = envoy.child.try_wait().unwrap() {
                panic!("Envoy exited ({status}):\n{}", envoy.log());
            }
            if let Ok(admin) = std::fs::read_to_string(&admin_path)
                && !admin.trim().is_empty()
                && let Some((200, ready)) = try_get(admin.trim(), "/ready")
                && ready.trim() == "LIVE"
            {
                envoy.admin = admin.trim().to_string();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!envoy.admin.is_empty(), "Envoy not ready:\n{}", envoy.log());
        let listeners: serde_json::Value =
            serde_json::from_str(&envoy.admin_get("/listeners?format=json")).unwrap();
        envoy.listener =
            listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
                .as_u64()
                .unwrap() as u16;
        envoy
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    fn admin_get(&self, path: &str) -> String {
        let (status, body) = try_get(&self.admin, path).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    fn connect(&self) -> Client {
        Client::connect(&format!("127.0.0.1:{}", self.listener))
    }

    /// A counter from `/stats` (0 if absent).
    fn stat(&self, name: &str) -> u64 {
        let stats = self.admin_get(&format!("/stats?filter=^{}$", name.replace('.', "\\.")));
        stats
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .map_or(0, |value| value.trim().parse().unwrap())
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("TRELLIS_ENVOY_KEEP").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!("kept {}", kept.keep().display());
        }
    }
}

fn try_get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut client = Client::try_connect(address)?;
    let response = client.try_send("GET", path)?;
    Some((response.status, response.body))
}

/// A minimal HTTP/1.1 keep-alive client: enough for Envoy's admin and listener.
struct Client {
    reader: BufReader<TcpStream>,
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    fn try_connect(address: &str) -> Option<Client> {
        let stream = TcpStream::connect(address).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream.set_nodelay(true).ok()?;
        Some(Client {
            reader: BufReader::new(stream),
        })
    }

    fn connect(address: &str) -> Client {
        Client::try_connect(address).unwrap()
    }

    fn send(&mut self, method: &str, path: &str) -> Response {
        self.try_send(method, path).unwrap()
    }

    fn try_send(&mut self, method: &str, path: &str) -> Option<Response> {
        self.try_send_with(method, path, &[])
    }

    fn send_with(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        self.try_send_with(method, path, headers).unwrap()
    }

    fn try_send_with(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<Response> {
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: web.example\r\n{extra}content-length: 0\r\n\r\n"
        );
        self.reader.get_mut().write_all(request.as_bytes()).ok()?;
        let mut line = String::new();
        self.reader.read_line(&mut line).ok()?;
        let status = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).ok()?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).ok()?;
                let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).ok()?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            body.resize(length, 0);
            self.reader.read_exact(&mut body).ok()?;
        }
        Some(Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A Prometheus sample line for `metric` with exactly these labels; its value.
fn prometheus_value(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<u64> {
    let rendered: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}=\"{value}\""))
        .collect();
    let prefix = format!("{metric}{{{}}} ", rendered.join(","));
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.trim().parse().unwrap())
}

#[test]
fn the_policy_filter_in_envoy_denies_allows_audits_rate_limits_and_reports() {
    let module = module_path();
    let envoy = Envoy::start(&bootstrap(&module, &plugin_config()));
    let mut client = envoy.connect();

    // Authorization on the web route.
    let denied = client.send("GET", "/admin/users");
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(denied.body, "denied by policy default/deny-admin");
    let health = client.send("GET", "/admin/health");
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    let home = client.send("GET", "/home");
    assert_eq!((home.status, home.body.as_str()), (200, "ok"));
    // Envoy normalizes the path before the filter sees it: no way around the rule.
    let sneaky = client.send("GET", "//admin/./users");
    assert_eq!(sneaky.status, 403, "{sneaky:?}");
    // Audit: would deny, lets through.
    let delete = client.send("DELETE", "/home");
    assert_eq!((delete.status, delete.body.as_str()), (200, "ok"));

    // Rate limit on the API route: one bucket for 127.0.0.1 across both workers. Many
    // connections, so the kernel spreads them over the two workers' sockets.
    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(Mutex::new((0u64, 0u64, Vec::<Option<String>>::new())));
    let duration = Duration::from_secs(3);
    let started = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (stop, results) = (Arc::clone(&stop), Arc::clone(&results));
            let address = format!("127.0.0.1:{}", envoy.listener);
            std::thread::spawn(move || {
                let mut connections: Vec<Client> =
                    (0..4).map(|_| Client::connect(&address)).collect();
                let (mut ok, mut limited, mut retry_after) = (0, 0, Vec::new());
                let mut turn = 0;
                while !stop.load(Ordering::Relaxed) {
                    turn += 1;
                    let client = &mut connections[turn % 4];
                    let response = client.send("GET", "/api/items");
                    match response.status {
                        200 => ok += 1,
                        429 => {
                            limited += 1;
                            if retry_after.len() < 5 {
                                retry_after
                                    .push(response.header("retry-after").map(str::to_string));
                            }
                        }
                        other => panic!("unexpected status {other}: {response:?}"),
                    }
                }
                let mut results = results.lock().unwrap();
                results.0 += ok;
                results.1 += limited;
                results.2.extend(retry_after);
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (ok, limited, retry_after) = results.lock().unwrap().clone();
    let expected = BURST + RATE * elapsed;
    eprintln!(
        "rate limit: {ok} allowed, {limited} limited in {elapsed:.2} s; expected {expected:.0} allowed ({RATE}/s + burst {BURST})"
    );
    assert!(
        (ok as f64 - expected).abs() <= expected * 0.10,
        "{ok} allowed, expected {expected:.0} ±10%"
    );
    assert!(
        limited > ok,
        "the load must exceed the limit: {limited} limited"
    );
    assert!(
        retry_after.iter().all(|r| r.as_deref() == Some("1")),
        "{retry_after:?}"
    );
    // Listener stats are named after the configured address (port 0).
    let listener_stat = |worker: u32| {
        envoy.stat(&format!(
            "listener.127.0.0.1_0.worker_{worker}.downstream_cx_total"
        ))
    };
    let (worker0, worker1) = (listener_stat(0), listener_stat(1));
    eprintln!("connections per worker: {worker0} and {worker1}");
    assert!(
        worker0 > 0 && worker1 > 0,
        "both workers served: {worker0}, {worker1}"
    );

    // Counters, as Prometheus sees them.
    let prometheus = envoy.admin_get("/stats/prometheus");
    for line in prometheus
        .lines()
        .filter(|l| l.contains(" trellis_policy_") || l.starts_with("trellis_policy_"))
    {
        eprintln!("{line}");
    }
    let value = |metric: &str, labels: &[(&str, &str)]| {
        prometheus_value(&prometheus, metric, labels).unwrap_or_else(|| {
            let ours: Vec<&str> = prometheus
                .lines()
                .filter(|l| l.contains("trellis_"))
                .collect();
            panic!(
                "no {metric} {labels:?} in /stats/prometheus:\n{}",
                ours.join("\n")
            )
        })
    };
    let deny_admin = ("policy", "default/deny-admin");
    assert_eq!(
        value(
            "trellis_policy_denied_total",
            &[deny_admin, ("rule", "admin")]
        ),
        2
    );
    assert_eq!(
        value(
            "trellis_policy_allowed_total",
            &[deny_admin, ("rule", "admin-health")]
        ),
        1
    );
    assert_eq!(
        value(
            "trellis_policy_allowed_total",
            &[deny_admin, ("rule", "(default)")]
        ),
        2
    );
    assert_eq!(
        value(
            "trellis_policy_audit_denied_total",
            &[("policy", "default/audit-deletes"), ("rule", "deletes")]
        ),
        1
    );
    assert_eq!(
        value(
            "trellis_policy_rate_limited_total",
            &[("limit", "api-per-client")]
        ),
        limited
    );
    assert_eq!(
        value(
            "trellis_policy_rate_limit_errors_total",
            &[("limit", "api-per-client")]
        ),
        0
    );
    assert!(
        prometheus.contains("# TYPE trellis_policy_denied_total counter"),
        "one metric family per counter"
    );
}

#[test]
fn envoy_refuses_a_bad_plugin_configuration() {
    let module = module_path();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("envoy.json");
    let bad = r#"{"policies": [{"name": "p", "default_action": "allow",
        "rules": [{"name": "r", "action": "deny", "paths": [{"regex": "(unclosed"}]}]}]}"#;
    std::fs::write(&config, bootstrap(&module, bad)).unwrap();
    let output = Command::new(envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "Envoy accepted it:\n{log}");
    assert!(
        log.contains("trellis-policy: configuration rejected: invalid policy filter configuration: policies[0].rules[0].paths[0].regex"),
        "{log}"
    );

    std::fs::write(&config, bootstrap(&module, &plugin_config())).unwrap();
    let output = Command::new(envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The bootstrap of [`bootstrap`] with a file access log printing the filter state telemetry
/// writes, and a fault filter before the policy filter that delays requests asking for it
/// (`x-envoy-fault-delay-request: <ms>`).
fn telemetry_bootstrap(module: &Path, plugin_config: &str, access_log: &Path) -> String {
    let mut config: serde_json::Value =
        serde_json::from_str(&bootstrap(module, plugin_config)).unwrap();
    let hcm = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let format = format!(
        "%RESPONSE_CODE% decision=%FILTER_STATE({DECISION_STATE}:PLAIN)% \
         rule=%FILTER_STATE({RULE_STATE}:PLAIN)% tenant=%FILTER_STATE({}:PLAIN)%\n",
        baggage_state("tenant")
    );
    hcm["access_log"] = serde_json::json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": access_log,
            "log_format": {"text_format_source": {"inline_string": format}}
        }
    }]);
    let filters = hcm["http_filters"].as_array_mut().unwrap();
    filters.insert(
        0,
        serde_json::json!({
            "name": "envoy.filters.http.fault",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                "delay": {"header_delay": {}, "percentage": {"numerator": 100}}
            }
        }),
    );
    config.to_string()
}

#[test]
fn telemetry_in_envoy_sets_filter_state_and_counts_objectives_and_peers() {
    let module = module_path();
    let plugin_config = serde_json::json!({
        "policies": [{
            "name": "shop/admins-only",
            "default_action": "allow",
            "rules": [{"name": "admins", "action": "deny", "paths": [{"prefix": "/admin"}]}]
        }],
        "telemetry": {
            "span_tags": true,
            "baggage_tags": ["tenant"],
            "latency_objectives": [{"scope": {"routes": [WEB_ROUTE]}, "objective_ms": 100}],
            "peer_counters": true
        }
    })
    .to_string();
    let logs = tempfile::tempdir().unwrap();
    let access_log = logs.path().join("access.log");
    let envoy = Envoy::start(&telemetry_bootstrap(&module, &plugin_config, &access_log));
    let mut client = envoy.connect();

    let home = client.send_with("GET", "/home", &[("baggage", "tenant=acme%20inc;p=1, x=y")]);
    assert_eq!(home.status, 200, "{home:?}");
    let admin = client.send_with("GET", "/admin", &[("baggage", "tenant=evil corp")]);
    assert_eq!(admin.status, 403, "{admin:?}");
    // 300 ms in the fault filter, before ours: the objective (100 ms) is missed.
    let slow = client.send_with("GET", "/home", &[("x-envoy-fault-delay-request", "300")]);
    assert_eq!(slow.status, 200, "{slow:?}");

    // The access log is flushed every second or so.
    let expected = [
        "200 decision=allow rule=shop/admins-only/default tenant=acme inc",
        "403 decision=deny rule=shop/admins-only/rule/admins tenant=-",
        "200 decision=allow rule=shop/admins-only/default tenant=-",
    ];
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        lines = std::fs::read_to_string(&access_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if lines.len() >= expected.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("access log:\n{}", lines.join("\n"));
    assert_eq!(lines, expected, "envoy log:\n{}", envoy.log());

    let prometheus = envoy.admin_get("/stats/prometheus");
    for line in prometheus
        .lines()
        .filter(|l| l.contains("trellis_slo_") || l.contains("trellis_inbound_"))
    {
        eprintln!("{line}");
    }
    let value =
        |metric: &str, labels: &[(&str, &str)]| prometheus_value(&prometheus, metric, labels);
    let route = ("route", WEB_ROUTE);
    assert_eq!(
        value("trellis_slo_requests_total", &[route, ("class", "good")]),
        Some(2),
        "{prometheus}"
    );
    assert_eq!(
        value("trellis_slo_requests_total", &[route, ("class", "bad")]),
        Some(1)
    );
    // No client certificates on this listener.
    assert_eq!(
        value("trellis_inbound_requests_total", &[("peer", "none")]),
        Some(3)
    );
    assert_eq!(
        value("trellis_inbound_requests_total", &[("peer", "other")]),
        Some(0)
    );
}
