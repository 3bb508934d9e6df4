//! The quickstart's mesh: it plays the kubelet for the Pods of the config directory. Each Pod
//! with an IP becomes a network namespace on a bridge (10.244.0.0/16) with an echo app, and a
//! pod in the mesh also gets the capture rules and an Envoy sidecar. Needs root; without it the
//! control plane still serves the pods' configuration and the quickstart says how to see it.

use anyhow::Context;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use trellis_harness::ControlPlane;
use trellis_harness::mesh::{MeshPod, PodSpec, Workload, service_hostnames, wait_sidecars};
use trellis_harness::netns::{Network, unavailable};
use trellis_model::gateway::PathMatchType;
use trellis_model::mesh::{cluster_ip, pod_in_mesh, pod_ips};
use trellis_model::{InputSet, ObjectKey};

/// The pods' network by default: 10.`POD_NETWORK`.0.0/16, as `deploy/quickstart` writes its
/// Pods.
pub const POD_NETWORK: u8 = 244;

/// The Pods of the input that have an IP in the pods' network 10.`network`.0.0/16.
pub fn pods_with_ips(input: &InputSet, network: u8) -> Vec<(ObjectKey, Ipv4Addr)> {
    input
        .pods
        .iter()
        .filter_map(|(key, pod)| {
            let ip: Ipv4Addr = pod_ips(pod).first()?.parse().ok()?;
            (ip.octets()[..2] == [10, network]).then(|| (key.clone(), ip))
        })
        .collect()
}

/// The running mesh.
pub struct Mesh {
    /// The pods.
    pub pods: Vec<MeshPod>,
    /// The bridge, kept until the pods are gone.
    _network: Network,
}

/// The bridge, or why there is none.
pub fn network(second_octet: u8) -> Result<Network, String> {
    if let Some(why) = unavailable() {
        return Err(why);
    }
    Network::create_on(second_octet, &format!("tq{second_octet}")).map_err(|e| format!("{e:#}"))
}

/// Starts every pod (echo app, and for pods in the mesh the capture rules and a sidecar).
pub fn start(
    network: Network,
    input: &InputSet,
    work: &Path,
    control_plane: &ControlPlane,
) -> anyhow::Result<Mesh> {
    let mut pods = Vec::new();
    for (key, ip) in pods_with_ips(input, network.gateway.octets()[1]) {
        let pod = &input.pods[&key];
        let labels: Vec<(String, String)> = pod
            .metadata
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let spec = PodSpec {
            namespace: &key.namespace,
            name: &key.name,
            labels: &labels,
            sidecar: pod_in_mesh(input, pod),
            ip: Some(ip),
            app_env: &[],
        };
        // With a CA, each sidecar runs beside `trellis agent` (the Pod objects, with their
        // service accounts, are in the config directory already).
        let ca_dir = control_plane.ca_dir();
        let workload = ca_dir.as_ref().map(|ca_dir| Workload {
            service_account: "",
            config_dir: &control_plane.config_dir,
            ca_dir,
            lifetime_secs: 24 * 3600,
            write_pod: false,
        });
        pods.push(
            MeshPod::start_with(
                &network,
                work,
                &spec,
                control_plane.xds,
                workload.as_ref().filter(|_| spec.sidecar),
            )
            .with_context(|| format!("starting pod {key}"))?,
        );
    }
    // Service names as a pod's DNS search path resolves them.
    for pod in &pods {
        let entries: Vec<(Ipv4Addr, Vec<String>)> = input
            .services
            .iter()
            .filter_map(|(key, service)| {
                let ip = cluster_ip(service)?.parse().ok()?;
                Some((
                    ip,
                    service_hostnames(&key.namespace, &key.name, &pod.namespace),
                ))
            })
            .collect();
        pod.netns.write_hosts(&entries)?;
    }
    let mut mesh = Mesh {
        pods,
        _network: network,
    };
    wait_sidecars(control_plane, mesh.pods.iter_mut())?;
    Ok(mesh)
}

/// A request from one pod to a Service, derived from a GAMMA HTTPRoute.
pub struct MeshSample {
    /// Index of the client pod in [`Mesh::pods`].
    pub client: usize,
    /// `http://<service>.<namespace><path>`.
    pub url: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// The Service's address.
    pub to: SocketAddr,
    host: String,
    path: String,
}

impl MeshSample {
    /// The command that sends it from inside the client pod (captured by its sidecar as the
    /// app's own requests are).
    pub fn command(&self, mesh: &Mesh) -> String {
        let pod = &mesh.pods[self.client];
        let mut cmd = format!(
            "sudo ip netns exec {} curl -si {}",
            pod.netns.name, self.url
        );
        for (k, v) in &self.headers {
            cmd.push_str(&format!(" -H '{k}: {v}'"));
        }
        cmd
    }

    /// Sends it from inside the client pod; the status and the answering pod.
    pub fn send(&self, mesh: &Mesh) -> anyhow::Result<(u16, String, Option<String>)> {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let reply = mesh.pods[self.client].request(self.to, &self.host, &self.path, &headers)?;
        let route = reply.header("x-mesh-route").map(str::to_string);
        Ok((reply.status, reply.pod(), route))
    }
}

/// One sample per match of every HTTPRoute attached to a Service, sent from a pod of the
/// route's namespace that the Service does not select.
pub fn samples(input: &InputSet, mesh: &Mesh) -> Vec<MeshSample> {
    let mut out = Vec::new();
    for (key, route) in &input.http_routes {
        for parent in &route.spec.parent_refs {
            if parent.kind != "Service" {
                continue;
            }
            let ns = parent
                .namespace
                .clone()
                .unwrap_or_else(|| key.namespace.clone());
            let service_key = ObjectKey::new(ns.clone(), parent.name.clone());
            let Some(service) = input.services.get(&service_key) else {
                continue;
            };
            let Some(ip) = cluster_ip(service).and_then(|ip| ip.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let port = parent
                .port
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(80);
            let selector = service
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            let selected: Vec<(&str, &str)> = selector
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let Some(client) = mesh.pods.iter().position(|p| {
                p.sidecar && p.namespace == key.namespace && !p.has_labels(&selected)
            }) else {
                continue;
            };
            let host = format!("{}.{ns}", parent.name);
            for rule in &route.spec.rules {
                // A rule without matches matches everything: one request to `/`.
                let matches: Vec<(String, Vec<(String, String)>)> = if rule.matches.is_empty() {
                    vec![("/".to_string(), Vec::new())]
                } else {
                    rule.matches
                        .iter()
                        .filter(|m| m.path.type_ != PathMatchType::RegularExpression)
                        .map(|m| {
                            let headers = m
                                .headers
                                .iter()
                                .map(|h| (h.name.clone(), h.value.clone()))
                                .collect();
                            (m.path.value.clone(), headers)
                        })
                        .collect()
                };
                for (path, headers) in matches {
                    let authority = if port == 80 {
                        host.clone()
                    } else {
                        format!("{host}:{port}")
                    };
                    out.push(MeshSample {
                        client,
                        url: format!("http://{authority}{path}"),
                        headers,
                        to: SocketAddr::from((ip, port)),
                        host: host.clone(),
                        path,
                    });
                }
            }
        }
    }
    out
}
