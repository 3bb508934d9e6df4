//! The policy filter's configuration as the control plane writes it (JSON), and its parsing.
//!
//! This module owns the wire schema only: plain serde structs with `deny_unknown_fields`, so a
//! misspelt field is an error rather than a silently ignored one. [`parse`] reads the JSON and
//! reports failures with the path of the offending field (`policies[0].rules[1].action: unknown
//! variant ...`); turning these structs into matchers and checking what serde cannot (regexes,
//! CIDRs, names, empty lists) is [`crate::filter`]'s job, with the same field paths.
//!
//! ```text
//! JSON bytes ──parse──► Config ──PolicyFilter::new──► PolicyFilter (compiled, shared by requests)
//! ```

use serde::Deserialize;

use crate::ConfigError;

/// The whole plugin configuration: authorization policies, local rate limits and telemetry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Authorization policies, evaluated in order; the first enforced denial answers 403.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// Local rate limits; every limit in scope takes a token, any empty bucket answers 429.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitConfig>,
    /// Read the client IP from the last entry of this request header instead of the
    /// `source.address` property (a costlier host call). Only correct where the proxy appends
    /// the connection's address to that header itself: `x-forwarded-for` with the connection
    /// manager's `use_remote_address: true` and no trusted hops, as Trellis configures it.
    #[serde(default)]
    pub client_ip_header: Option<String>,
    /// Whether downstream connections may carry client certificates. `false` (the connections
    /// never present one) skips the peer-certificate property lookup: no request has a
    /// principal. Defaults to `true`.
    #[serde(default)]
    pub client_certificates: Option<bool>,
    /// Span tags, baggage tags, latency objectives and peer counters (all off when omitted).
    #[serde(default)]
    pub telemetry: Option<TelemetryConfig>,
}

/// What the filter records about requests besides its decisions' counters. Every part is off
/// by default; [`crate::telemetry`] compiles and applies it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Write the decision (`allow`, `deny`, `audit`, `limited`) and the deciding policy rule or
    /// limit as filter state, for span tags and access logs.
    #[serde(default)]
    pub span_tags: bool,
    /// W3C baggage keys whose values are copied from the request's `baggage` header to filter
    /// state (at most 16; token characters, at most 64 bytes each).
    #[serde(default)]
    pub baggage_tags: Vec<String>,
    /// Latency objectives by route (at most 64): each finished request in scope of one is
    /// counted good (within the objective) or bad. The first objective in scope applies.
    #[serde(default)]
    pub latency_objectives: Vec<LatencyObjectiveConfig>,
    /// Count requests by the caller's SPIFFE ID (meant for inbound sidecar listeners).
    #[serde(default)]
    pub peer_counters: bool,
    /// Distinct peers counted under their own name, proxy-wide, before the rest are counted as
    /// `other`. Defaults to 100, at most 1000.
    #[serde(default)]
    pub max_peers: Option<u32>,
}

/// One latency objective.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LatencyObjectiveConfig {
    /// Which routes the objective applies to, as for policies (every route when omitted).
    #[serde(default)]
    pub scope: Scope,
    /// The objective in milliseconds: a request taking at most this long is good (1 to
    /// 3600000).
    pub objective_ms: u32,
}

/// One authorization policy.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Unique name, shown in denials and metrics, e.g. `default/deny-admin`.
    pub name: String,
    /// Which routes the policy applies to (every route when omitted).
    #[serde(default)]
    pub scope: Scope,
    /// Enforce decisions, or only log and count what would be denied.
    #[serde(default)]
    pub mode: Mode,
    /// The action when no rule matches.
    pub default_action: Action,
    /// Ordered rules; the first whose conditions all hold decides.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// Which routes a policy or rate limit applies to.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Scope {
    /// Every route (`"all"`).
    #[default]
    All,
    /// Routes whose Envoy route name (`xds.route_name`) is one of these, e.g.
    /// `httproute/default/web/rule/0/match/0` (`{"routes": [...]}`). The control plane writes
    /// this form: the routes a policy's targets select, by name.
    Routes(Vec<String>),
    /// Routes whose Envoy route name starts with one of these prefixes, e.g.
    /// `httproute/default/web/` (`{"route_prefixes": [...]}`).
    RoutePrefixes(Vec<String>),
}

/// Whether a policy's denials are enforced.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Denials answer 403.
    #[default]
    Enforce,
    /// Denials are logged and counted, and the request goes on.
    Audit,
}

/// What a rule or a policy's default does with a request.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Let the request through (to the next policy).
    Allow,
    /// Refuse the request.
    Deny,
}

/// One rule: a name, an action and conditions. Conditions are ANDed; the values inside one
/// condition are ORed; an omitted condition matches everything.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name, unique within the policy, shown in metrics and logs.
    pub name: String,
    /// What to do when the conditions hold.
    pub action: Action,
    /// The request path (without the query string) matches one of these.
    pub paths: Option<Vec<PathMatch>>,
    /// The request method is one of these (compared exactly, e.g. `GET`).
    pub methods: Option<Vec<String>>,
    /// Every listed header has one of its listed values.
    pub headers: Option<Vec<HeaderMatch>>,
    /// The peer's SPIFFE principal (first URI SAN of its certificate) is one of these; an entry
    /// ending in `*` matches by prefix, and `*` alone matches any authenticated peer.
    pub principals: Option<Vec<String>>,
    /// The peer's namespace (the `ns` segment of its SPIFFE principal,
    /// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`) is one of these.
    pub namespaces: Option<Vec<String>>,
    /// The client address is one of these IPs or inside one of these CIDRs.
    pub source_ips: Option<Vec<String>>,
}

/// A path condition.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathMatch {
    /// The path equals this.
    Exact(String),
    /// The path starts with this.
    Prefix(String),
    /// The whole path matches this regular expression (Rust `regex-lite` syntax: `regex` without Unicode classes).
    Regex(String),
}

/// A header condition: the header is present with one of `values` (exact comparison).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// Accepted values.
    pub values: Vec<String>,
}

/// One local rate limit: a token bucket per key value, shared by all Envoy workers.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Unique name, shown in responses, metrics and logs.
    pub name: String,
    /// Which routes the limit applies to (every route when omitted).
    #[serde(default)]
    pub scope: Scope,
    /// What a bucket is kept per.
    pub key: LimitKey,
    /// Tokens added per `per`.
    pub requests: u32,
    /// The period `requests` are counted over.
    pub per: Period,
    /// Bucket size: how many requests may arrive at once. Defaults to `requests`.
    pub burst: Option<u32>,
    /// Distinct key values tracked before newcomers share one overflow bucket (bounds the
    /// proxy memory used by buckets). Defaults to 10000.
    pub max_keys: Option<u32>,
}

/// What a rate limit keeps a bucket per.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LimitKey {
    /// The client IP (`"client_ip"`).
    ClientIp,
    /// The peer's SPIFFE principal (`"principal"`); peers without one share a bucket.
    Principal,
    /// A request header's value (`{"header": "x-api-key"}`); requests without it share a
    /// bucket.
    Header(String),
}

/// The period of a rate.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
}

impl Period {
    /// The period's length in nanoseconds.
    pub fn nanos(self) -> u64 {
        const SECOND: u64 = 1_000_000_000;
        match self {
            Period::Second => SECOND,
            Period::Minute => 60 * SECOND,
            Period::Hour => 3600 * SECOND,
        }
    }
}

/// Parses the plugin configuration JSON. An empty configuration (no bytes, or only whitespace)
/// is the empty [`Config`], which lets every request through.
pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
    match json.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Ok(Config::default()),
        Some(b'{') => {}
        // serde would read a struct from an array too; the configuration is an object.
        Some(_) => {
            return Err(ConfigError::Json {
                path: String::new(),
                message: "the configuration must be a JSON object".into(),
            });
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let config: Config = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        ConfigError::Json {
            path: if path == "." { String::new() } else { path },
            message: error.into_inner().to_string(),
        }
    })?;
    deserializer.end().map_err(|error| ConfigError::Json {
        path: String::new(),
        message: error.to_string(),
    })?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(json: &str) -> String {
        parse(json.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn a_full_config_parses() {
        let config = parse(
            br#"{
              "policies": [{
                "name": "default/deny-admin",
                "scope": {"route_prefixes": ["httproute/default/web/"]},
                "mode": "audit",
                "default_action": "allow",
                "rules": [{
                  "name": "admin",
                  "action": "deny",
                  "paths": [{"exact": "/admin"}, {"prefix": "/admin/"}, {"regex": "/x/[0-9]+"}],
                  "methods": ["POST"],
                  "headers": [{"name": "x-role", "values": ["guest"]}],
                  "principals": ["spiffe://cluster.local/ns/default/*"],
                  "source_ips": ["10.0.0.0/8"]
                }]
              }],
              "rate_limits": [
                {"name": "per-ip", "key": "client_ip", "requests": 10, "per": "second", "burst": 20},
                {"name": "per-key", "scope": "all", "key": {"header": "x-api-key"},
                 "requests": 100, "per": "minute", "max_keys": 5}
              ]
            }"#,
        )
        .unwrap();
        let policy = &config.policies[0];
        assert_eq!(policy.mode, Mode::Audit);
        assert_eq!(
            policy.scope,
            Scope::RoutePrefixes(vec!["httproute/default/web/".into()])
        );
        assert_eq!(
            policy.rules[0].paths.as_deref().unwrap()[2],
            PathMatch::Regex("/x/[0-9]+".into())
        );
        assert_eq!(config.rate_limits[0].key, LimitKey::ClientIp);
        assert_eq!(config.rate_limits[0].burst, Some(20));
        assert_eq!(
            config.rate_limits[1].key,
            LimitKey::Header("x-api-key".into())
        );
        assert_eq!(config.rate_limits[1].scope, Scope::All);
        assert_eq!(config.rate_limits[1].per, Period::Minute);
    }

    #[test]
    fn defaults_are_enforce_and_every_route() {
        let config = parse(br#"{"policies": [{"name": "p", "default_action": "deny"}]}"#).unwrap();
        assert_eq!(config.policies[0].mode, Mode::Enforce);
        assert_eq!(config.policies[0].scope, Scope::All);
        assert!(config.policies[0].rules.is_empty());
    }

    #[test]
    fn empty_input_is_an_empty_config() {
        assert_eq!(parse(b"").unwrap(), Config::default());
        assert_eq!(parse(b"  \n").unwrap(), Config::default());
        assert_eq!(parse(b"{}").unwrap(), Config::default());
    }

    #[test]
    fn an_unknown_field_is_named_with_its_path() {
        let message = error(
            r#"{"policies": [{"name": "p", "default_action": "allow",
                "rules": [{"name": "r", "action": "deny", "pathz": []}]}]}"#,
        );
        assert!(message.contains("policies[0].rules[0]"), "{message}");
        assert!(message.contains("unknown field `pathz`"), "{message}");
    }

    #[test]
    fn a_bad_enum_value_names_the_field_and_the_choices() {
        let message = error(r#"{"policies": [{"name": "p", "default_action": "block"}]}"#);
        assert!(message.contains("policies[0].default_action"), "{message}");
        assert!(
            message.contains("`allow`, `deny`") || message.contains("`allow` or `deny`"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_field_is_reported() {
        let message =
            error(r#"{"rate_limits": [{"name": "l", "key": "client_ip", "per": "second"}]}"#);
        assert!(message.contains("rate_limits[0]"), "{message}");
        assert!(message.contains("missing field `requests`"), "{message}");
    }

    #[test]
    fn malformed_json_and_trailing_garbage_are_errors() {
        assert!(error("{").contains("EOF"), "{}", error("{"));
        assert!(error("{} x").contains("trailing"), "{}", error("{} x"));
        assert!(
            error("[]").contains("must be a JSON object"),
            "{}",
            error("[]")
        );
    }

    #[test]
    fn period_lengths() {
        assert_eq!(Period::Second.nanos(), 1_000_000_000);
        assert_eq!(Period::Minute.nanos(), 60_000_000_000);
        assert_eq!(Period::Hour.nanos(), 3_600_000_000_000);
    }
}
