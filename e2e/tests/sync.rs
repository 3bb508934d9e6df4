//! Sync status and incremental pushes, against a real `trellis serve` with simulated proxies:
//! what is (and is not) re-sent when an EndpointSlice or a route changes, `trellis
//! proxy-status`, CSDS, and Gateway `Programmed` following the proxies' ACKs and NACKs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use trellis_harness::ControlPlane;
use trellis_harness::xds_client::{self, Client, ClientConfig, types};

const GATEWAY: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: trellis}
spec: {controllerName: trellis.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: apps}
spec:
  gatewayClassName: trellis
  addresses: [{value: 127.0.0.1}]
  listeners: [{name: http, port: 8080, protocol: HTTP}]
"#;

fn backend(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: apps\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: 3000}}]\nendpoints: [{{addresses: [\"{ip}\"]}}]\n"
    )
}

fn route(name: &str, host: &str, service: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  parentRefs: [{{name: web}}]\n  hostnames: [{host}]\n  rules:\n  - backendRefs: [{{name: {service}, port: 80}}]\n"
    )
}

fn write(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

struct Setup {
    _tmp: tempfile::TempDir,
    config: std::path::PathBuf,
    cp: ControlPlane,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    write(&config, "gateway.yaml", GATEWAY);
    for (i, svc) in ["a", "b", "c"].iter().enumerate() {
        write(
            &config,
            &format!("svc-{svc}.yaml"),
            &backend(svc, &format!("10.0.0.{}", i + 1)),
        );
        write(
            &config,
            &format!("route-{svc}.yaml"),
            &route(svc, &format!("{svc}.example.com"), svc),
        );
    }
    let cp = ControlPlane::start(&config, tmp.path(), &["--debounce-ms", "20"]).unwrap();
    Setup {
        _tmp: tmp,
        config,
        cp,
    }
}

fn config(node: &str, delta: bool, nack: &[&str]) -> ClientConfig {
    ClientConfig {
        node_id: node.to_string(),
        gateway: "apps/web".to_string(),
        delta,
        nack: nack.iter().map(|s| s.to_string()).collect(),
        pod: None,
    }
}

/// Waits until `f` holds, polling.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn received_count(c: &Client) -> usize {
    c.log.lock().unwrap().received.len()
}

fn holds(c: &Client, type_url: &str) -> usize {
    c.log
        .lock()
        .unwrap()
        .held
        .get(type_url)
        .map_or(0, |m| m.len())
}

/// A settled client: it holds 3 clusters, 3 endpoints, 1 listener, 1 route configuration.
async fn settled(c: &Client) {
    until("the client to hold the whole configuration", || {
        holds(c, types::CLUSTER) == 3
            && holds(c, types::ENDPOINT) == 3
            && holds(c, types::LISTENER) == 1
            && holds(c, types::ROUTE) == 1
    })
    .await;
    // Let the ACKs land.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn endpoint_change_resends_only_the_affected_assignment(delta: bool) {
    let s = setup();
    let channel = xds_client::connect(s.cp.xds).await.unwrap();
    let c = xds_client::start(channel, config("p1", delta, &[]))
        .await
        .unwrap();
    settled(&c).await;
    let before = received_count(&c);
    write(&s.config, "svc-b.yaml", &backend("b", "10.0.0.99"));
    until("the endpoint update", || received_count(&c) > before).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = c.log.lock().unwrap();
    let after: Vec<_> = log.received[before..].iter().collect();
    println!(
        "{} after an EndpointSlice change: {:?}",
        if delta { "Delta" } else { "SotW" },
        after
            .iter()
            .map(|r| (
                r.type_url.rsplit('.').next().unwrap_or(""),
                r.resources.len(),
                r.bytes
            ))
            .collect::<Vec<_>>()
    );
    assert_eq!(after.len(), 1, "one response: {after:?}");
    assert_eq!(after[0].type_url, types::ENDPOINT);
    if delta {
        assert_eq!(
            after[0].resources.len(),
            1,
            "only the changed assignment is sent"
        );
        assert_eq!(after[0].resources[0].0, "service/apps/b/80");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_endpoint_change_resends_only_the_affected_assignment() {
    endpoint_change_resends_only_the_affected_assignment(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_endpoint_change_resends_only_the_endpoint_type() {
    endpoint_change_resends_only_the_affected_assignment(false).await;
}

async fn route_change_does_not_resend_clusters(delta: bool) {
    let s = setup();
    let channel = xds_client::connect(s.cp.xds).await.unwrap();
    let c = xds_client::start(channel, config("p1", delta, &[]))
        .await
        .unwrap();
    settled(&c).await;
    let before = received_count(&c);
    // Route `a` now also answers another hostname: only routes change.
    write(
        &s.config,
        "route-a.yaml",
        &route("a", "a2.example.com", "a"),
    );
    until("the route update", || received_count(&c) > before).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = c.log.lock().unwrap();
    let types_after: BTreeSet<&str> = log.received[before..]
        .iter()
        .map(|r| r.type_url.as_str())
        .collect();
    assert_eq!(
        types_after,
        BTreeSet::from([types::ROUTE]),
        "only routes are re-sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_route_change_does_not_resend_clusters() {
    route_change_does_not_resend_clusters(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_route_change_does_not_resend_clusters() {
    route_change_does_not_resend_clusters(false).await;
}

fn gateway_programmed(cp: &ControlPlane) -> serde_json::Value {
    let gw = cp
        .object_status("Gateway", "apps/web")
        .unwrap()
        .unwrap_or_default();
    gw["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Programmed").cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_with_one_nacking_proxy_shows_in_proxy_status_csds_and_gateway_status() {
    let s = setup();
    // No proxy yet: the Gateway is not programmed.
    until("Programmed Pending", || {
        gateway_programmed(&s.cp)["reason"] == "Pending"
    })
    .await;

    // A proxy that rejects every cluster update: the Gateway is Invalid with its error.
    let channel = xds_client::connect(s.cp.xds).await.unwrap();
    let _bad = xds_client::start(
        channel.clone(),
        config("proxy-nacking", false, &[types::CLUSTER]),
    )
    .await
    .unwrap();
    until("Programmed Invalid", || {
        gateway_programmed(&s.cp)["reason"] == "Invalid"
    })
    .await;
    let programmed = gateway_programmed(&s.cp);
    assert!(
        programmed["message"]
            .as_str()
            .unwrap()
            .contains("proxy-nacking rejected CDS"),
        "{programmed}"
    );

    // Two healthy proxies (SotW and Delta) apply it: Programmed.
    let ok1 = xds_client::start(channel.clone(), config("proxy-sotw", false, &[]))
        .await
        .unwrap();
    let ok2 = xds_client::start(channel.clone(), config("proxy-delta", true, &[]))
        .await
        .unwrap();
    settled(&ok1).await;
    settled(&ok2).await;
    until("Programmed True", || {
        gateway_programmed(&s.cp)["status"] == "True"
    })
    .await;
    let programmed = gateway_programmed(&s.cp);
    println!("Gateway Programmed: {programmed}");
    assert!(
        programmed["message"]
            .as_str()
            .unwrap()
            .contains("1 rejected it: proxy-nacking rejected CDS"),
        "{programmed}"
    );

    // proxy-status.
    let out = std::process::Command::new(trellis_harness::trellis_bin().unwrap())
        .args(["proxy-status", "--admin-address", &s.cp.admin.to_string()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    println!("trellis proxy-status:\n{table}");
    let line = |node: &str| {
        table
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("proxy-nacking").contains("NACKED"), "{table}");
    assert!(line("proxy-sotw").matches("SYNCED").count() >= 4, "{table}");
    assert!(
        line("proxy-delta").matches("SYNCED").count() >= 4,
        "{table}"
    );
    assert!(table.contains("rejected on purpose"), "{table}");

    // CSDS reports the same.
    let mut csds = ClientStatusDiscoveryServiceClient::new(channel);
    let response = csds
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.config.len(), 3);
    let errors: Vec<String> = response
        .config
        .iter()
        .filter(|c| c.generic_xds_configs.iter().any(|g| g.config_status == 4))
        .map(|c| c.node.as_ref().unwrap().id.clone())
        .collect();
    assert_eq!(errors, ["proxy-nacking"]);
}
