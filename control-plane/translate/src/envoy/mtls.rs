//! Mutual TLS between sidecars: the transport sockets of both ends, whose certificate
//! (`default`) and root (`ROOTCA`) come from the pod's agent over SDS (`trellis-sds`, a Unix
//! socket the bootstrap defines), never from the control plane.
//!
//! ```text
//!  client sidecar ── cluster: transport_socket_matches {tlsMode: trellis} ──►
//!      TLS 1.3, ALPN "trellis", its certificate; the server's SAN must be one of the
//!      Service's pods' SPIFFE IDs (secure naming). Endpoints without the mark: plaintext.
//!  server sidecar ── inbound chain {transport: tls, ALPN trellis} ──► requires a client
//!      certificate of the mesh's root; the app sees the caller in x-forwarded-client-cert
//! ```

use super::*;
use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLog, AccessLogFilter, ComparisonFilter, OrFilter, ResponseFlagFilter, StatusCodeFilter,
    access_log, access_log_filter, comparison_filter,
};
use envoy_types::pb::envoy::config::core::v3::RuntimeUInt32;
use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, GrpcService, Metadata, TransportSocket, api_config_source, grpc_service,
    transport_socket,
};
use envoy_types::pb::envoy::config::core::v3::{
    SubstitutionFormatString, substitution_format_string,
};
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
    StdoutAccessLog, stdout_access_log,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, TlsParameters, UpstreamTlsContext, common_tls_context,
    subject_alt_name_matcher, tls_parameters,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{BoolValue, Struct, Value, value};
use envoy_types::util::pack_any;

/// The bootstrap's cluster of the pod agent's SDS socket (`trellis bootstrap --sds-socket`).
pub const AGENT_SDS_CLUSTER: &str = "trellis-sds";
/// The agent's secret holding the workload's certificate and key.
pub const WORKLOAD_CERTIFICATE: &str = "default";
/// The agent's secret holding the mesh's root certificate.
pub const ROOT_CERTIFICATE: &str = "ROOTCA";
/// The ALPN protocol of the mesh's own TLS, telling it apart from an app's TLS.
pub const MESH_ALPN: &str = "trellis";
/// The endpoint metadata a cluster's transport socket matches on.
const MATCH_NAMESPACE: &str = "envoy.transport_socket_match";
const MATCH_KEY: &str = "tlsMode";
const MATCH_VALUE: &str = "trellis";

/// A secret the pod's agent serves.
fn agent_secret(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ConfigSource {
            resource_api_version: ApiVersion::V3 as i32,
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource {
                    api_type: api_config_source::ApiType::Grpc as i32,
                    transport_api_version: ApiVersion::V3 as i32,
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                            grpc_service::EnvoyGrpc {
                                cluster_name: AGENT_SDS_CLUSTER.to_string(),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    }],
                    set_node_on_first_message_only: true,
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
    }
}

fn tls13() -> TlsParameters {
    TlsParameters {
        tls_minimum_protocol_version: tls_parameters::TlsProtocol::TlSv13 as i32,
        // Envoy's clients stop at TLS 1.2 unless told otherwise.
        tls_maximum_protocol_version: tls_parameters::TlsProtocol::TlSv13 as i32,
        ..Default::default()
    }
}

fn tls_socket(config: envoy_types::pb::google::protobuf::Any) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(config)),
    }
}

/// A client sidecar's TLS to a meshed endpoint: its own certificate, and the server's must
/// carry one of `identities` (SPIFFE IDs, as URI SANs).
pub fn upstream_mtls(identities: &[String]) -> TransportSocket {
    let matchers = identities
        .iter()
        .map(|id| SubjectAltNameMatcher {
            san_type: subject_alt_name_matcher::SanType::Uri as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(id.clone())),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    tls_socket(pack_any(UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(tls13()),
            tls_certificate_sds_secret_configs: vec![agent_secret(WORKLOAD_CERTIFICATE)],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_typed_subject_alt_names: matchers,
                            ..Default::default()
                        }),
                        validation_context_sds_secret_config: Some(agent_secret(ROOT_CERTIFICATE)),
                        ..Default::default()
                    },
                ),
            ),
            alpn_protocols: vec![MESH_ALPN.to_string()],
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// A server sidecar's TLS for meshed callers: its own certificate; the caller must present
/// one the mesh's root signed.
pub fn downstream_mtls() -> TransportSocket {
    tls_socket(pack_any(DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(tls13()),
            tls_certificate_sds_secret_configs: vec![agent_secret(WORKLOAD_CERTIFICATE)],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(
                    agent_secret(ROOT_CERTIFICATE),
                ),
            ),
            alpn_protocols: vec![MESH_ALPN.to_string()],
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    }))
}

/// The name of the cluster transport socket match for meshed endpoints.
pub fn mesh_match_name() -> &'static str {
    "mesh-mtls"
}

/// The match criteria of meshed endpoints, as a cluster's transport socket match states it.
pub fn mesh_match_criteria() -> Struct {
    Struct {
        fields: [(
            MATCH_KEY.to_string(),
            Value {
                kind: Some(value::Kind::StringValue(MATCH_VALUE.to_string())),
            },
        )]
        .into(),
    }
}

/// The metadata marking an endpoint as a meshed sidecar that takes mutual TLS.
pub fn mesh_endpoint_metadata() -> Metadata {
    Metadata {
        filter_metadata: [(MATCH_NAMESPACE.to_string(), mesh_match_criteria())].into(),
        ..Default::default()
    }
}

/// The access log of a sidecar with identities: a line per failed request (HTTP) or
/// connection (TCP) on Envoy's standard output, with the peers' SPIFFE IDs and why upstream
/// TLS failed.
pub fn access_log(direction: &str) -> AccessLog {
    let format = format!(
        "[%START_TIME%] {direction} \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% \
         %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %DURATION%ms \
         downstream_peer=%DOWNSTREAM_PEER_URI_SAN% upstream=%UPSTREAM_HOST% \
         upstream_peer=%UPSTREAM_PEER_URI_SAN% \
         upstream_tls_failure=%UPSTREAM_TRANSPORT_FAILURE_REASON%\n"
    );
    AccessLog {
        name: "envoy.access_loggers.stdout".to_string(),
        // Failures only: a 5xx, or anything Envoy flags (UF, NR, URX, …). Logging every
        // request tripled the p99 a sidecar pair adds (docs/benchmarks.md).
        filter: Some(AccessLogFilter {
            filter_specifier: Some(access_log_filter::FilterSpecifier::OrFilter(OrFilter {
                filters: vec![
                    AccessLogFilter {
                        filter_specifier: Some(
                            access_log_filter::FilterSpecifier::StatusCodeFilter(
                                StatusCodeFilter {
                                    comparison: Some(ComparisonFilter {
                                        op: comparison_filter::Op::Ge as i32,
                                        value: Some(RuntimeUInt32 {
                                            default_value: 500,
                                            runtime_key: "trellis.access_log.min_status"
                                                .to_string(),
                                        }),
                                    }),
                                },
                            ),
                        ),
                    },
                    AccessLogFilter {
                        filter_specifier: Some(
                            access_log_filter::FilterSpecifier::ResponseFlagFilter(
                                ResponseFlagFilter::default(),
                            ),
                        ),
                    },
                ],
            })),
        }),
        config_type: Some(access_log::ConfigType::TypedConfig(pack_any(
            StdoutAccessLog {
                access_log_format: Some(stdout_access_log::AccessLogFormat::LogFormat(
                    SubstitutionFormatString {
                        format: Some(substitution_format_string::Format::TextFormatSource(
                            DataSource {
                                specifier: Some(data_source::Specifier::InlineString(format)),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    },
                )),
            },
        ))),
    }
}
