//! Injected pods, run for real: two pods are created through the fake API server, whose
//! mutating admission calls the control plane's injection webhook (the configuration of
//! `deploy/`); each pod then runs as a network namespace with the commands the webhook wrote
//! into it, as the kubelet would: the `trellis-capture` init container's, then the
//! `trellis-proxy` native sidecar's (`trellis agent`, which writes the bootstrap, obtains the
//! certificate with the pod's projected ServiceAccount token, reviewed by the fake API server,
//! and starts Envoy), with their environment from the downward API and their volumes mounted
//! where the spec says. Pod a's request to Service b then crosses both sidecars over mutual TLS.
//!
//! ```text
//!  test ──create Pod──► fake API server ──AdmissionReview──► trellis serve --kubernetes (webhook)
//!                            ▲ list/watch, TokenReview            │ xDS + certificates (mTLS)
//!  netns a: app ─► capture ─► trellis agent ─► Envoy ══ mTLS ══► Envoy ◄─ trellis agent ◄─ netns b
//! ```
//!
//! Needs root (network namespaces, iptables, mounts); skipped elsewhere unless
//! `TRELLIS_REQUIRE_MESH` is set, as CI sets it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use trellis_fake_apiserver::{FakeApiServer, RunningServer};
use trellis_harness::mesh::{AGENT_READINESS_PORT, APP_PORT, APP_UID, PROXY_UID, service_yaml};
use trellis_harness::netns::{Netns, Network, envoy_executable, unavailable};
use trellis_harness::{
    ControlPlane, Process, echo_bin, eventually, private_loopback, request, trellis_bin,
};

/// The xDS port on the bridge.
const XDS_PORT: u16 = 15010;

/// The fake API server on loopback and a client of it.
struct Cluster {
    server: FakeApiServer,
    client: kube::Client,
    _running: RunningServer,
    runtime: tokio::runtime::Runtime,
}

impl Cluster {
    fn start(kubeconfig: &Path) -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = FakeApiServer::new();
        let running = runtime.block_on(server.serve_local()).unwrap();
        running.write_kubeconfig(kubeconfig).unwrap();
        let client = runtime.block_on(running.client()).unwrap();
        Cluster {
            server,
            client,
            _running: running,
            runtime,
        }
    }
}

/// One pod: its namespace, app and the processes its containers run.
struct RunningPod {
    name: String,
    ip: Ipv4Addr,
    // Processes stop before the namespace goes.
    sidecar: Process,
    _app: Process,
    netns: Netns,
}

/// A container's environment as the kubelet resolves it (downward API, literal values).
fn environment(
    container: &Container,
    pod: &str,
    namespace: &str,
    ip: Ipv4Addr,
) -> Vec<(String, String)> {
    container
        .env
        .iter()
        .flatten()
        .map(|e| {
            let value = match e.value_from.as_ref().and_then(|f| f.field_ref.as_ref()) {
                Some(field) => match field.field_path.as_str() {
                    "metadata.name" => pod.to_string(),
                    "metadata.namespace" => namespace.to_string(),
                    "status.podIP" => ip.to_string(),
                    other => panic!("no downward API field {other} here"),
                },
                None => e.value.clone().unwrap_or_default(),
            };
            (e.name.clone(), value)
        })
        .collect()
}

/// `$(VAR)` references in an argument, expanded as the kubelet does.
fn expand(arg: &str, env: &[(String, String)]) -> String {
    env.iter().fold(arg.to_string(), |a, (k, v)| {
        a.replace(&format!("$({k})"), v)
    })
}

/// Runs the pod's init containers' commands in its network namespace: capture to completion,
/// then the native sidecar, its volumes bind-mounted at the spec's paths in a mount namespace of
/// its own (the token the kubelet would project: one the fake API server issued for the pod).
fn run_pod(cluster: &Cluster, net: &Network, work: &Path, pod: &Pod, ip: Ipv4Addr) -> RunningPod {
    use std::os::unix::fs::{PermissionsExt, chown};
    let name = pod.metadata.name.clone().unwrap();
    let namespace = pod.metadata.namespace.clone().unwrap();
    let netns = net.pod_at(&format!("{namespace}-{name}"), ip).unwrap();
    let mut app = netns.command(Some(APP_UID), &echo_bin().unwrap());
    app.arg("--address")
        .arg("0.0.0.0")
        .env("HTTP_PORT", APP_PORT.to_string())
        .env("H2C_PORT", "0")
        .env("POD_NAME", &name)
        .env("NAMESPACE", &namespace);
    let app = Process::spawn(app, &work.join(format!("app-{name}.log"))).unwrap();
    let init = pod.spec.as_ref().unwrap().init_containers.clone().unwrap();
    let [capture, proxy] = [&init[0], &init[1]];
    assert_eq!(
        (capture.name.as_str(), proxy.name.as_str()),
        ("trellis-capture", "trellis-proxy")
    );

    // The init container: the image's entrypoint is `trellis`; runs as root, to completion.
    let status = netns
        .command(None, &trellis_bin().unwrap())
        .args(capture.args.clone().unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "{name}: trellis-capture failed");

    // The sidecar's volumes, owned by its uid: the in-memory run directory and the token.
    let dir = |tag: &str| {
        let d = work.join(format!("{name}-{tag}"));
        std::fs::create_dir_all(&d).unwrap();
        chown(&d, Some(PROXY_UID), Some(PROXY_UID)).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    };
    let run_dir = dir("run");
    let token_dir = dir("token");
    let token = cluster
        .server
        .issue_token(&namespace, &name, "trellis-ca", Duration::from_secs(3600))
        .unwrap();
    std::fs::write(token_dir.join("token"), token).unwrap();
    chown(token_dir.join("token"), Some(PROXY_UID), Some(PROXY_UID)).unwrap();
    let mounts: BTreeMap<String, &Path> = proxy
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            let source = match m.name.as_str() {
                "trellis-run" => run_dir.as_path(),
                "trellis-token" => token_dir.as_path(),
                other => panic!("unexpected volume {other}"),
            };
            (m.mount_path.clone(), source)
        })
        .collect();
    let env = environment(proxy, &name, &namespace, ip);
    // The image's files: `trellis` is the entrypoint, Envoy is at the path the spec names.
    let envoy_in_image = "/usr/local/bin/envoy";
    let args: Vec<String> = proxy
        .args
        .clone()
        .unwrap()
        .iter()
        .map(|a| expand(a, &env))
        .map(|a| {
            if a == envoy_in_image {
                envoy_executable().unwrap().display().to_string()
            } else {
                a
            }
        })
        .collect();
    // A private /run (where the mounts go) in a mount namespace of the sidecar's own.
    let mut script = String::from("mount -t tmpfs tmpfs /run");
    for (i, target) in mounts.keys().enumerate() {
        let target = target.replace("/var/run/", "/run/");
        script.push_str(&format!(
            " && mkdir -p {target} && mount --bind \"$SRC{i}\" {target}"
        ));
    }
    script.push_str(&format!(
        " && exec setpriv --reuid={PROXY_UID} --regid={PROXY_UID} --clear-groups \"$@\""
    ));
    let mut cmd = netns.command(None, Path::new("unshare"));
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ])
    .arg(trellis_bin().unwrap())
    .args(&args)
    .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    .env("RUST_LOG", "info")
    .env("NO_COLOR", "1");
    for (i, source) in mounts.values().enumerate() {
        cmd.env(format!("SRC{i}"), source);
    }
    println!(
        "{namespace}/{name}: trellis {}",
        args.iter()
            .map(|a| if a.contains("BEGIN CERTIFICATE") {
                "<root>"
            } else {
                a
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    let sidecar = Process::spawn(cmd, &work.join(format!("sidecar-{name}.log"))).unwrap();
    RunningPod {
        name,
        ip,
        sidecar,
        _app: app,
        netns,
    }
}

impl RunningPod {
    /// The agent's `/ready`, as the startup probe asks it.
    fn ready(&self) -> Option<(u16, String)> {
        let reply = self
            .netns
            .run(move || {
                request(
                    SocketAddr::from((Ipv4Addr::LOCALHOST, AGENT_READINESS_PORT)),
                    "GET",
                    "localhost",
                    "/ready",
                    &[],
                )
            })
            .ok()?
            .ok()?;
        Some((reply.status, reply.body))
    }
}

#[test]
fn injected_pods_run_the_commands_the_webhook_wrote_and_speak_mutual_tls() {
    if let Some(why) = unavailable() {
        if std::env::var_os("TRELLIS_REQUIRE_MESH").is_some() {
            panic!("TRELLIS_REQUIRE_MESH is set (as CI sets it), but {why}");
        }
        eprintln!("injected_pods_run_the_commands_the_webhook_wrote: skipped: {why}");
        return;
    }
    let net = Network::create().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().to_path_buf();
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let kubeconfig = work.join("kubeconfig");
    let cluster = Cluster::start(&kubeconfig);
    cluster
        .server
        .load_yaml(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {kubernetes.io/metadata.name: shop, trellis.dev/mesh: enabled}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: trellis-system, labels: {kubernetes.io/metadata.name: trellis-system}}\n",
        )
        .unwrap();
    let deploy =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/base/injection.yaml");
    cluster
        .server
        .load_yaml(&std::fs::read_to_string(deploy).unwrap())
        .unwrap();

    let xds = SocketAddr::from((net.gateway, XDS_PORT));
    let (ip, port) = private_loopback();
    let webhook = SocketAddr::from((ip, port));
    let cp = ControlPlane::start_kubernetes_mtls(
        &kubeconfig,
        &work.join("control-plane"),
        &xds.to_string(),
        &[
            "--leader-election-namespace",
            "trellis-system",
            "--leader-election-lease-seconds",
            "3",
            "--debounce-ms",
            "50",
            "--injection-address",
            &webhook.to_string(),
            "--injection-xds-address",
            &xds.to_string(),
            "--sidecar-image",
            "trellis-sidecar:e2e",
        ],
    )
    .unwrap();
    cluster
        .server
        .route_webhook_service("trellis-system", "trellis", 443, webhook);
    let webhook_kind = cluster
        .server
        .kind(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
        )
        .unwrap();
    eventually(
        "the leader to fill in caBundle",
        Duration::from_secs(30),
        || {
            let config =
                cluster
                    .server
                    .store()
                    .get(&webhook_kind, "", "trellis-sidecar-injector")?;
            Ok(config["webhooks"][0]["clientConfig"]["caBundle"].is_string())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.log()));

    // Pods a (service account a) and b (service account b) created through the API.
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "shop");
    let mut created = Vec::new();
    for (name, app) in [("a", "a"), ("b", "b")] {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "app": app } },
            "spec": { "serviceAccountName": name, "containers": [{
                "name": "app", "image": "echo:1",
                "ports": [{ "name": "http", "containerPort": APP_PORT }] }] },
        }))
        .unwrap();
        let pod = cluster
            .runtime
            .block_on(pods.create(&PostParams::default(), &pod))
            .unwrap();
        created.push(pod);
    }
    // The kubelet's part: an IP and Ready.
    let ips = [net.allocate(), net.allocate()];
    for (pod, ip) in created.iter().zip(ips) {
        let status = serde_json::json!({ "status": { "podIP": ip.to_string(),
            "podIPs": [{ "ip": ip.to_string() }],
            "conditions": [{ "type": "Ready", "status": "True" }] } });
        cluster
            .runtime
            .block_on(pods.patch_status(
                pod.metadata.name.as_deref().unwrap(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            ))
            .unwrap();
    }
    let b_service = net.service_ip(1);
    cluster
        .server
        .load_yaml(&service_yaml(
            "shop",
            "b",
            b_service,
            80,
            &[("app", "b")],
            &[(ips[1], "b")],
        ))
        .unwrap();

    let running: Vec<RunningPod> = created
        .iter()
        .zip(ips)
        .map(|(pod, ip)| run_pod(&cluster, &net, &work, pod, ip))
        .collect();
    for pod in &running {
        let mut last = None;
        let ready = eventually("the startup probe", Duration::from_secs(40), || {
            last = pod.ready();
            Ok(last.as_ref().is_some_and(|(status, _)| *status == 200))
        });
        ready.unwrap_or_else(|e| {
            panic!(
                "{}: {e}; last {last:?}\n{}\n{}",
                pod.name,
                pod.sidecar.tail(40),
                cp.log()
            )
        });
        println!("{} {}: GET /ready -> {:?}", pod.name, pod.ip, last);
    }

    // a -> Service b: through both sidecars, over mutual TLS; b's app sees a's identity.
    let to = SocketAddr::from((b_service, 80));
    let mut answer = None;
    eventually(
        "a -> b through both sidecars",
        Duration::from_secs(20),
        || {
            let reply = running[0]
                .netns
                .run(move || request(to, "GET", "b.shop", "/", &[]))??;
            let ok = reply.status == 200;
            answer = Some(reply);
            Ok(ok)
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}",
            running[0].sidecar.tail(30),
            running[1].sidecar.tail(30)
        )
    });
    let reply = answer.unwrap();
    let xfcc = reply.json()["headers"]["X-Forwarded-Client-Cert"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!("a -> b: {} x-forwarded-client-cert: {xfcc}", reply.status);
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/shop/sa/a")
            && xfcc.contains("By=spiffe://cluster.local/ns/shop/sa/b"),
        "{xfcc}"
    );
    let proxies = cp.proxies().unwrap();
    let keys: Vec<&str> = proxies
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["key"].as_str())
        .collect();
    println!("connected proxies: {keys:?}");
    assert!(keys.contains(&"pod/shop/a") && keys.contains(&"pod/shop/b"));
}
