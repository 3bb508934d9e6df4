//! Hostile input through the real binary and a real Envoy: what a namespace tenant can write
//! and what any client on the network can send, each answered with a clear condition or a
//! refusal, while the other tenants' traffic keeps flowing.
//!
//! `TRELLIS_E2E_KEEP=1` keeps the work directory; figures are printed (`--nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use trellis_harness::scenario::{NAMESPACE, backend, backend_yaml, gateway_yaml, move_route};
use trellis_harness::{
    ControlPlane, Echo, Envoy, eventually, private_loopback, request, trellis_bin,
};

/// A Gateway with two backends (`v1`, `v2`) and the route `move` between them.
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
    /// Starts the control plane with `args` (after `prepare` saw the work directory).
    fn start(args: impl FnOnce(&Path) -> Vec<String>) -> Scenario {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().to_path_buf();
        if std::env::var_os("TRELLIS_E2E_KEEP").is_some() {
            eprintln!("work directory: {}", work.display());
        }
        let config = work.join("config");
        std::fs::create_dir_all(&config).unwrap();
        let (ip, port) = private_loopback();
        let mut yaml = gateway_yaml(ip, port);
        let mut pods = Vec::new();
        for service in ["v1", "v2"] {
            let pod = Echo::start(
                &work,
                Ipv4Addr::LOCALHOST,
                &format!("{service}-5d8f7c9b4d-x7k2p"),
                NAMESPACE,
            )
            .unwrap();
            yaml.push_str("---\n");
            yaml.push_str(&backend_yaml(service, &[&pod]));
            pods.push(pod);
        }
        std::fs::write(config.join("gateway.yaml"), yaml).unwrap();
        std::fs::write(config.join("move.yaml"), move_route("v1")).unwrap();
        let mut extra = vec!["--debounce-ms".to_string(), "50".to_string()];
        extra.extend(args(&work));
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let control_plane = ControlPlane::start(&config, &work, &extra).unwrap();
        let bootstrap = control_plane
            .bootstrap(&format!("{NAMESPACE}/web"), false, "hostile-proxy")
            .unwrap();
        let envoy = Envoy::start(&bootstrap, &work, "envoy", 2).unwrap();
        let s = Scenario {
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
            Ok(request(s.gateway, "GET", "move.example.com", "/", &[])?.status == 200)
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", s.debug()));
        s
    }

    fn write(&self, file: &str, text: &str) {
        let tmp = self.config.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.config.join(file)).unwrap();
    }

    fn backend(&self) -> String {
        backend(self.gateway, "GET", "move.example.com", "/", &[])
    }

    /// Moves the `move` route to `to` and returns how long until traffic followed.
    fn move_to(&self, to: &str) -> Duration {
        let written = Instant::now();
        self.write("move.yaml", &move_route(to));
        while written.elapsed() < Duration::from_secs(10) {
            if self.backend() == to {
                return written.elapsed();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("traffic did not move to {to}\n{}", self.debug());
    }

    /// The first ancestor's Accepted condition of a policy.
    fn accepted(&self, kind: &str, name: &str) -> Option<serde_json::Value> {
        let status = self
            .control_plane
            .object_status(kind, &format!("{NAMESPACE}/{name}"))
            .ok()??;
        status["status"]["ancestors"][0]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Accepted")
            .cloned()
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!(
            "/proc/{}/status",
            self.control_plane.pid().unwrap()
        ))
        .unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
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

/// The sum of an RDS stat over every route configuration of an Envoy.
fn rds_stat(envoy: &Envoy, stat: &str) -> u64 {
    let stats = trellis_harness::http_get_text(envoy.admin, "/stats").unwrap_or_default();
    stats
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(": ")?;
            (name.contains(".rds.") && name.ends_with(&format!(".{stat}")))
                .then(|| value.trim().parse::<u64>().ok())?
        })
        .sum()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn wasm_filter(name: &str, module: &str) -> String {
    format!(
        "apiVersion: policy.trellis.dev/v1alpha1\nkind: WasmFilter\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\nspec:\n  targetRefs:\n  - {{group: gateway.networking.k8s.io, kind: Gateway, name: web}}\n  module: {module}\n"
    )
}

/// A raw HTTP/1.1 GET, returning the status code.
fn get_status(addr: SocketAddr, path: &str, token: Option<&str>) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn hostile_wasm_filters_neither_leak_files_nor_hold_up_other_tenants() {
    // A host that accepts connections and never answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    let s = Scenario::start(|work| {
        let modules = work.join("modules");
        std::fs::create_dir_all(&modules).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(modules.join("fifo.wasm"))
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::write(work.join("token"), b"the service account token").unwrap();
        vec![
            "--module-dir".into(),
            modules.display().to_string(),
            "--module-url-hosts".into(),
            "127.0.0.1".into(),
            "--allow-http-module-urls".into(),
        ]
    });
    let token = s.work.join("token").display().to_string();
    let token_digest = sha256_hex(b"the service account token");
    let zeros = "0".repeat(64);
    let mut filters = vec![
        (
            "steal",
            format!("{{path: \"{token}\", sha256: \"{zeros}\"}}"),
        ),
        (
            "steal-exact",
            format!("{{path: \"{token}\", sha256: \"{token_digest}\"}}"),
        ),
        (
            "steal-up",
            format!("{{path: \"../token\", sha256: \"{token_digest}\"}}"),
        ),
        ("zero", format!("{{path: /dev/zero, sha256: \"{zeros}\"}}")),
        ("fifo", format!("{{path: fifo.wasm, sha256: \"{zeros}\"}}")),
        (
            "imds",
            format!("{{url: \"http://169.254.169.254/latest/meta-data/\", sha256: \"{zeros}\"}}"),
        ),
    ];
    for i in 0..10 {
        filters.push((
            Box::leak(format!("hang-{i}").into_boxed_str()),
            format!("{{url: \"http://127.0.0.1:{hang_port}/m{i}.wasm\", sha256: \"{zeros}\"}}"),
        ));
    }
    let rss_before = s.rss_kib();
    let written = Instant::now();
    let yaml: Vec<String> = filters.iter().map(|(n, m)| wasm_filter(n, m)).collect();
    s.write("filters.yaml", &yaml.join("---\n"));
    // Every refused module is reported at once; the hanging ones are still being fetched.
    let refused = ["steal", "steal-exact", "steal-up", "zero", "fifo", "imds"];
    eventually("every refusal reported", Duration::from_secs(10), || {
        Ok(refused.iter().all(|name| {
            s.accepted("WasmFilter", name).is_some_and(|a| {
                a["status"] == "False" && a["message"] != "spec.module: not fetched yet"
            })
        }))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.debug()));
    println!("refusals reported {:?} after the write", written.elapsed());
    for name in refused {
        let a = s.accepted("WasmFilter", name).unwrap();
        let message = a["message"].as_str().unwrap();
        println!("  {name}: {} {}", a["reason"], message);
        assert!(!message.contains(&token_digest), "{message}");
        assert!(!message.contains("service account"), "{message}");
    }
    let message = |name| {
        s.accepted("WasmFilter", name).unwrap()["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(message("steal").contains("not inside"));
    assert!(message("steal-exact").contains("not inside"));
    assert!(message("steal-up").contains("not inside"));
    assert!(message("zero").contains("not inside"));
    assert!(message("fifo").contains("not a regular file"));
    assert!(message("imds").contains("allow-list"));
    for i in 0..10 {
        let a = s.accepted("WasmFilter", &format!("hang-{i}")).unwrap();
        assert_eq!(a["status"], "False");
    }
    // Nothing read is served, whatever digest is asked for.
    assert_eq!(
        get_status(
            s.control_plane.admin,
            &format!("/wasm/{token_digest}"),
            None
        ),
        404
    );
    // Ten fetches hanging on a host that never answers hold up no one: a route edit is live
    // within a second.
    let moved = s.move_to("v2");
    println!("with 10 module fetches hanging, a route edit moved traffic in {moved:?}");
    assert!(moved < Duration::from_secs(1), "{moved:?}\n{}", s.debug());
    let rss_after = s.rss_kib();
    println!("control-plane RSS {rss_before} KiB before, {rss_after} KiB after");
    assert!(rss_after < rss_before + 64 * 1024, "/dev/zero was not read");
    drop(hang);
}

#[test]
fn the_admin_endpoint_needs_a_token_off_loopback_and_drops_slow_clients() {
    // Off loopback without a token: the control plane refuses to start, and says why.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("config")).unwrap();
    let output = std::process::Command::new(trellis_bin().unwrap())
        .args(["serve", "--config-dir"])
        .arg(tmp.path().join("config"))
        .args([
            "--insecure-xds",
            "--xds-address",
            "127.0.0.1:0",
            "--admin-address",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("off loopback without a token: {}", stderr.trim());
    assert!(stderr.contains("--admin-token-file"), "{stderr}");

    let token = "e2e-admin-token-0123456789";
    let s = Scenario::start(|work| {
        std::fs::write(work.join("admin-token"), format!("{token}\n")).unwrap();
        vec![
            "--admin-token-file".into(),
            work.join("admin-token").display().to_string(),
        ]
    });
    let admin = s.control_plane.admin;
    assert_eq!(get_status(admin, "/status", None), 401);
    assert_eq!(
        get_status(admin, "/proxies", Some("wrong-token-0123456789")),
        401
    );
    assert_eq!(get_status(admin, "/status", Some(token)), 200);
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get_status(admin, open, None), 200, "{open}");
    }
    // The CLI sends the token from a file.
    let cli = std::process::Command::new(trellis_bin().unwrap())
        .args([
            "proxy-status",
            "--admin-address",
            &admin.to_string(),
            "--admin-token-file",
        ])
        .arg(s.work.join("admin-token"))
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(String::from_utf8_lossy(&cli.stdout).contains("hostile-proxy"));

    // A client that never finishes its headers is disconnected after the header timeout.
    let mut slow = TcpStream::connect(admin).unwrap();
    slow.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let closed_after = started.elapsed();
    println!("a client that never finished its headers was disconnected after {closed_after:?}");
    assert!(closed_after < Duration::from_secs(15), "{closed_after:?}");

    // Past the connection cap, new connections are closed at once; the others keep working.
    let held: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(admin).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let refused = held
        .iter()
        .filter(|c| {
            let mut c = *c;
            c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut buf = [0u8; 1];
            matches!(c.read(&mut buf), Ok(0))
        })
        .count();
    println!("300 idle connections to the admin endpoint: {refused} closed at once by the cap");
    assert!(refused >= 300 - 256, "{refused}");
    drop(held);
    eventually("the cap counted", Duration::from_secs(5), || {
        let metrics = request(admin, "GET", "x", "/metrics", &[])?.body;
        Ok(metrics
            .contains("trellis_limit_hits_total{server=\"admin\",limit=\"connections_per_peer\"}"))
    })
    .unwrap();
    assert_eq!(s.backend(), "v1", "traffic unaffected");
}

#[test]
fn an_xds_connection_flood_is_capped_and_real_proxies_keep_getting_config() {
    let s = Scenario::start(|_| vec!["--xds-max-connections-per-peer".into(), "20".into()]);
    let xds = s.control_plane.xds;
    // Connections that never send a byte: past the cap they are closed at once, the rest after
    // the first-bytes deadline (10 s).
    let flood: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(xds).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let hits = |limit: &str| {
        s.control_plane
            .metric(&format!(
                "trellis_limit_hits_total{{server=\"xds\",limit=\"{limit}\"}}"
            ))
            .unwrap_or(0.0)
    };
    println!(
        "100 silent connections from one address: {} refused by the per-peer cap",
        hits("connections_per_peer")
    );
    assert!(hits("connections_per_peer") >= 80.0);
    // The proxy already connected keeps getting configuration.
    let moved = s.move_to("v2");
    println!("meanwhile a route edit reached the connected proxy in {moved:?}");
    eventually(
        "the silent connections closed",
        Duration::from_secs(20),
        || Ok(hits("first_bytes_timeout") >= 19.0),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.debug()));
    drop(flood);
    assert_eq!(s.backend(), "v2");
}

#[test]
fn a_route_envoy_would_reject_is_reported_on_the_route_and_the_rest_flows() {
    let s = Scenario::start(|_| Vec::new());
    let route = |name: &str, rule: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\nspec:\n  parentRefs: [{{name: web}}]\n  hostnames: [{name}.example.com]\n  rules:\n{rule}"
        )
    };
    // A UUID in a path pattern: over RE2's default program size (100), which the bootstrap
    // raises; Envoy must serve it.
    let uuid = route(
        "uuid",
        "  - matches: [{path: {type: RegularExpression, value: \"/api/v[0-9]+/users/[a-f0-9-]{36}/orders\"}}]\n    backendRefs: [{name: v1, port: 80}]\n",
    );
    // Two tenants' mistakes Envoy would reject: each must stay off the shared port.
    let repeat = route(
        "repeat",
        "  - matches: [{path: {type: RegularExpression, value: \"/x{1001}\"}}]\n    backendRefs: [{name: v1, port: 80}]\n",
    );
    let newline = route(
        "newline",
        "  - filters:\n    - type: RequestHeaderModifier\n      requestHeaderModifier: {set: [{name: x-evil, value: \"a\\r\\nInjected: yes\"}]}\n    backendRefs: [{name: v1, port: 80}]\n",
    );
    s.write("tenants.yaml", &[uuid, repeat, newline].join("---\n"));
    eventually("the UUID route", Duration::from_secs(10), || {
        Ok(request(
            s.gateway,
            "GET",
            "uuid.example.com",
            "/api/v2/users/0b9f5c4e-2f1c-4b8e-9d7a-3c2e1f0a9b8c/orders",
            &[],
        )?
        .status
            == 200)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.debug()));
    for name in ["repeat", "newline"] {
        let status = s
            .control_plane
            .object_status("HTTPRoute", &format!("{NAMESPACE}/{name}"))
            .unwrap()
            .unwrap();
        let accepted = status["status"]["parents"][0]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Accepted")
            .cloned()
            .unwrap();
        println!(
            "{name}: Accepted={} {}: {}",
            accepted["status"], accepted["reason"], accepted["message"]
        );
        assert_eq!(accepted["status"], "False");
    }
    assert_eq!(
        rds_stat(&s.envoy, "update_rejected"),
        0,
        "Envoy rejected a route configuration"
    );
    // The other tenants' routes keep moving, at once.
    let moved = s.move_to("v2");
    println!("with two rejected routes on the port, a route edit moved traffic in {moved:?}");
    assert!(moved < Duration::from_secs(1));
    // A freshly started Envoy serves the port fully (no NACKed route configuration).
    let bootstrap = s
        .control_plane
        .bootstrap(&format!("{NAMESPACE}/web"), true, "fresh-proxy")
        .unwrap();
    let fresh = Envoy::start(&bootstrap, &s.work, "fresh", 1).unwrap();
    let held = eventually(
        "the fresh proxy to hold its configuration",
        Duration::from_secs(10),
        || {
            Ok(fresh
                .stat("listener_manager.lds.update_success")?
                .unwrap_or(0)
                >= 1
                && rds_stat(&fresh, "update_success") >= 1)
        },
    );
    if let Err(e) = held {
        let stats = trellis_harness::http_get_text(fresh.admin, "/stats").unwrap_or_default();
        let relevant: Vec<&str> = stats
            .lines()
            .filter(|l| l.contains("lds.") || l.contains("rds.") || l.contains("listener_manager"))
            .collect();
        panic!("{e:#}\n{}\n{}", relevant.join("\n"), fresh.log());
    }
    assert_eq!(rds_stat(&fresh, "update_rejected"), 0);
    assert_eq!(
        fresh
            .stat("listener_manager.lds.update_rejected")
            .unwrap()
            .unwrap_or(0),
        0
    );
}

#[test]
fn a_broken_file_and_an_invalid_policy_keep_serving_across_a_restart() {
    let module = trellis_harness::load::wasm_module("trellis-policy-wasm").unwrap();
    let mut s = Scenario::start(|work| {
        vec![
            "--state-dir".into(),
            work.join("state").display().to_string(),
            "--policy-module".into(),
            module.display().to_string(),
        ]
    });
    let deny = |regex: &str| {
        format!(
            "apiVersion: policy.trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: no-admin, namespace: {NAMESPACE}}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: move}}]\n  defaultAction: Allow\n  rules:\n  - {{name: admin, action: Deny, paths: [{{type: Prefix, value: /admin}}]}}\n  - {{name: raw, action: Deny, paths: [{{type: RegularExpression, value: \"{regex}\"}}]}}\n"
        )
    };
    let status = |s: &Scenario, path: &str| {
        request(s.gateway, "GET", "move.example.com", path, &[])
            .map(|r| r.status)
            .unwrap_or(0)
    };
    s.write("policy.yaml", &deny("/items/[0-9]+"));
    eventually("the deny rule", Duration::from_secs(30), || {
        Ok(status(&s, "/admin") == 403)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.debug()));
    // Both broken while the control plane runs: the last good versions stay in force.
    s.write("policy.yaml", &deny("/items/[0-9+"));
    s.write(
        "move.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: [oops\n",
    );
    eventually("both reported", Duration::from_secs(10), || {
        let report = s.control_plane.status()?;
        let file = report["diagnostics"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["file"] == "move.yaml"));
        let policy = s
            .accepted("AuthorizationPolicy", "no-admin")
            .is_some_and(|a| a["status"] == "False");
        Ok(file && policy)
    })
    .unwrap();
    assert_eq!(status(&s, "/admin"), 403);
    assert_eq!(s.backend(), "v1");
    // Restart the control plane while traffic flows.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let gateway = s.gateway;
        std::thread::spawn(move || {
            let (mut sent, mut failed) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sent += 1;
                match request(gateway, "GET", "move.example.com", "/", &[]) {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => failed.push(r.status.to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (sent, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    s.control_plane.restart().unwrap();
    s.control_plane.wait_ready().unwrap();
    // Past the restart and the resync: the proxy reconnected and holds the new snapshot.
    eventually("the proxy resynced", Duration::from_secs(20), || {
        let proxies = s.control_plane.proxies()?;
        Ok(proxies
            .as_array()
            .is_some_and(|p| p.iter().any(|p| !p["synced_version"].is_null())))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.debug()));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failed) = load.join().unwrap();
    println!(
        "across the restart: {sent} requests, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}\n{}", s.debug());
    // The route from the broken file, and the deny rules of the invalid policy, still apply.
    assert_eq!(s.backend(), "v1");
    assert_eq!(
        status(&s, "/admin"),
        403,
        "the deny rule fails open after a restart"
    );
    assert_eq!(status(&s, "/items/7"), 403);
    let a = s.accepted("AuthorizationPolicy", "no-admin").unwrap();
    println!(
        "after the restart: Accepted={} {}",
        a["status"], a["message"]
    );
    assert!(a["message"].as_str().unwrap().contains("stays in force"));
    // A proxy started after the restart gets all of it too.
    let bootstrap = s
        .control_plane
        .bootstrap(&format!("{NAMESPACE}/web"), false, "fresh-proxy")
        .unwrap();
    let fresh = Envoy::start(&bootstrap, &s.work, "fresh", 1).unwrap();
    eventually("the fresh proxy's routes", Duration::from_secs(20), || {
        Ok(rds_stat(&fresh, "update_success") >= 1)
    })
    .unwrap();
    let dump = fresh.config_dump().unwrap().to_string();
    assert!(
        dump.contains("httproute/shop/move/"),
        "the route from the broken file"
    );
    assert!(dump.contains("/items/[0-9]+"), "the last valid policy");
}

#[test]
fn escaped_and_dotted_paths_do_not_bypass_a_prefix_deny() {
    let module = trellis_harness::load::wasm_module("trellis-policy-wasm").unwrap();
    let s = Scenario::start(|_| vec!["--policy-module".into(), module.display().to_string()]);
    s.write(
        "policy.yaml",
        &format!(
            "apiVersion: policy.trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: no-admin, namespace: {NAMESPACE}}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: move}}]\n  defaultAction: Allow\n  rules:\n  - {{name: admin, action: Deny, paths: [{{type: Prefix, value: /admin/}}]}}\n"
        ),
    );
    let get = |path: &str| request(s.gateway, "GET", "move.example.com", path, &[]).unwrap();
    eventually("the deny rule", Duration::from_secs(30), || {
        Ok(get("/admin/x").status == 403)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.debug()));
    assert_eq!(get("/public").status, 200);
    for attempt in [
        "/admin%2Fx",
        "/admin%2fx",
        "/admin%5Cx",
        "//admin/x",
        "/./admin/x",
        "/x/../admin/x",
        "/%61dmin/x",
        "/admin/./x",
    ] {
        let reply = get(attempt);
        let outcome = match reply.status {
            403 => "403".to_string(),
            301..=308 => {
                let location = reply.header("location").unwrap_or_default().to_string();
                let path = location
                    .split_once("move.example.com")
                    .map(|(_, p)| p.to_string())
                    .unwrap_or(location.clone());
                let followed = get(&path);
                assert_eq!(followed.status, 403, "{attempt} -> {location}");
                format!("{} to {path}, then 403", reply.status)
            }
            other => panic!("{attempt} got {other} past the deny rule\n{}", s.debug()),
        };
        println!("  {attempt:16} {outcome}");
    }
}

#[test]
fn a_wasm_filter_that_panics_is_reloaded_and_serves_again() {
    let probe = trellis_harness::load::wasm_module("trellis-wasm-host-probe").unwrap();
    let s = Scenario::start(|_| {
        vec![
            "--module-dir".into(),
            probe.parent().unwrap().display().to_string(),
        ]
    });
    let sha = trellis_harness::load::sha256_file(&probe).unwrap();
    s.write(
        "probe.yaml",
        &format!(
            "apiVersion: policy.trellis.dev/v1alpha1\nkind: WasmFilter\nmetadata: {{name: probe, namespace: {NAMESPACE}}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: move}}]\n  module: {{path: {}, sha256: \"{sha}\"}}\n  failurePolicy: FailClosed\n",
            probe.file_name().unwrap().to_string_lossy()
        ),
    );
    let get = |headers: &[(&str, &str)]| {
        request(s.gateway, "GET", "move.example.com", "/", headers)
            // The probe adds `x-probe-count` to the request; the echo backend shows it.
            .map(|r| {
                let counted = r.body.to_ascii_lowercase().contains("x-probe-count");
                (r.status, counted.then_some(()))
            })
            .unwrap_or((0, None))
    };
    eventually("the probe filter", Duration::from_secs(30), || {
        Ok(get(&[("x-probe", "pairs")]).1.is_some())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.debug()));
    // Trap every worker's VM (Envoy runs two workers here).
    for _ in 0..4 {
        let (status, _) = get(&[("x-probe", "panic")]);
        assert_ne!(status, 200, "a panicking filter let the request through");
    }
    // Requests fail until each trapped VM is reloaded (after Envoy's backoff); then every
    // worker serves again, for good.
    let trapped = Instant::now();
    let (mut failed, mut in_a_row) = (0, 0);
    let recovered = loop {
        let (status, counted) = get(&[("x-probe", "pairs")]);
        if status == 200 && counted.is_some() {
            in_a_row += 1;
            if in_a_row == 50 {
                break trapped.elapsed();
            }
        } else {
            in_a_row = 0;
            failed += 1;
        }
        assert!(
            trapped.elapsed() < Duration::from_secs(30),
            "the filter stayed down: {status}\n{}",
            s.debug()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // (Left down, as with FAIL_CLOSED, the trapped VM would answer 503 until Envoy restarts.)
    println!(
        "after the filter panicked four times, 50 requests in a row succeeded {recovered:?} later ({failed} answered 503 meanwhile)"
    );
}

#[test]
fn hostile_config_files_are_reported_and_traffic_keeps_flowing() {
    let s = Scenario::start(|_| Vec::new());
    // Two symlink loops, a name that would be a path, a FIFO named like YAML, a file written
    // in two pieces with a pause.
    std::os::unix::fs::symlink(&s.config, s.config.join("loop-a")).unwrap();
    std::os::unix::fs::symlink(&s.config, s.config.join("loop-b")).unwrap();
    let outside = s.work.join("outside");
    s.write(
        "escape.yaml",
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: x, namespace: \"{}\"}}\nspec: {{parentRefs: [{{name: web}}]}}\n",
            outside.display()
        ),
    );
    let status = std::process::Command::new("mkfifo")
        .arg(s.config.join("pipe.yaml"))
        .status()
        .unwrap();
    assert!(status.success());
    let diagnostics = |s: &Scenario| -> Vec<String> {
        s.control_plane.status().unwrap()["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                format!(
                    "{}: {}",
                    d["file"].as_str().unwrap_or(""),
                    d["message"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    eventually("the problems reported", Duration::from_secs(10), || {
        let d = diagnostics(&s);
        Ok(d.iter().any(|m| m.contains("already read"))
            && d.iter().any(|m| m.contains("not a valid namespace name"))
            && d.iter().any(|m| m.contains("not a regular file")))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:?}\n{}", diagnostics(&s), s.debug()));
    for d in diagnostics(&s) {
        println!("  {d}");
    }
    assert!(
        !outside.exists(),
        "a status file was written outside the status directory"
    );
    // A route file written in two pieces, 300 ms apart, is applied once, whole.
    use std::io::Write;
    let mut file = std::fs::File::create(s.config.join("move.yaml")).unwrap();
    let text = move_route("v2");
    let (head, tail) = text.split_at(text.len() / 2);
    file.write_all(head.as_bytes()).unwrap();
    file.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.backend(), "v1", "the half-written file was applied");
    file.write_all(tail.as_bytes()).unwrap();
    drop(file);
    eventually("the whole file", Duration::from_secs(5), || {
        Ok(s.backend() == "v2")
    })
    .unwrap();
    let report = s.control_plane.status().unwrap();
    assert!(
        !report["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["file"] == "move.yaml"),
        "the file was read half-written: {}",
        report["diagnostics"]
    );
}
