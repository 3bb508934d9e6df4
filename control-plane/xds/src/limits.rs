//! Counting the times a bound refused a client, for metrics and for logs that a flood cannot
//! turn into a flood of log lines.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a bound that keeps being hit is logged again.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Hits of every bound of every server, by `(server, limit)`.
#[derive(Debug, Default)]
pub struct LimitHits {
    inner: Mutex<BTreeMap<(&'static str, &'static str), Hit>>,
}

#[derive(Debug, Default)]
struct Hit {
    count: u64,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl LimitHits {
    /// Counts a hit of `limit` on `server` (`xds`, `admin`, `modules`) and logs it: the first
    /// time, then at most every ten seconds with the number of hits since the last line.
    pub fn hit(&self, server: &'static str, limit: &'static str, detail: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let hit = inner.entry((server, limit)).or_default();
        hit.count += 1;
        hit.unlogged += 1;
        let due = hit.last_log.is_none_or(|at| at.elapsed() >= LOG_EVERY);
        if due {
            tracing::warn!(
                server,
                limit,
                hits = hit.unlogged,
                "a client hit a limit and was refused: {detail}"
            );
            hit.last_log = Some(Instant::now());
            hit.unlogged = 0;
        }
    }

    /// Every `(server, limit, hits)` so far.
    pub fn counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .iter()
            .map(|((server, limit), hit)| (*server, *limit, hit.count))
            .collect()
    }

    /// Hits of one limit.
    pub fn count(&self, server: &str, limit: &str) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .iter()
            .filter(|((s, l), _)| *s == server && *l == limit)
            .map(|(_, hit)| hit.count)
            .sum()
    }
}
