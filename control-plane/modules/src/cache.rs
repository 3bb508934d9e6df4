//! Verified module bytes by digest, within a byte budget.

use bytes::Bytes;
use std::collections::HashMap;

/// Module bytes by hex SHA-256, evicting the least recently used of those nothing keeps.
#[derive(Debug)]
pub(crate) struct Cache {
    budget: u64,
    used: u64,
    clock: u64,
    modules: HashMap<String, Cached>,
}

#[derive(Debug)]
struct Cached {
    bytes: Bytes,
    last_used: u64,
}

impl Cache {
    pub(crate) fn new(budget: u64) -> Cache {
        Cache {
            budget,
            used: 0,
            clock: 0,
            modules: HashMap::new(),
        }
    }

    /// The bytes of `digest`, marking them used.
    pub(crate) fn get(&mut self, digest: &str) -> Option<Bytes> {
        self.clock += 1;
        let clock = self.clock;
        self.modules.get_mut(digest).map(|c| {
            c.last_used = clock;
            c.bytes.clone()
        })
    }

    /// Bytes held.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// Adds verified bytes, first evicting (least recently used first) modules for which `keep`
    /// is false until they fit. Fails, changing nothing, when they cannot fit.
    pub(crate) fn insert(
        &mut self,
        digest: &str,
        bytes: Bytes,
        keep: impl Fn(&str) -> bool,
    ) -> Result<(), String> {
        self.clock += 1;
        if let Some(cached) = self.modules.get_mut(digest) {
            cached.last_used = self.clock;
            return Ok(());
        }
        let size = bytes.len() as u64;
        let evictable: u64 = self
            .modules
            .iter()
            .filter(|(d, _)| !keep(d))
            .map(|(_, c)| c.bytes.len() as u64)
            .sum();
        if self.used - evictable + size > self.budget {
            return Err(format!(
                "the control plane's module cache ({} MiB) is full with modules in use; the \
                 operator can raise --module-cache-mib",
                self.budget >> 20
            ));
        }
        while self.used + size > self.budget {
            let Some(victim) = self
                .modules
                .iter()
                .filter(|(d, _)| !keep(d))
                .min_by_key(|(_, c)| c.last_used)
                .map(|(d, _)| d.clone())
            else {
                break;
            };
            if let Some(gone) = self.modules.remove(&victim) {
                self.used -= gone.bytes.len() as u64;
                tracing::info!(sha256 = %victim, bytes = gone.bytes.len(), "module evicted from the cache");
            }
        }
        self.used += size;
        self.modules.insert(
            digest.to_string(),
            Cached {
                bytes,
                last_used: self.clock,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn modules_nothing_keeps_are_evicted_least_recently_used_first() {
        let mut cache = Cache::new(30);
        let ten = || Bytes::from(vec![0u8; 10]);
        cache.insert("a", ten(), |_| false).unwrap();
        cache.insert("b", ten(), |_| false).unwrap();
        cache.insert("c", ten(), |_| false).unwrap();
        assert!(cache.get("a").is_some());
        cache.insert("d", ten(), |_| false).unwrap();
        assert!(cache.get("b").is_none(), "b was the least recently used");
        assert!(cache.get("a").is_some());
        assert_eq!(cache.used(), 30);
    }

    #[test]
    fn modules_in_use_are_never_evicted_and_a_module_that_cannot_fit_is_refused() {
        let mut cache = Cache::new(30);
        let ten = || Bytes::from(vec![0u8; 10]);
        cache.insert("a", ten(), |_| true).unwrap();
        cache.insert("b", ten(), |_| true).unwrap();
        cache.insert("c", ten(), |_| true).unwrap();
        let refused = cache.insert("d", ten(), |_| true).unwrap_err();
        assert!(refused.contains("full"), "{refused}");
        assert_eq!(cache.used(), 30);
        assert!(cache.get("d").is_none());
        // Once "b" is no longer in use, it makes room.
        cache.insert("d", ten(), |d| d != "b").unwrap();
        assert!(cache.get("b").is_none());
        assert!(
            cache
                .insert("huge", Bytes::from(vec![0u8; 31]), |_| false)
                .is_err()
        );
    }
}
