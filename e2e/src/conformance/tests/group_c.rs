//! Encoded upstream tests, batch C (one module per upstream test under `group_c/`).

use crate::conformance::ConformanceTest;

#[path = "group_c/httproute_303_redirect.rs"]
mod httproute_303_redirect;
#[path = "group_c/httproute_307_redirect.rs"]
mod httproute_307_redirect;
#[path = "group_c/httproute_308_redirect.rs"]
mod httproute_308_redirect;
#[path = "group_c/httproute_backend_protocol_h2c.rs"]
mod httproute_backend_protocol_h2c;
#[path = "group_c/httproute_backend_protocol_websocket.rs"]
mod httproute_backend_protocol_websocket;
#[path = "group_c/httproute_backend_request_header_modifier.rs"]
mod httproute_backend_request_header_modifier;
#[path = "group_c/httproute_redirect_host_and_status.rs"]
mod httproute_redirect_host_and_status;
#[path = "group_c/httproute_redirect_path.rs"]
mod httproute_redirect_path;
#[path = "group_c/httproute_redirect_port.rs"]
mod httproute_redirect_port;
#[path = "group_c/httproute_redirect_port_and_scheme.rs"]
mod httproute_redirect_port_and_scheme;
#[path = "group_c/httproute_redirect_scheme.rs"]
mod httproute_redirect_scheme;
#[path = "group_c/httproute_request_header_modifier.rs"]
mod httproute_request_header_modifier;
#[path = "group_c/httproute_request_header_modifier_backend_weights.rs"]
mod httproute_request_header_modifier_backend_weights;
#[path = "group_c/httproute_request_mirror.rs"]
mod httproute_request_mirror;
#[path = "group_c/httproute_request_multiple_mirrors.rs"]
mod httproute_request_multiple_mirrors;
#[path = "group_c/httproute_request_percentage_mirror.rs"]
mod httproute_request_percentage_mirror;
#[path = "group_c/httproute_response_header_modifier.rs"]
mod httproute_response_header_modifier;
#[path = "group_c/httproute_retry.rs"]
mod httproute_retry;
#[path = "group_c/httproute_rewrite_host.rs"]
mod httproute_rewrite_host;
#[path = "group_c/httproute_rewrite_path.rs"]
mod httproute_rewrite_path;
#[path = "group_c/httproute_timeout_backend_request.rs"]
mod httproute_timeout_backend_request;
#[path = "group_c/httproute_timeout_request.rs"]
mod httproute_timeout_request;

/// The tests of this batch.
pub fn tests() -> Vec<ConformanceTest> {
    vec![
        httproute_303_redirect::TEST,
        httproute_307_redirect::TEST,
        httproute_308_redirect::TEST,
        httproute_backend_protocol_h2c::TEST,
        httproute_backend_protocol_websocket::TEST,
        httproute_backend_request_header_modifier::TEST,
        httproute_redirect_host_and_status::TEST,
        httproute_redirect_path::TEST,
        httproute_redirect_port::TEST,
        httproute_redirect_port_and_scheme::TEST,
        httproute_redirect_scheme::TEST,
        httproute_request_header_modifier::TEST,
        httproute_request_header_modifier_backend_weights::TEST,
        httproute_request_mirror::TEST,
        httproute_request_multiple_mirrors::TEST,
        httproute_request_percentage_mirror::TEST,
        httproute_response_header_modifier::TEST,
        httproute_retry::TEST,
        httproute_rewrite_host::TEST,
        httproute_rewrite_path::TEST,
        httproute_timeout_backend_request::TEST,
        httproute_timeout_request::TEST,
    ]
}
