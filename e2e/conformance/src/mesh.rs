//! The MESH-HTTP profile on pods as network namespaces.
//!
//! ```text
//!  mesh/manifests.yaml ──► MeshCluster::apply
//!        ├─ Namespace ──► labelled into the mesh (as --namespace-labels does upstream)
//!        ├─ Deployment ─► netns pods: echo app (uid 1000) + capture + Envoy sidecar (uid 1337)
//!        ├─ Service ────► a ClusterIP from 10.96.N.0/24, an EndpointSlice over its pods,
//!        │                and its names in every pod's hosts file (short names in its namespace)
//!        └─ HTTPRoute ──► the control plane's config directory
//!  a test case ──► `trellis-echo client URL -H ...` exec'd in the client pod ──► the lines
//!                  upstream's echo client prints ──► compared as upstream compares them
//! ```
//!
//! What upstream compares, and only that (its `compareRequest`): the status code, headers the
//! backend received (values joined with ","), headers absent there, response headers (last
//! value wins) and absent ones, and a prefix of the answering pod's name. Redirect targets and
//! echoed paths are not compared upstream; this runner checks the echoed path of rewrites too.

use crate::cluster::{ObjId, alnum};
use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use trellis_harness::ControlPlane;
use trellis_harness::mesh::{
    APP_UID, MeshPod, PodSpec, Workload, service_hostnames, wait_sidecars,
};
use trellis_harness::netns::{Network, unavailable};

/// Namespace of the mesh's echo pods and Services.
pub const MESH_NS: &str = "gateway-conformance-mesh";
/// Namespace of the consumer-route client.
pub const CONSUMER_NS: &str = "gateway-conformance-mesh-consumer";

/// The mesh stand-in for a cluster.
pub struct MeshCluster {
    pods: BTreeMap<ObjId, Vec<MeshPod>>,
    objects: BTreeMap<ObjId, Value>,
    cluster_ips: BTreeMap<(String, String), Ipv4Addr>,
    next_service: u8,
    /// The control plane (xDS on the pods' bridge).
    pub control_plane: ControlPlane,
    config_dir: PathBuf,
    work: PathBuf,
    // Dropped last: the pods' namespaces go before the bridge.
    net: Network,
}

impl MeshCluster {
    /// Creates the pod network and starts the control plane on its bridge. Needs root.
    pub fn start(work: &Path) -> anyhow::Result<MeshCluster> {
        if let Some(why) = unavailable() {
            bail!("the MESH-HTTP profile runs pods as network namespaces, but {why}");
        }
        let net = Network::create()?;
        let config_dir = work.join("config");
        std::fs::create_dir_all(&config_dir)?;
        let xds = format!("{}:0", net.gateway);
        // With a CA: every sidecar runs beside `trellis agent`, xDS and the hops between
        // sidecars are mutual TLS (PERMISSIVE, the default).
        let ca_dir = work.join("ca").display().to_string();
        let control_plane = ControlPlane::start_with_xds(
            &config_dir,
            work,
            &xds,
            &["--debounce-ms", "50", "--ca-dir", &ca_dir],
        )?;
        Ok(MeshCluster {
            pods: BTreeMap::new(),
            objects: BTreeMap::new(),
            cluster_ips: BTreeMap::new(),
            next_service: 10,
            control_plane,
            config_dir,
            work: work.to_path_buf(),
            net,
        })
    }

    fn file_of(&self, id: &ObjId) -> PathBuf {
        self.config_dir.join(format!(
            "{}-{}-{}.yaml",
            id.kind.to_lowercase(),
            if id.namespace.is_empty() {
                "_cluster"
            } else {
                &id.namespace
            },
            id.name
        ))
    }

    fn write(&self, path: &Path, docs: &[Value]) -> anyhow::Result<()> {
        let mut text = String::new();
        for d in docs {
            text.push_str("---\n");
            text.push_str(&serde_saphyr::to_string(d).context("rendering YAML")?);
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Applies objects as the upstream applier would, with the mesh's stand-ins for what a
    /// cluster does (pods, ClusterIPs, EndpointSlices, names).
    pub fn apply(&mut self, objects: Vec<Value>) -> anyhow::Result<Vec<ObjId>> {
        let mut ids = Vec::new();
        for mut v in objects {
            let kind = v["kind"].as_str().unwrap_or_default().to_string();
            if kind != "Namespace" && v["metadata"]["namespace"].is_null() {
                v["metadata"]["namespace"] = json!("default");
            }
            let id = ObjId::new(
                &kind,
                if kind == "Namespace" {
                    ""
                } else {
                    v["metadata"]["namespace"].as_str().unwrap_or("default")
                },
                v["metadata"]["name"]
                    .as_str()
                    .context("an object without a name")?,
            );
            match kind.as_str() {
                "Namespace" => {
                    v["metadata"]["labels"]["trellis.dev/mesh"] = json!("enabled");
                    self.write(&self.file_of(&id), std::slice::from_ref(&v))?;
                }
                "Deployment" => {
                    self.objects.insert(id.clone(), v);
                    self.start_pods(&id)?;
                    ids.push(id);
                    continue;
                }
                "Service" => {
                    let key = (id.namespace.clone(), id.name.clone());
                    let ip = match self.cluster_ips.get(&key) {
                        Some(ip) => *ip,
                        None => {
                            let ip = self.net.service_ip(self.next_service);
                            self.next_service = self
                                .next_service
                                .checked_add(1)
                                .context("out of ClusterIPs")?;
                            self.cluster_ips.insert(key, ip);
                            ip
                        }
                    };
                    v["spec"]["clusterIP"] = json!(ip.to_string());
                }
                _ => self.write(&self.file_of(&id), std::slice::from_ref(&v))?,
            }
            self.objects.insert(id.clone(), v);
            ids.push(id);
        }
        self.reconcile()?;
        Ok(ids)
    }

    /// Removes objects (and a Deployment's pods).
    pub fn delete(&mut self, ids: &[ObjId]) -> anyhow::Result<()> {
        for id in ids {
            self.objects.remove(id);
            self.pods.remove(id);
            match std::fs::remove_file(self.file_of(id)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.reconcile()
    }

    /// Every object applied so far.
    pub fn ids(&self) -> Vec<ObjId> {
        self.objects.keys().cloned().collect()
    }

    fn start_pods(&mut self, id: &ObjId) -> anyhow::Result<()> {
        self.pods.remove(id);
        let deployment = &self.objects[id];
        let replicas = deployment["spec"]["replicas"].as_u64().unwrap_or(1);
        let labels: Vec<(String, String)> = deployment["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // Kubernetes-like names: <deployment>-<replica set hash>-<pod suffix>.
        let rs = alnum(&format!("{}/{}", id.namespace, id.name), 10);
        let mut pods = Vec::new();
        for r in 0..replicas {
            let name = format!("{}-{rs}-{}", id.name, alnum(&format!("{id}/{r}"), 5));
            let spec = PodSpec {
                namespace: &id.namespace,
                name: &name,
                labels: &labels,
                sidecar: true,
                ip: None,
                app_env: &[],
            };
            let ca_dir = self.work.join("ca");
            let workload = Workload {
                service_account: "default",
                config_dir: &self.config_dir,
                ca_dir: &ca_dir,
                lifetime_secs: 24 * 3600,
                write_pod: true,
            };
            let pod = MeshPod::start_with(
                &self.net,
                &self.work,
                &spec,
                self.control_plane.xds,
                Some(&workload),
            )
            .with_context(|| format!("starting pod {}/{name}", id.namespace))?;
            let path = self
                .config_dir
                .join(format!("pod-{}-{name}.yaml", id.namespace));
            std::fs::write(path, pod.pod_yaml())?;
            pods.push(pod);
        }
        self.pods.insert(id.clone(), pods);
        Ok(())
    }

    /// Plays the EndpointSlice controller and DNS: a slice per Service over the pods it
    /// selects, and every pod's hosts file.
    fn reconcile(&mut self) -> anyhow::Result<()> {
        let services: Vec<(ObjId, Value)> = self
            .objects
            .iter()
            .filter(|(id, _)| id.kind == "Service")
            .map(|(id, v)| (id.clone(), v.clone()))
            .collect();
        let mut hosts: Vec<(Ipv4Addr, String, String)> = Vec::new();
        for (id, service) in &services {
            let selector: BTreeMap<String, String> = service["spec"]["selector"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let selected: Vec<&MeshPod> = self
                .pods
                .iter()
                .filter(|(d, _)| d.namespace == id.namespace)
                .flat_map(|(_, pods)| pods)
                .filter(|p| {
                    let s: Vec<(&str, &str)> = selector
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    !s.is_empty() && p.has_labels(&s)
                })
                .collect();
            let ports: Vec<Value> = service["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let target = p["targetPort"].as_u64().or(p["port"].as_u64());
                    json!({"name": p["name"].as_str().unwrap_or(""), "port": target,
                           "protocol": "TCP"})
                })
                .collect();
            let endpoints: Vec<Value> = selected
                .iter()
                .map(|p| {
                    json!({"addresses": [p.ip().to_string()], "conditions": {"ready": true},
                           "targetRef": {"kind": "Pod", "name": p.name,
                                         "namespace": id.namespace}})
                })
                .collect();
            let slice = json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": format!("{}-mesh", id.name), "namespace": id.namespace,
                             "labels": {"kubernetes.io/service-name": id.name}},
                "addressType": "IPv4",
                "ports": ports,
                "endpoints": endpoints,
            });
            self.write(&self.file_of(id), &[service.clone(), slice])?;
            if let Some(ip) = self
                .cluster_ips
                .get(&(id.namespace.clone(), id.name.clone()))
            {
                hosts.push((*ip, id.namespace.clone(), id.name.clone()));
            }
        }
        // Names as a pod's DNS search path resolves them: short in its own namespace, then
        // `name.namespace`, `name.namespace.svc` and the full name everywhere.
        for pod in self.pods.values().flatten() {
            let entries: Vec<(Ipv4Addr, Vec<String>)> = hosts
                .iter()
                .map(|(ip, ns, name)| (*ip, service_hostnames(ns, name, &pod.namespace)))
                .collect();
            pod.netns.write_hosts(&entries)?;
        }
        Ok(())
    }

    /// The first pod (by name) of `namespace` carrying `labels`.
    pub fn pod(&self, namespace: &str, labels: &[(&str, &str)]) -> anyhow::Result<&MeshPod> {
        let mut pods: Vec<&MeshPod> = self
            .pods
            .values()
            .flatten()
            .filter(|p| p.namespace == namespace && p.has_labels(labels))
            .collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        pods.first()
            .copied()
            .ok_or_else(|| anyhow!("no pod in {namespace} with labels {labels:?}"))
    }

    /// Waits until every sidecar applied its configuration.
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        wait_sidecars(&self.control_plane, self.pods.values_mut().flatten())
    }
}

/// One request from a pod, as upstream's `echo.ExpectedResponse` describes it.
#[derive(Clone, Debug, Default)]
pub struct MeshCase {
    /// `host[:port]`; `echo` when empty.
    pub host: String,
    /// Path and query.
    pub path: String,
    /// Request headers (`Host` sets the authority).
    pub headers: Vec<(String, String)>,
    /// Expected status (200 when 0).
    pub status: u16,
    /// Required prefix of the answering pod's name.
    pub backend: String,
    /// Headers the backend must have received, values joined with ",".
    pub request_headers: Vec<(String, String)>,
    /// Headers the backend must not have received.
    pub absent_request_headers: Vec<String>,
    /// Response headers (last value wins).
    pub response_headers: Vec<(String, String)>,
    /// Response headers that must be absent.
    pub absent_response_headers: Vec<String>,
    /// The path the backend must have seen (checked by this runner, not upstream).
    pub echoed_path: Option<String>,
}

/// What one request printed, parsed as upstream's `ParseResponse` does.
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    /// `StatusCode=`.
    pub code: Option<u16>,
    /// `Hostname=`.
    pub hostname: String,
    /// `Path=`.
    pub path: Option<String>,
    /// `RequestHeader=` (values per lower-cased name).
    pub request_headers: BTreeMap<String, Vec<String>>,
    /// `ResponseHeader=` (last value per lower-cased name).
    pub response_headers: BTreeMap<String, String>,
    /// `Error=`, when the request failed.
    pub error: Option<String>,
}

/// Parses the lines of one request (`[i] Field=value`).
pub fn parse(lines: &str) -> Parsed {
    let mut out = Parsed::default();
    for line in lines.lines() {
        let Some((_, rest)) = line.split_once("] ") else {
            continue;
        };
        let Some((field, value)) = rest.split_once('=') else {
            continue;
        };
        match field {
            "StatusCode" if out.code.is_none() => out.code = value.trim().parse().ok(),
            "Hostname" if out.hostname.is_empty() => out.hostname = value.to_string(),
            "Path" if out.path.is_none() => out.path = Some(value.to_string()),
            "Error" => out.error = Some(value.to_string()),
            "RequestHeader" => {
                if let Some((k, v)) = value.split_once(':') {
                    out.request_headers
                        .entry(k.to_ascii_lowercase())
                        .or_default()
                        .push(v.to_string());
                }
            }
            "ResponseHeader" => {
                if let Some((k, v)) = value.split_once(':') {
                    out.response_headers
                        .insert(k.to_ascii_lowercase(), v.to_string());
                }
            }
            _ => {}
        }
    }
    out
}

/// Splits a client's output into the requests' parts, by `[i]` index.
pub fn split(output: &str) -> Vec<String> {
    let mut parts: BTreeMap<usize, String> = BTreeMap::new();
    for line in output.lines() {
        let index = line
            .strip_prefix('[')
            .and_then(|l| l.split_once(']'))
            .and_then(|(i, _)| i.parse::<usize>().ok());
        if let Some(i) = index {
            let part = parts.entry(i).or_default();
            part.push_str(line);
            part.push('\n');
        }
    }
    parts.into_values().collect()
}

/// Compares a response with a case, in upstream's order; the first difference is the error.
pub fn compare(case: &MeshCase, got: &Parsed) -> Result<(), String> {
    if let Some(e) = &got.error {
        return Err(format!("request failed: {e}"));
    }
    let want = if case.status == 0 { 200 } else { case.status };
    match got.code {
        Some(code) if code == want => {}
        other => return Err(format!("status {other:?}, want {want}")),
    }
    for (name, value) in &case.request_headers {
        let values = got.request_headers.get(&name.to_ascii_lowercase());
        let joined = values.map(|v| v.join(","));
        if joined.as_deref() != Some(value.as_str()) {
            return Err(format!(
                "request header {name}: got {joined:?}, want {value:?}"
            ));
        }
    }
    for name in &case.absent_request_headers {
        if got.request_headers.contains_key(&name.to_ascii_lowercase()) {
            return Err(format!("request header {name} should be absent"));
        }
    }
    for name in &case.absent_response_headers {
        if got
            .response_headers
            .contains_key(&name.to_ascii_lowercase())
        {
            return Err(format!("response header {name} should be absent"));
        }
    }
    for (name, value) in &case.response_headers {
        let v = got.response_headers.get(&name.to_ascii_lowercase());
        if v.map(String::as_str) != Some(value.as_str()) {
            return Err(format!("response header {name}: got {v:?}, want {value:?}"));
        }
    }
    if !got.hostname.starts_with(&case.backend) {
        return Err(format!(
            "answered by {:?}, want a pod of {}",
            got.hostname, case.backend
        ));
    }
    if let Some(path) = &case.echoed_path
        && got.path.as_deref() != Some(path.as_str())
    {
        return Err(format!(
            "the backend saw path {:?}, want {path:?}",
            got.path
        ));
    }
    Ok(())
}

/// Runs `trellis-echo client` inside a pod (as the app's uid), as upstream execs `client`.
pub fn exec_client(
    pod: &MeshPod,
    url: &str,
    headers: &[(String, String)],
    count: usize,
) -> anyhow::Result<String> {
    let mut cmd = pod
        .netns
        .command(Some(APP_UID), &trellis_harness::echo_bin()?);
    cmd.arg("client").arg(url);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}:{v}"));
    }
    if count > 1 {
        cmd.arg("--count").arg(count.to_string());
    }
    let out = cmd
        .output()
        .context("running trellis-echo client in the pod")?;
    if !out.status.success() {
        bail!(
            "trellis-echo client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Upstream's eventually-consistent request: 3 passes in a row within 30 s, a second's pause
/// after a failure.
pub fn expect_eventually(pod: &MeshPod, case: &MeshCase) -> anyhow::Result<()> {
    let host = if case.host.is_empty() {
        "echo"
    } else {
        &case.host
    };
    let url = format!("http://{host}{}", case.path);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut streak, mut attempts, mut last) = (0, 0, String::new());
    while streak < 3 {
        if Instant::now() > deadline {
            bail!("{url}: not consistent after {attempts} attempts within 30 s: {last}");
        }
        attempts += 1;
        let result = exec_client(pod, &url, &case.headers, 1)
            .map_err(|e| format!("{e:#}"))
            .and_then(|out| compare(case, &parse(&out)));
        match result {
            Ok(()) => streak += 1,
            Err(e) => {
                if std::env::var_os("TRELLIS_CONFORMANCE_VERBOSE").is_some() {
                    println!("        {url}: attempt {attempts}: {e}");
                }
                streak = 0;
                last = e;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "[0] URL=http://echo/\n[0] StatusCode=200\n[0] ResponseHeader=x-header-set:a\n\
        [0] ResponseHeader=X-Header-Set:set\n[0] Hostname=echo-v1-abc-de\n[0] Path=/v2\n\
        [0] RequestHeader=X-Header-Add:one\n[0] RequestHeader=x-header-add:two\n\
        [1] URL=http://echo/\n[1] Error=cannot connect\n";

    #[test]
    fn output_is_split_by_request_and_parsed_as_upstream_parses_it() {
        let parts = split(OUTPUT);
        assert_eq!(parts.len(), 2);
        let first = parse(&parts[0]);
        assert_eq!(first.code, Some(200));
        assert_eq!(first.hostname, "echo-v1-abc-de");
        assert_eq!(first.response_headers["x-header-set"], "set");
        assert_eq!(first.request_headers["x-header-add"], ["one", "two"]);
        assert_eq!(parse(&parts[1]).error.as_deref(), Some("cannot connect"));
    }

    #[test]
    fn comparison_follows_upstream_order_and_joins_values() {
        let got = parse(&split(OUTPUT)[0]);
        let mut case = MeshCase {
            backend: "echo-v1".into(),
            request_headers: vec![("X-Header-Add".into(), "one,two".into())],
            response_headers: vec![("X-Header-Set".into(), "set".into())],
            ..Default::default()
        };
        assert_eq!(compare(&case, &got), Ok(()));
        case.backend = "echo-v2".into();
        assert!(
            compare(&case, &got)
                .unwrap_err()
                .contains("want a pod of echo-v2")
        );
        case.status = 404;
        assert!(compare(&case, &got).unwrap_err().contains("status"));
        let failed = parse(&split(OUTPUT)[1]);
        assert!(compare(&MeshCase::default(), &failed).is_err());
    }
}
