//! One Wasm VM running a filter module, and the HTTP streams tests drive through it.
//!
//! A [`Vm`] is what Envoy runs per worker thread: one instance of the module with one root
//! context. It is started (`_initialize`, root context, `proxy_on_vm_start`), configured
//! ([`Vm::configure`], `proxy_on_configure`), and then opens [`HttpStream`]s, each an HTTP
//! context whose callbacks the test calls in Envoy's order:
//!
//! ```text
//! http_stream() ─► on_request_headers ─► [on_request_body] ─► on_response_headers ─► finish
//!  (context_create)                                                     (done, log, delete)
//! ```
//!
//! If the module traps (a panic in the filter), the call returns [`Error::Trap`] and the VM
//! refuses further calls, as Envoy's fail-closed VM would.

use std::time::Duration;

use wasmtime::{Instance, Store, TypedFunc, WasmParams, WasmResults};

use crate::Error;
use crate::abi::{LocalResponse, Stream, VmState, property_key};

/// What a callback told the host to do with the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Go on to the next filter.
    Continue,
    /// Stop iterating (e.g. after a local response).
    Pause,
    /// Another value (Envoy has extended actions).
    Other(i32),
}

impl Action {
    fn from_abi(value: i32) -> Action {
        match value {
            0 => Action::Continue,
            1 => Action::Pause,
            other => Action::Other(other),
        }
    }
}

/// The root context's id; HTTP contexts get 2, 3, ...
const ROOT_ID: i32 = 1;

/// A running instance of a module (one emulated Envoy worker).
pub struct Vm {
    store: Store<VmState>,
    instance: Instance,
    next_context: i32,
    failed: Option<String>,
}

impl Vm {
    pub(crate) fn start(
        mut store: Store<VmState>,
        instance: Instance,
        vm_config: &[u8],
    ) -> Result<Vm, Error> {
        store.data_mut().vm_config = vm_config.to_vec();
        let mut vm = Vm {
            store,
            instance,
            next_context: ROOT_ID + 1,
            failed: None,
        };
        if vm.has_export("_initialize") {
            vm.call::<(), ()>("_initialize", ())?;
        } else if vm.has_export("_start") {
            vm.call::<(), ()>("_start", ())?;
        }
        vm.call::<(i32, i32), ()>("proxy_on_context_create", (ROOT_ID, 0))?;
        let size = i32::try_from(vm_config.len()).unwrap_or(i32::MAX);
        let started = vm.call::<(i32, i32), i32>("proxy_on_vm_start", (ROOT_ID, size))?;
        if started == 0 {
            return Err(Error::VmStartRefused);
        }
        Ok(vm)
    }

    /// Hands `config` to the plugin (`proxy_on_configure`). `Ok(false)` means the plugin refused
    /// it: Envoy would reject the configuration (the reason is usually in [`crate::TestHost::logs`]).
    pub fn configure(&mut self, config: impl AsRef<[u8]>) -> Result<bool, Error> {
        let config = config.as_ref();
        self.store.data_mut().plugin_config = config.to_vec();
        let size = i32::try_from(config.len()).unwrap_or(i32::MAX);
        Ok(self.call::<(i32, i32), i32>("proxy_on_configure", (ROOT_ID, size))? != 0)
    }

    /// Sets a property every context of this VM sees (streams can override it).
    pub fn set_property(&mut self, path: &[&str], value: impl AsRef<[u8]>) {
        self.store
            .data_mut()
            .root_properties
            .insert(property_key(path), value.as_ref().to_vec());
    }

    /// The tick period the plugin asked for, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        let ms = self.store.data().tick_period_ms;
        (ms > 0).then(|| Duration::from_millis(u64::from(ms)))
    }

    /// Calls the root context's `proxy_on_tick`.
    pub fn tick(&mut self) -> Result<(), Error> {
        self.call::<i32, ()>("proxy_on_tick", ROOT_ID)
    }

    /// Opens an HTTP stream (a new HTTP context).
    pub fn http_stream(&mut self) -> Result<HttpStream<'_>, Error> {
        let id = self.next_context;
        self.next_context += 1;
        self.store
            .data_mut()
            .streams
            .insert(id as u32, Stream::default());
        self.call::<(i32, i32), ()>("proxy_on_context_create", (id, ROOT_ID))?;
        Ok(HttpStream {
            vm: self,
            id,
            finished: false,
        })
    }

    fn has_export(&mut self, name: &str) -> bool {
        self.instance.get_export(&mut self.store, name).is_some()
    }

    fn call<P: WasmParams, R: WasmResults>(&mut self, name: &str, params: P) -> Result<R, Error> {
        self.call_in(None, name, params)
    }

    /// Calls export `name` with `context` as the current HTTP context.
    fn call_in<P: WasmParams, R: WasmResults>(
        &mut self,
        context: Option<i32>,
        name: &str,
        params: P,
    ) -> Result<R, Error> {
        if let Some(message) = &self.failed {
            return Err(Error::VmFailed(message.clone()));
        }
        let func: TypedFunc<P, R> = self
            .instance
            .get_typed_func(&mut self.store, name)
            .map_err(|error| Error::MissingExport {
                name: name.to_string(),
                message: format!("{error:#}"),
            })?;
        self.store.data_mut().current = context.map(|id| id as u32);
        let result = func.call(&mut self.store, params);
        self.store.data_mut().current = None;
        result.map_err(|error| {
            let message = format!("{error:#}");
            self.failed = Some(message.clone());
            Error::Trap {
                call: name.to_string(),
                message,
            }
        })
    }
}

/// One HTTP request/response through a [`Vm`]'s filter.
pub struct HttpStream<'vm> {
    vm: &'vm mut Vm,
    id: i32,
    finished: bool,
}

const REQUEST_HEADERS: usize = 0;
const RESPONSE_HEADERS: usize = 2;

impl HttpStream<'_> {
    fn state(&self) -> &Stream {
        // Present from http_stream() until finish(); finish() consumes the stream.
        static EMPTY: std::sync::OnceLock<Stream> = std::sync::OnceLock::new();
        self.vm
            .store
            .data()
            .streams
            .get(&(self.id as u32))
            .unwrap_or_else(|| EMPTY.get_or_init(Stream::default))
    }

    fn state_mut(&mut self) -> &mut Stream {
        self.vm
            .store
            .data_mut()
            .streams
            .entry(self.id as u32)
            .or_default()
    }

    /// Sets a property only this stream sees (e.g. `["source", "address"]`).
    pub fn set_property(&mut self, path: &[&str], value: impl AsRef<[u8]>) -> &mut Self {
        self.state_mut()
            .properties
            .insert(property_key(path), value.as_ref().to_vec());
        self
    }

    /// Runs `proxy_on_request_headers` with these request headers (names are lowercased).
    pub fn on_request_headers(
        &mut self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action, Error> {
        self.state_mut().maps[REQUEST_HEADERS] = lowercase(headers);
        let count = i32::try_from(headers.len()).unwrap_or(i32::MAX);
        let action = self.vm.call_in::<(i32, i32, i32), i32>(
            Some(self.id),
            "proxy_on_request_headers",
            (self.id, count, i32::from(end_of_stream)),
        )?;
        Ok(Action::from_abi(action))
    }

    /// Runs `proxy_on_request_body` with `body` as the buffered body.
    pub fn on_request_body(&mut self, body: &[u8], end_of_stream: bool) -> Result<Action, Error> {
        self.state_mut().request_body = body.to_vec();
        let size = i32::try_from(body.len()).unwrap_or(i32::MAX);
        let action = self.vm.call_in::<(i32, i32, i32), i32>(
            Some(self.id),
            "proxy_on_request_body",
            (self.id, size, i32::from(end_of_stream)),
        )?;
        Ok(Action::from_abi(action))
    }

    /// Runs `proxy_on_response_headers` with these response headers (names are lowercased).
    pub fn on_response_headers(
        &mut self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action, Error> {
        self.state_mut().maps[RESPONSE_HEADERS] = lowercase(headers);
        let count = i32::try_from(headers.len()).unwrap_or(i32::MAX);
        let action = self.vm.call_in::<(i32, i32, i32), i32>(
            Some(self.id),
            "proxy_on_response_headers",
            (self.id, count, i32::from(end_of_stream)),
        )?;
        Ok(Action::from_abi(action))
    }

    /// The request headers as the filter left them.
    pub fn request_headers(&self) -> &[(String, String)] {
        &self.state().maps[REQUEST_HEADERS]
    }

    /// The response headers as the filter left them.
    pub fn response_headers(&self) -> &[(String, String)] {
        &self.state().maps[RESPONSE_HEADERS]
    }

    /// The first value of response header `name` as the filter left it.
    pub fn response_header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.response_headers()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of request header `name` as the filter left it.
    pub fn request_header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.request_headers()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The buffered request body as the filter left it.
    pub fn request_body(&self) -> &[u8] {
        &self.state().request_body
    }

    /// A property's current value in this stream: set by the module or the test (falling back
    /// to the VM's properties).
    pub fn property(&self, path: &[&str]) -> Option<&[u8]> {
        let key = property_key(path);
        self.state()
            .properties
            .get(&key)
            .or_else(|| self.vm.store.data().root_properties.get(&key))
            .map(Vec::as_slice)
    }

    /// Every property the module set in this stream (`proxy_set_property`), in order: the path
    /// segments and the value. What Envoy would store as filter state `wasm.<path>`.
    pub fn properties_set(&self) -> Vec<(Vec<String>, Vec<u8>)> {
        self.state()
            .properties_set
            .iter()
            .map(|(path, value)| {
                let segments = path
                    .split(|b| *b == 0)
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect();
                (segments, value.clone())
            })
            .collect()
    }

    /// The local response the filter sent, if any.
    pub fn local_response(&self) -> Option<&LocalResponse> {
        self.state().local_response.as_ref()
    }

    /// Stream types the filter resumed with `proxy_continue_stream` (0 request, 1 response).
    pub fn continued(&self) -> &[i32] {
        &self.state().continued
    }

    /// Ends the stream as Envoy does: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    pub fn finish(mut self) -> Result<(), Error> {
        self.end()
    }

    fn end(&mut self) -> Result<(), Error> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let id = self.id;
        let result = self
            .vm
            .call_in::<i32, i32>(Some(id), "proxy_on_done", id)
            .and_then(|_| self.vm.call_in::<i32, ()>(Some(id), "proxy_on_log", id))
            .and_then(|()| self.vm.call_in::<i32, ()>(Some(id), "proxy_on_delete", id));
        self.vm.store.data_mut().streams.remove(&(id as u32));
        result
    }
}

impl Drop for HttpStream<'_> {
    fn drop(&mut self) {
        // A stream the test did not finish is still torn down, so the next one starts clean.
        let _ = self.end();
    }
}

fn lowercase(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), (*v).to_string()))
        .collect()
}
