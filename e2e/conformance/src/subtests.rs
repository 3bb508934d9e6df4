//! Upstream's `t.Run` subtests: each subtest runs even when an earlier one failed (a failing
//! subtest stops only itself), and the test then fails listing every failed subtest. A failure
//! outside subtests still ends the test at once, through `?`.

use super::Suite;
use anyhow::bail;

/// The subtests of one test (or of one subtest), run one after the other.
#[derive(Debug, Default)]
pub struct Subtests {
    failures: Vec<String>,
}

impl Subtests {
    /// No subtest run yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs one subtest, noting its failure.
    pub fn run(
        &mut self,
        s: &mut Suite,
        name: &str,
        f: impl FnOnce(&mut Suite) -> anyhow::Result<()>,
    ) {
        s.logf(format!("subtest: {name}"));
        if let Err(e) = f(s) {
            let e = format!("{e:#}");
            // Request expectations already name their case.
            let failure = if e.starts_with(name) {
                e
            } else {
                format!("{name}: {e}")
            };
            s.logf(format!("subtest failed: {failure}"));
            self.failures.push(failure);
        }
    }

    /// The outcome: an error listing the failed subtests, if any.
    pub fn finish(self) -> anyhow::Result<()> {
        match self.failures.len() {
            0 => Ok(()),
            1 => bail!("subtest {}", self.failures.join("")),
            n => bail!("{n} subtests failed:\n- {}", self.failures.join("\n- ")),
        }
    }
}
