//! Listeners: one per Gateway port, an HTTP connection manager per filter chain (with TLS
//! and SNI for HTTPS), CORS and Wasm filters before the router, paths normalized.

use super::*;
use crate::ir::{EndpointIr, FilterChainIr, ListenerIr};
use envoy_types::pb::envoy::config::core::v3::Http1ProtocolOptions;
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::listener::v3::{
    AdditionalAddress, Filter, FilterChain, Listener, filter,
};
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChainMatch, ListenerFilter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors as CorsFilter;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
};
use envoy_types::util::pack_any;

/// The Envoy listener: a filter chain per [`FilterChainIr`], each an HTTP connection manager
/// reading its routes by RDS; HTTPS chains terminate TLS with certificates from SDS and are
/// selected by SNI.
pub fn listener(l: &ListenerIr, module_server: Option<&EndpointIr>) -> Listener {
    let tls = l.chains.iter().any(|c| !c.certificates.is_empty());
    let filter_chains = l
        .chains
        .iter()
        .map(|chain| FilterChain {
            filter_chain_match: (!chain.server_names.is_empty()).then(|| FilterChainMatch {
                server_names: chain.server_names.clone(),
                ..Default::default()
            }),
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".to_string(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(
                    http_connection_manager(&l.name, chain, module_server),
                ))),
            }],
            transport_socket: (!chain.certificates.is_empty()).then(|| TransportSocket {
                name: "envoy.transport_sockets.tls".to_string(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
                    DownstreamTlsContext {
                        common_tls_context: Some(CommonTlsContext {
                            tls_certificate_sds_secret_configs: chain
                                .certificates
                                .iter()
                                .map(|name| SdsSecretConfig {
                                    name: name.clone(),
                                    sds_config: Some(ads()),
                                })
                                .collect(),
                            alpn_protocols: vec!["h2".to_string(), "http/1.1".to_string()],
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ))),
            }),
            name: chain.route_config.clone(),
            ..Default::default()
        })
        .collect();
    Listener {
        name: l.name.clone(),
        address: Some(socket(&l.address, l.port)),
        additional_addresses: l
            .additional_addresses
            .iter()
            .map(|a| AdditionalAddress {
                address: Some(socket(a, l.port)),
                ..Default::default()
            })
            .collect(),
        filter_chains,
        listener_filters: if tls {
            vec![ListenerFilter {
                name: "envoy.filters.listener.tls_inspector".to_string(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
                    TlsInspector::default(),
                ))),
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}

pub(super) fn http_connection_manager(
    listener: &str,
    chain: &FilterChainIr,
    module_server: Option<&EndpointIr>,
) -> HttpConnectionManager {
    // CORS first: a preflight is answered before any policy sees it.
    let cors = chain
        .virtual_hosts
        .iter()
        .flat_map(|vh| &vh.routes)
        .any(|r| r.cors.is_some());
    let mut http_filters: Vec<HttpFilter> = Vec::new();
    if cors {
        http_filters.push(HttpFilter {
            name: CORS_FILTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                CorsFilter {},
            ))),
            ..Default::default()
        });
    }
    http_filters.extend(
        chain
            .http_filters
            .iter()
            .map(|f| wasm_filter(f, module_server)),
    );
    // Faults after the policy filter (a denied request is denied, not faulted), before the
    // router; only in chains with a route that injects them.
    let faults = chain
        .virtual_hosts
        .iter()
        .flat_map(|vh| &vh.routes)
        .any(|r| r.fault.is_some());
    if faults {
        http_filters.push(super::resilience::fault_filter());
    }
    http_filters.push(HttpFilter {
        name: "envoy.filters.http.router".to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..Default::default()
    });
    let mut hcm = HttpConnectionManager {
        stat_prefix: listener.replace('/', "_"),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: chain.route_config.clone(),
        })),
        http_filters,
        // Routes and filters match the path as Envoy normalizes it, so that `/./admin`,
        // `/x/../admin`, `//admin` and `/admin%2Fx` cannot slip past a rule on `/admin/`:
        // dot segments resolved, slashes merged, and escaped slashes (`%2F`, `%5C`) unescaped
        // with a redirect to the plain path (Envoy Gateway's default).
        normalize_path: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
        merge_slashes: true,
        path_with_escaped_slashes_action:
            http_connection_manager::PathWithEscapedSlashesAction::UnescapeAndRedirect as i32,
        // A client that never finishes its headers is disconnected.
        request_headers_timeout: Some(duration_ms(10_000)),
        use_remote_address: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".to_string(),
            ..Default::default()
        }],
        http_protocol_options: Some(Http1ProtocolOptions::default()),
        ..Default::default()
    };
    if let Some(t) = &chain.tracing {
        super::tracing::trace(&mut hcm, t);
    }
    hcm
}
