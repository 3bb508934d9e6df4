//! Spans Envoy's native OpenTelemetry tracer exports (OTLP `ExportTraceServiceRequest`), kept
//! in a byte-bounded, in-memory store the API reads: by trace id, by request id, by Service.
//!
//! ```text
//!  Envoy ──OTLP/gRPC──► TraceStore::ingest
//!    resource service.name  "gateway/demo/web" | "shop/b"
//!    spans  "ingress" (server), "router <cluster> egress" (client)
//!    attrs  upstream_cluster, http.status_code, response_flags, guid:x-request-id, error, tags
//!          │  per span: ids checked (16 / 8 bytes), strings and attributes capped,
//!          │  bytes accounted (span + trace + index entries)
//!          ▼
//!   ┌ recent ring (75 % of max_bytes) ┐        ┌ notable ring (the other 25 %) ┐
//!   │ oldest trace ··· newest trace   │ ─────► │ oldest trace ··· newest trace │
//!   └─────────────────────────────────┘        └───────────────────────────────┘
//!     a trace moves right once a span errs or its extent reaches `slow`;
//!     a ring over its budget drops its oldest traces (and their index entries)
//!
//!  indexes:  trace id ──► trace    x-request-id ──► trace    "NS/NAME" ──► traces, newest first
//! ```
//!
//! A trace touches a Service `NS/NAME` when one of its spans comes from a proxy whose
//! `service.name` is `NS/NAME`, or calls the cluster `service/<ns>/<name>/<port>`. Everything a
//! proxy sends is capped ([`MAX_SPANS_PER_EXPORT`], [`MAX_SPANS_PER_TRACE`], [`MAX_ATTRIBUTES`],
//! [`MAX_KEY_BYTES`], [`MAX_VALUE_BYTES`], [`MAX_NAME_BYTES`]) and every stored byte is
//! accounted, so [`TraceStore::bytes`] never exceeds [`StoreConfig::max_bytes`].

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde::Serialize;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// Bytes accounted per stored span on top of its strings: the struct and the allocator's share
/// of its five strings (calibrated against the control plane's resident memory with
/// `trellis-bench telemetry --spans-per-second`, which was 2.5x what strings alone counted).
pub const SPAN_OVERHEAD: usize = 400;
/// Bytes accounted per attribute on top of its key and value: two allocations and a map entry.
pub const ATTRIBUTE_OVERHEAD: usize = 160;
/// Bytes accounted per stored trace (its map entry, ring entry, bookkeeping).
pub const TRACE_OVERHEAD: usize = 256;
/// Bytes accounted per request-id index entry on top of the id.
pub const REQUEST_ID_OVERHEAD: usize = 64;
/// Bytes accounted per (Service, trace) index entry on top of the Service's name.
pub const SERVICE_ENTRY_OVERHEAD: usize = 64;
/// Attributes kept per span at most; further ones are dropped.
pub const MAX_ATTRIBUTES: usize = 64;
/// Attribute keys are truncated to this many bytes (at a char boundary).
pub const MAX_KEY_BYTES: usize = 128;
/// Attribute values are truncated to this many bytes (at a char boundary).
pub const MAX_VALUE_BYTES: usize = 1024;
/// Span names and service names are truncated to this many bytes (at a char boundary).
pub const MAX_NAME_BYTES: usize = 256;
/// Spans kept per trace at most; further spans are refused.
pub const MAX_SPANS_PER_TRACE: usize = 2000;
/// Spans taken from one export at most; the rest are refused.
pub const MAX_SPANS_PER_EXPORT: usize = 10_000;
/// Request ids indexed per trace at most (the proxies of one request share one).
pub const MAX_REQUEST_IDS_PER_TRACE: usize = 16;
/// Services indexed per trace at most.
pub const MAX_SERVICES_PER_TRACE: usize = 32;
/// The resource attribute naming the proxy's service (`gateway/NS/NAME` or `NS/NAME`).
pub const SERVICE_NAME: &str = "service.name";
/// The service of spans whose resource has no `service.name` (not indexed).
pub const UNKNOWN_SERVICE: &str = "unknown_service";
/// Envoy's span attribute carrying the request id.
pub const REQUEST_ID_ATTRIBUTE: &str = "guid:x-request-id";
/// Envoy's span attribute naming the upstream cluster.
pub const UPSTREAM_CLUSTER_ATTRIBUTE: &str = "upstream_cluster";
/// Envoy's span attribute set to `true` on failed requests.
pub const ERROR_ATTRIBUTE: &str = "error";
/// How deep arrays and key-value lists inside attribute values are rendered.
const MAX_VALUE_DEPTH: usize = 4;

/// The store's size and what makes a trace notable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Bytes the store accounts at most (default 32 MiB).
    pub max_bytes: usize,
    /// The share of `max_bytes` (percent, capped at 100) kept for notable traces (default 25).
    pub notable_share_percent: u8,
    /// A trace whose extent (latest span end − earliest span start) reaches this is notable
    /// (default 1 s).
    pub slow: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_bytes: 32 << 20,
            notable_share_percent: 25,
            slow: Duration::from_secs(1),
        }
    }
}

/// What one [`TraceStore::ingest`] did with the export's spans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Spans stored.
    pub stored: usize,
    /// Spans refused: malformed ids, or over a cap or the budget.
    pub refused: usize,
}

/// One trace: its spans, sorted by start, then span id.
#[derive(Clone, Debug, Serialize)]
pub struct Trace {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// Sorted by `start_unix_nanos`, then `span_id`.
    pub spans: Vec<Span>,
}

/// One span as stored (strings capped).
#[derive(Clone, Debug, Serialize)]
pub struct Span {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits; `None` for a root span.
    pub parent_span_id: Option<String>,
    /// The exporting proxy's `service.name`, or [`UNKNOWN_SERVICE`].
    pub service: String,
    /// The span's name (`ingress`, `router <cluster> egress`).
    pub name: String,
    /// `server`, `client`, `internal`, `producer`, `consumer` or `unspecified`.
    pub kind: &'static str,
    /// Start, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End − start, nanoseconds (0 when the end precedes the start).
    pub duration_nanos: u64,
    /// `ok`, `error` or `unset`.
    pub status: &'static str,
    /// Attributes, every value rendered as a string.
    pub attributes: BTreeMap<String, String>,
}

/// One line of a trace listing.
#[derive(Clone, Debug, Serialize)]
pub struct TraceSummary {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The root span's service (the earliest span without a parent in the trace).
    pub root_service: String,
    /// The root span's name.
    pub root_name: String,
    /// The earliest span start, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// The trace's extent: latest span end − earliest span start, nanoseconds.
    pub duration_nanos: u64,
    /// Spans stored.
    pub spans: usize,
    /// Whether a span has status error or the attribute `error=true`.
    pub error: bool,
    /// The root span's request id, else the first one indexed.
    pub request_id: Option<String>,
    /// The Services (and proxies' service names) the trace touches, sorted.
    pub services: Vec<String>,
}

/// How the pods of one Service carry the trace context of the requests they serve onto the
/// calls they make, as the stored spans show (see [`TraceStore::context_forwarding`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Forwarding {
    /// Traced requests its pods' sidecars served (inbound `ingress` spans named for it).
    pub served: u64,
    /// Traced calls the same sidecars carried out of those pods (outbound `egress <host>`
    /// spans of the same Envoy nodes).
    pub calls: u64,
    /// Of those calls, the ones that continued a trace (their span has a parent).
    pub continued: u64,
}

/// The attribute Envoy sets on a connection manager's span to its node's id.
pub const NODE_ID_ATTRIBUTE: &str = "node_id";

/// Which ring a trace's bytes count against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RingKind {
    Recent,
    Notable,
}

/// Traces of one ring by arrival (sequence number → trace id) and their bytes.
#[derive(Debug, Default)]
struct Ring {
    order: BTreeMap<u64, u128>,
    bytes: usize,
    budget: usize,
}

#[derive(Debug, Default)]
struct Rings {
    recent: Ring,
    notable: Ring,
}

impl Rings {
    fn get(&self, kind: RingKind) -> &Ring {
        match kind {
            RingKind::Recent => &self.recent,
            RingKind::Notable => &self.notable,
        }
    }
    fn get_mut(&mut self, kind: RingKind) -> &mut Ring {
        match kind {
            RingKind::Recent => &mut self.recent,
            RingKind::Notable => &mut self.notable,
        }
    }
}

/// One trace as stored, with what its bytes cover.
#[derive(Debug)]
struct Stored {
    /// Arrival sequence number: the key in its ring and in the service index.
    seq: u64,
    ring: RingKind,
    /// Everything accounted for this trace: overhead, spans, index entries.
    bytes: usize,
    notable: bool,
    error: bool,
    min_start: u64,
    max_end: u64,
    spans: Vec<Span>,
    /// Request ids the index maps to this trace.
    request_ids: Vec<String>,
    /// Services the index lists this trace under.
    services: Vec<String>,
}

/// A byte-bounded store of traces (see the module documentation). Not thread-safe itself:
/// the caller wraps it in a `Mutex`.
#[derive(Debug)]
pub struct TraceStore {
    config: StoreConfig,
    traces: HashMap<u128, Stored>,
    rings: Rings,
    by_request: HashMap<String, u128>,
    by_service: HashMap<String, BTreeMap<u64, u128>>,
    next_seq: u64,
    spans: usize,
    evicted: u64,
}

/// What storing one span adds.
struct Plan {
    ring: RingKind,
    cost: usize,
    notable: bool,
    error: bool,
    min_start: u64,
    max_end: u64,
    request_id: Option<String>,
    services: Vec<String>,
}

impl TraceStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        let share = usize::from(config.notable_share_percent.min(100));
        let max = config.max_bytes;
        // max * (100 - share) / 100 without overflow.
        let recent = max / 100 * (100 - share) + max % 100 * (100 - share) / 100;
        let rings = Rings {
            recent: Ring {
                budget: recent,
                ..Ring::default()
            },
            notable: Ring {
                budget: max.saturating_sub(recent),
                ..Ring::default()
            },
        };
        TraceStore {
            config,
            traces: HashMap::new(),
            rings,
            by_request: HashMap::new(),
            by_service: HashMap::new(),
            next_seq: 0,
            spans: 0,
            evicted: 0,
        }
    }

    /// The configuration the store was made with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Takes one export; returns how many spans were stored and how many refused (malformed
    /// ids, limits).
    pub fn ingest(&mut self, request: &ExportTraceServiceRequest) -> Ingested {
        let mut out = Ingested::default();
        let mut taken = 0usize;
        for resource_spans in &request.resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| string_attribute(&r.attributes, SERVICE_NAME))
                .map(|s| truncate(s, MAX_NAME_BYTES))
                .filter(|s| !s.is_empty());
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                let stored = taken < MAX_SPANS_PER_EXPORT && self.ingest_span(service, span);
                taken = taken.saturating_add(1);
                if stored {
                    out.stored = out.stored.saturating_add(1);
                } else {
                    out.refused = out.refused.saturating_add(1);
                }
            }
        }
        out
    }

    /// One trace by its id (32 hex digits).
    pub fn trace(&self, trace_id: &str) -> Option<Trace> {
        let key = parse_trace_id(trace_id)?;
        self.traces.get(&key).map(|t| render_trace(key, t))
    }

    /// The trace whose spans carry this `guid:x-request-id` (the first trace that did, while
    /// it is stored).
    pub fn by_request_id(&self, request_id: &str) -> Option<Trace> {
        let key = self.by_request.get(request_id)?;
        self.traces.get(key).map(|t| render_trace(*key, t))
    }

    /// Newest first; `service` is "NS/NAME"; a trace touches a service when a span's resource
    /// service.name equals it, or a span's `upstream_cluster` attribute is
    /// `service_<ns>_<name>_<port>`.
    pub fn by_service(&self, service: &str, limit: usize) -> Vec<TraceSummary> {
        let Some(traces) = self.by_service.get(service) else {
            return Vec::new();
        };
        traces
            .values()
            .rev()
            .filter_map(|key| self.traces.get(key).map(|t| summarize(*key, t)))
            .take(limit)
            .collect()
    }

    /// Newest first (by arrival), all traces.
    pub fn recent(&self, limit: usize) -> Vec<TraceSummary> {
        let mut recent = self.rings.recent.order.iter().rev().peekable();
        let mut notable = self.rings.notable.order.iter().rev().peekable();
        let mut out = Vec::new();
        while out.len() < limit {
            let next = match (recent.peek(), notable.peek()) {
                (Some((a, _)), Some((b, _))) if a > b => recent.next(),
                (_, Some(_)) => notable.next(),
                (Some(_), None) => recent.next(),
                (None, None) => None,
            };
            let Some((_, key)) = next else { break };
            if let Some(t) = self.traces.get(key) {
                out.push(summarize(*key, t));
            }
        }
        out
    }

    /// Per Service (`NS/NAME`), how its pods carry trace context from the requests they serve
    /// to the calls they make, over the stored traces. A sidecar's inbound span (`ingress`) is
    /// named for the Service; its outbound spans (`egress <host>`) for the pod's namespace, so
    /// the two are joined by the Envoy node (`node_id`) that sent both. A call whose span has
    /// no parent started a new trace: the app did not copy the context of the request it was
    /// serving (or made the call on its own).
    pub fn context_forwarding(&self) -> BTreeMap<String, Forwarding> {
        let spans = || self.traces.values().flat_map(|t| &t.spans);
        let mut served: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for span in spans().filter(|s| s.name == "ingress") {
            // Inbound spans of sidecars are named for a Service, `NS/NAME`; a Gateway's for
            // the Gateway (`gateway/NS/NAME`).
            let (Some(node), 1) = (
                span.attributes.get(NODE_ID_ATTRIBUTE),
                span.service.matches('/').count(),
            ) else {
                continue;
            };
            *served
                .entry((node.as_str(), span.service.as_str()))
                .or_default() += 1;
        }
        let mut calls: HashMap<&str, (u64, u64)> = HashMap::new();
        for span in spans().filter(|s| s.name.starts_with("egress ")) {
            let Some(node) = span.attributes.get(NODE_ID_ATTRIBUTE) else {
                continue;
            };
            let entry = calls.entry(node.as_str()).or_default();
            entry.0 += 1;
            entry.1 += u64::from(span.parent_span_id.is_some());
        }
        let mut out: BTreeMap<String, Forwarding> = BTreeMap::new();
        for ((node, service), n) in served {
            let entry = out.entry(service.to_string()).or_default();
            entry.served += n;
            if let Some((made, continued)) = calls.get(node) {
                entry.calls += made;
                entry.continued += continued;
            }
        }
        out
    }

    /// Accounted bytes; at most [`StoreConfig::max_bytes`] whenever `ingest` has returned.
    pub fn bytes(&self) -> usize {
        self.rings
            .recent
            .bytes
            .saturating_add(self.rings.notable.bytes)
    }

    /// Accounted bytes of the traces in the notable ring.
    pub fn notable_bytes(&self) -> usize {
        self.rings.notable.bytes
    }

    /// Spans stored.
    pub fn spans(&self) -> usize {
        self.spans
    }

    /// Traces stored.
    pub fn traces(&self) -> usize {
        self.traces.len()
    }

    /// Traces evicted to stay within budget so far.
    pub fn evicted_traces(&self) -> u64 {
        self.evicted
    }

    /// Stores one span unless it is malformed or over a cap or the budget.
    fn ingest_span(
        &mut self,
        service: Option<&str>,
        span: &opentelemetry_proto::tonic::trace::v1::Span,
    ) -> bool {
        let Some((key, span)) = convert(service, span) else {
            return false;
        };
        let Some(plan) = self.plan(key, service, &span) else {
            return false;
        };
        self.apply(key, span, plan);
        true
    }

    /// What storing `span` costs and where its trace goes; `None` when it is refused.
    fn plan(&self, key: u128, service: Option<&str>, span: &Span) -> Option<Plan> {
        let trace = self.traces.get(&key);
        if trace.is_some_and(|t| t.spans.len() >= MAX_SPANS_PER_TRACE) {
            return None;
        }
        let mut cost = span_bytes(span);
        if trace.is_none() {
            cost = cost.saturating_add(TRACE_OVERHEAD);
        }
        let request_id = span
            .attributes
            .get(REQUEST_ID_ATTRIBUTE)
            .filter(|r| !r.is_empty() && !self.by_request.contains_key(r.as_str()))
            .filter(|_| trace.map_or(0, |t| t.request_ids.len()) < MAX_REQUEST_IDS_PER_TRACE)
            .cloned();
        if let Some(r) = &request_id {
            cost = cost.saturating_add(request_id_bytes(r));
        }
        let mut services: Vec<String> = Vec::new();
        let cluster = span
            .attributes
            .get(UPSTREAM_CLUSTER_ATTRIBUTE)
            .and_then(|c| cluster_service(c));
        let room = MAX_SERVICES_PER_TRACE.saturating_sub(trace.map_or(0, |t| t.services.len()));
        for s in service.map(str::to_string).into_iter().chain(cluster) {
            let known = trace.is_some_and(|t| t.services.contains(&s));
            if !known && !services.contains(&s) && services.len() < room {
                cost = cost.saturating_add(service_entry_bytes(&s));
                services.push(s);
            }
        }
        let end = span.start_unix_nanos.saturating_add(span.duration_nanos);
        let min_start = trace.map_or(span.start_unix_nanos, |t| {
            t.min_start.min(span.start_unix_nanos)
        });
        let max_end = trace.map_or(end, |t| t.max_end.max(end));
        let error = trace.is_some_and(|t| t.error) || is_error(span);
        let slow = u128::from(max_end.saturating_sub(min_start)) >= self.config.slow.as_nanos();
        let notable = error || slow || trace.is_some_and(|t| t.notable);
        let bytes_after = trace.map_or(0, |t| t.bytes).saturating_add(cost);
        let ring = match trace.map(|t| t.ring) {
            Some(RingKind::Notable) => RingKind::Notable,
            _ if notable && bytes_after <= self.rings.notable.budget => RingKind::Notable,
            _ => RingKind::Recent,
        };
        if bytes_after > self.rings.get(ring).budget {
            return None;
        }
        Some(Plan {
            ring,
            cost,
            notable,
            error,
            min_start,
            max_end,
            request_id,
            services,
        })
    }

    /// Stores `span` as planned, then evicts the oldest other traces of its ring until the
    /// ring fits its budget.
    fn apply(&mut self, key: u128, span: Span, plan: Plan) {
        let trace = match self.traces.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let seq = self.next_seq;
                self.next_seq = self.next_seq.saturating_add(1);
                self.rings.get_mut(plan.ring).order.insert(seq, key);
                e.insert(Stored {
                    seq,
                    ring: plan.ring,
                    bytes: 0,
                    notable: false,
                    error: false,
                    min_start: plan.min_start,
                    max_end: plan.max_end,
                    spans: Vec::new(),
                    request_ids: Vec::new(),
                    services: Vec::new(),
                })
            }
        };
        if trace.ring != plan.ring {
            let from = self.rings.get_mut(trace.ring);
            from.order.remove(&trace.seq);
            from.bytes = from.bytes.saturating_sub(trace.bytes);
            let to = self.rings.get_mut(plan.ring);
            to.order.insert(trace.seq, key);
            to.bytes = to.bytes.saturating_add(trace.bytes);
            trace.ring = plan.ring;
        }
        let ring = self.rings.get_mut(plan.ring);
        ring.bytes = ring.bytes.saturating_add(plan.cost);
        trace.bytes = trace.bytes.saturating_add(plan.cost);
        trace.notable = plan.notable;
        trace.error = plan.error;
        trace.min_start = plan.min_start;
        trace.max_end = plan.max_end;
        trace.spans.push(span);
        self.spans = self.spans.saturating_add(1);
        if let Some(r) = plan.request_id {
            trace.request_ids.push(r.clone());
            self.by_request.insert(r, key);
        }
        for s in plan.services {
            self.by_service
                .entry(s.clone())
                .or_default()
                .insert(trace.seq, key);
            trace.services.push(s);
        }
        self.evict(plan.ring, key);
    }

    /// Drops the oldest traces of a ring other than `keep` until the ring fits its budget.
    fn evict(&mut self, kind: RingKind, keep: u128) {
        loop {
            let ring = self.rings.get(kind);
            if ring.bytes <= ring.budget {
                return;
            }
            let Some(victim) = ring.order.values().copied().find(|k| *k != keep) else {
                return;
            };
            self.remove(victim);
        }
    }

    /// Removes a trace and everything indexing it.
    fn remove(&mut self, key: u128) {
        let Some(trace) = self.traces.remove(&key) else {
            return;
        };
        let ring = self.rings.get_mut(trace.ring);
        ring.order.remove(&trace.seq);
        ring.bytes = ring.bytes.saturating_sub(trace.bytes);
        self.spans = self.spans.saturating_sub(trace.spans.len());
        for r in &trace.request_ids {
            if self.by_request.get(r) == Some(&key) {
                self.by_request.remove(r);
            }
        }
        for s in &trace.services {
            if let Some(traces) = self.by_service.get_mut(s) {
                traces.remove(&trace.seq);
                if traces.is_empty() {
                    self.by_service.remove(s);
                }
            }
        }
        self.evicted = self.evicted.saturating_add(1);
    }

    /// The accounted bytes recomputed from what is stored.
    #[cfg(test)]
    fn recount(&self) -> usize {
        self.traces
            .values()
            .map(|t| {
                TRACE_OVERHEAD
                    + t.spans.iter().map(span_bytes).sum::<usize>()
                    + t.request_ids
                        .iter()
                        .map(|r| request_id_bytes(r))
                        .sum::<usize>()
                    + t.services
                        .iter()
                        .map(|s| service_entry_bytes(s))
                        .sum::<usize>()
            })
            .sum()
    }
}

/// What a stored span is accounted: the overhead and all its strings.
fn span_bytes(span: &Span) -> usize {
    let strings = [
        span.trace_id.len(),
        span.span_id.len(),
        span.parent_span_id.as_ref().map_or(0, String::len),
        span.service.len(),
        span.name.len(),
    ];
    let attributes = span.attributes.iter().fold(0usize, |n, (k, v)| {
        n.saturating_add(ATTRIBUTE_OVERHEAD)
            .saturating_add(k.len())
            .saturating_add(v.len())
    });
    strings
        .iter()
        .fold(SPAN_OVERHEAD, |n, len| n.saturating_add(*len))
        .saturating_add(attributes)
}

fn request_id_bytes(request_id: &str) -> usize {
    REQUEST_ID_OVERHEAD.saturating_add(request_id.len())
}

fn service_entry_bytes(service: &str) -> usize {
    SERVICE_ENTRY_OVERHEAD.saturating_add(service.len())
}

fn is_error(span: &Span) -> bool {
    span.status == "error"
        || span
            .attributes
            .get(ERROR_ATTRIBUTE)
            .is_some_and(|v| v == "true")
}

/// `NS/NAME` from a cluster named `service/<ns>/<name>/<port>` (as spans name it) or
/// `service_<ns>_<name>_<port>` (as stats do).
fn cluster_service(cluster: &str) -> Option<String> {
    let mut parts = match cluster.strip_prefix("service/") {
        Some(rest) => rest.split('/'),
        None => cluster.strip_prefix("service_")?.split('_'),
    };
    let (ns, name, port) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = parts.next().is_none()
        && !ns.is_empty()
        && !name.is_empty()
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit());
    valid.then(|| format!("{ns}/{name}"))
}

/// The span as stored and its trace's key; `None` when an id is malformed.
fn convert(
    service: Option<&str>,
    span: &opentelemetry_proto::tonic::trace::v1::Span,
) -> Option<(u128, Span)> {
    let trace_id = u128::from_be_bytes(span.trace_id.as_slice().try_into().ok()?);
    let span_id = u64::from_be_bytes(span.span_id.as_slice().try_into().ok()?);
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    let parent = match span.parent_span_id.as_slice() {
        [] => None,
        bytes => Some(u64::from_be_bytes(bytes.try_into().ok()?)).filter(|p| *p != 0),
    };
    let mut attributes = BTreeMap::new();
    for kv in &span.attributes {
        if attributes.len() >= MAX_ATTRIBUTES {
            break;
        }
        if let Some(value) = kv.value.as_ref().and_then(render_value) {
            attributes.insert(truncate(&kv.key, MAX_KEY_BYTES).to_string(), value);
        }
    }
    let stored = Span {
        trace_id: format!("{trace_id:032x}"),
        span_id: format!("{span_id:016x}"),
        parent_span_id: parent.map(|p| format!("{p:016x}")),
        service: service.unwrap_or(UNKNOWN_SERVICE).to_string(),
        name: truncate(&span.name, MAX_NAME_BYTES).to_string(),
        kind: kind_name(span.kind),
        start_unix_nanos: span.start_time_unix_nano,
        duration_nanos: span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano),
        status: status_name(span.status.as_ref().map_or(0, |s| s.code)),
        attributes,
    };
    Some((trace_id, stored))
}

fn kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Internal) => "internal",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        Ok(SpanKind::Unspecified) | Err(_) => "unspecified",
    }
}

fn status_name(code: i32) -> &'static str {
    match StatusCode::try_from(code) {
        Ok(StatusCode::Ok) => "ok",
        Ok(StatusCode::Error) => "error",
        Ok(StatusCode::Unset) | Err(_) => "unset",
    }
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
}

/// The longest prefix of `s` of at most `max` bytes ending at a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    s.get(..end).unwrap_or_default()
}

/// A value as a string of at most [`MAX_VALUE_BYTES`]: strings as they are, scalars via
/// `to_string`, bytes as hex, arrays as `[a,b]`, lists as `{k=v,k=v}`; `None` for no value.
fn render_value(value: &AnyValue) -> Option<String> {
    match value.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(truncate(s, MAX_VALUE_BYTES).to_string()),
        any_value::Value::StringValueStrindex(_) => None,
        _ => {
            let mut out = String::new();
            write_value(value, &mut out, 0);
            let end = truncate(&out, MAX_VALUE_BYTES).len();
            out.truncate(end);
            Some(out)
        }
    }
}

fn write_value(value: &AnyValue, out: &mut String, depth: usize) {
    if out.len() >= MAX_VALUE_BYTES {
        return;
    }
    match &value.value {
        Some(any_value::Value::StringValue(s)) => out.push_str(truncate(s, MAX_VALUE_BYTES)),
        Some(any_value::Value::BoolValue(b)) => out.push_str(&b.to_string()),
        Some(any_value::Value::IntValue(i)) => out.push_str(&i.to_string()),
        Some(any_value::Value::DoubleValue(d)) => out.push_str(&d.to_string()),
        Some(any_value::Value::BytesValue(bytes)) => {
            for b in bytes.iter().take(MAX_VALUE_BYTES / 2) {
                out.push_str(&format!("{b:02x}"));
            }
        }
        Some(any_value::Value::ArrayValue(array)) if depth < MAX_VALUE_DEPTH => {
            out.push('[');
            for (i, v) in array.values.iter().enumerate() {
                if out.len() >= MAX_VALUE_BYTES {
                    break;
                }
                if i > 0 {
                    out.push(',');
                }
                write_value(v, out, depth.saturating_add(1));
            }
            out.push(']');
        }
        Some(any_value::Value::KvlistValue(list)) if depth < MAX_VALUE_DEPTH => {
            out.push('{');
            for (i, kv) in list.values.iter().enumerate() {
                if out.len() >= MAX_VALUE_BYTES {
                    break;
                }
                if i > 0 {
                    out.push(',');
                }
                out.push_str(truncate(&kv.key, MAX_KEY_BYTES));
                out.push('=');
                if let Some(v) = &kv.value {
                    write_value(v, out, depth.saturating_add(1));
                }
            }
            out.push('}');
        }
        _ => {}
    }
}

fn parse_trace_id(trace_id: &str) -> Option<u128> {
    if trace_id.len() != 32 || !trace_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(trace_id, 16).ok()
}

fn render_trace(key: u128, trace: &Stored) -> Trace {
    let mut spans = trace.spans.clone();
    spans.sort_by(|a, b| {
        a.start_unix_nanos
            .cmp(&b.start_unix_nanos)
            .then_with(|| a.span_id.cmp(&b.span_id))
    });
    Trace {
        trace_id: format!("{key:032x}"),
        spans,
    }
}

fn summarize(key: u128, trace: &Stored) -> TraceSummary {
    let ids: HashSet<&str> = trace.spans.iter().map(|s| s.span_id.as_str()).collect();
    let earliest = |a: &&Span, b: &&Span| {
        a.start_unix_nanos
            .cmp(&b.start_unix_nanos)
            .then_with(|| a.span_id.cmp(&b.span_id))
    };
    let root = trace
        .spans
        .iter()
        .filter(|s| s.parent_span_id.as_deref().is_none_or(|p| !ids.contains(p)))
        .min_by(earliest)
        .or_else(|| trace.spans.iter().min_by(earliest));
    let request_id = root
        .and_then(|r| r.attributes.get(REQUEST_ID_ATTRIBUTE))
        .filter(|r| !r.is_empty())
        .or_else(|| trace.request_ids.first())
        .cloned();
    let mut services = trace.services.clone();
    services.sort();
    TraceSummary {
        trace_id: format!("{key:032x}"),
        root_service: root.map(|r| r.service.clone()).unwrap_or_default(),
        root_name: root.map(|r| r.name.clone()).unwrap_or_default(),
        start_unix_nanos: trace.min_start,
        duration_nanos: trace.max_end.saturating_sub(trace.min_start),
        spans: trace.spans.len(),
        error: trace.error,
        request_id,
        services,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::ArrayValue;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};
    use proptest::prelude::*;

    type OtlpSpan = opentelemetry_proto::tonic::trace::v1::Span;

    const MS: u64 = 1_000_000;
    const T0: u64 = 1_700_000_000_000 * MS;

    fn string(v: &str) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        }
    }

    fn kv(key: &str, value: AnyValue) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Some(value),
            ..Default::default()
        }
    }

    /// A span of trace `trace` (id `span_id`, parent `parent`, 0 for none), starting `start_ms`
    /// after T0 and lasting `duration_ms`.
    fn span(
        trace: u128,
        span_id: u64,
        parent: u64,
        name: &str,
        start_ms: u64,
        duration_ms: u64,
    ) -> OtlpSpan {
        let kind = if name == "ingress" {
            SpanKind::Server
        } else {
            SpanKind::Client
        };
        OtlpSpan {
            trace_id: trace.to_be_bytes().to_vec(),
            span_id: span_id.to_be_bytes().to_vec(),
            parent_span_id: if parent == 0 {
                Vec::new()
            } else {
                parent.to_be_bytes().to_vec()
            },
            name: name.to_string(),
            kind: kind as i32,
            start_time_unix_nano: T0 + start_ms * MS,
            end_time_unix_nano: T0 + (start_ms + duration_ms) * MS,
            ..Default::default()
        }
    }

    fn with(mut span: OtlpSpan, attributes: &[(&str, &str)]) -> OtlpSpan {
        span.attributes
            .extend(attributes.iter().map(|(k, v)| kv(k, string(v))));
        span
    }

    /// What Envoy sets on a 5xx.
    fn failed(mut span: OtlpSpan) -> OtlpSpan {
        span.status = Some(Status {
            code: StatusCode::Error as i32,
            ..Default::default()
        });
        with(span, &[("error", "true"), ("http.status_code", "503")])
    }

    /// One export: per proxy (service.name), its spans.
    fn export(proxies: Vec<(&str, Vec<OtlpSpan>)>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: proxies
                .into_iter()
                .map(|(service, spans)| ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv(SERVICE_NAME, string(service))],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// A gateway's request to shop/b: the gateway's ingress and router spans, b's ingress.
    fn gateway_to_b(trace: u128, request_id: &str, start_ms: u64) -> ExportTraceServiceRequest {
        export(vec![
            (
                "gateway/demo/web",
                vec![
                    with(
                        span(trace, 1, 0, "ingress", start_ms, 10),
                        &[
                            (REQUEST_ID_ATTRIBUTE, request_id),
                            ("http.status_code", "200"),
                        ],
                    ),
                    with(
                        span(
                            trace,
                            2,
                            1,
                            "router service_shop_b_80 egress",
                            start_ms + 1,
                            8,
                        ),
                        &[
                            (REQUEST_ID_ATTRIBUTE, request_id),
                            (UPSTREAM_CLUSTER_ATTRIBUTE, "service_shop_b_80"),
                        ],
                    ),
                ],
            ),
            (
                "shop/b",
                vec![with(
                    span(trace, 3, 2, "ingress", start_ms + 2, 6),
                    &[(REQUEST_ID_ATTRIBUTE, request_id), ("team", "checkout")],
                )],
            ),
        ])
    }

    fn ok_trace(trace: u128, start_ms: u64) -> ExportTraceServiceRequest {
        export(vec![(
            "shop/a",
            vec![with(
                span(trace, 1, 0, "ingress", start_ms, 5),
                &[
                    (REQUEST_ID_ATTRIBUTE, &format!("req-{trace}")),
                    ("tag", "x"),
                ],
            )],
        )])
    }

    fn small() -> StoreConfig {
        StoreConfig {
            max_bytes: 64 << 10,
            ..StoreConfig::default()
        }
    }

    fn id(trace: u128) -> String {
        format!("{trace:032x}")
    }

    #[test]
    fn calls_that_start_new_traces_are_told_apart_from_calls_that_continue_them() {
        let mut store = TraceStore::new(StoreConfig::default());
        // Pod b-1 (Service shop/b) forwards: its call to c is a child of the request it
        // serves. Pod d-1 (Service shop/d) does not: its call starts a trace of its own.
        for (i, (pod, service, forwards)) in
            [("b-1.shop", "shop/b", true), ("d-1.shop", "shop/d", false)]
                .into_iter()
                .enumerate()
        {
            let served = (i as u128 + 1) << 64;
            let node = [(NODE_ID_ATTRIBUTE, pod)];
            let mut calls = vec![with(span(served, 1, 9, "ingress", 0, 10), &node)];
            if forwards {
                calls.push(with(span(served, 2, 1, "egress c.shop", 1, 5), &node));
            } else {
                calls.push(with(span(served + 1, 2, 0, "egress c.shop", 1, 5), &node));
            }
            store.ingest(&export(vec![
                (service, vec![calls[0].clone()]),
                ("shop", vec![calls[1].clone()]),
            ]));
        }
        // A Gateway's inbound span is not a Service's.
        store.ingest(&gateway_to_b(7, "r-7", 0));
        let got = store.context_forwarding();
        assert_eq!(
            got["shop/b"],
            Forwarding {
                served: 1,
                calls: 1,
                continued: 1
            }
        );
        assert_eq!(
            got["shop/d"],
            Forwarding {
                served: 1,
                calls: 1,
                continued: 0
            }
        );
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[test]
    fn a_trace_is_found_by_id_request_id_and_service() {
        let mut store = TraceStore::new(StoreConfig::default());
        let trace = (0xabc_u128 << 64) | 0x1;
        let got = store.ingest(&gateway_to_b(trace, "r-1", 0));
        assert_eq!(
            got,
            Ingested {
                stored: 3,
                refused: 0
            }
        );
        assert_eq!((store.traces(), store.spans()), (1, 3));
        assert_eq!(store.bytes(), store.recount());

        let t = store.trace(&id(trace)).unwrap();
        assert_eq!(t.trace_id, "0000000000000abc0000000000000001");
        let names: Vec<(&str, &str, &str)> = t
            .spans
            .iter()
            .map(|s| (s.name.as_str(), s.kind, s.service.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("ingress", "server", "gateway/demo/web"),
                (
                    "router service_shop_b_80 egress",
                    "client",
                    "gateway/demo/web"
                ),
                ("ingress", "server", "shop/b"),
            ]
        );
        assert_eq!(t.spans[0].span_id, "0000000000000001");
        assert_eq!(t.spans[0].parent_span_id, None);
        assert_eq!(
            t.spans[1].parent_span_id.as_deref(),
            Some("0000000000000001")
        );
        assert_eq!(
            t.spans[2].parent_span_id.as_deref(),
            Some("0000000000000002")
        );
        assert_eq!(t.spans[2].status, "unset");
        assert_eq!(t.spans[2].duration_nanos, 6 * MS);
        assert_eq!(t.spans[2].attributes["team"], "checkout");
        assert_eq!(t.spans[0].start_unix_nanos, T0);
        assert!(store.trace(&id(trace + 1)).is_none());
        assert!(store.trace("not-hex").is_none());

        assert_eq!(store.by_request_id("r-1").unwrap().trace_id, id(trace));
        assert!(store.by_request_id("r-2").is_none());

        // shop/b: both as the upstream cluster and as the sidecar's service.name.
        for service in ["shop/b", "gateway/demo/web"] {
            let listed = store.by_service(service, 10);
            assert_eq!(listed.len(), 1, "{service}");
            let s = &listed[0];
            assert_eq!(s.trace_id, id(trace));
            assert_eq!(
                (s.root_service.as_str(), s.root_name.as_str()),
                ("gateway/demo/web", "ingress")
            );
            assert_eq!(
                (s.start_unix_nanos, s.duration_nanos, s.spans),
                (T0, 10 * MS, 3)
            );
            assert_eq!(s.request_id.as_deref(), Some("r-1"));
            assert_eq!(s.services, ["gateway/demo/web", "shop/b"]);
            assert!(!s.error);
        }
        assert!(store.by_service("shop/a", 10).is_empty());
    }

    #[test]
    fn a_service_is_found_through_the_upstream_cluster_alone() {
        let mut store = TraceStore::new(StoreConfig::default());
        let router = |trace: u128, cluster: &str| {
            export(vec![(
                "gateway/demo/web",
                vec![with(
                    span(trace, 1, 0, "router egress", 0, 1),
                    &[(UPSTREAM_CLUSTER_ATTRIBUTE, cluster)],
                )],
            )])
        };
        store.ingest(&router(1, "service_shop_c_8080"));
        store.ingest(&router(2, "service/shop/c/8080"));
        for (i, cluster) in [
            "service_shop_c_http",
            "service_shop_c",
            "service_a_b_c_80",
            "passthrough",
            "service__c_80",
        ]
        .into_iter()
        .enumerate()
        {
            store.ingest(&router(10 + i as u128, cluster));
        }
        let listed = store.by_service("shop/c", 10);
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].trace_id, id(2));
        assert_eq!(listed[1].trace_id, id(1));
        assert_eq!(listed[0].services, ["gateway/demo/web", "shop/c"]);
        assert_eq!(store.by_service("gateway/demo/web", 100).len(), 7);
    }

    #[test]
    fn listings_are_newest_first_and_limited() {
        let mut store = TraceStore::new(StoreConfig::default());
        for trace in 1..=5u128 {
            store.ingest(&gateway_to_b(
                trace,
                &format!("r-{trace}"),
                trace as u64 * 100,
            ));
        }
        // An error makes trace 2 notable: it moves rings but keeps its place by arrival.
        store.ingest(&export(vec![(
            "shop/b",
            vec![failed(span(2, 9, 3, "router egress", 210, 1))],
        )]));
        let ids =
            |listed: Vec<TraceSummary>| listed.into_iter().map(|s| s.trace_id).collect::<Vec<_>>();
        assert_eq!(ids(store.by_service("shop/b", 3)), [id(5), id(4), id(3)]);
        assert_eq!(ids(store.recent(10)), [id(5), id(4), id(3), id(2), id(1)]);
        assert_eq!(ids(store.recent(2)), [id(5), id(4)]);
        assert!(store.recent(0).is_empty());
        assert!(store.notable_bytes() > 0);
        let summary = store
            .recent(10)
            .into_iter()
            .find(|s| s.trace_id == id(2))
            .unwrap();
        assert!(summary.error);
        let t = store.trace(&id(2)).unwrap();
        assert_eq!(t.spans.last().unwrap().status, "error");
        assert_eq!(store.bytes(), store.recount());
    }

    /// Sends 2000 OK traces (from id `from` on): enough to evict every older OK trace of a
    /// 64 KiB store, and the first of the flood too.
    fn flood(store: &mut TraceStore, from: u128) {
        for trace in from..from + 2000 {
            store.ingest(&ok_trace(trace, 0));
            assert!(store.bytes() <= store.config().max_bytes);
        }
    }

    #[test]
    fn an_error_trace_survives_a_flood_of_ok_traces() {
        let mut store = TraceStore::new(small());
        store.ingest(&ok_trace(1, 0));
        store.ingest(&export(vec![(
            "shop/a",
            vec![failed(span(2, 1, 0, "ingress", 0, 5))],
        )]));
        // Becomes notable in a later export.
        store.ingest(&ok_trace(3, 0));
        store.ingest(&export(vec![(
            "shop/b",
            vec![failed(span(3, 2, 1, "ingress", 1, 2))],
        )]));
        flood(&mut store, 100);
        assert!(store.trace(&id(1)).is_none());
        assert!(store.by_request_id("req-1").is_none());
        assert!(store.trace(&id(100)).is_none());
        assert!(store.trace(&id(2)).is_some());
        assert_eq!(store.trace(&id(3)).unwrap().spans.len(), 2);
        assert_eq!(store.by_request_id("req-3").unwrap().trace_id, id(3));
        assert!(store.evicted_traces() >= 101);
        assert_eq!(store.bytes(), store.recount());
        let errors: Vec<String> = store
            .by_service("shop/a", 1000)
            .into_iter()
            .filter(|s| s.error)
            .map(|s| s.trace_id)
            .collect();
        assert_eq!(errors, [id(3), id(2)]);
    }

    #[test]
    fn a_slow_trace_survives_a_flood_of_ok_traces() {
        let mut store = TraceStore::new(small());
        store.ingest(&export(vec![(
            "shop/a",
            vec![span(7, 1, 0, "ingress", 0, 1500)],
        )]));
        // Slow only through its extent: two quick spans a second apart.
        store.ingest(&export(vec![(
            "shop/a",
            vec![span(8, 1, 0, "ingress", 0, 1)],
        )]));
        store.ingest(&export(vec![(
            "shop/b",
            vec![span(8, 2, 1, "ingress", 1000, 1)],
        )]));
        flood(&mut store, 100);
        assert!(store.trace(&id(7)).is_some());
        assert!(store.trace(&id(8)).is_some());
        let slow = store
            .recent(5000)
            .into_iter()
            .find(|s| s.trace_id == id(7))
            .unwrap();
        assert_eq!(slow.duration_nanos, 1500 * MS);
        assert!(!slow.error);
        assert!(store.trace(&id(100)).is_none());
    }

    #[test]
    fn malformed_ids_are_refused_and_counted() {
        let mut store = TraceStore::new(StoreConfig::default());
        let good = span(1, 1, 0, "ingress", 0, 1);
        let mut short_trace = good.clone();
        short_trace.trace_id.pop();
        let mut long_span = good.clone();
        long_span.span_id.push(0);
        let mut zero_trace = good.clone();
        zero_trace.trace_id = vec![0; 16];
        let mut bad_parent = good.clone();
        bad_parent.parent_span_id = vec![1, 2, 3, 4];
        let mut zero_span = good.clone();
        zero_span.span_id = vec![0; 8];
        let got = store.ingest(&export(vec![(
            "shop/a",
            vec![
                short_trace,
                long_span,
                zero_trace,
                bad_parent,
                zero_span,
                good,
            ],
        )]));
        assert_eq!(
            got,
            Ingested {
                stored: 1,
                refused: 5
            }
        );
        assert_eq!((store.traces(), store.spans()), (1, 1));
    }

    #[test]
    fn oversize_strings_are_truncated_and_attributes_capped() {
        let mut store = TraceStore::new(StoreConfig::default());
        let mut s = span(1, 1, 0, &"n".repeat(1000), 0, 1);
        let long_key = "k".repeat(200);
        let long_value = "é".repeat(3000);
        s.attributes.push(kv(&long_key, string(&long_value)));
        s.attributes.push(kv(
            "flag",
            AnyValue {
                value: Some(any_value::Value::BoolValue(true)),
            },
        ));
        s.attributes.push(kv(
            "code",
            AnyValue {
                value: Some(any_value::Value::IntValue(-7)),
            },
        ));
        s.attributes.push(kv(
            "ratio",
            AnyValue {
                value: Some(any_value::Value::DoubleValue(0.5)),
            },
        ));
        s.attributes.push(kv("empty", AnyValue { value: None }));
        let array = ArrayValue {
            values: vec![
                string("a"),
                AnyValue {
                    value: Some(any_value::Value::IntValue(1)),
                },
            ],
        };
        s.attributes.push(kv(
            "list",
            AnyValue {
                value: Some(any_value::Value::ArrayValue(array)),
            },
        ));
        for i in 0..100 {
            s.attributes.push(kv(&format!("extra{i:03}"), string("v")));
        }
        let long_service = "s".repeat(300);
        store.ingest(&export(vec![(long_service.as_str(), vec![s])]));
        let t = store.trace(&id(1)).unwrap();
        let span = &t.spans[0];
        assert_eq!(span.name.len(), MAX_NAME_BYTES);
        assert_eq!(span.service.len(), MAX_NAME_BYTES);
        assert_eq!(span.attributes.len(), MAX_ATTRIBUTES);
        let value = &span.attributes[&"k".repeat(MAX_KEY_BYTES)];
        assert_eq!(value.len(), MAX_VALUE_BYTES);
        assert!(value.chars().all(|c| c == 'é'));
        assert_eq!(span.attributes["flag"], "true");
        assert_eq!(span.attributes["code"], "-7");
        assert_eq!(span.attributes["ratio"], "0.5");
        assert_eq!(span.attributes["list"], "[a,1]");
        assert!(!span.attributes.contains_key("empty"));
        // 5 attributes kept above, then extras up to the cap.
        assert!(span.attributes.contains_key("extra058"));
        assert!(!span.attributes.contains_key("extra059"));
        assert_eq!(store.bytes(), store.recount());
    }

    #[test]
    fn spans_per_trace_and_per_export_are_capped() {
        let mut store = TraceStore::new(StoreConfig::default());
        let one_trace = (1..=MAX_SPANS_PER_TRACE as u64 + 5)
            .map(|i| span(1, i, 0, "ingress", 0, 1))
            .collect();
        let got = store.ingest(&export(vec![("shop/a", one_trace)]));
        assert_eq!(
            got,
            Ingested {
                stored: MAX_SPANS_PER_TRACE,
                refused: 5
            }
        );

        let many = |base: u128| {
            (0..MAX_SPANS_PER_EXPORT as u128 / 2 + 10)
                .map(|i| span(base + i, 1, 0, "ingress", 0, 1))
                .collect::<Vec<_>>()
        };
        let got = store.ingest(&export(vec![
            ("shop/a", many(1 << 40)),
            ("shop/b", many(1 << 50)),
        ]));
        assert_eq!(
            got,
            Ingested {
                stored: MAX_SPANS_PER_EXPORT,
                refused: 20
            }
        );
        assert_eq!(store.spans(), MAX_SPANS_PER_TRACE + MAX_SPANS_PER_EXPORT);
        assert_eq!(store.bytes(), store.recount());
    }

    #[test]
    fn a_span_larger_than_the_budget_is_refused() {
        let mut store = TraceStore::new(StoreConfig {
            max_bytes: 4096,
            ..StoreConfig::default()
        });
        let attributes: Vec<(String, String)> = (0..8)
            .map(|i| (format!("a{i}"), "v".repeat(1000)))
            .collect();
        let attributes: Vec<(&str, &str)> = attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let got = store.ingest(&export(vec![(
            "shop/a",
            vec![with(span(1, 1, 0, "ingress", 0, 1), &attributes)],
        )]));
        assert_eq!(
            got,
            Ingested {
                stored: 0,
                refused: 1
            }
        );
        assert_eq!((store.bytes(), store.traces(), store.spans()), (0, 0, 0));
        let got = store.ingest(&ok_trace(2, 0));
        assert_eq!(got.stored, 1);
    }

    #[test]
    fn eviction_clears_the_indexes_and_a_late_span_starts_a_fresh_trace() {
        let mut store = TraceStore::new(small());
        store.ingest(&gateway_to_b(1, "r-1", 0));
        flood(&mut store, 100);
        assert!(store.trace(&id(1)).is_none());
        assert!(store.by_request_id("r-1").is_none());
        assert!(store.by_service("shop/b", 10).is_empty());
        assert!(store.by_service("gateway/demo/web", 10).is_empty());
        store.ingest(&export(vec![(
            "shop/b",
            vec![with(
                span(1, 3, 2, "ingress", 2, 6),
                &[(REQUEST_ID_ATTRIBUTE, "r-1")],
            )],
        )]));
        let t = store.by_request_id("r-1").unwrap();
        assert_eq!((t.trace_id, t.spans.len()), (id(1), 1));
        assert_eq!(store.recent(1)[0].trace_id, id(1));
        assert_eq!(store.bytes(), store.recount());
    }

    // --- property: whatever arrives, the bounds and the indexes hold ---

    #[derive(Clone, Debug)]
    struct GenSpan {
        trace: u8,
        span_id: u64,
        parent: Option<u64>,
        bad_id: bool,
        start_ms: u64,
        duration_ms: u64,
        error: bool,
        request: Option<u8>,
        cluster: Option<u8>,
        attributes: Vec<(usize, usize)>,
    }

    fn gen_span() -> impl Strategy<Value = GenSpan> {
        (
            0u8..40,
            any::<u64>(),
            proptest::option::of(any::<u64>()),
            proptest::bool::weighted(0.05),
            0u64..3000,
            0u64..1500,
            proptest::bool::weighted(0.1),
            proptest::option::of(0u8..30),
            proptest::option::of(0u8..6),
            prop::collection::vec((0usize..200, 0usize..3000), 0..5),
        )
            .prop_map(
                |(
                    trace,
                    span_id,
                    parent,
                    bad_id,
                    start_ms,
                    duration_ms,
                    error,
                    request,
                    cluster,
                    attributes,
                )| GenSpan {
                    trace,
                    span_id,
                    parent,
                    bad_id,
                    start_ms,
                    duration_ms,
                    error,
                    request,
                    cluster,
                    attributes,
                },
            )
    }

    fn build(g: &GenSpan) -> OtlpSpan {
        let trace = ((u128::from(g.trace) + 1) << 64) | 0xfeed;
        let mut s = span(
            trace,
            g.span_id,
            g.parent.unwrap_or(0),
            "router egress",
            g.start_ms,
            g.duration_ms,
        );
        if g.bad_id {
            s.span_id.pop();
        }
        if g.error {
            s = failed(s);
        }
        if let Some(r) = g.request {
            s = with(s, &[(REQUEST_ID_ATTRIBUTE, &format!("req-{r}"))]);
        }
        if let Some(c) = g.cluster {
            s = with(
                s,
                &[(UPSTREAM_CLUSTER_ATTRIBUTE, &format!("service_ns{c}_svc_80"))],
            );
        }
        for (i, (key, value)) in g.attributes.iter().enumerate() {
            let key = format!("k{i}{}", "x".repeat(*key));
            let value = if value % 2 == 0 {
                "é".repeat(value / 2)
            } else {
                "v".repeat(*value)
            };
            s = with(s, &[(&key, &value)]);
        }
        s
    }

    fn gen_export() -> impl Strategy<Value = Vec<(u8, Vec<GenSpan>)>> {
        prop::collection::vec((0u8..4, prop::collection::vec(gen_span(), 0..12)), 1..3)
    }

    fn check(store: &TraceStore) -> Result<(), TestCaseError> {
        prop_assert!(store.bytes() <= store.config().max_bytes);
        prop_assert_eq!(store.bytes(), store.recount());
        for kind in [RingKind::Recent, RingKind::Notable] {
            let ring = store.rings.get(kind);
            prop_assert!(ring.bytes <= ring.budget);
            let mut sum = 0;
            for (seq, key) in &ring.order {
                let t = store.traces.get(key);
                prop_assert!(t.is_some_and(|t| t.seq == *seq && t.ring == kind));
                sum += t.map_or(0, |t| t.bytes);
            }
            prop_assert_eq!(ring.bytes, sum);
        }
        prop_assert_eq!(
            store.rings.recent.order.len() + store.rings.notable.order.len(),
            store.traces()
        );
        let spans: usize = store.traces.values().map(|t| t.spans.len()).sum();
        prop_assert_eq!(store.spans(), spans);
        for (request_id, key) in &store.by_request {
            let t = store.traces.get(key);
            prop_assert!(
                t.is_some_and(|t| t.request_ids.contains(request_id)),
                "{}",
                request_id
            );
        }
        for (service, traces) in &store.by_service {
            prop_assert!(!traces.is_empty());
            for (seq, key) in traces {
                let t = store.traces.get(key);
                prop_assert!(t.is_some_and(|t| t.seq == *seq && t.services.contains(service)));
            }
        }
        for (key, t) in &store.traces {
            prop_assert!(t.spans.len() <= MAX_SPANS_PER_TRACE);
            for r in &t.request_ids {
                prop_assert_eq!(store.by_request.get(r), Some(key));
            }
            for s in &t.services {
                prop_assert_eq!(
                    store.by_service.get(s).and_then(|m| m.get(&t.seq)),
                    Some(key)
                );
            }
        }
        Ok(())
    }

    proptest! {
        /// After every export the store fits its budget, its byte count matches its contents,
        /// and every index entry refers to a stored trace (and back).
        #[test]
        fn bytes_stay_bounded_exact_and_indexes_consistent(exports in prop::collection::vec(gen_export(), 1..25)) {
            let mut store = TraceStore::new(small());
            for proxies in &exports {
                let request = export(
                    proxies
                        .iter()
                        .map(|(service, spans)| {
                            let service = ["shop/a", "shop/b", "gateway/demo/web", ""][usize::from(*service)];
                            (service, spans.iter().map(build).collect())
                        })
                        .collect(),
                );
                let sent: usize = proxies.iter().map(|(_, spans)| spans.len()).sum();
                let got = store.ingest(&request);
                prop_assert_eq!(got.stored + got.refused, sent);
                check(&store)?;
            }
        }
    }
}
