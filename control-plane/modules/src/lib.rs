//! Wasm modules for WasmFilters, obtained without ever holding up the control loop.
//!
//! ```text
//!  control loop ──want(modules)──► ModuleStore ──wake──► worker task (the loop never awaits it)
//!       ▲                             │                    ├─ local: a regular file under
//!       │ changes(): a module was     │                    │  --module-dir (size-capped while
//!       │ verified or failed, so      │                    │  reading, timed out)
//!       │ translate again             │                    ├─ url: an allow-listed host, HTTPS
//!       └─────────────────────────────┘                    │  unless HTTP is allowed (capped,
//!                                                          │  timed out, a few at once)
//!                                                          ▼
//!          sha256 matches? ──yes──► cache by digest (byte budget; evicts what nothing uses)
//!               └──no──► Problem (ChecksumMismatch; the digest of what was read is never told)
//!
//!  serve(digests the published configuration uses) ──► served(sha256) for GET /wasm/<sha256>
//! ```
//!
//! Rules, each the answer to a way a tenant's WasmFilter could hurt the control plane:
//! - A local `path` is read only inside the operator's module directory (absent: local paths
//!   are refused); only regular files, opened without following a final symlink and without
//!   blocking, read through a cap of [`Limits::max_module_bytes`] and a timeout.
//! - A `url` is fetched only when its host is on the operator's allow-list, over HTTPS unless
//!   plain HTTP is allowed too; redirects are not followed; the body is capped while read.
//! - Reads and fetches run on a worker task, at most [`Limits::max_concurrent_fetches`] at
//!   once and two per source (local reads, or one URL host), so a host that never answers holds
//!   up no other; a module that failed is retried on its own backoff (5 s doubling to 5 min),
//!   which nothing else resets.
//! - Verified bytes are kept within [`Limits::cache_bytes`]; modules nothing wants are evicted
//!   first (least recently used), and a module that does not fit is refused with a reason.
//! - Only digests that the published configuration uses (and the control plane's own modules)
//!   are served.

mod cache;
mod fetch;
mod local;
mod store;

pub use fetch::UrlPolicy;
pub use store::{ModuleStore, sha256_hex};

use std::path::PathBuf;
use std::time::Duration;

/// Bounds on what the store reads, holds and does at once.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The largest module accepted, in bytes.
    pub max_module_bytes: u64,
    /// The most bytes of verified modules held.
    pub cache_bytes: u64,
    /// How long reading a local module may take.
    pub read_timeout: Duration,
    /// How long fetching a URL may take, from connecting to the last byte.
    pub fetch_timeout: Duration,
    /// Reads and fetches running at once.
    pub max_concurrent_fetches: usize,
    /// The first retry of a module that failed, doubled after each failure.
    pub retry_initial: Duration,
    /// The longest wait between retries.
    pub retry_max: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_module_bytes: 64 << 20,
            cache_bytes: 256 << 20,
            read_timeout: Duration::from_secs(5),
            fetch_timeout: Duration::from_secs(15),
            max_concurrent_fetches: 8,
            retry_initial: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
        }
    }
}

/// Where modules may come from, and the bounds on getting them.
#[derive(Clone, Debug, Default)]
pub struct ModuleConfig {
    /// The only directory local module paths may name (absent: local paths are refused).
    pub module_dir: Option<PathBuf>,
    /// Which URLs may be fetched (the default fetches none).
    pub urls: UrlPolicy,
    /// The bounds.
    pub limits: Limits,
    /// Where verified modules are also kept on disk, so that they survive a restart of the
    /// control plane (a module whose URL has since gone stays available).
    pub disk_cache: Option<PathBuf>,
}
