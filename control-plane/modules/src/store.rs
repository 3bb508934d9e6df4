//! The store: what the control loop wants, what the worker obtains, what proxies may fetch.

use crate::cache::Cache;
use crate::fetch::{self, Target};
use crate::local::{LocalError, ModuleDir};
use crate::{Limits, ModuleConfig};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use trellis_model::policy::WasmModule;
use trellis_translate::conditions::Reason;
use trellis_translate::policy::ModuleState;

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads, fetches, verifies, caches and serves Wasm modules. Cheap to clone; the worker stops
/// when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct ModuleStore {
    shared: Arc<Shared>,
    _worker: Arc<Worker>,
}

#[derive(Debug)]
struct Worker(tokio::task::JoinHandle<()>);

impl Drop for Worker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug)]
struct Shared {
    limits: Limits,
    dir: Option<ModuleDir>,
    urls: crate::UrlPolicy,
    /// Built on first use: the system's certificates are read only if a URL is fetched.
    tls: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
    disk: Option<PathBuf>,
    state: Mutex<State>,
    wake: Notify,
    changes: watch::Sender<u64>,
}

#[derive(Debug)]
struct State {
    wanted: BTreeSet<WasmModule>,
    entries: BTreeMap<WasmModule, Entry>,
    cache: Cache,
    /// Digests the published configuration uses.
    served: BTreeSet<String>,
    /// The control plane's own modules (the policy filter): always served, never evicted.
    pinned: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// To be read or fetched.
    Waiting,
    /// Being read or fetched, after `failures` failed attempts.
    InFlight { failures: u32 },
    /// In the cache, its digest checked.
    Verified,
    /// The last attempt failed; tried again at `retry_at`.
    Failed {
        reason: Reason,
        message: String,
        failures: u32,
        retry_at: Instant,
    },
    /// Not allowed by the operator's settings: not tried until the spec changes.
    Refused { message: String },
}

/// Why obtaining a module failed.
#[derive(Debug)]
enum Failure {
    /// The settings do not allow it: not retried.
    Refused(String),
    /// Could not be read or fetched, or over a bound: retried.
    Unavailable(String),
    /// The content is not what the spec's digest names: retried (the source may be fixed).
    Mismatch,
}

impl ModuleStore {
    /// Starts a store (and its worker, on the current Tokio runtime).
    pub fn start(config: ModuleConfig) -> std::io::Result<ModuleStore> {
        let dir = config
            .module_dir
            .as_deref()
            .map(ModuleDir::new)
            .transpose()?;
        if let Some(disk) = &config.disk_cache {
            std::fs::create_dir_all(disk)?;
        }
        let (changes, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            dir,
            urls: config.urls,
            tls: std::sync::OnceLock::new(),
            disk: config.disk_cache,
            state: Mutex::new(State {
                wanted: BTreeSet::new(),
                entries: BTreeMap::new(),
                cache: Cache::new(config.limits.cache_bytes),
                served: BTreeSet::new(),
                pinned: BTreeSet::new(),
            }),
            limits: config.limits,
            wake: Notify::new(),
            changes,
        });
        let worker = tokio::spawn(work(shared.clone()));
        Ok(ModuleStore {
            shared,
            _worker: Arc::new(Worker(worker)),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state()
    }

    /// Reads a module the control plane itself ships (the policy filter, an operator's flag),
    /// keeps it for good and returns its digest.
    pub fn pin_file(&self, path: &Path) -> std::io::Result<String> {
        let bytes = std::fs::read(path)?;
        let digest = sha256_hex(&bytes);
        let mut state = self.state();
        state.pinned.insert(digest.clone());
        let pinned = state.pinned.clone();
        state
            .cache
            .insert(&digest, Bytes::from(bytes), |d| pinned.contains(d))
            .map_err(std::io::Error::other)?;
        Ok(digest)
    }

    /// Sets the modules the configuration names (those of the current specs and of the last
    /// valid ones). New ones are read or fetched by the worker; this never waits for that.
    pub fn want(&self, modules: BTreeSet<WasmModule>) {
        let mut state = self.state();
        if state.wanted == modules {
            return;
        }
        state.entries.retain(|m, _| modules.contains(m));
        for module in &modules {
            if !state.entries.contains_key(module) {
                let entry = match self.shared.precheck(module) {
                    Ok(()) => Entry::Waiting,
                    Err(message) => Entry::Refused { message },
                };
                state.entries.insert(module.clone(), entry);
            }
        }
        state.wanted = modules;
        drop(state);
        self.shared.wake.notify_one();
    }

    /// What the translator should know of every wanted module (absent: not obtained yet).
    pub fn states(&self) -> BTreeMap<WasmModule, ModuleState> {
        let state = self.state();
        state
            .entries
            .iter()
            .filter_map(|(module, entry)| {
                let problem = |reason: Reason, message: &str| ModuleState::Problem {
                    reason,
                    message: message.to_string(),
                };
                match entry {
                    Entry::Waiting | Entry::InFlight { .. } => None,
                    Entry::Verified => Some(ModuleState::Verified),
                    Entry::Failed {
                        reason, message, ..
                    } => Some(problem(*reason, message)),
                    Entry::Refused { message } => Some(problem(Reason::ModuleNotFound, message)),
                }
                .map(|s| (module.clone(), s))
            })
            .collect()
    }

    /// Changes whenever a wanted module was verified or failed: time to translate again.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// Sets the digests proxies may fetch: those the published configuration uses.
    pub fn serve(&self, digests: BTreeSet<String>) {
        self.state().served = digests;
    }

    /// The bytes of a module proxies may fetch; `None` for anything the published
    /// configuration does not use.
    pub fn served(&self, sha256: &str) -> Option<Bytes> {
        let mut state = self.state();
        if !state.served.contains(sha256) && !state.pinned.contains(sha256) {
            return None;
        }
        state.cache.get(sha256)
    }

    /// Bytes of verified modules held.
    pub fn cached_bytes(&self) -> u64 {
        self.state().cache.used()
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What can be said about a module without reading or fetching anything.
    fn precheck(&self, module: &WasmModule) -> Result<(), String> {
        match (&module.path, &module.url) {
            (Some(_), None) if self.dir.is_none() => Err(LocalError::Disabled.to_string()),
            (Some(_), None) => Ok(()),
            (None, Some(url)) => self.urls.check(url).map(|_| ()),
            _ => Err("set exactly one of path and url".to_string()),
        }
    }

    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.tls
            .get_or_init(|| fetch::tls_config(&self.urls))
            .clone()
    }

    fn notify_change(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

/// The worker: starts reads and fetches that are due, at most `max_concurrent_fetches` at
/// once, and records their outcome.
async fn work(shared: Arc<Shared>) {
    let mut running: JoinSet<(WasmModule, Result<Bytes, Failure>)> = JoinSet::new();
    loop {
        let next_retry = start_due(&shared, &mut running);
        tokio::select! {
            () = shared.wake.notified() => {}
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok((module, result)) = done {
                    finish(&shared, module, result);
                }
            }
            () = sleep_until(next_retry) => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads or fetches of one source running at once: local reads share one slot group, each
/// URL host has its own, so a host that never answers cannot hold up the others.
const PER_SOURCE: usize = 2;

/// Which slot group a module's read or fetch takes.
fn slot(module: &WasmModule) -> String {
    match &module.url {
        Some(url) => url
            .parse::<hyper::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_ascii_lowercase))
            .unwrap_or_default(),
        None => String::new(),
    }
}

/// Starts what is due; returns when the next failed module is due again.
fn start_due(
    shared: &Arc<Shared>,
    running: &mut JoinSet<(WasmModule, Result<Bytes, Failure>)>,
) -> Option<Instant> {
    let now = Instant::now();
    let mut state = shared.state();
    let mut next = None::<Instant>;
    let mut busy: BTreeMap<String, usize> = BTreeMap::new();
    for module in state
        .entries
        .iter()
        .filter(|(_, e)| matches!(e, Entry::InFlight { .. }))
        .map(|(m, _)| m)
    {
        *busy.entry(slot(module)).or_default() += 1;
    }
    let modules: Vec<WasmModule> = state.entries.keys().cloned().collect();
    for module in modules {
        let failures = match state.entries.get(&module) {
            Some(Entry::Waiting) => 0,
            Some(Entry::Failed {
                retry_at, failures, ..
            }) if *retry_at <= now => *failures,
            Some(Entry::Failed { retry_at, .. }) => {
                next = Some(next.map_or(*retry_at, |n| n.min(*retry_at)));
                continue;
            }
            _ => continue,
        };
        let group = busy.entry(slot(&module)).or_default();
        if running.len() >= shared.limits.max_concurrent_fetches.max(1) || *group >= PER_SOURCE {
            continue;
        }
        *group += 1;
        state
            .entries
            .insert(module.clone(), Entry::InFlight { failures });
        let shared = shared.clone();
        running.spawn(async move {
            let result = obtain(&shared, &module).await;
            (module, result)
        });
    }
    next
}

/// Records the outcome of one read or fetch.
fn finish(shared: &Shared, module: WasmModule, result: Result<Bytes, Failure>) {
    let mut state = shared.state();
    let previous_failures = match state.entries.get(&module) {
        Some(Entry::InFlight { failures }) => *failures,
        // No longer wanted (or wanted anew meanwhile): the outcome is not used.
        _ => return,
    };
    let failed = |reason: Reason, message: String, failures: u32| {
        let delay = backoff(&shared.limits, failures);
        tracing::warn!(
            sha256 = %module.sha256,
            retry_in_secs = delay.as_secs(),
            "module unavailable: {message}"
        );
        Entry::Failed {
            reason,
            message,
            failures,
            retry_at: Instant::now() + delay,
        }
    };
    let entry = match result {
        Ok(bytes) => {
            let keep = keep_set(&state);
            let size = bytes.len();
            match state
                .cache
                .insert(&module.sha256, bytes, |d| keep.contains(d))
            {
                Ok(()) => {
                    tracing::info!(sha256 = %module.sha256, bytes = size, "module verified");
                    Entry::Verified
                }
                Err(message) => failed(Reason::ModuleNotFound, message, previous_failures + 1),
            }
        }
        Err(Failure::Refused(message)) => Entry::Refused { message },
        Err(Failure::Unavailable(message)) => {
            failed(Reason::ModuleNotFound, message, previous_failures + 1)
        }
        Err(Failure::Mismatch) => failed(
            Reason::ChecksumMismatch,
            "the module's content does not match spec.module.sha256".to_string(),
            previous_failures + 1,
        ),
    };
    state.entries.insert(module, entry);
    drop(state);
    shared.notify_change();
}

/// Digests that may not be evicted: pinned, served, or verified for a wanted module.
fn keep_set(state: &State) -> BTreeSet<String> {
    let mut keep: BTreeSet<String> = state.pinned.union(&state.served).cloned().collect();
    keep.extend(
        state
            .entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Verified))
            .map(|(m, _)| m.sha256.clone()),
    );
    keep
}

/// The wait after `failures` failures in a row: the initial delay doubled each time, capped.
fn backoff(limits: &Limits, failures: u32) -> std::time::Duration {
    let doublings = failures.saturating_sub(1).min(20);
    limits
        .retry_initial
        .saturating_mul(1 << doublings)
        .min(limits.retry_max)
}

/// Reads or fetches one module and checks its digest (the disk cache first, when it holds
/// what this very source delivered before).
async fn obtain(shared: &Shared, module: &WasmModule) -> Result<Bytes, Failure> {
    let source = source_of(module);
    if let Some(bytes) = read_disk(shared, module, &source).await {
        return Ok(bytes);
    }
    let max = shared.limits.max_module_bytes;
    let bytes = match (&module.path, &module.url) {
        (Some(path), None) => {
            let dir = shared
                .dir
                .clone()
                .ok_or_else(|| Failure::Refused(LocalError::Disabled.to_string()))?;
            let path = path.clone();
            let read = tokio::task::spawn_blocking(move || dir.read(&path, max));
            match tokio::time::timeout(shared.limits.read_timeout, read).await {
                Ok(Ok(Ok(bytes))) => Bytes::from(bytes),
                Ok(Ok(Err(e @ (LocalError::Disabled | LocalError::Outside { .. })))) => {
                    return Err(Failure::Refused(e.to_string()));
                }
                Ok(Ok(Err(e))) => return Err(Failure::Unavailable(e.to_string())),
                Ok(Err(e)) => return Err(Failure::Unavailable(format!("reading failed: {e}"))),
                Err(_) => {
                    return Err(Failure::Unavailable(format!(
                        "reading {} took longer than {:?}",
                        module.path.as_deref().unwrap_or_default(),
                        shared.limits.read_timeout
                    )));
                }
            }
        }
        (None, Some(url)) => {
            let target: Target = shared.urls.check(url).map_err(Failure::Refused)?;
            let tls = shared.tls().map_err(Failure::Unavailable)?;
            match tokio::time::timeout(
                shared.limits.fetch_timeout,
                fetch::fetch(&target, &tls, max),
            )
            .await
            {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(e)) => return Err(Failure::Unavailable(format!("cannot fetch {url}: {e}"))),
                Err(_) => {
                    return Err(Failure::Unavailable(format!(
                        "cannot fetch {url}: no answer within {:?}",
                        shared.limits.fetch_timeout
                    )));
                }
            }
        }
        _ => {
            return Err(Failure::Refused(
                "set exactly one of path and url".to_string(),
            ));
        }
    };
    let check = bytes.clone();
    let matches = tokio::task::spawn_blocking(move || sha256_hex(&check))
        .await
        .is_ok_and(|digest| digest == module.sha256);
    if !matches {
        return Err(Failure::Mismatch);
    }
    write_disk(shared, module, &source, &bytes).await;
    Ok(bytes)
}

fn source_of(module: &WasmModule) -> String {
    match (&module.path, &module.url) {
        (Some(path), _) => format!("path {path}"),
        (_, Some(url)) => format!("url {url}"),
        _ => String::new(),
    }
}

/// The disk cache's copy of a module, if this source delivered it before and it still
/// matches its digest.
async fn read_disk(shared: &Shared, module: &WasmModule, source: &str) -> Option<Bytes> {
    let dir = shared.disk.clone()?;
    let sha256 = module.sha256.clone();
    let source = source.to_string();
    let max = shared.limits.max_module_bytes;
    tokio::task::spawn_blocking(move || {
        let recorded = std::fs::read_to_string(dir.join(format!("{sha256}.source"))).ok()?;
        if recorded.lines().all(|l| l != source) {
            return None;
        }
        let cache = ModuleDir::new(&dir).ok()?;
        let bytes = cache.read(&format!("{sha256}.wasm"), max).ok()?;
        (sha256_hex(&bytes) == sha256).then(|| Bytes::from(bytes))
    })
    .await
    .ok()
    .flatten()
}

/// Keeps a verified module on disk, with the sources that delivered it.
async fn write_disk(shared: &Shared, module: &WasmModule, source: &str, bytes: &Bytes) {
    let Some(dir) = shared.disk.clone() else {
        return;
    };
    let sha256 = module.sha256.clone();
    let source = source.to_string();
    let bytes = bytes.clone();
    let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let wasm = dir.join(format!("{sha256}.wasm"));
        if !wasm.exists() {
            let tmp = dir.join(format!(".{sha256}.wasm.tmp"));
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, &wasm)?;
        }
        let sources = dir.join(format!("{sha256}.source"));
        let mut known = std::fs::read_to_string(&sources).unwrap_or_default();
        if known.lines().all(|l| l != source) {
            known.push_str(&source);
            known.push('\n');
            let tmp = dir.join(format!(".{sha256}.source.tmp"));
            std::fs::write(&tmp, known)?;
            std::fs::rename(&tmp, &sources)?;
        }
        Ok(())
    })
    .await;
    if let Ok(Err(e)) = result {
        tracing::warn!(sha256 = %module.sha256, "cannot keep the module on disk: {e}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::UrlPolicy;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn module(path: Option<&str>, url: Option<&str>, sha256: &str) -> WasmModule {
        WasmModule {
            path: path.map(str::to_string),
            url: url.map(str::to_string),
            sha256: sha256.to_string(),
        }
    }

    fn fast_limits() -> Limits {
        Limits {
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(400),
            read_timeout: Duration::from_secs(2),
            fetch_timeout: Duration::from_millis(500),
            ..Limits::default()
        }
    }

    /// Waits until `check` holds on the store's states (at most 5 s).
    async fn until(
        store: &ModuleStore,
        what: &str,
        check: impl Fn(&BTreeMap<WasmModule, ModuleState>) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut changes = store.changes();
        loop {
            if check(&store.states()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: still {:?}",
                store.states()
            );
            let _ = tokio::time::timeout(Duration::from_millis(50), changes.changed()).await;
        }
    }

    fn problem(
        states: &BTreeMap<WasmModule, ModuleState>,
        m: &WasmModule,
    ) -> Option<(String, String)> {
        match states.get(m) {
            Some(ModuleState::Problem { reason, message }) => {
                Some((reason.to_string(), message.clone()))
            }
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_module_in_the_module_dir_is_verified_and_served_only_once_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("m.wasm"), b"\0asm module").unwrap();
        let digest = sha256_hex(b"\0asm module");
        let store = ModuleStore::start(ModuleConfig {
            module_dir: Some(tmp.path().to_path_buf()),
            ..ModuleConfig::default()
        })
        .unwrap();
        let m = module(Some("m.wasm"), None, &digest);
        store.want([m.clone()].into());
        until(&store, "verified", |s| {
            s.get(&m) == Some(&ModuleState::Verified)
        })
        .await;
        assert!(store.served(&digest).is_none(), "not in use yet");
        store.serve([digest.clone()].into());
        assert_eq!(store.served(&digest).as_deref(), Some(&b"\0asm module"[..]));
        store.serve(BTreeSet::new());
        assert!(store.served(&digest).is_none());
    }

    #[tokio::test]
    async fn paths_are_refused_without_a_module_dir_and_outside_it_without_reading_them() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("modules")).unwrap();
        std::fs::write(tmp.path().join("token"), b"secret token").unwrap();
        let token = tmp.path().join("token").display().to_string();
        let token_digest = sha256_hex(b"secret token");
        let without = ModuleStore::start(ModuleConfig::default()).unwrap();
        let m = module(Some(&token), None, &"0".repeat(64));
        without.want([m.clone()].into());
        // Refused at once: nothing to wait for.
        let (reason, message) = problem(&without.states(), &m).unwrap();
        assert_eq!(reason, "ModuleNotFound");
        assert!(message.contains("--module-dir"), "{message}");

        let with = ModuleStore::start(ModuleConfig {
            module_dir: Some(tmp.path().join("modules")),
            ..ModuleConfig::default()
        })
        .unwrap();
        let exact = module(Some(&token), None, &token_digest);
        with.want([m.clone(), exact.clone()].into());
        until(&with, "refused", |s| {
            problem(s, &m).is_some() && problem(s, &exact).is_some()
        })
        .await;
        for m in [&m, &exact] {
            let (_, message) = problem(&with.states(), m).unwrap();
            assert!(message.contains("not inside"), "{message}");
            assert!(!message.contains(&token_digest), "{message}");
        }
        assert!(with.served(&token_digest).is_none());
        with.serve([token_digest.clone()].into());
        assert!(
            with.served(&token_digest).is_none(),
            "never read, never servable"
        );
    }

    #[tokio::test]
    async fn a_mismatch_never_tells_the_digest_of_what_was_read_and_is_retried_on_its_own_clock() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("m.wasm"), b"old content").unwrap();
        let want_digest = sha256_hex(b"new content");
        let store = ModuleStore::start(ModuleConfig {
            module_dir: Some(tmp.path().to_path_buf()),
            limits: fast_limits(),
            ..ModuleConfig::default()
        })
        .unwrap();
        let m = module(Some("m.wasm"), None, &want_digest);
        store.want([m.clone()].into());
        until(&store, "mismatch", |s| problem(s, &m).is_some()).await;
        let (reason, message) = problem(&store.states(), &m).unwrap();
        assert_eq!(reason, "ChecksumMismatch");
        assert!(!message.contains(&sha256_hex(b"old content")), "{message}");
        // The file is fixed; meanwhile unrelated changes keep arriving. The retry still comes.
        std::fs::write(tmp.path().join("m.wasm"), b"new content").unwrap();
        let churn = {
            let store = store.clone();
            let m = m.clone();
            tokio::spawn(async move {
                for i in 0..200 {
                    let other = module(Some(&format!("other-{i}.wasm")), None, &"1".repeat(64));
                    store.want([m.clone(), other].into());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        until(&store, "retried", |s| {
            s.get(&m) == Some(&ModuleState::Verified)
        })
        .await;
        churn.abort();
    }

    #[tokio::test]
    async fn urls_need_the_allow_list_and_a_hanging_host_holds_up_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("m.wasm"), b"local").unwrap();
        // A host that accepts connections and never answers.
        let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hang_addr = hang.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = hang.accept().await {
                held.push(s);
            }
        });
        let store = ModuleStore::start(ModuleConfig {
            module_dir: Some(tmp.path().to_path_buf()),
            urls: UrlPolicy {
                hosts: vec!["127.0.0.1".into()],
                allow_http: true,
                extra_roots: Vec::new(),
            },
            limits: Limits {
                fetch_timeout: Duration::from_secs(30),
                ..fast_limits()
            },
            ..ModuleConfig::default()
        })
        .unwrap();
        let hanging: Vec<WasmModule> = (0..10)
            .map(|i| {
                module(
                    None,
                    Some(&format!("http://{hang_addr}/m{i}.wasm")),
                    &"2".repeat(64),
                )
            })
            .collect();
        let refused = module(
            None,
            Some("http://169.254.169.254/latest/meta-data/"),
            &"3".repeat(64),
        );
        let local = module(Some("m.wasm"), None, &sha256_hex(b"local"));
        let mut all: BTreeSet<WasmModule> = hanging.iter().cloned().collect();
        all.insert(refused.clone());
        all.insert(local.clone());
        let started = std::time::Instant::now();
        store.want(all);
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "want() never waits"
        );
        let (_, message) = problem(&store.states(), &refused).unwrap();
        assert!(message.contains("allow-list"), "{message}");
        until(&store, "the local module", |s| {
            s.get(&local) == Some(&ModuleState::Verified)
        })
        .await;
        assert!(started.elapsed() < Duration::from_secs(2));
        for m in &hanging {
            assert!(!store.states().contains_key(m), "still being fetched");
        }
    }

    /// Serves `body` over plain HTTP or TLS to every connection.
    async fn serve_body(
        body: Vec<u8>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let body = body.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let respond = |mut s: Box<dyn Io>| async move {
                        let mut head = vec![0u8; 4096];
                        let _ = s.read(&mut head).await;
                        let header = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = s.write_all(header.as_bytes()).await;
                        let _ = s.write_all(&body).await;
                        let _ = s.shutdown().await;
                    };
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                respond(Box::new(s)).await;
                            }
                        }
                        None => respond(Box::new(stream)).await,
                    }
                });
            }
        });
        addr
    }

    trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
    impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

    #[tokio::test]
    async fn https_from_an_allowed_host_with_the_operators_ca_is_verified_and_kept_on_disk() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let body = b"\0asm fetched".to_vec();
        let addr = serve_body(
            body.clone(),
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))),
        )
        .await;
        let disk = tempfile::tempdir().unwrap();
        let config = ModuleConfig {
            urls: UrlPolicy {
                hosts: vec!["localhost".into()],
                allow_http: false,
                extra_roots: vec![ca.der().clone()],
            },
            disk_cache: Some(disk.path().to_path_buf()),
            limits: fast_limits(),
            ..ModuleConfig::default()
        };
        let store = ModuleStore::start(config.clone()).unwrap();
        let url = format!("https://localhost:{}/m.wasm", addr.port());
        let m = module(None, Some(&url), &sha256_hex(&body));
        store.want([m.clone()].into());
        until(&store, "fetched", |s| {
            s.get(&m) == Some(&ModuleState::Verified)
        })
        .await;
        drop(store);

        // After a restart, with the host gone from the allow-list's reach (another port), the
        // module comes from disk; a different source naming the same digest does not.
        let restarted = ModuleStore::start(config).unwrap();
        let other = module(
            None,
            Some("https://localhost:1/elsewhere.wasm"),
            &sha256_hex(&body),
        );
        restarted.want([m.clone(), other.clone()].into());
        until(&restarted, "from disk", |s| {
            s.get(&m) == Some(&ModuleState::Verified) && problem(s, &other).is_some()
        })
        .await;
    }

    #[tokio::test]
    async fn bodies_over_the_cap_are_refused_while_read_and_the_cache_bound_holds() {
        let big = vec![7u8; 2048];
        let addr = serve_body(big.clone(), None).await;
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..3 {
            std::fs::write(tmp.path().join(format!("m{i}.wasm")), vec![i as u8; 600]).unwrap();
        }
        let store = ModuleStore::start(ModuleConfig {
            module_dir: Some(tmp.path().to_path_buf()),
            urls: UrlPolicy {
                hosts: vec!["127.0.0.1".into()],
                allow_http: true,
                extra_roots: Vec::new(),
            },
            limits: Limits {
                max_module_bytes: 1024,
                cache_bytes: 1500,
                ..fast_limits()
            },
            ..ModuleConfig::default()
        })
        .unwrap();
        let over = module(
            None,
            Some(&format!("http://{addr}/big.wasm")),
            &sha256_hex(&big),
        );
        let locals: Vec<WasmModule> = (0..3)
            .map(|i| {
                module(
                    Some(&format!("m{i}.wasm")),
                    None,
                    &sha256_hex(&vec![i as u8; 600]),
                )
            })
            .collect();
        let mut all: BTreeSet<WasmModule> = locals.iter().cloned().collect();
        all.insert(over.clone());
        store.want(all);
        until(&store, "all settled", |s| s.len() == 4).await;
        let (_, message) = problem(&store.states(), &over).unwrap();
        assert!(message.contains("larger than 1024"), "{message}");
        let verified = locals
            .iter()
            .filter(|m| store.states().get(*m) == Some(&ModuleState::Verified))
            .count();
        assert_eq!(verified, 2, "two fit in 1500 bytes: {:?}", store.states());
        let full = locals
            .iter()
            .find_map(|m| problem(&store.states(), m))
            .unwrap();
        assert!(full.1.contains("cache"), "{full:?}");
        assert!(store.cached_bytes() <= 1500);
        // Once one is no longer wanted, the third fits.
        store.want(locals[1..].iter().cloned().collect());
        until(&store, "third verified", |s| {
            locals[1..]
                .iter()
                .all(|m| s.get(m) == Some(&ModuleState::Verified))
        })
        .await;
        assert!(store.cached_bytes() <= 1500);
    }
}
