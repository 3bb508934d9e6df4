//! HTTPRoute matches: paths, headers, methods, query parameters, and their precedence.

use crate::ConformanceTest;

mod httproute_exact_path_matching;
mod httproute_header_matching;
mod httproute_matching;
mod httproute_matching_across_routes;
mod httproute_method_matching;
mod httproute_path_match_order;
mod httproute_query_param_matching;

/// The tests of this group.
pub fn tests() -> Vec<ConformanceTest> {
    vec![
        httproute_exact_path_matching::TEST,
        httproute_header_matching::TEST,
        httproute_matching::TEST,
        httproute_matching_across_routes::TEST,
        httproute_method_matching::TEST,
        httproute_path_match_order::TEST,
        httproute_query_param_matching::TEST,
    ]
}
