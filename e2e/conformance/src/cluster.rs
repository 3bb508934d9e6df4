//! A stand-in for the Kubernetes cluster the upstream suite expects, built from Trellis's file
//! provider and local processes:
//!
//! ```text
//!  apply(manifest) ──► objects (one YAML file each) ──► config dir ──► trellis serve ──► /status
//!        │
//!        ├─ Deployment ──► echo pods (one process per replica, own 127.x address)
//!        ├─ Service ─────► EndpointSlices (this module plays the EndpointSlice controller)
//!        └─ Gateway ─────► one Envoy per Gateway of the class (bootstrap from trellis)
//! ```
//!
//! Gateways get their own loopback address from trellis's `--gateway-address-pool`, bound on
//! their listeners' real ports and published in `status.addresses`.

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use trellis_harness::{ControlPlane, Envoy, Process, wait_for};

/// The GatewayClass the suite runs against.
pub const GATEWAY_CLASS: &str = "trellis-conformance";
/// Trellis's controller name.
pub const CONTROLLER: &str = "trellis.dev/gateway-controller";

/// Identity of a stored object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjId {
    /// Kind (`Gateway`, `HTTPRoute`, `Deployment`, ...).
    pub kind: String,
    /// Namespace ("" for cluster-scoped kinds).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjId {
    /// An identity.
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn of(v: &Value) -> anyhow::Result<Self> {
        let kind = v["kind"].as_str().context("object without kind")?;
        let name = v["metadata"]["name"]
            .as_str()
            .context("object without name")?;
        let namespace = if matches!(kind, "Namespace" | "GatewayClass") {
            ""
        } else {
            v["metadata"]["namespace"].as_str().unwrap_or("default")
        };
        Ok(Self::new(kind, namespace, name))
    }
}

impl std::fmt::Display for ObjId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One running echo pod.
pub struct Pod {
    /// Pod name, `<deployment>-<hash>-<suffix>`.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Its own loopback address.
    pub ip: Ipv4Addr,
    /// Labels from the Deployment's template.
    pub labels: BTreeMap<String, String>,
    /// Container ports by name (and "" for unnamed), for Services' named targetPorts.
    pub ports: BTreeMap<String, u16>,
    /// Where its request log goes.
    pub log: PathBuf,
    _process: Option<Process>,
}

/// The simulated cluster.
pub struct Cluster {
    work: PathBuf,
    config_dir: PathBuf,
    objects: BTreeMap<ObjId, Value>,
    pods: BTreeMap<ObjId, Vec<Pod>>,
    envoys: BTreeMap<(String, String), Envoy>,
    next_ip: u32,
    pod_prefix: [u8; 2],
    /// The control plane.
    pub control_plane: ControlPlane,
    /// Replace with these the `PLACEHOLDER_USABLE_ADDRS` value of static-address Gateways.
    pub usable_addresses: Vec<String>,
    /// Replace with these the `PLACEHOLDER_UNUSABLE_ADDRS` value.
    pub unusable_addresses: Vec<String>,
}

/// Alphanumeric suffix derived from a seed (Kubernetes-like pod name parts).
pub(crate) fn alnum(seed: &str, len: usize) -> String {
    use sha2::{Digest, Sha256};
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let digest = Sha256::digest(seed.as_bytes());
    digest
        .iter()
        .take(len)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

impl Cluster {
    /// Starts an empty cluster: the config directory and the control plane. Gateways get
    /// addresses from `gateway_pool`; pods get `<pod_prefix>.x.y` (e.g. `127.40`).
    pub fn start(work: &Path, gateway_pool: &str, pod_prefix: [u8; 2]) -> anyhow::Result<Cluster> {
        let config_dir = work.join("config");
        std::fs::create_dir_all(&config_dir)?;
        // With a CA: xDS takes mutual TLS, and each gateway proxy runs beside `trellis agent`.
        let ca_dir = work.join("ca").display().to_string();
        let control_plane = ControlPlane::start(
            &config_dir,
            work,
            &[
                "--gateway-address-pool",
                gateway_pool,
                "--debounce-ms",
                "50",
                "--ca-dir",
                &ca_dir,
            ],
        )?;
        Ok(Cluster {
            work: work.to_path_buf(),
            config_dir,
            objects: BTreeMap::new(),
            pods: BTreeMap::new(),
            envoys: BTreeMap::new(),
            next_ip: 0,
            pod_prefix,
            control_plane,
            usable_addresses: Vec::new(),
            unusable_addresses: Vec::new(),
        })
    }

    /// The work directory.
    pub fn work(&self) -> &Path {
        &self.work
    }

    fn file_of(&self, id: &ObjId) -> PathBuf {
        let ns = if id.namespace.is_empty() {
            "_cluster"
        } else {
            &id.namespace
        };
        self.config_dir
            .join(ns)
            .join(format!("{}-{}.yaml", id.kind.to_lowercase(), id.name))
    }

    fn write_file(&self, id: &ObjId, v: &Value) -> anyhow::Result<()> {
        let path = self.file_of(id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_saphyr::to_string(v).context("rendering YAML")?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Reads a manifest (multi-document YAML), substituting the suite's placeholders.
    pub fn read_manifest(&self, path: &Path) -> anyhow::Result<Vec<Value>> {
        read_manifest(path, |text| {
            text.replace("{GATEWAY_CLASS_NAME}", GATEWAY_CLASS)
                .replace("{GATEWAY_CONTROLLER_NAME}", CONTROLLER)
        })
    }

    /// Applies objects (create or replace), like `kubectl apply` of the upstream applier.
    /// Returns their identities.
    pub fn apply(&mut self, objects: Vec<Value>) -> anyhow::Result<Vec<ObjId>> {
        let mut ids = Vec::new();
        for mut v in objects {
            self.prepare(&mut v);
            let id = ObjId::of(&v)?;
            if id.kind == "Deployment" {
                self.objects.insert(id.clone(), v);
                self.start_pods(&id)?;
            } else {
                if !id.namespace.is_empty() {
                    v["metadata"]["namespace"] = json!(id.namespace);
                }
                self.write_file(&id, &v)?;
                self.objects.insert(id.clone(), v);
            }
            ids.push(id);
        }
        self.reconcile()?;
        Ok(ids)
    }

    /// What the upstream applier does to objects before applying them.
    fn prepare(&self, v: &mut Value) {
        match v["kind"].as_str() {
            Some("Gateway") => {
                v["spec"]["gatewayClassName"] = json!(GATEWAY_CLASS);
                if let Some(addresses) = v["spec"]["addresses"].as_array() {
                    let mut out = Vec::new();
                    for a in addresses {
                        match a["value"].as_str() {
                            Some("PLACEHOLDER_USABLE_ADDRS") => out.extend(
                                self.usable_addresses
                                    .iter()
                                    .map(|ip| json!({"type": "IPAddress", "value": ip})),
                            ),
                            Some("PLACEHOLDER_UNUSABLE_ADDRS") => out.extend(
                                self.unusable_addresses
                                    .iter()
                                    .map(|ip| json!({"type": "IPAddress", "value": ip})),
                            ),
                            _ => out.push(a.clone()),
                        }
                    }
                    v["spec"]["addresses"] = json!(out);
                }
            }
            Some("GatewayClass") => v["spec"]["controllerName"] = json!(CONTROLLER),
            _ => {}
        }
    }

    /// Deletes objects.
    pub fn delete(&mut self, ids: &[ObjId]) -> anyhow::Result<()> {
        for id in ids.iter().rev() {
            self.objects.remove(id);
            if id.kind == "Deployment" {
                self.pods.remove(id);
            } else {
                match std::fs::remove_file(self.file_of(id)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.reconcile()
    }

    /// The stored object (spec as applied).
    pub fn get(&self, id: &ObjId) -> Option<&Value> {
        self.objects.get(id)
    }

    /// Changes an object in place and applies it again (like a patch or update).
    pub fn patch(&mut self, id: &ObjId, change: impl FnOnce(&mut Value)) -> anyhow::Result<()> {
        let mut v = self
            .objects
            .get(id)
            .cloned()
            .ok_or_else(|| anyhow!("{id} does not exist"))?;
        change(&mut v);
        self.apply(vec![v])?;
        Ok(())
    }

    /// Starts (or restarts) the pods of a Deployment.
    fn start_pods(&mut self, id: &ObjId) -> anyhow::Result<()> {
        self.pods.remove(id);
        let deployment = self
            .objects
            .get(id)
            .cloned()
            .context("no such deployment")?;
        let spec = &deployment["spec"];
        let replicas = spec["replicas"].as_u64().unwrap_or(1);
        let template = &spec["template"];
        let labels: BTreeMap<String, String> = template["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let container = &template["spec"]["containers"][0];
        let image = container["image"].as_str().unwrap_or_default();
        let env: Vec<(String, Value)> = container["env"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|v| {
                        (
                            v["name"].as_str().unwrap_or_default().to_string(),
                            v.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Only the echo server is emulated; gRPC and TCP echo modes and other images are not.
        let http_echo = image.contains("echo-basic")
            && !env
                .iter()
                .any(|(k, _)| k == "GRPC_ECHO_SERVER" || k == "TCP_ECHO_SERVER");
        let hash = alnum(&format!("{}/{}", id.namespace, id.name), 10);
        let mut pods = Vec::new();
        for i in 0..replicas {
            let name = format!(
                "{}-{hash}-{}",
                id.name,
                alnum(&format!("{}/{}/{i}", id.namespace, id.name), 5)
            );
            self.next_ip += 1;
            let ip = Ipv4Addr::new(
                self.pod_prefix[0],
                self.pod_prefix[1],
                (self.next_ip / 250) as u8,
                (self.next_ip % 250) as u8 + 1,
            );
            let log = self.work.join(format!("pod-{}-{name}.log", id.namespace));
            let mut ports = BTreeMap::new();
            if let Some(cports) = container["ports"].as_array() {
                for p in cports {
                    if let (Some(n), Some(port)) = (p["name"].as_str(), p["containerPort"].as_u64())
                    {
                        ports.insert(n.to_string(), port as u16);
                    }
                }
            }
            let process = if http_echo {
                Some(self.start_echo(id, &name, ip, &env, &template["spec"], &log)?)
            } else {
                None
            };
            pods.push(Pod {
                name,
                namespace: id.namespace.clone(),
                ip,
                labels: labels.clone(),
                ports,
                log,
                _process: process,
            });
        }
        // Wait until each pod answers on port 3000 as itself (not a leftover process holding
        // its address).
        for pod in &pods {
            if pod._process.is_some() {
                let addr = std::net::SocketAddr::from((pod.ip, 3000));
                wait_for(
                    &format!("pod {} to be ready", pod.name),
                    Duration::from_secs(20),
                    || {
                        let reply =
                            trellis_harness::request(addr, "GET", "ready", "/", &[]).ok()?;
                        (reply.pod() == pod.name).then_some(())
                    },
                )
                .with_context(|| {
                    format!(
                        "is another process holding {}:3000? pod log:\n{}",
                        pod.ip,
                        std::fs::read_to_string(&pod.log).unwrap_or_default()
                    )
                })?;
            }
        }
        self.pods.insert(id.clone(), pods);
        Ok(())
    }

    fn start_echo(
        &self,
        id: &ObjId,
        pod: &str,
        ip: Ipv4Addr,
        env: &[(String, Value)],
        pod_spec: &Value,
        log: &Path,
    ) -> anyhow::Result<Process> {
        let mut cmd = Command::new(trellis_harness::echo_bin()?);
        cmd.arg("--address").arg(ip.to_string());
        cmd.env("POD_NAME", pod).env("NAMESPACE", &id.namespace);
        // Secret volumes: write the mounted keys where the container would see them, under a
        // directory of the pod's own, and point path-valued variables there.
        let pod_dir = self.work.join("pods").join(pod);
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        let container = &pod_spec["containers"][0];
        for m in container["volumeMounts"].as_array().into_iter().flatten() {
            let (Some(vol_name), Some(mount_path)) = (m["name"].as_str(), m["mountPath"].as_str())
            else {
                continue;
            };
            let Some(volume) = pod_spec["volumes"]
                .as_array()
                .and_then(|v| v.iter().find(|v| v["name"] == vol_name))
            else {
                continue;
            };
            let Some(secret_name) = volume["secret"]["secretName"].as_str() else {
                continue;
            };
            let secret = self
                .objects
                .get(&ObjId::new("Secret", &id.namespace, secret_name))
                .with_context(|| {
                    format!("pod {pod} mounts Secret {secret_name}, which does not exist")
                })?;
            let dir = pod_dir.join(vol_name);
            std::fs::create_dir_all(&dir)?;
            let items: Vec<(String, String)> = match volume["secret"]["items"].as_array() {
                Some(items) => items
                    .iter()
                    .filter_map(|i| {
                        Some((
                            i["key"].as_str()?.to_string(),
                            i["path"].as_str()?.to_string(),
                        ))
                    })
                    .collect(),
                None => secret["data"]
                    .as_object()
                    .map(|d| d.keys().map(|k| (k.clone(), k.clone())).collect())
                    .unwrap_or_default(),
            };
            for (key, path) in items {
                let encoded = secret["data"][&key].as_str().unwrap_or_default();
                let bytes =
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded)
                        .unwrap_or_default();
                std::fs::write(dir.join(&path), bytes)?;
            }
            mounts.push((mount_path.to_string(), dir));
        }
        for (name, var) in env {
            if let Some(value) = var["value"].as_str() {
                let mut value = value.to_string();
                for (mount_path, dir) in &mounts {
                    if let Some(rest) = value.strip_prefix(mount_path.as_str()) {
                        value = format!("{}{rest}", dir.display());
                    }
                }
                cmd.env(name, value);
            }
        }
        Process::spawn(cmd, log)
    }

    /// Pods of a Deployment.
    pub fn pods(&self, namespace: &str, deployment: &str) -> &[Pod] {
        self.pods
            .get(&ObjId::new("Deployment", namespace, deployment))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Every pod of the Service `namespace/name` (by its selector).
    pub fn service_pods(&self, namespace: &str, name: &str) -> Vec<&Pod> {
        let Some(service) = self.objects.get(&ObjId::new("Service", namespace, name)) else {
            return Vec::new();
        };
        let Some(selector) = service["spec"]["selector"].as_object() else {
            return Vec::new();
        };
        self.pods
            .values()
            .flatten()
            .filter(|p| {
                p.namespace == namespace
                    && selector
                        .iter()
                        .all(|(k, v)| p.labels.get(k).map(String::as_str) == v.as_str())
            })
            .collect()
    }

    /// Brings derived state in line: EndpointSlices for Services with selectors, and one Envoy
    /// per Gateway of the suite's class.
    fn reconcile(&mut self) -> anyhow::Result<()> {
        // EndpointSlices.
        let services: Vec<(ObjId, Value)> = self
            .objects
            .iter()
            .filter(|(id, v)| id.kind == "Service" && v["spec"]["selector"].is_object())
            .map(|(id, v)| (id.clone(), v.clone()))
            .collect();
        let mut wanted = BTreeSet::new();
        for (id, service) in services {
            let pods = self.service_pods(&id.namespace, &id.name);
            let endpoints: Vec<Value> = pods
                .iter()
                .map(|p| {
                    json!({
                        "addresses": [p.ip.to_string()],
                        "conditions": {"ready": true, "serving": true, "terminating": false},
                        "targetRef": {"kind": "Pod", "name": p.name, "namespace": p.namespace},
                    })
                })
                .collect();
            let ports: Vec<Value> = service["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let target = match &p["targetPort"] {
                        Value::Number(n) => n.as_u64(),
                        Value::String(name) => pods
                            .first()
                            .and_then(|pod| pod.ports.get(name))
                            .map(|p| u64::from(*p)),
                        _ => p["port"].as_u64(),
                    };
                    let mut port = json!({
                        "name": p["name"].as_str().unwrap_or(""),
                        "port": target.unwrap_or(0),
                        "protocol": p["protocol"].as_str().unwrap_or("TCP"),
                    });
                    if let Some(app) = p["appProtocol"].as_str() {
                        port["appProtocol"] = json!(app);
                    }
                    port
                })
                .collect();
            let slice_id = ObjId::new(
                "EndpointSlice",
                &id.namespace,
                &format!("{}-{}", id.name, alnum(&id.name, 5)),
            );
            let slice = json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_id.name,
                    "namespace": id.namespace,
                    "labels": {"kubernetes.io/service-name": id.name},
                },
                "addressType": "IPv4",
                "ports": ports,
                "endpoints": endpoints,
            });
            if self.objects.get(&slice_id) != Some(&slice) {
                self.write_file(&slice_id, &slice)?;
                self.objects.insert(slice_id.clone(), slice);
            }
            wanted.insert(slice_id);
        }
        let stale: Vec<ObjId> = self
            .objects
            .keys()
            .filter(|id| {
                id.kind == "EndpointSlice" && !wanted.contains(*id) && self.is_generated_slice(id)
            })
            .cloned()
            .collect();
        for id in stale {
            self.objects.remove(&id);
            let _ = std::fs::remove_file(self.file_of(&id));
        }
        // Envoys.
        let gateways: BTreeSet<(String, String)> = self
            .objects
            .iter()
            .filter(|(id, v)| {
                id.kind == "Gateway" && v["spec"]["gatewayClassName"] == GATEWAY_CLASS
            })
            .map(|(id, _)| (id.namespace.clone(), id.name.clone()))
            .collect();
        self.envoys.retain(|k, _| gateways.contains(k));
        for (ns, name) in gateways {
            if self.envoys.contains_key(&(ns.clone(), name.clone())) {
                continue;
            }
            let envoy = self.control_plane.start_gateway_proxy(
                &format!("{ns}/{name}"),
                false,
                &format!("conformance.{ns}.{name}"),
                &format!("envoy-{ns}-{name}"),
                1,
            )?;
            self.envoys.insert((ns, name), envoy);
        }
        Ok(())
    }

    /// Whether an EndpointSlice was written by this module's controller (its name is the
    /// Service name plus the controller's suffix).
    pub fn is_generated_slice(&self, id: &ObjId) -> bool {
        id.kind == "EndpointSlice"
            && id
                .name
                .rsplit_once('-')
                .is_some_and(|(service, suffix)| suffix == alnum(service, 5))
    }

    /// The Envoy of a Gateway, if running.
    pub fn envoy(&self, namespace: &str, name: &str) -> Option<&Envoy> {
        self.envoys.get(&(namespace.to_string(), name.to_string()))
    }

    /// The status report object of a kind and name, from the control plane.
    pub fn status_object(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Option<Value>> {
        let key = if namespace.is_empty() {
            name.to_string()
        } else {
            format!("{namespace}/{name}")
        };
        self.control_plane.object_status(kind, &key)
    }

    /// Lines of a pod's request log.
    pub fn pod_log(&self, pod: &Pod) -> String {
        std::fs::read_to_string(&pod.log).unwrap_or_default()
    }

    /// Fails unless the object exists.
    pub fn must_exist(&self, id: &ObjId) -> anyhow::Result<&Value> {
        self.objects
            .get(id)
            .ok_or_else(|| anyhow!("{id} does not exist"))
    }

    /// Deletes every object applied from manifests but the ones listed (used between tests).
    pub fn ids(&self) -> Vec<ObjId> {
        self.objects.keys().cloned().collect()
    }
}

/// Makes sure a directory exists and is empty.
pub fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    if !dir.is_dir() {
        bail!("cannot create {}", dir.display());
    }
    Ok(())
}

/// Reads a manifest (multi-document YAML) after `substitute` rewrote its text; empty
/// documents are left out.
pub fn read_manifest(
    path: &Path,
    substitute: impl FnOnce(String) -> String,
) -> anyhow::Result<Vec<Value>> {
    let text = substitute(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    Ok(serde_saphyr::from_multiple::<Value>(&text)
        .with_context(|| format!("parsing {}", path.display()))?
        .into_iter()
        .filter(|d| !d.is_null())
        .collect())
}
