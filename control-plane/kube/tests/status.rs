//! The status writer against the fake API server, in process: only the leader writes, only
//! what differs, other controllers' route entries are kept, conflicts are retried and a
//! persistent failure backs off instead of looping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use trellis_fake_apiserver::{FakeApiServer, Refusal};
use trellis_kube::status::{DesiredStatus, StatusWriterConfig};
use trellis_kube::{Health, Observed, ObservedObject, ProviderConfig};
use trellis_model::{Kind, ObjectKey};

const CONTROLLER: &str = "trellis.dev/gateway-controller";

const OBJECTS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: shop}
spec:
  gatewayClassName: trellis
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{name: web}, {name: theirs}]
status:
  parents:
  - parentRef: {group: gateway.networking.k8s.io, kind: Gateway, name: theirs}
    controllerName: example.com/other
    conditions: []
"#;

fn cond(type_: &str, status: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": type_, "message": message,
           "observedGeneration": 1, "lastTransitionTime": "2030-01-01T00:00:00Z"})
}

fn gateway_status(message: &str) -> Value {
    json!({"addresses": [], "conditions": [cond("Accepted", "True", message)], "listeners": []})
}

fn route_status() -> Value {
    json!({"parents": [{
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "web"},
        "controllerName": CONTROLLER,
        "conditions": [cond("Accepted", "True", "")],
    }]})
}

fn desired(gateway: Value, route: Option<Value>) -> Option<Arc<DesiredStatus>> {
    let mut d = DesiredStatus::default();
    d.objects
        .insert((Kind::Gateway, ObjectKey::new("shop", "web")), gateway);
    if let Some(route) = route {
        d.objects
            .insert((Kind::HttpRoute, ObjectKey::new("shop", "r")), route);
    }
    Some(Arc::new(d))
}

fn config() -> StatusWriterConfig {
    StatusWriterConfig {
        settle: Duration::from_millis(10),
        ..StatusWriterConfig::default()
    }
}

fn status_patches(server: &FakeApiServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/status"))
        .count()
}

fn stored_status(server: &FakeApiServer, kind: &str, name: &str) -> Value {
    let k = server.kind("gateway.networking.k8s.io/v1", kind).unwrap();
    server.store().get(&k, "shop", name).unwrap()["status"].clone()
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn only_the_leader_writes_and_only_what_differs_keeping_other_controllers_entries() {
    let server = FakeApiServer::new();
    server.load_yaml(OBJECTS).unwrap();
    let health = Arc::new(Health::default());
    let provider =
        trellis_kube::watch(server.client(), ProviderConfig::default(), health.clone()).await;
    let (leader_tx, leader_rx) = watch::channel(false);
    let (desired_tx, desired_rx) = watch::channel(None);
    trellis_kube::status::spawn(
        server.client(),
        config(),
        desired_rx,
        provider.observed.clone(),
        leader_rx,
        health.clone(),
    );
    desired_tx.send_replace(desired(gateway_status("a"), Some(route_status())));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_patches(&server), 0, "a follower writes nothing");

    leader_tx.send_replace(true);
    eventually("the gateway's status", || {
        stored_status(&server, "Gateway", "web") == gateway_status("a")
    })
    .await;
    eventually("the route's status", || {
        stored_status(&server, "HTTPRoute", "r")["parents"]
            .as_array()
            .is_some_and(|p| p.len() == 2)
    })
    .await;
    let route = stored_status(&server, "HTTPRoute", "r");
    assert_eq!(route["parents"][0]["controllerName"], "example.com/other");
    assert_eq!(route["parents"][1]["controllerName"], CONTROLLER);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_patches(&server), 2);
    assert_eq!(health.snapshot().status_writes, 2);

    // The same status again (a new translation, new local transition times): nothing to write.
    let mut again = gateway_status("a");
    again["conditions"][0]["lastTransitionTime"] = json!("2031-01-01T00:00:00Z");
    desired_tx.send_replace(desired(again, Some(route_status())));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_patches(&server), 2, "nothing differs");

    // A new message: written, the transition time kept since the status did not change.
    desired_tx.send_replace(desired(gateway_status("b"), Some(route_status())));
    eventually("the new message", || {
        stored_status(&server, "Gateway", "web")["conditions"][0]["message"] == "b"
    })
    .await;
    assert_eq!(
        stored_status(&server, "Gateway", "web")["conditions"][0]["lastTransitionTime"],
        "2030-01-01T00:00:00Z"
    );

    // The route no longer names a Trellis Gateway: only Trellis's entry goes.
    desired_tx.send_replace(desired(gateway_status("b"), None));
    eventually("Trellis's route entry to go", || {
        stored_status(&server, "HTTPRoute", "r")["parents"]
            .as_array()
            .is_some_and(|p| p.len() == 1)
    })
    .await;
    assert_eq!(
        stored_status(&server, "HTTPRoute", "r")["parents"][0]["controllerName"],
        "example.com/other"
    );
}

/// An Observed the test controls, seeded from the store.
fn observed_from(server: &FakeApiServer, resource_version: Option<&str>) -> Observed {
    let k = server
        .kind("gateway.networking.k8s.io/v1", "Gateway")
        .unwrap();
    let stored = server.store().get(&k, "shop", "web").unwrap();
    let observed = Observed::default();
    observed.set(
        Kind::Gateway,
        ObjectKey::new("shop", "web"),
        ObservedObject {
            resource_version: resource_version.map(str::to_string).unwrap_or_else(|| {
                stored["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .into()
            }),
            generation: Some(1),
            status: Value::Null,
        },
    );
    observed
}

#[tokio::test]
async fn a_conflict_is_retried_once_the_new_version_is_seen() {
    let server = FakeApiServer::new();
    server.load_yaml(OBJECTS).unwrap();
    let health = Arc::new(Health::default());
    let observed = observed_from(&server, Some("1"));
    let (_leader_tx, leader_rx) = watch::channel(true);
    let (_desired_tx, desired_rx) = watch::channel(desired(gateway_status("a"), None));
    trellis_kube::status::spawn(
        server.client(),
        config(),
        desired_rx,
        observed.clone(),
        leader_rx,
        health.clone(),
    );
    eventually("a conflict", || health.snapshot().status_conflicts >= 1).await;
    assert_eq!(stored_status(&server, "Gateway", "web"), Value::Null);
    // The watch would bring the current version.
    let current = observed_from(&server, None)
        .get(Kind::Gateway, &ObjectKey::new("shop", "web"))
        .unwrap();
    observed.set(Kind::Gateway, ObjectKey::new("shop", "web"), current);
    eventually("the write", || {
        stored_status(&server, "Gateway", "web") == gateway_status("a")
    })
    .await;
    assert_eq!(health.snapshot().status_write_errors, 0);
}

#[tokio::test]
async fn a_persistent_failure_backs_off_instead_of_looping_and_recovers() {
    let server = FakeApiServer::new();
    server.load_yaml(OBJECTS).unwrap();
    let health = Arc::new(Health::default());
    let observed = observed_from(&server, None);
    server.faults().refuse(Refusal::ServiceUnavailable);
    let (_leader_tx, leader_rx) = watch::channel(true);
    let (_desired_tx, desired_rx) = watch::channel(desired(gateway_status("a"), None));
    trellis_kube::status::spawn(
        server.client(),
        config(),
        desired_rx,
        observed,
        leader_rx,
        health.clone(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let attempts = status_patches(&server);
    assert!(
        (2..=5).contains(&attempts),
        "0.5 s doubling: a few attempts in 3 s, not a loop ({attempts})"
    );
    assert!(!health.connected());
    server.faults().recover();
    eventually("the write after recovery", || {
        stored_status(&server, "Gateway", "web") == gateway_status("a")
    })
    .await;
}

#[tokio::test]
async fn a_policys_status_is_written_to_its_own_crd() {
    let server = FakeApiServer::new();
    let crd = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/crds/policy.trellis.dev_authorizationpolicies.yaml"),
    )
    .unwrap();
    server.load_yaml(&crd).unwrap();
    server.load_yaml(OBJECTS).unwrap();
    server
        .load_yaml(
            "apiVersion: policy.trellis.dev/v1alpha1\nkind: AuthorizationPolicy\n\
             metadata: {name: gate, namespace: shop}\n\
             spec: {targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: web}]}\n",
        )
        .unwrap();
    let health = Arc::new(Health::default());
    let provider =
        trellis_kube::watch(server.client(), ProviderConfig::default(), health.clone()).await;
    let (_leader_tx, leader_rx) = watch::channel(true);
    let status = json!({"ancestors": [{
        "ancestorRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "web"},
        "controllerName": CONTROLLER,
        "conditions": [cond("Accepted", "True", "")],
    }]});
    let mut d = DesiredStatus::default();
    d.objects.insert(
        (Kind::AuthorizationPolicy, ObjectKey::new("shop", "gate")),
        status.clone(),
    );
    let (_desired_tx, desired_rx) = watch::channel(Some(Arc::new(d)));
    trellis_kube::status::spawn(
        server.client(),
        config(),
        desired_rx,
        provider.observed.clone(),
        leader_rx,
        health.clone(),
    );
    let k = server
        .kind("policy.trellis.dev/v1alpha1", "AuthorizationPolicy")
        .unwrap();
    eventually("the policy's status", || {
        server.store().get(&k, "shop", "gate").unwrap()["status"] == status
    })
    .await;
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.path.ends_with("/authorizationpolicies/gate/status"))
    );
}
