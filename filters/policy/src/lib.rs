//! Trellis's policy filter, independent of the proxy: authorization and local rate limiting.
//!
//! The proxy-wasm module (`trellis-policy-wasm`) parses the plugin configuration once into a
//! [`PolicyFilter`] and calls [`PolicyFilter::on_request_headers`] for every request, passing a
//! [`Host`] that reaches Envoy. Nothing here touches proxy-wasm, so all of it is tested natively
//! with a mock host.
//!
//! ```text
//!  plugin configuration (JSON)
//!        │ config::parse + PolicyFilter::new            (once, in on_configure)
//!        ▼
//!  PolicyFilter { authz::Policy…, ratelimit::RateLimit…, Option<telemetry::Telemetry> }
//!        │ on_request_headers(&host)                    (per request)
//!        │ on_log(&host)                                (per request, at its end)
//!        ▼
//!  Host: headers, properties (read and set), shared data (CAS), clock, counters,
//!        local response, log
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the JSON schema and its parsing |
//! | [`authz`] | compiled policies and rules, and matching |
//! | [`ratelimit`] | token buckets in shared data |
//! | [`filter`] | the request flow, scopes, names |
//! | [`metrics`] | counter names and the Envoy `stats_tags` for them |
//! | [`telemetry`] | span tags, baggage tags, latency objectives, peer counters |
//! | [`host`] | the host trait |

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod authz;
pub mod config;
pub mod filter;
pub mod host;
pub mod metrics;
pub mod ratelimit;
pub mod telemetry;

/// An in-memory host, for this crate's tests and for fuzzing (feature `mock`).
#[cfg(any(test, feature = "mock"))]
#[allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod mock;

pub use filter::{PolicyFilter, RouteScope, Verdict};
pub use host::{Host, LogLevel, SharedDataError, SharedValue};

/// Why a configuration was refused. Every message names the offending field by its path in the
/// JSON (`policies[0].rules[2].paths[1].regex`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The JSON is malformed or does not fit the schema (unknown field, wrong type, unknown
    /// variant, missing field).
    #[error("invalid policy filter configuration: {}{message}", at(path))]
    Json {
        /// Where in the document, e.g. `policies[0].rules[1].action` (empty for the whole).
        path: String,
        /// What is wrong, from the JSON parser.
        message: String,
    },
    /// A value fits the schema but is not acceptable (bad regex, CIDR, name, empty list...).
    #[error("invalid policy filter configuration: {field}: {reason}")]
    Invalid {
        /// Where in the document.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    /// A [`ConfigError::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}
