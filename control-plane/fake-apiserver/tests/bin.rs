//! The `fake-apiserver` binary as a separate process, the way end-to-end tests will run it.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, ListParams};
use kube::{CustomResourceExt, ResourceExt};

/// Kills the child when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_loads_a_directory_writes_a_kubeconfig_and_takes_faults_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let load = dir.path().join("objects");
    std::fs::create_dir_all(load.join("nested")).unwrap();
    std::fs::write(
        load.join("00-crd.yaml"),
        serde_saphyr::to_string(&RetryPolicy::crd()).unwrap(),
    )
    .unwrap();
    std::fs::write(
        load.join("nested/objects.yaml"),
        "apiVersion: policy.trellis.dev/v1alpha1
kind: RetryPolicy
metadata: { name: retry, namespace: demo }
spec: { attempts: 4 }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: web }
spec: { gatewayClassName: trellis, listeners: [] }
",
    )
    .unwrap();
    std::fs::write(
        load.join("cm.json"),
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"from-json"}}"#,
    )
    .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let child = Command::new(env!("CARGO_BIN_EXE_fake-apiserver"))
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .arg("--load")
        .arg(&load)
        .arg("--kind")
        .arg("policy.trellis.dev/v1alpha1/MeshPolicy/meshpolicies/cluster")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _process = Process(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kubeconfig.exists() {
        assert!(Instant::now() < deadline, "no kubeconfig written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = client_without_retries(&std::fs::read_to_string(&kubeconfig).unwrap()).await;

    let policies: Api<RetryPolicy> = Api::namespaced(client.clone(), "demo");
    assert_eq!(policies.get("retry").await.unwrap().spec.attempts, 4);
    let gateways: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::api::ApiResource {
            group: "gateway.networking.k8s.io".into(),
            version: "v1".into(),
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "Gateway".into(),
            plural: "gateways".into(),
        },
    );
    assert_eq!(gateways.get("web").await.unwrap().name_any(), "web");
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    assert_eq!(
        cms.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    let mesh = kube::discovery::pinned_kind(
        &client,
        &kube::core::GroupVersionKind::gvk("policy.trellis.dev", "v1alpha1", "MeshPolicy"),
    )
    .await
    .unwrap();
    assert_eq!(mesh.1.scope, kube::discovery::Scope::Cluster);

    let post = |path: &str| {
        hyper::Request::post(path.to_string())
            .body(Vec::new())
            .unwrap()
    };
    client
        .request_text(post("/fake/refuse?seconds=60"))
        .await
        .unwrap();
    assert_eq!(api_code(&cms.get("from-json").await.unwrap_err()), 503);
    client.request_text(post("/fake/recover")).await.unwrap();
    assert_eq!(cms.get("from-json").await.unwrap().name_any(), "from-json");
}

#[tokio::test]
async fn the_binary_refuses_a_directory_with_an_unknown_kind() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("x.yaml"),
        "apiVersion: nothing.example/v1\nkind: Nothing\nmetadata: { name: thing }\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fake-apiserver"))
        .arg("--kubeconfig-out")
        .arg(dir.path().join("kubeconfig"))
        .arg("--load")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Nothing thing"), "{stderr}");
}
