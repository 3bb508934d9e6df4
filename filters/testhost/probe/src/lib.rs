//! A test fixture for `trellis-wasm-host`: a proxy-wasm module whose request callback performs
//! the host call named by the `x-probe` request header and reports what it saw in request
//! headers, so the host's ABI functions are checked against the real proxy-wasm Rust SDK.
//!
//! | `x-probe` | does |
//! |---|---|
//! | `pairs` | reads all request headers, adds `x-probe-count: <n>` |
//! | `add` | adds `x-added: 1` twice |
//! | `remove` | removes `x-remove-me` |
//! | `set-pairs` | replaces all request headers with `:path: /rewritten`, `x-only: 1` |
//! | `continue` | resumes the request itself, returns Pause |
//! | `metrics` | gauge `probe_gauge` = 42, counter `probe_counter` += 3, reads them back into `x-gauge`, `x-counter` |
//! | `property` | sets property `probe.note`, reads it and `source.address` back into headers |
//! | `time` | adds `x-time: <nanoseconds>` |
//! | `panic` | panics |
//!
//! The root context asks for a 250 ms tick and counts ticks in `probe_ticks`; the VM
//! configuration is logged at start; request bodies are upper-cased.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

/// The module's entry point (`_initialize`, exported by the SDK's macro).
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| Box::new(super::ProbeRoot));
    }}
}

struct ProbeRoot;

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        let config = self.get_vm_configuration().unwrap_or_default();
        let _ = hostcalls::log(
            LogLevel::Info,
            &format!("probe vm config: {}", String::from_utf8_lossy(&config)),
        );
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let config = hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        self.set_tick_period(Duration::from_millis(250));
        // Refuse a configuration that says so, to test the refusal path.
        config != b"refuse"
    }

    fn on_tick(&mut self) {
        if let Ok(id) = hostcalls::define_metric(MetricType::Counter, "probe_ticks") {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe;

impl Context for Probe {}

#[allow(clippy::panic)]
fn boom() -> Action {
    panic!("probe panic")
}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let probe = self.get_http_request_header("x-probe").unwrap_or_default();
        match probe.as_str() {
            "pairs" => {
                let count = self.get_http_request_headers().len();
                self.add_http_request_header("x-probe-count", &count.to_string());
            }
            "add" => {
                self.add_http_request_header("x-added", "1");
                self.add_http_request_header("x-added", "1");
            }
            "remove" => self.set_http_request_header("x-remove-me", None),
            "set-pairs" => {
                self.set_http_request_headers(vec![(":path", "/rewritten"), ("x-only", "1")]);
            }
            "continue" => {
                self.resume_http_request();
                return Action::Pause;
            }
            "metrics" => {
                if let (Ok(gauge), Ok(counter)) = (
                    hostcalls::define_metric(MetricType::Gauge, "probe_gauge"),
                    hostcalls::define_metric(MetricType::Counter, "probe_counter"),
                ) {
                    let _ = hostcalls::record_metric(gauge, 42);
                    let _ = hostcalls::increment_metric(counter, 3);
                    let gauge = hostcalls::get_metric(gauge).unwrap_or(0);
                    let counter = hostcalls::get_metric(counter).unwrap_or(0);
                    self.add_http_request_header("x-gauge", &gauge.to_string());
                    self.add_http_request_header("x-counter", &counter.to_string());
                }
            }
            "property" => {
                self.set_property(vec!["probe", "note"], Some(b"hello"));
                let note = self.get_property(vec!["probe", "note"]).unwrap_or_default();
                let source = self
                    .get_property(vec!["source", "address"])
                    .unwrap_or_default();
                self.add_http_request_header("x-note", &String::from_utf8_lossy(&note));
                self.add_http_request_header("x-source", &String::from_utf8_lossy(&source));
            }
            "time" => {
                let now = self
                    .get_current_time()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                self.add_http_request_header("x-time", &now.to_string());
            }
            "panic" => return boom(),
            _ => {}
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        if let Some(body) = self.get_http_request_body(0, body_size) {
            self.set_http_request_body(0, body_size, &body.to_ascii_uppercase());
        }
        Action::Continue
    }
}
