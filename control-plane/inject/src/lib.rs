//! Sidecar injection: what the mutating admission webhook answers for a Pod being created.
//!
//! ```text
//!  AdmissionReview (admission.k8s.io/v1, a Pod CREATE) ──► review()
//!     ├─ not a Pod, not CREATE, the control plane's namespace or kube-system, hostNetwork,
//!     │  annotation trellis.dev/sidecar: "false", a namespace known not to be in the mesh,
//!     │  or already injected ──► allowed, no patch, and why
//!     └─ otherwise ──► allowed with a JSON patch (pod_patch):
//!          initContainers[0] trellis-capture   `trellis capture` (NET_ADMIN, NET_RAW), then exits
//!          initContainers[1] trellis-proxy     native sidecar (restartPolicy: Always):
//!                                              `trellis agent` renders the bootstrap, obtains
//!                                              the certificate with the projected token, starts
//!                                              Envoy; uid/gid 1337, read-only root filesystem,
//!                                              startup probe on the agent's /ready (15020)
//!          volumes   trellis-run (in-memory emptyDir: SDS socket, bootstrap),
//!                    trellis-token (projected ServiceAccount token, audience trellis-ca)
//!          label     trellis.dev/sidecar-injected: "true"
//!  malformed input ──► InjectError (the server answers 400 with it)
//! ```
//!
//! The same rule decides membership as in the model ([`trellis_model::mesh`]): the namespace's
//! label `trellis.dev/mesh: enabled`, unless the pod opts out. A native sidecar starts (and
//! must pass its startup probe) before the app's containers, and does not keep a Job from
//! completing.

use base64::Engine;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The init container that installs the capture rules.
pub const CAPTURE_CONTAINER: &str = "trellis-capture";
/// The native sidecar: `trellis agent` and Envoy.
pub const PROXY_CONTAINER: &str = "trellis-proxy";
/// The label the webhook sets on the pods it injected.
pub const INJECTED_LABEL: &str = "trellis.dev/sidecar-injected";
/// The agent's readiness port (`GET /ready`).
pub const AGENT_READINESS_PORT: u16 = 15020;
/// The audience of the projected token the agent presents to the certificate service.
pub const TOKEN_AUDIENCE: &str = "trellis-ca";
/// Where the projected token is mounted in the sidecar.
pub const TOKEN_DIR: &str = "/var/run/secrets/trellis/tokens";
/// Where the SDS socket and the bootstrap live (an in-memory emptyDir).
pub const RUN_DIR: &str = "/var/run/trellis";
/// The largest AdmissionReview read (the API server sends at most 3 MiB objects).
pub const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;
/// Annotations that set the sidecar's resources (`trellis.dev/proxy-cpu: 200m`, ...).
pub const RESOURCE_ANNOTATIONS: [(&str, &str, &str); 4] = [
    ("trellis.dev/proxy-cpu", "requests", "cpu"),
    ("trellis.dev/proxy-memory", "requests", "memory"),
    ("trellis.dev/proxy-cpu-limit", "limits", "cpu"),
    ("trellis.dev/proxy-memory-limit", "limits", "memory"),
];

/// What the injected containers need to know.
#[derive(Clone, Debug)]
pub struct Config {
    /// The sidecar image (`trellis` and Envoy).
    pub image: String,
    /// Envoy's path in the image.
    pub envoy_path: String,
    /// The control plane's xDS address as pods reach it (`trellis.trellis-system.svc:18000`).
    pub xds_address: String,
    /// The name in the control plane's certificate (`trellis.<namespace>.svc`).
    pub control_plane_name: String,
    /// The control plane's namespace: never injected, so that a control plane that is down
    /// cannot block its own restart.
    pub control_plane_namespace: String,
    /// The mesh's root certificate (PEM), which the agent verifies the control plane by.
    pub root_cert_pem: String,
    /// Envoy's worker threads.
    pub concurrency: u32,
    /// Default resources: (requests cpu, requests memory, limits cpu, limits memory).
    pub resources: [String; 4],
}

impl Config {
    /// A configuration with the defaults beside `image`, `xds_address` and the root.
    pub fn new(
        image: &str,
        xds_address: &str,
        control_plane_namespace: &str,
        root_pem: &str,
    ) -> Config {
        Config {
            image: image.to_string(),
            envoy_path: "/usr/local/bin/envoy".to_string(),
            xds_address: xds_address.to_string(),
            control_plane_name: format!("trellis.{control_plane_namespace}.svc"),
            control_plane_namespace: control_plane_namespace.to_string(),
            root_cert_pem: root_pem.to_string(),
            concurrency: 2,
            resources: ["100m", "128Mi", "2", "1Gi"].map(str::to_string),
        }
    }
}

/// Why a request cannot be answered with an AdmissionReview.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectError {
    /// Larger than [`MAX_REVIEW_BYTES`].
    #[error("the AdmissionReview is larger than {MAX_REVIEW_BYTES} bytes")]
    TooLarge,
    /// Not JSON, not an `admission.k8s.io/v1` AdmissionReview, or without a request uid.
    #[error("not an admission.k8s.io/v1 AdmissionReview: {0}")]
    Malformed(String),
}

/// What the webhook decided for one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Inject: the JSON patch, and warnings for the user (annotations ignored).
    Inject {
        /// RFC 6902 operations on the Pod.
        patch: Vec<Value>,
        /// Said back to the client (`kubectl` prints them).
        warnings: Vec<String>,
    },
    /// Leave the pod as it is, and why.
    Skip(String),
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// Whether a pod already carries Trellis's sidecar.
fn injected(pod: &Value) -> bool {
    let named = |list: &str| {
        pod.pointer(list)
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| str_at(c, "/name") == Some(PROXY_CONTAINER))
            })
    };
    named("/spec/initContainers")
        || named("/spec/containers")
        || pod
            .pointer("/metadata/labels")
            .and_then(|l| l.get(INJECTED_LABEL))
            .is_some()
}

/// Decides for `pod` (the Pod object) created in `namespace`; `meshed` says whether the
/// namespace is in the mesh (`None`: not known yet, so the webhook's namespaceSelector, which
/// sent the request, decides).
pub fn decide(pod: &Value, namespace: &str, meshed: Option<bool>, config: &Config) -> Decision {
    let skip = |why: String| Decision::Skip(why);
    if namespace == config.control_plane_namespace || namespace == "kube-system" {
        return skip(format!(
            "pods in namespace {namespace} are never injected (the control plane must be able to \
             start without itself)"
        ));
    }
    if meshed == Some(false) {
        return skip(format!(
            "namespace {namespace} is not in the mesh (label it {}=enabled)",
            trellis_model::mesh::MESH_LABEL
        ));
    }
    let opted_out = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(trellis_model::mesh::SIDECAR_ANNOTATION))
        .and_then(Value::as_str)
        == Some("false");
    if opted_out {
        return skip(format!(
            "the pod opts out ({}: \"false\")",
            trellis_model::mesh::SIDECAR_ANNOTATION
        ));
    }
    if pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true) {
        return skip(
            "the pod uses the host's network: capture rules would apply to the node".into(),
        );
    }
    if injected(pod) {
        return skip("the pod already has Trellis's sidecar".into());
    }
    let (resources, warnings) = resources(pod, config);
    Decision::Inject {
        patch: pod_patch(pod, config, resources),
        warnings,
    }
}

/// Whether `q` reads as a Kubernetes quantity (`100m`, `0.5`, `128Mi`, `1G`, `1e3`).
pub fn is_quantity(q: &str) -> bool {
    if q.is_empty() || q.len() > 32 {
        return false;
    }
    let digits_end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number.matches('.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || (suffix.starts_with(['e', 'E'])
        && suffix.len() > 1
        && suffix[1..].chars().all(|c| c.is_ascii_digit()));
    number_ok && suffix_ok
}

/// The sidecar's resources: the defaults, overridden by the pod's annotations; an annotation
/// that is not a quantity is ignored with a warning.
fn resources(pod: &Value, config: &Config) -> (Value, Vec<String>) {
    let mut values: BTreeMap<(&str, &str), String> = BTreeMap::new();
    let defaults = [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "cpu"),
        ("limits", "memory"),
    ];
    for (key, default) in defaults.iter().zip(&config.resources) {
        values.insert(*key, default.clone());
    }
    let mut warnings = Vec::new();
    let annotations = pod.pointer("/metadata/annotations");
    for (annotation, section, resource) in RESOURCE_ANNOTATIONS {
        let Some(given) = annotations.and_then(|a| a.get(annotation)) else {
            continue;
        };
        match given.as_str().filter(|q| is_quantity(q)) {
            Some(q) => {
                values.insert((section, resource), q.to_string());
            }
            None => warnings.push(format!(
                "metadata.annotations[{annotation}]: {given} is not a quantity; the sidecar \
                 keeps {}",
                values[&(section, resource)]
            )),
        }
    }
    let section =
        |name: &str| json!({ "cpu": values[&(name, "cpu")], "memory": values[&(name, "memory")] });
    (
        json!({ "requests": section("requests"), "limits": section("limits") }),
        warnings,
    )
}

/// The two init containers (capture, then the native sidecar).
fn containers(config: &Config, resources: Value) -> [Value; 2] {
    let excluded = [
        AGENT_READINESS_PORT,
        trellis_capture::READINESS_PORT,
        trellis_capture::STATS_PORT,
    ]
    .map(|p| p.to_string())
    .join(",");
    let capture = json!({
        "name": CAPTURE_CONTAINER,
        "image": config.image,
        "args": ["capture", "--exclude-inbound-ports", excluded],
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": { "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] },
        },
        "resources": {
            "requests": { "cpu": "10m", "memory": "16Mi" },
            "limits": { "cpu": "100m", "memory": "64Mi" },
        },
    });
    let bootstrap = format!("{RUN_DIR}/envoy.yaml");
    let mut args = vec![
        "agent".to_string(),
        "--pod".into(),
        "$(POD_NAMESPACE)/$(POD_NAME)".into(),
        "--xds-address".into(),
        config.xds_address.clone(),
        "--ca-address".into(),
        config.xds_address.clone(),
        "--control-plane-name".into(),
        config.control_plane_name.clone(),
        "--token-file".into(),
        format!("{TOKEN_DIR}/token"),
        "--sds-socket".into(),
        format!("{RUN_DIR}/sds.sock"),
        "--envoy".into(),
        config.envoy_path.clone(),
        "--bootstrap".into(),
        bootstrap,
        "--readiness-address".into(),
        format!("0.0.0.0:{AGENT_READINESS_PORT}"),
    ];
    for a in [
        "--disable-hot-restart".to_string(),
        "--concurrency".to_string(),
        config.concurrency.to_string(),
    ] {
        args.push(format!("--envoy-arg={a}"));
    }
    let field = |path: &str| json!({ "fieldRef": { "fieldPath": path } });
    let probe = |period: u32, failures: u32| {
        json!({
            "httpGet": { "path": "/ready", "port": AGENT_READINESS_PORT },
            "periodSeconds": period,
            "timeoutSeconds": 3,
            "failureThreshold": failures,
        })
    };
    let uid = trellis_capture::PROXY_UID;
    let proxy = json!({
        "name": PROXY_CONTAINER,
        "image": config.image,
        "restartPolicy": "Always",
        "args": args,
        "env": [
            { "name": "POD_NAME", "valueFrom": field("metadata.name") },
            { "name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace") },
            { "name": "POD_IP", "valueFrom": field("status.podIP") },
            { "name": "TRELLIS_ROOT_CERT_PEM", "value": config.root_cert_pem },
        ],
        "ports": [
            { "name": "trellis-ready", "containerPort": AGENT_READINESS_PORT, "protocol": "TCP" },
            { "name": "http-envoy-prom", "containerPort": trellis_capture::STATS_PORT, "protocol": "TCP" },
        ],
        "securityContext": {
            "runAsUser": uid,
            "runAsGroup": uid,
            "runAsNonRoot": true,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
        },
        // Up to 10 minutes to become ready the first time (a control plane that is restarting),
        // then readiness every 5 s.
        "startupProbe": probe(1, 600),
        "readinessProbe": probe(5, 3),
        "resources": resources,
        "volumeMounts": [
            { "name": "trellis-run", "mountPath": RUN_DIR },
            { "name": "trellis-token", "mountPath": TOKEN_DIR, "readOnly": true },
        ],
    });
    [capture, proxy]
}

fn volumes() -> [Value; 2] {
    [
        json!({ "name": "trellis-run", "emptyDir": { "medium": "Memory", "sizeLimit": "16Mi" } }),
        json!({
            "name": "trellis-token",
            "projected": { "sources": [{ "serviceAccountToken": {
                "audience": TOKEN_AUDIENCE,
                "expirationSeconds": 3600,
                "path": "token",
            } }] },
        }),
    ]
}

/// JSON pointer escaping of one path segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The RFC 6902 operations that inject the sidecar into `pod`.
pub fn pod_patch(pod: &Value, config: &Config, resources: Value) -> Vec<Value> {
    let mut ops = Vec::new();
    let [capture, proxy] = containers(config, resources);
    match pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
    {
        // Before the pod's own init containers: they may need the network.
        Some(_) => {
            ops.push(json!({ "op": "add", "path": "/spec/initContainers/0", "value": proxy }));
            ops.push(json!({ "op": "add", "path": "/spec/initContainers/0", "value": capture }));
        }
        None => ops.push(json!({
            "op": "add", "path": "/spec/initContainers", "value": [capture, proxy],
        })),
    }
    match pod.pointer("/spec/volumes").and_then(Value::as_array) {
        Some(_) => {
            for v in volumes() {
                ops.push(json!({ "op": "add", "path": "/spec/volumes/-", "value": v }));
            }
        }
        None => ops.push(json!({ "op": "add", "path": "/spec/volumes", "value": volumes() })),
    }
    match pod.pointer("/metadata/labels").and_then(Value::as_object) {
        Some(_) => ops.push(json!({
            "op": "add",
            "path": format!("/metadata/labels/{}", escape(INJECTED_LABEL)),
            "value": "true",
        })),
        None => ops.push(json!({
            "op": "add", "path": "/metadata/labels", "value": { INJECTED_LABEL: "true" },
        })),
    }
    ops
}

/// Answers an AdmissionReview (the request body): the AdmissionReview response to send back
/// with status 200. `meshed(namespace)` says whether a namespace is in the mesh, when known.
pub fn review(
    body: &[u8],
    meshed: impl Fn(&str) -> Option<bool>,
    config: &Config,
) -> Result<(Value, Decision), InjectError> {
    if body.len() > MAX_REVIEW_BYTES {
        return Err(InjectError::TooLarge);
    }
    let review: Value =
        serde_json::from_slice(body).map_err(|e| InjectError::Malformed(e.to_string()))?;
    if str_at(&review, "/apiVersion") != Some("admission.k8s.io/v1")
        || str_at(&review, "/kind") != Some("AdmissionReview")
    {
        return Err(InjectError::Malformed(
            "apiVersion must be admission.k8s.io/v1 and kind AdmissionReview".into(),
        ));
    }
    let request = review
        .get("request")
        .ok_or_else(|| InjectError::Malformed("no request".into()))?;
    let uid = str_at(request, "/uid")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| InjectError::Malformed("request.uid is missing".into()))?;
    let kind = (
        str_at(request, "/kind/group").unwrap_or(""),
        str_at(request, "/kind/kind").unwrap_or(""),
    );
    let operation = str_at(request, "/operation").unwrap_or("");
    let object = request.get("object").unwrap_or(&Value::Null);
    let namespace = str_at(request, "/namespace")
        .or_else(|| str_at(object, "/metadata/namespace"))
        .unwrap_or("");
    let decision = if kind != ("", "Pod") || operation != "CREATE" {
        Decision::Skip(format!(
            "only Pod creations are injected, not {} {operation}",
            kind.1
        ))
    } else if !object.is_object() {
        return Err(InjectError::Malformed("request.object is not a Pod".into()));
    } else {
        decide(object, namespace, meshed(namespace), config)
    };
    let mut response = json!({ "uid": uid, "allowed": true });
    match &decision {
        Decision::Inject { patch, warnings } => {
            let bytes = serde_json::to_vec(patch).unwrap_or_default();
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            if !warnings.is_empty() {
                response["warnings"] = json!(warnings);
            }
        }
        Decision::Skip(why) => {
            response["status"] = json!({ "message": why });
        }
    }
    Ok((
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        }),
        decision,
    ))
}

#[cfg(test)]
mod tests;
