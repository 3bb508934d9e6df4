//! The `deploy/kubernetes` kustomization, checked without a cluster:
//!
//! - every resource listed by every `kustomization.yaml` loads, and parses as the Kubernetes
//!   type it claims to be (k8s-openapi's types reject unknown apiVersions and wrong fields);
//! - the RBAC rules grant exactly [`required_permissions`]: the verbs and resources the
//!   provider, the status writer and leader election use, nothing more;
//! - the Deployment runs two non-root replicas with a read-only root filesystem, probes on a
//!   port of their own, the admin endpoint on loopback and out of the Service, resource
//!   requests and the identity the election needs;
//! - the Gateway API CRDs are release v1.6.1's standard channel, serve every kind and version
//!   the provider reads, and (when an upstream copy is beside the repository) are byte for
//!   byte the upstream files;
//! - nothing is fetched: every resource is a local file;
//! - when `kubectl` is installed, `kubectl kustomize` renders each kustomization to the same
//!   objects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use trellis_kube::kinds::{
    Permission, STATUS_KINDS, Scope, WATCHED, WatchedKind, required_permissions,
};

/// The Gateway API release whose standard channel `deploy/kubernetes/gateway-api` holds.
const GATEWAY_API_RELEASE: &str = "v1.6.1";

/// Kinds without a namespace; every other object goes into `trellis-system`.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "MutatingWebhookConfiguration",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

/// One loaded object and where it came from.
#[derive(Debug, Clone)]
struct Loaded {
    file: PathBuf,
    object: Value,
}

impl Loaded {
    fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
    fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"].as_str()
    }
}

fn read_yaml(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// Every object a kustomization directory renders from local files, and its remote resources.
fn load_kustomization(dir: &Path, objects: &mut Vec<Loaded>, remote: &mut Vec<String>) {
    let file = dir.join("kustomization.yaml");
    let docs = read_yaml(&file);
    assert_eq!(docs.len(), 1, "{}", file.display());
    let k = &docs[0];
    assert_eq!(
        k["apiVersion"],
        "kustomize.config.k8s.io/v1beta1",
        "{}",
        file.display()
    );
    assert_eq!(k["kind"], "Kustomization", "{}", file.display());
    for key in k.as_object().unwrap().keys() {
        assert!(
            ["apiVersion", "kind", "resources"].contains(&key.as_str()),
            "{}: only `resources` is used here (a transformer would make these checks miss \
             what kustomize renders): {key}",
            file.display()
        );
    }
    let resources = k["resources"].as_array().cloned().unwrap_or_default();
    for r in resources {
        let r = r.as_str().expect("a resource is a path");
        if r.starts_with("https://") || r.starts_with("http://") {
            remote.push(r.to_string());
            continue;
        }
        let path = dir.join(r);
        if path.is_dir() {
            load_kustomization(&path, objects, remote);
        } else {
            for object in read_yaml(&path) {
                objects.push(Loaded {
                    file: path.clone(),
                    object,
                });
            }
        }
    }
}

fn load_all() -> (Vec<Loaded>, Vec<String>) {
    let mut objects = Vec::new();
    let mut remote = Vec::new();
    load_kustomization(&deploy_dir(), &mut objects, &mut remote);
    (objects, remote)
}

fn typed<T: serde::de::DeserializeOwned>(o: &Loaded) -> T {
    serde_json::from_value(o.object.clone()).unwrap_or_else(|e| {
        panic!(
            "{} {} in {} does not parse as {}: {e}",
            o.kind(),
            o.name(),
            o.file.display(),
            std::any::type_name::<T>()
        )
    })
}

fn one<'a>(objects: &'a [Loaded], kind: &str) -> Vec<&'a Loaded> {
    objects.iter().filter(|o| o.kind() == kind).collect()
}

#[test]
fn every_listed_resource_parses_as_its_kubernetes_type() {
    let (objects, remote) = load_all();
    assert!(!objects.is_empty());
    assert!(remote.is_empty(), "nothing is fetched: {remote:?}");
    let mut seen = BTreeSet::new();
    for o in &objects {
        assert!(
            !o.name().is_empty(),
            "{}: an object without a name",
            o.file.display()
        );
        assert!(
            seen.insert((
                o.kind().to_string(),
                o.namespace().map(str::to_string),
                o.name().to_string()
            )),
            "{} {} defined twice",
            o.kind(),
            o.name()
        );
        match o.kind() {
            "Namespace" => drop(typed::<Namespace>(o)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(o)),
            "ClusterRole" => drop(typed::<ClusterRole>(o)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(o)),
            "Role" => drop(typed::<Role>(o)),
            "RoleBinding" => drop(typed::<RoleBinding>(o)),
            "Deployment" => drop(typed::<Deployment>(o)),
            "Service" => drop(typed::<Service>(o)),
            "PodDisruptionBudget" => drop(typed::<PodDisruptionBudget>(o)),
            "CustomResourceDefinition" => drop(typed::<CustomResourceDefinition>(o)),
            "ValidatingAdmissionPolicy" => drop(typed::<ValidatingAdmissionPolicy>(o)),
            "MutatingWebhookConfiguration" => {
                // The webhook the code keeps current, at the path it serves, never selecting
                // the control plane's namespace or kube-system.
                let config = typed::<MutatingWebhookConfiguration>(o);
                assert_eq!(o.name(), trellis_kube::kinds::INJECTOR_WEBHOOK);
                for w in config.webhooks.unwrap() {
                    let service = w.client_config.service.unwrap();
                    assert_eq!(service.path.as_deref(), Some("/inject"));
                    assert_eq!(service.name, "trellis");
                    let excluded = w.namespace_selector.unwrap().match_expressions.unwrap();
                    assert!(excluded.iter().any(|e| e.operator == "NotIn"
                        && e.values.iter().flatten().any(|v| v == "trellis-system")
                        && e.values.iter().flatten().any(|v| v == "kube-system")));
                }
            }
            "ValidatingAdmissionPolicyBinding" => {
                drop(typed::<ValidatingAdmissionPolicyBinding>(o))
            }
            other => panic!(
                "{}: no check for kind {other}; add one to this test",
                o.file.display()
            ),
        }
        if CLUSTER_SCOPED.contains(&o.kind()) {
            assert_eq!(o.namespace(), None, "{} {}", o.kind(), o.name());
        } else {
            assert_eq!(
                o.namespace(),
                Some("trellis-system"),
                "{} {}",
                o.kind(),
                o.name()
            );
        }
    }
}

/// The permissions the manifests grant, in the code's terms.
fn granted(objects: &[Loaded]) -> BTreeSet<Permission> {
    let mut out = BTreeSet::new();
    let mut add = |scope: Scope, rules: &[k8s_openapi::api::rbac::v1::PolicyRule]| {
        for rule in rules {
            assert!(rule.non_resource_urls.is_none(), "{rule:?}");
            let names: Vec<Option<String>> = match &rule.resource_names {
                Some(names) => names.iter().cloned().map(Some).collect(),
                None => vec![None],
            };
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        assert!(
                            group != "*" && resource != "*" && verb != "*",
                            "no wildcards: {rule:?}"
                        );
                        for name in &names {
                            out.insert(Permission {
                                scope,
                                group: group.clone(),
                                resource: resource.clone(),
                                verb: verb.clone(),
                                name: name.clone(),
                            });
                        }
                    }
                }
            }
        }
    };
    for o in one(objects, "ClusterRole") {
        add(
            Scope::Cluster,
            &typed::<ClusterRole>(o).rules.unwrap_or_default(),
        );
    }
    for o in one(objects, "Role") {
        add(
            Scope::LeaseNamespace,
            &typed::<Role>(o).rules.unwrap_or_default(),
        );
    }
    out
}

#[test]
fn rbac_grants_exactly_what_the_code_uses() {
    let (objects, _) = load_all();
    let granted = granted(&objects);
    let needed: BTreeSet<Permission> = required_permissions().into_iter().collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    let missing: Vec<_> = needed.difference(&granted).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "granted but not used: {extra:#?}\nused but not granted: {missing:#?}"
    );
    // The list, for the record (`cargo test -p trellis-kube --test deploy -- --nocapture`).
    for p in &needed {
        let group = if p.group.is_empty() { "core" } else { &p.group };
        println!("{:?}\t{group}\t{}\t{}", p.scope, p.resource, p.verb);
    }

    // The bindings give those roles to the Deployment's service account, the Role in the
    // Deployment's namespace (where the election Lease is by default).
    let deployment: Deployment = typed(one(&objects, "Deployment")[0]);
    let namespace = deployment.metadata.namespace.clone().unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let account = pod.service_account_name.unwrap();
    let binding: ClusterRoleBinding = typed(one(&objects, "ClusterRoleBinding")[0]);
    let role: Role = typed(one(&objects, "Role")[0]);
    let role_binding: RoleBinding = typed(one(&objects, "RoleBinding")[0]);
    let cluster_role: ClusterRole = typed(one(&objects, "ClusterRole")[0]);
    assert_eq!(binding.role_ref.name, cluster_role.metadata.name.unwrap());
    assert_eq!(
        role_binding.role_ref.name,
        role.metadata.name.clone().unwrap()
    );
    assert_eq!(role.metadata.namespace.as_deref(), Some(namespace.as_str()));
    for subjects in [binding.subjects, role_binding.subjects] {
        let s = &subjects.unwrap()[0];
        assert_eq!(s.kind, "ServiceAccount");
        assert_eq!(s.name, account);
        assert_eq!(s.namespace.as_deref(), Some(namespace.as_str()));
    }
    assert!(
        one(&objects, "ServiceAccount")
            .iter()
            .any(|o| o.name() == account)
    );
}

#[test]
fn the_deployment_is_highly_available_locked_down_and_probed() {
    let (objects, _) = load_all();
    let deployment: Deployment = typed(one(&objects, "Deployment")[0]);
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    let pod_security = pod.security_context.unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert!(pod_security.run_as_user.is_some_and(|u| u != 0));
    let c = &pod.containers[0];
    let security = c.security_context.clone().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.unwrap().drop.unwrap(),
        ["ALL".to_string()]
    );
    let requests = c.resources.clone().unwrap().requests.unwrap();
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));

    let args = c.args.clone().unwrap();
    assert_eq!(args[0], "serve");
    assert!(args.contains(&"--kubernetes".to_string()));
    let port_of = |flag: &str| -> i32 {
        let value = args
            .iter()
            .find_map(|a| a.strip_prefix(&format!("{flag}=")))
            .unwrap_or_else(|| panic!("{flag} is set"));
        value.rsplit(':').next().unwrap().parse().unwrap()
    };
    let ports = c.ports.clone().unwrap();
    let named = |name: &str| {
        ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("port {name}"))
            .container_port
    };
    assert_eq!(named("xds"), port_of("--xds-address"));
    assert_eq!(named("probes"), port_of("--probe-address"));
    assert_eq!(named("modules"), port_of("--module-server-address"));
    assert_eq!(named("webhook"), port_of("--injection-address"));
    let admin = args
        .iter()
        .find_map(|a| a.strip_prefix("--admin-address="))
        .expect("--admin-address is set");
    assert!(
        admin.starts_with("127.0.0.1:"),
        "the admin endpoint stays on loopback: {admin}"
    );
    let probe_path = |probe: Option<k8s_openapi::api::core::v1::Probe>| {
        let get = probe.unwrap().http_get.unwrap();
        let port = match get.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s,
            other => panic!("probe the named probes port, not {other:?}"),
        };
        (get.path.unwrap(), port)
    };
    assert_eq!(
        probe_path(c.readiness_probe.clone()),
        ("/readyz".to_string(), "probes".to_string())
    );
    assert_eq!(
        probe_path(c.liveness_probe.clone()),
        ("/healthz".to_string(), "probes".to_string())
    );
    let env: Vec<String> = c.env.clone().unwrap().into_iter().map(|e| e.name).collect();
    assert!(env.contains(&"POD_NAME".to_string()) && env.contains(&"POD_UID".to_string()));

    let service: Service = typed(one(&objects, "Service")[0]);
    let service = service.spec.unwrap();
    assert_eq!(service.selector, spec.selector.match_labels);
    let mut exposed = Vec::new();
    for p in service.ports.unwrap() {
        let target = match p.target_port.unwrap() {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s,
            other => panic!("{other:?}"),
        };
        named(&target);
        exposed.push(target);
    }
    // The Service carries what proxies and the API server (the webhook) need, never the
    // admin endpoint.
    assert_eq!(exposed, ["xds", "modules", "webhook"]);
}

/// The CRD among `crds` that serves `w`: its kind, at the version read, with the kind's scope,
/// and a status subresource when Trellis writes the kind's status.
fn assert_crd_serves(crds: &[&Loaded], w: &WatchedKind) {
    let name = format!("{}.{}", w.plural, w.group);
    let crd = crds
        .iter()
        .find(|c| c.name() == name)
        .unwrap_or_else(|| panic!("no CRD {name}"));
    let crd = &crd.object;
    assert_eq!(crd["spec"]["names"]["kind"], w.kind.name(), "{name}");
    let version = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == w.version)
        .unwrap_or_else(|| panic!("{} does not serve {}", w.plural, w.version));
    assert_eq!(version["served"], true, "{name} {}", w.version);
    let scope = if w.namespaced {
        "Namespaced"
    } else {
        "Cluster"
    };
    assert_eq!(crd["spec"]["scope"], scope, "{name}");
    if STATUS_KINDS.contains(&w.kind) {
        assert!(
            version["subresources"]["status"].is_object(),
            "{name} has a status subresource"
        );
    }
}

#[test]
fn trellis_crds_serve_what_the_provider_reads() {
    let dir = deploy_dir().join("crds");
    let mut objects = Vec::new();
    let mut remote = Vec::new();
    load_kustomization(&dir, &mut objects, &mut remote);
    assert!(remote.is_empty(), "{remote:?}");
    let crds = one(&objects, "CustomResourceDefinition");
    let optional: Vec<_> = WATCHED.iter().filter(|w| w.optional).collect();
    assert_eq!(crds.len(), optional.len(), "one CRD per optional kind");
    for w in optional {
        assert!(
            [
                trellis_model::egress::GROUP,
                trellis_model::policy::GROUP,
                trellis_model::security::GROUP,
                trellis_model::telemetry::GROUP
            ]
            .contains(&w.group),
            "{:?}",
            w.kind
        );
        assert!(
            STATUS_KINDS.contains(&w.kind),
            "{:?}: Trellis writes its status",
            w.kind
        );
        assert_crd_serves(&crds, w);
    }
}

#[test]
fn the_pinned_gateway_api_crds_serve_what_the_provider_reads() {
    let dir = deploy_dir().join("gateway-api");
    let mut objects = Vec::new();
    let mut remote = Vec::new();
    load_kustomization(&dir, &mut objects, &mut remote);
    assert!(remote.is_empty(), "{remote:?}");
    // Every object is of the one release and channel (the CRDs and the safe-upgrades policy).
    for o in &objects {
        let annotations = &o.object["metadata"]["annotations"];
        assert_eq!(
            annotations["gateway.networking.k8s.io/bundle-version"],
            GATEWAY_API_RELEASE,
            "{} {}",
            o.kind(),
            o.name()
        );
        assert_eq!(
            annotations["gateway.networking.k8s.io/channel"],
            "standard",
            "{} {}",
            o.kind(),
            o.name()
        );
    }
    let crds = one(&objects, "CustomResourceDefinition");
    for w in WATCHED
        .iter()
        .filter(|w| w.group == trellis_model::gateway::GROUP)
    {
        assert_crd_serves(&crds, w);
    }

    // Unmodified: byte for byte the upstream files, when a copy is beside the repository.
    let upstream = std::env::var_os("TRELLIS_GATEWAY_API_CRDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/gateway-api-crds")
        });
    let standard = upstream.join("standard");
    if !standard.is_dir() {
        println!(
            "not compared with upstream: no copy at {} (set TRELLIS_GATEWAY_API_CRDS)",
            upstream.display()
        );
        return;
    }
    let mut upstream_files: Vec<String> = std::fs::read_dir(&standard)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    upstream_files.sort();
    let listed = read_yaml(&dir.join("kustomization.yaml"))[0]["resources"].clone();
    let mut listed: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, upstream_files, "the whole standard channel");
    for file in &listed {
        assert!(
            std::fs::read(dir.join(file)).unwrap() == std::fs::read(standard.join(file)).unwrap(),
            "{file} differs from upstream"
        );
    }
    assert!(
        std::fs::read(dir.join("LICENSE")).unwrap()
            == std::fs::read(upstream.join("LICENSE")).unwrap(),
        "the upstream LICENSE"
    );
}

#[test]
fn kubectl_kustomize_renders_the_same_objects() {
    let Ok(out) = std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
    else {
        println!("skipped: kubectl is not installed");
        return;
    };
    assert!(out.status.success());
    // Every kustomization, the top level included: nothing is fetched.
    for part in ["base", "crds", "gateway-api", "."] {
        let dir = deploy_dir().join(part);
        let out = std::process::Command::new("kubectl")
            .arg("kustomize")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl kustomize {part}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered: Vec<Value> =
            serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
        let rendered: BTreeSet<(String, String)> = rendered
            .iter()
            .filter(|o| !o.is_null())
            .map(|o| {
                (
                    o["kind"].as_str().unwrap().to_string(),
                    o["metadata"]["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let mut objects = Vec::new();
        load_kustomization(&dir, &mut objects, &mut Vec::new());
        let loaded: BTreeSet<(String, String)> = objects
            .iter()
            .map(|o| (o.kind().to_string(), o.name().to_string()))
            .collect();
        assert_eq!(rendered, loaded, "{part}");
    }
}
