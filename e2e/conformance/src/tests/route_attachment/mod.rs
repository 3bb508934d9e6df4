//! How HTTPRoutes attach: parentRefs by section and port, hostnames, namespaces, several Gateways, HTTPS listeners.

use crate::ConformanceTest;

mod httproute_cross_namespace;
mod httproute_hostname_intersection;
mod httproute_https_listener;
mod httproute_https_listener_detect_misdirected_requests;
mod httproute_invalid_cross_namespace_parent_ref;
mod httproute_invalid_parentref_not_matching_listener_port;
mod httproute_invalid_parentref_not_matching_section_name;
mod httproute_invalid_parentref_section_name_not_matching_port;
mod httproute_listener_hostname_matching;
mod httproute_listener_port_matching;
mod httproute_multiple_gateways;
mod httproute_named_rule;
mod httproute_observed_generation_bump;
mod httproute_simple_same_namespace;

/// The tests of this group.
pub fn tests() -> Vec<ConformanceTest> {
    vec![
        httproute_cross_namespace::TEST,
        httproute_hostname_intersection::TEST,
        httproute_https_listener::TEST,
        httproute_https_listener_detect_misdirected_requests::TEST,
        httproute_invalid_cross_namespace_parent_ref::TEST,
        httproute_invalid_parentref_not_matching_listener_port::TEST,
        httproute_invalid_parentref_not_matching_section_name::TEST,
        httproute_invalid_parentref_section_name_not_matching_port::TEST,
        httproute_listener_hostname_matching::TEST,
        httproute_listener_port_matching::TEST,
        httproute_multiple_gateways::TEST,
        httproute_named_rule::TEST,
        httproute_observed_generation_bump::TEST,
        httproute_simple_same_namespace::TEST,
    ]
}
