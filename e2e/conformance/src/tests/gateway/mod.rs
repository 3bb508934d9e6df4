//! Gateways and GatewayClasses: listeners, their conditions, attached routes, generations.

use crate::ConformanceTest;

mod gateway_http_listener_isolation;
mod gateway_invalid_parameters_ref;
mod gateway_invalid_route_kind;
mod gateway_invalid_tls_configuration;
mod gateway_listener_unsupported_protocol;
mod gateway_modify_listeners;
mod gateway_observed_generation_bump;
mod gateway_with_attached_routes;
mod gateway_with_attached_routes_with_port_8080;
mod gatewayclass_observed_generation_bump;

/// The tests of this group.
pub fn tests() -> Vec<ConformanceTest> {
    vec![
        gateway_http_listener_isolation::TEST,
        gateway_invalid_parameters_ref::TEST,
        gateway_invalid_route_kind::TEST,
        gateway_invalid_tls_configuration::TEST,
        gateway_listener_unsupported_protocol::TEST,
        gateway_modify_listeners::TEST,
        gateway_observed_generation_bump::TEST,
        gateway_with_attached_routes::TEST,
        gateway_with_attached_routes_with_port_8080::TEST,
        gatewayclass_observed_generation_bump::TEST,
    ]
}
