//! `trellis-wasm-host`: a proxy-wasm host on wasmtime for testing filter modules without Envoy.
//!
//! Tests load the real `.wasm` a filter crate builds, start one or more VMs on a [`TestHost`]
//! (each VM is one Envoy worker; they share the host's shared data, metrics, log and clock),
//! configure them and drive HTTP streams through the ABI, then look at what the filter did:
//!
//! ```text
//!  build_module("my-filter-wasm") ─► Module::load ─► TestHost::start_vm ─► Vm::configure
//!                                                          │
//!       TestHost: shared data (CAS), metrics, logs, clock ◄┤ Vm::http_stream ─► HttpStream
//!                                                          │   on_request_headers / ...
//!                                                          └─► local_response, headers
//! ```
//!
//! | module | owns |
//! |---|---|
//! | `env` | proxy-wide state: shared data with CAS, metrics by name, logs, the clock |
//! | `abi` | the proxy-wasm and WASI host functions |
//! | `vm` | a VM's lifecycle and the HTTP streams through it |
//! | `build` | building a filter crate's module with cargo from a test |
//!
//! Implemented: logging, time, tick period, plugin/VM configuration and body buffers, header
//! maps (get/set/add/replace/remove/pairs), properties (the module's writes recorded per
//! stream: `HttpStream::properties_set`), shared data with CAS, counters, gauges
//! and histograms, local responses, continue; WASI `fd_write` (to the log), clocks, random,
//! empty environment and arguments. Everything else the module imports (HTTP/gRPC calls,
//! shared queues...) traps if called.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod abi;
mod build;
mod env;
mod vm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use abi::LocalResponse;
pub use build::build_module;
pub use env::{LogEntry, LogLevel, MetricKind};
pub use vm::{Action, HttpStream, Vm};

use env::{Env, lock};

/// What can go wrong loading or driving a module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The module file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// wasmtime could not compile the module (not Wasm, or unsupported features).
    #[error("cannot compile the module: {0}")]
    Compile(String),
    /// The module could not be instantiated (an import the host lacks, a start trap...).
    #[error("cannot instantiate the module: {0}")]
    Instantiate(String),
    /// The module lacks an export the host needs for this call.
    #[error("the module has no usable export `{name}`: {message}")]
    MissingExport {
        /// The export's name.
        name: String,
        /// wasmtime's explanation (absent, or a different signature).
        message: String,
    },
    /// `proxy_on_vm_start` returned false.
    #[error("the module refused to start (proxy_on_vm_start returned false)")]
    VmStartRefused,
    /// The module trapped (typically a panic in the filter); the VM is now unusable.
    #[error("the module trapped in {call}: {message}")]
    Trap {
        /// The export that was being called.
        call: String,
        /// The trap, with its Wasm backtrace.
        message: String,
    },
    /// A call on a VM that trapped earlier.
    #[error("the VM trapped earlier and cannot be used: {0}")]
    VmFailed(String),
    /// Building a filter crate with cargo failed.
    #[error("building {package} failed: {message}")]
    Build {
        /// The cargo package.
        package: String,
        /// cargo's output or the reason.
        message: String,
    },
}

/// A compiled filter module, ready to start VMs from. Cheap to clone.
#[derive(Clone)]
pub struct Module {
    module: wasmtime::Module,
}

fn engine() -> &'static wasmtime::Engine {
    static ENGINE: OnceLock<wasmtime::Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        // Tests care about compile time, not the speed of the generated code.
        config.cranelift_opt_level(wasmtime::OptLevel::None);
        wasmtime::Engine::new(&config).unwrap_or_else(|_| wasmtime::Engine::default())
    })
}

impl Module {
    /// Compiles the module at `path`. Modules are cached by path for the life of the process,
    /// so every test of a binary can call this without compiling again.
    pub fn load(path: impl AsRef<Path>) -> Result<Module, Error> {
        static CACHE: Mutex<BTreeMap<PathBuf, Module>> = Mutex::new(BTreeMap::new());
        let path = path.as_ref().to_path_buf();
        if let Some(module) = lock(&CACHE).get(&path) {
            return Ok(module.clone());
        }
        let bytes = std::fs::read(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let module = Module::from_bytes(&bytes)?;
        lock(&CACHE).insert(path, module.clone());
        Ok(module)
    }

    /// Compiles a module from its bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Module, Error> {
        let module = wasmtime::Module::new(engine(), bytes)
            .map_err(|error| Error::Compile(format!("{error:#}")))?;
        Ok(Module { module })
    }

    /// The module's imports as `module.name`, sorted (what a host must provide).
    pub fn imports(&self) -> Vec<String> {
        let mut imports: Vec<String> = self
            .module
            .imports()
            .map(|import| format!("{}.{}", import.module(), import.name()))
            .collect();
        imports.sort();
        imports
    }
}

/// A proxy: the state its VMs share (shared data, metrics, logs, clock).
pub struct TestHost {
    env: Arc<Env>,
    vms: AtomicUsize,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

impl TestHost {
    /// A fresh proxy whose clock starts at the current time and only moves when told to.
    pub fn new() -> TestHost {
        TestHost {
            env: Arc::new(Env::new()),
            vms: AtomicUsize::new(0),
        }
    }

    /// Starts a VM of `module` (`_initialize`, root context, `proxy_on_vm_start`) with an
    /// empty VM configuration. Configure it with [`Vm::configure`].
    pub fn start_vm(&self, module: &Module) -> Result<Vm, Error> {
        self.start_vm_with(module, b"")
    }

    /// Starts a VM with `vm_config` as its VM configuration.
    pub fn start_vm_with(&self, module: &Module, vm_config: &[u8]) -> Result<Vm, Error> {
        let index = self.vms.fetch_add(1, Ordering::Relaxed);
        let mut store =
            wasmtime::Store::new(engine(), abi::VmState::new(Arc::clone(&self.env), index));
        let mut linker = wasmtime::Linker::new(engine());
        abi::define(&mut linker).map_err(|error| Error::Instantiate(format!("{error:#}")))?;
        linker
            .define_unknown_imports_as_traps(&module.module)
            .map_err(|error| Error::Instantiate(format!("{error:#}")))?;
        let instance = linker
            .instantiate(&mut store, &module.module)
            .map_err(|error| Error::Instantiate(format!("{error:#}")))?;
        Vm::start(store, instance, vm_config)
    }

    /// Starts a VM and configures it; `Err` if either fails or the plugin refuses `config`.
    pub fn start_configured(&self, module: &Module, config: &str) -> Result<Vm, Error> {
        let mut vm = self.start_vm(module)?;
        if vm.configure(config)? {
            Ok(vm)
        } else {
            let reasons: Vec<String> = self.logs().into_iter().map(|l| l.message).collect();
            Err(Error::Instantiate(format!(
                "proxy_on_configure refused the configuration; log: {reasons:?}"
            )))
        }
    }

    /// The clock, in nanoseconds since the Unix epoch.
    pub fn now_nanos(&self) -> u64 {
        self.env.now()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = lock(&self.env.now_nanos);
        *now = now.saturating_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Sets the clock.
    pub fn set_time(&self, time: SystemTime) {
        let nanos = time
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos();
        *lock(&self.env.now_nanos) = u64::try_from(nanos).unwrap_or(u64::MAX);
    }

    /// A metric's value by name (as the module defined it), if defined.
    pub fn metric(&self, name: &str) -> Option<i64> {
        lock(&self.env.metrics).get(name).map(|(_, value)| *value)
    }

    /// Every defined metric and its value.
    pub fn metrics(&self) -> BTreeMap<String, i64> {
        lock(&self.env.metrics)
            .iter()
            .map(|(name, (_, value))| (name.clone(), *value))
            .collect()
    }

    /// Everything logged so far, by every VM.
    pub fn logs(&self) -> Vec<LogEntry> {
        lock(&self.env.logs).clone()
    }

    /// Whether any log line contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        lock(&self.env.logs)
            .iter()
            .any(|l| l.message.contains(text))
    }

    /// A shared data entry: its bytes and CAS version.
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        lock(&self.env.shared).get(key)
    }

    /// The names of every shared data entry, sorted.
    pub fn shared_keys(&self) -> Vec<String> {
        lock(&self.env.shared).keys()
    }

    /// Writes a shared data entry unconditionally.
    pub fn set_shared_data(&self, key: &str, value: &[u8]) {
        lock(&self.env.shared).set(key, value.to_vec(), 0);
    }

    /// Makes the next `times` compare-and-swap writes to `key` lose a race: just before each,
    /// "another worker" replaces the value with `rewrite(current)`, so the write fails with
    /// `CasMismatch` and the filter has to read again.
    pub fn interfere_with_cas_writes(
        &self,
        key: &str,
        times: usize,
        rewrite: impl FnMut(&[u8]) -> Vec<u8> + Send + 'static,
    ) {
        self.env.interfere(key, times, Box::new(rewrite));
    }

    /// How many compare-and-swap writes failed so far.
    pub fn cas_mismatches(&self) -> usize {
        lock(&self.env.shared).cas_mismatches
    }
}
