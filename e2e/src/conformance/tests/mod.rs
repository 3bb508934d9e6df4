//! The upstream tests of the GATEWAY-HTTP profile, re-encoded: one module per upstream test
//! (named after its manifest), each asserting what the upstream test asserts.

pub mod catalog;
mod common;
mod gateway_observed_generation_bump;
mod group_a;
mod group_b;
mod group_c;
mod httproute_invalid_nonexistent_backendref;
mod httproute_simple_same_namespace;
mod httproute_weight;

use super::ConformanceTest;

/// Every encoded test, in upstream's order.
pub fn all() -> Vec<ConformanceTest> {
    let mut tests = vec![
        gateway_observed_generation_bump::TEST,
        httproute_invalid_nonexistent_backendref::TEST,
        httproute_simple_same_namespace::TEST,
        httproute_weight::TEST,
    ];
    tests.extend(group_a::tests());
    tests.extend(group_b::tests());
    tests.extend(group_c::tests());
    tests.sort_by_key(|t| t.short_name);
    tests
}

/// GATEWAY-HTTP features Trellis implements (a test runs when all its features are here): the
/// list the translator reports in GatewayClass status, so the two cannot drift apart.
pub use trellis_translate::SUPPORTED_FEATURES;
