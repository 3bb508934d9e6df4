//! A fake Kubernetes API server for testing Trellis's Kubernetes provider without a cluster.
//!
//! It keeps arbitrary objects in memory and speaks the real REST protocol that kube-rs's
//! `Api`, `watcher` and `reflector` use: LIST with paging and selectors, WATCH as
//! newline-delimited JSON with bookmarks and in-stream 410s, GET/POST/PUT/PATCH/DELETE with
//! resourceVersion preconditions, merge/JSON patches and server-side apply, the `/status`
//! subresource, and `Status` errors shaped like the real ones. A test holds a [`Faults`] handle
//! to drop watches, compact history, refuse requests or add latency.
//!
//! ```text
//!   test ──► FakeApiServer (handle: kinds, store, faults, request log)
//!               │
//!               ├── client() ──► kube::Client::new(FakeService, "default")   (in-process)
//!               └── serve_local() ──► RunningServer on 127.0.0.1:PORT
//!                                        ├─ write_kubeconfig(path) ──► trellis --kubeconfig
//!                                        └─ client() (through the kubeconfig, over HTTP)
//!
//!   FakeService ─► faults ─► routing ─► Store (objects, resourceVersion, history) ─► watches
//! ```
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use trellis_fake_apiserver::{FakeApiServer, ResourceKind};
//! let server = FakeApiServer::builder()
//!     .kind(ResourceKind::new("policy.trellis.dev", "v1alpha1", "MeshPolicy", "meshpolicies", true))
//!     .build();
//! let client = server.client(); // in-process
//! server.faults().drop_watches();
//! let running = server.serve_local().await?; // over HTTP
//! running.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! # drop(client); Ok(()) }
//! ```
//!
//! Known approximations (also in the module docs where they live): lists always reflect the
//! latest state (`resourceVersion`/`resourceVersionMatch` on a list are ignored; continued pages
//! are read from the current state after the last key, not from a snapshot); strategic merge
//! patch is JSON merge patch; server-side apply treats lists as atomic and only tracks
//! ownership for Apply operations; namespaces need not exist; no authentication of clients,
//! admission, validation against schemas, or garbage collection of owner references.
//! `TokenReview` works for tokens the server issued ([`FakeApiServer::issue_token`]); Pod
//! creations go through the MutatingWebhookConfigurations stored (see `admission.rs`).

mod admin;
mod admission;
mod apply;
mod discovery;
mod error;
mod faults;
mod kinds;
mod load;
mod selector;
mod serve;
mod service;
mod store;
mod tokens;
mod watch;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

pub use error::{ApiError, Error};
pub use faults::{Faults, Refusal};
pub use kinds::{Registry, ResourceKind, builtin_kinds, split_api_version};
pub use load::kustomization_yaml;
pub use selector::{FieldSelector, LabelSelector};
pub use serve::{RunningServer, kubeconfig_yaml};
pub use service::{FakeService, RequestRecord, ResponseFuture};
pub use store::{
    Change, ChangeType, DEFAULT_HISTORY, ListOptions, Patch, Preconditions, Store, Subresource,
};
pub use tokens::{POD_NAME_EXTRA, POD_UID_EXTRA};

use service::{Settings, State};

/// Builds a [`FakeApiServer`].
#[derive(Debug, Clone)]
pub struct Builder {
    kinds: Vec<ResourceKind>,
    builtin: bool,
    history: usize,
    bookmark_interval: Duration,
    default_watch_timeout: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            kinds: Vec::new(),
            builtin: true,
            history: DEFAULT_HISTORY,
            bookmark_interval: Duration::from_secs(1),
            default_watch_timeout: Duration::from_secs(1800),
        }
    }
}

impl Builder {
    /// Registers a kind (in addition to the built-in ones, unless disabled).
    pub fn kind(mut self, kind: ResourceKind) -> Self {
        self.kinds.push(kind);
        self
    }

    /// Registers several kinds.
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = ResourceKind>) -> Self {
        self.kinds.extend(kinds);
        self
    }

    /// Starts without the [`builtin_kinds`].
    pub fn without_builtin_kinds(mut self) -> Self {
        self.builtin = false;
        self
    }

    /// How many changes are kept for watches to resume from (older ones get 410).
    pub fn history(mut self, changes: usize) -> Self {
        self.history = changes;
        self
    }

    /// How often open watches that allow bookmarks get one (default 1 s; the real server
    /// sends them about once a minute).
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// How long a watch without `timeoutSeconds` stays open (default 30 minutes).
    pub fn default_watch_timeout(mut self, timeout: Duration) -> Self {
        self.default_watch_timeout = timeout;
        self
    }

    /// Builds the server.
    pub fn build(self) -> FakeApiServer {
        let mut registry = Registry::default();
        if self.builtin {
            for k in builtin_kinds() {
                registry.register(k);
            }
        }
        for k in self.kinds {
            registry.register(k);
        }
        FakeApiServer {
            state: Arc::new(State {
                store: Arc::new(Store::new(self.history)),
                registry: RwLock::new(registry),
                faults: Arc::new(faults::FaultState::new()),
                settings: Settings {
                    bookmark_interval: self.bookmark_interval,
                    default_watch_timeout: self.default_watch_timeout,
                },
                requests: Mutex::new(Default::default()),
                tokens: Default::default(),
                webhook_routes: Default::default(),
            }),
        }
    }
}

/// A fake API server: a cheap, cloneable handle to one shared in-memory server.
#[derive(Debug, Clone)]
pub struct FakeApiServer {
    state: Arc<State>,
}

impl Default for FakeApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeApiServer {
    /// A server with the built-in kinds and default settings.
    pub fn new() -> Self {
        Builder::default().build()
    }

    /// A builder for other kinds and settings.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Registers a kind now (existing clients see it on their next request).
    pub fn register(&self, kind: ResourceKind) {
        self.state.register(kind);
    }

    /// Every registered kind.
    pub fn kinds(&self) -> Vec<ResourceKind> {
        self.state.registry().all().cloned().collect()
    }

    /// The kind registered as `apiVersion` + `kind`, e.g. `("gateway.networking.k8s.io/v1", "Gateway")`.
    pub fn kind(&self, api_version: &str, kind: &str) -> Option<ResourceKind> {
        self.state.registry().by_kind(api_version, kind).cloned()
    }

    /// Routes the webhook Service `namespace/name:port` (a MutatingWebhookConfiguration's
    /// `clientConfig.service`) to `address`: the fake has no cluster network. Pod creations then
    /// go through the webhooks stored, as with the real API server.
    pub fn route_webhook_service(
        &self,
        namespace: &str,
        name: &str,
        port: u16,
        address: std::net::SocketAddr,
    ) {
        self.state
            .webhook_routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((namespace.to_string(), name.to_string(), port), address);
    }

    /// A ServiceAccount token bound to pod `namespace/pod` (which must exist), for `audience`,
    /// valid for `ttl`: what the kubelet projects into the pod. `TokenReview` accepts it while
    /// the pod exists.
    pub fn issue_token(
        &self,
        namespace: &str,
        pod: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<String, ApiError> {
        self.state
            .tokens
            .issue(&self.state.store, namespace, pod, audience, ttl)
    }

    /// The store, for seeding and inspecting objects without going through HTTP (and without
    /// faults).
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The fault-injection handle.
    pub fn faults(&self) -> Faults {
        Faults {
            state: self.state.faults.clone(),
            store: self.state.store.clone(),
        }
    }

    /// The server as a tower service.
    pub fn service(&self) -> FakeService {
        FakeService {
            state: self.state.clone(),
        }
    }

    /// An in-process kube client (default namespace `default`). Call it inside a Tokio runtime.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.service(), "default")
    }

    /// Serves on `address` over HTTP.
    pub async fn serve(&self, address: SocketAddr) -> Result<RunningServer, Error> {
        RunningServer::start(self.clone(), address).await
    }

    /// Serves on `127.0.0.1` on a free port.
    pub async fn serve_local(&self) -> Result<RunningServer, Error> {
        self.serve(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Loads every object of every YAML/JSON file under `dir` (CRDs first); returns how many.
    pub fn load_dir(&self, dir: &Path) -> Result<usize, Error> {
        load::load_dir(&self.state, dir)
    }

    /// Loads the objects of one YAML stream; returns how many.
    pub fn load_yaml(&self, text: &str) -> Result<usize, ApiError> {
        load::load_text(&self.state, text)
    }

    /// The requests handled so far (the most recent 4096), oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
