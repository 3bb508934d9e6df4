//! The mesh end to end, with pods as network namespaces: echo apps behind Envoy sidecars
//! (capture rules, uid 1337) programmed by `trellis serve` over a bridge, requests between pods
//! through both sidecars, routed by GAMMA HTTPRoutes.
//!
//! Needs root (network namespaces, iptables). CI runs as root and fails if these tests cannot
//! run there; elsewhere they say why and pass.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use trellis_harness::ControlPlane;
use trellis_harness::mesh::{
    APP_PORT, MeshPod, PodSpec, Workload, namespace_yaml, service_yaml, wait_sidecars,
};
use trellis_harness::netns::{Network, unavailable};

/// `None` (and why, printed) when pods cannot be made here; a failure in CI.
fn network_or_skip(test: &str) -> Option<Network> {
    if let Some(why) = unavailable() {
        if std::env::var_os("TRELLIS_REQUIRE_MESH").is_some() {
            panic!("{test}: TRELLIS_REQUIRE_MESH is set (as CI sets it), but {why}");
        }
        eprintln!("{test}: skipped: {why}");
        return None;
    }
    Some(Network::create().unwrap())
}

/// The xDS port on the bridge: fixed, so sidecars find a restarted control plane.
const XDS_PORT: u16 = 15010;

struct Mesh {
    _tmp: Option<tempfile::TempDir>,
    work: PathBuf,
    config: PathBuf,
    cp: ControlPlane,
    /// The certificate authority's directory, when the control plane runs one.
    ca_dir: Option<PathBuf>,
    /// The certificate lifetime pods' agents ask for, in seconds.
    lifetime_secs: u64,
    pods: Vec<MeshPod>,
    // Dropped last: pods first, then the bridge.
    net: Network,
}

impl Mesh {
    /// A mesh with a CA (the control plane refuses plaintext xDS off loopback).
    fn start(net: Network, namespaces: &[(&str, bool)]) -> Mesh {
        Self::start_with(net, namespaces, true, &[])
    }

    /// With `ca`, the control plane runs a certificate authority: sidecars get identities and
    /// speak mutual TLS.
    fn start_with(net: Network, namespaces: &[(&str, bool)], ca: bool, args: &[&str]) -> Mesh {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().to_path_buf();
        if std::env::var_os("TRELLIS_E2E_KEEP").is_some() {
            eprintln!("work directory: {}", work.display());
        }
        let config = work.join("config");
        std::fs::create_dir_all(&config).unwrap();
        let mut yaml = String::new();
        for (ns, meshed) in namespaces {
            yaml.push_str(&namespace_yaml(ns, *meshed));
        }
        std::fs::write(config.join("namespaces.yaml"), yaml).unwrap();
        let xds = format!("{}:{XDS_PORT}", net.gateway);
        let ca_dir = ca.then(|| work.join("ca"));
        let ca_arg = ca_dir.as_ref().map(|d| d.display().to_string());
        let mut all_args = vec!["--debounce-ms", "50"];
        if let Some(dir) = &ca_arg {
            all_args.extend(["--ca-dir", dir.as_str()]);
        }
        all_args.extend(args);
        let cp = ControlPlane::start_with_xds(&config, &work, &xds, &all_args).unwrap();
        Mesh {
            // Kept for a look afterwards with TRELLIS_E2E_KEEP.
            _tmp: if std::env::var_os("TRELLIS_E2E_KEEP").is_some() {
                let _ = tmp.keep();
                None
            } else {
                Some(tmp)
            },
            work,
            config,
            cp,
            ca_dir,
            lifetime_secs: 3600,
            pods: Vec::new(),
            net,
        }
    }

    fn xds(&self) -> SocketAddr {
        SocketAddr::from((self.net.gateway, XDS_PORT))
    }

    /// Starts a pod and writes its Pod object.
    fn pod(&mut self, spec: PodSpec<'_>) -> usize {
        self.pod_as(spec, "default")
    }

    /// Starts a pod running as `service_account` (with the CA: beside `trellis agent`).
    fn pod_as(&mut self, spec: PodSpec<'_>, service_account: &str) -> usize {
        let workload = self.ca_dir.as_ref().map(|ca_dir| Workload {
            service_account,
            config_dir: &self.config,
            ca_dir,
            lifetime_secs: self.lifetime_secs,
            write_pod: true,
        });
        let pod = MeshPod::start_with(
            &self.net,
            &self.work,
            &spec,
            self.xds(),
            workload.as_ref().filter(|_| spec.sidecar),
        )
        .unwrap();
        std::fs::write(
            self.config
                .join(format!("pod-{}-{}.yaml", spec.namespace, spec.name)),
            pod.pod_yaml(),
        )
        .unwrap();
        self.pods.push(pod);
        self.pods.len() - 1
    }

    /// Writes a Service (ClusterIP `10.96.N.<ip>`, port `port` → the app's port, HTTP) and its
    /// EndpointSlice over the pods whose labels match `selector`.
    fn service(
        &self,
        ns: &str,
        name: &str,
        ip: u8,
        port: u16,
        selector: &[(&str, &str)],
    ) -> SocketAddr {
        let cluster_ip = self.net.service_ip(ip);
        let endpoints: Vec<(std::net::Ipv4Addr, &str)> = self
            .pods
            .iter()
            .filter(|p| p.namespace == ns && p.has_labels(selector))
            .map(|p| (p.ip(), p.name.as_str()))
            .collect();
        let yaml = service_yaml(ns, name, cluster_ip, port, selector, &endpoints);
        std::fs::write(self.config.join(format!("svc-{ns}-{name}.yaml")), yaml).unwrap();
        SocketAddr::from((cluster_ip, port))
    }

    fn write(&self, file: &str, yaml: &str) {
        std::fs::write(self.config.join(file), yaml).unwrap();
    }

    /// Waits until every sidecar is ready and holds the latest configuration.
    fn ready(&mut self) {
        wait_sidecars(&self.cp, self.pods.iter_mut()).unwrap();
    }
}

/// Retries `f` until it holds (a configuration change takes a moment to reach the sidecars).
fn eventually(what: &str, f: impl FnMut() -> Result<(), String>) {
    eventually_within(what, Duration::from_secs(20), f);
}

fn eventually_within(what: &str, within: Duration, mut f: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + within;
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn producer_route(name: &str) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: shop}}
spec:
  parentRefs: [{{group: "", kind: Service, name: echo, port: 80}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /v2}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: x-route, value: producer}}]}}
    backendRefs: [{{name: echo-v2, port: 8080}}]
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: x-route, value: producer}}]}}
    backendRefs: [{{name: echo-v1, port: 8080}}]
"#
    )
}

const CONSUMER_ROUTE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: pin-v1, namespace: team}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, namespace: shop}]
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-route, value: consumer}]}
    backendRefs: [{name: echo-v1, namespace: shop, port: 8080}]
"#;

/// The mesh's routing: producer and consumer routes, both sidecars counting, an opted-out pod
/// reached without a sidecar, and no failed request across a control-plane restart.
#[test]
fn pods_talk_through_both_sidecars_routed_by_gamma_routes() {
    let Some(net) = network_or_skip("pods_talk_through_both_sidecars_routed_by_gamma_routes")
    else {
        return;
    };
    let mut mesh = Mesh::start(net, &[("shop", true), ("team", true)]);
    let v1 = mesh.pod(PodSpec {
        namespace: "shop",
        name: "echo-v1",
        labels: &[("app", "echo"), ("version", "v1")],
        sidecar: true,
        ip: None,
        app_env: &[],
    });
    let v2 = mesh.pod(PodSpec {
        namespace: "shop",
        name: "echo-v2",
        labels: &[("app", "echo"), ("version", "v2")],
        sidecar: true,
        ip: None,
        app_env: &[],
    });
    let client = mesh.pod(PodSpec {
        namespace: "shop",
        name: "client",
        labels: &[("app", "client")],
        sidecar: true,
        ip: None,
        app_env: &[],
    });
    let consumer = mesh.pod(PodSpec {
        namespace: "team",
        name: "client",
        labels: &[("app", "client")],
        sidecar: true,
        ip: None,
        app_env: &[],
    });
    let legacy = mesh.pod(PodSpec {
        namespace: "shop",
        name: "legacy",
        labels: &[("app", "legacy")],
        sidecar: false,
        ip: None,
        app_env: &[],
    });
    let echo = mesh.service("shop", "echo", 10, 80, &[("app", "echo")]);
    mesh.service(
        "shop",
        "echo-v1",
        11,
        8080,
        &[("app", "echo"), ("version", "v1")],
    );
    mesh.service(
        "shop",
        "echo-v2",
        12,
        8080,
        &[("app", "echo"), ("version", "v2")],
    );
    let legacy_svc = mesh.service("shop", "legacy", 13, 8080, &[("app", "legacy")]);
    mesh.write("producer.yaml", &producer_route("split"));
    mesh.ready();

    // A producer route: /v2 to echo-v2, the rest to echo-v1, for every client.
    let started = Instant::now();
    eventually("the producer route applies", || {
        let r = mesh.pods[client]
            .request(echo, "echo.shop", "/v2/items", &[])
            .map_err(|e| format!("{e:#}"))?;
        let route = r.json()["headers"]["X-Route"][0].clone();
        (r.status == 200 && r.pod() == "echo-v2" && route == "producer")
            .then_some(())
            .ok_or(format!("{} from {:?}, x-route {route}", r.status, r.pod()))
    });
    println!(
        "producer route applied {:?} after the sidecars were ready",
        started.elapsed()
    );
    let r = mesh.pods[client]
        .request(echo, "echo.shop", "/", &[])
        .unwrap();
    assert_eq!(r.pod(), "echo-v1");
    // Both sidecars counted the request.
    let out = mesh.pods[client]
        .sidecar_stat("http.outbound_shop_echo_80.downstream_rq_2xx")
        .unwrap();
    let in_v2 = mesh.pods[v2]
        .sidecar_stat("http.inbound_8080.downstream_rq_2xx")
        .unwrap();
    let in_v1 = mesh.pods[v1]
        .sidecar_stat("http.inbound_8080.downstream_rq_2xx")
        .unwrap();
    println!("client sidecar outbound 2xx: {out}; echo-v2 inbound 2xx: {in_v2}; echo-v1: {in_v1}");
    assert!(out >= 2 && in_v2 >= 1 && in_v1 >= 1);

    // A consumer route in namespace team: its clients go to echo-v1 with x-route consumer;
    // shop's clients still get the producer route.
    mesh.write("consumer.yaml", CONSUMER_ROUTE);
    eventually("the consumer route applies to team's clients", || {
        let r = mesh.pods[consumer]
            .request(echo, "echo.shop", "/v2/items", &[])
            .map_err(|e| format!("{e:#}"))?;
        let route = r.json()["headers"]["X-Route"][0].clone();
        (r.pod() == "echo-v1" && route == "consumer")
            .then_some(())
            .ok_or(format!("{} from {:?}, x-route {route}", r.status, r.pod()))
    });
    let r = mesh.pods[client]
        .request(echo, "echo.shop", "/v2/items", &[])
        .unwrap();
    assert_eq!(r.pod(), "echo-v2");
    assert_eq!(r.json()["headers"]["X-Route"][0], "producer");

    // trellis proxy-status lists each sidecar with its pod, class and sync state per type.
    let out = std::process::Command::new(trellis_harness::trellis_bin().unwrap())
        .args([
            "proxy-status",
            "--admin-address",
            &mesh.cp.admin.to_string(),
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    println!("trellis proxy-status:\n{table}");
    let row = table
        .lines()
        .find(|l| l.contains("pod/team/client"))
        .unwrap_or_else(|| panic!("no row for pod/team/client:\n{table}"));
    assert!(row.contains("sidecar/team/"), "{row}");
    assert!(row.matches("SYNCED").count() >= 4, "{row}");
    assert_eq!(
        table.lines().filter(|l| l.contains(" pod/")).count(),
        4,
        "{table}"
    );

    // Bad input, each with a clear condition, while traffic keeps flowing.
    mesh.write("bad.yaml", BAD_INPUT);
    let expect = [
        ("shop/to-outside", "namespace plain is not in the mesh"),
        ("shop/to-missing-port", "port 8443"),
        ("shop/to-unallocated", "spec.clusterIP is empty"),
    ];
    for (route, text) in expect {
        eventually(&format!("{route} is reported"), || {
            let status = mesh
                .cp
                .object_status("HTTPRoute", route)
                .map_err(|e| e.to_string())?
                .ok_or("no status yet")?;
            let condition = &status["status"]["parents"][0]["conditions"][0];
            println!("{route}: {} {}", condition["reason"], condition["message"]);
            (condition["status"] == "False"
                && condition["message"].as_str().unwrap_or("").contains(text))
            .then_some(())
            .ok_or(format!("{condition}"))
        });
    }
    let status = mesh.cp.status().unwrap();
    let pending = status["sidecars"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["pod"] == "shop/pending"))
        .cloned()
        .unwrap_or_default();
    println!("shop/pending: {}", pending["problem"]);
    assert!(
        pending["problem"]
            .as_str()
            .unwrap_or("")
            .contains("no IP yet"),
        "{status}"
    );
    let out = std::process::Command::new(trellis_harness::trellis_bin().unwrap())
        .args([
            "proxy-status",
            "--admin-address",
            &mesh.cp.admin.to_string(),
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.contains("shop/pending") && table.contains("no IP yet"),
        "{table}"
    );
    let r = mesh.pods[client]
        .request(echo, "echo.shop", "/v2/items", &[])
        .unwrap();
    assert_eq!((r.status, r.pod().as_str()), (200, "echo-v2"));

    // The opted-out pod has no sidecar and is reached as it is.
    let r = mesh.pods[client]
        .request(legacy_svc, "legacy.shop", "/", &[])
        .unwrap();
    assert_eq!((r.status, r.pod().as_str()), (200, "legacy"));
    assert!(!mesh.pods[legacy].sidecar);

    // Egress control: team's sidecars close connections to destinations outside the mesh (a
    // pod IP is no Service's), shop's pass them on.
    let legacy_pod = SocketAddr::from((mesh.pods[legacy].ip(), APP_PORT));
    let r = mesh.pods[consumer]
        .request(legacy_pod, "legacy", "/", &[])
        .unwrap();
    assert_eq!(r.status, 200, "passed on before the label");
    let registry_only = namespace_yaml("team", true).replace(
        "{trellis.dev/mesh: enabled}",
        "{trellis.dev/mesh: enabled, trellis.dev/outbound-traffic: registry-only}",
    );
    mesh.write(
        "namespaces.yaml",
        &format!("{}{registry_only}", namespace_yaml("shop", true)),
    );
    eventually(
        "team's sidecar blocks an address outside the mesh",
        || match mesh.pods[consumer].request(legacy_pod, "legacy", "/", &[]) {
            Err(_) => Ok(()),
            Ok(r) => Err(format!("answered {} from {}", r.status, r.pod())),
        },
    );
    let r = mesh.pods[client]
        .request(legacy_pod, "legacy", "/", &[])
        .unwrap();
    assert_eq!((r.status, r.pod().as_str()), (200, "legacy"));

    // Requests keep flowing while the control plane restarts.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let looping = mesh.pods[client].netns.spawn(move || {
        let (mut ok, mut failed) = (0u32, 0u32);
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            match trellis_harness::request(echo, "GET", "echo.shop", "/", &[]) {
                Ok(r) if r.status == 200 => ok += 1,
                _ => failed += 1,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (ok, failed)
    });
    std::thread::sleep(Duration::from_millis(500));
    mesh.cp.restart().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = looping.join().unwrap().unwrap();
    println!("across a control-plane restart: {ok} requests, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok > 20);
    let _ = Path::new(&mesh.work);
}

/// A pod without an IP, and routes that cannot attach: to a namespace outside the mesh, to a
/// port the Service does not have, to a Service without a clusterIP.
const BAD_INPUT: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Service
metadata: {name: outside, namespace: plain}
spec:
  clusterIP: 10.96.200.1
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: unallocated, namespace: shop}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: shop, labels: {app: echo}}
spec:
  containers: [{name: echo}]
status:
  phase: Pending
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-outside, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: outside, namespace: plain}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-missing-port, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 8443}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-unallocated, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: unallocated}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
"#;

/// A PeerAuthentication for namespace `shop` in `mode`.
fn peer_authentication(mode: &str) -> String {
    format!(
        "apiVersion: security.trellis.dev/v1alpha1\nkind: PeerAuthentication\nmetadata: {{name: \
         default, namespace: shop}}\nspec:\n  mtls: {{mode: {mode}}}\n"
    )
}

/// Runs `openssl s_client` in `pod` against `to` offering the mesh's ALPN (with a client
/// certificate when given), sends a request, and returns what it printed.
fn tls_attempt(pod: &MeshPod, to: SocketAddr, cert: Option<(&Path, &Path)>) -> String {
    let mut cmd = pod.netns.command(None, Path::new("openssl"));
    cmd.args(["s_client", "-connect", &to.to_string(), "-alpn", "trellis"])
        .args(["-servername", "b.shop", "-ign_eof"]);
    if let Some((c, k)) = cert {
        cmd.arg("-cert").arg(c).arg("-key").arg(k);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
    }
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Mutual TLS between sidecars: identities both ways (the app sees its caller's SPIFFE ID),
/// PERMISSIVE by default, STRICT refusing plaintext and TLS without a mesh certificate, back to
/// PERMISSIVE by a file edit, and a server presenting the wrong identity refused by the client.
#[test]
fn sidecars_speak_mutual_tls_as_peer_authentication_says() {
    let Some(net) = network_or_skip("sidecars_speak_mutual_tls_as_peer_authentication_says") else {
        return;
    };
    let module = trellis_harness::load::wasm_module("trellis-policy-wasm").unwrap();
    let module = module.display().to_string();
    let modules_on_bridge = format!("{}:0", net.gateway);
    let mut mesh = Mesh::start_with(
        net,
        &[("shop", true), ("outside", false)],
        true,
        &[
            "--policy-module",
            &module,
            "--module-server-address",
            &modules_on_bridge,
        ],
    );
    let spec = |name, sidecar| PodSpec {
        namespace: if sidecar { "shop" } else { "outside" },
        name,
        labels: &[],
        sidecar,
        ip: None,
        app_env: &[],
    };
    let b = mesh.pod_as(
        PodSpec {
            labels: &[("app", "b")],
            ..spec("b", true)
        },
        "b",
    );
    let a = mesh.pod_as(spec("a", true), "a");
    let c = mesh.pod_as(spec("c", true), "c");
    let plain = mesh.pod(spec("plain", false));
    let d = mesh.pod_as(
        PodSpec {
            labels: &[("app", "d")],
            ..spec("d", true)
        },
        "evil",
    );
    let b_svc = mesh.service("shop", "b", 10, 80, &[("app", "b")]);
    let d_svc = mesh.service("shop", "d", 11, 80, &[("app", "d")]);
    mesh.ready();

    // Each agent started its pod's Envoy and reports it ready (the pod's startup probe), and
    // proxy-status shows how long each sidecar's certificate has left.
    let (status, body) = mesh.pods[a].agent_readiness().unwrap();
    println!("a's agent GET /ready: {status} {}", body.trim());
    assert_eq!(status, 200, "{body}");
    let proxies = mesh.cp.proxies().unwrap();
    let a_proxy = proxies
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"] == "pod/shop/a")
        .unwrap()
        .clone();
    println!("a in /proxies: certificate {}", a_proxy["certificate"]);
    assert_eq!(
        a_proxy["certificate"]["identity"],
        "spiffe://cluster.local/ns/shop/sa/a"
    );
    let left = a_proxy["certificate"]["not_after"].as_u64().unwrap()
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
    assert!(
        left > 3000 && left <= 3600 + 300,
        "{left} s left of a 1 h certificate"
    );

    // Pod a (service account a) to Service b: mutual TLS, and b's app sees a's identity.
    let r = mesh.pods[a].request(b_svc, "b.shop", "/", &[]).unwrap();
    let xfcc = r.json()["headers"]["X-Forwarded-Client-Cert"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!("a -> b: {} x-forwarded-client-cert: {xfcc}", r.status);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/shop/sa/a"),
        "{xfcc}"
    );
    let handshakes = mesh.pods[a]
        .sidecar_stat("cluster.service_shop_b_80.ssl.handshake")
        .unwrap();
    assert!(handshakes >= 1, "a's sidecar made no TLS handshake to b");

    // PERMISSIVE (the default): plaintext from a pod outside the mesh gets through.
    let b_pod = SocketAddr::from((mesh.pods[b].ip(), APP_PORT));
    let r = mesh.pods[plain].request(b_pod, "b", "/", &[]).unwrap();
    assert_eq!(r.status, 200);
    println!(
        "PERMISSIVE: plaintext from outside the mesh -> {}",
        r.status
    );
    // b's sidecar counts those plaintext connections (its own stats, over mutual TLS to the
    // control plane), and vet online names the service account whose pods took them.
    let mut finding = serde_json::Value::Null;
    // Stats arrive every 10 s and are evaluated every 10 s.
    let started = Instant::now();
    eventually_within(
        "vet to report b's plaintext callers (TRL0114)",
        Duration::from_secs(60),
        || {
            std::thread::sleep(Duration::from_millis(400));
            let _ = mesh.pods[plain].request(b_pod, "b", "/", &[]);
            let vet: serde_json::Value =
                trellis_harness::http_get_text(mesh.cp.admin, "/api/vet?code=TRL0114")
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
            finding = vet["findings"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|f| f["object"]["kind"] == "ServiceAccount" && f["object"]["name"] == "b")
                .cloned()
                .unwrap_or_default();
            (!finding.is_null()).then_some(()).ok_or(vet.to_string())
        },
    );
    println!("after {:?}, vet: {}", started.elapsed(), finding["message"]);
    assert!(
        finding["message"]
            .as_str()
            .unwrap()
            .contains(&format!("on port {APP_PORT}")),
        "{finding}"
    );

    // STRICT: plaintext is closed without a response; the mesh still gets through.
    let no_chain = "listener.0.0.0.0_15006.no_filter_chain_match";
    let before = mesh.pods[b].sidecar_stat(no_chain).unwrap();
    mesh.write("peer-authentication.yaml", &peer_authentication("STRICT"));
    eventually("STRICT closes plaintext", || {
        match mesh.pods[plain].request(b_pod, "b", "/", &[]) {
            Err(e) => {
                println!("STRICT: plaintext from outside the mesh -> {e:#}");
                Ok(())
            }
            Ok(r) => Err(format!("answered {}", r.status)),
        }
    });
    let after = mesh.pods[b].sidecar_stat(no_chain).unwrap();
    println!("b's sidecar {no_chain}: {before} -> {after}");
    assert!(after > before);
    let status = mesh
        .cp
        .object_status("PeerAuthentication", "shop/default")
        .unwrap()
        .unwrap();
    println!(
        "PeerAuthentication shop/default status: {}",
        status["status"]
    );
    assert_eq!(status["status"]["mode"], "STRICT");
    assert!(status["status"]["pods"].as_u64().unwrap() >= 3);
    let r = mesh.pods[a].request(b_svc, "b.shop", "/", &[]).unwrap();
    assert_eq!(r.status, 200, "the mesh still gets through under STRICT");

    // A Gateway's proxy (beside its agent, with the Gateway's identity) speaks the mesh's
    // mutual TLS to b as a sidecar would, so STRICT takes it, and b's app sees the Gateway.
    let (ip, port) = trellis_harness::private_loopback();
    mesh.write(
        "gateway.yaml",
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n\
             metadata: {{name: trellis}}\nspec: {{controllerName: trellis.dev/gateway-controller}}\n\
             ---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: edge, namespace: shop}}\n\
             spec:\n  gatewayClassName: trellis\n  addresses: [{{type: IPAddress, value: {ip}}}]\n\
             \x20 listeners: [{{name: http, port: {port}, protocol: HTTP}}]\n\
             ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: edge, namespace: shop}}\n\
             spec:\n  parentRefs: [{{name: edge}}]\n  hostnames: [b.example.com]\n\
             \x20 rules: [{{backendRefs: [{{name: b, port: 80}}]}}]\n"
        ),
    );
    let gateway_envoy = mesh
        .cp
        .start_gateway_proxy("shop/edge", false, "edge-1", "envoy-edge", 1)
        .unwrap();
    let gateway = SocketAddr::from((ip, port));
    let mut reply = None;
    eventually("the Gateway to reach STRICT b", || {
        let r = trellis_harness::request(gateway, "GET", "b.example.com", "/", &[])
            .map_err(|e| e.to_string())?;
        if r.status == 200 {
            reply = Some(r);
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.body))
        }
    });
    let r = reply.unwrap();
    let xfcc = r.json()["headers"]["X-Forwarded-Client-Cert"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!(
        "Gateway -> STRICT b: {} x-forwarded-client-cert: {xfcc}",
        r.status
    );
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/shop/sa/edge-gateway"),
        "{xfcc}"
    );
    drop(gateway_envoy);

    // TLS without a client certificate, and with one from another CA: the handshake fails.
    let no_cert = tls_attempt(&mesh.pods[plain], b_pod, None);
    let stranger = rcgen::generate_simple_self_signed(vec!["a.shop".to_string()]).unwrap();
    let cert = mesh.work.join("stranger.pem");
    let key = mesh.work.join("stranger.key");
    std::fs::write(&cert, stranger.cert.pem()).unwrap();
    std::fs::write(&key, stranger.signing_key.serialize_pem()).unwrap();
    let other_ca = tls_attempt(&mesh.pods[plain], b_pod, Some((&cert, &key)));
    for (what, out) in [
        ("no client certificate", &no_cert),
        ("another CA", &other_ca),
    ] {
        let alert = out
            .lines()
            .find(|l| l.contains("alert"))
            .unwrap_or("(no alert line)");
        println!("TLS with {what}: {alert}");
        assert!(!out.contains("HTTP/1.1 200"), "{what}: {out}");
        assert!(out.contains("alert"), "{what}: {out}");
    }
    let fail_no_cert = mesh.pods[b]
        .sidecar_stat("listener.0.0.0.0_15006.ssl.fail_verify_no_cert")
        .unwrap()
        + mesh.pods[b]
            .sidecar_stat("listener.0.0.0.0_15006.ssl.connection_error")
            .unwrap();
    let fail_verify = mesh.pods[b]
        .sidecar_stat("listener.0.0.0.0_15006.ssl.fail_verify_error")
        .unwrap();
    println!("b's sidecar: no-certificate failures {fail_no_cert}, verify failures {fail_verify}");
    assert!(fail_verify >= 1);
    // trellis mtls-status: each pod's identity and mode, and what its sidecar saw inbound.
    let out = std::process::Command::new(trellis_harness::trellis_bin().unwrap())
        .args(["mtls-status", "--admin-address", &mesh.cp.admin.to_string()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    println!("trellis mtls-status:\n{table}");
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("shop/b "))
        .unwrap_or_else(|| panic!("no row for shop/b:\n{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[1], "spiffe://cluster.local/ns/shop/sa/b", "{table}");
    assert_eq!(row[2], "STRICT", "{table}");
    let counts: Vec<u64> = row[4..7].iter().map(|c| c.parse().unwrap_or(0)).collect();
    assert!(
        counts[0] >= 1 && counts[1] >= 2 && counts[2] >= 1,
        "{table}"
    );
    // An hour's certificate, issued a few minutes ago (this test takes a while).
    let minutes: u64 = row[7]
        .split_once('m')
        .and_then(|(m, _)| m.parse().ok())
        .unwrap_or(0);
    assert!(
        row[7].starts_with("1h00m") || (50..60).contains(&minutes),
        "the certificate's time left (an hour's certificate): {table}"
    );

    // Back to PERMISSIVE by a file edit: the same plaintext request gets 200.
    mesh.write(
        "peer-authentication.yaml",
        &peer_authentication("PERMISSIVE"),
    );
    eventually("PERMISSIVE takes plaintext again", || {
        let r = mesh.pods[plain]
            .request(b_pod, "b", "/", &[])
            .map_err(|e| format!("{e:#}"))?;
        (r.status == 200)
            .then(|| println!("PERMISSIVE again: plaintext -> {}", r.status))
            .ok_or(format!("answered {}", r.status))
    });

    // A server presenting a valid certificate of the wrong identity: pod d holds a certificate
    // for service account `evil`, while its Pod object now says `d`. The client refuses it.
    mesh.pods[d].set_service_account("d");
    mesh.write("pod-shop-d.yaml", &mesh.pods[d].pod_yaml());
    eventually("the client refuses d's certificate", || {
        let r = mesh.pods[a]
            .request(d_svc, "d.shop", "/", &[])
            .map_err(|e| format!("{e:#}"))?;
        let log = mesh.pods[a].sidecar_log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("upstream_tls_failure=TLS_error"))
            .unwrap_or_default()
            .to_string();
        (r.status == 503 && line.contains("SAN"))
            .then(|| println!("a -> d (a certificate of sa evil where sa d is expected): {}\na's access log: {line}", r.status))
            .ok_or(format!("{} {}; log: {line}", r.status, r.body))
    });
    let san = mesh.pods[a]
        .sidecar_stat("cluster.service_shop_d_80.ssl.fail_verify_san")
        .unwrap();
    println!("a's sidecar cluster.service_shop_d_80.ssl.fail_verify_san: {san}");
    assert!(san >= 1);

    // Authorization by identity: a policy on Service b lets only service account a in; c gets
    // 403 from b's sidecar, a still 200. A rule by namespace lets c's namespace in too.
    mesh.write("authz.yaml", &only_a(false));
    eventually("c is refused by b's sidecar", || {
        let r = mesh.pods[c]
            .request(b_svc, "b.shop", "/", &[])
            .map_err(|e| format!("{e:#}"))?;
        (r.status == 403)
            .then(|| println!("only sa a allowed: c -> b {}", r.status))
            .ok_or(format!("answered {}", r.status))
    });
    let r = mesh.pods[a].request(b_svc, "b.shop", "/", &[]).unwrap();
    println!("only sa a allowed: a -> b {}", r.status);
    assert_eq!(r.status, 200);
    // b's policy filter counts its requests by the caller's SPIFFE ID (telemetry).
    let by_a = "wasmcustom.trellis_inbound_requests_total.peer.spiffe://cluster_local/ns/shop/sa/a";
    // (A connection a's sidecar opened before the policy keeps the old filter chain until it
    // drains: Envoy closes it after its next response.)
    eventually("b's sidecar to count a's request", || {
        let _ = mesh.pods[a].request(b_svc, "b.shop", "/", &[]);
        let counted = mesh.pods[b].sidecar_stat(by_a).map_err(|e| e.to_string())?;
        (counted >= 1)
            .then(|| println!("b's sidecar {by_a}: {counted}"))
            .ok_or(format!("{by_a}: {counted}"))
    });
    let status = mesh
        .cp
        .object_status("AuthorizationPolicy", "shop/only-a")
        .unwrap()
        .unwrap();
    let ancestor = &status["status"]["ancestors"][0];
    assert_eq!(ancestor["ancestorRef"]["kind"], "Service", "{status}");
    assert_eq!(ancestor["conditions"][0]["status"], "True", "{status}");
    mesh.write("authz.yaml", &only_a(true));
    eventually("namespace shop is let in", || {
        let r = mesh.pods[c]
            .request(b_svc, "b.shop", "/", &[])
            .map_err(|e| format!("{e:#}"))?;
        (r.status == 200)
            .then(|| println!("namespace shop allowed: c -> b {}", r.status))
            .ok_or(format!("answered {}", r.status))
    });
}

/// An AuthorizationPolicy on Service b: deny unless the caller is service account a (or, with
/// `namespace`, any caller of namespace shop).
fn only_a(namespace: bool) -> String {
    let extra = if namespace {
        "\n  - {name: shop, action: Allow, namespaces: [shop]}"
    } else {
        ""
    };
    format!(
        "apiVersion: policy.trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: \
         only-a, namespace: shop}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: b}}]\n  \
         defaultAction: Deny\n  rules:\n  - {{name: a, action: Allow, principals: \
         [\"spiffe://cluster.local/ns/shop/sa/a\"]}}{extra}\n"
    )
}

/// Certificate rotation under load: two-minute certificates, requests from a to b for five
/// minutes (`TRELLIS_ROTATION_SECS` to change it) with a control-plane restart halfway; every
/// request succeeds and both agents renew at least twice.
#[test]
fn certificates_rotate_under_load_across_a_control_plane_restart() {
    let test = "certificates_rotate_under_load_across_a_control_plane_restart";
    let Some(net) = network_or_skip(test) else {
        return;
    };
    let seconds: u64 = std::env::var("TRELLIS_ROTATION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut mesh = Mesh::start_with(net, &[("shop", true)], true, &[]);
    mesh.lifetime_secs = 120;
    let spec = |name, labels| PodSpec {
        namespace: "shop",
        name,
        labels,
        sidecar: true,
        ip: None,
        app_env: &[],
    };
    let b = mesh.pod_as(spec("b", &[("app", "b")]), "b");
    let a = mesh.pod_as(spec("a", &[]), "a");
    let b_svc = mesh.service("shop", "b", 10, 80, &[("app", "b")]);
    mesh.ready();
    let serial = |pod: &MeshPod| -> String {
        let certs: serde_json::Value =
            serde_json::from_str(&pod.admin("/certs").unwrap_or_default()).unwrap_or_default();
        certs["certificates"][0]["cert_chain"][0]["serial_number"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let first = (serial(&mesh.pods[a]), serial(&mesh.pods[b]));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let looping = mesh.pods[a].netns.spawn(move || {
        let (mut ok, mut failed) = (0u64, Vec::new());
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            match trellis_harness::request(b_svc, "GET", "b.shop", "/", &[]) {
                Ok(r) if r.status == 200 => ok += 1,
                Ok(r) => failed.push(format!("{} {}", r.status, r.body.trim())),
                Err(e) => failed.push(format!("{e:#}")),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (ok, failed)
    });
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds / 2));
    mesh.cp.restart().unwrap();
    println!("control plane restarted after {:?}", started.elapsed());
    std::thread::sleep(Duration::from_secs(seconds - seconds / 2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = looping.join().unwrap().unwrap();
    let last = (serial(&mesh.pods[a]), serial(&mesh.pods[b]));
    let obtained = |pod: &MeshPod| {
        pod.agent_log()
            .lines()
            .filter(|l| l.contains("certificate obtained"))
            .count()
    };
    let (renewed_a, renewed_b) = (obtained(&mesh.pods[a]) - 1, obtained(&mesh.pods[b]) - 1);
    println!(
        "{seconds} s of requests a -> b with 120 s certificates: {ok} succeeded, {} failed; \
         renewals: a {renewed_a}, b {renewed_b}; serials a {} -> {}, b {} -> {}",
        failed.len(),
        first.0,
        last.0,
        first.1,
        last.1
    );
    assert!(
        failed.is_empty(),
        "failed requests: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(ok > seconds * 5, "{ok} requests");
    if seconds >= 240 {
        assert!(
            renewed_a >= 2 && renewed_b >= 2,
            "renewals a {renewed_a}, b {renewed_b}"
        );
    }
    assert_ne!(first.0, last.0, "a's sidecar serves a renewed certificate");
    assert_ne!(first.1, last.1, "b's sidecar serves a renewed certificate");
}

#[test]
fn a_request_through_two_sidecars_is_one_trace_of_parent_and_child_spans() {
    let Some(net) = network_or_skip("a_request_through_two_sidecars_is_one_trace") else {
        return;
    };
    let mut mesh = Mesh::start(net, &[("shop", true)]);
    let spec = |name| PodSpec {
        namespace: "shop",
        name,
        labels: &[],
        sidecar: true,
        ip: None,
        app_env: &[],
    };
    // b's app calls Service c for each request and forwards the trace context; d's app calls
    // c too, and drops it.
    let call_c = format!("http://{}:80/", mesh.net.service_ip(12));
    mesh.pod_as(
        PodSpec {
            labels: &[("app", "b")],
            app_env: &[("CALL_URL", &call_c)],
            ..spec("b")
        },
        "b",
    );
    mesh.pod_as(
        PodSpec {
            labels: &[("app", "c")],
            ..spec("c")
        },
        "c",
    );
    mesh.pod_as(
        PodSpec {
            labels: &[("app", "d")],
            app_env: &[("CALL_URL", &call_c), ("FORWARD_TRACE_CONTEXT", "false")],
            ..spec("d")
        },
        "d",
    );
    let a = mesh.pod_as(spec("a"), "a");
    let b_svc = mesh.service("shop", "b", 10, 80, &[("app", "b")]);
    mesh.service("shop", "c", 12, 80, &[("app", "c")]);
    let d_svc = mesh.service("shop", "d", 13, 80, &[("app", "d")]);
    mesh.write(
        "tracing.yaml",
        "apiVersion: telemetry.trellis.dev/v1alpha1\nkind: TracingPolicy\n\
         metadata: {name: b, namespace: shop}\n\
         spec:\n  targetRefs: [{kind: Service, name: b}, {kind: Service, name: c}, \
         {kind: Service, name: d}]\n  samplingPercent: 100\n",
    );
    mesh.ready();

    // The caller's sidecar starts the trace (and returns the request id); b's continues it.
    let mut request_id = String::new();
    eventually("a traced request from a to b", || {
        let r = mesh.pods[a]
            .request(b_svc, "b.shop", "/", &[])
            .map_err(|e| e.to_string())?;
        let traceparent = r.json()["headers"]["Traceparent"][0]
            .as_str()
            .unwrap_or_default()
            .to_string();
        request_id = r
            .headers
            .iter()
            .find(|(k, _)| k == "x-request-id")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        (r.status == 200 && !traceparent.is_empty() && !request_id.is_empty())
            .then_some(())
            .ok_or(format!("{} traceparent {traceparent:?}", r.status))
    });
    let mut trace = serde_json::Value::Null;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        trace = trellis_harness::http_get_text(
            mesh.cp.admin,
            &format!("/api/traces?request_id={request_id}"),
        )
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
        // a's two spans, b's four (its call to c's too), c's two.
        if trace["spans"].as_array().is_some_and(|s| s.len() >= 8) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let spans = trace["spans"]
        .as_array()
        .unwrap_or_else(|| panic!("no trace of request {request_id}: {trace}"));
    for s in spans {
        println!(
            "  {} {} {:?} span {} parent {}",
            s["service"], s["kind"], s["name"], s["span_id"], s["parent_span_id"]
        );
    }
    assert!(
        spans.len() >= 8,
        "a's two spans, b's four, c's two: {trace}"
    );
    // One tree: a single root (a's sidecar), every other span's parent in the trace.
    let ids: Vec<&serde_json::Value> = spans.iter().map(|s| &s["span_id"]).collect();
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| s["parent_span_id"].is_null())
        .collect();
    assert_eq!(roots.len(), 1, "{trace}");
    assert_eq!(
        roots[0]["service"], "shop",
        "the caller's sidecar starts it"
    );
    for s in spans.iter().filter(|s| !s["parent_span_id"].is_null()) {
        assert!(ids.contains(&&s["parent_span_id"]), "orphan span: {s}");
    }
    let b_ingress = spans
        .iter()
        .find(|s| s["service"] == "shop/b" && s["kind"] == "server")
        .unwrap_or_else(|| panic!("no server span from b's sidecar: {trace}"));
    let parent = spans
        .iter()
        .find(|s| s["span_id"] == b_ingress["parent_span_id"])
        .unwrap();
    assert_eq!(parent["service"], "shop", "b's span is a child of a's");
    println!(
        "request {request_id}: trace {} of {} spans across the sidecars of a, b and c",
        trace["trace_id"],
        spans.len()
    );

    // The edge a -> b, by a's workload identity, from a's sidecar's stats.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut detail = serde_json::Value::Null;
    while Instant::now() < deadline {
        let _ = mesh.pods[a].request(b_svc, "b.shop", "/", &[]);
        detail = trellis_harness::http_get_text(mesh.cp.admin, "/api/services/shop/b")
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let found = detail["edges"].as_array().is_some_and(|edges| {
            edges
                .iter()
                .any(|e| e["caller"] == "spiffe://cluster.local/ns/shop/sa/a")
        });
        if found {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("edges of shop/b: {}", detail["edges"]);
    assert!(
        detail["edges"].as_array().is_some_and(|e| e
            .iter()
            .any(|e| e["caller"] == "spiffe://cluster.local/ns/shop/sa/a")),
        "{detail}"
    );

    // d's app drops the trace context: each of its calls to c starts a new trace, and vet
    // (from the trace store) says so; b's calls continue their traces.
    let started = Instant::now();
    let mut findings = serde_json::Value::Null;
    eventually_within(
        "vet to report that d drops the trace context (TRL0901)",
        Duration::from_secs(45),
        || {
            let r = mesh.pods[a]
                .request(d_svc, "d.shop", "/", &[])
                .map_err(|e| e.to_string())?;
            let called = r
                .headers
                .iter()
                .find(|(k, _)| k == "x-echo-call-status")
                .map(|(_, v)| v.clone());
            if called.as_deref() != Some("200") {
                return Err(format!("d's call to c: {called:?}"));
            }
            let _ = mesh.pods[a].request(b_svc, "b.shop", "/", &[]);
            std::thread::sleep(Duration::from_millis(300));
            findings = trellis_harness::http_get_text(mesh.cp.admin, "/api/vet?code=TRL0901")
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let found = findings["findings"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["object"]["name"] == "d"));
            found.then_some(()).ok_or(findings.to_string())
        },
    );
    let findings = findings["findings"].as_array().unwrap();
    println!(
        "after {:?}, vet: {}",
        started.elapsed(),
        findings
            .iter()
            .map(|f| format!("{} {}: {}", f["code"], f["object"]["name"], f["message"]))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(findings.len(), 1, "b forwards, so only d is reported");
    assert_eq!(findings[0]["object"]["kind"], "Service");
    assert_eq!(findings[0]["object"]["namespace"], "shop");
}

/// A CA and a server certificate for `host`, signed by it: (CA PEM, certificate PEM, key PEM).
fn external_server_certificate(host: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "External Test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// Egress: namespace `team`'s sidecar reaches a declared external service by name, with TLS
/// originated by the sidecar (the app speaks plain HTTP to port 80; the server, outside the
/// mesh, speaks only TLS on 8443 and the sidecar verifies its name against the declared CA);
/// an undeclared destination passes through, until the namespace is made registry-only: then
/// it is blocked (the blackhole counter moves) and the declared one still answers.
#[test]
fn declared_external_services_are_reached_with_tls_and_undeclared_ones_blocked_on_demand() {
    let Some(net) = network_or_skip("egress") else {
        return;
    };
    let mut mesh = Mesh::start(net, &[("team", true)]);
    let client = mesh.pod(PodSpec {
        namespace: "team",
        name: "client",
        labels: &[("app", "client")],
        sidecar: true,
        ip: None,
        app_env: &[],
    });
    mesh.service("team", "client", 1, 80, &[("app", "client")]);
    // The external server: its own network namespace, no sidecar, no Pod object; plain HTTP on
    // 8080 (undeclared) and HTTPS on 8443 as api.external.test.
    let host = "api.external.test";
    let (ca_pem, cert_pem, key_pem) = external_server_certificate(host);
    let cert = mesh.work.join("external.crt");
    let key = mesh.work.join("external.key");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, &key_pem).unwrap();
    let external = mesh.net.pod("external").unwrap();
    let mut cmd = external.command(None, &trellis_harness::echo_bin().unwrap());
    cmd.arg("--address")
        .arg("0.0.0.0")
        .env("HTTP_PORT", APP_PORT.to_string())
        .env("H2C_PORT", "0")
        .env("HTTPS_PORT", "8443")
        .env("TLS_SERVER_CERT", &cert)
        .env("TLS_SERVER_PRIVKEY", &key)
        .env("POD_NAME", "external");
    let _server = trellis_harness::Process::spawn(cmd, &mesh.work.join("external.log")).unwrap();
    let external_ip = external.ip;
    let indented: String = ca_pem.lines().map(|l| format!("    {l}\n")).collect();
    mesh.write(
        "external.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: external-ca, namespace: team}}\n\
             data:\n  ca.crt: |\n{indented}---\n\
             apiVersion: networking.trellis.dev/v1alpha1\nkind: ExternalService\n\
             metadata: {{name: external-api, namespace: team}}\n\
             spec:\n  hosts: [{host}]\n  ports:\n  - name: http\n    port: 80\n    \
             protocol: HTTP\n    targetPort: 8443\n    \
             tls: {{caCertificateRef: {{kind: ConfigMap, name: external-ca}}}}\n  \
             endpoints: [{{address: \"{external_ip}\"}}]\n"
        ),
    );
    mesh.ready();
    eventually("the ExternalService accepted", || {
        let o = mesh
            .cp
            .object_status("ExternalService", "team/external-api")
            .map_err(|e| e.to_string())?
            .ok_or("no status yet")?;
        let accepted = &o["status"]["ancestors"][0]["conditions"][0];
        (accepted["status"] == "True")
            .then_some(())
            .ok_or(format!("{o}"))
    });

    // The app calls http://api.external.test/ (here at the server's address, port 80, where
    // nothing listens): the sidecar sends it over TLS to 8443.
    let declared = SocketAddr::from((external_ip, 80));
    let mut reply = None;
    eventually("the declared external service through TLS", || {
        let r = mesh.pods[client]
            .request(declared, host, "/declared", &[])
            .map_err(|e| e.to_string())?;
        (r.status == 200)
            .then(|| reply = Some(r.json()))
            .ok_or("not yet".to_string())
    });
    let body = reply.unwrap();
    println!(
        "declared {host}: answered by {} over {} (SNI {})",
        body["pod"], body["tls"]["negotiatedProtocol"], body["tls"]["serverName"]
    );
    assert_eq!(body["pod"], "external");
    assert!(body["tls"].is_object(), "not TLS at the server: {body}");

    // Undeclared (plain HTTP on 8080): passed through while the namespace allows any.
    let undeclared = SocketAddr::from((external_ip, APP_PORT));
    let r = mesh.pods[client]
        .request(undeclared, "undeclared", "/", &[])
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.json()["tls"].is_null());
    let passed = mesh.pods[client]
        .sidecar_stat("cluster.passthrough.upstream_cx_total")
        .unwrap();

    // Registry-only: the undeclared destination is blocked, the declared one still answers.
    mesh.write(
        "namespaces.yaml",
        &namespace_yaml("team", true).replace(
            "{trellis.dev/mesh: enabled}",
            "{trellis.dev/mesh: enabled, trellis.dev/outbound-traffic: registry-only}",
        ),
    );
    eventually("the undeclared destination blocked", || {
        match mesh.pods[client].request(undeclared, "undeclared", "/", &[]) {
            Err(_) => Ok(()),
            Ok(r) => Err(format!("answered {}", r.status)),
        }
    });
    let blocked_before = mesh.pods[client]
        .sidecar_stat("cluster.blackhole.upstream_cx_none_healthy")
        .unwrap();
    for _ in 0..5 {
        assert!(
            mesh.pods[client]
                .request(undeclared, "undeclared", "/", &[])
                .is_err()
        );
    }
    let blocked = mesh.pods[client]
        .sidecar_stat("cluster.blackhole.upstream_cx_none_healthy")
        .unwrap();
    let r = mesh.pods[client]
        .request(declared, host, "/still", &[])
        .unwrap();
    assert_eq!(r.status, 200);
    let declared_requests = mesh.pods[client]
        .sidecar_stat("cluster.external_team_external-api_http.upstream_rq_total")
        .unwrap();
    println!(
        "registry-only: 5 more requests to the undeclared destination blocked (blackhole \
         upstream_cx_none_healthy {blocked_before} -> {blocked}); passthrough connections \
         before: {passed}; declared requests: {declared_requests}"
    );
    assert!(
        blocked >= blocked_before + 5,
        "{blocked_before} -> {blocked}"
    );
    assert!(passed >= 1);
    assert!(declared_requests >= 2);

    // The control plane counts them from the sidecars' stats (flushed every 10 s).
    let series = |text: &str, destination: &str| -> u64 {
        let want = format!(
            "trellis_egress_connections_total{{namespace=\"team\",destination=\"{destination}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&want))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = trellis_harness::http_get_text(mesh.cp.admin, "/metrics").unwrap_or_default();
        if series(&text, "blocked") >= 5
            && series(&text, "passthrough") >= 1
            && series(&text, "external:team/external-api/http") >= 1
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let counted: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("trellis_egress_connections_total{"))
        .collect();
    println!("control plane /metrics: {counted:?}");
    assert!(series(&text, "blocked") >= 5, "{counted:?}");
    assert!(series(&text, "passthrough") >= 1, "{counted:?}");
    assert!(
        series(&text, "external:team/external-api/http") >= 1,
        "{counted:?}"
    );
}

/// Chaos and timeouts on mesh traffic, through real sidecars: a BackendTrafficPolicy on a
/// Service aborts only the requests a tester tags (in the caller's sidecar), and a producer
/// route's request timeout turns a slow answer into a 504 there.
#[test]
fn mesh_routes_take_faults_and_timeouts_through_real_sidecars() {
    let Some(net) = network_or_skip("mesh_routes_take_faults_and_timeouts") else {
        return;
    };
    let mut mesh = Mesh::start(net, &[("shop", true)]);
    mesh.pod(PodSpec {
        namespace: "shop",
        name: "b",
        labels: &[("app", "b")],
        sidecar: true,
        ip: None,
        app_env: &[],
    });
    let a = mesh.pod(PodSpec {
        namespace: "shop",
        name: "a",
        labels: &[],
        sidecar: true,
        ip: None,
        app_env: &[],
    });
    let b_svc = mesh.service("shop", "b", 10, 80, &[("app", "b")]);
    mesh.write(
        "resilience.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: b, namespace: shop}\n\
         spec:\n  parentRefs: [{group: \"\", kind: Service, name: b, port: 80}]\n  \
         rules:\n  - timeouts: {request: 300ms}\n    backendRefs: [{name: b, port: 80}]\n---\n\
         apiVersion: policy.trellis.dev/v1alpha1\nkind: BackendTrafficPolicy\n\
         metadata: {name: chaos, namespace: shop}\n\
         spec:\n  targetRefs: [{group: \"\", kind: Service, name: b}]\n  \
         faultInjection:\n    abort: {httpStatus: 418, percentage: 100}\n    \
         headers: [{name: x-chaos, value: me}]\n",
    );
    mesh.ready();
    eventually("the BackendTrafficPolicy accepted", || {
        let o = mesh
            .cp
            .object_status("BackendTrafficPolicy", "shop/chaos")
            .map_err(|e| e.to_string())?
            .ok_or("no status yet")?;
        let accepted = &o["status"]["ancestors"][0]["conditions"][0];
        (accepted["status"] == "True")
            .then_some(())
            .ok_or(format!("{o}"))
    });
    let tagged = [("x-chaos", "me")];
    eventually("a tagged request aborted by a's sidecar", || {
        let r = mesh.pods[a]
            .request(b_svc, "b.shop", "/", &tagged)
            .map_err(|e| e.to_string())?;
        (r.status == 418)
            .then_some(())
            .ok_or(format!("answered {}", r.status))
    });
    let (mut aborted, mut answered) = (0, 0);
    for _ in 0..50 {
        let t = mesh.pods[a].request(b_svc, "b.shop", "/", &tagged).unwrap();
        aborted += u32::from(t.status == 418);
        let u = mesh.pods[a].request(b_svc, "b.shop", "/", &[]).unwrap();
        answered += u32::from(u.status == 200 && u.json()["pod"] == "b");
    }
    let injected = mesh.pods[a]
        .sidecar_stat("http.outbound_shop_b_80.fault.aborts_injected")
        .unwrap();
    println!(
        "faults on mesh traffic: tagged 418 {aborted} of 50, untagged answered by b {answered} \
         of 50; a's sidecar fault.aborts_injected {injected}"
    );
    assert_eq!(aborted, 50);
    assert_eq!(answered, 50);
    assert!(
        injected >= 50,
        "the caller's sidecar injected them: {injected}"
    );

    // The route's 300 ms request timeout, enforced by a's sidecar.
    let started = Instant::now();
    let slow = mesh.pods[a]
        .request(b_svc, "b.shop", "/?delay=2s", &[])
        .unwrap();
    let waited = started.elapsed();
    let fast = mesh.pods[a]
        .request(b_svc, "b.shop", "/?delay=50ms", &[])
        .unwrap();
    println!(
        "request timeout 300ms: /?delay=2s -> {} after {} ms; /?delay=50ms -> {}",
        slow.status,
        waited.as_millis(),
        fast.status
    );
    assert_eq!(slow.status, 504);
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
    assert_eq!(fast.status, 200);
}
