//! An in-memory [`Host`] for the unit tests.
//!
//! A [`MockHost`] is one request (headers, properties, the local response it got) plus a handle
//! on proxy-wide state shared with its [`MockHost::sibling`]s: shared data with real
//! compare-and-swap versions, a controllable clock, counters and logs. Tests can make another
//! "worker" write a shared entry between a read and a write ([`MockHost::interfere_before_set`])
//! or make shared data fail outright.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use crate::{Host, LogLevel, SharedDataError, SharedValue};

type Interference = Box<dyn Fn(&[u8]) -> Vec<u8>>;

/// A local response the mock recorded: status, headers, body.
pub type LocalResponse = (u16, Vec<(String, String)>, String);

#[derive(Default)]
struct Proxy {
    shared: RefCell<BTreeMap<String, (Vec<u8>, u32)>>,
    next_cas: Cell<u32>,
    now: Cell<u64>,
    counters: RefCell<BTreeMap<String, u64>>,
    logs: RefCell<Vec<(LogLevel, String)>>,
    interference: RefCell<HashMap<String, (usize, Interference)>>,
    cas_mismatches: Cell<usize>,
    shared_calls: Cell<usize>,
    shared_fails: Cell<bool>,
}

/// One request against a mock proxy.
pub struct MockHost {
    headers: Vec<(String, String)>,
    bulk_headers: bool,
    header_reads: Cell<usize>,
    property_reads: Cell<usize>,
    properties: HashMap<String, Vec<u8>>,
    set_properties: RefCell<Vec<(String, Vec<u8>)>>,
    local_response: RefCell<Option<LocalResponse>>,
    proxy: Rc<Proxy>,
}

impl MockHost {
    /// A request with `method` and `path`, on a fresh proxy whose clock reads 2023-11-14.
    pub fn request(method: &str, path: &str) -> MockHost {
        let proxy = Proxy::default();
        proxy.now.set(1_700_000_000_000_000_000);
        proxy.next_cas.set(1);
        MockHost {
            headers: vec![
                (":method".into(), method.into()),
                (":path".into(), path.into()),
            ],
            bulk_headers: false,
            header_reads: Cell::new(0),
            property_reads: Cell::new(0),
            properties: HashMap::new(),
            set_properties: RefCell::new(Vec::new()),
            local_response: RefCell::new(None),
            proxy: Rc::new(proxy),
        }
    }

    /// Offers every header in one call ([`Host::request_headers`]), as the Wasm glue does.
    pub fn with_bulk_headers(mut self) -> MockHost {
        self.bulk_headers = true;
        self
    }

    /// How many header reads (one-by-one or bulk) and property reads the filter made.
    pub fn reads(&self) -> (usize, usize) {
        (self.header_reads.get(), self.property_reads.get())
    }

    /// A GET request for `path` on a fresh proxy.
    pub fn get(path: &str) -> MockHost {
        MockHost::request("GET", path)
    }

    /// Another GET / request on the same proxy (shared data, clock, counters, logs).
    pub fn sibling(&self) -> MockHost {
        self.next("GET", "/")
    }

    /// Another request, with `method` and `path`, on the same proxy.
    pub fn next(&self, method: &str, path: &str) -> MockHost {
        MockHost {
            headers: vec![
                (":method".into(), method.into()),
                (":path".into(), path.into()),
            ],
            bulk_headers: self.bulk_headers,
            header_reads: Cell::new(0),
            property_reads: Cell::new(0),
            properties: HashMap::new(),
            set_properties: RefCell::new(Vec::new()),
            local_response: RefCell::new(None),
            proxy: Rc::clone(&self.proxy),
        }
    }

    /// Adds a request header.
    pub fn with_header(mut self, name: &str, value: &str) -> MockHost {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Sets a property (path segments joined with `.`).
    pub fn with_property(mut self, path: &str, value: &str) -> MockHost {
        self.properties
            .insert(path.into(), value.as_bytes().to_vec());
        self
    }

    /// Sets a property to raw bytes (path segments joined with `.`).
    pub fn with_property_bytes(mut self, path: &str, value: &[u8]) -> MockHost {
        self.properties.insert(path.into(), value.to_vec());
        self
    }

    /// Sets `request.duration` as Envoy serializes it (little-endian `i64` nanoseconds).
    pub fn with_duration(self, nanos: i64) -> MockHost {
        self.with_property_bytes("request.duration", &nanos.to_le_bytes())
    }

    /// Every property the filter set on this request, in order (path segments joined with `.`).
    pub fn set_properties(&self) -> Vec<(String, Vec<u8>)> {
        self.set_properties.borrow().clone()
    }

    /// The last value the filter set for property `path` (segments joined with `.`), as text.
    pub fn state(&self, path: &str) -> Option<String> {
        self.set_properties
            .borrow()
            .iter()
            .rev()
            .find(|(p, _)| p == path)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// Sets the client address (`ip:port`).
    pub fn with_source(self, address: &str) -> MockHost {
        self.with_property("source.address", address)
    }

    /// Sets the peer principal.
    pub fn with_principal(self, principal: &str) -> MockHost {
        self.with_property("connection.uri_san_peer_certificate", principal)
    }

    /// Sets the route name.
    pub fn with_route(self, route: &str) -> MockHost {
        self.with_property("xds.route_name", route)
    }

    /// Moves the clock forward.
    pub fn advance(&self, nanos: u64) {
        self.proxy.now.set(self.proxy.now.get() + nanos);
    }

    /// Moves the clock backward (a wall clock can).
    pub fn rewind(&self, nanos: u64) {
        self.proxy.now.set(self.proxy.now.get() - nanos);
    }

    /// The next `times` CAS writes to `key` find that another writer replaced the value with
    /// `rewrite(value)` after it was read, and fail with a CAS mismatch.
    pub fn interfere_before_set(
        &self,
        key: &str,
        times: usize,
        rewrite: impl Fn(&[u8]) -> Vec<u8> + 'static,
    ) {
        self.proxy
            .interference
            .borrow_mut()
            .insert(key.into(), (times, Box::new(rewrite)));
    }

    /// Makes every shared data call fail.
    pub fn fail_shared_data(&self) {
        self.proxy.shared_fails.set(true);
    }

    /// How many CAS writes failed.
    pub fn cas_mismatches(&self) -> usize {
        self.proxy.cas_mismatches.get()
    }

    /// How many shared data reads and writes were made.
    pub fn shared_calls(&self) -> usize {
        self.proxy.shared_calls.get()
    }

    /// A shared data entry's bytes.
    pub fn shared(&self, key: &str) -> Option<Vec<u8>> {
        self.proxy.shared.borrow().get(key).map(|(v, _)| v.clone())
    }

    /// Writes a shared data entry directly.
    pub fn set_shared(&self, key: &str, value: &[u8]) {
        let cas = self.bump_cas();
        self.proxy
            .shared
            .borrow_mut()
            .insert(key.into(), (value.to_vec(), cas));
    }

    /// Every shared data key, sorted.
    pub fn shared_keys(&self) -> Vec<String> {
        self.proxy.shared.borrow().keys().cloned().collect()
    }

    /// A counter's value (0 if never incremented).
    pub fn counter(&self, name: &str) -> u64 {
        self.proxy.counters.borrow().get(name).copied().unwrap_or(0)
    }

    /// Every counter with a value.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.proxy.counters.borrow().clone()
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.proxy.logs.borrow().clone()
    }

    /// The local response sent for this request, if any.
    pub fn local_response(&self) -> Option<LocalResponse> {
        self.local_response.borrow().clone()
    }

    fn bump_cas(&self) -> u32 {
        let cas = self.proxy.next_cas.get();
        self.proxy.next_cas.set(cas + 1);
        cas
    }
}

impl Host for MockHost {
    fn request_headers(&self) -> Option<Vec<(String, String)>> {
        if !self.bulk_headers {
            return None;
        }
        self.header_reads.set(self.header_reads.get() + 1);
        Some(self.headers.clone())
    }

    fn request_header(&self, name: &str) -> Option<String> {
        self.header_reads.set(self.header_reads.get() + 1);
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.property_reads.set(self.property_reads.get() + 1);
        self.properties.get(&path.join(".")).cloned()
    }

    fn set_property(&self, path: &[&str], value: &[u8]) {
        self.set_properties
            .borrow_mut()
            .push((path.join("."), value.to_vec()));
    }

    fn get_shared_data(&self, key: &str) -> Result<Option<SharedValue>, SharedDataError> {
        self.proxy
            .shared_calls
            .set(self.proxy.shared_calls.get() + 1);
        if self.proxy.shared_fails.get() {
            return Err(SharedDataError::Host("mock failure".into()));
        }
        Ok(self
            .proxy
            .shared
            .borrow()
            .get(key)
            .map(|(data, cas)| SharedValue {
                data: data.clone(),
                cas: *cas,
            }))
    }

    fn set_shared_data(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError> {
        self.proxy
            .shared_calls
            .set(self.proxy.shared_calls.get() + 1);
        if self.proxy.shared_fails.get() {
            return Err(SharedDataError::Host("mock failure".into()));
        }
        if cas.is_some() {
            let mut interference = self.proxy.interference.borrow_mut();
            if let Some((times, rewrite)) = interference.get_mut(key)
                && *times > 0
            {
                *times -= 1;
                let current = self.shared(key).unwrap_or_default();
                let rewritten = rewrite(&current);
                drop(interference);
                self.set_shared(key, &rewritten);
            }
        }
        let current = self.proxy.shared.borrow().get(key).map(|(_, c)| *c);
        if let (Some(expected), Some(current)) = (cas, current)
            && expected != current
        {
            self.proxy
                .cas_mismatches
                .set(self.proxy.cas_mismatches.get() + 1);
            return Err(SharedDataError::CasMismatch);
        }
        self.set_shared(key, value);
        Ok(())
    }

    fn now_nanos(&self) -> u64 {
        self.proxy.now.get()
    }

    fn increment_counter(&self, name: &str, by: u64) {
        *self
            .proxy
            .counters
            .borrow_mut()
            .entry(name.into())
            .or_default() += by;
    }

    fn send_local_response(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        *self.local_response.borrow_mut() = Some((status, headers, body.into()));
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.proxy.logs.borrow_mut().push((level, message.into()));
    }
}
