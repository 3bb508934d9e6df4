//! Mutual TLS in the mesh: the mode each meshed pod's ports are in (PeerAuthentication), the
//! identity each pod's sidecar presents, and the status of every PeerAuthentication.
//!
//! ```text
//!  PeerAuthentications ──► per meshed pod: mode of every port (workload > namespace > mesh
//!                          policy > PERMISSIVE), and its SPIFFE ID
//!                     └──► status: Accepted, the mode in force, how many pods and ports
//! ```
//!
//! Without [`MeshIdentity`] (the control plane runs without a certificate authority) there is
//! no mutual TLS: every policy says so in its status and sidecars stay plaintext.

use crate::StatusSet;
use crate::conditions::{ConditionType, Reason, condition};
use crate::ir::InboundMtlsIr;
use std::collections::{BTreeMap, HashMap};
use trellis_model::core::Pod;
use trellis_model::mesh::{pod_in_mesh, pod_ips, pod_service_account};
use trellis_model::security::{
    MtlsMode, PeerAuthentication, PeerAuthenticationSpec, PeerAuthenticationStatus,
};
use trellis_model::{InputSet, ObjectKey};

/// Workload identity in the mesh (set when the control plane runs a certificate authority).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshIdentity {
    /// The SPIFFE trust domain (`cluster.local` unless configured).
    pub trust_domain: String,
    /// The control plane's namespace: a PeerAuthentication there without a selector applies
    /// to the whole mesh.
    pub root_namespace: String,
}

impl MeshIdentity {
    /// The SPIFFE ID of a service account: `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn spiffe_id(&self, namespace: &str, service_account: &str) -> String {
        format!(
            "spiffe://{}/ns/{namespace}/sa/{service_account}",
            self.trust_domain
        )
    }
}

/// A meshed pod's identity and the mode of its ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PodSecurity {
    pub identity: String,
    pub mtls: InboundMtlsIr,
}

/// The security of every meshed pod, and an index by IP.
#[derive(Default)]
pub(crate) struct Security {
    pub pods: BTreeMap<ObjectKey, PodSecurity>,
    by_ip: HashMap<String, ObjectKey>,
}

impl Security {
    /// The identity a sidecar at `ip` presents on `port`, when it takes mutual TLS there.
    pub fn mtls_peer(&self, ip: &str, port: u16) -> Option<&str> {
        let pod = self.pods.get(self.by_ip.get(ip)?)?;
        (pod.mtls.port_mode(port) != MtlsMode::Disable).then_some(pod.identity.as_str())
    }
}

/// A policy that parsed, with what ranks it among its peers (older first, then by name).
struct Valid<'a> {
    key: &'a ObjectKey,
    spec: PeerAuthenticationSpec,
    rank: (Option<i64>, &'a str),
}

/// Resolves every meshed pod's mode and writes every PeerAuthentication's status. `None`
/// without a mesh identity (no mutual TLS).
pub(crate) fn security(
    input: &InputSet,
    identity: Option<&MeshIdentity>,
    status: &mut StatusSet,
) -> Option<Security> {
    let mut valid: Vec<Valid<'_>> = Vec::new();
    for (key, policy) in &input.peer_authentications {
        let generation = policy.metadata.generation;
        match check(policy) {
            Err(message) => {
                status.peer_authentications.insert(
                    key.clone(),
                    PeerAuthenticationStatus {
                        conditions: vec![condition(
                            ConditionType::Accepted,
                            false,
                            Reason::Invalid,
                            message,
                            generation,
                        )],
                        ..Default::default()
                    },
                );
            }
            Ok(spec) => valid.push(Valid {
                key,
                spec,
                rank: (
                    policy
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_second()),
                    key.name.as_str(),
                ),
            }),
        }
    }
    valid.sort_by(|a, b| a.rank.cmp(&b.rank));
    let Some(identity) = identity else {
        for v in &valid {
            let generation = input.peer_authentications[v.key].metadata.generation;
            status.peer_authentications.insert(
                v.key.clone(),
                PeerAuthenticationStatus {
                    conditions: vec![condition(
                        ConditionType::Accepted,
                        false,
                        Reason::Pending,
                        "mutual TLS is off: the control plane runs without a certificate \
                         authority (trellis serve --ca-dir), so sidecars speak plaintext",
                        generation,
                    )],
                    ..Default::default()
                },
            );
        }
        return None;
    };
    Some(resolve(input, identity, &valid, status))
}

/// Parses a policy and checks what serde cannot.
fn check(policy: &PeerAuthentication) -> Result<PeerAuthenticationSpec, String> {
    let spec = policy.parse_spec().map_err(|e| e.to_string())?;
    let selects = spec
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty());
    if !spec.port_level_mtls.is_empty() && !selects {
        return Err(
            "spec.portLevelMtls: port-level modes need spec.selector.matchLabels (they apply \
             to the ports of particular workloads, as in Istio)"
                .to_string(),
        );
    }
    if let Some(port) = spec
        .port_level_mtls
        .keys()
        .find(|p| **p == 0 || **p > 65535)
    {
        return Err(format!(
            "spec.portLevelMtls: {port} is not a port number (1-65535)"
        ));
    }
    Ok(spec)
}

fn is_workload(spec: &PeerAuthenticationSpec) -> bool {
    spec.selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty())
}

fn selects(spec: &PeerAuthenticationSpec, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    spec.selector.as_ref().is_some_and(|s| {
        s.match_labels
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    })
}

fn mode_of(spec: &PeerAuthenticationSpec) -> MtlsMode {
    spec.mtls.map(|m| m.mode).unwrap_or_default()
}

#[derive(Default)]
struct Tally {
    pods: u32,
    ports: u32,
}

/// The levels below workload policies: each namespace's policy (its oldest without a
/// selector), the mesh-wide one among them (the root namespace's), and the modes they resolve
/// to.
struct Levels<'v, 'a> {
    valid: &'v [Valid<'a>],
    namespace_policy: BTreeMap<&'a str, usize>,
    mesh_mode: MtlsMode,
}

impl<'v, 'a> Levels<'v, 'a> {
    fn new(valid: &'v [Valid<'a>], root_namespace: &str) -> Self {
        let mut namespace_policy: BTreeMap<&'a str, usize> = BTreeMap::new();
        for (i, v) in valid.iter().enumerate() {
            if !is_workload(&v.spec) {
                namespace_policy
                    .entry(v.key.namespace.as_str())
                    .or_insert(i);
            }
        }
        let mesh_mode = namespace_policy
            .get(root_namespace)
            .map_or(MtlsMode::Unset, |i| mode_of(&valid[*i].spec))
            .or(MtlsMode::Permissive);
        Levels {
            valid,
            namespace_policy,
            mesh_mode,
        }
    }

    /// A namespace's mode: its policy's, else the mesh's.
    fn namespace_mode(&self, namespace: &str) -> MtlsMode {
        self.namespace_policy
            .get(namespace)
            .map_or(MtlsMode::Unset, |i| mode_of(&self.valid[*i].spec))
            .or(self.mesh_mode)
    }
}

fn resolve(
    input: &InputSet,
    identity: &MeshIdentity,
    valid: &[Valid<'_>],
    status: &mut StatusSet,
) -> Security {
    let levels = Levels::new(valid, &identity.root_namespace);
    let namespace_policy = &levels.namespace_policy;
    let namespace_mode = |ns: &str| levels.namespace_mode(ns);
    let mut tallies: Vec<Tally> = valid.iter().map(|_| Tally::default()).collect();
    let mut out = Security::default();
    for (key, pod) in &input.pods {
        if !pod_in_mesh(input, pod) {
            continue;
        }
        let base = namespace_mode(&key.namespace);
        let workload = valid.iter().position(|v| {
            v.key.namespace == key.namespace && is_workload(&v.spec) && selects(&v.spec, pod)
        });
        let deciding = workload
            .or_else(|| namespace_policy.get(key.namespace.as_str()).copied())
            .or_else(|| {
                namespace_policy
                    .get(identity.root_namespace.as_str())
                    .copied()
            });
        let mut mtls = InboundMtlsIr {
            mode: base,
            ports: BTreeMap::new(),
        };
        if let Some(i) = workload {
            let spec = &valid[i].spec;
            mtls.mode = mode_of(spec).or(base);
            let declared = container_ports(pod);
            for (port, m) in &spec.port_level_mtls {
                let (Ok(port), resolved) = (u16::try_from(*port), m.mode.or(mtls.mode)) else {
                    continue;
                };
                if resolved != mtls.mode {
                    mtls.ports.insert(port, resolved);
                }
                if declared.contains(&port) {
                    tallies[i].ports += 1;
                }
            }
        }
        if let Some(i) = deciding {
            tallies[i].pods += 1;
        }
        let ips = pod_ips(pod);
        for ip in ips {
            out.by_ip.insert(ip, key.clone());
        }
        out.pods.insert(
            key.clone(),
            PodSecurity {
                identity: identity.spiffe_id(&key.namespace, &pod_service_account(pod)),
                mtls,
            },
        );
    }
    write_status(input, identity, &levels, &tallies, status);
    out
}

/// Each valid policy's status: the mode it puts in force and what it decides, or why another
/// policy of its scope takes precedence.
fn write_status(
    input: &InputSet,
    identity: &MeshIdentity,
    levels: &Levels<'_, '_>,
    tallies: &[Tally],
    status: &mut StatusSet,
) {
    let (valid, namespace_policy) = (levels.valid, &levels.namespace_policy);
    let namespace_mode = |ns: &str| levels.namespace_mode(ns);
    for (i, v) in valid.iter().enumerate() {
        let ns_mode = namespace_mode(&v.key.namespace);
        let in_force = if is_workload(&v.spec) {
            mode_of(&v.spec).or(ns_mode)
        } else if namespace_policy.get(v.key.namespace.as_str()) == Some(&i) {
            ns_mode
        } else {
            let winner = valid[namespace_policy[v.key.namespace.as_str()]].key;
            status.peer_authentications.insert(
                v.key.clone(),
                PeerAuthenticationStatus {
                    conditions: vec![condition(
                        ConditionType::Accepted,
                        false,
                        Reason::Conflicted,
                        format!(
                            "namespace {} already has a policy without a selector, {} (the \
                             older one applies)",
                            v.key.namespace, winner.name
                        ),
                        input.peer_authentications[v.key].metadata.generation,
                    )],
                    ..Default::default()
                },
            );
            continue;
        };
        let scope = if is_workload(&v.spec) {
            "the pods it selects"
        } else if v.key.namespace == identity.root_namespace {
            "the whole mesh"
        } else {
            "its namespace"
        };
        status.peer_authentications.insert(
            v.key.clone(),
            PeerAuthenticationStatus {
                conditions: vec![condition(
                    ConditionType::Accepted,
                    true,
                    Reason::Accepted,
                    format!("{} applies to {scope}", in_force.as_str()),
                    input.peer_authentications[v.key].metadata.generation,
                )],
                mode: Some(in_force),
                pods: tallies[i].pods,
                ports: tallies[i].ports,
            },
        );
    }
}

fn container_ports(pod: &Pod) -> Vec<u16> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect()
}
