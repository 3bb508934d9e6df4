//! The server over real HTTP on 127.0.0.1: kube clients built from the generated kubeconfig,
//! refusing and recovering, latency, and the `/fake/...` admin API.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, ResourceExt};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::{Value, json};
use trellis_fake_apiserver::{FakeApiServer, Refusal};

async fn client_from_file(path: &std::path::Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    kube::Client::try_from(config).unwrap()
}

fn names(reader: &reflector::Store<ConfigMap>) -> BTreeSet<String> {
    reader.state().iter().map(|c| c.name_any()).collect()
}

fn reflect(client: kube::Client, ns: &str) -> reflector::Store<ConfigMap> {
    let api: Api<ConfigMap> = Api::namespaced(client, ns);
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .boxed();
    tokio::spawn(stream.for_each(|_| async {}));
    reader
}

async fn admin(client: &kube::Client, method: &str, path: &str, body: &str) -> Value {
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .body(body.as_bytes().to_vec())
        .unwrap();
    serde_json::from_str(&client.request_text(request).await.unwrap()).unwrap()
}

#[tokio::test]
async fn a_client_built_from_the_generated_kubeconfig_reads_writes_and_watches_over_http() {
    let server = server();
    let running = server.serve_local().await.unwrap();
    assert!(running.address().ip().is_loopback());
    assert_ne!(running.address().port(), 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    running.write_kubeconfig(&path).unwrap();
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains(&running.url())
    );
    let client = client_from_file(&path).await;

    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &config_map("a", &[], "1"))
        .await
        .unwrap();
    let reader = reflect(client.clone(), "default");
    reader.wait_until_ready().await.unwrap();
    assert_eq!(names(&reader), ["a".to_string()].into());

    api.create(&PostParams::default(), &config_map("b", &[], "1"))
        .await
        .unwrap();
    api.patch("a", &PatchParams::apply("http-test"), &Patch::Apply(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "a" }, "data": { "value": "2" },
    })))
    .await
    .unwrap();
    eventually("the reflector saw b and a's update", || {
        let ok = names(&reader).len() == 2
            && reader
                .state()
                .iter()
                .any(|c| c.data.as_ref().unwrap()["value"] == "2");
        async move { ok }
    })
    .await;

    let routes = gateway_api(&server, &client, "HTTPRoute", "demo");
    let created = routes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": { "name": "r" }, "spec": { "hostnames": ["x.example"] },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    // The same server is reachable in-process too.
    let in_process: Api<ConfigMap> = Api::default_namespaced(server.client());
    assert_eq!(
        in_process
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
}

#[tokio::test]
async fn refused_requests_get_503_and_watchers_catch_up_after_recovery() {
    let server = server();
    let running = server.serve_local().await.unwrap();
    let client = running.client().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &config_map("a", &[], "1"))
        .await
        .unwrap();
    let reader = reflect(client.clone(), "default");
    reader.wait_until_ready().await.unwrap();

    let faults = server.faults();
    faults.refuse_for(Duration::from_millis(700));
    // Without retries, the refusal is a 503 Status with Retry-After.
    let no_retry = client_without_retries(&running.kubeconfig_yaml()).await;
    let bare: Api<ConfigMap> = Api::default_namespaced(no_retry);
    let err = bare.get("a").await.unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (status.code, status.reason.as_str()),
        (503, "ServiceUnavailable")
    );
    // Written behind the API's back while it is down.
    let kind = server.kind("v1", "ConfigMap").unwrap();
    server
        .store()
        .upsert(&kind, json!({ "metadata": { "name": "during-outage" } }))
        .unwrap();

    // kube's default client retries 503s (honouring Retry-After) and rides out the outage.
    let started = Instant::now();
    assert_eq!(api.get("a").await.unwrap().name_any(), "a");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(faults.refusing(), None);
    assert!(server.requests().iter().filter(|r| r.status == 503).count() >= 2);
    eventually("the reflector caught up", || {
        let ok = names(&reader).contains("during-outage");
        async move { ok }
    })
    .await;
}

#[tokio::test]
async fn closed_connections_fail_requests_until_the_server_recovers() {
    let server = server();
    let running = server.serve_local().await.unwrap();
    let client = running.client().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &config_map("a", &[], "1"))
        .await
        .unwrap();
    let faults = server.faults();
    faults.refuse(Refusal::CloseConnection);
    for _ in 0..3 {
        let err = api.get("a").await.unwrap_err();
        assert!(
            !matches!(err, kube::Error::Api(_)),
            "not an HTTP answer: {err:?}"
        );
    }
    // In-process, the service itself fails.
    let in_process: Api<ConfigMap> = Api::default_namespaced(server.client());
    assert!(!matches!(
        in_process.get("a").await.unwrap_err(),
        kube::Error::Api(_)
    ));
    faults.recover();
    assert_eq!(api.get("a").await.unwrap().name_any(), "a");
    assert!(server.requests().iter().any(|r| r.status == 0));
}

#[tokio::test]
async fn latency_delays_every_request() {
    let server = server();
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    server.faults().set_latency(Duration::from_millis(150));
    let started = Instant::now();
    assert_eq!(api_code(&api.get("missing").await.unwrap_err()), 404);
    assert!(started.elapsed() >= Duration::from_millis(150));
    server.faults().set_latency(Duration::ZERO);
    let started = Instant::now();
    api.get("missing").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(150));
}

#[tokio::test]
async fn the_admin_api_injects_faults_registers_kinds_and_seeds_objects() {
    let server = FakeApiServer::new();
    let running = server.serve_local().await.unwrap();
    let client = client_without_retries(&running.kubeconfig_yaml()).await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());

    let state = admin(&client, "GET", "/fake/state", "").await;
    assert_eq!(state["openWatches"], 0);
    assert_eq!(state["refusing"], "");

    admin(&client, "POST", "/fake/refuse?seconds=30", "").await;
    assert_eq!(api_code(&api.get("x").await.unwrap_err()), 503);
    assert_eq!(
        admin(&client, "GET", "/fake/state", "").await["refusing"],
        "503"
    );
    admin(&client, "POST", "/fake/recover", "").await;
    assert_eq!(api_code(&api.get("x").await.unwrap_err()), 404);

    let loaded = admin(
        &client,
        "POST",
        "/fake/objects",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: seeded }\ndata: { value: s }\n",
    )
    .await;
    assert_eq!(loaded["loaded"], 1);
    assert_eq!(api.get("seeded").await.unwrap().data.unwrap()["value"], "s");

    admin(
        &client,
        "POST",
        "/fake/kinds",
        r#"{"group":"policy.trellis.dev","version":"v1alpha1","kind":"RetryPolicy","plural":"retrypolicies","namespaced":true}"#,
    )
    .await;
    let policies: Api<RetryPolicy> = Api::default_namespaced(client.clone());
    policies
        .create(
            &PostParams::default(),
            &RetryPolicy::new(
                "p",
                RetryPolicySpec {
                    attempts: 2,
                    per_try_timeout: None,
                },
            ),
        )
        .await
        .unwrap();

    let old = server.store().resource_version();
    api.create(&PostParams::default(), &config_map("later", &[], "v"))
        .await
        .unwrap();
    admin(&client, "POST", "/fake/compact", "").await;
    let state = admin(&client, "GET", "/fake/state", "").await;
    assert_eq!(state["oldestResourceVersion"], state["resourceVersion"]);
    let request = hyper::Request::get(format!(
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={old}&timeoutSeconds=5"
    ))
    .body(Vec::new())
    .unwrap();
    let body = client.request_text(request).await.unwrap();
    assert!(body.contains("\"code\":410"), "{body}");

    admin(&client, "POST", "/fake/latency?ms=120", "").await;
    let started = Instant::now();
    api.get("seeded").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(120));
    admin(&client, "POST", "/fake/latency?ms=0", "").await;

    let reader = reflect(client.clone(), "default");
    reader.wait_until_ready().await.unwrap();
    eventually("a watch is open", || {
        let client = client.clone();
        async move { admin(&client, "GET", "/fake/state", "").await["openWatches"] == 1 }
    })
    .await;
    admin(&client, "POST", "/fake/drop-watches", "").await;
    api.create(&PostParams::default(), &config_map("after-drop", &[], "v"))
        .await
        .unwrap();
    eventually("the reflector resumed", || {
        let ok = names(&reader).contains("after-drop");
        async move { ok }
    })
    .await;
}
