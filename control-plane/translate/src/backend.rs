//! Backend resolution: a backendRef to a Service port, checked against ReferenceGrants, turned
//! into a cluster with the endpoints the Service's EndpointSlices list.

use crate::conditions::{Problem, Reason};
use crate::ir::{ClusterIr, EndpointIr, UpstreamProtocol};
use std::collections::{BTreeMap, BTreeSet};
use trellis_model::core::{EndpointSlice, Service};
use trellis_model::gateway::GROUP;
use trellis_model::mesh::{PortProtocol, port_protocol};
use trellis_model::{InputSet, ObjectKey};

/// A reference to a backend, as written in a route.
#[derive(Clone, Copy, Debug)]
pub struct BackendRef<'a> {
    /// Group ("" for core).
    pub group: &'a str,
    /// Kind.
    pub kind: &'a str,
    /// Name.
    pub name: &'a str,
    /// Namespace; the route's when `None`.
    pub namespace: Option<&'a str>,
    /// Port.
    pub port: Option<i32>,
}

/// Who is referring: the route's group, kind and namespace.
#[derive(Clone, Copy, Debug)]
pub struct Referrer<'a> {
    /// Group of the referring object.
    pub group: &'a str,
    /// Kind of the referring object.
    pub kind: &'a str,
    /// Namespace of the referring object.
    pub namespace: &'a str,
    /// Whether a reference to another namespace needs a ReferenceGrant there (not for the
    /// backends of mesh routes: GEP-1294).
    pub needs_grant: bool,
}

/// Resolves backends against one input set, with an index of EndpointSlices by Service.
pub struct Backends<'a> {
    input: &'a InputSet,
    slices: BTreeMap<ObjectKey, Vec<&'a EndpointSlice>>,
}

impl<'a> Backends<'a> {
    /// Indexes the input's EndpointSlices by the Service they belong to.
    pub fn new(input: &'a InputSet) -> Self {
        let mut slices: BTreeMap<ObjectKey, Vec<&EndpointSlice>> = BTreeMap::new();
        for (key, slice) in &input.endpoint_slices {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"));
            if let Some(service) = service {
                slices
                    .entry(ObjectKey::new(key.namespace.clone(), service.clone()))
                    .or_default()
                    .push(slice);
            }
        }
        Self { input, slices }
    }

    /// Whether a ReferenceGrant in `to_namespace` lets `from` refer to the named object.
    pub fn reference_allowed(
        &self,
        from: Referrer<'_>,
        to_group: &str,
        to_kind: &str,
        to_namespace: &str,
        to_name: &str,
    ) -> bool {
        if from.namespace == to_namespace || !from.needs_grant {
            return true;
        }
        self.input
            .reference_grants
            .range(ObjectKey::new(to_namespace, "")..)
            .take_while(|(k, _)| k.namespace == to_namespace)
            .any(|(_, grant)| {
                let from_ok = grant.spec.from.iter().any(|f| {
                    f.group == from.group && f.kind == from.kind && f.namespace == from.namespace
                });
                let to_ok = grant.spec.to.iter().any(|t| {
                    t.group == to_group
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n == to_name)
                });
                from_ok && to_ok
            })
    }

    /// Resolves a backendRef to a cluster.
    pub fn resolve(
        &self,
        from: Referrer<'_>,
        backend: BackendRef<'_>,
    ) -> Result<ClusterIr, Problem> {
        let namespace = backend.namespace.unwrap_or(from.namespace);
        let display = format!("{}/{}", namespace, backend.name);
        let is_service =
            (backend.group.is_empty() || backend.group == "core") && backend.kind == "Service";
        if !is_service {
            let group = if backend.group.is_empty() {
                "core"
            } else {
                backend.group
            };
            return Err(Problem::unresolved(
                Reason::InvalidKind,
                format!(
                    "backendRef {display}: kind {} in group {group} is not supported; only core Services are",
                    backend.kind
                ),
            ));
        }
        if !self.reference_allowed(from, "", "Service", namespace, backend.name) {
            return Err(Problem::unresolved(
                Reason::RefNotPermitted,
                format!(
                    "backendRef to Service {display} in another namespace is not permitted by any \
                     ReferenceGrant in {namespace}"
                ),
            ));
        }
        let key = ObjectKey::new(namespace, backend.name);
        let Some(service) = self.input.services.get(&key) else {
            return Err(Problem::unresolved(
                Reason::BackendNotFound,
                format!("Service {display} not found"),
            ));
        };
        let Some(port) = backend.port else {
            return Err(Problem::unresolved(
                Reason::BackendNotFound,
                format!("backendRef to Service {display} needs a port"),
            ));
        };
        let spec = service.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            return Err(Problem::unresolved(
                Reason::InvalidKind,
                format!("Service {display} is of type ExternalName, which is not supported"),
            ));
        }
        let service_port = spec
            .and_then(|s| s.ports.as_ref())
            .and_then(|ports| ports.iter().find(|p| p.port == port));
        let Some(service_port) = service_port else {
            return Err(Problem::unresolved(
                Reason::BackendNotFound,
                format!("Service {display} has no port {port}"),
            ));
        };
        let protocol = match service_port.app_protocol.as_deref() {
            // Without appProtocol, the port's name says (`grpc-*`, `http2-*`, `h2c-*`: HTTP/2),
            // as the mesh reads it.
            None => match port_protocol(service_port) {
                Some(PortProtocol::Http2) => UpstreamProtocol::H2c,
                _ => UpstreamProtocol::Http1,
            },
            Some("http") | Some("HTTP") | Some("kubernetes.io/ws") => UpstreamProtocol::Http1,
            Some("kubernetes.io/h2c") | Some("h2c") | Some("http2") | Some("grpc") => {
                UpstreamProtocol::H2c
            }
            Some(other) => {
                return Err(Problem::unresolved(
                    Reason::UnsupportedProtocol,
                    format!(
                        "Service {display} port {port} has appProtocol {other:?}, which HTTPRoute \
                         backends do not support"
                    ),
                ));
            }
        };
        Ok(ClusterIr {
            name: cluster_name(&key, port),
            protocol,
            endpoints: self.endpoints(&key, service, service_port),
            peer_identities: Vec::new(),
            circuit_breaker: None,
            outlier_detection: None,
        })
    }

    /// The cluster of a Service port as the mesh's outbound listeners use it: any TCP port,
    /// whatever its `appProtocol` (a TCP port's connections are proxied as they are), HTTP/2
    /// upstream when the port speaks it. `None` when the Service or the port does not exist.
    pub fn service_port_cluster(
        &self,
        key: &ObjectKey,
        port: u16,
        protocol: PortProtocol,
    ) -> Option<ClusterIr> {
        let service = self.input.services.get(key)?;
        let service_port = service
            .spec
            .as_ref()?
            .ports
            .as_ref()?
            .iter()
            .find(|p| p.port == i32::from(port))?;
        Some(ClusterIr {
            name: cluster_name(key, i32::from(port)),
            protocol: match protocol {
                PortProtocol::Http2 => UpstreamProtocol::H2c,
                PortProtocol::Http | PortProtocol::Tcp => UpstreamProtocol::Http1,
            },
            endpoints: self.endpoints(key, service, service_port),
            peer_identities: Vec::new(),
            circuit_breaker: None,
            outlier_detection: None,
        })
    }

    /// The pods (names, in the Service's namespace) that the Service's EndpointSlices name by
    /// `targetRef`: how a Service without a selector reaches its pods.
    pub fn endpoint_pods(&self, key: &ObjectKey) -> BTreeSet<&'a str> {
        self.slices
            .get(key)
            .into_iter()
            .flatten()
            .flat_map(|slice| &slice.endpoints)
            .filter_map(|e| e.target_ref.as_ref())
            .filter(|t| {
                t.kind.as_deref() == Some("Pod")
                    && t.namespace.as_deref().is_none_or(|ns| ns == key.namespace)
            })
            .filter_map(|t| t.name.as_deref())
            .collect()
    }

    /// The ready endpoints of a Service port, from its EndpointSlices.
    fn endpoints(
        &self,
        key: &ObjectKey,
        _service: &Service,
        service_port: &trellis_model::core::ServicePort,
    ) -> Vec<EndpointIr> {
        let mut out = Vec::new();
        for slice in self.slices.get(key).into_iter().flatten() {
            if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
                continue;
            }
            // The slice port carrying the Service port's name (unnamed when the Service has a
            // single unnamed port).
            let wanted = service_port.name.as_deref().unwrap_or("");
            let Some(port) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or("") == wanted)
                .and_then(|p| p.port)
            else {
                continue;
            };
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready {
                    continue;
                }
                // Addresses of one endpoint are fungible: use the first. One that is not an IP
                // address (the API server would have refused it; a file may hold anything) is
                // left out rather than sent for Envoy to refuse.
                if let Some(address) = endpoint.addresses.first()
                    && let Ok(ip) = address.parse::<std::net::IpAddr>()
                {
                    out.push(EndpointIr {
                        address: ip.to_string(),
                        port,
                        mtls: false,
                    });
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The cluster name of a Service port: `service/<ns>/<name>/<port>`.
pub fn cluster_name(service: &ObjectKey, port: i32) -> String {
    format!("service/{}/{}/{}", service.namespace, service.name, port)
}

/// The referrer for HTTPRoutes in a namespace.
pub fn http_route_referrer(namespace: &str) -> Referrer<'_> {
    Referrer {
        group: GROUP,
        kind: "HTTPRoute",
        namespace,
        needs_grant: true,
    }
}

/// The referrer for an HTTPRoute's backends when its parent is a Service (a mesh route): its
/// backends in other namespaces need no ReferenceGrant (GEP-1294).
pub fn mesh_route_referrer(namespace: &str) -> Referrer<'_> {
    Referrer {
        needs_grant: false,
        ..http_route_referrer(namespace)
    }
}
