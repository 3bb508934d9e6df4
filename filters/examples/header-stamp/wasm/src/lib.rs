//! The header-stamp example filter as a proxy-wasm module: only glue around the `header-stamp`
//! core crate. Copy this crate's shape for a new filter:
//!
//! ```text
//! Envoy ─on_configure────► StampRoot: HeaderStamp::from_json (false = Envoy rejects the config)
//!       ─new request─────► StampHttp { Arc<HeaderStamp> }
//!       ─request headers─► core.on_request_headers(&ProxyHost)   (counts)
//!       ─response headers► core.on_response_headers(&ProxyHost)  (stamps)
//! ```

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use header_stamp::{HeaderStamp, Host};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

/// The module's entry point (`_initialize`, exported by the SDK's macro).
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| Box::new(super::StampRoot::default()));
    }}
}

/// Root context: parses the configuration once.
#[derive(Default)]
struct StampRoot {
    filter: Option<Arc<HeaderStamp>>,
    metrics: Rc<RefCell<HashMap<String, u32>>>,
}

impl Context for StampRoot {}

impl RootContext for StampRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        match HeaderStamp::from_json(&config) {
            Ok(filter) => {
                self.filter = Some(Arc::new(filter));
                true
            }
            Err(error) => {
                let _ = hostcalls::log(LogLevel::Error, &format!("header-stamp: {error}"));
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(StampHttp {
            filter: self.filter.clone(),
            host: ProxyHost {
                metrics: Rc::clone(&self.metrics),
            },
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request's context.
struct StampHttp {
    filter: Option<Arc<HeaderStamp>>,
    host: ProxyHost,
}

impl Context for StampHttp {}

impl HttpContext for StampHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(filter) = &self.filter {
            filter.on_request_headers(&self.host);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(filter) = &self.filter {
            filter.on_response_headers(&self.host);
        }
        Action::Continue
    }
}

/// [`Host`] over proxy-wasm host calls.
struct ProxyHost {
    /// Counter ids by name (define_metric hands out a new id per call, so define once).
    metrics: Rc<RefCell<HashMap<String, u32>>>,
}

impl Host for ProxyHost {
    fn set_response_header(&self, name: &str, value: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value));
    }

    fn increment_counter(&self, name: &str, by: u64) {
        let known = self
            .metrics
            .try_borrow()
            .ok()
            .and_then(|m| m.get(name).copied());
        let id = match known {
            Some(id) => id,
            None => match hostcalls::define_metric(MetricType::Counter, name) {
                Ok(id) => {
                    if let Ok(mut metrics) = self.metrics.try_borrow_mut() {
                        metrics.insert(name.to_string(), id);
                    }
                    id
                }
                Err(_) => return,
            },
        };
        let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
    }
}
