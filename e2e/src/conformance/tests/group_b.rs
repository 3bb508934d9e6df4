//! Encoded upstream tests, batch B (one module per upstream test under `group_b/`).

use crate::conformance::ConformanceTest;

/// The tests of this batch.
pub fn tests() -> Vec<ConformanceTest> {
    vec![]
}
