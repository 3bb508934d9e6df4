//! IR to Envoy resources, one [`Snapshot`] per proxy: listeners (an HTTP connection manager
//! on RDS), route configurations, EDS clusters and their load assignments, secrets.
//!
//! ```text
//!  Ir ──► ProxyIr ──► listener.rs  Listener (HCM: CORS, Wasm filters, router; RDS)
//!                ├──► route.rs     RouteConfiguration (virtual hosts, routes, CORS policies)
//!                ├──► cluster.rs   Cluster + ClusterLoadAssignment (and the module cluster)
//!                ├──► secret.rs    Secret (SDS)
//!                └──► wasm.rs      the Wasm HTTP filters
//! ```
//!
//! Names carry Kubernetes identity: listener and route configuration
//! `gateway/<ns>/<name>/port/<port>`, routes `httproute/<ns>/<name>/rule/<i>/match/<j>`,
//! clusters `service/<ns>/<name>/<port>`. Route configurations declare the clusters they send
//! traffic to as dependencies, so the xDS server delivers clusters and endpoints first.
//! Nothing here decides anything the IR did not: each function renders one IR type.

mod cluster;
pub mod egress;
mod listener;
pub mod mtls;
mod resilience;
mod route;
mod secret;
mod sidecar;
pub mod tracing;
mod wasm;

pub use cluster::{cluster, load_assignment, module_cluster};
pub use listener::listener;
use route::*;
pub use route::{CORS_FILTER, canonical_route_configuration, route_configuration};
pub use secret::secret;
pub use sidecar::{
    BLACKHOLE_CLUSTER, INBOUND_CLUSTER, INBOUND_LISTENER, OUTBOUND_LISTENER, PASSTHROUGH_CLUSTER,
    blackhole_cluster, inbound_listener, mesh_route_configuration, original_dst_cluster,
    outbound_listener, service_listener, service_listener_name,
};
pub use wasm::wasm_filter;

use crate::ir::{
    ClusterIr, FilterChainIr, Ir, MeshRoutesIr, ProxyIr, SecretIr, ServiceListenerIr, SidecarIr,
};
use crate::policy::MODULE_CLUSTER;
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, SocketAddress, address,
    config_source, data_source, socket_address,
};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Duration;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use trellis_xds::{Dependency, Resource, ResourceType, Snapshot, Spare};

/// The name of a cluster that is never defined: routes send the share of traffic meant for an
/// unresolved backend there, and Envoy answers it with 500.
pub const INVALID_BACKEND_CLUSTER: &str = "trellis/invalid-backend";

/// One snapshot per proxy key.
pub fn snapshots(ir: &Ir) -> BTreeMap<String, Snapshot> {
    snapshots_cached(ir, &mut ResourceCache::default())
}

/// Encoded resources of the previous translation, reused when their IR is unchanged: a change
/// to one route re-encodes its route configuration, not every cluster. Resources shared by
/// several proxies (a Service's cluster) are encoded once and shared.
#[derive(Debug, Default)]
pub struct ResourceCache {
    clusters: HashMap<String, (ClusterIr, Arc<Resource>, Arc<Resource>)>,
    routes: HashMap<String, (FilterChainIr, Vec<Dependency>, Arc<Resource>)>,
    secrets: HashMap<String, (SecretIr, Arc<Resource>)>,
    mesh_routes: HashMap<String, (MeshRoutesIr, Vec<Dependency>, Arc<Resource>)>,
    service_listeners: HashMap<ServiceListenerIr, Arc<Resource>>,
    spare: Option<(BTreeMap<String, ClusterIr>, Arc<Spare>)>,
}

/// The working set of one call: what was reused or built, becoming the next cache.
#[derive(Default)]
struct CacheRound<'a> {
    old: Option<&'a ResourceCache>,
    new: ResourceCache,
}

impl CacheRound<'_> {
    fn cluster(&mut self, c: &ClusterIr) -> (Arc<Resource>, Arc<Resource>) {
        if let Some((_, a, b)) = self.new.clusters.get(&c.name).filter(|(ir, _, _)| ir == c) {
            return (a.clone(), b.clone());
        }
        let (a, b) = match self
            .old
            .and_then(|o| o.clusters.get(&c.name))
            .filter(|(ir, _, _)| ir == c)
        {
            Some((_, a, b)) => (a.clone(), b.clone()),
            None => (
                Resource::new(&c.name, &cluster(c)),
                Resource::new(&c.name, &load_assignment(c)),
            ),
        };
        self.new
            .clusters
            .insert(c.name.clone(), (c.clone(), a.clone(), b.clone()));
        (a, b)
    }

    fn route(&mut self, chain: &FilterChainIr, dependencies: Vec<Dependency>) -> Arc<Resource> {
        let same = |(ir, deps, _): &&(FilterChainIr, Vec<Dependency>, Arc<Resource>)| {
            ir == chain && *deps == dependencies
        };
        if let Some((_, _, r)) = self.new.routes.get(&chain.route_config).filter(same) {
            return r.clone();
        }
        let r = match self
            .old
            .and_then(|o| o.routes.get(&chain.route_config))
            .filter(same)
        {
            Some((_, _, r)) => r.clone(),
            None => Resource::from_encoded::<RouteConfiguration>(
                &chain.route_config,
                canonical_route_configuration(&route_configuration(chain)),
                dependencies.clone(),
            ),
        };
        self.new.routes.insert(
            chain.route_config.clone(),
            (chain.clone(), dependencies, r.clone()),
        );
        r
    }

    fn mesh_routes(
        &mut self,
        name: &str,
        routes: &MeshRoutesIr,
        dependencies: Vec<Dependency>,
    ) -> Arc<Resource> {
        let same = |(ir, deps, _): &&(MeshRoutesIr, Vec<Dependency>, Arc<Resource>)| {
            ir == routes && *deps == dependencies
        };
        let found = self
            .new
            .mesh_routes
            .get(name)
            .filter(same)
            .or_else(|| self.old.and_then(|o| o.mesh_routes.get(name)).filter(same))
            .map(|(_, _, r)| r.clone());
        let r = found.unwrap_or_else(|| {
            Resource::from_encoded::<RouteConfiguration>(
                name,
                canonical_route_configuration(&mesh_route_configuration(name, routes)),
                dependencies.clone(),
            )
        });
        self.new
            .mesh_routes
            .insert(name.to_string(), (routes.clone(), dependencies, r.clone()));
        r
    }

    fn service_listener(&mut self, l: &ServiceListenerIr, s: &SidecarIr) -> Arc<Resource> {
        let found = self
            .new
            .service_listeners
            .get(l)
            .or_else(|| self.old.and_then(|o| o.service_listeners.get(l)))
            .cloned();
        let r = found.unwrap_or_else(|| {
            // A TCP port's listener names its cluster: the cluster first.
            let dependencies = l
                .cluster
                .iter()
                .filter(|c| s.clusters.contains_key(*c))
                .flat_map(|c| {
                    [ResourceType::Cluster, ResourceType::Endpoint].map(|resource_type| {
                        Dependency {
                            resource_type,
                            name: c.clone(),
                        }
                    })
                })
                .chain(l.tracing.iter().filter_map(|t| match &t.collector {
                    crate::ir::CollectorIr::Otlp(c) => Some(Dependency {
                        resource_type: ResourceType::Cluster,
                        name: c.name.clone(),
                    }),
                    crate::ir::CollectorIr::ControlPlane => None,
                }))
                .collect();
            Resource::with_dependencies(
                service_listener_name(l),
                &service_listener(l),
                dependencies,
            )
        });
        self.new.service_listeners.insert(l.clone(), r.clone());
        r
    }

    fn secret(&mut self, s: &SecretIr) -> Arc<Resource> {
        let found = self
            .new
            .secrets
            .get(&s.name)
            .or_else(|| self.old.and_then(|o| o.secrets.get(&s.name)))
            .filter(|(ir, _)| ir == s)
            .map(|(_, r)| r.clone());
        let r = found.unwrap_or_else(|| Resource::new(&s.name, &secret(s)));
        self.new
            .secrets
            .insert(s.name.clone(), (s.clone(), r.clone()));
        r
    }
}

/// One snapshot per proxy key, reusing (and then updating) `cache`.
pub fn snapshots_cached(ir: &Ir, cache: &mut ResourceCache) -> BTreeMap<String, Snapshot> {
    let mut round = CacheRound {
        old: Some(cache),
        new: ResourceCache::default(),
    };
    let spare = match &cache.spare {
        Some((clusters, spare)) if *clusters == ir.spare_clusters => spare.clone(),
        _ => {
            let resources: Vec<Arc<Resource>> = ir
                .spare_clusters
                .values()
                .flat_map(|c| {
                    let (a, b) = round.cluster(c);
                    [a, b]
                })
                .collect();
            Arc::new(Spare::from_resources(resources))
        }
    };
    round.new.spare = Some((ir.spare_clusters.clone(), spare.clone()));
    let mut out: BTreeMap<String, Snapshot> = ir
        .proxies
        .iter()
        .map(|(key, proxy)| {
            let snapshot = Snapshot::from_resources(resources_with(proxy, &mut round))
                .with_spare(spare.clone());
            (key.clone(), snapshot)
        })
        .collect();
    for (key, sidecar) in &ir.sidecars {
        let snapshot = Snapshot::from_resources(sidecar::sidecar_resources(sidecar, &mut round))
            .with_spare(spare.clone());
        out.insert(key.clone(), snapshot);
    }
    *cache = round.new;
    out
}

/// Every resource of one proxy, encoded.
pub fn resources(proxy: &ProxyIr) -> Vec<Arc<Resource>> {
    resources_with(proxy, &mut CacheRound::default())
}

fn resources_with(proxy: &ProxyIr, round: &mut CacheRound<'_>) -> Vec<Arc<Resource>> {
    let mut out = Vec::new();
    for c in proxy.clusters.values() {
        let (a, b) = round.cluster(c);
        out.push(a);
        out.push(b);
    }
    for s in proxy.secrets.values() {
        out.push(round.secret(s));
    }
    let mut modules = false;
    let mut out_collectors = std::collections::BTreeSet::new();
    for l in &proxy.listeners {
        let wasm = l.chains.iter().any(|c| !c.http_filters.is_empty());
        let mut dependencies = if wasm {
            vec![Dependency {
                resource_type: ResourceType::Cluster,
                name: MODULE_CLUSTER.to_string(),
            }]
        } else {
            Vec::new()
        };
        let collectors = tracing::collectors(l.chains.iter().filter_map(|c| c.tracing.as_ref()));
        for (name, c) in collectors {
            dependencies.push(Dependency {
                resource_type: ResourceType::Cluster,
                name: name.clone(),
            });
            if !out_collectors.contains(&name) {
                out.push(Resource::new(&name, &tracing::collector_cluster(c)));
                out_collectors.insert(name);
            }
        }
        modules |= wasm;
        let server = proxy.module_server.as_ref();
        out.push(Resource::with_dependencies(
            &l.name,
            &listener(l, server),
            dependencies,
        ));
        for chain in &l.chains {
            let dependencies = route_dependencies(chain, proxy);
            out.push(round.route(chain, dependencies));
        }
    }
    if modules && let Some(server) = &proxy.module_server {
        out.push(Resource::new(MODULE_CLUSTER, &module_cluster(server)));
    }
    out
}

pub(super) fn inline_bytes(text: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(
            text.as_bytes().to_vec(),
        )),
        ..Default::default()
    }
}

pub(super) fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

pub(super) fn duration_ms(ms: u64) -> Duration {
    duration(std::time::Duration::from_millis(ms))
}

pub(super) fn duration(d: std::time::Duration) -> Duration {
    Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

pub(super) fn socket(address: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}
