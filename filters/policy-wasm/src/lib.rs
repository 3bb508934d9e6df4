//! Trellis's policy filter as a proxy-wasm module: the glue between Envoy and `trellis-policy`.
//!
//! This crate owns only the proxy-wasm plumbing; every decision is `trellis-policy`'s.
//!
//! ```text
//! Envoy ──on_configure──► PolicyRoot: PolicyFilter::from_json (once; false = config rejected)
//!       ──new request───► PolicyHttp { Arc<PolicyFilter>, ProxyHost }
//!       ──request headers─► PolicyFilter::on_request_headers(&ProxyHost) ──► Continue | Pause
//!       ──log───────────► PolicyFilter::on_log(&ProxyHost)   (latency objectives, if any)
//! ```
//!
//! [`ProxyHost`] implements [`trellis_policy::Host`] with proxy-wasm host calls. Counter ids are
//! defined once per name and cached per VM (define_metric returns a new id for every call).
//! The filter never panics on its own: no `unwrap`, `expect` or `panic!` here or in the core
//! (denied by lint). The proxy-wasm SDK's host-call wrappers do panic on statuses Envoy does
//! not return for these calls; if one ever did, Envoy's `failure_policy` decides what happens.
//! `set_property` is one of them: it panics on any status but `Ok`, and Envoy answers
//! `NotFound` only outside a stream and `BadArgument` only for a property with a configured
//! state prototype; the filter sets properties only in request headers, and Trellis configures
//! no prototypes.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};
use trellis_policy::{Host, PolicyFilter, SharedDataError, SharedValue, Verdict};

/// The module's entry point (`_initialize`, exported by the SDK's macro).
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| Box::new(super::PolicyRoot::default()));
    }}
}

/// Counter ids by name, for one VM (a Wasm VM is single-threaded; `Rc` is enough).
#[derive(Debug, Default)]
struct MetricIds(RefCell<HashMap<String, u32>>);

impl MetricIds {
    /// The id of the counter `name`, defining it on first use. `None` if the host refuses.
    fn id(&self, name: &str) -> Option<u32> {
        if let Some(id) = self
            .0
            .try_borrow()
            .ok()
            .and_then(|ids| ids.get(name).copied())
        {
            return Some(id);
        }
        let id = hostcalls::define_metric(MetricType::Counter, name).ok()?;
        if let Ok(mut ids) = self.0.try_borrow_mut() {
            ids.insert(name.to_string(), id);
        }
        Some(id)
    }
}

/// The root context: holds the compiled configuration.
#[derive(Default)]
struct PolicyRoot {
    filter: Option<Arc<PolicyFilter>>,
    metrics: Rc<MetricIds>,
}

impl Context for PolicyRoot {}

impl RootContext for PolicyRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(config) => config.unwrap_or_default(),
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("trellis-policy: cannot read the plugin configuration: {status:?}"),
                );
                return false;
            }
        };
        match PolicyFilter::from_json(&config) {
            Ok(filter) => {
                for name in filter.metric_names() {
                    let _ = self.metrics.id(&name);
                }
                log(
                    LogLevel::Info,
                    &format!("trellis-policy: configured: {}", filter.summary()),
                );
                self.filter = Some(Arc::new(filter));
                true
            }
            Err(error) => {
                log(
                    LogLevel::Error,
                    &format!("trellis-policy: configuration rejected: {error}"),
                );
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(PolicyHttp {
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
struct PolicyHttp {
    filter: Option<Arc<PolicyFilter>>,
    host: ProxyHost,
}

impl Context for PolicyHttp {}

impl HttpContext for PolicyHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(filter) = self.filter.as_deref() else {
            // Not reachable: Envoy creates no request contexts for a plugin it failed to configure.
            return Action::Continue;
        };
        match filter.on_request_headers(&self.host) {
            Verdict::Continue => Action::Continue,
            Verdict::Responded => Action::Pause,
        }
    }

    fn on_log(&mut self) {
        if let Some(filter) = self.filter.as_deref() {
            filter.on_log(&self.host);
        }
    }
}

/// [`Host`] over proxy-wasm host calls.
struct ProxyHost {
    metrics: Rc<MetricIds>,
}

impl Host for ProxyHost {
    fn request_header(&self, name: &str) -> Option<String> {
        // The bytes variant: the String one panics on a non-UTF-8 header value.
        match hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name) {
            Ok(Some(value)) => Some(String::from_utf8_lossy(&value).into_owned()),
            _ => None,
        }
    }

    fn request_headers(&self) -> Option<Vec<(String, String)>> {
        // One host call for every header, rather than one per header the rules look at.
        let pairs = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).ok()?;
        Some(
            pairs
                .into_iter()
                .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
                .collect(),
        )
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn set_property(&self, path: &[&str], value: &[u8]) {
        let _ = hostcalls::set_property(path.to_vec(), Some(value));
    }

    fn get_shared_data(&self, key: &str) -> Result<Option<SharedValue>, SharedDataError> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(data), cas)) => Ok(Some(SharedValue {
                data,
                cas: cas.unwrap_or(0),
            })),
            Ok((None, _)) => Ok(None),
            Err(status) => Err(SharedDataError::Host(format!("{status:?}"))),
        }
    }

    fn set_shared_data(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SharedDataError::CasMismatch),
            Err(status) => Err(SharedDataError::Host(format!("{status:?}"))),
        }
    }

    fn now_nanos(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|now| now.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            })
    }

    fn increment_counter(&self, name: &str, by: u64) {
        if let Some(id) = self.metrics.id(name) {
            let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }

    fn send_local_response(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        let _ = hostcalls::send_http_response(
            u32::from(status),
            headers.to_vec(),
            Some(body.as_bytes()),
        );
    }

    fn log(&self, level: trellis_policy::LogLevel, message: &str) {
        let level = match level {
            trellis_policy::LogLevel::Trace => LogLevel::Trace,
            trellis_policy::LogLevel::Debug => LogLevel::Debug,
            trellis_policy::LogLevel::Info => LogLevel::Info,
            trellis_policy::LogLevel::Warn => LogLevel::Warn,
            trellis_policy::LogLevel::Error => LogLevel::Error,
        };
        log(level, message);
    }
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}
