//! Pure translation: Gateway API inputs to an IR with status, and the IR to Envoy resources.
//!
//! ```text
//!  InputSet ──translate()──► Translation { ir: Ir, status: StatusSet, last_good }
//!                                          │
//!                        envoy::snapshots()▼
//!                    { "gateway/<ns>/<name>" -> Snapshot }
//! ```
//!
//! One HTTPRoute passes through `route.rs` (attachment, status), `rule.rs` (filters,
//! backends), `matches.rs` (matches, value checks), `assemble.rs` (virtual hosts in precedence
//! order) and `envoy/route.rs` (the Envoy route); docs/translation.md walks it.
//!
//! Both stages are deterministic functions of their input (everything is sorted), so golden
//! tests pin them down. A user's mistake never makes translation fail: it becomes a status
//! condition with a standard reason, and the rest of the configuration is still produced.

// Functions stay short enough to read as one step of a stage (threshold in clippy.toml).
#![warn(clippy::too_many_lines)]

mod assemble;
pub mod backend;
pub mod conditions;
mod egress;
pub mod envoy;
mod gateway;
pub mod hostname;
pub mod ir;
mod listener;
mod matches;
mod mesh;
mod pem;
pub mod policy;
pub mod re2;
mod resilience;
mod route;
mod rule;
pub mod security;
pub mod status;
pub mod telemetry;

pub use gateway::SUPPORTED_FEATURES;
pub use status::StatusSet;

use std::collections::BTreeMap;
use trellis_model::{InputSet, ObjectKey};

/// Settings that do not come from Kubernetes objects.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Addresses assigned to Gateways that do not request one in `spec.addresses` (the file
    /// provider's address pool, or a cloud load balancer's address).
    pub assigned_addresses: BTreeMap<ObjectKey, String>,
    /// The Wasm modules the control plane holds and serves.
    pub modules: policy::ModuleOptions,
    /// The last valid spec of every policy object, from the previous translation.
    pub last_good: policy::LastGood,
    /// Workload identity: with it, sidecars speak mutual TLS to each other as
    /// PeerAuthentications say; without it (no certificate authority), plaintext.
    pub mesh_identity: Option<security::MeshIdentity>,
    /// Whether Gateway proxies hold workload certificates (the control plane serves xDS over
    /// mutual TLS, so each runs beside `trellis agent`): with [`Options::mesh_identity`], they
    /// then originate the mesh's mutual TLS to meshed endpoints, as sidecars do.
    pub gateway_mtls: bool,
}

/// The result of translating one input set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translation {
    /// What every proxy should serve.
    pub ir: ir::Ir,
    /// Status of every object Trellis manages.
    pub status: StatusSet,
    /// The last valid spec of every policy object, for the next translation's
    /// [`Options::last_good`].
    pub last_good: policy::LastGood,
    /// The objectives of Services that a HealthPolicy targets.
    pub objectives: BTreeMap<ObjectKey, telemetry::ObjectiveIr>,
}

/// The snapshot key of the proxies serving a Gateway: `gateway/<ns>/<name>`.
pub fn proxy_key(gateway: &ObjectKey) -> String {
    format!("gateway/{}/{}", gateway.namespace, gateway.name)
}

/// Translates an input set into the IR of every proxy and the status of every object.
pub fn translate(input: &InputSet, options: &Options) -> Translation {
    let mut status = StatusSet::default();
    let classes = gateway::gateway_classes(input, &mut status);
    let backends = backend::Backends::new(input);
    let mut gateways = gateway::gateways(input, options, &classes, &backends);
    route::http_routes(input, &backends, &mut gateways, &mut status);
    let security = security::security(input, options.mesh_identity.as_ref(), &mut status);
    let mesh = mesh::mesh(input, &backends, security.as_ref(), &mut status);
    let mut ir = assemble::finish(gateways, &mut status);
    ir.sidecars = mesh.sidecars;
    ir.pods = mesh.pods;
    egress::egress(input, &mut ir, &mut status);
    ir.spare_clusters = spare_clusters(input, &backends);
    if let (Some(security), true) = (&security, options.gateway_mtls) {
        // A Gateway's requests to meshed pods take the mesh's mutual TLS, as a sidecar's do
        // (so STRICT pods take them, and see the Gateway's identity).
        let gateway_clusters = ir
            .proxies
            .values_mut()
            .flat_map(|p| p.clusters.values_mut());
        for cluster in gateway_clusters.chain(ir.spare_clusters.values_mut()) {
            mesh::mark_mtls_endpoints(cluster, security);
        }
    }
    let objectives = telemetry::health_objectives(input, &mut status);
    let last_good = policy::attach(
        input,
        &options.modules,
        &options.last_good,
        &objectives,
        &mut ir,
        &mut status,
    );
    resilience::spare_clusters(&mut ir);
    resilience::fault_conditions(&ir, &mut status);
    Translation {
        ir,
        status,
        last_good,
        objectives,
    }
}

/// A cluster for every port of every Service (those that resolve).
fn spare_clusters(
    input: &InputSet,
    backends: &backend::Backends<'_>,
) -> BTreeMap<String, ir::ClusterIr> {
    let mut out = BTreeMap::new();
    for (key, service) in &input.services {
        let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
        for port in ports.into_iter().flatten() {
            let target = backend::BackendRef {
                group: "",
                kind: "Service",
                name: &key.name,
                namespace: Some(&key.namespace),
                port: Some(port.port),
            };
            if let Ok(cluster) =
                backends.resolve(backend::http_route_referrer(&key.namespace), target)
            {
                out.insert(cluster.name.clone(), cluster);
            }
        }
    }
    out
}
