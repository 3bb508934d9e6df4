//! The provider against the fake API server, in process: the first load, objects that do not
//! read, relists after a 410, deletions missed while disconnected, status-only writes,
//! namespace scoping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use trellis_fake_apiserver::{FakeApiServer, Preconditions, Refusal};
use trellis_kube::{Health, Provider, ProviderConfig};
use trellis_model::ObjectKey;
use trellis_sources::Load;

const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: trellis}
spec: {controllerName: trellis.dev/gateway-controller}
---
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
  parentRefs: [{name: web}]
  rules: [{backendRefs: [{name: api, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: elsewhere, namespace: other}
spec:
  parentRefs: [{name: web, namespace: shop}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: shop, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
endpoints: [{addresses: [10.0.0.1]}]
ports: [{port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: shop}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: other}]
  to: [{group: "", kind: Service}]
---
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: shop}
type: kubernetes.io/tls
data: {tls.crt: YQ==, tls.key: Yg==}
"#;

async fn start(server: &FakeApiServer, namespaces: &[&str]) -> (Provider, Arc<Health>) {
    let health = Arc::new(Health::default());
    let config = ProviderConfig {
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        debounce: Duration::from_millis(20),
    };
    let provider = tokio::time::timeout(
        Duration::from_secs(10),
        trellis_kube::watch(server.client(), config, health.clone()),
    )
    .await
    .expect("the initial sync finishes");
    (provider, health)
}

async fn next_load(rx: &mut watch::Receiver<Arc<Load>>) -> Arc<Load> {
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .expect("a load is published")
        .expect("the provider runs");
    rx.borrow_and_update().clone()
}

async fn quiet(rx: &mut watch::Receiver<Arc<Load>>, wait: Duration) -> bool {
    tokio::time::timeout(wait, rx.changed()).await.is_err()
}

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(ns, name)
}

#[tokio::test]
async fn the_first_load_holds_every_watched_kind_with_the_api_generation() {
    let server = FakeApiServer::new();
    server.load_yaml(OBJECTS).unwrap();
    let (provider, health) = start(&server, &[]).await;
    let load = provider.loads.borrow().clone();
    let input = &load.input;
    assert_eq!(input.namespaces.len(), 2);
    assert_eq!(input.gateway_classes.len(), 1);
    assert_eq!(input.http_routes.len(), 2);
    assert_eq!(input.reference_grants.len(), 1);
    assert_eq!(input.services.len(), 1);
    assert_eq!(input.endpoint_slices.len(), 1);
    assert_eq!(input.secrets.len(), 1);
    let gw = &input.gateways[&key("shop", "web")];
    assert_eq!(gw.metadata.generation, Some(1));
    assert!(gw.metadata.creation_timestamp.is_some());
    assert_eq!(
        gw.metadata.resource_version, None,
        "volatile metadata is dropped"
    );
    assert!(load.diagnostics.is_empty(), "{:?}", load.diagnostics);
    assert!(health.synced());
    let seen = provider
        .observed
        .get(trellis_model::Kind::Gateway, &key("shop", "web"))
        .expect("observed");
    assert!(!seen.resource_version.is_empty());
}

#[tokio::test]
async fn an_object_that_does_not_read_keeps_its_last_good_version_and_is_reported() {
    let server = FakeApiServer::new();
    server.load_yaml(OBJECTS).unwrap();
    let (mut provider, _) = start(&server, &[]).await;
    // The API server does not validate here (a real one might accept it from a newer CRD).
    server
        .load_yaml(&OBJECTS.replace("port: 8080, protocol", "port: eighty, protocol"))
        .unwrap();
    let load = next_load(&mut provider.loads).await;
    let gw = &load.input.gateways[&key("shop", "web")];
    assert_eq!(gw.spec.listeners[0].port, 8080, "the last good version");
    assert_eq!(load.diagnostics.len(), 1, "{:?}", load.diagnostics);
    let d = load.diagnostics[0].to_string();
    assert!(
        d.contains("Gateway shop/web")
            && d.contains("spec.listeners[0].port")
            && d.contains("last good version stays in force"),
        "{d}"
    );
    // A new object that never read is reported and left out.
    server
        .load_yaml("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: bad, namespace: shop}\nspec: {parentRefs: 7}\n")
        .unwrap();
    let load = next_load(&mut provider.loads).await;
    assert!(!load.input.http_routes.contains_key(&key("shop", "bad")));
    assert!(
        load.diagnostics
            .iter()
            .any(|d| d.to_string().contains("ignored until it is fixed"))
    );
    // Fixed: the diagnostics go away.
    server.load_yaml(OBJECTS).unwrap();
    server
        .load_yaml("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: bad, namespace: shop}\nspec: {parentRefs: []}\n")
        .unwrap();
    let mut load = next_load(&mut provider.loads).await;
    while !load.diagnostics.is_empty() {
        load = next_load(&mut provider.loads).await;
    }
    assert!(load.input.http_routes.contains_key(&key("shop", "bad")));
}

#[tokio::test]
async fn status_writes_and_unchanged_relists_publish_nothing() {
    let server = FakeApiServer::new();
    server.load_yaml(OBJECTS).unwrap();
    let (mut provider, health) = start(&server, &[]).await;
    let first = provider.loads.borrow().clone();
    let mut observed = provider.observed.subscribe();
    // A status write changes the resourceVersion only.
    let gateways = server
        .kind("gateway.networking.k8s.io/v1", "Gateway")
        .unwrap();
    server
        .store()
        .patch(
            &gateways,
            "shop",
            "web",
            trellis_fake_apiserver::Patch::Merge(serde_json::json!({"status": {"conditions": []}})),
            trellis_fake_apiserver::Subresource::Status,
            false,
        )
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), observed.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        provider
            .observed
            .get(trellis_model::Kind::Gateway, &key("shop", "web"))
            .unwrap()
            .status,
        serde_json::json!({"conditions": []})
    );
    // Every watch behind (a write to a kind nobody watches), history gone, watches dropped:
    // each resumes into a 410 and relists.
    server
        .load_yaml("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: x, namespace: shop}\n")
        .unwrap();
    server.faults().compact();
    server.faults().drop_watches();
    tokio::time::timeout(Duration::from_secs(10), async {
        while health.snapshot().relists.values().sum::<u64>() < 8 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every watch relists");
    assert!(quiet(&mut provider.loads, Duration::from_millis(300)).await);
    let after = provider.loads.borrow().clone();
    assert_eq!(*after, *first);
    // The objects kept their identity.
    assert!(Arc::ptr_eq(
        &first.input.gateways[&key("shop", "web")],
        &after.input.gateways[&key("shop", "web")]
    ));
}

#[tokio::test]
async fn a_deletion_missed_while_disconnected_is_applied_by_the_relist() {
    let server = FakeApiServer::new();
    server.load_yaml(OBJECTS).unwrap();
    let (mut provider, health) = start(&server, &[]).await;
    let faults = server.faults();
    faults.refuse(Refusal::ServiceUnavailable);
    // Deleted behind the provider's back, and the history that would tell it is gone.
    let services = server.kind("v1", "Service").unwrap();
    server
        .store()
        .delete(&services, "shop", "api", &Preconditions::default(), false)
        .unwrap();
    faults.compact();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!health.connected(), "the outage is noticed");
    assert!(quiet(&mut provider.loads, Duration::from_millis(100)).await);
    assert_eq!(
        provider.loads.borrow().input.services.len(),
        1,
        "kept meanwhile"
    );
    faults.recover();
    let load = next_load(&mut provider.loads).await;
    assert!(load.input.services.is_empty());
    assert_eq!(load.input.gateways.len(), 1, "nothing else is lost");
    assert!(health.snapshot().watch_errors.values().sum::<u64>() >= 1);
}

#[tokio::test]
async fn scoped_to_namespaces_it_reads_only_those_and_every_gateway_class() {
    let server = FakeApiServer::new();
    server.load_yaml(OBJECTS).unwrap();
    let (provider, _) = start(&server, &["shop"]).await;
    let load = provider.loads.borrow().clone();
    assert_eq!(load.input.http_routes.len(), 1);
    assert!(load.input.http_routes.contains_key(&key("shop", "r")));
    assert_eq!(load.input.namespaces.len(), 1);
    assert_eq!(load.input.gateway_classes.len(), 1);
}

#[tokio::test]
async fn changes_within_the_debounce_arrive_in_one_load() {
    let server = FakeApiServer::new();
    server.load_yaml(OBJECTS).unwrap();
    let (mut provider, _) = start(&server, &[]).await;
    server
        .load_yaml(
            &OBJECTS
                .replace("port: 80}", "port: 81}")
                .replace("10.0.0.1", "10.0.0.2"),
        )
        .unwrap();
    let load = next_load(&mut provider.loads).await;
    let service = &load.input.services[&key("shop", "api")];
    let port = service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port;
    let slice = &load.input.endpoint_slices[&key("shop", "api-1")];
    assert_eq!(port, 81);
    assert_eq!(slice.endpoints[0].addresses[0], "10.0.0.2");
}

#[tokio::test]
async fn an_unreachable_api_server_at_start_is_waited_for_and_reported() {
    let server = FakeApiServer::new();
    server.load_yaml(OBJECTS).unwrap();
    server.faults().refuse(Refusal::CloseConnection);
    let health = Arc::new(Health::default());
    let config = ProviderConfig::default();
    let started = tokio::spawn(trellis_kube::watch(server.client(), config, health.clone()));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !started.is_finished(),
        "nothing is published before a full list"
    );
    let waiting = health.readiness().expect_err("not ready");
    assert!(waiting.contains("initial sync"), "{waiting}");
    assert!(!health.connected());
    server.faults().recover();
    let provider = tokio::time::timeout(Duration::from_secs(10), started)
        .await
        .expect("the sync finishes once the server answers")
        .unwrap();
    assert_eq!(provider.loads.borrow().input.gateways.len(), 1);
    assert!(health.readiness().is_ok());
}

/// Trellis's policy CRDs, as `kubectl apply -k deploy/crds` installs them.
fn policy_crds() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    trellis_fake_apiserver::kustomization_yaml(&dir).unwrap()
}

const POLICY: &str = r#"
apiVersion: policy.trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: gate, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: web}]
  defaultAction: Deny
  rules: [{name: health, action: Allow, paths: [{type: Exact, value: /healthz}]}]
"#;

#[tokio::test]
async fn policy_kinds_read_as_empty_until_their_crds_are_installed_then_are_read() {
    let server = FakeApiServer::new();
    server.load_yaml(OBJECTS).unwrap();
    // Without the CRDs the first load still goes out, and nothing is reported unhealthy.
    let (mut provider, health) = start(&server, &[]).await;
    let load = provider.loads.borrow().clone();
    assert!(load.input.authorization_policies.is_empty());
    assert_eq!(load.input.gateways.len(), 1);
    assert!(health.synced());
    assert_eq!(
        health.snapshot().watch_errors.values().sum::<u64>(),
        0,
        "a CRD that is not installed is not an error"
    );
    // Installed later, with a policy: the watch finds the kind on its next try.
    server.load_yaml(&policy_crds()).unwrap();
    server.load_yaml(POLICY).unwrap();
    let policy = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let load = next_load(&mut provider.loads).await;
            if let Some(p) = load.input.authorization_policies.get(&key("shop", "gate")) {
                return p.clone();
            }
        }
    })
    .await
    .expect("the policy is read once its CRD is installed");
    assert_eq!(policy.spec["rules"][0]["name"], "health");
    assert!(
        provider
            .observed
            .get(
                trellis_model::Kind::AuthorizationPolicy,
                &key("shop", "gate")
            )
            .is_some(),
        "its status is followed, to be written back"
    );
}

#[tokio::test]
async fn terminated_pods_are_not_read_and_a_pod_that_ends_leaves_the_model() {
    let server = FakeApiServer::new();
    let pod = |name: &str, phase: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  serviceAccountName: web\n  containers: [{{name: app, image: web:1, env: [{{name: SECRET, value: x}}]}}]\nstatus: {{phase: {phase}, podIP: 10.0.0.1}}\n---\n"
        )
    };
    server
        .load_yaml(&format!(
            "{}{}{}",
            pod("running", "Running"),
            pod("done", "Succeeded"),
            pod("crashed", "Failed")
        ))
        .unwrap();
    let (provider, _) = start(&server, &[]).await;
    let mut loads = provider.loads.clone();
    let input = loads.borrow_and_update().input.clone();
    let pods: Vec<&str> = input.pods.keys().map(|k| k.name.as_str()).collect();
    assert_eq!(pods, ["running"]);
    // Kept trimmed: no image, no environment.
    let kept = &input.pods[&key("shop", "running")];
    let container = &kept.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.image, None);
    assert_eq!(container.env, None);

    // The running pod completes: it leaves the model.
    server.load_yaml(&pod("running", "Succeeded")).unwrap();
    let load = next_load(&mut loads).await;
    assert!(load.input.pods.is_empty(), "{:?}", load.input.pods.keys());
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.path.ends_with("/pods") && r.query.contains("fieldSelector=status.phase")),
        "the pod watch carries the field selector"
    );
}

#[tokio::test]
async fn config_maps_are_read_except_the_control_planes_own() {
    let server = FakeApiServer::new();
    server
        .load_yaml(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: payments-ca, namespace: shop}\ndata: {ca.crt: first}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: trellis-last-good, namespace: trellis-system}\ndata: {policies.json: \"{}\"}\n",
        )
        .unwrap();
    let (provider, _) = start(&server, &[]).await;
    let mut loads = provider.loads.clone();
    let input = loads.borrow_and_update().input.clone();
    let maps: Vec<String> = input.config_maps.keys().map(|k| k.to_string()).collect();
    assert_eq!(maps, ["shop/payments-ca"]);
    // The control plane's own ConfigMap changes: nothing is published.
    server
        .load_yaml(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: trellis-last-good, namespace: trellis-system}\ndata: {policies.json: \"{\\\"a\\\": 1}\"}\n",
        )
        .unwrap();
    assert!(quiet(&mut loads, Duration::from_millis(300)).await);
    // A CA bundle changes: it is.
    server
        .load_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: payments-ca, namespace: shop}\ndata: {ca.crt: second}\n")
        .unwrap();
    let load = next_load(&mut loads).await;
    let data = load.input.config_maps[&key("shop", "payments-ca")]
        .data
        .clone()
        .unwrap();
    assert_eq!(data["ca.crt"], "second");
}
