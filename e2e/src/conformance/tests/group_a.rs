//! Encoded upstream tests, batch A (one module per upstream test under `group_a/`).

use crate::conformance::ConformanceTest;

/// The tests of this batch.
pub fn tests() -> Vec<ConformanceTest> {
    vec![]
}
