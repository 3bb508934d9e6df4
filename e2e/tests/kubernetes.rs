//! End to end in Kubernetes mode: the held scenario of `gateway.rs` (a Gateway, HTTPRoutes,
//! Services and EndpointSlices) applied through the API of a fake API server running in this
//! process, the real `trellis serve --kubernetes` (one replica, or two for the leader test), a
//! real Envoy and echo backends on loopback. Faults are injected into the API server while a
//! request loop counts failed requests through Envoy.
//!
//! ```text
//!  test ──server-side apply──► fake API server ◄──list/watch, PATCH /status, Leases── trellis (×1|2)
//!    │  ▲ faults: drop watches, 410, refuse                                            │ ADS
//!    │  └──── status read back through the API                                        ▼
//!    └──── request loop ──────────────────────────────────────────────────────────► Envoy ──► echo
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use trellis_fake_apiserver::{FakeApiServer, Refusal, RunningServer};
use trellis_harness::scenario::{self, BACKENDS, NAMESPACE, ROUTES, backend_yaml, move_route};
use trellis_harness::{
    self, ControlPlane, Echo, Envoy, RequestLoop, eventually, http_get_text, private_loopback,
    request,
};

const CONTROLLER: &str = "trellis.dev/gateway-controller";
const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";
/// The replicas' leader-election Lease: 3 s (renewed every 0.4 s; a leader steps down after 2 s
/// without renewing).
const LEASE_SECONDS: &str = "3";

/// The shared Gateway, and a GatewayClass of another controller whose status Trellis must
/// never write.
fn gateway_yaml(ip: Ipv4Addr, port: u16) -> String {
    format!(
        "{}---\napiVersion: {GATEWAY_API}\nkind: GatewayClass\nmetadata:\n  name: another-vendor\nspec:\n  controllerName: example.com/another-controller\n",
        scenario::gateway_yaml(ip, port)
    )
}

/// The fake API server, served on loopback, and a kube client that reaches it over HTTP
/// through the same kubeconfig the control plane uses.
struct Cluster {
    server: FakeApiServer,
    client: kube::Client,
    kubeconfig: PathBuf,
    _running: RunningServer,
    // Last: the runtime serving the fake outlives everything using it.
    runtime: tokio::runtime::Runtime,
}

impl Cluster {
    fn start(work: &Path) -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // No periodic bookmarks: a watch only knows the resourceVersion of the last change of
        // its own kind, as with a real API server between its (minute-long) bookmarks, so
        // compacting the history makes watches resume into a 410 Gone.
        let server = FakeApiServer::builder()
            .bookmark_interval(Duration::from_secs(3600))
            .build();
        let running = runtime.block_on(server.serve_local()).unwrap();
        let kubeconfig = work.join("kubeconfig");
        running.write_kubeconfig(&kubeconfig).unwrap();
        let client = runtime.block_on(running.client()).unwrap();
        Cluster {
            server,
            client,
            kubeconfig,
            _running: running,
            runtime,
        }
    }

    fn api(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
        let k = self
            .server
            .kind(api_version, kind)
            .unwrap_or_else(|| panic!("the fake serves no {api_version} {kind}"));
        let resource = ApiResource {
            group: k.group.clone(),
            version: k.version.clone(),
            api_version: k.api_version(),
            kind: k.kind.clone(),
            plural: k.plural.clone(),
        };
        if k.namespaced {
            Api::namespaced_with(
                self.client.clone(),
                namespace.unwrap_or("default"),
                &resource,
            )
        } else {
            Api::all_with(self.client.clone(), &resource)
        }
    }

    /// Server-side applies every document of a YAML stream (`kubectl apply --server-side`).
    fn apply(&self, yaml: &str) {
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap();
        for doc in docs.into_iter().filter(|d| d.is_object()) {
            let api = self.api(
                doc["apiVersion"].as_str().unwrap(),
                doc["kind"].as_str().unwrap(),
                doc["metadata"]["namespace"].as_str(),
            );
            let name = doc["metadata"]["name"].as_str().unwrap().to_string();
            self.runtime
                .block_on(api.patch(
                    &name,
                    &PatchParams::apply("e2e").force(),
                    &Patch::Apply(&doc),
                ))
                .unwrap_or_else(|e| panic!("apply {name}: {e}"));
        }
    }

    /// An object as the API serves it.
    fn get(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Value {
        let api = self.api(api_version, kind, namespace);
        serde_json::to_value(self.runtime.block_on(api.get(name)).unwrap()).unwrap()
    }

    fn route(&self, name: &str) -> Value {
        self.get(GATEWAY_API, "HTTPRoute", Some(NAMESPACE), name)
    }

    /// What the control planes did in the API, as RBAC sees it: `(group, resource, verb)` of
    /// every request but the test's own (its server-side applies, `fieldManager=e2e`, and its
    /// reads of single objects other than Leases and ConfigMaps).
    fn used_permissions(&self) -> BTreeSet<(String, String, String)> {
        let mut used = BTreeSet::new();
        for r in self.server.requests() {
            let Some((group, rest)) = r
                .path
                .strip_prefix("/api/v1/")
                .map(|rest| ("", rest))
                .or_else(|| {
                    let rest = r.path.strip_prefix("/apis/")?;
                    let mut parts = rest.splitn(3, '/');
                    let group = parts.next()?;
                    let _version = parts.next()?;
                    Some((group, parts.next()?))
                })
            else {
                continue; // discovery, /version
            };
            let segments: Vec<&str> = rest.split('/').collect();
            let segments = match segments.as_slice() {
                ["namespaces", _, tail @ ..] if !tail.is_empty() => tail.to_vec(),
                other => other.to_vec(),
            };
            let (resource, named) = match segments.as_slice() {
                [plural] => (plural.to_string(), false),
                [plural, _name] => (plural.to_string(), true),
                [plural, _name, sub] => (format!("{plural}/{sub}"), true),
                _ => continue,
            };
            let verb = match (r.method.as_str(), named) {
                ("GET", false) if r.is_watch() => "watch",
                ("GET", false) => "list",
                ("GET", true) => "get",
                ("POST", _) => "create",
                ("PUT", _) => "update",
                ("PATCH", _) => "patch",
                ("DELETE", false) => "deletecollection",
                ("DELETE", true) => "delete",
                _ => continue,
            };
            let test_own = r.query.contains("fieldManager=e2e")
                || (verb == "get"
                    && resource != "leases"
                    && resource != "configmaps"
                    && resource != "secrets"
                    && resource != "mutatingwebhookconfigurations");
            if !test_own {
                used.insert((group.to_string(), resource, verb.to_string()));
            }
        }
        used
    }

    /// Successful writes to `/status` subresources so far (the request log keeps the last 4096
    /// requests; the tests read it over short spans).
    /// The paths of the status writes the API server accepted, oldest first.
    fn status_writes(&self) -> Vec<String> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with("/status") && r.status == 200)
            .map(|r| r.path)
            .collect()
    }
}

const POLICY_API: &str = "policy.trellis.dev/v1alpha1";
const POLICY_KINDS: [&str; 3] = ["AuthorizationPolicy", "RateLimitPolicy", "WasmFilter"];

/// One policy of each kind, naming a Gateway that does not exist.
const POLICIES: &str = r#"
apiVersion: policy.trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: elsewhere, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: not-here}]
  defaultAction: Allow
  rules: [{name: health, action: Allow, paths: [{type: Exact, value: /healthz}]}]
---
apiVersion: policy.trellis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: elsewhere, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: not-here}]
  limits: [{name: per-client, key: {type: ClientIP}, requests: 10, per: Second}]
---
apiVersion: policy.trellis.dev/v1alpha1
kind: WasmFilter
metadata: {name: elsewhere, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: not-here}]
  module:
    path: /nonexistent/module.wasm
    sha256: "1111111111111111111111111111111111111111111111111111111111111111"
---
apiVersion: security.trellis.dev/v1alpha1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec:
  mtls: {mode: STRICT}
---
apiVersion: telemetry.trellis.dev/v1alpha1
kind: TracingPolicy
metadata: {name: elsewhere, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: not-here}]
---
apiVersion: telemetry.trellis.dev/v1alpha1
kind: HealthPolicy
metadata: {name: elsewhere, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: not-here}]
"#;

/// Trellis's policy CRDs, as `kubectl apply -k deploy/crds` installs them.
fn policy_crds() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
    trellis_fake_apiserver::kustomization_yaml(&dir).unwrap()
}

/// A condition of a status object's `conditions` array.
fn condition<'a>(conditions: &'a Value, type_: &str) -> Option<&'a Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == type_)
}

/// `(status, reason)` of a condition, for assertions.
fn state(conditions: &Value, type_: &str) -> (String, String) {
    condition(conditions, type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .unwrap_or_default()
}

fn t(status: &str, reason: &str) -> (String, String) {
    (status.to_string(), reason.to_string())
}

/// Trellis's parent entry of a route's status.
fn our_parent(route: &Value) -> Option<&Value> {
    route["status"]["parents"]
        .as_array()?
        .iter()
        .find(|p| p["controllerName"] == CONTROLLER)
}

struct Scenario {
    _tmp: Option<tempfile::TempDir>,
    work: PathBuf,
    gateway: SocketAddr,
    _pods: Vec<Echo>,
    replicas: Vec<ControlPlane>,
    envoy: Envoy,
    // Last: the API server goes away after the control planes.
    cluster: Cluster,
}

fn replica_args(identity: &str) -> Vec<String> {
    [
        "--leader-election-namespace",
        "trellis-system",
        "--leader-election-identity",
        identity,
        "--leader-election-lease-seconds",
        LEASE_SECONDS,
        "--debounce-ms",
        "50",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn start_replica(cluster: &Cluster, work: &Path, identity: &str, xds: &str) -> ControlPlane {
    let args = replica_args(identity);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ControlPlane::start_kubernetes(&cluster.kubeconfig, &work.join(identity), xds, &args)
        .unwrap_or_else(|e| panic!("{identity}: {e:#}"))
}

impl Scenario {
    /// The held scenario through the API; with `two_replicas`, a second replica joins after
    /// Envoy connected to the first (the leader), so killing the leader makes Envoy fail over.
    fn start(two_replicas: bool) -> Scenario {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().to_path_buf();
        if std::env::var_os("TRELLIS_E2E_KEEP").is_some() {
            eprintln!("work directory: {}", work.display());
        }
        let cluster = Cluster::start(&work);
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
        cluster.apply(&yaml);
        cluster.apply(ROUTES);
        cluster.apply(&move_route("v1"));
        // Trellis's policy CRDs, and one policy of each kind naming a Gateway that does not
        // exist: read through the API and reported in their own status, with no effect on
        // traffic.
        cluster.apply(&policy_crds());
        cluster.apply(POLICIES);

        let first = start_replica(&cluster, &work, "replica-a", "127.0.0.1:0");
        eventually("replica-a to lead", Duration::from_secs(20), || {
            Ok(first.metric("trellis_leader")? == 1.0)
        })
        .unwrap();
        // The second replica's xDS address is chosen now and put in the bootstrap; nothing
        // listens there until it starts, so Envoy connects to the first.
        let second = two_replicas.then(|| {
            let (ip, port) = private_loopback();
            SocketAddr::from((ip, port))
        });
        let mut xds = vec![first.xds];
        xds.extend(second);
        let bootstrap =
            trellis_harness::bootstrap(&xds, &format!("{NAMESPACE}/web"), false, "e2e-proxy")
                .unwrap();
        let envoy = Envoy::start(&bootstrap, &work, "envoy", 2).unwrap();
        let mut replicas = vec![first];
        let scenario_gateway = SocketAddr::from((ip, port));
        eventually("the gateway to route", Duration::from_secs(20), || {
            Ok(request(scenario_gateway, "GET", "other.example.com", "/", &[])?.status == 200)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&replicas[0].log(), 40)));
        if let Some(address) = second {
            replicas.push(start_replica(
                &cluster,
                &work,
                "replica-b",
                &address.to_string(),
            ));
        }
        Scenario {
            _tmp: if std::env::var_os("TRELLIS_E2E_KEEP").is_some() {
                let _ = tmp.keep();
                None
            } else {
                Some(tmp)
            },
            work,
            gateway: scenario_gateway,
            _pods: pods,
            replicas,
            envoy,
            cluster,
        }
    }

    /// Which backend (Deployment name) answered a GET: the pod name without its last two
    /// segments.
    fn backend(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
        self.backend_for("GET", host, path, headers)
    }

    /// Which backend answered a request with `method`.
    fn backend_for(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> String {
        scenario::backend(self.gateway, method, host, path, headers)
    }

    /// Points the `move` route at `backend` through the API. Returns how long until traffic
    /// moved, and until the route's status (read through the API) observed the new
    /// generation.
    fn move_to(&self, backend: &str) -> (Duration, Duration) {
        let applied = Instant::now();
        self.cluster.apply(&move_route(backend));
        let generation = self.cluster.route("move")["metadata"]["generation"].clone();
        let mut moved = None;
        while applied.elapsed() < Duration::from_secs(15) {
            if self.backend("move.example.com", "/", &[]) == backend {
                moved = Some(applied.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let moved = moved.unwrap_or_else(|| panic!("traffic did not move\n{}", self.debug()));
        let mut converged = None;
        while applied.elapsed() < Duration::from_secs(15) {
            let route = self.cluster.route("move");
            let observed = our_parent(&route)
                .and_then(|p| condition(&p["conditions"], "Accepted"))
                .map(|c| c["observedGeneration"].clone());
            if observed.as_ref() == Some(&generation) {
                converged = Some(applied.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let converged =
            converged.unwrap_or_else(|| panic!("status did not converge\n{}", self.debug()));
        (moved, converged)
    }

    /// What differs from the status every object should have, read through the API.
    fn status_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, what: &str, object: &Value| {
            if !ok {
                problems.push(format!("{what}: {}", object["status"]));
            }
        };
        let class = self
            .cluster
            .get(GATEWAY_API, "GatewayClass", None, "trellis");
        let conditions = &class["status"]["conditions"];
        check(
            state(conditions, "Accepted") == t("True", "Accepted"),
            "GatewayClass Accepted",
            &class,
        );
        check(
            condition(conditions, "Accepted").map(|c| &c["observedGeneration"])
                == Some(&class["metadata"]["generation"]),
            "GatewayClass observedGeneration",
            &class,
        );
        check(
            class["status"]["supportedFeatures"]
                .as_array()
                .is_some_and(|f| !f.is_empty()),
            "GatewayClass supportedFeatures",
            &class,
        );

        // Each policy is reported not applied, in its own status, for the Gateway it names
        // (the replicas run without the policy filter module, and the WasmFilter's module
        // does not exist).
        for kind in POLICY_KINDS {
            let policy = self
                .cluster
                .get(POLICY_API, kind, Some(NAMESPACE), "elsewhere");
            let ancestor = &policy["status"]["ancestors"][0];
            check(
                state(&ancestor["conditions"], "Accepted").0 == "False"
                    && ancestor["ancestorRef"]["name"] == "not-here"
                    && ancestor["controllerName"] == trellis_model::CONTROLLER_NAME,
                &format!("{kind} Accepted=False for Gateway not-here"),
                &policy,
            );
        }

        // The telemetry kinds report their targets missing too.
        for kind in ["TracingPolicy", "HealthPolicy"] {
            let policy = self.cluster.get(
                "telemetry.trellis.dev/v1alpha1",
                kind,
                Some(NAMESPACE),
                "elsewhere",
            );
            let ancestor = &policy["status"]["ancestors"][0];
            check(
                state(&ancestor["conditions"], "Accepted").0 == "False"
                    && ancestor["ancestorRef"]["name"] == "not-here",
                &format!("{kind} Accepted=False for its missing target"),
                &policy,
            );
        }

        // A PeerAuthentication is in force: in Kubernetes mode the CA (Secret trellis-ca)
        // always runs, so the mode it sets is reported.
        let peer = self.cluster.get(
            "security.trellis.dev/v1alpha1",
            "PeerAuthentication",
            Some(NAMESPACE),
            "strict",
        );
        check(
            state(&peer["status"]["conditions"], "Accepted")
                == ("True".to_string(), "Accepted".to_string())
                && peer["status"]["mode"] == "STRICT",
            "PeerAuthentication Accepted=True, mode STRICT (the CA is the Secret's)",
            &peer,
        );

        // Another controller's GatewayClass: Trellis neither writes its status nor claims it.
        let foreign = self
            .cluster
            .get(GATEWAY_API, "GatewayClass", None, "another-vendor");
        check(
            state(&foreign["status"]["conditions"], "Accepted").0 != "True",
            "another controller's GatewayClass left alone",
            &foreign,
        );
        let foreign_writes = self
            .cluster
            .server
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/gatewayclasses/another-vendor/status"))
            .count();
        check(
            foreign_writes == 0,
            &format!("{foreign_writes} writes to another controller's GatewayClass status"),
            &foreign,
        );

        let gw = self
            .cluster
            .get(GATEWAY_API, "Gateway", Some(NAMESPACE), "web");
        let status = &gw["status"];
        check(
            state(&status["conditions"], "Accepted") == t("True", "Accepted"),
            "Gateway Accepted",
            &gw,
        );
        check(
            state(&status["conditions"], "Programmed") == t("True", "Programmed"),
            "Gateway Programmed",
            &gw,
        );
        check(
            status["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .all(|c| c["observedGeneration"] == gw["metadata"]["generation"])
            }),
            "Gateway observedGeneration",
            &gw,
        );
        check(
            status["addresses"][0]["value"] == self.gateway.ip().to_string(),
            "Gateway addresses",
            &gw,
        );
        let listener = &status["listeners"][0];
        check(
            listener["name"] == "http" && listener["attachedRoutes"] == 4,
            "listener http with 4 attached routes",
            &gw,
        );
        for type_ in ["Accepted", "Programmed", "ResolvedRefs"] {
            check(
                state(&listener["conditions"], type_).0 == "True",
                &format!("listener {type_}"),
                &gw,
            );
        }

        let shop = self.cluster.route("shop");
        let parent = our_parent(&shop).cloned().unwrap_or_default();
        check(
            parent["parentRef"]["name"] == "web",
            "shop parentRef",
            &shop,
        );
        check(
            state(&parent["conditions"], "Accepted") == t("True", "Accepted"),
            "shop Accepted",
            &shop,
        );
        check(
            state(&parent["conditions"], "ResolvedRefs") == t("False", "BackendNotFound"),
            "shop ResolvedRefs (a rule names a Service that does not exist)",
            &shop,
        );
        let other = self.cluster.route("other");
        let parent = our_parent(&other).cloned().unwrap_or_default();
        check(
            state(&parent["conditions"], "ResolvedRefs") == t("True", "ResolvedRefs"),
            "other ResolvedRefs",
            &other,
        );
        check(
            condition(&parent["conditions"], "Accepted").map(|c| &c["observedGeneration"])
                == Some(&other["metadata"]["generation"]),
            "other observedGeneration",
            &other,
        );
        problems
    }

    /// Waits until the status read through the API is as it should be; returns how long that
    /// took.
    fn wait_for_status(&self) -> Duration {
        let started = Instant::now();
        let mut last = Vec::new();
        let done = eventually(
            "status written back through the API",
            Duration::from_secs(20),
            || {
                last = self.status_problems();
                Ok(last.is_empty())
            },
        );
        if let Err(e) = done {
            panic!("{e}: {last:#?}\n{}", self.debug());
        }
        started.elapsed()
    }

    fn debug(&self) -> String {
        let mut out = String::new();
        for r in &self.replicas {
            out.push_str(&format!("--- trellis log ---\n{}\n", tail(&r.log(), 40)));
        }
        out.push_str(&format!(
            "--- envoy log ---\n{}",
            tail(&self.envoy.log(), 20)
        ));
        out
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn relists(cp: &ControlPlane) -> f64 {
    cp.metrics()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("trellis_kubernetes_relists_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn kubernetes_mode_routes_writes_status_and_moves_traffic_within_a_second() {
    let s = Scenario::start(false);
    scenario::assert_routes_as_written(s.gateway);
    let mut weights = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..500 {
        *weights
            .entry(s.backend("weights.example.com", "/", &[]))
            .or_default() += 1;
    }
    let share = f64::from(weights.get("w80").copied().unwrap_or(0)) / 500.0;
    println!("weights 80/20 over 500 requests: {weights:?}, w80 share {share:.3}");
    assert_eq!(weights.values().sum::<u32>(), 500);
    assert!((share - 0.8).abs() <= 0.05, "{weights:?}");

    let converged = s.wait_for_status();
    println!("status read back through the API after {converged:?}");
    let cp = &s.replicas[0];
    assert_eq!(cp.metric("trellis_kubernetes_connected").unwrap(), 1.0);
    assert!(
        http_get_text(cp.admin, "/readyz")
            .unwrap()
            .contains("kubernetes: synced")
    );

    // An object updated through the API moves traffic within a second, without failures.
    assert_eq!(s.backend("move.example.com", "/", &[]), "v1");
    let requests = RequestLoop::start(
        s.gateway,
        &[
            ("move.example.com", "/"),
            ("shop.example.com", "/api/x"),
            ("other.example.com", "/"),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let (moved, converged) = s.move_to("v2");
    std::thread::sleep(Duration::from_millis(300));
    let count = requests.finish();
    println!(
        "API update: traffic moved after {moved:?}, route status observed the new generation after {converged:?}; {} requests, {} failed",
        count.sent, count.failed
    );
    assert!(moved < Duration::from_secs(1), "moving took {moved:?}");
    assert_eq!(count.failed, 0, "{:?}\n{}", count.failures, s.debug());
    for _ in 0..20 {
        assert_eq!(s.backend("move.example.com", "/", &[]), "v2");
    }

    // An object that does not read as its type is reported with its field; its last good
    // version stays in force.
    s.cluster
        .apply(&move_route("v1").replace("port: 80", "port: eighty"));
    eventually("the diagnostic", Duration::from_secs(10), || {
        Ok(cp.status()?["diagnostics"]
            .to_string()
            .contains("HTTPRoute shop/move"))
    })
    .unwrap();
    let diagnostics = cp.status().unwrap()["diagnostics"].to_string();
    assert!(
        diagnostics.contains("spec.rules[0].backendRefs[0].port")
            && diagnostics.contains("last good version"),
        "{diagnostics}"
    );
    for _ in 0..20 {
        assert_eq!(s.backend("move.example.com", "/", &[]), "v2");
    }
    assert!(cp.metric("trellis_config_errors").unwrap() >= 1.0);
    s.cluster.apply(&move_route("v1"));
    eventually("the fixed route to apply", Duration::from_secs(10), || {
        Ok(s.backend("move.example.com", "/", &[]) == "v1"
            && cp.metric("trellis_config_errors")? == 0.0)
    })
    .unwrap();
}

#[test]
fn kubernetes_faults_drop_no_request_and_status_converges_after_each() {
    let s = Scenario::start(false);
    let cp = &s.replicas[0];
    let faults = s.cluster.server.faults();
    // Every status as it should be before the first fault, so "converged after" means
    // something.
    s.wait_for_status();
    let watches = faults.open_watches();
    let requests = RequestLoop::start(
        s.gateway,
        &[
            ("move.example.com", "/"),
            ("shop.example.com", "/api/x"),
            ("other.example.com", "/"),
        ],
    );
    let mut report = Vec::new();

    // 1. Every watch dropped: the watches resume where they were, nothing is relisted.
    std::thread::sleep(Duration::from_millis(300));
    faults.drop_watches();
    std::thread::sleep(Duration::from_millis(500));
    let (moved, converged) = s.move_to("v2");
    let whole = s.wait_for_status();
    let count = requests.take();
    report.push(format!(
        "watches dropped: {} requests, {} failed; then traffic moved in {moved:?}, route status converged in {converged:?}, every status as expected {whole:?} later",
        count.sent, count.failed
    ));
    assert_eq!(count.failed, 0, "{:?}\n{}", count.failures, s.debug());
    assert!(moved < Duration::from_secs(1), "{moved:?}");

    // 2. History compacted, then watches dropped: each watch resumes into a 410 Gone and
    // relists. The relist swaps in a complete list: nothing is deleted, nothing republished.
    let translations = cp.metric("trellis_translations_total").unwrap();
    let before = relists(cp);
    // A write to a kind nobody watches leaves every watch behind the latest resourceVersion.
    s.cluster.apply(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: unrelated\n  namespace: shop\n",
    );
    faults.compact();
    faults.drop_watches();
    eventually("every watch to relist", Duration::from_secs(15), || {
        Ok(relists(cp) >= before + 8.0)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.debug()));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        cp.metric("trellis_translations_total").unwrap(),
        translations,
        "a relist of unchanged objects publishes nothing"
    );
    let (moved, converged) = s.move_to("v1");
    let whole = s.wait_for_status();
    let count = requests.take();
    report.push(format!(
        "410 Gone and relist of {} watches: {} requests, {} failed, no configuration republished; then traffic moved in {moved:?}, route status converged in {converged:?}, every status as expected {whole:?} later",
        relists(cp) - before,
        count.sent,
        count.failed
    ));
    assert_eq!(count.failed, 0, "{:?}\n{}", count.failures, s.debug());
    assert!(moved < Duration::from_secs(1), "{moved:?}");

    // 3. The API server down for 10 s (connections closed): the last good configuration is
    // served, the outage is reported, and updates resume after it.
    let down = Instant::now();
    faults.refuse_for_with(Duration::from_secs(10), Refusal::CloseConnection);
    eventually("the outage to be reported", Duration::from_secs(8), || {
        Ok(cp.metric("trellis_kubernetes_connected")? == 0.0)
    })
    .unwrap();
    let readiness = http_get_text(cp.admin, "/readyz").unwrap();
    assert!(readiness.contains("unreachable"), "{readiness}");
    let reported = down.elapsed();
    while down.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    while faults.refusing().is_some() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let recovered = Instant::now();
    eventually("the watches to reopen", Duration::from_secs(15), || {
        Ok(faults.open_watches() >= watches)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.debug()));
    let reopened = recovered.elapsed();
    let (moved, converged) = s.move_to("v2");
    eventually(
        "the recovery to be reported",
        Duration::from_secs(10),
        || Ok(cp.metric("trellis_kubernetes_connected")? == 1.0),
    )
    .unwrap();
    let whole = s.wait_for_status();
    let count = requests.finish();
    report.push(format!(
        "API server down 10 s: {} requests, {} failed; outage reported after {reported:?}; watches reopened {reopened:?} after recovery; then traffic moved in {moved:?}, route status converged in {converged:?}, every status as expected {whole:?} later",
        count.sent, count.failed
    ));
    assert_eq!(count.failed, 0, "{:?}\n{}", count.failures, s.debug());
    assert!(moved < Duration::from_secs(1), "{moved:?}");
    assert!(
        s.envoy
            .stat("cluster_manager.cds.update_rejected")
            .unwrap_or(None)
            .unwrap_or(0)
            == 0
    );
    for line in &report {
        println!("{line}");
    }
    assert!(
        cp.metric("trellis_kubernetes_watch_errors_total{kind=\"HTTPRoute\"}")
            .unwrap()
            >= 1.0
    );
}

#[test]
fn kubernetes_leader_killed_drops_no_request_and_status_moves_without_flapping() {
    let mut s = Scenario::start(true);
    s.wait_for_status();
    let b = &s.replicas[1];
    eventually("replica-b to be ready", Duration::from_secs(20), || {
        Ok(http_get_text(b.admin, "/readyz").is_ok())
    })
    .unwrap();
    assert_eq!(b.metric("trellis_leader").unwrap(), 0.0, "one leader");
    assert_eq!(
        s.replicas[0].proxies().unwrap().as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(b.proxies().unwrap().as_array().map(Vec::len), Some(0));
    // Let both replicas see each other's Leases and settle.
    std::thread::sleep(Duration::from_secs(1));
    let gateway_status = || {
        s.cluster
            .get(GATEWAY_API, "Gateway", Some(NAMESPACE), "web")["status"]
            .clone()
    };
    let before = gateway_status();

    let requests = RequestLoop::start(
        s.gateway,
        &[
            ("move.example.com", "/"),
            ("shop.example.com", "/api/x"),
            ("other.example.com", "/"),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let writes = s.cluster.status_writes().len();
    let killed = Instant::now();
    s.replicas[0].kill();
    let b = &s.replicas[1];
    eventually(
        "Envoy to reconnect to replica-b",
        Duration::from_secs(10),
        || Ok(b.proxies()?.as_array().map(Vec::len) == Some(1)),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", s.debug()));
    let reconnected = killed.elapsed();
    eventually("replica-b to take over", Duration::from_secs(15), || {
        Ok(b.metric("trellis_leader")? == 1.0)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.debug()));
    let took_over = killed.elapsed();
    // The new leader computes the same status as the old one wrote: nothing to write.
    std::thread::sleep(Duration::from_secs(2));
    let flapped = s.cluster.status_writes().split_off(writes);
    let flaps = flapped.len();
    assert_eq!(
        gateway_status(),
        before,
        "the Gateway's status did not change"
    );
    let lease = s.cluster.get(
        "coordination.k8s.io/v1",
        "Lease",
        Some("trellis-system"),
        "trellis",
    );
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b");

    let (moved, converged) = s.move_to("v2");
    let whole = s.wait_for_status();
    std::thread::sleep(Duration::from_millis(300));
    let count = requests.take();
    println!(
        "leader killed: Envoy reconnected to the other replica after {reconnected:?}, which took over after {took_over:?} with {flaps} status writes; {} requests, {} failed; then traffic moved in {moved:?}, route status converged in {converged:?}, every status as expected {whole:?} later",
        count.sent, count.failed
    );
    assert_eq!(
        flaps,
        0,
        "status writes during the takeover: {flapped:?}\n{}",
        s.debug()
    );
    assert_eq!(count.failed, 0, "{:?}\n{}", count.failures, s.debug());
    assert!(moved < Duration::from_secs(1), "{moved:?}");
    let gw = gateway_status();
    let programmed = condition(&gw["conditions"], "Programmed").unwrap();
    assert_eq!(programmed["status"], "True");
    assert!(
        programmed["message"]
            .as_str()
            .unwrap_or_default()
            .contains("1 of 1"),
        "{programmed}"
    );
    assert!(!s.replicas[0].running());

    // A rolling update: a new replica where the killed one was, then the leader stopped
    // gracefully. It gives the Lease up, so the new replica leads within a retry period rather
    // than a lease duration, and Envoy moves to it.
    let old_address = s.replicas[0].xds.to_string();
    let c = start_replica(&s.cluster, &s.work, "replica-c", &old_address);
    s.replicas.push(c);
    eventually("replica-c to be ready", Duration::from_secs(20), || {
        Ok(http_get_text(s.replicas[2].admin, "/readyz").is_ok())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let stopping = Instant::now();
    assert!(
        s.replicas[1].terminate(Duration::from_secs(10)),
        "replica-b exits on SIGTERM\n{}",
        s.debug()
    );
    let c = &s.replicas[2];
    eventually("replica-c to lead", Duration::from_secs(10), || {
        Ok(c.metric("trellis_leader")? == 1.0)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.debug()));
    let handed_over = stopping.elapsed();
    eventually(
        "Envoy to reconnect to replica-c",
        Duration::from_secs(10),
        || Ok(c.proxies()?.as_array().map(Vec::len) == Some(1)),
    )
    .unwrap();
    let (moved, converged) = s.move_to("v1");
    let whole = s.wait_for_status();
    let count = requests.finish();
    println!(
        "leader stopped gracefully: replica-c led {handed_over:?} after SIGTERM; {} requests, {} failed; then traffic moved in {moved:?}, route status converged in {converged:?}, every status as expected {whole:?} later",
        count.sent, count.failed
    );
    assert!(
        handed_over < Duration::from_secs(2),
        "the Lease was released, not left to expire: {handed_over:?}"
    );
    assert_eq!(count.failed, 0, "{:?}\n{}", count.failures, s.debug());

    // Everything the replicas did is granted by the RBAC manifests (checked against
    // trellis_kube::kinds::required_permissions by the deploy test), and everything granted
    // was used.
    let used = s.cluster.used_permissions();
    let granted: BTreeSet<(String, String, String)> = trellis_kube::kinds::required_permissions()
        .into_iter()
        .map(|p| (p.group, p.resource, p.verb))
        .collect();
    println!("verbs used by the control plane: {used:?}");
    // TokenReviews come with proxies that authenticate: the mutual-TLS test below checks them.
    let reviews = (
        "authentication.k8s.io".to_string(),
        "tokenreviews".to_string(),
        "create".to_string(),
    );
    let mut expected = granted.clone();
    expected.remove(&reviews);
    // So does the injection webhook's configuration: the injection test checks it.
    for verb in ["get", "patch"] {
        expected.remove(&(
            "admissionregistration.k8s.io".to_string(),
            "mutatingwebhookconfigurations".to_string(),
            verb.to_string(),
        ));
    }
    // This scenario has no BackendTrafficPolicy or ExternalService, so nothing patches their
    // status here (the file-provider tests read it: tests/resilience.rs, tests/mesh.rs).
    expected.remove(&(
        "policy.trellis.dev".to_string(),
        "backendtrafficpolicies/status".to_string(),
        "patch".to_string(),
    ));
    expected.remove(&(
        "networking.trellis.dev".to_string(),
        "externalservices/status".to_string(),
        "patch".to_string(),
    ));
    assert_eq!(used, expected, "used vs granted");
}

/// Kubernetes mode with mutual TLS on xDS: the CA's root is created in Secret
/// `trellis-system/trellis-ca`; a Gateway proxy's agent presents the ServiceAccount token the
/// kubelet projected into its pod (here issued by the fake API server), the control plane
/// checks it with TokenReview and signs a certificate for the pod's service account
/// (`<gateway>-gateway`), and Envoy's ADS stream authenticated with it gets its Gateway's
/// configuration. Once the pod is deleted, its token gets nothing.
#[test]
fn kubernetes_mode_authenticates_proxies_with_reviewed_service_account_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().to_path_buf();
    let cluster = Cluster::start(&work);
    let (ip, port) = private_loopback();
    let mut yaml = gateway_yaml(ip, port);
    let mut pods = Vec::new();
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
    // The Gateway's proxy pod, running as the Gateway's service account.
    yaml.push_str(&format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web-gateway-7d9f\n  namespace: {NAMESPACE}\nspec:\n  serviceAccountName: web-gateway\n  containers: [{{name: envoy}}]\n"
    ));
    cluster.apply(&yaml);
    cluster.apply(ROUTES);
    cluster.apply(&move_route("v1"));

    let args = replica_args("replica-a");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cp = ControlPlane::start_kubernetes_mtls(
        &cluster.kubeconfig,
        &work.join("replica-a"),
        "127.0.0.1:0",
        &args,
    )
    .unwrap();
    // Read from the store, not through the API: the request log is the control plane's alone.
    let secret_kind = cluster.server.kind("v1", "Secret").unwrap();
    let secret = cluster
        .server
        .store()
        .get(&secret_kind, "trellis-system", "trellis-ca")
        .unwrap();
    let root = secret["data"]["root-cert.pem"].as_str().unwrap();
    use base64::Engine;
    let root = base64::engine::general_purpose::STANDARD
        .decode(root)
        .unwrap();
    println!(
        "Secret trellis-system/trellis-ca holds the root ({} bytes of PEM) and its key: {}",
        root.len(),
        secret["data"]["root-key.pem"].is_string()
    );
    let root_path = work.join("root-cert.pem");
    std::fs::write(&root_path, &root).unwrap();

    let token = cluster
        .server
        .issue_token(
            NAMESPACE,
            "web-gateway-7d9f",
            "trellis-ca",
            Duration::from_secs(600),
        )
        .unwrap();
    let gateway = format!("{NAMESPACE}/web");
    let agent =
        trellis_harness::GatewayAgent::with_token(cp.xds, &work, &gateway, &token, &root_path)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", tail(&cp.log(), 30)));
    let bootstrap = trellis_harness::bootstrap_with(
        &[cp.xds],
        &gateway,
        false,
        "e2e-proxy",
        Some(&agent.socket),
    )
    .unwrap();
    let mut envoy = Envoy::start(&bootstrap, &work, "envoy", 2).unwrap();
    envoy.keep_agent(agent);
    let gateway_address = SocketAddr::from((ip, port));
    eventually(
        "the gateway to route over authenticated xDS",
        Duration::from_secs(20),
        || Ok(request(gateway_address, "GET", "other.example.com", "/", &[])?.status == 200),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", tail(&cp.log(), 30), tail(&envoy.log(), 30)));
    scenario::assert_routes_as_written(gateway_address);
    println!("a Gateway proxy authenticated by its pod's ServiceAccount token routes as written");
    assert!(cp.metric("trellis_ca_certificates_issued_total").unwrap() >= 1.0);

    // The pod is deleted: the API server no longer vouches for its token.
    let pod_kind = cluster.server.kind("v1", "Pod").unwrap();
    cluster
        .server
        .store()
        .delete(
            &pod_kind,
            NAMESPACE,
            "web-gateway-7d9f",
            &Default::default(),
            false,
        )
        .unwrap();
    let refused = std::process::Command::new(trellis_harness::trellis_bin().unwrap())
        .args(["agent", "--ca-address", &cp.xds.to_string(), "--token-file"])
        .arg(work.join(format!("gateway-{}.token", gateway.replace('/', "-"))))
        .arg("--sds-socket")
        .arg(work.join("refused.sock"))
        .arg("--root-cert")
        .arg(&root_path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let _ = std::process::Command::new("kill")
        .arg(refused.id().to_string())
        .status();
    let log = String::from_utf8_lossy(&refused.wait_with_output().unwrap().stderr).to_string();
    let line = log
        .lines()
        .find(|l| l.contains("no certificate"))
        .unwrap_or_else(|| panic!("{log}"));
    println!("a token of a deleted pod: {line}");
    assert!(line.contains("not found"), "{log}");
    assert!(!log.contains("certificate obtained"), "{log}");

    // What the CA needed of the API server, all granted by the RBAC manifests.
    let used = cluster.used_permissions();
    let granted: BTreeSet<(String, String, String)> = trellis_kube::kinds::required_permissions()
        .into_iter()
        .map(|p| (p.group, p.resource, p.verb))
        .collect();
    for (group, resource, verb) in [
        ("", "secrets", "get"),
        ("", "secrets", "create"),
        ("authentication.k8s.io", "tokenreviews", "create"),
    ] {
        let p = (group.to_string(), resource.to_string(), verb.to_string());
        assert!(used.contains(&p), "{p:?} not used: {used:?}");
    }
    assert!(
        used.is_subset(&granted),
        "used {used:?}\ngranted {granted:?}"
    );
}

/// Sidecar injection through the fake API server's mutating admission: the webhook
/// configuration of `deploy/`, its caBundle filled in by the leader, and pods created through
/// the API: in a labelled namespace (injected, and the stored pod read back as a k8s-openapi
/// Pod), opted out, in the control plane's namespace, already injected; a malformed review
/// sent to the webhook directly.
#[test]
fn kubernetes_mode_injects_sidecars_through_the_admission_webhook() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::PostParams;
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().to_path_buf();
    let cluster = Cluster::start(&work);
    let namespace = |name: &str, meshed: bool| {
        let mesh = if meshed {
            ", trellis.dev/mesh: enabled"
        } else {
            ""
        };
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{kubernetes.io/metadata.name: {name}{mesh}}}\n---\n"
        )
    };
    // trellis-system labelled too: the webhook's namespaceSelector and the handler both keep
    // it out.
    cluster.apply(&format!(
        "{}{}{}",
        namespace("shop", true),
        namespace("plain", false),
        namespace("trellis-system", true)
    ));
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes/base/injection.yaml");
    cluster.apply(&std::fs::read_to_string(deploy).unwrap());

    let (ip, port) = private_loopback();
    let webhook = SocketAddr::from((ip, port));
    let mut args = replica_args("replica-a");
    args.extend([
        "--injection-address".to_string(),
        webhook.to_string(),
        "--sidecar-image".to_string(),
        "trellis-sidecar:e2e".to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cp = ControlPlane::start_kubernetes(
        &cluster.kubeconfig,
        &work.join("replica-a"),
        "127.0.0.1:0",
        &args,
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
    let secret_kind = cluster.server.kind("v1", "Secret").unwrap();
    eventually(
        "the leader to fill in caBundle",
        Duration::from_secs(20),
        || {
            let config =
                cluster
                    .server
                    .store()
                    .get(&webhook_kind, "", "trellis-sidecar-injector")?;
            Ok(config["webhooks"][0]["clientConfig"]["caBundle"].is_string())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", tail(&cp.log(), 30)));
    let config = cluster
        .server
        .store()
        .get(&webhook_kind, "", "trellis-sidecar-injector")
        .unwrap();
    let secret = cluster
        .server
        .store()
        .get(&secret_kind, "trellis-system", "trellis-ca")
        .unwrap();
    assert_eq!(
        config["webhooks"][0]["clientConfig"]["caBundle"], secret["data"]["root-cert.pem"],
        "caBundle is the CA's root"
    );
    // The namespaces reach the control plane's model.
    std::thread::sleep(Duration::from_millis(500));

    let create = |ns: &str, pod: Value| -> Result<Pod, kube::Error> {
        let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
        let pod: Pod = serde_json::from_value(pod).unwrap();
        cluster
            .runtime
            .block_on(api.create(&PostParams::default(), &pod))
    };
    let app = |name: &str| {
        serde_json::json!({
            "metadata": { "name": name, "labels": { "app": "reviews" } },
            "spec": { "serviceAccountName": "reviews",
                      "containers": [{ "name": "app", "image": "reviews:1" }] },
        })
    };
    let init_names = |pod: &Pod| -> Vec<String> {
        pod.spec
            .as_ref()
            .and_then(|s| s.init_containers.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect()
    };

    // A pod in a labelled namespace: the capture init container and the native sidecar.
    let injected = create("shop", app("reviews-1")).unwrap();
    println!(
        "shop/reviews-1 as stored:\n{}",
        serde_json::to_string_pretty(&injected.spec).unwrap()
    );
    assert_eq!(init_names(&injected), ["trellis-capture", "trellis-proxy"]);
    let proxy = &injected
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .as_ref()
        .unwrap()[1];
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    assert_eq!(proxy.image.as_deref(), Some("trellis-sidecar:e2e"));
    assert!(
        proxy
            .args
            .as_ref()
            .unwrap()
            .contains(&"trellis.trellis-system.svc:18000".to_string())
    );
    assert_eq!(
        injected.metadata.labels.as_ref().unwrap()["trellis.dev/sidecar-injected"],
        "true"
    );

    // Opted out, the control plane's namespace, an unlabelled namespace: as created.
    let mut opted_out = app("legacy-1");
    opted_out["metadata"]["annotations"] = serde_json::json!({ "trellis.dev/sidecar": "false" });
    for (ns, pod) in [
        ("shop", opted_out),
        ("trellis-system", app("tool-1")),
        ("plain", app("plain-1")),
    ] {
        let created = create(ns, pod).unwrap();
        println!(
            "{ns}/{}: init containers {:?}",
            created.metadata.name.as_deref().unwrap_or(""),
            init_names(&created)
        );
        assert!(init_names(&created).is_empty());
    }
    // trellis-system is kept out by the handler too: a review sent straight to it.
    // Already injected (a pod created from an injected pod's spec): unchanged.
    let mut again: Value = serde_json::to_value(&injected).unwrap();
    again["metadata"] = serde_json::json!({ "name": "reviews-2", "labels": { "app": "reviews" } });
    let created = create("shop", again).unwrap();
    assert_eq!(init_names(&created), ["trellis-capture", "trellis-proxy"]);
    println!(
        "shop/reviews-2 (from an injected spec): {:?}",
        init_names(&created)
    );

    // The webhook itself: a malformed review is a 400 with the reason, and trellis-system is
    // refused by the handler even when the namespaceSelector lets it through.
    let root = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        secret["data"]["root-cert.pem"].as_str().unwrap(),
    )
    .unwrap();
    let root_path = work.join("root.pem");
    std::fs::write(&root_path, root).unwrap();
    let post = |body: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--cacert"])
            .arg(&root_path)
            .args([
                "--resolve",
                &format!("trellis.trellis-system.svc:{port}:{ip}"),
            ])
            .args([
                "-H",
                "content-type: application/json",
                "--data-binary",
                body,
            ])
            .arg(format!("https://trellis.trellis-system.svc:{port}/inject"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let malformed = post("{not json");
    println!("a malformed review: {}", malformed.replace('\n', " | "));
    assert!(malformed.ends_with("400"), "{malformed}");
    let system = post(
        &serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": { "uid": "u1", "kind": { "group": "", "version": "v1", "kind": "Pod" },
                         "namespace": "trellis-system", "operation": "CREATE",
                         "object": app("tool-2") },
        })
        .to_string(),
    );
    println!(
        "a trellis-system pod sent directly: {}",
        system.replace('\n', " | ")
    );
    assert!(
        system.contains("never injected") && !system.contains("\"patch\""),
        "{system}"
    );

    // Every verb used is granted, and the webhook configuration's were used.
    let used = cluster.used_permissions();
    let granted: BTreeSet<(String, String, String)> = trellis_kube::kinds::required_permissions()
        .into_iter()
        .map(|p| (p.group, p.resource, p.verb))
        .collect();
    for verb in ["get", "patch"] {
        let p = (
            "admissionregistration.k8s.io".to_string(),
            "mutatingwebhookconfigurations".to_string(),
            verb.to_string(),
        );
        assert!(used.contains(&p), "{p:?} not used");
    }
    let extra: Vec<_> = used.difference(&granted).collect();
    // The test's own pod creations are its own, not the control plane's.
    assert!(
        extra
            .iter()
            .all(|(g, r, v)| g.is_empty() && r == "pods" && v == "create"),
        "used but not granted: {extra:?}"
    );
}
