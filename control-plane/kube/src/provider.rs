//! The Kubernetes provider: the API server's objects, watched, as the same stream of
//! [`Load`]s the file provider produces.
//!
//! ```text
//!  per kind (and per namespace with --watch-namespaces):
//!    kube watcher (list + watch, bookmarks, backoff) ──events──┐
//!                                                              ▼
//!                          aggregator task: one store per watch, key → Entry
//!                            Entry { resourceVersion, last good Object, problem }
//!                             │                       │
//!              debounced, once every watch has        └──► Observed (status + resourceVersion of
//!              listed: InputSet + diagnostics                GatewayClasses, Gateways, HTTPRoutes)
//!                             ▼                                for the status writer
//!                    watch::Receiver<Arc<Load>>
//! ```
//!
//! Rules:
//! - Nothing is published until every watch has listed once: translating half the cluster
//!   would point routes at Services not read yet.
//! - A relist (a broken watch that cannot resume, a 410 Gone) buffers the listed objects and
//!   swaps them in when the list is complete (`InitDone`): objects are never removed just
//!   because a watch restarted, only when the fresh list no longer holds them.
//! - An object that does not read as its model type becomes a diagnostic naming its kind,
//!   namespace, name and field; its last good version stays in force.
//! - An object whose resourceVersion did not change is not read again, and one that reads the
//!   same as before keeps its `Arc`: a status write, or a relist of unchanged objects, publishes
//!   nothing.
//! - A change after at least `debounce` without a publish goes out after a short settle
//!   ([`trellis_sources::SETTLE`]); changes arriving within `debounce` of the last publish are
//!   gathered for `debounce` after the first of them, then published together.
//! - Watch errors are counted, logged once per cause per watch, and retried with a backoff of
//!   0.25 s doubling to 5 s; the last good configuration stays in force meanwhile. A 410 Gone
//!   is no error: it is logged at info and counted as a relist.

use crate::convert::{ObservedObject, convert, key_of, observe};
use crate::health::{Health, UNREACHABLE, unreachable};
use crate::kinds::{STATUS_KINDS, WATCHED, WatchedKind};
use futures::{StreamExt, TryStreamExt};
use kube::core::DynamicObject;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use trellis_model::{InputSet, Kind, Object, ObjectKey};
use trellis_sources::{Diagnostic, Load, Severity};

/// What `Diagnostic::file` says for problems with objects read from the API server.
pub const DIAGNOSTIC_SOURCE: &str = "kubernetes";

/// How the provider watches.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// Namespaces to watch; empty watches every namespace. GatewayClasses (cluster-scoped) are
    /// always watched; Namespace objects only for these namespaces.
    pub namespaces: Vec<String>,
    /// How long changes arriving within this time of the last publish are gathered before
    /// they are published (a change after a quiet period goes out after a short settle).
    pub debounce: Duration,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            debounce: Duration::from_millis(100),
        }
    }
}

/// The status of managed objects as the API server holds it now, kept current by the
/// provider's watches, for the status writer.
#[derive(Clone, Debug)]
pub struct Observed {
    inner: Arc<ObservedInner>,
}

#[derive(Debug)]
struct ObservedInner {
    objects: Mutex<BTreeMap<(Kind, ObjectKey), ObservedObject>>,
    changes: watch::Sender<u64>,
}

impl Default for Observed {
    fn default() -> Self {
        Self {
            inner: Arc::new(ObservedInner {
                objects: Mutex::default(),
                changes: watch::channel(0).0,
            }),
        }
    }
}

impl Observed {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Kind, ObjectKey), ObservedObject>> {
        self.inner
            .objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// One object's observed status.
    pub fn get(&self, kind: Kind, key: &ObjectKey) -> Option<ObservedObject> {
        self.lock().get(&(kind, key.clone())).cloned()
    }

    /// Every managed object's observed status.
    pub fn snapshot(&self) -> BTreeMap<(Kind, ObjectKey), ObservedObject> {
        self.lock().clone()
    }

    /// A receiver that changes whenever an observed status or resourceVersion changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Records an object's current state (for tests and the status writer's own results).
    pub fn set(&self, kind: Kind, key: ObjectKey, object: ObservedObject) {
        let changed = {
            let mut objects = self.lock();
            let previous = objects.insert((kind, key), object.clone());
            previous.as_ref() != Some(&object)
        };
        if changed {
            self.inner.changes.send_modify(|n| *n += 1);
        }
    }

    fn remove(&self, kind: Kind, key: &ObjectKey) {
        if self.lock().remove(&(kind, key.clone())).is_some() {
            self.inner.changes.send_modify(|n| *n += 1);
        }
    }
}

/// A running provider: the loads, and the observed statuses.
#[derive(Debug)]
pub struct Provider {
    /// Every consistent view of the watched objects, debounced; the first one holds every
    /// kind's initial list.
    pub loads: watch::Receiver<Arc<Load>>,
    /// The status of managed objects in the API.
    pub observed: Observed,
}

/// Starts watching and returns once every kind has been listed and the first [`Load`] is
/// published. While the API server cannot be reached this waits, retrying; [`Health`] says why.
pub async fn watch(client: Client, config: ProviderConfig, health: Arc<Health>) -> Provider {
    let specs = watch_specs(&config.namespaces);
    let (event_tx, event_rx) = mpsc::channel(1024);
    for (id, spec) in specs.iter().enumerate() {
        tokio::spawn(run_watch(
            id,
            client.clone(),
            spec.clone(),
            event_tx.clone(),
        ));
    }
    drop(event_tx);
    let observed = Observed::default();
    let (first_tx, first_rx) = oneshot::channel();
    let aggregator = Aggregator {
        watches: specs.into_iter().map(WatchState::new).collect(),
        health,
        observed: observed.clone(),
        debounce: config.debounce,
        dirty_since: None,
        window: config.debounce,
        last_publish: None,
        loads: None,
        first: Some(first_tx),
    };
    tokio::spawn(aggregator.run(event_rx));
    let loads = match first_rx.await {
        Ok(loads) => loads,
        // The aggregator only ends before the first load if every watch task ended, which
        // they do not; stay pending rather than publish an empty configuration.
        Err(_) => std::future::pending().await,
    };
    Provider { loads, observed }
}

/// One watch: a kind, cluster-wide or in one namespace.
#[derive(Clone, Debug)]
struct WatchSpec {
    kind: &'static WatchedKind,
    namespace: Option<String>,
}

impl WatchSpec {
    fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} in {ns}", self.kind.kind),
            None => self.kind.kind.to_string(),
        }
    }
}

fn watch_specs(namespaces: &[String]) -> Vec<WatchSpec> {
    let mut specs = Vec::new();
    for kind in WATCHED.iter() {
        if namespaces.is_empty() || (!kind.namespaced && kind.kind != Kind::Namespace) {
            specs.push(WatchSpec {
                kind,
                namespace: None,
            });
        } else {
            for ns in namespaces {
                specs.push(WatchSpec {
                    kind,
                    namespace: Some(ns.clone()),
                });
            }
        }
    }
    specs
}

type WatchItem = (usize, Result<Event<DynamicObject>, watcher::Error>);

async fn run_watch(id: usize, client: Client, spec: WatchSpec, tx: mpsc::Sender<WatchItem>) {
    let resource = spec.kind.api_resource();
    let mut config = watcher::Config::default();
    let api: Api<DynamicObject> = match (&spec.namespace, spec.kind.namespaced) {
        (Some(ns), true) => Api::namespaced_with(client, ns, &resource),
        (Some(ns), false) => {
            // A cluster-scoped kind scoped to namespaces: the Namespace objects themselves.
            config = config.fields(&format!("metadata.name={ns}"));
            Api::all_with(client, &resource)
        }
        (None, _) => Api::all_with(client, &resource),
    };
    if let Some(fields) = spec.kind.field_selector() {
        config = match config.field_selector.take() {
            Some(existing) => config.fields(&format!("{existing},{fields}")),
            None => config.fields(fields),
        };
    }
    let stream = watch_stream(api, config)
        .map_ok(|event| event.modify(|o| o.metadata.managed_fields = None))
        .backoff(RetryBackoff::default());
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        if tx.send((id, item)).await.is_err() {
            return;
        }
    }
}

/// Watch retry delays: 0.25 s doubling to 5 s, ±20 % jitter, reset by any event. Quicker than
/// kube's default (0.8 s to 30 s) so that updates resume within seconds of an outage.
#[derive(Debug)]
pub(crate) struct RetryBackoff {
    next: Duration,
    seed: u64,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Self {
            next: RetryBackoff::MIN,
            seed,
        }
    }
}

impl RetryBackoff {
    const MIN: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(5);
}

impl Iterator for RetryBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // xorshift: jitter needs no cryptographic randomness.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = 0.8 + (self.seed % 400) as f64 / 1000.0;
        let delay = self.next.mul_f64(jitter);
        self.next = (self.next * 2).min(Self::MAX);
        Some(delay)
    }
}

impl Backoff for RetryBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// One watched object.
#[derive(Clone, Debug)]
struct Entry {
    resource_version: String,
    /// The last version that read as a model object.
    object: Option<Object>,
    /// Why the current version does not read, if it does not.
    problem: Option<String>,
}

/// One watch's state in the aggregator.
#[derive(Debug)]
struct WatchState {
    spec: WatchSpec,
    /// Listed completely at least once.
    synced: bool,
    /// Objects of a list in progress, swapped in at `InitDone`.
    relisting: Option<Vec<DynamicObject>>,
    store: BTreeMap<ObjectKey, Entry>,
    /// The cause last logged, while the watch fails.
    failing: Option<String>,
}

impl WatchState {
    fn new(spec: WatchSpec) -> Self {
        Self {
            spec,
            synced: false,
            relisting: None,
            store: BTreeMap::new(),
            failing: None,
        }
    }
}

/// Why an optional kind's watch reads nothing: its definition is not installed.
const NOT_INSTALLED: &str = "CustomResourceDefinition not installed";

struct Aggregator {
    watches: Vec<WatchState>,
    health: Arc<Health>,
    observed: Observed,
    debounce: Duration,
    /// When the first unpublished change arrived.
    dirty_since: Option<Instant>,
    /// How long after `dirty_since` the change is published: the settle after a quiet period,
    /// else the debounce window.
    window: Duration,
    /// When the last load was published.
    last_publish: Option<Instant>,
    loads: Option<watch::Sender<Arc<Load>>>,
    first: Option<oneshot::Sender<watch::Receiver<Arc<Load>>>>,
}

impl Aggregator {
    async fn run(mut self, mut events: mpsc::Receiver<WatchItem>) {
        loop {
            let deadline = self.dirty_since.map(|since| since + self.window);
            tokio::select! {
                item = events.recv() => {
                    let Some((id, item)) = item else { return };
                    self.handle(id, item);
                }
                () = sleep_until(deadline), if deadline.is_some() => {}
            }
            let all_synced = self.watches.iter().all(|w| w.synced);
            if !all_synced {
                continue;
            }
            match (&self.loads, self.dirty_since) {
                // The first load goes out as soon as every watch has listed.
                (None, _) => {
                    self.health.set_synced();
                    let load = self.build();
                    info!(
                        objects = load.input.len(),
                        problems = load.diagnostics.len(),
                        "initial sync with the Kubernetes API server done"
                    );
                    log_diagnostics(&load.diagnostics, &[]);
                    let (tx, rx) = watch::channel(Arc::new(load));
                    self.loads = Some(tx);
                    self.dirty_since = None;
                    self.last_publish = Some(Instant::now());
                    if let Some(first) = self.first.take() {
                        let _ = first.send(rx);
                    }
                }
                (Some(_), Some(since)) if since.elapsed() >= self.window => {
                    self.dirty_since = None;
                    self.last_publish = Some(Instant::now());
                    let load = self.build();
                    if let Some(tx) = &self.loads {
                        let previous = tx.borrow().clone();
                        log_diagnostics(&load.diagnostics, &previous.diagnostics);
                        debug!(objects = load.input.len(), "objects changed in the API");
                        if tx.send(Arc::new(load)).is_err() {
                            return;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn mark_dirty(&mut self) {
        if self.dirty_since.is_none() {
            self.window = trellis_sources::change_window(self.last_publish, self.debounce);
            self.dirty_since = Some(Instant::now());
        }
    }

    fn handle(&mut self, id: usize, item: Result<Event<DynamicObject>, watcher::Error>) {
        match item {
            Ok(event) => {
                if self.apply(id, event) {
                    self.mark_dirty();
                }
            }
            Err(error) => self.failed(id, &error),
        }
    }

    /// Applies one event to its watch's store; returns whether the load changes.
    fn apply(&mut self, id: usize, event: Event<DynamicObject>) -> bool {
        let observed = &self.observed;
        let health = &self.health;
        let w = &mut self.watches[id];
        match w.failing.take() {
            Some(cause) if cause == NOT_INSTALLED => {
                info!(watch = %w.spec.describe(), "the kind's CustomResourceDefinition is installed; reading it")
            }
            // The end of an outage is logged once, by the probe.
            Some(cause) if cause == UNREACHABLE => {
                debug!(watch = %w.spec.describe(), "watch resumed");
            }
            Some(cause) => {
                info!(watch = %w.spec.describe(), previous_error = %cause, "watch resumed")
            }
            None => {}
        }
        let watched = w.spec.kind;
        match event {
            Event::Init => {
                if w.synced {
                    health.relist(watched.kind.name());
                    debug!(watch = %w.spec.describe(), "relisting; the objects in force stay until the list is complete");
                }
                w.relisting = Some(Vec::new());
                false
            }
            Event::InitApply(object) => {
                w.relisting.get_or_insert_with(Vec::new).push(object);
                false
            }
            Event::InitDone => {
                let listed = w.relisting.take().unwrap_or_default();
                let mut previous = std::mem::take(&mut w.store);
                let mut changed = !w.synced;
                for object in listed {
                    let key = key_of(&object);
                    let before = previous.remove(&key);
                    let (entry, c) = read(watched, &object, before, observed);
                    changed |= c;
                    w.store.insert(key, entry);
                }
                // What the fresh list no longer holds was deleted meanwhile.
                for key in previous.keys() {
                    changed = true;
                    observed.remove(watched.kind, key);
                }
                w.synced = true;
                changed
            }
            Event::Apply(object) => {
                let key = key_of(&object);
                let before = w.store.remove(&key);
                let (entry, changed) = read(watched, &object, before, observed);
                w.store.insert(key, entry);
                changed
            }
            Event::Delete(object) => {
                let key = key_of(&object);
                observed.remove(watched.kind, &key);
                w.store.remove(&key).is_some()
            }
        }
    }

    fn failed(&mut self, id: usize, error: &watcher::Error) {
        let w = &mut self.watches[id];
        if w.spec.kind.optional && status_code(error) == Some(404) {
            // The kind's CustomResourceDefinition is not installed (or was removed): it has no
            // objects. The watch keeps retrying, and reads the kind once it is installed.
            if w.failing.as_deref() != Some(NOT_INSTALLED) {
                info!(
                    watch = %w.spec.describe(),
                    "the kind's CustomResourceDefinition is not installed (deploy/crds); read as empty until it is"
                );
                w.failing = Some(NOT_INSTALLED.to_string());
            }
            let removed = !w.store.is_empty();
            for key in w.store.keys() {
                self.observed.remove(w.spec.kind.kind, key);
            }
            w.store.clear();
            w.relisting = None;
            w.synced = true;
            if removed {
                self.mark_dirty();
            }
            return;
        }
        if is_gone(error) {
            // Not a failure: the watch fell behind the server's history and relists (counted
            // as a relist when the list starts).
            info!(watch = %w.spec.describe(), "watch history expired (410 Gone); relisting");
            return;
        }
        let kind = w.spec.kind.kind.name();
        let description = describe_error(error);
        self.health.watch_error(kind, &description);
        let cause = if is_unreachable(error) {
            // Logged once for every watch and Lease by the health module.
            unreachable(&self.health, &description);
            if w.failing.as_deref() != Some(UNREACHABLE) {
                debug!(watch = %w.spec.describe(), error = %description, "watch failed; retrying with backoff");
            }
            w.failing = Some(UNREACHABLE.to_string());
            return;
        } else {
            description
        };
        if w.failing.as_deref() == Some(cause.as_str()) {
            debug!(watch = %w.spec.describe(), error = %cause, "watch still failing");
            return;
        }
        let hint = match status_code(error) {
            Some(404) => " (is the kind's CustomResourceDefinition installed?)",
            Some(401 | 403) => {
                " (does the service account have list and watch on it? see deploy/kubernetes/base/rbac.yaml)"
            }
            _ => "",
        };
        warn!(
            watch = %w.spec.describe(),
            error = %cause,
            "watch failed{hint}; retrying with backoff, the last good configuration stays in force"
        );
        w.failing = Some(cause);
    }

    /// The objects in force and the problems, from every watch's store.
    fn build(&self) -> Load {
        let mut input = InputSet::default();
        let mut diagnostics = Vec::new();
        for w in &self.watches {
            for (key, entry) in &w.store {
                if let Some(object) = &entry.object {
                    input.insert(object.clone());
                }
                if let Some(problem) = &entry.problem {
                    let kept = if entry.object.is_some() {
                        "its last good version stays in force"
                    } else {
                        "it is ignored until it is fixed"
                    };
                    diagnostics.push(Diagnostic {
                        severity: Severity::Error,
                        file: DIAGNOSTIC_SOURCE.to_string(),
                        document: None,
                        line: None,
                        object: Some(format!("{} {key}", w.spec.kind.kind)),
                        message: format!("{problem}; {kept}"),
                    });
                }
            }
        }
        diagnostics.sort();
        Load { input, diagnostics }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Reads an object into an entry, reusing the previous entry when nothing changed. Returns the
/// entry and whether the load changes.
fn read(
    watched: &WatchedKind,
    object: &DynamicObject,
    before: Option<Entry>,
    observed: &Observed,
) -> (Entry, bool) {
    let resource_version = object.metadata.resource_version.clone().unwrap_or_default();
    if let Some(before) = &before
        && before.resource_version == resource_version
        && !resource_version.is_empty()
    {
        return (before.clone(), false);
    }
    if STATUS_KINDS.contains(&watched.kind) {
        observed.set(watched.kind, key_of(object), observe(object));
    }
    let (previous_object, previous_problem) = match before {
        Some(b) => (b.object, b.problem),
        None => (None, None),
    };
    match convert(watched, object) {
        Ok(next) => {
            let same = previous_object.as_ref() == Some(&next);
            let changed = !same || previous_problem.is_some();
            let object = if same { previous_object } else { Some(next) };
            (
                Entry {
                    resource_version,
                    object,
                    problem: None,
                },
                changed,
            )
        }
        Err(problem) => {
            let changed = previous_problem.as_ref() != Some(&problem);
            (
                Entry {
                    resource_version,
                    object: previous_object,
                    problem: Some(problem),
                },
                changed,
            )
        }
    }
}

/// The error in one line, the same for the same cause (so it is logged once).
fn describe_error(error: &watcher::Error) -> String {
    match error {
        watcher::Error::WatchError(status) => {
            format!("{} ({})", status.message, status.code)
        }
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => client_error(e),
        watcher::Error::NoResourceVersion => error.to_string(),
    }
}

fn client_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!(
            "{} ({} {})",
            status.message.trim(),
            status.code,
            status.reason
        ),
        other => {
            // Follow the source chain: hyper's errors say little at the top.
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let s_text = s.to_string();
                if !text.contains(&s_text) {
                    text = format!("{text}: {s_text}");
                }
                source = s.source();
            }
            text
        }
    }
}

/// The HTTP status of an error the API server answered.
fn status_code(error: &watcher::Error) -> Option<u16> {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}

fn is_gone(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::WatchError(status) if status.code == 410)
}

/// Whether an error means the API server could not be reached or answered with a server error.
fn is_unreachable(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => match e {
            kube::Error::Api(status) => status.code >= 500 || status.code == 429,
            _ => true,
        },
        watcher::Error::WatchError(status) => status.code >= 500,
        watcher::Error::NoResourceVersion => false,
    }
}

/// Logs diagnostics that are new since the previous load.
fn log_diagnostics(current: &[Diagnostic], previous: &[Diagnostic]) {
    for d in current.iter().filter(|d| !previous.contains(d)) {
        match d.severity {
            Severity::Error => warn!("{d}"),
            Severity::Warning => info!("{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_watches_cover_each_namespace_and_keep_gateway_classes_cluster_wide() {
        let specs = watch_specs(&["a".to_string(), "b".to_string()]);
        let classes: Vec<_> = specs
            .iter()
            .filter(|s| s.kind.kind == Kind::GatewayClass)
            .collect();
        assert_eq!(classes.len(), 1);
        assert!(classes[0].namespace.is_none());
        let namespaces: Vec<_> = specs
            .iter()
            .filter(|s| s.kind.kind == Kind::Namespace)
            .filter_map(|s| s.namespace.clone())
            .collect();
        assert_eq!(namespaces, ["a", "b"]);
        assert_eq!(
            specs
                .iter()
                .filter(|s| s.kind.kind == Kind::HttpRoute)
                .count(),
            2
        );
        assert_eq!(watch_specs(&[]).len(), WATCHED.len());
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = RetryBackoff::default();
        let first = b.next().expect("a delay");
        assert!(first >= Duration::from_millis(200) && first <= Duration::from_millis(300));
        for _ in 0..10 {
            b.next();
        }
        let capped = b.next().expect("a delay");
        assert!(capped <= Duration::from_secs(6), "{capped:?}");
        b.reset();
        assert!(b.next().expect("a delay") <= Duration::from_millis(300));
    }
}
