//! HTTPRoute backends: weights, Service types, protocols, missing or invalid references, timeouts and retries.

use crate::ConformanceTest;

mod httproute_backend_protocol_h2c;
mod httproute_backend_protocol_websocket;
mod httproute_invalid_backendref_unknown_kind;
mod httproute_invalid_nonexistent_backendref;
mod httproute_omitted_backendrefs;
mod httproute_retry;
mod httproute_service_types;
mod httproute_timeout_backend_request;
mod httproute_timeout_request;
mod httproute_weight;

/// The tests of this group.
pub fn tests() -> Vec<ConformanceTest> {
    vec![
        httproute_backend_protocol_h2c::TEST,
        httproute_backend_protocol_websocket::TEST,
        httproute_invalid_backendref_unknown_kind::TEST,
        httproute_invalid_nonexistent_backendref::TEST,
        httproute_omitted_backendrefs::TEST,
        httproute_retry::TEST,
        httproute_service_types::TEST,
        httproute_timeout_backend_request::TEST,
        httproute_timeout_request::TEST,
        httproute_weight::TEST,
    ]
}
