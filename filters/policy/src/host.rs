//! The host interface the policy logic runs against.
//!
//! Everything the filter needs from Envoy goes through [`Host`]: request headers, connection
//! and route properties, filter state (property writes), proxy-wide shared data with
//! compare-and-swap, the clock, counters, local responses and logging. The proxy-wasm glue (`trellis-policy-wasm`) implements it with
//! host calls; the unit tests implement it with an in-memory mock, so the logic is tested
//! natively and fast.

use std::net::{IpAddr, SocketAddr};

/// Envoy property path of the downstream (client) address, `ip:port`.
pub const SOURCE_ADDRESS: &[&str] = &["source", "address"];
/// Envoy property path of the first URI SAN of the peer's certificate (the SPIFFE ID).
pub const PEER_PRINCIPAL: &[&str] = &["connection", "uri_san_peer_certificate"];
/// Envoy property path of the name of the route the request matched.
pub const ROUTE_NAME: &[&str] = &["xds", "route_name"];
/// Envoy property path of the request's total duration, set once the request is complete (so
/// in the log phase): a duration, which proxy-wasm hosts serialize as 8 bytes, a little-endian
/// `i64` of nanoseconds.
pub const REQUEST_DURATION: &[&str] = &["request", "duration"];
/// Envoy property path of the time the request's first byte arrived: a timestamp, 8 bytes, a
/// little-endian `i64` of nanoseconds since the Unix epoch.
pub const REQUEST_TIME: &[&str] = &["request", "time"];

/// Log levels, as proxy-wasm has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Noteworthy events (audit findings).
    Info,
    /// Something went wrong but the request was handled.
    Warn,
    /// Something went wrong and the request may not be handled as configured.
    Error,
}

/// A value read from shared data, with the compare-and-swap token of that version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedValue {
    /// The stored bytes.
    pub data: Vec<u8>,
    /// The version token to pass to [`Host::set_shared_data`] to write only if unchanged.
    pub cas: u32,
}

/// Why a shared data call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedDataError {
    /// The value changed since it was read (another worker wrote it); read again and retry.
    #[error("shared data changed since it was read (CAS mismatch)")]
    CasMismatch,
    /// The host refused the call for another reason.
    #[error("shared data call failed: {0}")]
    Host(String),
}

/// What the policy logic needs from the proxy. All methods take `&self`: a proxy-wasm VM is
/// single-threaded and the host calls are global, so implementations need no `&mut`.
pub trait Host {
    /// A request header's value (`:method`, `:path` and other pseudo-headers included), or
    /// `None` if absent.
    fn request_header(&self, name: &str) -> Option<String>;

    /// Every request header at once (names lower-case, in order), if the host can give them in
    /// one call; `None` makes the filter ask for headers one by one.
    fn request_headers(&self) -> Option<Vec<(String, String)>> {
        None
    }

    /// A property's raw value (e.g. [`SOURCE_ADDRESS`]), or `None` if the host has none.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;

    /// Sets a property of the request (proxy-wasm `set_property`). Envoy stores it as filter
    /// state named `wasm.` followed by the path (one segment, e.g. `trellis.decision` becomes
    /// `wasm.trellis.decision`), which access logs and span tags read with
    /// `%FILTER_STATE(wasm.trellis.decision:PLAIN)%`. Failures are ignored.
    fn set_property(&self, path: &[&str], value: &[u8]);

    /// Reads a shared data entry: `Ok(None)` if it does not exist.
    fn get_shared_data(&self, key: &str) -> Result<Option<SharedValue>, SharedDataError>;

    /// Writes a shared data entry. With `cas`, the write happens only if the entry still has
    /// that version, else [`SharedDataError::CasMismatch`]; without, it is unconditional.
    fn set_shared_data(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError>;

    /// Wall-clock time in nanoseconds since the Unix epoch.
    fn now_nanos(&self) -> u64;

    /// Adds `by` to the counter named `name`, defining it first if needed.
    fn increment_counter(&self, name: &str, by: u64);

    /// Answers the request locally with `status`, `headers` and `body` instead of forwarding it.
    fn send_local_response(&self, status: u16, headers: &[(&str, &str)], body: &str);

    /// Writes a message to the proxy's log.
    fn log(&self, level: LogLevel, message: &str);

    /// The request method (`:method`).
    fn method(&self) -> Option<String> {
        self.request_header(":method")
    }

    /// The request path without its query string.
    fn path(&self) -> Option<String> {
        self.request_header(":path").map(|mut path| {
            if let Some(query) = path.find('?') {
                path.truncate(query);
            }
            path
        })
    }

    /// The client IP, from [`SOURCE_ADDRESS`] (IPv4-mapped IPv6 addresses become IPv4).
    fn source_ip(&self) -> Option<IpAddr> {
        let raw = self.property(SOURCE_ADDRESS)?;
        let text = std::str::from_utf8(&raw).ok()?;
        let ip = match text.parse::<SocketAddr>() {
            Ok(address) => address.ip(),
            Err(_) => text.parse::<IpAddr>().ok()?,
        };
        Some(ip.to_canonical())
    }

    /// The peer's SPIFFE principal, from [`PEER_PRINCIPAL`] (`None` without mTLS).
    fn peer_principal(&self) -> Option<String> {
        self.property_string(PEER_PRINCIPAL)
    }

    /// The name of the route the request matched, from [`ROUTE_NAME`].
    fn route_name(&self) -> Option<String> {
        self.property_string(ROUTE_NAME)
    }

    /// A property holding a duration or a timestamp (8 bytes, little-endian `i64` nanoseconds),
    /// e.g. [`REQUEST_DURATION`]. `None` if absent, not 8 bytes long, or negative.
    fn property_nanos(&self, path: &[&str]) -> Option<u64> {
        let raw = self.property(path)?;
        let bytes: [u8; 8] = raw.as_slice().try_into().ok()?;
        u64::try_from(i64::from_le_bytes(bytes)).ok()
    }

    /// A property as a non-empty UTF-8 string.
    fn property_string(&self, path: &[&str]) -> Option<String> {
        let raw = self.property(path)?;
        let text = String::from_utf8(raw).ok()?;
        (!text.is_empty()).then_some(text)
    }
}
