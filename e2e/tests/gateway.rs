//! End to end with a real Envoy: Gateway API files -> `trellis serve` -> ADS (SotW and Delta)
//! -> Envoy -> echo backends, all on loopback.
//!
//! Each test gets its own loopback address for the Gateway, its own temporary config
//! directory, control plane, Envoy and echo pods, all stopped when the test ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use trellis_harness::scenario::{
    self, BACKENDS, NAMESPACE, ROUTES, backend_yaml, gateway_yaml, move_route,
};
use trellis_harness::{ControlPlane, Echo, Envoy, eventually, private_loopback, request};

struct Scenario {
    _tmp: Option<tempfile::TempDir>,
    work: PathBuf,
    config: PathBuf,
    gateway: SocketAddr,
    _pods: Vec<Echo>,
    control_plane: ControlPlane,
    envoy: Envoy,
}

impl Scenario {
    fn start(delta: bool) -> Scenario {
        Self::start_with(delta, |b| b)
    }

    /// Starts the scenario with the Envoy bootstrap passed through `edit`.
    fn start_with(delta: bool, edit: impl Fn(String) -> String) -> Scenario {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().to_path_buf();
        if std::env::var_os("TRELLIS_E2E_KEEP").is_some() {
            eprintln!("work directory: {}", work.display());
        }
        let config = work.join("config");
        std::fs::create_dir_all(&config).unwrap();
        let (ip, port) = private_loopback();
        let mut pods = Vec::new();
        let mut yaml = gateway_yaml(ip, port);
        for (service, count) in BACKENDS {
            let start = pods.len();
            for i in 0..*count {
                let pod = format!("{service}-5d8f7c9b4d-{}", ["x7k2p", "q9w3e", "m4n8b"][i]);
                pods.push(Echo::start(&work, Ipv4Addr::LOCALHOST, &pod, NAMESPACE).unwrap());
            }
            let refs: Vec<&Echo> = pods[start..].iter().collect();
            yaml.push_str("---\n");
            yaml.push_str(&backend_yaml(service, &refs));
        }
        std::fs::write(config.join("gateway.yaml"), yaml).unwrap();
        std::fs::write(config.join("routes.yaml"), ROUTES).unwrap();
        std::fs::write(config.join("move.yaml"), move_route("v1")).unwrap();
        let control_plane = ControlPlane::start(&config, &work, &["--debounce-ms", "50"]).unwrap();
        let bootstrap = control_plane
            .bootstrap(&format!("{NAMESPACE}/web"), delta, "e2e-proxy")
            .unwrap();
        let envoy = Envoy::start(&edit(bootstrap), &work, "envoy", 2).unwrap();
        let scenario = Scenario {
            // TRELLIS_E2E_KEEP keeps the work directory (logs, config, status) for inspection.
            _tmp: if std::env::var_os("TRELLIS_E2E_KEEP").is_some() {
                let _ = tmp.keep();
                None
            } else {
                Some(tmp)
            },
            work,
            config,
            gateway: SocketAddr::from((ip, port)),
            _pods: pods,
            control_plane,
            envoy,
        };
        eventually("the gateway to route", Duration::from_secs(20), || {
            Ok(scenario.get("other.example.com", "/")?.status == 200)
        })
        .unwrap();
        scenario
    }

    fn get(&self, host: &str, path: &str) -> anyhow::Result<trellis_harness::Reply> {
        request(self.gateway, "GET", host, path, &[])
    }

    /// Which backend (Deployment name) answered: the pod name without its last two segments.
    fn backend(&self, method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
        scenario::backend(self.gateway, method, host, path, headers)
    }

    fn write(&self, file: &str, text: &str) {
        // Write and rename, as editors and `kubectl`-style tools do, so the watcher never reads
        // half a file.
        let tmp = self.config.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.config.join(file)).unwrap();
    }

    fn debug(&self) -> String {
        format!(
            "--- trellis log ---\n{}\n--- envoy log ---\n{}",
            tail(&self.control_plane.log(), 40),
            tail(&self.envoy.log(), 40)
        )
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A constant stream of requests to each (host, path) target from its own thread, counting
/// failures (anything but 200) until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(gateway: SocketAddr, targets: &[(&str, &str)]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = targets
            .iter()
            .map(|(host, path)| {
                let (host, path) = (host.to_string(), path.to_string());
                let (stop, sent, failed, failures) =
                    (stop.clone(), sent.clone(), failed.clone(), failures.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        sent.fetch_add(1, Ordering::Relaxed);
                        match request(gateway, "GET", &host, &path, &[]) {
                            Ok(r) if r.status == 200 => {}
                            Ok(r) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                let at = std::time::SystemTime::now()
                                    .duration_since(std::time::UNIX_EPOCH)
                                    .unwrap_or_default();
                                failures.lock().unwrap().push(format!(
                                    "{host}{path}: {} {} (at {:.3})",
                                    r.status,
                                    r.body,
                                    at.as_secs_f64()
                                ));
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                failures.lock().unwrap().push(format!("{host}{path}: {e}"));
                            }
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            failed,
            failures,
            threads,
        }
    }

    /// Stops the load and returns (sent, failed, first failures).
    fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let failures = self
            .failures
            .lock()
            .unwrap()
            .iter()
            .take(5)
            .cloned()
            .collect();
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            failures,
        )
    }
}

fn routes_by_host_path_header_query_and_method_in_precedence_order(delta: bool) {
    let s = Scenario::start(delta);
    scenario::assert_routes_as_written(s.gateway);
}

#[test]
fn sotw_routes_by_host_path_header_query_and_method_in_precedence_order() {
    routes_by_host_path_header_query_and_method_in_precedence_order(false);
}

#[test]
fn delta_routes_by_host_path_header_query_and_method_in_precedence_order() {
    routes_by_host_path_header_query_and_method_in_precedence_order(true);
}

fn weights_80_20_hold_over_500_requests(delta: bool) {
    let s = Scenario::start(delta);
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..500 {
        *counts
            .entry(s.backend("GET", "weights.example.com", "/", &[]))
            .or_default() += 1;
    }
    let share = f64::from(counts.get("w80").copied().unwrap_or(0)) / 500.0;
    println!(
        "weights 80/20 over 500 requests ({}): {counts:?}, w80 share {share:.3}",
        if delta { "delta" } else { "sotw" }
    );
    assert_eq!(counts.values().sum::<u32>(), 500);
    assert!(
        (share - 0.8).abs() <= 0.05,
        "w80 got {share:.3} of requests: {counts:?}"
    );
}

#[test]
fn sotw_weights_80_20_hold_over_500_requests() {
    weights_80_20_hold_over_500_requests(false);
}

#[test]
fn delta_weights_80_20_hold_over_500_requests() {
    weights_80_20_hold_over_500_requests(true);
}

fn editing_a_route_moves_traffic_within_a_second_without_failed_requests(delta: bool) {
    let s = Scenario::start(delta);
    assert_eq!(s.backend("GET", "move.example.com", "/", &[]), "v1");
    let load = Load::start(
        s.gateway,
        &[
            ("move.example.com", "/"),
            ("shop.example.com", "/api/x"),
            ("other.example.com", "/"),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let written = Instant::now();
    s.write("move.yaml", &move_route("v2"));
    let mut moved = None;
    while written.elapsed() < Duration::from_secs(5) {
        if s.backend("GET", "move.example.com", "/", &[]) == "v2" {
            moved = Some(written.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (sent, failed, failures) = load.finish();
    let moved = moved.unwrap_or_else(|| panic!("traffic did not move\n{}", s.debug()));
    println!(
        "traffic moved {:?} after the file write ({}); {sent} requests during the change, {failed} failed",
        moved,
        if delta { "delta" } else { "sotw" }
    );
    assert!(moved < Duration::from_secs(1), "moving took {moved:?}");
    assert_eq!(failed, 0, "failed requests: {failures:?}\n{}", s.debug());
    assert!(sent > 100);
    // Every later request goes to v2.
    for _ in 0..20 {
        assert_eq!(s.backend("GET", "move.example.com", "/", &[]), "v2");
    }
}

#[test]
fn sotw_editing_a_route_moves_traffic_within_a_second_without_failed_requests() {
    editing_a_route_moves_traffic_within_a_second_without_failed_requests(false);
}

#[test]
fn delta_editing_a_route_moves_traffic_within_a_second_without_failed_requests() {
    editing_a_route_moves_traffic_within_a_second_without_failed_requests(true);
}

fn rejected_config_leaves_envoy_serving_the_last_good_one(delta: bool) {
    let s = Scenario::start(delta);
    // A port on the Gateway's address held by another program (without SO_REUSEPORT): Envoy
    // cannot bind a listener there and rejects the listener update.
    let busy = std::net::TcpListener::bind((s.gateway.ip(), 0)).unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let nacks = || {
        s.control_plane
            .metric("trellis_xds_nacks_total{type=\"LDS\"}")
            .unwrap()
    };
    let before = nacks();
    let gateway = std::fs::read_to_string(s.config.join("gateway.yaml")).unwrap();
    let with_busy_listener = gateway.replacen(
        "  listeners:\n",
        &format!("  listeners:\n  - name: busy\n    port: {busy_port}\n    protocol: HTTP\n"),
        1,
    );
    s.write("gateway.yaml", &with_busy_listener);
    eventually("the NACK to be counted", Duration::from_secs(10), || {
        Ok(nacks() > before)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.debug()));
    assert!(
        s.envoy
            .stat("listener_manager.lds.update_rejected")
            .unwrap()
            .unwrap_or(0)
            >= 1
    );
    // Envoy keeps serving its last good listeners and routes.
    for _ in 0..20 {
        assert_eq!(s.backend("GET", "move.example.com", "/", &[]), "v1");
        assert_eq!(s.backend("GET", "shop.example.com", "/api/x", &[]), "api");
    }
    // The NACK is in the log and in the proxy's sync state, and is not repeated.
    assert!(s.control_plane.log().contains("NACK"), "{}", s.debug());
    let proxies = s.control_plane.proxies().unwrap();
    let error = proxies[0]["types"]["Listener"]["nack"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains(&busy_port.to_string()), "{proxies}");
    println!("NACK recorded by the control plane: {error}");
    let count = nacks();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(nacks(), count, "the rejected version is not sent again");
    // Other changes still apply.
    s.write("move.yaml", &move_route("v2"));
    eventually("a route change to apply", Duration::from_secs(5), || {
        Ok(s.backend("GET", "move.example.com", "/", &[]) == "v2")
    })
    .unwrap();
    // Removing the listener the proxy cannot bind clears the NACK.
    s.write("gateway.yaml", &gateway);
    eventually("the NACK to clear", Duration::from_secs(5), || {
        Ok(s.control_plane.proxies()?[0]["types"]["Listener"]["nack"].is_null())
    })
    .unwrap();
    drop(busy);
}

#[test]
fn sotw_rejected_config_leaves_envoy_serving_the_last_good_one() {
    rejected_config_leaves_envoy_serving_the_last_good_one(false);
}

#[test]
fn delta_rejected_config_leaves_envoy_serving_the_last_good_one() {
    rejected_config_leaves_envoy_serving_the_last_good_one(true);
}

fn envoy_keeps_serving_while_the_control_plane_restarts_and_resyncs(delta: bool) {
    let mut s = Scenario::start(delta);
    let load = Load::start(
        s.gateway,
        &[("shop.example.com", "/api/x"), ("move.example.com", "/")],
    );
    std::thread::sleep(Duration::from_millis(200));
    s.control_plane.kill();
    std::thread::sleep(Duration::from_secs(2));
    // The config changes while the control plane is down.
    s.write("move.yaml", &move_route("v2"));
    s.control_plane.restart().unwrap();
    eventually(
        "Envoy to resync with the restarted control plane",
        Duration::from_secs(10),
        || Ok(s.backend("GET", "move.example.com", "/", &[]) == "v2"),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", s.debug()));
    std::thread::sleep(Duration::from_millis(300));
    let (sent, failed, failures) = load.finish();
    println!("{sent} requests across the restart, {failed} failed");
    assert_eq!(failed, 0, "{failures:?}");
    assert!(s.envoy.running());
    let proxies = s.control_plane.proxies().unwrap();
    assert_eq!(
        proxies.as_array().map(Vec::len),
        Some(1),
        "the proxy reconnected: {proxies}"
    );
}

#[test]
fn sotw_envoy_keeps_serving_while_the_control_plane_restarts_and_resyncs() {
    envoy_keeps_serving_while_the_control_plane_restarts_and_resyncs(false);
}

#[test]
fn delta_envoy_keeps_serving_while_the_control_plane_restarts_and_resyncs() {
    envoy_keeps_serving_while_the_control_plane_restarts_and_resyncs(true);
}

/// Diagnostics reported by the control plane, as text.
fn diagnostics(cp: &ControlPlane) -> String {
    cp.status().unwrap()["diagnostics"].to_string()
}

fn route_conditions(cp: &ControlPlane, name: &str) -> String {
    cp.object_status("HTTPRoute", &format!("{NAMESPACE}/{name}"))
        .unwrap()
        .map(|o| o["status"].to_string())
        .unwrap_or_default()
}

#[test]
fn bad_input_is_reported_and_everything_else_keeps_serving() {
    let s = Scenario::start(false);
    let healthy = |s: &Scenario| {
        assert_eq!(s.backend("GET", "shop.example.com", "/api/x", &[]), "api");
        assert_eq!(s.backend("GET", "move.example.com", "/", &[]), "v1");
    };

    // 1. Invalid YAML in a file that held a route: its last good content stays.
    s.write(
        "move.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: move\n",
    );
    eventually(
        "the parse error to be reported",
        Duration::from_secs(5),
        || Ok(diagnostics(&s.control_plane).contains("move.yaml")),
    )
    .unwrap();
    let d = diagnostics(&s.control_plane);
    assert!(
        d.contains("\"line\"") && d.contains("last good content"),
        "{d}"
    );
    healthy(&s);

    // 2. An unknown kind is skipped with a warning.
    s.write(
        "unknown.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\n",
    );
    eventually(
        "the skipped kind to be reported",
        Duration::from_secs(5),
        || Ok(diagnostics(&s.control_plane).contains("Deployment")),
    )
    .unwrap();
    healthy(&s);

    // 3. A Gateway with an invalid listener: that listener is reported, the rest serves.
    let gateway = std::fs::read_to_string(s.config.join("gateway.yaml")).unwrap();
    let with_bad_listener = gateway.replacen(
        "  listeners:\n",
        "  listeners:\n  - name: udp\n    port: 5353\n    protocol: UDP\n",
        1,
    );
    s.write("gateway.yaml", &with_bad_listener);
    eventually("the listener condition", Duration::from_secs(5), || {
        let gw = s
            .control_plane
            .object_status("Gateway", "shop/web")?
            .unwrap_or_default();
        Ok(gw.to_string().contains("UnsupportedProtocol"))
    })
    .unwrap();
    healthy(&s);

    // 4. An HTTPRoute to a missing Service: ResolvedRefs False / BackendNotFound, 500 for it.
    s.write(
        "missing.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: missing\n  namespace: shop\nspec:\n  parentRefs: [{name: web}]\n  hostnames: [missing.example.com]\n  rules:\n  - backendRefs: [{name: nobody, port: 80}]\n",
    );
    eventually(
        "the BackendNotFound condition",
        Duration::from_secs(5),
        || Ok(route_conditions(&s.control_plane, "missing").contains("BackendNotFound")),
    )
    .unwrap();
    eventually(
        "missing backend answers 500",
        Duration::from_secs(5),
        || Ok(s.get("missing.example.com", "/")?.status == 500),
    )
    .unwrap();
    healthy(&s);

    // 5. The same object defined twice: the first definition wins, the second is reported.
    s.write("zz-duplicate.yaml", &move_route("v2"));
    eventually(
        "the duplicate to be reported",
        Duration::from_secs(5),
        || Ok(diagnostics(&s.control_plane).contains("duplicate")),
    )
    .unwrap();
    healthy(&s);

    // The control plane is still up; the status command prints it all.
    assert!(s.control_plane.metric("trellis_config_errors").unwrap() >= 2.0);
    let out = std::process::Command::new(trellis_harness::trellis_bin().unwrap())
        .args([
            "status",
            "--admin-address",
            &s.control_plane.admin.to_string(),
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    println!("{table}");
    assert!(
        table.contains("BackendNotFound") && table.contains("Input problems"),
        "{table}"
    );
    // Status files are written too.
    let route_status = s
        .control_plane
        .status_dir
        .join("httproutes/shop/missing.yaml");
    let text = std::fs::read_to_string(&route_status).unwrap();
    assert!(text.contains("BackendNotFound"), "{text}");
    let _ = &s.work;
}
