//! ReferenceGrant: certificates and backends in other namespaces, allowed or not.

use crate::ConformanceTest;

mod gateway_secret_invalid_reference_grant;
mod gateway_secret_missing_reference_grant;
mod gateway_secret_reference_grant_all_in_namespace;
mod gateway_secret_reference_grant_specific;
mod httproute_invalid_cross_namespace_backend_ref;
mod httproute_invalid_reference_grant;
mod httproute_partially_invalid_via_invalid_reference_grant;
mod httproute_reference_grant;

/// The tests of this group.
pub fn tests() -> Vec<ConformanceTest> {
    vec![
        gateway_secret_invalid_reference_grant::TEST,
        gateway_secret_missing_reference_grant::TEST,
        gateway_secret_reference_grant_all_in_namespace::TEST,
        gateway_secret_reference_grant_specific::TEST,
        httproute_invalid_cross_namespace_backend_ref::TEST,
        httproute_invalid_reference_grant::TEST,
        httproute_partially_invalid_via_invalid_reference_grant::TEST,
        httproute_reference_grant::TEST,
    ]
}
