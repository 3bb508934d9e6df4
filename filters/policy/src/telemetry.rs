//! Telemetry: what the filter records about requests besides its decision counters — span
//! tags, baggage tags, latency objectives and per-peer counters. Configured by the optional
//! `telemetry` key ([`crate::config::TelemetryConfig`]); every part is off by default, and with
//! no part on the filter has no [`Telemetry`] at all and costs what it did without it.
//!
//! ```text
//!  request headers (PolicyFilter::on_request_headers)
//!    baggage header ──parse_baggage──► allow-listed keys ──► set_property trellis.baggage.<key>
//!    peer SPIFFE ID ──admitted? (shared data, max_peers)──► trellis_inbound_requests_total
//!                                                              .peer.<id | none | other>
//!    policies, limits ──► allow | deny | audit | limited ──► set_property trellis.decision,
//!                                                              trellis.rule  (before any 403/429)
//!  log phase (PolicyFilter::on_log)
//!    route name ──► first objective in scope ──► request.duration ≤ objective?
//!                                  ──► trellis_slo_requests_total.route.<route>.class.<good|bad>
//! ```
//!
//! Envoy keeps a property the filter sets as filter state named `wasm.<property>`, which span
//! custom tags and access logs read with `%FILTER_STATE(<name>:PLAIN)%`: the names are
//! [`DECISION_STATE`], [`RULE_STATE`] and [`baggage_state`]. Envoy copies filter state onto a
//! span only if it is set before the log phase, so all of it is set in request headers.
//!
//! Peers named in counters are bounded proxy-wide: the set of admitted peers lives in shared
//! data (a count and one entry per peer, [`PEERS_SHARED_PREFIX`]) so every worker agrees, and
//! each worker caches the peers it has seen admitted.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use crate::authz::{Policy, RequestFacts};
use crate::config::{Scope, TelemetryConfig};
use crate::filter::RouteScope;
use crate::host::{REQUEST_DURATION, REQUEST_TIME};
use crate::metrics::{self, SloClass};
use crate::{ConfigError, Host, SharedDataError};

/// The property the decision is written to (one path segment).
pub const DECISION_PROPERTY: &str = "trellis.decision";
/// The property the deciding policy rule or limit is written to.
pub const RULE_PROPERTY: &str = "trellis.rule";
/// The filter state Envoy keeps the decision in: `allow`, `deny`, `audit` or `limited`, for
/// `%FILTER_STATE(wasm.trellis.decision:PLAIN)%`.
pub const DECISION_STATE: &str = "wasm.trellis.decision";
/// The filter state Envoy keeps the deciding rule in: `<policy>/rule/<rule>`,
/// `<policy>/default`, a rate limit's name, or `-`.
pub const RULE_STATE: &str = "wasm.trellis.rule";
/// The rule label when nothing decided (no policy or limit in scope).
pub const NO_RULE: &str = "-";

/// At most this many `baggage_tags`.
pub const MAX_BAGGAGE_TAGS: usize = 16;
/// The longest baggage key accepted in `baggage_tags`.
pub const MAX_BAGGAGE_KEY: usize = 64;
/// Only the first this many bytes of a `baggage` header are looked at; a member cut by the
/// limit is dropped.
pub const MAX_BAGGAGE_HEADER: usize = 8192;
/// Only the first this many members of a `baggage` header are looked at.
pub const MAX_BAGGAGE_MEMBERS: usize = 64;
/// Baggage values copied to filter state are cut to this many bytes (at a character boundary).
pub const MAX_BAGGAGE_VALUE: usize = 256;
/// At most this many `latency_objectives`.
pub const MAX_LATENCY_OBJECTIVES: usize = 64;
/// The longest latency objective: an hour.
pub const MAX_OBJECTIVE_MS: u32 = 3_600_000;
/// `max_peers` when omitted.
pub const DEFAULT_MAX_PEERS: u32 = 100;
/// The largest `max_peers`.
pub const MAX_PEERS: u32 = 1000;
/// Prefix of the shared data entries that hold the admitted peers: `<prefix>count` (a
/// little-endian `u32`) and `<prefix>id/<peer label>` per peer.
pub const PEERS_SHARED_PREFIX: &str = "trellis.policy.peers.v1/";

/// How many times a lost compare-and-swap on the peer count is retried.
const CAS_ATTEMPTS: usize = 16;

/// The property a baggage key is copied to: `trellis.baggage.<key>`.
pub fn baggage_property(key: &str) -> String {
    format!("trellis.baggage.{key}")
}

/// The filter state Envoy keeps a baggage key's value in: `wasm.trellis.baggage.<key>`, for
/// `%FILTER_STATE(wasm.trellis.baggage.<key>:PLAIN)%`.
pub fn baggage_state(key: &str) -> String {
    format!("wasm.{}", baggage_property(key))
}

/// What the filter decided about a request, as written to [`DECISION_STATE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestDecision {
    /// Every policy in scope allowed it (or none was in scope) and no limit refused it.
    Allow,
    /// An enforcing policy denied it (403).
    Deny,
    /// Only audit-mode policies would have denied it; it went on.
    Audit,
    /// A rate limit refused it (429).
    Limited,
}

impl RequestDecision {
    /// The filter state value: `allow`, `deny`, `audit` or `limited`.
    pub fn label(self) -> &'static str {
        match self {
            RequestDecision::Allow => "allow",
            RequestDecision::Deny => "deny",
            RequestDecision::Audit => "audit",
            RequestDecision::Limited => "limited",
        }
    }
}

/// The telemetry part of a [`crate::PolicyFilter`], compiled.
#[derive(Debug)]
pub struct Telemetry {
    span_tags: bool,
    /// Per policy, per rule then the default: `<policy>/rule/<rule>`, `<policy>/default`
    /// (only with span tags).
    rule_labels: Vec<Vec<String>>,
    baggage: Vec<BaggageTag>,
    objectives: Vec<Objective>,
    /// Whether an objective is scoped by route name (else the route name is never fetched).
    objectives_need_route: bool,
    peers: Option<PeerCounters>,
}

#[derive(Debug)]
struct BaggageTag {
    key: String,
    property: String,
}

#[derive(Debug)]
struct Objective {
    scope: RouteScope,
    nanos: u64,
    counters: ObjectiveCounters,
}

/// An objective's counter names ([`SloClass::ALL`] order), by the route label they carry.
#[derive(Debug)]
enum ObjectiveCounters {
    All([String; 2]),
    Routes(BTreeMap<String, [String; 2]>),
    Prefixes(Vec<(String, [String; 2])>),
}

impl ObjectiveCounters {
    fn new(scope: &RouteScope) -> ObjectiveCounters {
        let names = |label: &str| SloClass::ALL.map(|class| metrics::slo_counter(label, class));
        match scope {
            RouteScope::All => ObjectiveCounters::All(names(metrics::ALL_ROUTES)),
            RouteScope::Routes(routes) => {
                ObjectiveCounters::Routes(routes.iter().map(|r| (r.clone(), names(r))).collect())
            }
            RouteScope::RoutePrefixes(prefixes) => ObjectiveCounters::Prefixes(
                prefixes.iter().map(|p| (p.clone(), names(p))).collect(),
            ),
        }
    }

    /// The counters for a request on `route` (already known to be in scope).
    fn for_route(&self, route: Option<&str>) -> Option<&[String; 2]> {
        match self {
            ObjectiveCounters::All(names) => Some(names),
            ObjectiveCounters::Routes(routes) => routes.get(route?),
            ObjectiveCounters::Prefixes(prefixes) => {
                let route = route?;
                prefixes
                    .iter()
                    .find(|(prefix, _)| route.starts_with(prefix.as_str()))
                    .map(|(_, names)| names)
            }
        }
    }

    fn names(&self) -> Vec<&String> {
        match self {
            ObjectiveCounters::All(names) => names.iter().collect(),
            ObjectiveCounters::Routes(routes) => routes.values().flatten().collect(),
            ObjectiveCounters::Prefixes(prefixes) => {
                prefixes.iter().flat_map(|(_, names)| names).collect()
            }
        }
    }
}

#[derive(Debug)]
struct PeerCounters {
    max: u32,
    none: String,
    other: String,
    /// Peers this worker knows are admitted: label → counter name (at most [`MAX_PEERS`]).
    cache: Mutex<PeerCache>,
}

#[derive(Debug, Default)]
struct PeerCache {
    admitted: HashMap<String, String>,
    /// The shared count reached `max`: no peer will be admitted any more (the count never
    /// goes down).
    full: bool,
}

impl Telemetry {
    /// Compiles the `telemetry` configuration; `policies` are the compiled policies (for the
    /// rule labels) and `field` the configuration's path for errors. `None` when every part is
    /// off.
    pub fn compile(
        config: &TelemetryConfig,
        policies: &[Policy],
        field: &str,
    ) -> Result<Option<Telemetry>, ConfigError> {
        let baggage = compile_baggage(&config.baggage_tags, &format!("{field}.baggage_tags"))?;
        let objectives = compile_objectives(
            &config.latency_objectives,
            &format!("{field}.latency_objectives"),
        )?;
        let max = config.max_peers.unwrap_or(DEFAULT_MAX_PEERS);
        if !(1..=MAX_PEERS).contains(&max) {
            return Err(ConfigError::invalid(
                format!("{field}.max_peers"),
                format!("must be 1 to {MAX_PEERS}"),
            ));
        }
        let peers = config.peer_counters.then(|| PeerCounters {
            max,
            none: metrics::peer_counter(metrics::NO_PEER),
            other: metrics::peer_counter(metrics::OTHER_PEERS),
            cache: Mutex::new(PeerCache::default()),
        });
        if !config.span_tags && baggage.is_empty() && objectives.is_empty() && peers.is_none() {
            return Ok(None);
        }
        let rule_labels = if config.span_tags {
            policies
                .iter()
                .map(|policy| {
                    policy
                        .rule_names()
                        .map(|rule| format!("{}/rule/{rule}", policy.name))
                        .chain(std::iter::once(format!("{}/default", policy.name)))
                        .collect()
                })
                .collect()
        } else {
            Vec::new()
        };
        let objectives_need_route = objectives.iter().any(|o| o.scope != RouteScope::All);
        Ok(Some(Telemetry {
            span_tags: config.span_tags,
            rule_labels,
            baggage,
            objectives,
            objectives_need_route,
            peers,
        }))
    }

    /// A short description for the configuration summary, e.g. `telemetry: span tags, 2
    /// baggage tags, 1 latency objective, peer counters (max 100)`.
    pub fn summary(&self) -> String {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut parts = Vec::new();
        if self.span_tags {
            parts.push("span tags".to_string());
        }
        if !self.baggage.is_empty() {
            parts.push(plural(self.baggage.len(), "baggage tag", "baggage tags"));
        }
        if !self.objectives.is_empty() {
            parts.push(plural(
                self.objectives.len(),
                "latency objective",
                "latency objectives",
            ));
        }
        if let Some(peers) = &self.peers {
            parts.push(format!("peer counters (max {})", peers.max));
        }
        format!("telemetry: {}", parts.join(", "))
    }

    /// The counters telemetry can increment whatever the traffic: every objective's, and the
    /// `none` and `other` peers (named peers are defined when first seen).
    pub fn metric_names(&self) -> Vec<&String> {
        let mut names: Vec<&String> = self
            .objectives
            .iter()
            .flat_map(|o| o.counters.names())
            .collect();
        if let Some(peers) = &self.peers {
            names.push(&peers.none);
            names.push(&peers.other);
        }
        names
    }

    /// Whether the decision is written as filter state.
    pub fn span_tags(&self) -> bool {
        self.span_tags
    }

    /// The rule label of policy `policy`'s rule `rule` (the rule count for the default).
    pub fn rule_label(&self, policy: usize, rule: usize) -> &str {
        self.rule_labels
            .get(policy)
            .and_then(|rules| rules.get(rule))
            .map_or(NO_RULE, String::as_str)
    }

    /// The request-headers part that does not depend on the decision: baggage tags and the
    /// peer counter. `facts` caches headers and the principal for the policies.
    pub(crate) fn on_request_headers<H: Host + ?Sized>(&self, facts: &mut RequestFacts<'_, H>) {
        let host = facts.host();
        if !self.baggage.is_empty()
            && let Some(header) = facts.header("baggage")
        {
            self.copy_baggage(host, &header);
        }
        if let Some(peers) = &self.peers {
            peers.count(host, facts.principal());
        }
    }

    /// Writes the decision and the deciding rule as filter state (with span tags on).
    pub fn tag_decision<H: Host + ?Sized>(&self, host: &H, decision: RequestDecision, rule: &str) {
        if self.span_tags {
            host.set_property(&[DECISION_PROPERTY], decision.label().as_bytes());
            host.set_property(&[RULE_PROPERTY], rule.as_bytes());
        }
    }

    /// The log phase: classifies the finished request against its route's latency objective.
    /// The duration is Envoy's `request.duration` (set once the request is complete), else the
    /// time since `request.time`; without either the request is not counted.
    pub fn on_log<H: Host + ?Sized>(&self, host: &H) {
        if self.objectives.is_empty() {
            return;
        }
        let route = if self.objectives_need_route {
            host.route_name()
        } else {
            None
        };
        let route = route.as_deref();
        let Some((objective, names)) = self.objectives.iter().find_map(|objective| {
            if !objective.scope.applies(route) {
                return None;
            }
            objective
                .counters
                .for_route(route)
                .map(|names| (objective, names))
        }) else {
            return;
        };
        let Some(duration) = request_duration(host) else {
            return;
        };
        let class = if duration <= objective.nanos {
            SloClass::Good
        } else {
            SloClass::Bad
        };
        if let Some(name) = names.get(class as usize) {
            host.increment_counter(name, 1);
        }
    }

    fn copy_baggage<H: Host + ?Sized>(&self, host: &H, header: &str) {
        // The keys already copied: the first well-formed member with a key wins.
        let mut copied: u32 = 0;
        let all: u32 = (1u32 << self.baggage.len()) - 1;
        for member in parse_baggage(header) {
            let Some((index, tag)) = self
                .baggage
                .iter()
                .enumerate()
                .find(|(_, tag)| tag.key == member.key)
            else {
                continue;
            };
            let bit = 1u32 << index;
            if copied & bit != 0 {
                continue;
            }
            copied |= bit;
            host.set_property(&[tag.property.as_str()], member.value().as_bytes());
            if copied == all {
                break;
            }
        }
    }
}

/// The request's duration in nanoseconds, from Envoy's properties.
fn request_duration<H: Host + ?Sized>(host: &H) -> Option<u64> {
    host.property_nanos(REQUEST_DURATION).or_else(|| {
        let start = host.property_nanos(REQUEST_TIME)?;
        Some(host.now_nanos().saturating_sub(start))
    })
}

fn compile_baggage(keys: &[String], field: &str) -> Result<Vec<BaggageTag>, ConfigError> {
    if keys.len() > MAX_BAGGAGE_TAGS {
        return Err(ConfigError::invalid(
            field,
            format!("at most {MAX_BAGGAGE_TAGS} keys ({} given)", keys.len()),
        ));
    }
    let mut tags: Vec<BaggageTag> = Vec::with_capacity(keys.len());
    for (index, key) in keys.iter().enumerate() {
        let key_field = format!("{field}[{index}]");
        if key.is_empty() || key.len() > MAX_BAGGAGE_KEY {
            return Err(ConfigError::invalid(
                key_field,
                format!("must be 1 to {MAX_BAGGAGE_KEY} bytes long"),
            ));
        }
        if let Some(bad) = key.chars().find(|c| !u8::try_from(*c).is_ok_and(is_tchar)) {
            return Err(ConfigError::invalid(
                key_field,
                format!("`{key}` contains `{bad}`; baggage keys are HTTP tokens"),
            ));
        }
        if tags.iter().any(|tag| tag.key == *key) {
            return Err(ConfigError::invalid(
                key_field,
                format!("`{key}` is listed twice"),
            ));
        }
        tags.push(BaggageTag {
            key: key.clone(),
            property: baggage_property(key),
        });
    }
    Ok(tags)
}

fn compile_objectives(
    configs: &[crate::config::LatencyObjectiveConfig],
    field: &str,
) -> Result<Vec<Objective>, ConfigError> {
    if configs.len() > MAX_LATENCY_OBJECTIVES {
        return Err(ConfigError::invalid(
            field,
            format!(
                "at most {MAX_LATENCY_OBJECTIVES} objectives ({} given)",
                configs.len()
            ),
        ));
    }
    let mut objectives: Vec<Objective> = Vec::with_capacity(configs.len());
    // Route name → the objective that has it; the objective for every route.
    let mut routes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut every_route: Option<usize> = None;
    for (index, config) in configs.iter().enumerate() {
        let objective_field = format!("{field}[{index}]");
        if let Some(all) = every_route {
            return Err(ConfigError::invalid(
                objective_field,
                format!(
                    "comes after the objective for every route ({field}[{all}]) and would never apply"
                ),
            ));
        }
        if !(1..=MAX_OBJECTIVE_MS).contains(&config.objective_ms) {
            return Err(ConfigError::invalid(
                format!("{objective_field}.objective_ms"),
                format!("must be 1 to {MAX_OBJECTIVE_MS}"),
            ));
        }
        let scope = RouteScope::compile(&config.scope, &format!("{objective_field}.scope"))?;
        match &config.scope {
            Scope::All => every_route = Some(index),
            Scope::Routes(names) => {
                for (position, name) in names.iter().enumerate() {
                    if let Some(earlier) = routes.insert(name, index) {
                        return Err(ConfigError::invalid(
                            format!("{objective_field}.scope.routes[{position}]"),
                            if earlier == index {
                                format!("route `{name}` is listed twice")
                            } else {
                                format!(
                                    "route `{name}` already has an objective ({field}[{earlier}])"
                                )
                            },
                        ));
                    }
                }
            }
            Scope::RoutePrefixes(_) => {}
        }
        objectives.push(Objective {
            counters: ObjectiveCounters::new(&scope),
            scope,
            nanos: u64::from(config.objective_ms) * 1_000_000,
        });
    }
    Ok(objectives)
}

impl PeerCounters {
    /// Counts a request from `principal` (`None`: no peer certificate).
    fn count<H: Host + ?Sized>(&self, host: &H, principal: Option<&str>) {
        let Some(principal) = principal.filter(|p| !p.is_empty()) else {
            host.increment_counter(&self.none, 1);
            return;
        };
        let label = metrics::peer_label(principal);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(name) = cache.admitted.get(&label) {
            host.increment_counter(name, 1);
            return;
        }
        if self.admit(host, &label, &mut cache) {
            let name = metrics::peer_counter(&label);
            host.increment_counter(&name, 1);
            if cache.admitted.len() < MAX_PEERS as usize {
                cache.admitted.insert(label, name);
            }
        } else {
            host.increment_counter(&self.other, 1);
        }
    }

    /// Whether the peer labelled `label` has (or now gets) a counter of its own, proxy-wide.
    /// Shared data errors count the request as `other`.
    fn admit<H: Host + ?Sized>(&self, host: &H, label: &str, cache: &mut PeerCache) -> bool {
        let key = format!("{PEERS_SHARED_PREFIX}id/{label}");
        match host.get_shared_data(&key) {
            Ok(Some(_)) => return true,
            Ok(None) => {}
            Err(_) => return false,
        }
        if cache.full {
            return false;
        }
        let count_key = format!("{PEERS_SHARED_PREFIX}count");
        for _ in 0..CAS_ATTEMPTS {
            let (count, cas) = match host.get_shared_data(&count_key) {
                Ok(Some(value)) => {
                    let count = <[u8; 4]>::try_from(value.data.as_slice())
                        .map_or(u32::MAX, u32::from_le_bytes);
                    (count, value.cas)
                }
                // Absent: a non-zero CAS makes Envoy insert it only if still absent (see
                // docs/filters.md, rate limiting).
                Ok(None) => (0, u32::MAX),
                Err(_) => return false,
            };
            if count >= self.max {
                cache.full = true;
                return false;
            }
            match host.set_shared_data(&count_key, &(count + 1).to_le_bytes(), Some(cas)) {
                Ok(()) => {
                    // If this write fails, other workers may admit the peer again: a slot is
                    // wasted, the bound holds.
                    let _ = host.set_shared_data(&key, b"1", None);
                    return true;
                }
                Err(SharedDataError::CasMismatch) => {}
                Err(SharedDataError::Host(_)) => return false,
            }
        }
        false
    }
}

/// Whether `b` is an HTTP token character (RFC 9110 `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Whether `b` may appear in a baggage value (W3C `baggage-octet`: printable ASCII except
/// space, `"`, `,`, `;` and `\`).
fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |end| end + 1);
    bytes.get(start..end.max(start)).unwrap_or_default()
}

/// Whether `value` is a well-formed baggage value: baggage octets, each `%` starting a
/// two-hex-digit escape.
fn valid_value(value: &[u8]) -> bool {
    let mut rest = value;
    while let Some((&b, tail)) = rest.split_first() {
        if !is_baggage_octet(b) {
            return false;
        }
        rest = tail;
        if b == b'%' {
            match rest {
                [h, l, tail @ ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => rest = tail,
                _ => return false,
            }
        }
    }
    true
}

fn valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.iter().all(|b| is_tchar(*b))
}

/// One well-formed list member of a `baggage` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaggageMember<'a> {
    /// The key (an HTTP token; compared case-sensitively).
    pub key: &'a str,
    /// The value as sent: percent-encoded baggage octets, possibly empty.
    pub raw_value: &'a str,
}

impl BaggageMember<'_> {
    /// The value percent-decoded, as UTF-8 (invalid sequences become U+FFFD, as W3C Baggage
    /// asks), cut to at most [`MAX_BAGGAGE_VALUE`] bytes at a character boundary.
    pub fn value(&self) -> String {
        // Decoding stops a little past the limit: enough to know where the last whole
        // character that fits ends.
        let limit = MAX_BAGGAGE_VALUE + 3;
        let mut bytes: Vec<u8> = Vec::with_capacity(self.raw_value.len().min(limit));
        let mut rest = self.raw_value.as_bytes();
        while bytes.len() < limit {
            let Some((&b, tail)) = rest.split_first() else {
                break;
            };
            rest = tail;
            if b == b'%'
                && let [h, l, tail @ ..] = rest
                && let (Some(h), Some(l)) = (hex(*h), hex(*l))
            {
                bytes.push((h << 4) | l);
                rest = tail;
            } else {
                bytes.push(b);
            }
        }
        let mut value = String::from_utf8_lossy(&bytes).into_owned();
        if value.len() > MAX_BAGGAGE_VALUE {
            let mut end = MAX_BAGGAGE_VALUE;
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            value.truncate(end);
        }
        value
    }
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Parses a W3C `baggage` header (`key=value;property;key=value, key2=value2`), strictly and
/// within bounds: only the first [`MAX_BAGGAGE_HEADER`] bytes (a member cut by that limit is
/// dropped) and the first [`MAX_BAGGAGE_MEMBERS`] members are looked at; a malformed member
/// (bad key, bad value octet, bad percent-escape, malformed property) is skipped; empty list
/// elements are ignored. Properties are checked and dropped. Never panics.
pub fn parse_baggage(header: &str) -> BaggageMembers<'_> {
    let bytes = header.as_bytes();
    let considered = match bytes.get(MAX_BAGGAGE_HEADER) {
        None => bytes,
        Some(&b',') => bytes.get(..MAX_BAGGAGE_HEADER).unwrap_or_default(),
        Some(_) => {
            let cut = bytes.get(..MAX_BAGGAGE_HEADER).unwrap_or_default();
            cut.iter()
                .rposition(|b| *b == b',')
                .and_then(|comma| cut.get(..comma))
                .unwrap_or_default()
        }
    };
    let is_comma: fn(&u8) -> bool = |b| *b == b',';
    BaggageMembers {
        elements: considered.split(is_comma),
        members: 0,
    }
}

/// The well-formed members of a `baggage` header, in order (see [`parse_baggage`]).
#[derive(Debug)]
pub struct BaggageMembers<'a> {
    elements: std::slice::Split<'a, u8, fn(&u8) -> bool>,
    /// Non-empty list elements looked at so far.
    members: usize,
}

impl<'a> Iterator for BaggageMembers<'a> {
    type Item = BaggageMember<'a>;

    fn next(&mut self) -> Option<BaggageMember<'a>> {
        while self.members < MAX_BAGGAGE_MEMBERS {
            let element = trim_ows(self.elements.next()?);
            if element.is_empty() {
                continue;
            }
            self.members += 1;
            if let Some(member) = parse_member(element) {
                return Some(member);
            }
        }
        None
    }
}

/// One list member: `key OWS "=" OWS value *( OWS ";" OWS property )`.
fn parse_member(element: &[u8]) -> Option<BaggageMember<'_>> {
    let mut parts = element.split(|b| *b == b';');
    let pair = parts.next()?;
    let equals = pair.iter().position(|b| *b == b'=')?;
    let key = trim_ows(pair.get(..equals)?);
    let value = trim_ows(pair.get(equals + 1..)?);
    if !valid_key(key) || !valid_value(value) {
        return None;
    }
    for property in parts {
        let property = trim_ows(property);
        let valid = match property.iter().position(|b| *b == b'=') {
            Some(equals) => {
                valid_key(trim_ows(property.get(..equals)?))
                    && valid_value(trim_ows(property.get(equals + 1..)?))
            }
            None => valid_key(property),
        };
        if !valid {
            return None;
        }
    }
    Some(BaggageMember {
        key: std::str::from_utf8(key).ok()?,
        raw_value: std::str::from_utf8(value).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockHost;
    use crate::{PolicyFilter, Verdict};
    use proptest::prelude::*;

    fn filter(json: &str) -> PolicyFilter {
        PolicyFilter::from_json(json.as_bytes()).unwrap()
    }

    fn members(header: &str) -> Vec<(String, String)> {
        parse_baggage(header)
            .map(|m| (m.key.to_string(), m.value()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const DECISIONS: &str = r#"{
        "policies": [
            {"name": "shop/admins-only", "default_action": "allow",
             "rules": [{"name": "admins", "action": "deny", "paths": [{"prefix": "/admin"}]},
                       {"name": "public", "action": "allow", "paths": [{"prefix": "/public"}]}]},
            {"name": "shop/audit-deletes", "mode": "audit", "default_action": "allow",
             "rules": [{"name": "deletes", "action": "deny", "methods": ["DELETE"]}]}
        ],
        "rate_limits": [{"name": "shop/limited/per-client", "key": "client_ip",
                         "requests": 1, "per": "hour"}],
        "telemetry": {"span_tags": true}
    }"#;

    fn tags(host: &MockHost) -> (Option<String>, Option<String>) {
        (host.state(DECISION_PROPERTY), host.state(RULE_PROPERTY))
    }

    fn some(decision: &str, rule: &str) -> (Option<String>, Option<String>) {
        (Some(decision.to_string()), Some(rule.to_string()))
    }

    #[test]
    fn span_tags_name_the_decision_and_the_deciding_rule() {
        let f = filter(DECISIONS);
        // Allowed by a rule of the first policy and the default of the second: the last
        // allowing policy's rule.
        let allowed = MockHost::get("/public/x").with_source("10.0.0.1:1");
        assert_eq!(f.on_request_headers(&allowed), Verdict::Continue);
        assert_eq!(tags(&allowed), some("allow", "shop/audit-deletes/default"));
        assert_eq!(allowed.set_properties().len(), 2, "one call per state");

        let denied = allowed.next("GET", "/admin/users");
        assert_eq!(f.on_request_headers(&denied), Verdict::Responded);
        assert_eq!(tags(&denied), some("deny", "shop/admins-only/rule/admins"));

        let audited = allowed.next("DELETE", "/items/1").with_source("10.0.0.2:1");
        assert_eq!(f.on_request_headers(&audited), Verdict::Continue);
        assert_eq!(
            tags(&audited),
            some("audit", "shop/audit-deletes/rule/deletes")
        );

        let limited = allowed.next("GET", "/public/y").with_source("10.0.0.1:2");
        assert_eq!(f.on_request_headers(&limited), Verdict::Responded);
        assert_eq!(limited.local_response().unwrap().0, 429);
        assert_eq!(tags(&limited), some("limited", "shop/limited/per-client"));

        // Nothing in scope decided.
        let only = filter(r#"{"telemetry": {"span_tags": true}}"#);
        let host = MockHost::get("/");
        assert_eq!(only.on_request_headers(&host), Verdict::Continue);
        assert_eq!(tags(&host), some("allow", "-"));
    }

    #[test]
    fn the_deciding_default_is_named_and_the_audit_gives_way_to_a_denial() {
        let f = filter(
            r#"{"policies": [
                {"name": "a", "mode": "audit", "default_action": "deny"},
                {"name": "b", "default_action": "deny"}],
               "telemetry": {"span_tags": true}}"#,
        );
        let host = MockHost::get("/");
        assert_eq!(f.on_request_headers(&host), Verdict::Responded);
        assert_eq!(tags(&host), some("deny", "b/default"));
    }

    #[test]
    fn without_span_tags_nothing_is_written() {
        for json in [
            r#"{"policies": [{"name": "p", "default_action": "deny"}]}"#,
            r#"{"policies": [{"name": "p", "default_action": "deny"}],
                "telemetry": {"span_tags": false, "peer_counters": true}}"#,
        ] {
            let f = filter(json);
            let host = MockHost::get("/");
            assert_eq!(f.on_request_headers(&host), Verdict::Responded);
            assert!(host.set_properties().is_empty(), "{json}");
        }
    }

    #[test]
    fn an_empty_telemetry_object_changes_nothing() {
        let f = filter(r#"{"telemetry": {}}"#);
        let host = MockHost::get("/").with_header("baggage", "tenant=a");
        assert_eq!(f.on_request_headers(&host), Verdict::Continue);
        f.on_log(&host);
        assert_eq!(host.reads(), (0, 0));
        assert!(host.set_properties().is_empty());
        assert!(host.counters().is_empty());
        assert!(f.metric_names().is_empty());
        assert_eq!(f.summary(), "0 policies (0 rules), 0 rate limits");
    }

    #[test]
    fn baggage_members_are_parsed_with_spaces_properties_and_percent_encoding() {
        assert_eq!(
            members(" tenant = acme ;ttl=3 ; flag ,\tplan=gold%20plus,user=%E2%82%AC1"),
            pairs(&[("tenant", "acme"), ("plan", "gold plus"), ("user", "€1")])
        );
        assert_eq!(members("k="), pairs(&[("k", "")]));
        // Percent-encoded bytes that are not UTF-8 become U+FFFD.
        assert_eq!(members("k=%FFa"), pairs(&[("k", "\u{FFFD}a")]));
        // Empty list elements are ignored.
        assert_eq!(members(",, a=1 ,,"), pairs(&[("a", "1")]));
        assert_eq!(members(""), pairs(&[]));
    }

    #[test]
    fn malformed_baggage_members_are_skipped() {
        let header = "a=1,b,c=x y,=v,d=\"q\",e=%4,f=%zz,g=1;=p,h=1;p=\"\",i=é,j k=1,k=2;;,l=ok";
        assert_eq!(members(header), pairs(&[("a", "1"), ("l", "ok")]));
    }

    #[test]
    fn baggage_is_bounded() {
        // Values are cut at 256 bytes, at a character boundary.
        let long = "x".repeat(1000);
        assert_eq!(members(&format!("k={long}"))[0].1.len(), MAX_BAGGAGE_VALUE);
        let euros = "%E2%82%AC".repeat(100);
        let value = &members(&format!("k={euros}"))[0].1;
        assert_eq!(value.len(), 255);
        assert!(value.chars().all(|c| c == '€'));
        // Only the first 64 members, valid or not, are looked at.
        let many: Vec<String> = (0..100).map(|i| format!("k{i}=v")).collect();
        let parsed = members(&many.join(","));
        assert_eq!(parsed.len(), MAX_BAGGAGE_MEMBERS);
        assert_eq!(parsed.last().unwrap().0, "k63");
        let mut bad_first: Vec<String> = (0..64).map(|i| format!("k{i}")).collect();
        bad_first.push("late=1".into());
        assert!(members(&bad_first.join(",")).is_empty());
        // Only the first 8192 bytes; a member crossing the limit is dropped.
        let filler = format!("f={}", "y".repeat(8000));
        let header = format!("{filler},a=1,late={}", "z".repeat(500));
        let parsed = members(&header);
        assert_eq!(
            parsed.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["f", "a"]
        );
        let exact = format!("k={}", "v".repeat(MAX_BAGGAGE_HEADER - 2));
        assert_eq!(members(&exact).len(), 1);
        assert_eq!(members(&format!("{exact},b=1")).len(), 1);
        assert!(members(&format!("{exact}v")).is_empty());
    }

    #[test]
    fn allow_listed_baggage_keys_become_filter_state_once() {
        let f = filter(r#"{"telemetry": {"baggage_tags": ["tenant", "plan", "absent"]}}"#);
        let host = MockHost::get("/").with_header(
            "baggage",
            "other=1, tenant=acme;p=1, plan=%67old, tenant=evil, Plan=case",
        );
        assert_eq!(f.on_request_headers(&host), Verdict::Continue);
        assert_eq!(
            host.set_properties(),
            [
                ("trellis.baggage.tenant".to_string(), b"acme".to_vec()),
                ("trellis.baggage.plan".to_string(), b"gold".to_vec()),
            ]
        );
        // A malformed first occurrence does not hide a later good one.
        let host = MockHost::get("/").with_header("baggage", "tenant=a b,tenant=b");
        f.on_request_headers(&host);
        assert_eq!(host.state("trellis.baggage.tenant").as_deref(), Some("b"));
        // No header, or garbage: nothing, no panic.
        let host = MockHost::get("/");
        f.on_request_headers(&host);
        assert!(host.set_properties().is_empty());
        let host = MockHost::get("/").with_header("baggage", "\u{0}%;,=;;==,%%%");
        f.on_request_headers(&host);
        assert!(host.set_properties().is_empty());
        assert_eq!(baggage_state("tenant"), "wasm.trellis.baggage.tenant");
    }

    fn slo(route: &str, class: &str) -> String {
        format!("trellis_slo_requests_total.route.{route}.class.{class}")
    }

    #[test]
    fn latency_objectives_classify_at_the_boundary() {
        let f = filter(
            r#"{"telemetry": {"latency_objectives": [
                {"scope": {"routes": ["httproute/shop/web/rule/0/match/0"]}, "objective_ms": 250},
                {"scope": {"route_prefixes": ["httproute/shop/api/"]}, "objective_ms": 100},
                {"scope": "all", "objective_ms": 1000}]}}"#,
        );
        let web = "httproute/shop/web/rule/0/match/0";
        let on = |route: &str, nanos: i64| {
            let host = MockHost::get("/").with_route(route).with_duration(nanos);
            f.on_log(&host);
            host
        };
        let host = on(web, 250_000_000);
        assert_eq!(host.counter(&slo(web, "good")), 1, "the objective is good");
        let host = on(web, 250_000_001);
        assert_eq!(host.counter(&slo(web, "bad")), 1);
        assert_eq!(host.counter(&slo(web, "good")), 0);
        let host = on("httproute/shop/api/rule/2/match/0", 100_000_001);
        assert_eq!(host.counter(&slo("httproute/shop/api/", "bad")), 1);
        let host = on("httproute/shop/other/rule/0/match/0", 999_000_000);
        assert_eq!(host.counter(&slo("(all)", "good")), 1);
        // No route name: only "all" applies.
        let host = MockHost::get("/").with_duration(1_000_000_001);
        f.on_log(&host);
        assert_eq!(host.counters(), [(slo("(all)", "bad"), 1)].into());
        // No duration: the start time and the clock; neither: not counted.
        let host = MockHost::get("/").with_route(web);
        let start = host.now_nanos() - 300_000_000;
        let host = host.with_property_bytes("request.time", &start.to_le_bytes());
        f.on_log(&host);
        assert_eq!(host.counter(&slo(web, "bad")), 1);
        let host = MockHost::get("/").with_route(web);
        f.on_log(&host);
        // A malformed duration is no duration.
        let host = host.with_property_bytes("request.duration", b"12");
        f.on_log(&host);
        assert!(host.counters().is_empty());
        // Every objective's counters exist up front; the names are bounded by the config.
        let names = f.metric_names();
        assert_eq!(names.len(), 6);
        assert!(names.contains(&slo(web, "good")));
        assert!(names.contains(&slo("(all)", "bad")));
    }

    #[test]
    fn requests_out_of_every_objective_are_not_counted() {
        let f = filter(
            r#"{"telemetry": {"latency_objectives": [
                {"scope": {"routes": ["a", "b.c"]}, "objective_ms": 5}]}}"#,
        );
        let host = MockHost::get("/").with_route("z").with_duration(1);
        f.on_log(&host);
        assert!(host.counters().is_empty());
        assert_eq!(host.reads().1, 1, "the route only, not the duration");
        let host = MockHost::get("/")
            .with_route("b.c")
            .with_duration(5_000_000);
        f.on_log(&host);
        assert_eq!(host.counter(&slo("b_c", "good")), 1);
    }

    fn peer(id: &str) -> String {
        format!("trellis_inbound_requests_total.peer.{id}")
    }

    #[test]
    fn peers_are_counted_up_to_max_peers_then_as_other() {
        let json = r#"{"telemetry": {"peer_counters": true, "max_peers": 2}}"#;
        let f = filter(json);
        let base = MockHost::get("/");
        let from = |principal: &str| {
            let host = base.sibling();
            if principal.is_empty() {
                host
            } else {
                host.with_principal(principal)
            }
        };
        for id in [
            "spiffe://cluster.local/ns/a/sa/x",
            "spiffe://cluster.local/ns/b/sa/y",
            "spiffe://cluster.local/ns/c/sa/z",
            "spiffe://cluster.local/ns/a/sa/x",
            "",
        ] {
            assert_eq!(f.on_request_headers(&from(id)), Verdict::Continue);
        }
        assert_eq!(
            base.counters(),
            [
                (peer("spiffe://cluster_local/ns/a/sa/x"), 2),
                (peer("spiffe://cluster_local/ns/b/sa/y"), 1),
                (peer("other"), 1),
                (peer("none"), 1),
            ]
            .into()
        );
        // Another worker (its own cache, the same shared data) agrees.
        let worker = filter(json);
        worker.on_request_headers(&from("spiffe://cluster.local/ns/b/sa/y"));
        worker.on_request_headers(&from("spiffe://cluster.local/ns/d/sa/w"));
        assert_eq!(base.counter(&peer("spiffe://cluster_local/ns/b/sa/y")), 2);
        assert_eq!(base.counter(&peer("other")), 2);
        // Known peers cost no shared data call.
        let calls = base.shared_calls();
        f.on_request_headers(&from("spiffe://cluster.local/ns/a/sa/x"));
        assert_eq!(base.shared_calls(), calls);
        assert!(f.metric_names().contains(&peer("none")));
        assert!(f.metric_names().contains(&peer("other")));
    }

    #[test]
    fn peer_admission_survives_lost_races_and_shared_data_errors() {
        let f = filter(r#"{"telemetry": {"peer_counters": true}}"#);
        let host = MockHost::get("/").with_principal("spiffe://td/ns/a/sa/b");
        f.on_request_headers(&host);
        let count_key = format!("{PEERS_SHARED_PREFIX}count");
        assert_eq!(host.shared(&count_key).unwrap(), 1u32.to_le_bytes());
        // Another worker admits a peer between our read and write.
        host.interfere_before_set(&count_key, 1, |bytes| {
            let n = u32::from_le_bytes(bytes.try_into().unwrap());
            (n + 1).to_le_bytes().to_vec()
        });
        let second = host.sibling().with_principal("spiffe://td/ns/c/sa/d");
        f.on_request_headers(&second);
        assert_eq!(host.cas_mismatches(), 1);
        assert_eq!(host.shared(&count_key).unwrap(), 3u32.to_le_bytes());
        assert_eq!(host.counter(&peer("spiffe://td/ns/c/sa/d")), 1);
        host.fail_shared_data();
        f.on_request_headers(&host.sibling().with_principal("spiffe://td/ns/e/sa/f"));
        assert_eq!(host.counter(&peer("other")), 1);
        // Cached peers still count under their names.
        f.on_request_headers(&host.sibling().with_principal("spiffe://td/ns/a/sa/b"));
        assert_eq!(host.counter(&peer("spiffe://td/ns/a/sa/b")), 2);
    }

    #[test]
    fn peers_are_none_without_client_certificates() {
        let f = filter(r#"{"client_certificates": false, "telemetry": {"peer_counters": true}}"#);
        let host = MockHost::get("/").with_principal("spiffe://td/ns/a/sa/b");
        f.on_request_headers(&host);
        assert_eq!(host.counter(&peer("none")), 1);
        assert_eq!(host.reads().1, 0);
    }

    #[test]
    fn telemetry_configuration_errors_name_the_field() {
        let too_many: Vec<String> = (0..17).map(|i| format!("\"k{i}\"")).collect();
        let objectives: Vec<String> = (0..65)
            .map(|i| format!(r#"{{"scope": {{"routes": ["r{i}"]}}, "objective_ms": 1}}"#))
            .collect();
        let cases = [
            (
                r#"{"telemetry": {"baggage_tags": ["tenant", "plan", "bad key"]}}"#.to_string(),
                "telemetry.baggage_tags[2]: `bad key` contains ` `",
            ),
            (
                format!(r#"{{"telemetry": {{"baggage_tags": [{}]}}}}"#, too_many.join(",")),
                "telemetry.baggage_tags: at most 16 keys (17 given)",
            ),
            (
                format!(r#"{{"telemetry": {{"baggage_tags": ["{}"]}}}}"#, "k".repeat(65)),
                "telemetry.baggage_tags[0]: must be 1 to 64 bytes long",
            ),
            (
                r#"{"telemetry": {"baggage_tags": ["a", "a"]}}"#.to_string(),
                "telemetry.baggage_tags[1]: `a` is listed twice",
            ),
            (
                r#"{"telemetry": {"baggage_tags": [1]}}"#.to_string(),
                "telemetry.baggage_tags[0]: invalid type",
            ),
            (
                r#"{"telemetry": {"span_tag": true}}"#.to_string(),
                "telemetry.span_tag: unknown field `span_tag`",
            ),
            (
                r#"{"telemetry": {"latency_objectives": [{"scope": "all", "objective_ms": 1, "p": 99}]}}"#
                    .to_string(),
                "telemetry.latency_objectives[0].p: unknown field `p`",
            ),
            (
                r#"{"telemetry": {"latency_objectives": [{"scope": "all"}]}}"#.to_string(),
                "telemetry.latency_objectives[0]: missing field `objective_ms`",
            ),
            (
                r#"{"telemetry": {"latency_objectives": [{"scope": "all", "objective_ms": 0}]}}"#
                    .to_string(),
                "telemetry.latency_objectives[0].objective_ms: must be 1 to 3600000",
            ),
            (
                r#"{"telemetry": {"latency_objectives": [{"scope": {"routes": []}, "objective_ms": 1}]}}"#
                    .to_string(),
                "telemetry.latency_objectives[0].scope.routes: must not be empty",
            ),
            (
                r#"{"telemetry": {"latency_objectives": [
                    {"scope": {"routes": ["a", "b"]}, "objective_ms": 1},
                    {"scope": {"routes": ["c", "b"]}, "objective_ms": 2}]}}"#
                    .to_string(),
                "telemetry.latency_objectives[1].scope.routes[1]: route `b` already has an objective (telemetry.latency_objectives[0])",
            ),
            (
                r#"{"telemetry": {"latency_objectives": [
                    {"objective_ms": 1}, {"scope": {"routes": ["a"]}, "objective_ms": 2}]}}"#
                    .to_string(),
                "telemetry.latency_objectives[1]: comes after the objective for every route",
            ),
            (
                format!(
                    r#"{{"telemetry": {{"latency_objectives": [{}]}}}}"#,
                    objectives.join(",")
                ),
                "telemetry.latency_objectives: at most 64 objectives (65 given)",
            ),
            (
                r#"{"telemetry": {"peer_counters": true, "max_peers": 1001}}"#.to_string(),
                "telemetry.max_peers: must be 1 to 1000",
            ),
            (
                r#"{"telemetry": {"max_peers": 0}}"#.to_string(),
                "telemetry.max_peers: must be 1 to 1000",
            ),
            (
                r#"{"telemetry": {"max_peers": -1}}"#.to_string(),
                "telemetry.max_peers: invalid value",
            ),
        ];
        for (json, expected) in cases {
            let message = PolicyFilter::from_json(json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(message.contains(expected), "{json}\n  gave: {message}");
        }
    }

    #[test]
    fn the_summary_lists_what_is_on() {
        let f = filter(
            r#"{"telemetry": {"span_tags": true, "baggage_tags": ["a", "b"],
                "latency_objectives": [{"objective_ms": 5}], "peer_counters": true}}"#,
        );
        assert_eq!(
            f.summary(),
            "0 policies (0 rules), 0 rate limits, telemetry: span tags, 2 baggage tags, 1 latency objective, peer counters (max 100)"
        );
    }

    proptest! {
        #[test]
        fn baggage_parsing_never_panics_and_stays_in_bounds(
            header in prop_oneof![
                // Mostly the characters that matter, long enough to cross the limits.
                proptest::string::string_regex("[a-c0-9%=;, \t\"\\\\é\u{0}]{0,10000}").unwrap(),
                proptest::string::string_regex("(([a-z]{1,3}|%[0-9A-Fa-f]{2}|%.?)[=;, ]{0,2}){0,3000}").unwrap(),
                any::<String>(),
            ]
        ) {
            let base = header.as_ptr() as usize;
            let mut count = 0;
            for member in parse_baggage(&header) {
                count += 1;
                prop_assert!(valid_key(member.key.as_bytes()));
                prop_assert!(valid_value(member.raw_value.as_bytes()));
                let end = member.raw_value.as_ptr() as usize - base + member.raw_value.len();
                prop_assert!(end <= MAX_BAGGAGE_HEADER, "member ends at {}", end);
                prop_assert!(member.value().len() <= MAX_BAGGAGE_VALUE);
            }
            prop_assert!(count <= MAX_BAGGAGE_MEMBERS);
            // The filter with every key allowed: no panic, at most one write per key.
            let f = filter(r#"{"telemetry": {"baggage_tags": ["a", "b", "c", "ab", "a0"]}}"#);
            let host = MockHost::get("/").with_header("baggage", &header);
            prop_assert_eq!(f.on_request_headers(&host), Verdict::Continue);
            prop_assert!(host.set_properties().len() <= 5);
        }
    }
}
