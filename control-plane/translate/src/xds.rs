//! IR to Envoy resources: listeners (with an HTTP connection manager on RDS), route
//! configurations, EDS clusters and their load assignments, one [`Snapshot`] per proxy.
//!
//! Names carry Kubernetes identity: listener and route configuration
//! `gateway/<ns>/<name>/port/<port>`, routes `httproute/<ns>/<name>/rule/<i>/match/<j>`,
//! clusters `service/<ns>/<name>/<port>`. Route configurations declare the clusters they send
//! traffic to as dependencies, so the xDS server delivers clusters and endpoints first.

use crate::ir::{
    ActionIr, BackendIr, ClusterIr, CorsIr, EndpointIr, FilterChainIr, ForwardIr, HeaderModIr, Ir,
    ListenerIr, MatchIr, OriginIr, PathMatchIr, PathRewriteIr, ProxyIr, RedirectIr, RouteIr,
    SecretIr, UpstreamProtocol, ValueMatchIr, WasmFilterIr,
};
use crate::policy::MODULE_CLUSTER;
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, HeaderValue,
    HeaderValueOption, Http1ProtocolOptions, Http2ProtocolOptions, SocketAddress, address,
    config_source, data_source, header_value_option, socket_address,
};
use envoy_types::pb::envoy::config::core::v3::{
    AsyncDataSource, BackoffStrategy, HttpUri, RemoteDataSource, async_data_source, http_uri,
};
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{
    AdditionalAddress, Filter, FilterChain, Listener, filter,
};
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChainMatch, ListenerFilter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::FilterConfig;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, header_matcher,
    query_parameter_matcher, redirect_action, retry_policy, route, route_action, route_match,
    weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors as CorsFilter, CorsPolicy};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::extensions::wasm::v3::{
    FailurePolicy, PluginConfig, ReloadConfig, VmConfig, plugin_config,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use envoy_types::pb::google::protobuf::{Any, StringValue};
use envoy_types::pb::google::protobuf::{Duration, UInt32Value};
use envoy_types::util::pack_any;
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
    let out = ir
        .proxies
        .iter()
        .map(|(key, proxy)| {
            let snapshot = Snapshot::from_resources(resources_with(proxy, &mut round))
                .with_spare(spare.clone());
            (key.clone(), snapshot)
        })
        .collect();
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
    for l in &proxy.listeners {
        let wasm = l.chains.iter().any(|c| !c.http_filters.is_empty());
        let dependencies = if wasm {
            vec![Dependency {
                resource_type: ResourceType::Cluster,
                name: MODULE_CLUSTER.to_string(),
            }]
        } else {
            Vec::new()
        };
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

/// An `envoy.filters.http.wasm` filter running a module fetched from the control plane by its
/// digest (Envoy checks the digest again), on the V8 runtime.
pub fn wasm_filter(f: &WasmFilterIr, server: Option<&EndpointIr>) -> HttpFilter {
    let uri = match server {
        Some(s) if s.address.contains(':') => {
            format!("http://[{}]:{}/wasm/{}", s.address, s.port, f.sha256)
        }
        Some(s) => format!("http://{}:{}/wasm/{}", s.address, s.port, f.sha256),
        None => format!("http://module-server.invalid/wasm/{}", f.sha256),
    };
    let configuration = match &f.configuration {
        serde_json::Value::Null => String::new(),
        v => v.to_string(),
    };
    let plugin = PluginConfig {
        name: f.name.clone(),
        configuration: Some(pack_any(StringValue {
            value: configuration,
        })),
        // A module that traps is reloaded (after a backoff), rather than left down until
        // Envoy restarts; requests meanwhile get 503 (or skip it, when it fails open).
        failure_policy: if f.fail_open {
            FailurePolicy::FailOpen
        } else {
            FailurePolicy::FailReload
        } as i32,
        reload_config: (!f.fail_open).then(|| ReloadConfig {
            backoff: Some(BackoffStrategy {
                base_interval: Some(duration_ms(1_000)),
                max_interval: Some(duration_ms(10_000)),
            }),
        }),
        vm: Some(plugin_config::Vm::VmConfig(VmConfig {
            vm_id: f.vm_id.clone(),
            runtime: "envoy.wasm.runtime.v8".to_string(),
            code: Some(AsyncDataSource {
                specifier: Some(async_data_source::Specifier::Remote(RemoteDataSource {
                    http_uri: Some(HttpUri {
                        uri,
                        timeout: Some(duration_ms(10_000)),
                        http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                            MODULE_CLUSTER.to_string(),
                        )),
                    }),
                    sha256: f.sha256.clone(),
                    retry_policy: Some(envoy_types::pb::envoy::config::core::v3::RetryPolicy {
                        retry_back_off: Some(BackoffStrategy {
                            base_interval: Some(duration_ms(200)),
                            max_interval: Some(duration_ms(2_000)),
                        }),
                        num_retries: Some(UInt32Value { value: 10 }),
                        ..Default::default()
                    }),
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    HttpFilter {
        name: f.name.clone(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(Wasm {
            config: Some(plugin),
        }))),
        disabled: f.disabled,
        ..Default::default()
    }
}

/// `typed_per_filter_config` enabling filters that are off by default in the chain.
fn enable_filters(names: &[String]) -> HashMap<String, Any> {
    names
        .iter()
        .map(|name| {
            (
                name.clone(),
                // An empty `config` (present, no type) enables the filter with its chain-level
                // configuration; an absent one is an error for Envoy.
                pack_any(FilterConfig {
                    config: Some(Any::default()),
                    disabled: false,
                    ..Default::default()
                }),
            )
        })
        .collect()
}

/// A certificate and key for SDS.
pub fn secret(s: &SecretIr) -> Secret {
    Secret {
        name: s.name.clone(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline_bytes(&s.certificate_chain)),
            private_key: Some(inline_bytes(&s.private_key)),
            ..Default::default()
        })),
    }
}

fn inline_bytes(text: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(
            text.as_bytes().to_vec(),
        )),
        ..Default::default()
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn duration_ms(ms: u64) -> Duration {
    Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

fn socket(address: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

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

fn http_connection_manager(
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
    http_filters.push(HttpFilter {
        name: "envoy.filters.http.router".to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..Default::default()
    });
    HttpConnectionManager {
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
    }
}

/// Clusters (and endpoints) a chain's routes send traffic to.
fn route_dependencies(chain: &FilterChainIr, proxy: &ProxyIr) -> Vec<Dependency> {
    let mut deps = Vec::new();
    for vh in &chain.virtual_hosts {
        for r in &vh.routes {
            if let ActionIr::Forward(f) = &r.action {
                let names = f
                    .backends
                    .iter()
                    .filter_map(|b| b.cluster.as_ref())
                    .chain(f.mirrors.iter().map(|m| &m.cluster));
                for name in names {
                    if proxy.clusters.contains_key(name) {
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
    }
    deps
}

/// The route configuration of a filter chain.
pub fn route_configuration(chain: &FilterChainIr) -> RouteConfiguration {
    RouteConfiguration {
        name: chain.route_config.clone(),
        virtual_hosts: chain
            .virtual_hosts
            .iter()
            .map(|vh| VirtualHost {
                name: vh.domain.clone(),
                domains: vec![vh.domain.clone()],
                routes: vh.routes.iter().map(route).collect(),
                typed_per_filter_config: enable_filters(&vh.enabled_filters),
                ..Default::default()
            })
            .collect(),
        // Routes may name clusters that do not exist (unresolved backends answer 500).
        validate_clusters: Some(envoy_types::pb::google::protobuf::BoolValue { value: false }),
        // Match virtual hosts on the host without its port, but forward the Host as sent.
        ignore_port_in_host_matching: true,
        ..Default::default()
    }
}

/// A route configuration encoded with its `typed_per_filter_config` maps in key order: prost
/// writes a map in its hash map's order, which differs between runs, and the resource's version
/// is a hash of the bytes (an unchanged configuration must keep its version, or every proxy
/// would be sent it again after each translation). A parser reads a message's fields in any
/// order, so the maps are appended after the rest.
pub fn canonical_route_configuration(rc: &RouteConfiguration) -> Vec<u8> {
    use prost::Message;
    use prost::encoding::{WireType, encode_key, encode_varint};
    fn map_entries(tag: u32, map: &HashMap<String, Any>, buf: &mut Vec<u8>) {
        let mut entries: Vec<_> = map.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        for (key, value) in entries {
            let mut entry = Vec::new();
            prost::encoding::string::encode(1, key, &mut entry);
            prost::encoding::message::encode(2, value, &mut entry);
            encode_key(tag, WireType::LengthDelimited, buf);
            encode_varint(entry.len() as u64, buf);
            buf.extend_from_slice(&entry);
        }
    }
    fn nested(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(bytes.len() as u64, buf);
        buf.extend_from_slice(bytes);
    }
    // RouteConfiguration.virtual_hosts = 2; VirtualHost.routes = 3 and its map = 15;
    // Route's map = 13.
    let mut top = rc.clone();
    let hosts = std::mem::take(&mut top.virtual_hosts);
    let mut buf = top.encode_to_vec();
    for mut vh in hosts {
        let routes = std::mem::take(&mut vh.routes);
        let vh_map = std::mem::take(&mut vh.typed_per_filter_config);
        let mut vh_buf = vh.encode_to_vec();
        for mut r in routes {
            let r_map = std::mem::take(&mut r.typed_per_filter_config);
            let mut r_buf = r.encode_to_vec();
            map_entries(13, &r_map, &mut r_buf);
            nested(3, &r_buf, &mut vh_buf);
        }
        map_entries(15, &vh_map, &mut vh_buf);
        nested(2, &vh_buf, &mut buf);
    }
    buf
}

fn string_matcher(v: &ValueMatchIr) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(match v {
            ValueMatchIr::Exact(s) => string_matcher::MatchPattern::Exact(s.clone()),
            ValueMatchIr::Regex(r) => string_matcher::MatchPattern::SafeRegex(regex(r)),
        }),
        ..Default::default()
    }
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.to_string(),
        ..Default::default()
    }
}

fn route_match(m: &MatchIr) -> RouteMatch {
    let path = match &m.path {
        PathMatchIr::Exact(p) => route_match::PathSpecifier::Path(p.clone()),
        PathMatchIr::Prefix(p) if p == "/" => route_match::PathSpecifier::Prefix("/".to_string()),
        PathMatchIr::Prefix(p) => route_match::PathSpecifier::PathSeparatedPrefix(p.clone()),
        PathMatchIr::Regex(r) => route_match::PathSpecifier::SafeRegex(regex(r)),
    };
    let mut headers: Vec<HeaderMatcher> = m
        .headers
        .iter()
        .map(|h| HeaderMatcher {
            name: h.name.clone(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                string_matcher(&h.value),
            )),
            ..Default::default()
        })
        .collect();
    if let Some(method) = &m.method {
        headers.push(HeaderMatcher {
            name: ":method".to_string(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                string_matcher(&ValueMatchIr::Exact(method.clone())),
            )),
            ..Default::default()
        });
    }
    RouteMatch {
        path_specifier: Some(path),
        headers,
        query_parameters: m
            .query_params
            .iter()
            .map(|q| QueryParameterMatcher {
                name: q.name.clone(),
                query_parameter_match_specifier: Some(
                    query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                        string_matcher(&q.value),
                    ),
                ),
            })
            .collect(),
        ..Default::default()
    }
}

fn header_options(m: &HeaderModIr) -> Vec<HeaderValueOption> {
    let option = |(name, value): &(String, String), action| HeaderValueOption {
        header: Some(HeaderValue {
            key: name.clone(),
            value: value.clone(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    };
    m.set
        .iter()
        .map(|h| {
            option(
                h,
                header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd,
            )
        })
        .chain(m.add.iter().map(|h| {
            option(
                h,
                header_value_option::HeaderAppendAction::AppendIfExistsOrAdd,
            )
        }))
        .collect()
}

fn route(r: &RouteIr) -> Route {
    let action = match &r.action {
        ActionIr::Forward(f) => route::Action::Route(route_action(f)),
        ActionIr::Redirect(redirect) => route::Action::Redirect(redirect_action(redirect)),
        ActionIr::Respond { status, body } => route::Action::DirectResponse(DirectResponseAction {
            status: u32::from(*status),
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(body.clone())),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    Route {
        name: r.name.clone(),
        r#match: Some(route_match(&r.matcher)),
        action: Some(action),
        request_headers_to_add: header_options(&r.request_headers),
        request_headers_to_remove: r.request_headers.remove.clone(),
        response_headers_to_add: header_options(&r.response_headers),
        response_headers_to_remove: r.response_headers.remove.clone(),
        typed_per_filter_config: {
            let mut configs = enable_filters(&r.enabled_filters);
            if let Some(cors) = &r.cors {
                configs.insert(CORS_FILTER.to_string(), pack_any(cors_policy(cors)));
            }
            configs
        },
        ..Default::default()
    }
}

/// Envoy's CORS filter, in a chain whose routes have CORS policies.
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// A route's CORS policy for Envoy's CORS filter. Origins outside it get no CORS headers; their
/// preflights are answered by Envoy (without them) rather than passed to the backend.
fn cors_policy(c: &CorsIr) -> CorsPolicy {
    let origins = c
        .allow_origins
        .iter()
        .map(|o| StringMatcher {
            match_pattern: Some(match o {
                OriginIr::Any => string_matcher::MatchPattern::SafeRegex(regex(".*")),
                OriginIr::Exact(origin) => string_matcher::MatchPattern::Exact(origin.clone()),
                OriginIr::Wildcard(pattern) => string_matcher::MatchPattern::SafeRegex(regex(
                    &regex::escape(pattern).replace("\\*", ".*"),
                )),
            }),
            ..Default::default()
        })
        .collect();
    CorsPolicy {
        allow_origin_string_match: origins,
        allow_methods: c.allow_methods.join(", "),
        allow_headers: c.allow_headers.join(", "),
        expose_headers: c.expose_headers.join(", "),
        max_age: c.max_age_seconds.to_string(),
        allow_credentials: c
            .allow_credentials
            .then_some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
        forward_not_matching_preflights: Some(envoy_types::pb::google::protobuf::BoolValue {
            value: false,
        }),
        ..Default::default()
    }
}

fn cluster_weight(b: &BackendIr) -> weighted_cluster::ClusterWeight {
    weighted_cluster::ClusterWeight {
        name: b
            .cluster
            .clone()
            .unwrap_or_else(|| INVALID_BACKEND_CLUSTER.to_string()),
        weight: Some(UInt32Value { value: b.weight }),
        request_headers_to_add: header_options(&b.request_headers),
        request_headers_to_remove: b.request_headers.remove.clone(),
        response_headers_to_add: header_options(&b.response_headers),
        response_headers_to_remove: b.response_headers.remove.clone(),
        ..Default::default()
    }
}

fn route_action(f: &ForwardIr) -> RouteAction {
    let single = f.backends.len() == 1
        && f.backends[0].request_headers.is_empty()
        && f.backends[0].response_headers.is_empty();
    let cluster_specifier = if single {
        route_action::ClusterSpecifier::Cluster(
            f.backends[0]
                .cluster
                .clone()
                .unwrap_or_else(|| INVALID_BACKEND_CLUSTER.to_string()),
        )
    } else {
        route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: f.backends.iter().map(cluster_weight).collect(),
            ..Default::default()
        })
    };
    let mut action = RouteAction {
        cluster_specifier: Some(cluster_specifier),
        cluster_not_found_response_code:
            route_action::ClusterNotFoundResponseCode::InternalServerError as i32,
        timeout: f.timeout_ms.map(duration_ms),
        request_mirror_policies: f
            .mirrors
            .iter()
            .map(|m| route_action::RequestMirrorPolicy {
                cluster: m.cluster.clone(),
                runtime_fraction: (m.per_million < 1_000_000).then(|| RuntimeFractionalPercent {
                    default_value: Some(FractionalPercent {
                        numerator: m.per_million,
                        denominator: fractional_percent::DenominatorType::Million as i32,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    if let Some(rewrite) = &f.rewrite {
        if let Some(host) = &rewrite.hostname {
            action.host_rewrite_specifier = Some(
                route_action::HostRewriteSpecifier::HostRewriteLiteral(host.clone()),
            );
        }
        match &rewrite.path {
            Some(PathRewriteIr::Full(path)) => {
                action.regex_rewrite = Some(RegexMatchAndSubstitute {
                    pattern: Some(regex("^/.*$")),
                    substitution: path.clone(),
                });
            }
            Some(PathRewriteIr::Prefix {
                matched,
                replacement,
            }) => apply_prefix_rewrite(
                matched,
                replacement,
                &mut action.prefix_rewrite,
                &mut action.regex_rewrite,
            ),
            None => {}
        }
    }
    let backend_timeout = f.backend_timeout_ms.map(duration_ms);
    if let Some(retry) = &f.retry {
        action.retry_policy = Some(RetryPolicy {
            retry_on: "connect-failure,refused-stream,reset,retriable-status-codes".to_string(),
            retriable_status_codes: retry.codes.clone(),
            num_retries: Some(UInt32Value {
                value: retry.attempts,
            }),
            per_try_timeout: backend_timeout,
            retry_back_off: retry.backoff_ms.map(|ms| retry_policy::RetryBackOff {
                base_interval: Some(duration_ms(ms.max(1))),
                ..Default::default()
            }),
            ..Default::default()
        });
    } else if let Some(t) = backend_timeout {
        action.retry_policy = Some(RetryPolicy {
            num_retries: Some(UInt32Value { value: 0 }),
            per_try_timeout: Some(t),
            ..Default::default()
        });
    }
    action
}

/// Replaces a matched path prefix per Gateway API: `/foo` -> `/xyz` turns `/foo/bar` into
/// `/xyz/bar` and `/foo` into `/xyz`; an empty or `/` replacement turns `/foo/bar` into `/bar`
/// and `/foo` into `/`.
fn apply_prefix_rewrite(
    matched: &str,
    replacement: &str,
    prefix_rewrite: &mut String,
    regex_rewrite: &mut Option<RegexMatchAndSubstitute>,
) {
    let replacement = replacement.trim_end_matches('/');
    if matched == "/" {
        *regex_rewrite = Some(RegexMatchAndSubstitute {
            pattern: Some(regex("^/")),
            substitution: format!("{replacement}/"),
        });
    } else if replacement.is_empty() {
        *regex_rewrite = Some(RegexMatchAndSubstitute {
            pattern: Some(regex(&format!("^{}/*", regex_escape(matched)))),
            substitution: "/".to_string(),
        });
    } else {
        *prefix_rewrite = replacement.to_string();
    }
}

fn regex_escape(s: &str) -> String {
    regex::escape(s)
}

fn redirect_action(r: &RedirectIr) -> RedirectAction {
    let response_code = match r.status {
        301 => redirect_action::RedirectResponseCode::MovedPermanently,
        303 => redirect_action::RedirectResponseCode::SeeOther,
        307 => redirect_action::RedirectResponseCode::TemporaryRedirect,
        308 => redirect_action::RedirectResponseCode::PermanentRedirect,
        _ => redirect_action::RedirectResponseCode::Found,
    };
    let mut action = RedirectAction {
        host_redirect: r.hostname.clone().unwrap_or_default(),
        port_redirect: r.port.map(u32::from).unwrap_or_default(),
        response_code: response_code as i32,
        scheme_rewrite_specifier: r
            .scheme
            .as_ref()
            .map(|s| redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s.clone())),
        ..Default::default()
    };
    match &r.path {
        Some(PathRewriteIr::Full(path)) => {
            action.path_rewrite_specifier = Some(
                redirect_action::PathRewriteSpecifier::PathRedirect(path.clone()),
            );
        }
        Some(PathRewriteIr::Prefix {
            matched,
            replacement,
        }) => {
            let mut prefix = String::new();
            let mut regex_rewrite = None;
            apply_prefix_rewrite(matched, replacement, &mut prefix, &mut regex_rewrite);
            action.path_rewrite_specifier = Some(match regex_rewrite {
                Some(r) => redirect_action::PathRewriteSpecifier::RegexRewrite(r),
                None => redirect_action::PathRewriteSpecifier::PrefixRewrite(prefix),
            });
        }
        None => {}
    }
    action
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
        ..Default::default()
    }
}

/// The endpoints of a cluster.
pub fn load_assignment(c: &ClusterIr) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: c.name.clone(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: c
                .endpoints
                .iter()
                .map(|e| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(&e.address, e.port)),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn with_maps() -> RouteConfiguration {
        let configs = |n: usize| -> HashMap<String, Any> {
            (0..n)
                .map(|i| (format!("filter-{i}"), pack_any(FilterConfig::default())))
                .collect()
        };
        RouteConfiguration {
            name: "rc".into(),
            virtual_hosts: (0..3)
                .map(|v| VirtualHost {
                    name: format!("vh-{v}"),
                    domains: vec!["*".into()],
                    routes: (0..4)
                        .map(|r| Route {
                            name: format!("r-{r}"),
                            typed_per_filter_config: configs(6),
                            ..Default::default()
                        })
                        .collect(),
                    typed_per_filter_config: configs(5),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn route_configurations_encode_the_same_bytes_every_time_and_decode_to_themselves() {
        // Each HashMap has its own iteration order: prost's encoding differs between two
        // equal configurations, the canonical one does not.
        let first = canonical_route_configuration(&with_maps());
        for _ in 0..20 {
            assert_eq!(canonical_route_configuration(&with_maps()), first);
        }
        assert_eq!(
            RouteConfiguration::decode(first.as_slice()).ok(),
            Some(with_maps())
        );
    }
}
