//! The header-stamp example filter's logic: stamp one configured header on every response and
//! count requests. It is the template for a Trellis filter's core crate:
//!
//! - the configuration is a serde struct with `deny_unknown_fields`, parsed and checked once
//!   ([`HeaderStamp::from_json`]) into a value request contexts share;
//! - everything the filter needs from the proxy goes through a small [`Host`] trait, so the
//!   logic is tested natively with a mock (see the tests below) and the `cdylib` beside it is
//!   only proxy-wasm glue;
//! - no `unwrap`, `expect` or `panic!` (denied below): a panic in a filter takes the VM down.
//!
//! ```text
//! {"header": "x-served-by", "value": "trellis"}
//!     │ HeaderStamp::from_json (once)
//!     ▼
//! on_request_headers  ─► counter trellis_header_stamp_requests_total += 1
//! on_response_headers ─► response header x-served-by: trellis
//! ```

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde::Deserialize;

/// The counter incremented for every request.
pub const REQUESTS_METRIC: &str = "trellis_header_stamp_requests_total";

/// The plugin configuration as JSON.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The response header to set (an HTTP token; stored lower-case).
    pub header: String,
    /// Its value.
    pub value: String,
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not valid JSON for [`Config`] (malformed, unknown or missing field, wrong type).
    #[error("invalid header-stamp configuration: {0}")]
    Json(String),
    /// `header` is not a valid header name.
    #[error("invalid header-stamp configuration: header: `{0}` is not a valid header name")]
    HeaderName(String),
    /// `value` contains a control character (CR, LF, NUL...).
    #[error("invalid header-stamp configuration: value: must not contain control characters")]
    HeaderValue,
}

/// What the filter needs from the proxy.
pub trait Host {
    /// Sets a response header (replacing any value it had).
    fn set_response_header(&self, name: &str, value: &str);
    /// Adds `by` to the counter `name`.
    fn increment_counter(&self, name: &str, by: u64);
}

/// The compiled filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderStamp {
    header: String,
    value: String,
}

impl HeaderStamp {
    /// Parses and checks the plugin configuration.
    pub fn from_json(json: &[u8]) -> Result<HeaderStamp, ConfigError> {
        let config: Config =
            serde_json::from_slice(json).map_err(|error| ConfigError::Json(error.to_string()))?;
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if config.header.is_empty() || !config.header.chars().all(token) {
            return Err(ConfigError::HeaderName(config.header));
        }
        if config.value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(ConfigError::HeaderValue);
        }
        Ok(HeaderStamp {
            header: config.header.to_ascii_lowercase(),
            value: config.value,
        })
    }

    /// Counts the request.
    pub fn on_request_headers(&self, host: &impl Host) {
        host.increment_counter(REQUESTS_METRIC, 1);
    }

    /// Stamps the response.
    pub fn on_response_headers(&self, host: &impl Host) {
        host.set_response_header(&self.header, &self.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct MockHost {
        headers: RefCell<BTreeMap<String, String>>,
        counters: RefCell<BTreeMap<String, u64>>,
    }

    impl Host for MockHost {
        fn set_response_header(&self, name: &str, value: &str) {
            self.headers.borrow_mut().insert(name.into(), value.into());
        }
        fn increment_counter(&self, name: &str, by: u64) {
            *self.counters.borrow_mut().entry(name.into()).or_default() += by;
        }
    }

    fn stamp(json: &str) -> HeaderStamp {
        HeaderStamp::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn responses_get_the_configured_header() {
        let filter = stamp(r#"{"header": "X-Served-By", "value": "trellis"}"#);
        let host = MockHost::default();
        filter.on_response_headers(&host);
        assert_eq!(
            host.headers.borrow().get("x-served-by").map(String::as_str),
            Some("trellis")
        );
    }

    #[test]
    fn every_request_is_counted() {
        let filter = stamp(r#"{"header": "x-a", "value": "b"}"#);
        let host = MockHost::default();
        for _ in 0..3 {
            filter.on_request_headers(&host);
        }
        assert_eq!(host.counters.borrow().get(REQUESTS_METRIC), Some(&3));
    }

    #[test]
    fn bad_configurations_are_refused_with_the_reason() {
        let error = |json: &str| {
            HeaderStamp::from_json(json.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(error(r#"{"header": "x-a"}"#).contains("missing field `value`"));
        assert!(
            error(r#"{"header": "x-a", "value": "b", "extra": 1}"#)
                .contains("unknown field `extra`")
        );
        assert_eq!(
            error(r#"{"header": "x a", "value": "b"}"#),
            "invalid header-stamp configuration: header: `x a` is not a valid header name"
        );
        assert!(error(r#"{"header": "", "value": "b"}"#).contains("not a valid header name"));
        assert!(
            error(r#"{"header": "x-a", "value": "b\r\nx-evil: 1"}"#).contains("control characters")
        );
        assert!(error("").contains("EOF"));
    }
}
