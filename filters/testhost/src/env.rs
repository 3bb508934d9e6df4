//! Proxy-wide state shared by every VM of a [`crate::TestHost`], as Envoy shares it between its
//! worker threads: shared data with compare-and-swap, metrics by name, the log, the clock.
//!
//! Each VM (one per emulated Envoy worker) has its own metric ids and contexts (see
//! `crate::vm`), but reads and writes this state through an `Arc`, so two VMs contend for the
//! same shared data entries exactly as two Envoy workers do.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A log level as proxy-wasm numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// 0
    Trace,
    /// 1
    Debug,
    /// 2
    Info,
    /// 3
    Warn,
    /// 4
    Error,
    /// 5
    Critical,
}

impl LogLevel {
    pub(crate) fn from_abi(level: i32) -> Option<LogLevel> {
        Some(match level {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }
}

/// One line a module logged (with `proxy_log`, or written to stdout/stderr through WASI, which
/// is recorded at [`LogLevel::Info`]/[`LogLevel::Error`] with a `stdout: `/`stderr: ` prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Which VM logged it (0 for the first VM started, 1 for the next...).
    pub vm: usize,
    /// The level.
    pub level: LogLevel,
    /// The message.
    pub message: String,
}

/// What a CAS-interference hook does to the stored value.
type Rewrite = Box<dyn FnMut(&[u8]) -> Vec<u8> + Send>;

#[derive(Default)]
pub(crate) struct SharedData {
    entries: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    interference: HashMap<String, (usize, Rewrite)>,
    pub(crate) cas_mismatches: usize,
}

/// The outcome of a shared data write.
pub(crate) enum SetOutcome {
    Written,
    CasMismatch,
}

impl SharedData {
    pub(crate) fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.entries.get(key).cloned()
    }

    pub(crate) fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.entries.keys().cloned().collect();
        keys.sort();
        keys
    }

    fn write(&mut self, key: &str, value: Vec<u8>) {
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.entries.insert(key.to_string(), (value, self.next_cas));
    }

    /// Envoy's semantics: a non-zero `cas` must equal the entry's current version (if the entry
    /// exists); zero writes unconditionally.
    pub(crate) fn set(&mut self, key: &str, value: Vec<u8>, cas: u32) -> SetOutcome {
        if cas != 0 {
            if let Some((times, rewrite)) = self.interference.get_mut(key)
                && *times > 0
            {
                *times -= 1;
                let current = self
                    .entries
                    .get(key)
                    .map(|(v, _)| v.clone())
                    .unwrap_or_default();
                let rewritten = rewrite(&current);
                self.write(key, rewritten);
            }
            if let Some((_, current)) = self.entries.get(key)
                && *current != cas
            {
                self.cas_mismatches += 1;
                return SetOutcome::CasMismatch;
            }
        }
        self.write(key, value);
        SetOutcome::Written
    }
}

/// A metric's kind, as `proxy_define_metric` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// 0: only goes up.
    Counter,
    /// 1: set or moved either way.
    Gauge,
    /// 2: recorded values (the test host keeps the last one).
    Histogram,
}

#[derive(Default)]
pub(crate) struct Env {
    pub(crate) shared: Mutex<SharedData>,
    pub(crate) metrics: Mutex<BTreeMap<String, (MetricKind, i64)>>,
    pub(crate) logs: Mutex<Vec<LogEntry>>,
    pub(crate) now_nanos: Mutex<u64>,
}

impl Env {
    pub(crate) fn new() -> Env {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos();
        let env = Env::default();
        *lock(&env.now_nanos) = u64::try_from(now).unwrap_or(u64::MAX);
        env
    }

    pub(crate) fn now(&self) -> u64 {
        *lock(&self.now_nanos)
    }

    pub(crate) fn log(&self, vm: usize, level: LogLevel, message: String) {
        lock(&self.logs).push(LogEntry { vm, level, message });
    }

    pub(crate) fn interfere(&self, key: &str, times: usize, rewrite: Rewrite) {
        lock(&self.shared)
            .interference
            .insert(key.to_string(), (times, rewrite));
    }
}

/// Locks a mutex, carrying on if another test thread panicked while holding it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
