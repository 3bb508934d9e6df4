//! Shared test helpers: a fast server, typed custom resources, polling, and a watcher that
//! records what it emits.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, CustomResource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use trellis_fake_apiserver::{FakeApiServer, ResourceKind};

/// A `policy.trellis.dev/v1alpha1` kind, as the provider's policy types will be.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "policy.trellis.dev",
    version = "v1alpha1",
    kind = "RetryPolicy",
    plural = "retrypolicies",
    namespaced,
    status = "RetryPolicyStatus"
)]
pub struct RetryPolicySpec {
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
}

/// The status of a [`RetryPolicy`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct RetryPolicyStatus {
    pub accepted: bool,
}

/// A server with fast bookmarks and the test's policy kind registered.
pub fn server() -> FakeApiServer {
    FakeApiServer::builder()
        .bookmark_interval(Duration::from_millis(100))
        .kind(ResourceKind::of::<RetryPolicy>())
        .build()
}

/// The `ApiResource` of a registered kind, for `Api::<DynamicObject>`.
pub fn api_resource(server: &FakeApiServer, api_version: &str, kind: &str) -> ApiResource {
    let k = server.kind(api_version, kind).unwrap();
    ApiResource {
        group: k.group.clone(),
        version: k.version.clone(),
        api_version: k.api_version(),
        kind: k.kind.clone(),
        plural: k.plural.clone(),
    }
}

/// A dynamic API for a Gateway API kind in namespace `ns`.
pub fn gateway_api(
    server: &FakeApiServer,
    client: &kube::Client,
    kind: &str,
    ns: &str,
) -> Api<DynamicObject> {
    let ar = api_resource(server, "gateway.networking.k8s.io/v1", kind);
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// A ConfigMap with labels and one data key.
pub fn config_map(name: &str, labels: &[(&str, &str)], value: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        },
        "data": { "value": value },
    }))
    .unwrap()
}

/// Creates ConfigMaps `names` in `ns` through the API.
pub async fn create_config_maps(client: &kube::Client, ns: &str, names: &[&str]) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for name in names {
        api.create(&PostParams::default(), &config_map(name, &[], "v"))
            .await
            .unwrap();
    }
}

/// Polls `check` until it returns true, failing after 10 seconds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

/// What a watcher emitted, simplified for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Init,
    InitApply(String),
    InitDone,
    Apply(String),
    Delete(String),
    /// An error, with the API status code when there was one.
    Error(Option<u16>),
}

/// Runs a watcher (with kube's default backoff) over `api`, reporting every event by name.
pub fn record<K>(api: Api<K>, config: watcher::Config) -> mpsc::UnboundedReceiver<Seen>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let mut stream = watcher(api, config).default_backoff().boxed();
    tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            let name = |o: &K| o.meta().name.clone().unwrap_or_default();
            let seen = match item {
                Ok(watcher::Event::Init) => Seen::Init,
                Ok(watcher::Event::InitApply(o)) => Seen::InitApply(name(&o)),
                Ok(watcher::Event::InitDone) => Seen::InitDone,
                Ok(watcher::Event::Apply(o)) => Seen::Apply(name(&o)),
                Ok(watcher::Event::Delete(o)) => Seen::Delete(name(&o)),
                Err(e) => Seen::Error(status_code(&e)),
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    rx
}

fn status_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::WatchError(s) => Some(s.code),
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        _ => None,
    }
}

/// Receives recorded events until `done` says the collection is complete (10 s at most).
pub async fn collect_until(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    mut done: impl FnMut(&[Seen]) -> bool,
) -> Vec<Seen> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => seen.push(s),
            Ok(None) => panic!("watcher ended; saw {seen:?}"),
            Err(_) => panic!("timed out; saw {seen:?}"),
        }
    }
    seen
}

/// A client for a kubeconfig with kube's retry of 503/429/504 turned off, to see refusals as
/// they are answered (the default client retries them, as it would against a real server).
pub async fn client_without_retries(kubeconfig_yaml: &str) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig_yaml).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

/// The status code of a kube API error.
pub fn api_code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("not an API error: {other:?}"),
    }
}
