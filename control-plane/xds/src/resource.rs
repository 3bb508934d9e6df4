//! xDS resources as the cache holds them: encoded once, versioned by content, shared by every
//! proxy that receives them.

use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

/// The resource types Trellis serves, in the order a change is pushed: clusters and their
/// endpoints first, then secrets, listeners, and routes last (Envoy's make-before-break order).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum ResourceType {
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    Endpoint,
    /// SDS: `envoy.extensions.transport_sockets.tls.v3.Secret`.
    Secret,
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    Route,
}

impl ResourceType {
    /// Every type, in push order.
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Secret,
        ResourceType::Listener,
        ResourceType::Route,
    ];

    /// The position of the type in [`ResourceType::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The type URL Envoy uses for this type.
    pub fn type_url(self) -> String {
        self.type_url_str().to_string()
    }

    /// The type URL Envoy uses for this type, without allocating (every request names one).
    pub fn type_url_str(self) -> &'static str {
        match self {
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    /// The type for a type URL, if Trellis serves it.
    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        ResourceType::ALL
            .into_iter()
            .find(|t| t.type_url_str() == url)
    }

    /// Whether a state-of-the-world response must carry every resource of the type (LDS, CDS):
    /// a resource left out of such a response is deleted by the client.
    pub fn sotw_full_state(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }

    /// Short name used in logs, metrics and `trellis proxy-status` (`CDS`, `EDS`, ...).
    pub fn short_name(self) -> &'static str {
        match self {
            ResourceType::Cluster => "CDS",
            ResourceType::Endpoint => "EDS",
            ResourceType::Secret => "SDS",
            ResourceType::Listener => "LDS",
            ResourceType::Route => "RDS",
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// A resource this one needs at the client before it may be sent.
///
/// Only dependencies Envoy does not wait for by itself are declared: a route configuration
/// applies at once, so the clusters (and their endpoints) it sends traffic to must be in place
/// first, or requests fail while they warm. Listeners and clusters warm on their own.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dependency {
    /// The type of the needed resource.
    pub resource_type: ResourceType,
    /// Its name.
    pub name: String,
}

/// One encoded, versioned resource.
#[derive(Clone, PartialEq)]
pub struct Resource {
    /// The resource name (derived from Kubernetes identity, e.g. `service/default/echo/8080`),
    /// shared by every map that names the resource (snapshots, what each stream's client
    /// holds) instead of copied into each.
    pub name: Arc<str>,
    /// Content version: a hash of the encoded body.
    pub version: String,
    /// The packed message.
    pub body: Any,
    /// Resources that must be at the client first.
    pub dependencies: Vec<Dependency>,
    /// Resources the client asks for once it holds this one: the route configurations a
    /// listener's HTTP connection managers load over RDS, the endpoints of an EDS cluster.
    /// Until the client holds them, this resource is not in force (Envoy keeps such a listener
    /// or cluster warming), so their type is not in sync.
    pub references: Vec<Dependency>,
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resource")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("type_url", &self.body.type_url)
            .field("bytes", &self.body.value.len())
            .field("dependencies", &self.dependencies)
            .finish()
    }
}

impl Resource {
    /// Encodes a message as a resource named `name`, versioned by its content.
    pub fn new<M: Message + Name>(name: impl Into<String>, message: &M) -> Arc<Resource> {
        Self::with_dependencies(name, message, Vec::new())
    }

    /// Like [`Resource::new`], with dependencies that must reach the client first.
    pub fn with_dependencies<M: Message + Name>(
        name: impl Into<String>,
        message: &M,
        mut dependencies: Vec<Dependency>,
    ) -> Arc<Resource> {
        let value = message.encode_to_vec();
        dependencies.sort();
        dependencies.dedup();
        let name: Arc<str> = Arc::from(name.into());
        let references = references(&M::type_url(), &name, &value);
        Arc::new(Resource {
            name,
            version: content_hash([value.as_slice()]),
            references,
            body: Any {
                type_url: M::type_url(),
                value,
            },
            dependencies,
        })
    }

    /// A resource of message type `M` from bytes already encoded (for an encoding of one's own,
    /// such as one with its maps in a stable order), versioned by those bytes.
    pub fn from_encoded<M: Name>(
        name: impl Into<String>,
        value: Vec<u8>,
        mut dependencies: Vec<Dependency>,
    ) -> Arc<Resource> {
        dependencies.sort();
        dependencies.dedup();
        let name: Arc<str> = Arc::from(name.into());
        let references = references(&M::type_url(), &name, &value);
        Arc::new(Resource {
            name,
            version: content_hash([value.as_slice()]),
            references,
            body: Any {
                type_url: M::type_url(),
                value,
            },
            dependencies,
        })
    }

    /// The resource type, from the body's type URL.
    pub fn resource_type(&self) -> Option<ResourceType> {
        ResourceType::from_type_url(&self.body.type_url)
    }
}

/// What a client asks for once it holds the resource `name` of `type_url` encoded as `value`
/// (see [`Resource::references`]). Bodies that do not decode refer to nothing.
fn references(type_url: &str, name: &str, value: &[u8]) -> Vec<Dependency> {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, DiscoveryType,
    };
    use envoy_types::pb::envoy::config::listener::v3::{Listener, filter::ConfigType};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier,
    };
    let mut out = Vec::new();
    match ResourceType::from_type_url(type_url) {
        Some(ResourceType::Listener) => {
            let Ok(listener) = Listener::decode(value) else {
                return out;
            };
            let chains = listener
                .filter_chains
                .iter()
                .chain(listener.default_filter_chain.as_ref());
            for filter in chains.flat_map(|c| &c.filters) {
                let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
                    continue;
                };
                if any.type_url != HttpConnectionManager::type_url() {
                    continue;
                }
                if let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice())
                    && let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier
                {
                    out.push(Dependency {
                        resource_type: ResourceType::Route,
                        name: rds.route_config_name,
                    });
                }
            }
        }
        Some(ResourceType::Cluster) => {
            let Ok(cluster) = Cluster::decode(value) else {
                return out;
            };
            let eds = matches!(
                cluster.cluster_discovery_type,
                Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32
            );
            if eds {
                let service = cluster
                    .eds_cluster_config
                    .map(|c| c.service_name)
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| name.to_string());
                out.push(Dependency {
                    resource_type: ResourceType::Endpoint,
                    name: service,
                });
            }
        }
        _ => {}
    }
    out.sort();
    out.dedup();
    out
}

/// A version over a set of named versions (names in order): equal sets, equal versions. Used
/// for a snapshot type's resources, a SotW response's set and what a SotW client holds, which
/// must agree with one another.
pub fn named_versions_hash<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut parts: Vec<&[u8]> = Vec::new();
    for (name, version) in entries {
        parts.push(name.as_bytes());
        parts.push(version.as_bytes());
    }
    content_hash(parts)
}

/// A short hex digest of the given parts (16 hex digits of SHA-256).
pub fn content_hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(&hasher.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;

    #[test]
    fn type_urls_are_the_messages_type_urls() {
        let expected = [
            Cluster::type_url(),
            ClusterLoadAssignment::type_url(),
            Secret::type_url(),
            Listener::type_url(),
            RouteConfiguration::type_url(),
        ];
        for (t, url) in ResourceType::ALL.into_iter().zip(expected) {
            assert_eq!(t.type_url(), url);
            assert_eq!(ResourceType::from_type_url(&url), Some(t));
        }
        assert_eq!(
            ResourceType::from_type_url("type.googleapis.com/other"),
            None
        );
    }
}
