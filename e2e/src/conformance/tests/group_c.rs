//! Encoded upstream tests, batch C (one module per upstream test under `group_c/`).

use crate::conformance::ConformanceTest;

/// The tests of this batch.
pub fn tests() -> Vec<ConformanceTest> {
    vec![]
}
