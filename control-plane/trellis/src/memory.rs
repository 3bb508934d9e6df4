//! Giving freed memory back to the system.
//!
//! glibc's allocator keeps memory freed by one configuration for the next, in every thread's
//! arena; after a large configuration shrinks, the process would keep its peak footprint.
//! [`Trimmer`] asks the allocator to return free pages a moment after each new configuration,
//! once the proxies have moved off the old one.

use std::time::Duration;
use tokio::sync::watch;

/// How long after a configuration change the trim runs: old snapshots are freed once every
/// stream has moved to the new one.
const DELAY: Duration = Duration::from_secs(1);

/// Schedules a trim after configuration changes; many changes close together trim once.
#[derive(Debug, Clone)]
pub struct Trimmer {
    tx: watch::Sender<u64>,
}

impl Trimmer {
    /// Starts the background task.
    pub fn spawn() -> Self {
        let (tx, mut rx) = watch::channel(0u64);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                tokio::time::sleep(DELAY).await;
                rx.borrow_and_update();
                let _ = tokio::task::spawn_blocking(release_free_memory).await;
            }
        });
        Self { tx }
    }

    /// Notes that a configuration was published.
    pub fn changed(&self) {
        self.tx.send_modify(|n| *n += 1);
    }
}

/// Returns the allocator's free pages to the system (glibc `malloc_trim`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointers and only walks the allocator's own free lists
    // under its locks; it is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other platforms' allocators return memory on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}
