//! Encoded upstream tests, batch B (one module per upstream test under `group_b/`).

#[path = "group_b/httproute_cross_namespace.rs"]
mod httproute_cross_namespace;
#[path = "group_b/httproute_exact_path_matching.rs"]
mod httproute_exact_path_matching;
#[path = "group_b/httproute_header_matching.rs"]
mod httproute_header_matching;
#[path = "group_b/httproute_hostname_intersection.rs"]
mod httproute_hostname_intersection;
#[path = "group_b/httproute_invalid_backendref_unknown_kind.rs"]
mod httproute_invalid_backendref_unknown_kind;
#[path = "group_b/httproute_invalid_cross_namespace_backend_ref.rs"]
mod httproute_invalid_cross_namespace_backend_ref;
#[path = "group_b/httproute_invalid_cross_namespace_parent_ref.rs"]
mod httproute_invalid_cross_namespace_parent_ref;
#[path = "group_b/httproute_invalid_parentref_not_matching_listener_port.rs"]
mod httproute_invalid_parentref_not_matching_listener_port;
#[path = "group_b/httproute_invalid_parentref_not_matching_section_name.rs"]
mod httproute_invalid_parentref_not_matching_section_name;
#[path = "group_b/httproute_invalid_parentref_section_name_not_matching_port.rs"]
mod httproute_invalid_parentref_section_name_not_matching_port;
#[path = "group_b/httproute_invalid_reference_grant.rs"]
mod httproute_invalid_reference_grant;
#[path = "group_b/httproute_listener_hostname_matching.rs"]
mod httproute_listener_hostname_matching;
#[path = "group_b/httproute_listener_port_matching.rs"]
mod httproute_listener_port_matching;
#[path = "group_b/httproute_matching.rs"]
mod httproute_matching;
#[path = "group_b/httproute_matching_across_routes.rs"]
mod httproute_matching_across_routes;
#[path = "group_b/httproute_method_matching.rs"]
mod httproute_method_matching;
#[path = "group_b/httproute_omitted_backendrefs.rs"]
mod httproute_omitted_backendrefs;
#[path = "group_b/httproute_partially_invalid_via_invalid_reference_grant.rs"]
mod httproute_partially_invalid_via_invalid_reference_grant;
#[path = "group_b/httproute_path_match_order.rs"]
mod httproute_path_match_order;
#[path = "group_b/httproute_query_param_matching.rs"]
mod httproute_query_param_matching;
#[path = "group_b/httproute_reference_grant.rs"]
mod httproute_reference_grant;
#[path = "group_b/httproute_service_types.rs"]
mod httproute_service_types;

use crate::conformance::ConformanceTest;

/// The tests of this batch.
pub fn tests() -> Vec<ConformanceTest> {
    vec![
        httproute_cross_namespace::TEST,
        httproute_exact_path_matching::TEST,
        httproute_header_matching::TEST,
        httproute_hostname_intersection::TEST,
        httproute_invalid_backendref_unknown_kind::TEST,
        httproute_invalid_cross_namespace_backend_ref::TEST,
        httproute_invalid_cross_namespace_parent_ref::TEST,
        httproute_invalid_parentref_not_matching_listener_port::TEST,
        httproute_invalid_parentref_not_matching_section_name::TEST,
        httproute_invalid_parentref_section_name_not_matching_port::TEST,
        httproute_invalid_reference_grant::TEST,
        httproute_listener_hostname_matching::TEST,
        httproute_listener_port_matching::TEST,
        httproute_matching::TEST,
        httproute_matching_across_routes::TEST,
        httproute_method_matching::TEST,
        httproute_omitted_backendrefs::TEST,
        httproute_partially_invalid_via_invalid_reference_grant::TEST,
        httproute_path_match_order::TEST,
        httproute_query_param_matching::TEST,
        httproute_reference_grant::TEST,
        httproute_service_types::TEST,
    ]
}
