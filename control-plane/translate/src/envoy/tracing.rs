//! Tracing: a TracingPolicy's [`TracingIr`] as an HTTP connection manager's OpenTelemetry
//! tracer, a route's [`RouteTracingIr`] as its sampling override, and the cluster of a user's
//! OTLP collector.
//!
//! ```text
//!  TracingIr ──► HCM.tracing { provider: envoy.tracers.opentelemetry
//!                                (gRPC to trellis-telemetry, or tracing/<ns>/<policy>),
//!                              random_sampling, custom_tags, spawn_upstream_span }
//!            └─► untrusted context: early header mutation removes traceparent/tracestate,
//!                and x-client-trace-id forces nothing (client_sampling 0)
//!            └─► x-request-id in every response (the key to the request's trace)
//!  RouteTracingIr ──► Route.tracing { random_sampling (per 10000), custom_tags }
//! ```

use super::*;
use crate::ir::{CollectorClusterIr, CollectorIr, RouteTracingIr, TagIr, TagValueIr, TracingIr};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::common::mutation_rules::v3::{
    HeaderMutation as Mutation, header_mutation,
};
use envoy_types::pb::envoy::config::core::v3::{
    GrpcService, Http2ProtocolOptions, TypedExtensionConfig, grpc_service,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::trace::v3::{OpenTelemetryConfig, tracing as trace};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::http::early_header_mutation::header_mutation::v3::HeaderMutation;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::tracing::v3::{CustomTag, custom_tag};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, Percent, fractional_percent};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;

/// The bootstrap's cluster to the control plane's OTLP receiver (`trellis bootstrap`).
pub const TELEMETRY_CLUSTER: &str = "trellis-telemetry";

/// The trace context headers of W3C Trace Context, which Envoy's OpenTelemetry tracer reads.
const CONTEXT_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// Turns on tracing in a connection manager as `t` says.
pub fn trace(hcm: &mut HttpConnectionManager, t: &TracingIr) {
    // Envoy sends the cluster name as the gRPC `:authority` unless told otherwise, and a name
    // with slashes is not a valid authority: a collector's is its address.
    let (cluster, authority) = match &t.collector {
        CollectorIr::ControlPlane => (TELEMETRY_CLUSTER.to_string(), String::new()),
        CollectorIr::Otlp(c) => (c.name.clone(), collector_authority(c)),
    };
    let config = OpenTelemetryConfig {
        grpc_service: Some(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: cluster,
                    authority,
                    ..Default::default()
                },
            )),
            timeout: Some(duration_ms(5_000)),
            ..Default::default()
        }),
        service_name: t.service_name.clone(),
        ..Default::default()
    };
    let percent = |value: f64| Some(Percent { value });
    hcm.tracing = Some(http_connection_manager::Tracing {
        random_sampling: percent(f64::from(t.sampling) / 100.0),
        // A client's `x-client-trace-id` forces a trace only where its context is trusted.
        client_sampling: percent(if t.trust_incoming_context { 100.0 } else { 0.0 }),
        overall_sampling: percent(100.0),
        custom_tags: t.custom_tags.iter().map(custom_tag).collect(),
        provider: Some(trace::Http {
            name: "envoy.tracers.opentelemetry".to_string(),
            config_type: Some(trace::http::ConfigType::TypedConfig(pack_any(config))),
        }),
        // The upstream request gets a span of its own (a child of the connection manager's).
        spawn_upstream_span: Some(BoolValue { value: true }),
        ..Default::default()
    });
    // The client learns its request's id (the key to its trace in /api/traces).
    hcm.always_set_request_id_in_response = true;
    if !t.trust_incoming_context {
        hcm.early_header_mutation_extensions
            .push(TypedExtensionConfig {
                name: "trellis.untrusted-trace-context".to_string(),
                typed_config: Some(pack_any(HeaderMutation {
                    mutations: CONTEXT_HEADERS
                        .iter()
                        .map(|h| Mutation {
                            action: Some(header_mutation::Action::Remove(h.to_string())),
                        })
                        .collect(),
                })),
            });
    }
}

/// A route's own sampling and tags.
pub fn route_tracing(t: &RouteTracingIr) -> envoy_types::pb::envoy::config::route::v3::Tracing {
    envoy_types::pb::envoy::config::route::v3::Tracing {
        random_sampling: Some(FractionalPercent {
            numerator: t.sampling,
            denominator: fractional_percent::DenominatorType::TenThousand as i32,
        }),
        custom_tags: t.custom_tags.iter().map(custom_tag).collect(),
        ..Default::default()
    }
}

fn custom_tag(t: &TagIr) -> CustomTag {
    let r#type = match &t.value {
        TagValueIr::Literal(value) => custom_tag::Type::Literal(custom_tag::Literal {
            value: value.clone(),
        }),
        TagValueIr::Header { name, default } => {
            custom_tag::Type::RequestHeader(custom_tag::Header {
                name: name.clone(),
                default_value: default.clone(),
            })
        }
        TagValueIr::Environment { name, default } => {
            custom_tag::Type::Environment(custom_tag::Environment {
                name: name.clone(),
                default_value: default.clone(),
            })
        }
        TagValueIr::FilterState(name) => {
            custom_tag::Type::Value(format!("%FILTER_STATE({name}:PLAIN)%"))
        }
    };
    CustomTag {
        tag: t.name.clone(),
        r#type: Some(r#type),
    }
}

/// `host:port` (`[v6]:port`) of a collector.
fn collector_authority(c: &CollectorClusterIr) -> String {
    if c.host.contains(':') {
        format!("[{}]:{}", c.host, c.port)
    } else {
        format!("{}:{}", c.host, c.port)
    }
}

/// The collectors the tracing of `chains` sends to, by cluster name.
pub fn collectors<'a>(
    tracing: impl Iterator<Item = &'a TracingIr>,
) -> BTreeMap<String, &'a CollectorClusterIr> {
    tracing
        .filter_map(|t| match &t.collector {
            CollectorIr::Otlp(c) => Some((c.name.clone(), c)),
            CollectorIr::ControlPlane => None,
        })
        .collect()
}

/// The cluster of a user's OTLP collector: HTTP/2 (gRPC), its name resolved by Envoy.
pub fn collector_cluster(c: &CollectorClusterIr) -> Cluster {
    let discovery = if c.host.parse::<std::net::IpAddr>().is_ok() {
        cluster::DiscoveryType::Static
    } else {
        cluster::DiscoveryType::StrictDns
    };
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions::default(),
                        ),
                    ),
                },
            ),
        ),
        ..Default::default()
    };
    Cluster {
        name: c.name.clone(),
        alt_stat_name: c.name.replace('/', "_"),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(discovery as i32)),
        connect_timeout: Some(duration_ms(5_000)),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            pack_any(options),
        )]
        .into(),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: c.name.clone(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(&c.host, c.port)),
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
