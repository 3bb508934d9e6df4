//! Encoded upstream tests, batch A (one module per upstream test under `group_a/`).

use crate::conformance::ConformanceTest;

#[path = "group_a/gateway_http_listener_isolation.rs"]
mod gateway_http_listener_isolation;
#[path = "group_a/gateway_invalid_parameters_ref.rs"]
mod gateway_invalid_parameters_ref;
#[path = "group_a/gateway_invalid_route_kind.rs"]
mod gateway_invalid_route_kind;
#[path = "group_a/gateway_invalid_tls_configuration.rs"]
mod gateway_invalid_tls_configuration;
#[path = "group_a/gateway_listener_unsupported_protocol.rs"]
mod gateway_listener_unsupported_protocol;
#[path = "group_a/gateway_modify_listeners.rs"]
mod gateway_modify_listeners;
#[path = "group_a/gateway_secret_invalid_reference_grant.rs"]
mod gateway_secret_invalid_reference_grant;
#[path = "group_a/gateway_secret_missing_reference_grant.rs"]
mod gateway_secret_missing_reference_grant;
#[path = "group_a/gateway_secret_reference_grant_all_in_namespace.rs"]
mod gateway_secret_reference_grant_all_in_namespace;
#[path = "group_a/gateway_secret_reference_grant_specific.rs"]
mod gateway_secret_reference_grant_specific;
#[path = "group_a/gateway_with_attached_routes.rs"]
mod gateway_with_attached_routes;
#[path = "group_a/gateway_with_attached_routes_with_port_8080.rs"]
mod gateway_with_attached_routes_with_port_8080;
#[path = "group_a/gatewayclass_observed_generation_bump.rs"]
mod gatewayclass_observed_generation_bump;
#[path = "group_a/httproute_cors.rs"]
mod httproute_cors;
#[path = "group_a/httproute_https_listener.rs"]
mod httproute_https_listener;
#[path = "group_a/httproute_https_listener_detect_misdirected_requests.rs"]
mod httproute_https_listener_detect_misdirected_requests;
#[path = "group_a/httproute_multiple_gateways.rs"]
mod httproute_multiple_gateways;
#[path = "group_a/httproute_named_rule.rs"]
mod httproute_named_rule;
#[path = "group_a/httproute_observed_generation_bump.rs"]
mod httproute_observed_generation_bump;

/// The tests of this batch.
pub fn tests() -> Vec<ConformanceTest> {
    vec![
        gateway_http_listener_isolation::TEST,
        gateway_invalid_parameters_ref::TEST,
        gateway_invalid_route_kind::TEST,
        gateway_invalid_tls_configuration::TEST,
        gateway_listener_unsupported_protocol::TEST,
        gateway_modify_listeners::TEST,
        gateway_secret_invalid_reference_grant::TEST,
        gateway_secret_missing_reference_grant::TEST,
        gateway_secret_reference_grant_all_in_namespace::TEST,
        gateway_secret_reference_grant_specific::TEST,
        gateway_with_attached_routes::TEST,
        gateway_with_attached_routes_with_port_8080::TEST,
        gatewayclass_observed_generation_bump::TEST,
        httproute_cors::TEST,
        httproute_https_listener::TEST,
        httproute_https_listener_detect_misdirected_requests::TEST,
        httproute_multiple_gateways::TEST,
        httproute_named_rule::TEST,
        httproute_observed_generation_bump::TEST,
    ]
}
