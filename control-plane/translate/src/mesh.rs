//! The mesh (Gateway API's GAMMA): HTTPRoutes whose parent is a Service, and what the sidecars
//! of each class serve.
//!
//! ```text
//!  Services of meshed namespaces (with a ClusterIP) ──► one ServiceListenerIr per port
//!  HTTPRoutes with a Service parent ──► per (client namespace, Service port):
//!      the consumer routes of that namespace, else the producer routes (the Service's own
//!      namespace), else a default route to the Service; hostnames ignored; status per parent
//!  Pods in the mesh ──► a class: (namespace, HTTP ports of the Services selecting them or
//!      naming them by targetRef in their EndpointSlices)
//! ```
//!
//! A request no attached route matches gets 404; a request to a pod IP (not a Service's
//! ClusterIP) uses no route. Mesh routes' backends need no ReferenceGrant (GEP-1294).

use crate::StatusSet;
use crate::backend::{Backends, mesh_route_referrer};
use crate::conditions::{Problem, Reason};
use crate::gateway::Entry;
use crate::ir::{
    ActionIr, BackendIr, ClusterIr, ForwardIr, HeaderModIr, InboundMtlsIr, InboundPortIr, MatchIr,
    MeshRoutesIr, PathMatchIr, RouteIr, RouteOrigin, Scheme, ServiceListenerIr, SidecarIr,
    UnknownDestinations,
};
use crate::rule::{Rules, translate_rules};
use crate::security::Security;
use crate::status::SidecarStatus;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use trellis_model::core::{Pod, Service, ServicePort};
use trellis_model::gateway::{ParentReference, RouteParentStatus, RouteStatus};
use trellis_model::mesh::{
    PortProtocol, cluster_ip, egress_namespaces, namespace_in_mesh, outbound_registry_only,
    pod_in_mesh, pod_ips, pod_ready, port_protocol,
};
use trellis_model::{InputSet, MESH_CONTROLLER_NAME, ObjectKey};

/// The sidecar classes and the class of every pod in the mesh.
#[derive(Default)]
pub(crate) struct Mesh {
    pub sidecars: BTreeMap<String, SidecarIr>,
    pub pods: BTreeMap<ObjectKey, String>,
}

/// A Service of a meshed namespace with a ClusterIP.
struct MeshService<'a> {
    address: String,
    service: &'a Service,
    /// Pods its EndpointSlices name by `targetRef` (a Service without a selector has no other
    /// way to say which pods it sends to).
    pods: BTreeSet<&'a str>,
    /// Its TCP ports and how each is spoken.
    ports: Vec<(&'a ServicePort, PortProtocol)>,
}

/// An HTTPRoute attached to a Service port (or every HTTP port, without `port`).
struct Attachment<'r> {
    /// Consumer routes apply to this namespace's clients only; producer routes (`None`) to all.
    consumer: Option<String>,
    service: ObjectKey,
    port: Option<u16>,
    rules: &'r Rules,
}

/// Translates the mesh: Service parents of HTTPRoutes (with their status) and every sidecar
/// class.
pub(crate) fn mesh(
    input: &InputSet,
    backends: &Backends<'_>,
    security: Option<&Security>,
    status: &mut StatusSet,
) -> Mesh {
    let services = mesh_services(input, backends);
    let mut translated: BTreeMap<ObjectKey, Rules> = BTreeMap::new();
    for (key, route) in &input.http_routes {
        if route.spec.parent_refs.iter().any(is_service_parent) {
            let rules = translate_rules(key, route, backends, mesh_route_referrer(&key.namespace));
            translated.insert(key.clone(), rules);
        }
    }
    let mut attachments = Vec::new();
    for (key, rules) in &translated {
        let route = &input.http_routes[key];
        let generation = route.metadata.generation;
        let mut parents = Vec::new();
        for parent in route
            .spec
            .parent_refs
            .iter()
            .filter(|p| is_service_parent(p))
        {
            let service = parent_key(key, parent);
            let accepted = rules
                .not_accepted()
                .map_or_else(|| attach(input, &services, &service, parent), Err);
            let conditions = rules.parent_conditions(&accepted, generation);
            if accepted.is_ok() {
                attachments.push(Attachment {
                    consumer: (service.namespace != key.namespace).then(|| key.namespace.clone()),
                    service: service.clone(),
                    port: parent.port.and_then(|p| u16::try_from(p).ok()),
                    rules,
                });
            }
            parents.push(RouteParentStatus {
                parent_ref: parent.clone(),
                controller_name: MESH_CONTROLLER_NAME.to_string(),
                conditions,
            });
        }
        status
            .http_routes
            .entry(key.clone())
            .or_insert_with(|| RouteStatus {
                parents: Vec::new(),
            })
            .parents
            .extend(parents);
    }
    let mesh = sidecars(input, backends, security, &services, &attachments);
    for (key, class) in &mesh.pods {
        let pod = &input.pods[key];
        let ips = pod_ips(pod);
        let problem = ips.is_empty().then(|| {
            "status.podIP is empty: the pod has no IP yet, so no Service sends it traffic \
             (its sidecar is configured all the same)"
                .to_string()
        });
        let secured = security.and_then(|s| s.pods.get(key));
        status.sidecars.insert(
            key.clone(),
            SidecarStatus {
                class: class.clone(),
                ips,
                ready: pod_ready(pod),
                problem,
                identity: secured.map(|p| p.identity.clone()),
                mtls: secured.map(|p| p.mtls.clone()),
            },
        );
    }
    mesh
}

fn is_service_parent(p: &ParentReference) -> bool {
    (p.group.is_empty() || p.group == "core") && p.kind == "Service"
}

fn parent_key(route: &ObjectKey, parent: &ParentReference) -> ObjectKey {
    ObjectKey::new(
        parent
            .namespace
            .clone()
            .unwrap_or_else(|| route.namespace.clone()),
        parent.name.clone(),
    )
}

/// Every Service of a meshed namespace that has a ClusterIP, with its TCP ports.
fn mesh_services<'a>(
    input: &'a InputSet,
    backends: &Backends<'a>,
) -> BTreeMap<ObjectKey, MeshService<'a>> {
    input
        .services
        .iter()
        .filter(|(key, _)| namespace_in_mesh(input, &key.namespace))
        .filter_map(|(key, service)| {
            let address = cluster_ip(service)?;
            let ports = service
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p, port_protocol(p)?)))
                .filter(|(p, _)| u16::try_from(p.port).is_ok_and(|p| p > 0))
                .collect();
            Some((
                key.clone(),
                MeshService {
                    address,
                    service,
                    pods: backends.endpoint_pods(key),
                    ports,
                },
            ))
        })
        .collect()
}

/// Whether a route may attach to a Service parent; why not otherwise.
fn attach(
    input: &InputSet,
    services: &BTreeMap<ObjectKey, MeshService<'_>>,
    service: &ObjectKey,
    parent: &ParentReference,
) -> Result<(), Problem> {
    let Some(s) = input.services.get(service) else {
        return Err(Problem::not_accepted(
            Reason::NoMatchingParent,
            format!("Service {service} not found"),
        ));
    };
    if !namespace_in_mesh(input, &service.namespace) {
        return Err(Problem::not_accepted(
            Reason::NoMatchingParent,
            format!(
                "namespace {} is not in the mesh: label it {}={}",
                service.namespace,
                trellis_model::mesh::MESH_LABEL,
                trellis_model::mesh::MESH_ENABLED
            ),
        ));
    }
    let Some(mesh) = services.get(service) else {
        let spec = s.spec.as_ref();
        let kind = spec.and_then(|s| s.type_.as_deref()).unwrap_or_default();
        let cluster_ip = spec
            .and_then(|s| s.cluster_ip.as_deref())
            .unwrap_or_default();
        let why = if kind == "ExternalName" {
            " (it is an ExternalName Service)"
        } else if cluster_ip == "None" {
            " (it is headless: spec.clusterIP is None)"
        } else {
            " (spec.clusterIP is empty)"
        };
        return Err(Problem::not_accepted(
            Reason::UnsupportedValue,
            format!(
                "Service {service} has no ClusterIP{why}: mesh routes apply to connections to \
                 a Service's ClusterIP"
            ),
        ));
    };
    let http: Vec<u16> = mesh
        .ports
        .iter()
        .filter(|(_, protocol)| protocol.is_http())
        .filter_map(|(p, _)| u16::try_from(p.port).ok())
        .collect();
    match parent.port {
        Some(port) if !mesh.ports.iter().any(|(p, _)| p.port == port) => {
            Err(Problem::not_accepted(
                Reason::NoMatchingParent,
                format!("Service {service} has no port {port}"),
            ))
        }
        Some(port) if !http.iter().any(|p| i32::from(*p) == port) => Err(Problem::not_accepted(
            Reason::UnsupportedValue,
            format!(
                "port {port} of Service {service} does not speak HTTP: set its appProtocol \
                     to http or kubernetes.io/h2c (or name it http-…) for HTTPRoutes to apply"
            ),
        )),
        None if http.is_empty() => Err(Problem::not_accepted(
            Reason::UnsupportedValue,
            format!(
                "Service {service} has no HTTP port: set a port's appProtocol to http or \
                 kubernetes.io/h2c (or name it http-…) for HTTPRoutes to apply"
            ),
        )),
        _ => Ok(()),
    }
}

/// Every sidecar class, and the class of every pod in the mesh.
fn sidecars(
    input: &InputSet,
    backends: &Backends<'_>,
    security: Option<&Security>,
    services: &BTreeMap<ObjectKey, MeshService<'_>>,
    attachments: &[Attachment<'_>],
) -> Mesh {
    let mut out = Mesh::default();
    let mut outbound: BTreeMap<String, SidecarIr> = BTreeMap::new();
    for (key, pod) in &input.pods {
        if !pod_in_mesh(input, pod) {
            continue;
        }
        let (inbound, inbound_services) = inbound_ports(pod, &key.namespace, services);
        let mtls = security
            .and_then(|s| s.pods.get(key))
            .map(|p| p.mtls.clone());
        let class = class_key(&key.namespace, &inbound, &inbound_services, mtls.as_ref());
        out.pods.insert(key.clone(), class.clone());
        if out.sidecars.contains_key(&class) {
            continue;
        }
        let base = outbound.entry(key.namespace.clone()).or_insert_with(|| {
            let scope = egress_namespaces(input, &key.namespace);
            let mut sidecar = outbound_for(
                &key.namespace,
                backends,
                services,
                attachments,
                scope.as_ref(),
            );
            if outbound_registry_only(input, &key.namespace) {
                sidecar.unknown_destinations = UnknownDestinations::Block;
            }
            if let Some(security) = security {
                for cluster in sidecar.clusters.values_mut() {
                    mark_mtls_endpoints(cluster, security);
                }
                // With identities, each request is logged with its peers (and why TLS failed).
                for listener in &mut sidecar.outbound {
                    listener.access_log = true;
                }
            }
            sidecar
        });
        let mut sidecar = base.clone();
        sidecar.inbound = inbound;
        sidecar.inbound_services = inbound_services;
        sidecar.mtls = mtls;
        out.sidecars.insert(class, sidecar);
    }
    out
}

/// Marks the endpoints whose sidecars take mutual TLS on their port, and gathers the
/// identities they may present.
pub(crate) fn mark_mtls_endpoints(cluster: &mut ClusterIr, security: &Security) {
    let mut identities = BTreeSet::new();
    for e in &mut cluster.endpoints {
        if let Some(identity) = security.mtls_peer(&e.address, e.port) {
            e.mtls = true;
            identities.insert(identity.to_string());
        }
    }
    cluster.peer_identities = identities.into_iter().collect();
}

/// The snapshot key of a class: the namespace and a digest of its inbound ports (the Services
/// reaching them, and their mutual-TLS modes), so the replicas of a workload (and any pods alike) share one
/// configuration.
fn class_key(
    namespace: &str,
    inbound: &[InboundPortIr],
    services: &BTreeMap<ObjectKey, Vec<u16>>,
    mtls: Option<&InboundMtlsIr>,
) -> String {
    let mut hasher = Sha256::new();
    for p in inbound {
        hasher.update(format!("{}/{};", p.port, p.http2));
    }
    // Policies may target a Service: pods reached by different Services differ.
    for (service, ports) in services {
        hasher.update(format!("svc {service} {ports:?};"));
    }
    if let Some(m) = mtls {
        hasher.update(format!("mtls {};", m.mode.as_str()));
        for (port, mode) in &m.ports {
            hasher.update(format!("{port}/{};", mode.as_str()));
        }
    }
    let digest = hex::encode(hasher.finalize());
    format!("sidecar/{namespace}/{}", &digest[..12])
}

/// The pod's ports that speak HTTP: the target ports of the HTTP ports of the mesh Services
/// that select it.
/// The pod's HTTP ports, and the Services that reach each.
type Inbound = (Vec<InboundPortIr>, BTreeMap<ObjectKey, Vec<u16>>);

fn inbound_ports(
    pod: &Pod,
    namespace: &str,
    services: &BTreeMap<ObjectKey, MeshService<'_>>,
) -> Inbound {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let mut ports = BTreeSet::new();
    let mut by_service: BTreeMap<ObjectKey, Vec<u16>> = BTreeMap::new();
    for (key, s) in services.range(ObjectKey::new(namespace, "")..) {
        if key.namespace != namespace {
            break;
        }
        let selector = s
            .service
            .spec
            .as_ref()
            .and_then(|spec| spec.selector.clone())
            .unwrap_or_default();
        let selected =
            !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v));
        let named = pod
            .metadata
            .name
            .as_deref()
            .is_some_and(|name| s.pods.contains(name));
        if !selected && !named {
            continue;
        }
        for (port, protocol) in &s.ports {
            if !protocol.is_http() {
                continue;
            }
            if let Some(target) = target_port(pod, port) {
                ports.insert(InboundPortIr {
                    port: target,
                    http2: *protocol == PortProtocol::Http2,
                });
                let reached = by_service.entry(key.clone()).or_default();
                if !reached.contains(&target) {
                    reached.push(target);
                    reached.sort_unstable();
                }
            }
        }
    }
    (ports.into_iter().collect(), by_service)
}

/// The container port a Service port sends to on this pod: `targetPort` as a number, or the
/// container port of that name, or the Service port itself.
fn target_port(pod: &Pod, port: &ServicePort) -> Option<u16> {
    use trellis_model::core::IntOrString;
    let number = match &port.target_port {
        None => port.port,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(name)) => {
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name))?
                .container_port
        }
    };
    u16::try_from(number).ok().filter(|p| *p > 0)
}

/// What every sidecar of a namespace sends where: a listener per Service port of the mesh (of
/// the namespaces in `scope`, when it is limited), the routes of its HTTP ports as this
/// namespace's clients see them, and the clusters.
fn outbound_for(
    namespace: &str,
    backends: &Backends<'_>,
    services: &BTreeMap<ObjectKey, MeshService<'_>>,
    attachments: &[Attachment<'_>],
    scope: Option<&BTreeSet<String>>,
) -> SidecarIr {
    let mut sidecar = SidecarIr {
        namespace: namespace.to_string(),
        unknown_destinations: UnknownDestinations::PassThrough,
        ..Default::default()
    };
    for (key, s) in services {
        if scope.is_some_and(|scope| !scope.contains(&key.namespace)) {
            continue;
        }
        for (port, protocol) in &s.ports {
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let own = backends.service_port_cluster(key, number, *protocol);
            let mut listener = ServiceListenerIr {
                service: key.clone(),
                address: s.address.clone(),
                port: number,
                route_config: None,
                cluster: None,
                access_log: false,
                tracing: None,
                faults: false,
            };
            if protocol.is_http() {
                let (name, routes, clusters) =
                    routes_for(namespace, key, number, own.as_ref(), attachments);
                for c in clusters {
                    sidecar.clusters.entry(c.name.clone()).or_insert(c);
                }
                sidecar.route_configs.entry(name.clone()).or_insert(routes);
                listener.route_config = Some(name);
            } else {
                listener.cluster = own.as_ref().map(|c| c.name.clone());
            }
            if let Some(c) = own {
                sidecar.clusters.entry(c.name.clone()).or_insert(c);
            }
            sidecar.outbound.push(listener);
        }
    }
    sidecar
}

/// The routes of one HTTP Service port for the clients of `client`: the name of their route
/// configuration (shared by every namespace without consumer routes), the routes, and the
/// clusters they send to.
fn routes_for(
    client: &str,
    service: &ObjectKey,
    port: u16,
    own: Option<&ClusterIr>,
    attachments: &[Attachment<'_>],
) -> (String, MeshRoutesIr, Vec<ClusterIr>) {
    let applies = |a: &&Attachment<'_>| &a.service == service && a.port.is_none_or(|p| p == port);
    let consumer: Vec<&Attachment<'_>> = attachments
        .iter()
        .filter(applies)
        .filter(|a| a.consumer.as_deref() == Some(client))
        .collect();
    let (name, chosen) = if consumer.is_empty() {
        (
            format!("mesh/{}/{}/{port}", service.namespace, service.name),
            attachments
                .iter()
                .filter(applies)
                .filter(|a| a.consumer.is_none())
                .collect(),
        )
    } else {
        (
            format!(
                "mesh/{client}/{}/{}/{port}",
                service.namespace, service.name
            ),
            consumer,
        )
    };
    if chosen.is_empty() {
        return (name, default_routes(service, port, own), Vec::new());
    }
    let mut entries: Vec<Entry> = chosen
        .iter()
        .flat_map(|a| a.rules.entries_for(Scheme::Http, i32::from(port)))
        .collect();
    entries.sort_by(|a, b| a.precedence.cmp(&b.precedence));
    let clusters = entries.iter().flat_map(|e| e.clusters.clone()).collect();
    let routes = entries.into_iter().map(|e| e.route).collect();
    (name, MeshRoutesIr { routes }, clusters)
}

/// Without an attached route: every request to the Service port goes to the Service.
fn default_routes(service: &ObjectKey, port: u16, own: Option<&ClusterIr>) -> MeshRoutesIr {
    MeshRoutesIr {
        routes: vec![RouteIr {
            origin: RouteOrigin::ServiceDefault {
                service: service.clone(),
                port,
            },
            matcher: MatchIr {
                path: PathMatchIr::Prefix("/".to_string()),
                headers: Vec::new(),
                query_params: Vec::new(),
                method: None,
            },
            request_headers: HeaderModIr::default(),
            response_headers: HeaderModIr::default(),
            action: ActionIr::Forward(ForwardIr {
                backends: vec![BackendIr {
                    cluster: own.map(|c| c.name.clone()),
                    weight: 1,
                    request_headers: HeaderModIr::default(),
                    response_headers: HeaderModIr::default(),
                }],
                rewrite: None,
                mirrors: Vec::new(),
                timeout: None,
                backend_timeout: None,
                retry: None,
            }),
            cors: None,
            enabled_filters: Vec::new(),
            tracing: None,
            fault: None,
        }],
    }
}
