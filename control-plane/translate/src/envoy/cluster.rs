//! Clusters (EDS, or static for the module server) and their load assignments.

use super::*;
use crate::ir::{ClusterIr, EndpointIr, UpstreamProtocol};
use crate::policy::MODULE_CLUSTER;
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{Http1ProtocolOptions, Http2ProtocolOptions};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::util::pack_any;

/// The static cluster of the control plane's module server, from which proxies fetch Wasm
/// modules (`GET /wasm/<sha256>`).
pub fn module_cluster(server: &EndpointIr) -> Cluster {
    // An address is used as it is; a name (the control plane's Service) is resolved by Envoy.
    let discovery = if server.address.parse::<std::net::IpAddr>().is_ok() {
        cluster::DiscoveryType::Static
    } else {
        cluster::DiscoveryType::LogicalDns
    };
    Cluster {
        name: MODULE_CLUSTER.to_string(),
        alt_stat_name: MODULE_CLUSTER.replace('/', "_"),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(discovery as i32)),
        connect_timeout: Some(duration_ms(5_000)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: MODULE_CLUSTER.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(&server.address, server.port)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An EDS cluster for a Service port.
pub fn cluster(c: &ClusterIr) -> Cluster {
    let protocol = match c.protocol {
        UpstreamProtocol::Http1 => {
            http_protocol_options::explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                Http1ProtocolOptions::default(),
            )
        }
        UpstreamProtocol::H2c => {
            http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                Http2ProtocolOptions::default(),
            )
        }
    };
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(protocol),
                },
            ),
        ),
        ..Default::default()
    };
    Cluster {
        name: c.name.clone(),
        alt_stat_name: c.name.replace('/', "_"),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        connect_timeout: Some(duration_ms(5_000)),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            pack_any(options),
        )]
        .into(),
        circuit_breakers: c
            .circuit_breaker
            .as_ref()
            .map(super::resilience::circuit_breakers),
        outlier_detection: c
            .outlier_detection
            .as_ref()
            .map(super::resilience::outlier_detection),
        // Meshed endpoints get mutual TLS (verified against the Service's identities); the
        // rest plaintext.
        transport_socket_matches: if c.peer_identities.is_empty() {
            Vec::new()
        } else {
            vec![cluster::TransportSocketMatch {
                name: super::mtls::mesh_match_name().to_string(),
                r#match: Some(super::mtls::mesh_match_criteria()),
                transport_socket: Some(super::mtls::upstream_mtls(&c.peer_identities)),
            }]
        },
        ..Default::default()
    }
}

/// The endpoints of a cluster.
pub fn load_assignment(c: &ClusterIr) -> ClusterLoadAssignment {
    assignment(&c.name, &c.endpoints)
}

/// A load assignment of `endpoints` (meshed ones marked for mutual TLS).
pub(super) fn assignment(cluster: &str, endpoints: &[EndpointIr]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints
                .iter()
                .map(|e| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(&e.address, e.port)),
                        ..Default::default()
                    })),
                    metadata: e.mtls.then(super::mtls::mesh_endpoint_metadata),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}
