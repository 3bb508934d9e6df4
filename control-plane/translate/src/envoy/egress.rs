//! A sidecar's egress listeners and external clusters (ExternalService): one listener per
//! declared port at `0.0.0.0:<port>` (not bound: the outbound listener hands it connections to
//! that port at addresses that are no Service's), routing declared hosts to their clusters and
//! every other host where unknown destinations go (passthrough, or blackhole when blocked).
//!
//! ```text
//!  egress/<port>  HTTP: connection manager, virtual host per declared host ─► external/…
//!                       any other Host ─► passthrough | blackhole
//!                 TLS:  tls_inspector, filter chain per SNI ─► external/… (tcp_proxy)
//!                       any other SNI ─► passthrough | blackhole
//!  external/<ns>/<name>/<port>: STATIC (addresses) or STRICT_DNS (names); TLS originated
//!                       with SNI and the server's DNS name verified
//! ```

use super::*;
use crate::ir::{EgressListenerIr, EgressProtocol, ExternalClusterIr};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    TrafficDirection, TransportSocket, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, UpstreamTlsContext,
    common_tls_context, subject_alt_name_matcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;

/// Where proxies find the system's CA bundle (Debian's and Envoy's images' path).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `egress/<port>`.
pub fn egress_listener_name(l: &EgressListenerIr) -> String {
    format!("egress/{}", l.port)
}

fn tcp_filter(stat_prefix: &str, cluster: &str) -> Filter {
    Filter {
        name: "envoy.filters.network.tcp_proxy".to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(TcpProxy {
            stat_prefix: stat_prefix.replace('/', "_"),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_string())),
            ..Default::default()
        }))),
    }
}

fn route_to(cluster: &str) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_string())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_string())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The listener of one egress port; `unknown` is where other hosts go.
pub fn egress_listener(l: &EgressListenerIr, unknown: &str) -> Listener {
    let name = egress_listener_name(l);
    let stat_prefix = name.replace('/', "_");
    let (filter_chains, default_filter_chain, listener_filters) = match l.protocol {
        EgressProtocol::Http => {
            let mut virtual_hosts: Vec<VirtualHost> = l
                .hosts
                .iter()
                .map(|h| VirtualHost {
                    name: h.host.clone(),
                    domains: vec![h.host.clone(), format!("{}:{}", h.host, l.port)],
                    routes: vec![route_to(&h.cluster)],
                    ..Default::default()
                })
                .collect();
            virtual_hosts.push(VirtualHost {
                name: "undeclared".to_string(),
                domains: vec!["*".to_string()],
                routes: vec![route_to(unknown)],
                ..Default::default()
            });
            let hcm = HttpConnectionManager {
                stat_prefix: stat_prefix.clone(),
                codec_type: http_connection_manager::CodecType::Auto as i32,
                route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
                    RouteConfiguration {
                        name: name.clone(),
                        virtual_hosts,
                        validate_clusters: Some(BoolValue { value: false }),
                        ..Default::default()
                    },
                )),
                http_filters: vec![HttpFilter {
                    name: "envoy.filters.http.router".to_string(),
                    config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                        Router::default(),
                    ))),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let chain = FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".to_string(),
                    config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
                }],
                ..Default::default()
            };
            (vec![chain], None, Vec::new())
        }
        EgressProtocol::Tls => {
            let chains = l
                .hosts
                .iter()
                .map(|h| FilterChain {
                    name: h.host.clone(),
                    filter_chain_match: Some(FilterChainMatch {
                        server_names: vec![h.host.clone()],
                        ..Default::default()
                    }),
                    filters: vec![tcp_filter(&h.cluster, &h.cluster)],
                    ..Default::default()
                })
                .collect();
            let default = FilterChain {
                name: "undeclared".to_string(),
                filters: vec![tcp_filter(&format!("{stat_prefix}_undeclared"), unknown)],
                ..Default::default()
            };
            let inspector = ListenerFilter {
                name: "envoy.filters.listener.tls_inspector".to_string(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
                    TlsInspector::default(),
                ))),
                ..Default::default()
            };
            (chains, Some(default), vec![inspector])
        }
    };
    Listener {
        name,
        address: Some(socket("0.0.0.0", l.port)),
        bind_to_port: Some(BoolValue { value: false }),
        traffic_direction: TrafficDirection::Outbound as i32,
        listener_filters,
        filter_chains,
        default_filter_chain,
        ..Default::default()
    }
}

/// An external service's cluster.
pub fn external_cluster(c: &ExternalClusterIr) -> Cluster {
    let by_address = c
        .endpoints
        .iter()
        .all(|e| e.address.parse::<std::net::IpAddr>().is_ok());
    let discovery = if by_address {
        cluster::DiscoveryType::Static
    } else {
        cluster::DiscoveryType::StrictDns
    };
    let transport_socket = c.tls.as_ref().map(|tls| {
        let trusted_ca = match &tls.ca_pem {
            Some(pem) => inline_bytes(pem),
            None => DataSource {
                specifier: Some(data_source::Specifier::Filename(
                    SYSTEM_CA_BUNDLE.to_string(),
                )),
                ..Default::default()
            },
        };
        TransportSocket {
            name: "envoy.transport_sockets.tls".to_string(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
                UpstreamTlsContext {
                    sni: tls.sni.clone(),
                    common_tls_context: Some(CommonTlsContext {
                        validation_context_type: Some(
                            common_tls_context::ValidationContextType::ValidationContext(
                                CertificateValidationContext {
                                    trusted_ca: Some(trusted_ca),
                                    match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                                        san_type: subject_alt_name_matcher::SanType::Dns as i32,
                                        matcher: Some(StringMatcher {
                                            match_pattern: Some(
                                                string_matcher::MatchPattern::Exact(
                                                    tls.sni.clone(),
                                                ),
                                            ),
                                            ..Default::default()
                                        }),
                                        ..Default::default()
                                    }],
                                    ..Default::default()
                                },
                            ),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ))),
        }
    });
    Cluster {
        name: c.name.clone(),
        alt_stat_name: c.name.replace('/', "_"),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(discovery as i32)),
        connect_timeout: Some(duration_ms(5_000)),
        dns_lookup_family: cluster::DnsLookupFamily::V4Preferred as i32,
        load_assignment: Some(super::cluster::assignment(&c.name, &c.endpoints)),
        transport_socket,
        ..Default::default()
    }
}
