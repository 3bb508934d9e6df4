//! A sidecar class's resources: the outbound listener that receives the app's captured
//! connections and hands each to the listener of its destination, a listener per Service
//! ClusterIP and port, the inbound listener in front of the app, their route configurations and
//! clusters.
//!
//! ```text
//!  app ─connect(ClusterIP:port)─► :15001 outbound (use_original_dst)
//!        ├─► outbound/<ns>/<svc>/<port> (bound to nothing; matched by ClusterIP:port)
//!        │     HTTP: connection manager, RDS mesh/… ─► service/<ns>/<svc>/<port> (EDS)
//!        │     TCP:  tcp_proxy ─► service/<ns>/<svc>/<port>
//!        └─► default: tcp_proxy ─► passthrough (ORIGINAL_DST), or blackhole
//!  peer ─► :15006 inbound (original_dst)
//!        ├─► HTTP ports: connection manager ─► inbound-passthrough
//!        └─► default: tcp_proxy ─► inbound-passthrough (ORIGINAL_DST, from 127.0.0.6)
//! ```

use super::*;
use crate::ir::{
    ActionIr, InboundMtlsIr, InboundPortIr, MeshRoutesIr, MtlsMode, ServiceListenerIr, SidecarIr,
    UnknownDestinations,
};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    BindConfig, Http1ProtocolOptions, TrafficDirection, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteMatch, VirtualHost, route, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors as CorsFilter;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use envoy_types::util::pack_any;

/// The listener the capture rules send the app's outbound connections to.
pub const OUTBOUND_LISTENER: &str = "virtual-outbound";
/// The listener the capture rules send inbound connections to.
pub const INBOUND_LISTENER: &str = "virtual-inbound";
/// Connections to destinations that are no Service port of the mesh, forwarded as they were.
pub const PASSTHROUGH_CLUSTER: &str = "passthrough";
/// Connections to destinations that are no Service port of the mesh, when they are blocked.
pub const BLACKHOLE_CLUSTER: &str = "blackhole";
/// The app behind the sidecar, reached at the connection's original destination from
/// 127.0.0.6 (which the capture rules leave alone).
pub const INBOUND_CLUSTER: &str = "inbound-passthrough";

/// Every resource of one sidecar class.
pub(super) fn sidecar_resources(s: &SidecarIr, round: &mut CacheRound<'_>) -> Vec<Arc<Resource>> {
    let mut out = Vec::new();
    for c in s.clusters.values() {
        let (a, b) = round.cluster(c);
        out.push(a);
        out.push(b);
    }
    for (name, routes) in &s.route_configs {
        out.push(round.mesh_routes(name, routes, dependencies(routes, s)));
    }
    for l in &s.outbound {
        out.push(round.service_listener(l, s));
    }
    // Collectors of TracingPolicies with an OTLP destination.
    let tracing = s
        .outbound
        .iter()
        .filter_map(|l| l.tracing.as_ref())
        .chain(s.inbound_tracing.values());
    let collectors = super::tracing::collectors(tracing);
    for (name, c) in &collectors {
        out.push(Resource::new(name, &super::tracing::collector_cluster(c)));
    }
    let passthrough = match s.unknown_destinations {
        UnknownDestinations::PassThrough => PASSTHROUGH_CLUSTER,
        UnknownDestinations::Block => BLACKHOLE_CLUSTER,
    };
    out.push(Resource::new(
        PASSTHROUGH_CLUSTER,
        &original_dst_cluster(PASSTHROUGH_CLUSTER, None),
    ));
    out.push(Resource::new(BLACKHOLE_CLUSTER, &blackhole_cluster()));
    out.push(Resource::new(
        INBOUND_CLUSTER,
        &original_dst_cluster(INBOUND_CLUSTER, Some(trellis_capture_source())),
    ));
    for c in s.external_clusters.values() {
        out.push(Resource::new(&c.name, &super::egress::external_cluster(c)));
    }
    for l in &s.egress {
        let mut dependencies = cluster_dependency(passthrough);
        for h in &l.hosts {
            dependencies.extend(cluster_dependency(&h.cluster));
        }
        dependencies.sort_by(|a, b| a.name.cmp(&b.name));
        dependencies.dedup_by(|a, b| a.name == b.name);
        out.push(Resource::with_dependencies(
            super::egress::egress_listener_name(l),
            &super::egress::egress_listener(l, passthrough),
            dependencies,
        ));
    }
    out.push(Resource::with_dependencies(
        OUTBOUND_LISTENER,
        &outbound_listener(passthrough),
        cluster_dependency(passthrough),
    ));
    let mut inbound_dependencies = cluster_dependency(INBOUND_CLUSTER);
    for name in collectors.keys() {
        inbound_dependencies.extend(cluster_dependency(name));
    }
    if let (false, Some(server)) = (s.inbound_filters.is_empty(), &s.module_server) {
        out.push(Resource::new(MODULE_CLUSTER, &module_cluster(server)));
        inbound_dependencies.extend(cluster_dependency(MODULE_CLUSTER));
    }
    out.push(Resource::with_dependencies(
        INBOUND_LISTENER,
        &inbound_listener(s),
        inbound_dependencies,
    ));
    out
}

/// The address Envoy connects to the app from (`127.0.0.6`).
fn trellis_capture_source() -> &'static str {
    "127.0.0.6"
}

fn cluster_dependency(name: &str) -> Vec<Dependency> {
    vec![Dependency {
        resource_type: ResourceType::Cluster,
        name: name.to_string(),
    }]
}

/// The clusters (and their endpoints) a route configuration sends to, so they reach the
/// sidecar first.
fn dependencies(routes: &MeshRoutesIr, s: &SidecarIr) -> Vec<Dependency> {
    let mut deps = Vec::new();
    for r in &routes.routes {
        if let ActionIr::Forward(f) = &r.action {
            let names = f
                .backends
                .iter()
                .filter_map(|b| b.cluster.as_ref())
                .chain(f.mirrors.iter().map(|m| &m.cluster));
            for name in names {
                if s.clusters.contains_key(name) {
                    for resource_type in [ResourceType::Cluster, ResourceType::Endpoint] {
                        deps.push(Dependency {
                            resource_type,
                            name: name.clone(),
                        });
                    }
                }
            }
        }
    }
    deps.sort_by(|a, b| (a.resource_type, &a.name).cmp(&(b.resource_type, &b.name)));
    deps.dedup();
    deps
}

/// A mesh route configuration: one virtual host for every Host (GAMMA ignores hostnames; the
/// destination ClusterIP chose the Service).
pub fn mesh_route_configuration(name: &str, routes: &MeshRoutesIr) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: "*".to_string(),
            domains: vec!["*".to_string()],
            routes: routes.routes.iter().map(super::route::route).collect(),
            ..Default::default()
        }],
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// The listener of one Service ClusterIP and port: not bound (the outbound listener hands it
/// the connections whose original destination it is).
pub fn service_listener(l: &ServiceListenerIr) -> Listener {
    let name = service_listener_name(l);
    let access_log: Vec<_> = l
        .access_log
        .then(|| super::mtls::access_log("outbound"))
        .into_iter()
        .collect();
    let filter = match (&l.route_config, &l.cluster) {
        (Some(route_config), _) => {
            let mut hcm = outbound_hcm(&name, route_config);
            if l.faults {
                hcm.http_filters.insert(
                    hcm.http_filters.len() - 1,
                    super::resilience::fault_filter(),
                );
            }
            hcm.access_log = access_log;
            if let Some(t) = &l.tracing {
                super::tracing::trace(&mut hcm, t);
            }
            hcm_filter(hcm)
        }
        (None, cluster) => {
            let mut tcp = tcp_proxy(&name, cluster.as_deref().unwrap_or(BLACKHOLE_CLUSTER));
            tcp.access_log = access_log;
            tcp_filter(tcp)
        }
    };
    Listener {
        name,
        address: Some(socket(&l.address, l.port)),
        bind_to_port: Some(BoolValue { value: false }),
        traffic_direction: TrafficDirection::Outbound as i32,
        filter_chains: vec![FilterChain {
            filters: vec![filter],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `outbound/<ns>/<service>/<port>`.
pub fn service_listener_name(l: &ServiceListenerIr) -> String {
    format!(
        "outbound/{}/{}/{}",
        l.service.namespace, l.service.name, l.port
    )
}

fn outbound_hcm(name: &str, route_config: &str) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: name.replace('/', "_"),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_config.to_string(),
        })),
        http_filters: vec![cors_filter(), router_filter()],
        normalize_path: Some(BoolValue { value: true }),
        merge_slashes: true,
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".to_string(),
            ..Default::default()
        }],
        http_protocol_options: Some(Http1ProtocolOptions::default()),
        ..Default::default()
    }
}

fn cors_filter() -> HttpFilter {
    HttpFilter {
        name: CORS_FILTER.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            CorsFilter {},
        ))),
        ..Default::default()
    }
}

fn router_filter() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..Default::default()
    }
}

fn hcm_filter(hcm: HttpConnectionManager) -> Filter {
    Filter {
        name: "envoy.filters.network.http_connection_manager".to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
    }
}

fn tcp_proxy(stat_prefix: &str, cluster: &str) -> TcpProxy {
    TcpProxy {
        stat_prefix: stat_prefix.replace('/', "_"),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_string())),
        ..Default::default()
    }
}

fn tcp_filter(tcp: TcpProxy) -> Filter {
    Filter {
        name: "envoy.filters.network.tcp_proxy".to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(tcp))),
    }
}

fn tcp_proxy_filter(stat_prefix: &str, cluster: &str) -> Filter {
    tcp_filter(tcp_proxy(stat_prefix, cluster))
}

/// `0.0.0.0:15001`: every captured outbound connection arrives here and is handed to the
/// listener of its original destination; others go to `unknown` (pass through or block).
pub fn outbound_listener(unknown: &str) -> Listener {
    Listener {
        name: OUTBOUND_LISTENER.to_string(),
        address: Some(socket("0.0.0.0", trellis_capture::OUTBOUND_PORT)),
        use_original_dst: Some(BoolValue { value: true }),
        traffic_direction: TrafficDirection::Outbound as i32,
        default_filter_chain: Some(FilterChain {
            name: "unknown-destination".to_string(),
            filters: vec![tcp_proxy_filter("outbound_unknown", unknown)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `0.0.0.0:15006`: every captured inbound connection arrives here; HTTP ports go through a
/// connection manager (where mesh policy and telemetry will run), the rest straight to the app.
/// With `mtls`, each port takes mutual TLS from other sidecars, plaintext, or both, as its
/// mode says.
pub fn inbound_listener(s: &SidecarIr) -> Listener {
    if let Some(mtls) = &s.mtls {
        return mtls_inbound_listener(s, mtls);
    }
    let filter_chains = s
        .inbound
        .iter()
        .map(|p| FilterChain {
            name: format!("inbound/{}", p.port),
            filter_chain_match: Some(FilterChainMatch {
                destination_port: Some(UInt32Value {
                    value: u32::from(p.port),
                }),
                ..Default::default()
            }),
            filters: vec![hcm_filter(inbound_hcm(p, s))],
            ..Default::default()
        })
        .collect();
    Listener {
        name: INBOUND_LISTENER.to_string(),
        address: Some(socket("0.0.0.0", trellis_capture::INBOUND_PORT)),
        traffic_direction: TrafficDirection::Inbound as i32,
        listener_filters: vec![ListenerFilter {
            name: "envoy.filters.listener.original_dst".to_string(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
                OriginalDst::default(),
            ))),
            ..Default::default()
        }],
        filter_chains,
        default_filter_chain: Some(FilterChain {
            name: "inbound/tcp".to_string(),
            filters: vec![tcp_proxy_filter("inbound_tcp", INBOUND_CLUSTER)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What a connection to one port (or, without a port, to any other) is handed to.
#[derive(Clone, Copy)]
enum InboundKind {
    Http(InboundPortIr),
    Tcp,
}

/// The inbound listener with mutual TLS: for every port with HTTP or a mode of its own, and for
/// all other ports together, a chain for the mesh's TLS (unless DISABLE) and one for plaintext
/// (unless STRICT). A connection no chain takes is closed (Envoy counts it in
/// `no_filter_chain_match`).
fn mtls_inbound_listener(s: &SidecarIr, mtls: &InboundMtlsIr) -> Listener {
    let mut scopes: BTreeMap<u16, InboundKind> =
        mtls.ports.keys().map(|p| (*p, InboundKind::Tcp)).collect();
    for p in &s.inbound {
        scopes.insert(p.port, InboundKind::Http(*p));
    }
    let mut filter_chains = Vec::new();
    for (port, kind) in &scopes {
        filter_chains.extend(mode_chains(s, Some(*port), *kind, mtls.port_mode(*port)));
    }
    filter_chains.extend(mode_chains(s, None, InboundKind::Tcp, mtls.mode));
    Listener {
        name: INBOUND_LISTENER.to_string(),
        address: Some(socket("0.0.0.0", trellis_capture::INBOUND_PORT)),
        traffic_direction: TrafficDirection::Inbound as i32,
        listener_filters: vec![
            ListenerFilter {
                name: "envoy.filters.listener.original_dst".to_string(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
                    OriginalDst::default(),
                ))),
                ..Default::default()
            },
            ListenerFilter {
                name: "envoy.filters.listener.tls_inspector".to_string(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
                    TlsInspector::default(),
                ))),
                ..Default::default()
            },
        ],
        // A protocol whose server speaks first sends the inspector nothing: go on without it.
        continue_on_listener_filters_timeout: true,
        listener_filters_timeout: Some(duration_ms(5_000)),
        filter_chains,
        ..Default::default()
    }
}

/// The stat prefix of a plaintext chain beside a mutual-TLS one (`inbound_8080_plaintext`):
/// the control plane counts its connections, from the sidecar's stats, to find plaintext
/// callers of PERMISSIVE ports (`trellis vet`, TRL0114; `trellis_telemetry::plaintext_inbound`
/// reads the prefix back).
fn plaintext_stat_prefix(prefix: &str) -> String {
    format!("{prefix}_plaintext")
}

/// The chains of one port (or of every other port) in one mode.
fn mode_chains(
    s: &SidecarIr,
    port: Option<u16>,
    kind: InboundKind,
    mode: MtlsMode,
) -> Vec<FilterChain> {
    let base = match port {
        Some(p) => format!("inbound/{p}"),
        None => "inbound/tcp".to_string(),
    };
    let filter = |mtls: bool| match kind {
        InboundKind::Http(p) => {
            let mut hcm = inbound_hcm(&p, s);
            if !mtls {
                hcm.stat_prefix = plaintext_stat_prefix(&hcm.stat_prefix);
            }
            hcm.access_log = vec![super::mtls::access_log("inbound")];
            if mtls {
                // The app sees the caller's identity; a caller's own header is replaced.
                hcm.forward_client_cert_details =
                    http_connection_manager::ForwardClientCertDetails::SanitizeSet as i32;
                hcm.set_current_client_cert_details =
                    Some(http_connection_manager::SetCurrentClientCertDetails {
                        uri: true,
                        ..Default::default()
                    });
            }
            hcm_filter(hcm)
        }
        InboundKind::Tcp => {
            let mut tcp = tcp_proxy(&base, INBOUND_CLUSTER);
            if !mtls {
                tcp.stat_prefix = plaintext_stat_prefix(&tcp.stat_prefix);
            }
            tcp.access_log = vec![super::mtls::access_log("inbound")];
            tcp_filter(tcp)
        }
    };
    let destination_port = port.map(|p| UInt32Value {
        value: u32::from(p),
    });
    let mut chains = Vec::new();
    if mode != MtlsMode::Disable {
        chains.push(FilterChain {
            name: format!("{base}/mtls"),
            filter_chain_match: Some(FilterChainMatch {
                destination_port,
                transport_protocol: "tls".to_string(),
                application_protocols: vec![super::mtls::MESH_ALPN.to_string()],
                ..Default::default()
            }),
            filters: vec![filter(true)],
            transport_socket: Some(super::mtls::downstream_mtls()),
            ..Default::default()
        });
    }
    if mode != MtlsMode::Strict {
        chains.push(FilterChain {
            name: base.clone(),
            filter_chain_match: destination_port.map(|destination_port| FilterChainMatch {
                destination_port: Some(destination_port),
                ..Default::default()
            }),
            filters: vec![filter(false)],
            ..Default::default()
        });
    }
    chains
}

/// The connection manager of one inbound HTTP port: its filters (the policy filter, when a
/// policy targets a Service reaching the port), then the router to the app.
fn inbound_hcm(p: &InboundPortIr, s: &SidecarIr) -> HttpConnectionManager {
    let name = format!("inbound/{}", p.port);
    let mut http_filters: Vec<HttpFilter> = s
        .inbound_filters
        .get(&p.port)
        .into_iter()
        .flatten()
        .map(|f| super::wasm_filter(f, s.module_server.as_ref()))
        .collect();
    http_filters.push(router_filter());
    let mut hcm = HttpConnectionManager {
        stat_prefix: name.replace('/', "_"),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            RouteConfiguration {
                name: name.clone(),
                virtual_hosts: vec![VirtualHost {
                    name: "inbound".to_string(),
                    domains: vec!["*".to_string()],
                    routes: vec![Route {
                        name: name.clone(),
                        r#match: Some(RouteMatch {
                            path_specifier: Some(route_match::PathSpecifier::Prefix(
                                "/".to_string(),
                            )),
                            ..Default::default()
                        }),
                        action: Some(route::Action::Route(RouteAction {
                            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                                INBOUND_CLUSTER.to_string(),
                            )),
                            // The caller's sidecar already bounds the request; the app may
                            // stream for as long as it likes.
                            timeout: Some(duration_ms(0)),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        http_filters,
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".to_string(),
            ..Default::default()
        }],
        http_protocol_options: Some(Http1ProtocolOptions::default()),
        ..Default::default()
    };
    if let Some(t) = s.inbound_tracing.get(&p.port) {
        super::tracing::trace(&mut hcm, t);
    }
    hcm
}

/// A cluster that connects to each connection's (or request's) original destination; with a
/// `source`, from that address. It speaks to the upstream the protocol the downstream spoke.
pub fn original_dst_cluster(name: &str, source: Option<&str>) -> Cluster {
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                http_protocol_options::UseDownstreamHttpConfig {
                    http_protocol_options: Some(Http1ProtocolOptions::default()),
                    http2_protocol_options: Some(Default::default()),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    };
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(duration_ms(10_000)),
        upstream_bind_config: source.map(|address| BindConfig {
            source_address: Some(SocketAddress {
                address: address.to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            pack_any(options),
        )]
        .into(),
        ..Default::default()
    }
}

/// A cluster with no endpoints: connections to it are closed.
pub fn blackhole_cluster() -> Cluster {
    Cluster {
        name: BLACKHOLE_CLUSTER.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(duration_ms(1_000)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: BLACKHOLE_CLUSTER.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use prost::Message as _;

    /// Each chain's name and the stat prefix of its connection manager or TCP proxy.
    fn chains(l: &Listener) -> Vec<(String, String)> {
        l.filter_chains
            .iter()
            .map(|c| {
                let Some(ConfigType::TypedConfig(any)) = &c.filters[0].config_type else {
                    panic!("{c:?}");
                };
                let prefix = if any.type_url.ends_with("HttpConnectionManager") {
                    HttpConnectionManager::decode(any.value.as_slice())
                        .unwrap()
                        .stat_prefix
                } else {
                    TcpProxy::decode(any.value.as_slice()).unwrap().stat_prefix
                };
                (c.name.clone(), prefix)
            })
            .collect()
    }

    #[test]
    fn plaintext_chains_beside_mutual_tls_ones_count_under_a_prefix_of_their_own() {
        let sidecar = SidecarIr {
            inbound: vec![InboundPortIr {
                port: 8080,
                http2: false,
            }],
            mtls: Some(InboundMtlsIr {
                mode: MtlsMode::Strict,
                ports: [(8080, MtlsMode::Permissive)].into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            chains(&inbound_listener(&sidecar)),
            [
                ("inbound/8080/mtls".to_string(), "inbound_8080".to_string()),
                (
                    "inbound/8080".to_string(),
                    "inbound_8080_plaintext".to_string()
                ),
                ("inbound/tcp/mtls".to_string(), "inbound_tcp".to_string()),
            ]
        );
    }
}
