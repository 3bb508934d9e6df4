//! The compiled filter and what it does with a request's headers.
//!
//! [`PolicyFilter`] is built once per configuration (in the root context) and shared by every
//! request. For each request, [`PolicyFilter::on_request_headers`]:
//!
//! ```text
//! route name ──► policies in scope, in order ──► allow: count, next policy
//!                                             ├─► deny (audit):   log + count, next policy
//!                                             └─► deny (enforce): count, 403, stop
//!            ──► rate limits in scope ──► token taken: next limit
//!                                      └─► bucket empty: count, 429 + retry-after, stop
//!            ──► continue to the upstream
//! ```
//!
//! Denied requests take no rate-limit tokens. With `telemetry` configured, baggage tags and the
//! peer counter come first, and the decision is written as filter state before any local
//! response ([`crate::telemetry`]); [`PolicyFilter::on_log`] classifies the finished request
//! against its latency objective. This module also owns the rules every name in the
//! configuration follows ([`check_name`]) and route scopes ([`RouteScope`]).

use crate::authz::{Policy, RequestFacts};
use crate::config::{self, Action, Mode, Scope};
use crate::metrics::{self, LimitCounter, PolicyCounter};
use crate::ratelimit::{self, RateLimit};
use crate::telemetry::{NO_RULE, RequestDecision, Telemetry};
use crate::{ConfigError, Host, LogLevel};

/// What the proxy should do with the request after the filter ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the request.
    Continue,
    /// The filter answered the request with a local response; stop processing it.
    Responded,
}

/// Which routes a policy or limit applies to, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteScope {
    /// Every request.
    All,
    /// Requests on one of these routes (by name).
    Routes(std::collections::BTreeSet<String>),
    /// Requests whose route name starts with one of these.
    RoutePrefixes(Vec<String>),
}

impl RouteScope {
    /// Compiles a configured scope; `field` is its path for errors.
    pub fn compile(scope: &Scope, field: &str) -> Result<RouteScope, ConfigError> {
        match scope {
            Scope::All => Ok(RouteScope::All),
            Scope::Routes(names) => {
                if names.is_empty() {
                    return Err(ConfigError::invalid(
                        format!("{field}.routes"),
                        "must not be empty (use \"all\" for every route)",
                    ));
                }
                if let Some(index) = names.iter().position(String::is_empty) {
                    return Err(ConfigError::invalid(
                        format!("{field}.routes[{index}]"),
                        "must not be empty",
                    ));
                }
                Ok(RouteScope::Routes(names.iter().cloned().collect()))
            }
            Scope::RoutePrefixes(prefixes) => {
                if prefixes.is_empty() {
                    return Err(ConfigError::invalid(
                        format!("{field}.route_prefixes"),
                        "must not be empty (use \"all\" for every route)",
                    ));
                }
                if let Some(index) = prefixes.iter().position(String::is_empty) {
                    return Err(ConfigError::invalid(
                        format!("{field}.route_prefixes[{index}]"),
                        "must not be empty",
                    ));
                }
                Ok(RouteScope::RoutePrefixes(prefixes.clone()))
            }
        }
    }

    /// Whether a request on the route named `route` is in scope. A request without a route
    /// name is in scope only of [`RouteScope::All`].
    pub fn applies(&self, route: Option<&str>) -> bool {
        match self {
            RouteScope::All => true,
            RouteScope::Routes(names) => route.is_some_and(|route| names.contains(route)),
            RouteScope::RoutePrefixes(prefixes) => route.is_some_and(|route| {
                prefixes
                    .iter()
                    .any(|prefix| route.starts_with(prefix.as_str()))
            }),
        }
    }
}

/// Checks a policy, rule or limit name: 1–253 characters from `A-Z a-z 0-9 . _ / : -`.
pub fn check_name(name: &str, field: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 253 {
        return Err(ConfigError::invalid(
            field,
            "must be 1 to 253 characters long",
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | ':' | '-')))
    {
        return Err(ConfigError::invalid(
            field,
            format!("`{name}` contains `{bad}`; names use only letters, digits and `._/:-`"),
        ));
    }
    Ok(())
}

/// The policy filter, compiled from its configuration.
#[derive(Debug)]
pub struct PolicyFilter {
    policies: Vec<Policy>,
    limits: Vec<RateLimit>,
    /// Whether some scope is by route name (else the route name is never fetched).
    needs_route: bool,
    /// Where the client IP and principal come from.
    sources: crate::authz::FactSources,
    /// Counter names, formatted once: per policy, per rule (then the default), per
    /// [`PolicyCounter`] in `ALL` order.
    policy_counters: Vec<Vec<[String; 3]>>,
    /// Per limit, per [`LimitCounter`] in `ALL` order.
    limit_counters: Vec<[String; 2]>,
    /// Span tags, baggage tags, latency objectives, peer counters; `None` when all are off.
    telemetry: Option<Telemetry>,
}

impl PolicyFilter {
    /// Parses and compiles the plugin configuration JSON.
    pub fn from_json(json: &[u8]) -> Result<PolicyFilter, ConfigError> {
        PolicyFilter::new(&config::parse(json)?)
    }

    /// Compiles a parsed configuration.
    pub fn new(config: &config::Config) -> Result<PolicyFilter, ConfigError> {
        let mut policies: Vec<Policy> = Vec::with_capacity(config.policies.len());
        for (index, policy) in config.policies.iter().enumerate() {
            let field = format!("policies[{index}]");
            let compiled = Policy::compile(policy, &field)?;
            if policies.iter().any(|other| other.name == compiled.name) {
                return Err(ConfigError::invalid(
                    format!("{field}.name"),
                    format!("`{}` is used by an earlier policy", compiled.name),
                ));
            }
            policies.push(compiled);
        }
        let mut limits: Vec<RateLimit> = Vec::with_capacity(config.rate_limits.len());
        for (index, limit) in config.rate_limits.iter().enumerate() {
            let field = format!("rate_limits[{index}]");
            let compiled = RateLimit::compile(limit, &field)?;
            if limits.iter().any(|other| other.name == compiled.name) {
                return Err(ConfigError::invalid(
                    format!("{field}.name"),
                    format!("`{}` is used by an earlier rate limit", compiled.name),
                ));
            }
            limits.push(compiled);
        }
        let needs_route = policies
            .iter()
            .map(|p| &p.scope)
            .chain(limits.iter().map(|l| &l.scope))
            .any(|s| *s != RouteScope::All);
        let policy_counters = policies
            .iter()
            .map(|policy| {
                policy
                    .rule_names()
                    .chain(std::iter::once(crate::authz::DEFAULT_RULE))
                    .map(|rule| {
                        PolicyCounter::ALL
                            .map(|counter| metrics::policy_counter(counter, &policy.name, rule))
                    })
                    .collect()
            })
            .collect();
        let limit_counters = limits
            .iter()
            .map(|limit| LimitCounter::ALL.map(|c| metrics::limit_counter(c, &limit.name)))
            .collect();
        if let Some(header) = &config.client_ip_header
            && (header.is_empty() || !header.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ConfigError::invalid(
                "client_ip_header",
                "must be a header name",
            ));
        }
        let sources = crate::authz::FactSources {
            client_ip_header: config
                .client_ip_header
                .as_ref()
                .map(|h| h.to_ascii_lowercase()),
            no_client_certificates: config.client_certificates == Some(false),
        };
        let telemetry = match &config.telemetry {
            Some(telemetry) => Telemetry::compile(telemetry, &policies, "telemetry")?,
            None => None,
        };
        Ok(PolicyFilter {
            policies,
            limits,
            needs_route,
            sources,
            policy_counters,
            limit_counters,
            telemetry,
        })
    }

    /// A one-line summary for the log when a configuration is accepted.
    pub fn summary(&self) -> String {
        format!(
            "{} polic{} ({} rule{}), {} rate limit{}{}",
            self.policies.len(),
            if self.policies.len() == 1 { "y" } else { "ies" },
            self.policies
                .iter()
                .map(|p| p.rule_names().count())
                .sum::<usize>(),
            if self
                .policies
                .iter()
                .map(|p| p.rule_names().count())
                .sum::<usize>()
                == 1
            {
                ""
            } else {
                "s"
            },
            self.limits.len(),
            if self.limits.len() == 1 { "" } else { "s" },
            self.telemetry
                .as_ref()
                .map(|t| format!(", {}", t.summary()))
                .unwrap_or_default(),
        )
    }

    /// Every counter this configuration can increment, so the host can define them up front
    /// (they then show as 0 before the first request).
    pub fn metric_names(&self) -> Vec<String> {
        self.policy_counters
            .iter()
            .flatten()
            .flatten()
            .chain(self.limit_counters.iter().flatten())
            .chain(self.telemetry.iter().flat_map(Telemetry::metric_names))
            .cloned()
            .collect()
    }

    /// The telemetry part, if the configuration turns any of it on.
    pub fn telemetry(&self) -> Option<&Telemetry> {
        self.telemetry.as_ref()
    }

    /// The end of a request (the proxy's log phase): latency objectives. Does nothing without
    /// them.
    pub fn on_log<H: Host + ?Sized>(&self, host: &H) {
        if let Some(telemetry) = &self.telemetry {
            telemetry.on_log(host);
        }
    }

    /// Writes the decision as filter state, if telemetry asks for span tags.
    fn tag<H: Host + ?Sized>(&self, host: &H, decision: RequestDecision, rule: Rule) {
        let Some(telemetry) = self.telemetry.as_ref().filter(|t| t.span_tags()) else {
            return;
        };
        let label = match rule {
            Rule::None => NO_RULE,
            Rule::Policy(policy, rule) => telemetry.rule_label(policy, rule),
            Rule::Limit(limit) => self.limits.get(limit).map_or(NO_RULE, |l| l.name.as_str()),
        };
        telemetry.tag_decision(host, decision, label);
    }

    /// Decides a request once its headers are in: authorization, then rate limits. When it
    /// returns [`Verdict::Responded`] it has already sent the local response through `host`.
    pub fn on_request_headers<H: Host + ?Sized>(&self, host: &H) -> Verdict {
        // A property lookup costs a host call: only when a scope needs it.
        let route = if self.needs_route {
            host.route_name()
        } else {
            None
        };
        let route = route.as_deref();
        let mut facts = RequestFacts::with_sources(host, &self.sources);
        if let Some(telemetry) = &self.telemetry {
            telemetry.on_request_headers(&mut facts);
        }
        // For span tags: the last policy that allowed, the first audit-mode denial.
        let mut allowed = Rule::None;
        let mut audited = None;
        for (index, policy) in self.policies.iter().enumerate() {
            if !policy.scope.applies(route) {
                continue;
            }
            let decision = policy.decide(&mut facts);
            let rule = Rule::Policy(index, decision.index);
            let counter = |c: PolicyCounter| -> &str {
                self.policy_counters
                    .get(index)
                    .and_then(|rules| rules.get(decision.index))
                    .and_then(|names| names.get(c as usize))
                    .map_or("", String::as_str)
            };
            match (decision.action, policy.mode) {
                (Action::Allow, _) => {
                    allowed = rule;
                    host.increment_counter(counter(PolicyCounter::Allowed), 1);
                }
                (Action::Deny, Mode::Audit) => {
                    audited.get_or_insert(rule);
                    host.increment_counter(counter(PolicyCounter::AuditDenied), 1);
                    host.log(
                        LogLevel::Info,
                        &format!(
                            "trellis-policy: audit: policy {} rule {} would deny {} (route {})",
                            policy.name,
                            decision.rule,
                            facts.describe(),
                            route
                                .map(str::to_string)
                                .or_else(|| host.route_name())
                                .as_deref()
                                .unwrap_or("-"),
                        ),
                    );
                }
                (Action::Deny, Mode::Enforce) => {
                    host.increment_counter(counter(PolicyCounter::Denied), 1);
                    host.log(
                        LogLevel::Debug,
                        &format!(
                            "trellis-policy: policy {} rule {} denied {} (route {})",
                            policy.name,
                            decision.rule,
                            facts.describe(),
                            route
                                .map(str::to_string)
                                .or_else(|| host.route_name())
                                .as_deref()
                                .unwrap_or("-"),
                        ),
                    );
                    self.tag(host, RequestDecision::Deny, rule);
                    host.send_local_response(
                        403,
                        &[("content-type", "text/plain")],
                        &format!("denied by policy {}", policy.name),
                    );
                    return Verdict::Responded;
                }
            }
        }
        for (index, limit) in self.limits.iter().enumerate() {
            if !limit.scope.applies(route) {
                continue;
            }
            let counter = |c: LimitCounter| -> &str {
                self.limit_counters
                    .get(index)
                    .and_then(|names| names.get(c as usize))
                    .map_or("", String::as_str)
            };
            match limit.take_with(&mut facts) {
                ratelimit::Outcome::Allowed => {}
                ratelimit::Outcome::Error => {
                    host.increment_counter(counter(LimitCounter::Errors), 1)
                }
                ratelimit::Outcome::Limited { retry_after_secs } => {
                    host.increment_counter(counter(LimitCounter::RateLimited), 1);
                    self.tag(host, RequestDecision::Limited, Rule::Limit(index));
                    host.send_local_response(
                        429,
                        &[
                            ("content-type", "text/plain"),
                            ("retry-after", &retry_after_secs.to_string()),
                        ],
                        &format!("rate limited by {}", limit.name),
                    );
                    return Verdict::Responded;
                }
            }
        }
        match audited {
            Some(rule) => self.tag(host, RequestDecision::Audit, rule),
            None => self.tag(host, RequestDecision::Allow, allowed),
        }
        Verdict::Continue
    }
}

/// What decided a request, for span tags.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Nothing (no policy or limit in scope).
    None,
    /// Policy index, rule index (the rule count for the default).
    Policy(usize, usize),
    /// Rate limit index.
    Limit(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockHost;

    fn filter(json: &str) -> PolicyFilter {
        PolicyFilter::from_json(json.as_bytes()).unwrap()
    }

    const ADMIN: &str = r#"{"policies": [{
        "name": "default/deny-admin", "default_action": "allow",
        "rules": [{"name": "admin", "action": "deny", "paths": [{"prefix": "/admin"}]}]
    }]}"#;

    #[test]
    fn a_denied_request_gets_403_naming_the_policy_and_is_counted() {
        let f = filter(ADMIN);
        let host = MockHost::get("/admin/users");
        assert_eq!(f.on_request_headers(&host), Verdict::Responded);
        let (status, headers, body) = host.local_response().unwrap();
        assert_eq!(status, 403);
        assert_eq!(body, "denied by policy default/deny-admin");
        assert_eq!(
            headers,
            [("content-type".to_string(), "text/plain".to_string())]
        );
        assert_eq!(
            host.counter("trellis_policy_denied_total.policy.default/deny-admin.rule.admin"),
            1
        );
    }

    #[test]
    fn headers_are_read_in_one_call_when_the_host_offers_it() {
        let f = filter(
            r#"{"policies": [{"name": "p", "default_action": "deny", "rules": [
                {"name": "a", "action": "deny", "methods": ["DELETE"]},
                {"name": "b", "action": "deny", "headers": [{"name": "X-Role", "values": ["guest"]}]},
                {"name": "c", "action": "allow", "paths": [{"prefix": "/api"}],
                 "headers": [{"name": "x-api-key", "values": ["k1"]}]}
            ]}]}"#,
        );
        let host = MockHost::get("/api/items?x=1")
            .with_header("x-api-key", "k1")
            .with_bulk_headers();
        assert_eq!(f.on_request_headers(&host), Verdict::Continue);
        assert_eq!(host.reads(), (1, 0));
        let host = MockHost::get("/api/items")
            .with_header("x-role", "guest")
            .with_bulk_headers();
        assert_eq!(f.on_request_headers(&host), Verdict::Responded);
        // One by one without bulk reads.
        let host = MockHost::get("/api/items").with_header("x-api-key", "k1");
        assert_eq!(f.on_request_headers(&host), Verdict::Continue);
        assert!(host.reads().0 > 1);
    }

    #[test]
    fn the_client_ip_can_come_from_the_last_forwarded_for_entry() {
        let f = filter(
            r#"{"client_ip_header": "x-forwarded-for",
                "policies": [{"name": "p", "default_action": "allow", "rules": [
                {"name": "internal", "action": "deny", "source_ips": ["10.0.0.0/8"]}]}]}"#,
        );
        // The proxy appended the connection's address last; earlier entries are the client's.
        let host = MockHost::get("/")
            .with_header("x-forwarded-for", "10.9.9.9, 203.0.113.7")
            .with_source("10.0.0.1:5555")
            .with_bulk_headers();
        assert_eq!(f.on_request_headers(&host), Verdict::Continue);
        assert_eq!(host.reads(), (1, 0), "no property lookup");
        let host = MockHost::get("/")
            .with_header("x-forwarded-for", "203.0.113.7,10.1.2.3")
            .with_bulk_headers();
        assert_eq!(f.on_request_headers(&host), Verdict::Responded);
        // Without the header: the property.
        let host = MockHost::get("/").with_source("10.0.0.1:5555");
        assert_eq!(f.on_request_headers(&host), Verdict::Responded);
    }

    #[test]
    fn without_client_certificates_no_principal_is_looked_up() {
        let config = |certificates: bool| {
            format!(
                r#"{{"client_certificates": {certificates},
                    "policies": [{{"name": "p", "default_action": "allow", "rules": [
                    {{"name": "peers", "action": "deny", "principals": ["*"]}}]}}]}}"#
            )
        };
        let host = || MockHost::get("/").with_principal("spiffe://td/ns/a/sa/b");
        let with = filter(&config(true));
        assert_eq!(with.on_request_headers(&host()), Verdict::Responded);
        let without = filter(&config(false));
        let h = host();
        assert_eq!(without.on_request_headers(&h), Verdict::Continue);
        assert_eq!(h.reads().1, 0);
    }

    #[test]
    fn an_allowed_request_continues_and_counts_the_deciding_rule() {
        let f = filter(ADMIN);
        let host = MockHost::get("/home");
        assert_eq!(f.on_request_headers(&host), Verdict::Continue);
        assert_eq!(host.local_response(), None);
        assert_eq!(
            host.counter("trellis_policy_allowed_total.policy.default/deny-admin.rule.(default)"),
            1
        );
    }

    #[test]
    fn audit_mode_logs_and_counts_what_it_would_deny_but_allows() {
        let f = filter(
            r#"{"policies": [{"name": "ns/audit", "mode": "audit", "default_action": "deny"}]}"#,
        );
        let host = MockHost::request("DELETE", "/x?secret=1").with_source("10.1.1.1:5");
        assert_eq!(f.on_request_headers(&host), Verdict::Continue);
        assert_eq!(host.local_response(), None);
        assert_eq!(
            host.counter("trellis_policy_audit_denied_total.policy.ns/audit.rule.(default)"),
            1
        );
        assert_eq!(
            host.counter("trellis_policy_denied_total.policy.ns/audit.rule.(default)"),
            0
        );
        let logs = host.logs();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].0, LogLevel::Info);
        assert!(
            logs[0].1.contains("would deny DELETE /x from 10.1.1.1"),
            "{logs:?}"
        );
        assert!(
            !logs[0].1.contains("secret"),
            "the query string stays out of logs"
        );
    }

    #[test]
    fn policies_apply_in_order_and_the_first_enforced_denial_answers() {
        let f = filter(
            r#"{"policies": [
                {"name": "audit", "mode": "audit", "default_action": "deny"},
                {"name": "first", "default_action": "deny"},
                {"name": "second", "default_action": "deny"}
            ]}"#,
        );
        let host = MockHost::get("/");
        assert_eq!(f.on_request_headers(&host), Verdict::Responded);
        assert_eq!(host.local_response().unwrap().2, "denied by policy first");
        assert_eq!(
            host.counter("trellis_policy_audit_denied_total.policy.audit.rule.(default)"),
            1
        );
        assert_eq!(
            host.counter("trellis_policy_denied_total.policy.first.rule.(default)"),
            1
        );
        assert_eq!(
            host.counter("trellis_policy_denied_total.policy.second.rule.(default)"),
            0
        );
    }

    #[test]
    fn every_policy_must_allow() {
        let f = filter(
            r#"{"policies": [
                {"name": "a", "default_action": "allow"},
                {"name": "b", "default_action": "allow",
                 "rules": [{"name": "no-delete", "action": "deny", "methods": ["DELETE"]}]}
            ]}"#,
        );
        let get = MockHost::get("/");
        assert_eq!(f.on_request_headers(&get), Verdict::Continue);
        let delete = get.next("DELETE", "/");
        assert_eq!(f.on_request_headers(&delete), Verdict::Responded);
        assert_eq!(delete.local_response().unwrap().2, "denied by policy b");
    }

    #[test]
    fn scoped_policies_apply_only_to_routes_with_their_prefix() {
        let f = filter(
            r#"{"policies": [{"name": "web-only", "default_action": "deny",
                "scope": {"route_prefixes": ["httproute/default/web/", "httproute/prod/"]}}]}"#,
        );
        let on = |route: &str| MockHost::get("/").with_route(route);
        let web = on("httproute/default/web/rule/0/match/0");
        assert_eq!(f.on_request_headers(&web), Verdict::Responded);
        let prod = on("httproute/prod/api/rule/1/match/0");
        assert_eq!(f.on_request_headers(&prod), Verdict::Responded);
        let other = on("httproute/default/webshop/rule/0/match/0");
        assert_eq!(f.on_request_headers(&other), Verdict::Continue);
        assert_eq!(
            f.on_request_headers(&MockHost::get("/")),
            Verdict::Continue,
            "no route name"
        );
        let everywhere =
            filter(r#"{"policies": [{"name": "all", "default_action": "deny", "scope": "all"}]}"#);
        assert_eq!(
            everywhere.on_request_headers(&MockHost::get("/")),
            Verdict::Responded
        );
    }

    #[test]
    fn policies_scoped_to_routes_apply_to_exactly_those_routes() {
        let f = filter(
            r#"{"policies": [{"name": "one-rule", "default_action": "deny",
                "scope": {"routes": ["httproute/default/web/rule/1/match/0"]}}]}"#,
        );
        let on = |route: &str| MockHost::get("/").with_route(route);
        assert_eq!(
            f.on_request_headers(&on("httproute/default/web/rule/1/match/0")),
            Verdict::Responded
        );
        for other in [
            "httproute/default/web/rule/10/match/0",
            "httproute/default/web/rule/1/match/01",
            "httproute/default/web/rule/0/match/0",
        ] {
            assert_eq!(
                f.on_request_headers(&on(other)),
                Verdict::Continue,
                "{other}"
            );
        }
        assert_eq!(f.on_request_headers(&MockHost::get("/")), Verdict::Continue);
        let empty = PolicyFilter::from_json(
            br#"{"policies": [{"name": "p", "default_action": "allow", "scope": {"routes": []}}]}"#,
        );
        assert!(empty.is_err());
    }

    #[test]
    fn an_empty_bucket_answers_429_with_retry_after() {
        let f = filter(
            r#"{"rate_limits": [{"name": "per-ip", "key": "client_ip", "requests": 2, "per": "minute", "burst": 1}]}"#,
        );
        let host = MockHost::get("/").with_source("10.0.0.1:1");
        assert_eq!(f.on_request_headers(&host), Verdict::Continue);
        let second = host.sibling().with_source("10.0.0.1:2");
        assert_eq!(f.on_request_headers(&second), Verdict::Responded);
        let (status, headers, body) = second.local_response().unwrap();
        assert_eq!(status, 429);
        assert_eq!(body, "rate limited by per-ip");
        assert!(
            headers.contains(&("retry-after".to_string(), "30".to_string())),
            "{headers:?}"
        );
        assert_eq!(
            host.counter("trellis_policy_rate_limited_total.limit.per-ip"),
            1
        );
    }

    #[test]
    fn denied_requests_take_no_tokens() {
        let f = filter(
            r#"{"policies": [{"name": "p", "default_action": "allow",
                 "rules": [{"name": "admin", "action": "deny", "paths": [{"prefix": "/admin"}]}]}],
                "rate_limits": [{"name": "l", "key": "client_ip", "requests": 1, "per": "hour"}]}"#,
        );
        let base = MockHost::get("/").with_source("10.0.0.1:1");
        for _ in 0..3 {
            let admin = base.next("GET", "/admin").with_source("10.0.0.1:1");
            assert_eq!(f.on_request_headers(&admin), Verdict::Responded);
            assert_eq!(admin.local_response().unwrap().0, 403);
        }
        assert_eq!(
            f.on_request_headers(&base),
            Verdict::Continue,
            "the token is still there"
        );
        let again = base.sibling().with_source("10.0.0.1:1");
        assert_eq!(f.on_request_headers(&again), Verdict::Responded);
        assert_eq!(again.local_response().unwrap().0, 429);
    }

    #[test]
    fn scoped_limits_apply_only_to_their_routes() {
        let f = filter(
            r#"{"rate_limits": [{"name": "api", "scope": {"route_prefixes": ["httproute/default/api/"]},
                "key": "client_ip", "requests": 1, "per": "hour"}]}"#,
        );
        let api = MockHost::get("/").with_route("httproute/default/api/rule/0/match/0");
        assert_eq!(f.on_request_headers(&api), Verdict::Continue);
        let api2 = api
            .sibling()
            .with_route("httproute/default/api/rule/0/match/0");
        assert_eq!(f.on_request_headers(&api2), Verdict::Responded);
        let web = api
            .sibling()
            .with_route("httproute/default/web/rule/0/match/0");
        assert_eq!(f.on_request_headers(&web), Verdict::Continue);
    }

    #[test]
    fn a_rate_limit_error_lets_the_request_through_and_is_counted() {
        let f = filter(
            r#"{"rate_limits": [{"name": "l", "key": "client_ip", "requests": 1, "per": "hour"}]}"#,
        );
        let host = MockHost::get("/");
        host.fail_shared_data();
        assert_eq!(f.on_request_headers(&host), Verdict::Continue);
        assert_eq!(
            host.counter("trellis_policy_rate_limit_errors_total.limit.l"),
            1
        );
    }

    #[test]
    fn metric_names_cover_every_rule_the_default_and_every_limit() {
        let f = filter(
            r#"{"policies": [{"name": "ns/p.q", "default_action": "allow",
                 "rules": [{"name": "r1", "action": "deny"}]}],
                "rate_limits": [{"name": "l", "key": "client_ip", "requests": 1, "per": "hour"}]}"#,
        );
        let names = f.metric_names();
        assert_eq!(names.len(), 2 * 3 + 2);
        assert!(names.contains(&"trellis_policy_allowed_total.policy.ns/p_q.rule.r1".to_string()));
        assert!(names.contains(
            &"trellis_policy_audit_denied_total.policy.ns/p_q.rule.(default)".to_string()
        ));
        assert!(names.contains(&"trellis_policy_rate_limit_errors_total.limit.l".to_string()));
        assert_eq!(f.summary(), "1 policy (1 rule), 1 rate limit");
    }

    #[test]
    fn bad_configurations_are_refused_with_clear_messages() {
        let cases = [
            (
                r#"{"policies": [{"name": "p", "default_action": "allow"}, {"name": "p", "default_action": "deny"}]}"#,
                "invalid policy filter configuration: policies[1].name: `p` is used by an earlier policy",
            ),
            (
                r#"{"rate_limits": [{"name": "l", "key": "client_ip", "requests": 1, "per": "hour"},
                                 {"name": "l", "key": "principal", "requests": 1, "per": "hour"}]}"#,
                "rate_limits[1].name: `l` is used by an earlier rate limit",
            ),
            (
                r#"{"policies": [{"name": "a b", "default_action": "allow"}]}"#,
                "policies[0].name: `a b` contains ` `",
            ),
            (
                r#"{"policies": [{"name": "p", "default_action": "allow", "scope": {"route_prefixes": [""]}}]}"#,
                "policies[0].scope.route_prefixes[0]: must not be empty",
            ),
            (
                r#"{"policies": [{"name": "p", "default_action": "allow", "scope": "some"}]}"#,
                "policies[0].scope: unknown variant `some`",
            ),
            (
                r#"{"rate_limits": [{"name": "l", "key": "ip", "requests": 1, "per": "hour"}]}"#,
                "rate_limits[0].key: unknown variant `ip`",
            ),
            (
                r#"{"rate_limits": [{"name": "l", "key": "client_ip", "requests": 1, "per": "day"}]}"#,
                "rate_limits[0].per: unknown variant `day`",
            ),
            (r#"{"policy": []}"#, "unknown field `policy`"),
            (
                r#"[]"#,
                "invalid policy filter configuration: the configuration must be a JSON object",
            ),
            (
                r#"{"policies": {}}"#,
                "policies: invalid type: map, expected a sequence",
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
    fn an_empty_configuration_lets_everything_through() {
        let f = filter("");
        let host = MockHost::get("/admin");
        assert_eq!(f.on_request_headers(&host), Verdict::Continue);
        assert!(host.counters().is_empty());
        assert_eq!(f.summary(), "0 policies (0 rules), 0 rate limits");
    }
}
