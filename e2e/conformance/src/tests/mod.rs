//! The upstream tests of the GATEWAY-HTTP profile, re-encoded: one module per upstream test
//! (named after its manifest), each asserting what the upstream test asserts, grouped by the
//! Gateway API feature they exercise (Gateways, ReferenceGrant, route attachment, matching,
//! backends, filters).

mod backends;
pub mod catalog;
pub(crate) mod common;
mod filters;
mod gateway;
mod matching;
mod reference_grant;
mod route_attachment;

use super::ConformanceTest;

/// Every encoded test, in upstream's order.
pub fn all() -> Vec<ConformanceTest> {
    let mut tests = Vec::new();
    tests.extend(gateway::tests());
    tests.extend(reference_grant::tests());
    tests.extend(route_attachment::tests());
    tests.extend(matching::tests());
    tests.extend(backends::tests());
    tests.extend(filters::tests());
    tests.sort_by_key(|t| t.short_name);
    tests
}

/// GATEWAY-HTTP features Trellis implements (a test runs when all its features are here): the
/// list the translator reports in GatewayClass status, so the two cannot drift apart.
pub use trellis_translate::SUPPORTED_FEATURES;
