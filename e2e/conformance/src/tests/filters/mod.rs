//! HTTPRoute filters: header modifiers, redirects, rewrites, mirrors and CORS.

use crate::ConformanceTest;

mod httproute_303_redirect;
mod httproute_307_redirect;
mod httproute_308_redirect;
mod httproute_backend_request_header_modifier;
mod httproute_cors;
mod httproute_redirect_host_and_status;
mod httproute_redirect_path;
mod httproute_redirect_port;
mod httproute_redirect_port_and_scheme;
mod httproute_redirect_scheme;
mod httproute_request_header_modifier;
mod httproute_request_header_modifier_backend_weights;
mod httproute_request_mirror;
mod httproute_request_multiple_mirrors;
mod httproute_request_percentage_mirror;
mod httproute_response_header_modifier;
mod httproute_rewrite_host;
mod httproute_rewrite_path;

/// The tests of this group.
pub fn tests() -> Vec<ConformanceTest> {
    vec![
        httproute_303_redirect::TEST,
        httproute_307_redirect::TEST,
        httproute_308_redirect::TEST,
        httproute_backend_request_header_modifier::TEST,
        httproute_cors::TEST,
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
        httproute_rewrite_host::TEST,
        httproute_rewrite_path::TEST,
    ]
}
