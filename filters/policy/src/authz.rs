//! Authorization: compiled policies and rules, and deciding a request against them.
//!
//! A [`Policy`] is compiled once from its [`PolicyConfig`] (regexes built, CIDRs parsed, names
//! checked) and then only read. [`Policy::decide`] walks the rules in order; the first rule
//! whose conditions all hold gives the [`Decision`], else the policy's default action does.
//! What to do with the decision (403, audit log, counters) is [`crate::filter`]'s job.

use std::net::IpAddr;

use ipnet::IpNet;
use regex_lite::Regex;

use crate::config::{Action, HeaderMatch, Mode, PathMatch, PolicyConfig, RuleConfig};
use crate::filter::{RouteScope, check_name};
use crate::{ConfigError, Host};

/// The rule label used in metrics and logs when no rule matched and the default action decided.
pub const DEFAULT_RULE: &str = "(default)";

/// A compiled authorization policy.
#[derive(Debug)]
pub struct Policy {
    /// The policy's name, e.g. `default/deny-admin`.
    pub name: String,
    /// The routes it applies to.
    pub scope: RouteScope,
    /// Enforce or audit.
    pub mode: Mode,
    default_action: Action,
    rules: Vec<Rule>,
}

/// The outcome of one policy for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    /// Allow or deny.
    pub action: Action,
    /// The rule that decided, or [`DEFAULT_RULE`].
    pub rule: &'a str,
    /// The deciding rule's position, or the number of rules for the default.
    pub index: usize,
}

#[derive(Debug)]
struct Rule {
    name: String,
    action: Action,
    paths: Option<Vec<PathMatcher>>,
    methods: Option<Vec<String>>,
    headers: Option<Vec<HeaderMatch>>,
    principals: Option<Vec<PrincipalMatcher>>,
    namespaces: Option<Vec<String>>,
    source_ips: Option<Vec<IpNet>>,
}

#[derive(Debug)]
enum PathMatcher {
    Exact(String),
    Prefix(String),
    /// A regex, and a literal every match starts with (checked first: cheaper than the regex).
    Regex(Regex, String),
}

#[derive(Debug)]
enum PrincipalMatcher {
    Exact(String),
    Prefix(String),
}

/// How a request's facts are read (from the filter's configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FactSources {
    /// The client IP is the last entry of this header (see `Config::client_ip_header`).
    pub(crate) client_ip_header: Option<String>,
    /// No connection presents a client certificate: no principal, no lookup.
    pub(crate) no_client_certificates: bool,
}

/// What a request offers to the rules, read from the host at most once per request. Headers
/// come in one host call when the host can do it (host calls, and properties most, are what
/// the filter spends its time on in Envoy).
pub(crate) struct RequestFacts<'h, H: Host + ?Sized> {
    host: &'h H,
    sources: Option<&'h FactSources>,
    headers: Option<Option<Vec<(String, String)>>>,
    path: Option<Option<String>>,
    method: Option<Option<String>>,
    principal: Option<Option<String>>,
    source_ip: Option<Option<IpAddr>>,
}

impl<'h, H: Host + ?Sized> RequestFacts<'h, H> {
    pub(crate) fn new(host: &'h H) -> Self {
        RequestFacts {
            host,
            sources: None,
            headers: None,
            path: None,
            method: None,
            principal: None,
            source_ip: None,
        }
    }

    pub(crate) fn with_sources(host: &'h H, sources: &'h FactSources) -> Self {
        RequestFacts {
            sources: Some(sources),
            ..RequestFacts::new(host)
        }
    }

    /// A request header (first value), from the bulk read when the host offers one.
    pub(crate) fn header(&mut self, name: &str) -> Option<String> {
        let host = self.host;
        let all = self.headers.get_or_insert_with(|| host.request_headers());
        match all {
            Some(all) => all
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone()),
            None => host.request_header(name),
        }
    }

    pub(crate) fn path(&mut self) -> Option<&str> {
        if self.path.is_none() {
            let path = self.header(":path").map(|mut path| {
                if let Some(query) = path.find('?') {
                    path.truncate(query);
                }
                path
            });
            self.path = Some(path);
        }
        self.path.as_ref().and_then(|p| p.as_deref())
    }

    pub(crate) fn method(&mut self) -> Option<&str> {
        if self.method.is_none() {
            let method = self.header(":method");
            self.method = Some(method);
        }
        self.method.as_ref().and_then(|m| m.as_deref())
    }

    pub(crate) fn principal(&mut self) -> Option<&str> {
        if self.principal.is_none() {
            let no_certificates = self.sources.is_some_and(|s| s.no_client_certificates);
            let principal = if no_certificates {
                None
            } else {
                self.host.peer_principal()
            };
            self.principal = Some(principal);
        }
        self.principal.as_ref().and_then(|p| p.as_deref())
    }

    pub(crate) fn source_ip(&mut self) -> Option<IpAddr> {
        if let Some(ip) = self.source_ip {
            return ip;
        }
        let from_header = self
            .sources
            .and_then(|s| s.client_ip_header.as_deref())
            .and_then(|name| self.header(name))
            .and_then(|value| {
                let last = value.rsplit(',').next()?.trim();
                last.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
            });
        let ip = from_header.or_else(|| self.host.source_ip());
        self.source_ip = Some(ip);
        ip
    }

    /// The host the facts come from.
    pub(crate) fn host(&self) -> &'h H {
        self.host
    }

    /// `METHOD PATH from IP` for log lines (`-` for what is missing).
    pub(crate) fn describe(&mut self) -> String {
        let method = self.method().unwrap_or("-").to_string();
        let path = self.path().unwrap_or("-").to_string();
        let ip = self
            .source_ip()
            .map_or_else(|| "-".to_string(), |ip| ip.to_string());
        format!("{method} {path} from {ip}")
    }
}

impl Policy {
    /// Compiles `config`; `field` is its path in the configuration (`policies[3]`) for errors.
    pub fn compile(config: &PolicyConfig, field: &str) -> Result<Policy, ConfigError> {
        check_name(&config.name, &format!("{field}.name"))?;
        let scope = RouteScope::compile(&config.scope, &format!("{field}.scope"))?;
        let mut rules: Vec<Rule> = Vec::with_capacity(config.rules.len());
        for (index, rule) in config.rules.iter().enumerate() {
            let rule_field = format!("{field}.rules[{index}]");
            let compiled = Rule::compile(rule, &rule_field)?;
            if rules.iter().any(|other| other.name == compiled.name) {
                return Err(ConfigError::invalid(
                    format!("{rule_field}.name"),
                    format!(
                        "`{}` is used by an earlier rule of this policy",
                        compiled.name
                    ),
                ));
            }
            rules.push(compiled);
        }
        Ok(Policy {
            name: config.name.clone(),
            scope,
            mode: config.mode,
            default_action: config.default_action,
            rules,
        })
    }

    /// The rule names of this policy, in order (for defining metrics up front).
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|rule| rule.name.as_str())
    }

    /// Decides `request`: the first matching rule's action, else the default action.
    pub(crate) fn decide<H: Host + ?Sized>(
        &self,
        request: &mut RequestFacts<'_, H>,
    ) -> Decision<'_> {
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.matches(request) {
                return Decision {
                    action: rule.action,
                    rule: &rule.name,
                    index,
                };
            }
        }
        Decision {
            action: self.default_action,
            rule: DEFAULT_RULE,
            index: self.rules.len(),
        }
    }
}

impl Rule {
    fn compile(config: &RuleConfig, field: &str) -> Result<Rule, ConfigError> {
        check_name(&config.name, &format!("{field}.name"))?;
        let paths = compile_list(
            config.paths.as_deref(),
            &format!("{field}.paths"),
            |path, at| compile_path(path, &at),
        )?;
        let methods = compile_list(
            config.methods.as_deref(),
            &format!("{field}.methods"),
            |method, at| {
                if method.is_empty() || !method.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ConfigError::invalid(
                        at,
                        "must be an HTTP method such as `GET`",
                    ));
                }
                Ok(method.clone())
            },
        )?;
        let headers = compile_list(
            config.headers.as_deref(),
            &format!("{field}.headers"),
            |header, at| {
                if header.name.is_empty() {
                    return Err(ConfigError::invalid(
                        format!("{at}.name"),
                        "must not be empty",
                    ));
                }
                if header.values.is_empty() {
                    return Err(ConfigError::invalid(
                        format!("{at}.values"),
                        "must list at least one value",
                    ));
                }
                Ok(HeaderMatch {
                    name: header.name.to_ascii_lowercase(),
                    values: header.values.clone(),
                })
            },
        )?;
        let principals = compile_list(
            config.principals.as_deref(),
            &format!("{field}.principals"),
            |principal, at| {
                let (body, wildcard) = match principal.strip_suffix('*') {
                    Some(prefix) => (prefix, true),
                    None => (principal.as_str(), false),
                };
                if body.contains('*') {
                    return Err(ConfigError::invalid(
                        at,
                        "may contain `*` only as its last character",
                    ));
                }
                if !wildcard && body.is_empty() {
                    return Err(ConfigError::invalid(at, "must not be empty"));
                }
                Ok(if wildcard {
                    PrincipalMatcher::Prefix(body.to_string())
                } else {
                    PrincipalMatcher::Exact(body.to_string())
                })
            },
        )?;
        let namespaces = compile_list(
            config.namespaces.as_deref(),
            &format!("{field}.namespaces"),
            |namespace, at| {
                if namespace.is_empty() || namespace.contains('/') {
                    return Err(ConfigError::invalid(
                        at,
                        "must be a namespace name (not empty, no `/`)",
                    ));
                }
                Ok(namespace.clone())
            },
        )?;
        let source_ips = compile_list(
            config.source_ips.as_deref(),
            &format!("{field}.source_ips"),
            |text, at| {
                if let Ok(net) = text.parse::<IpNet>() {
                    return Ok(canonical_net(net));
                }
                match text.parse::<IpAddr>() {
                    Ok(ip) => Ok(IpNet::from(ip.to_canonical())),
                    Err(_) => Err(ConfigError::invalid(
                        at,
                        format!("`{text}` is not an IP address or CIDR (e.g. `10.0.0.0/8`)"),
                    )),
                }
            },
        )?;
        Ok(Rule {
            name: config.name.clone(),
            action: config.action,
            paths,
            methods,
            headers,
            principals,
            namespaces,
            source_ips,
        })
    }

    fn matches<H: Host + ?Sized>(&self, request: &mut RequestFacts<'_, H>) -> bool {
        if let Some(paths) = &self.paths {
            let Some(path) = request.path() else {
                return false;
            };
            if !paths.iter().any(|matcher| matcher.matches(path)) {
                return false;
            }
        }
        if let Some(methods) = &self.methods {
            let Some(method) = request.method() else {
                return false;
            };
            if !methods.iter().any(|m| m == method) {
                return false;
            }
        }
        if let Some(headers) = &self.headers {
            for header in headers {
                let Some(value) = request.header(&header.name) else {
                    return false;
                };
                if !header.values.contains(&value) {
                    return false;
                }
            }
        }
        if let Some(principals) = &self.principals {
            let Some(principal) = request.principal() else {
                return false;
            };
            if !principals.iter().any(|matcher| matcher.matches(principal)) {
                return false;
            }
        }
        if let Some(namespaces) = &self.namespaces {
            let Some(namespace) = request.principal().and_then(spiffe_namespace) else {
                return false;
            };
            if !namespaces.iter().any(|n| n == namespace) {
                return false;
            }
        }
        if let Some(nets) = &self.source_ips {
            let Some(ip) = request.source_ip() else {
                return false;
            };
            if !nets.iter().any(|net| net.contains(&ip)) {
                return false;
            }
        }
        true
    }
}

/// The namespace of a SPIFFE ID of the Kubernetes form, `spiffe://<td>/ns/<ns>/sa/<sa>`.
fn spiffe_namespace(principal: &str) -> Option<&str> {
    let path = principal.strip_prefix("spiffe://")?;
    let (_, rest) = path.split_once('/')?;
    let rest = rest.strip_prefix("ns/")?;
    let (namespace, rest) = rest.split_once('/')?;
    (rest.starts_with("sa/") && !namespace.is_empty()).then_some(namespace)
}

impl PathMatcher {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Exact(exact) => path == exact,
            PathMatcher::Prefix(prefix) => path.starts_with(prefix.as_str()),
            PathMatcher::Regex(regex, prefix) => {
                path.starts_with(prefix.as_str()) && regex.is_match(path)
            }
        }
    }
}

impl PrincipalMatcher {
    fn matches(&self, principal: &str) -> bool {
        match self {
            PrincipalMatcher::Exact(exact) => principal == exact,
            PrincipalMatcher::Prefix(prefix) => principal.starts_with(prefix.as_str()),
        }
    }
}

/// Largest compiled regex accepted, so a configuration cannot make the VM allocate without bound.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// A literal every whole-string match of `pattern` starts with: its leading characters up to the
/// first one with a special meaning (without the last one if a quantifier follows it). Empty
/// when the pattern has an alternation, or starts with something special.
fn literal_prefix(pattern: &str) -> String {
    if pattern.contains('|') {
        return String::new();
    }
    const SPECIAL: &[char] = &[
        '\\', '.', '[', ']', '(', ')', '*', '+', '?', '{', '}', '^', '$', '|',
    ];
    let mut prefix = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if SPECIAL.contains(&c) {
            break;
        }
        if matches!(chars.peek(), Some('*' | '?' | '{')) {
            break;
        }
        prefix.push(c);
    }
    prefix
}

fn compile_path(path: &PathMatch, field: &str) -> Result<PathMatcher, ConfigError> {
    match path {
        PathMatch::Exact(exact) | PathMatch::Prefix(exact) if !exact.starts_with('/') => {
            let kind = if matches!(path, PathMatch::Exact(_)) {
                "exact"
            } else {
                "prefix"
            };
            Err(ConfigError::invalid(
                format!("{field}.{kind}"),
                format!("`{exact}` must start with `/`"),
            ))
        }
        PathMatch::Exact(exact) => Ok(PathMatcher::Exact(exact.clone())),
        PathMatch::Prefix(prefix) => Ok(PathMatcher::Prefix(prefix.clone())),
        // The pattern must be valid on its own before it is anchored: `/public)|(.*` would
        // otherwise close the anchoring group and match every path.
        PathMatch::Regex(pattern) => regex_lite::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .and_then(|_| {
                regex_lite::RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
            })
            .map(|regex| PathMatcher::Regex(regex, literal_prefix(pattern)))
            .map_err(|error| {
                ConfigError::invalid(
                    format!("{field}.regex"),
                    format!(
                        "is not a valid regular expression: {}",
                        first_line(&error.to_string())
                    ),
                )
            }),
    }
}

fn first_line(text: &str) -> String {
    // regex's syntax errors are multi-line drawings; the last line says what is wrong.
    text.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or(text)
        .trim()
        .to_string()
}

fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) if v6.prefix_len() >= 96 => {
                ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4)
            }
            _ => net,
        },
        IpNet::V4(_) => net,
    }
}

/// Compiles an optional condition list: `None` stays `None` (matches anything), an empty list is
/// an error (it could never match, which is never what was meant), entries are compiled with
/// their index in the field path.
fn compile_list<T, U>(
    list: Option<&[T]>,
    field: &str,
    mut compile: impl FnMut(&T, String) -> Result<U, ConfigError>,
) -> Result<Option<Vec<U>>, ConfigError> {
    let Some(list) = list else {
        return Ok(None);
    };
    if list.is_empty() {
        return Err(ConfigError::invalid(
            field,
            "must not be empty (omit the condition to match every request)",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(index, item)| compile(item, format!("{field}[{index}]")))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_literal_prefixes_are_safe() {
        assert_eq!(literal_prefix("/internal/[0-9]+"), "/internal/");
        assert_eq!(literal_prefix("/ab*c"), "/a");
        assert_eq!(literal_prefix("/a?b"), "/");
        assert_eq!(literal_prefix("/a{2}"), "/");
        assert_eq!(literal_prefix("/a|/b"), "");
        assert_eq!(literal_prefix(".*"), "");
        assert_eq!(literal_prefix("\\/x"), "");
        assert_eq!(literal_prefix("/api/(v1|v2)"), "");
        assert_eq!(literal_prefix("/x+"), "/x");
    }
    use crate::config;
    use crate::mock::MockHost;

    fn policy(json: &str) -> Policy {
        let config: PolicyConfig = serde_json::from_str(json).unwrap();
        Policy::compile(&config, "policies[0]").unwrap()
    }

    fn compile_error(json: &str) -> String {
        let config: PolicyConfig = serde_json::from_str(json).unwrap();
        Policy::compile(&config, "policies[0]")
            .unwrap_err()
            .to_string()
    }

    fn decide(policy: &Policy, host: &MockHost) -> (Action, String) {
        let mut facts = RequestFacts::new(host);
        let decision = policy.decide(&mut facts);
        (decision.action, decision.rule.to_string())
    }

    fn deny_rule(conditions: &str) -> Policy {
        policy(&format!(
            r#"{{"name": "p", "default_action": "allow",
                "rules": [{{"name": "r", "action": "deny", {conditions}}}]}}"#
        ))
    }

    fn denied(policy: &Policy, host: &MockHost) -> bool {
        decide(policy, host).0 == Action::Deny
    }

    #[test]
    fn exact_path_matches_only_that_path_and_ignores_the_query() {
        let p = deny_rule(r#""paths": [{"exact": "/admin"}]"#);
        assert!(denied(&p, &MockHost::get("/admin")));
        assert!(denied(&p, &MockHost::get("/admin?x=1")));
        assert!(!denied(&p, &MockHost::get("/admin/")));
        assert!(!denied(&p, &MockHost::get("/administrator")));
    }

    #[test]
    fn prefix_path_matches_by_prefix() {
        let p = deny_rule(r#""paths": [{"prefix": "/admin/"}]"#);
        assert!(denied(&p, &MockHost::get("/admin/users")));
        assert!(!denied(&p, &MockHost::get("/admin")));
        assert!(!denied(&p, &MockHost::get("/public/admin/")));
    }

    #[test]
    fn regex_path_must_match_the_whole_path() {
        let p = deny_rule(r#""paths": [{"regex": "/users/[0-9]+/secrets"}]"#);
        assert!(denied(&p, &MockHost::get("/users/42/secrets")));
        assert!(!denied(&p, &MockHost::get("/users/42/secrets/x")));
        assert!(!denied(&p, &MockHost::get("/x/users/42/secrets")));
        assert!(!denied(&p, &MockHost::get("/users/abc/secrets")));
    }

    #[test]
    fn path_values_are_ored() {
        let p = deny_rule(r#""paths": [{"exact": "/a"}, {"prefix": "/b/"}, {"regex": "/c.*"}]"#);
        for path in ["/a", "/b/1", "/cat"] {
            assert!(denied(&p, &MockHost::get(path)), "{path}");
        }
        assert!(!denied(&p, &MockHost::get("/d")));
    }

    #[test]
    fn methods_match_exactly() {
        let p = deny_rule(r#""methods": ["POST", "DELETE"]"#);
        assert!(denied(&p, &MockHost::request("POST", "/")));
        assert!(denied(&p, &MockHost::request("DELETE", "/")));
        assert!(!denied(&p, &MockHost::request("GET", "/")));
        assert!(!denied(&p, &MockHost::request("post", "/")));
    }

    #[test]
    fn headers_need_every_header_with_one_of_its_values() {
        let p = deny_rule(
            r#""headers": [{"name": "X-Role", "values": ["guest", "anon"]},
                           {"name": "x-env", "values": ["prod"]}]"#,
        );
        let host = MockHost::get("/")
            .with_header("x-role", "anon")
            .with_header("x-env", "prod");
        assert!(denied(&p, &host));
        let host = MockHost::get("/").with_header("x-role", "anon");
        assert!(!denied(&p, &host), "a missing header does not match");
        let host = MockHost::get("/")
            .with_header("x-role", "admin")
            .with_header("x-env", "prod");
        assert!(!denied(&p, &host));
    }

    #[test]
    fn principals_match_exactly_or_by_prefix() {
        let p =
            deny_rule(r#""principals": ["spiffe://td/ns/prod/sa/web", "spiffe://td/ns/test/*"]"#);
        let with = |principal: &str| MockHost::get("/").with_principal(principal);
        assert!(denied(&p, &with("spiffe://td/ns/prod/sa/web")));
        assert!(denied(&p, &with("spiffe://td/ns/test/sa/anything")));
        assert!(!denied(&p, &with("spiffe://td/ns/prod/sa/web2")));
        assert!(!denied(&p, &with("spiffe://td/ns/prod/sa/api")));
        assert!(!denied(&p, &MockHost::get("/")), "no mTLS, no principal");
    }

    #[test]
    fn namespaces_match_the_namespace_of_the_principal() {
        let p = deny_rule(r#""namespaces": ["prod", "ops"]"#);
        let with = |principal: &str| MockHost::get("/").with_principal(principal);
        assert!(denied(&p, &with("spiffe://td/ns/prod/sa/web")));
        assert!(denied(&p, &with("spiffe://cluster.local/ns/ops/sa/x")));
        assert!(!denied(&p, &with("spiffe://td/ns/production/sa/web")));
        assert!(
            !denied(&p, &with("spiffe://td/ns/prod")),
            "not of the Kubernetes form"
        );
        assert!(!denied(&p, &with("spiffe://td/sa/x/ns/prod/sa/y")));
        assert!(!denied(&p, &MockHost::get("/")), "no mTLS, no namespace");
        assert_eq!(spiffe_namespace("spiffe://td/ns/a/sa/b"), Some("a"));
        assert_eq!(spiffe_namespace("spiffe://td/ns//sa/b"), None);
    }

    #[test]
    fn a_lone_star_principal_matches_any_authenticated_peer() {
        let p = deny_rule(r#""principals": ["*"]"#);
        assert!(denied(
            &p,
            &MockHost::get("/").with_principal("spiffe://td/x")
        ));
        assert!(!denied(&p, &MockHost::get("/")));
    }

    #[test]
    fn source_ips_match_addresses_and_cidrs() {
        let p = deny_rule(r#""source_ips": ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]"#);
        let from = |address: &str| MockHost::get("/").with_source(address);
        assert!(denied(&p, &from("10.1.2.3:5555")));
        assert!(denied(&p, &from("192.168.1.7:80")));
        assert!(denied(&p, &from("[2001:db8::1]:443")));
        assert!(denied(&p, &from("[::ffff:10.9.9.9]:1")), "IPv4-mapped IPv6");
        assert!(!denied(&p, &from("192.168.1.8:80")));
        assert!(!denied(&p, &from("11.0.0.1:80")));
        assert!(!denied(&p, &MockHost::get("/")), "no address");
    }

    #[test]
    fn conditions_are_anded() {
        let p = deny_rule(r#""paths": [{"prefix": "/admin"}], "methods": ["POST"]"#);
        assert!(denied(&p, &MockHost::request("POST", "/admin")));
        assert!(!denied(&p, &MockHost::request("GET", "/admin")));
        assert!(!denied(&p, &MockHost::request("POST", "/home")));
    }

    #[test]
    fn a_rule_without_conditions_matches_everything() {
        let p = deny_rule(r#""methods": null"#);
        assert!(denied(&p, &MockHost::get("/anything")));
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let p = policy(
            r#"{"name": "p", "default_action": "deny", "rules": [
                {"name": "health", "action": "allow", "paths": [{"exact": "/admin/health"}]},
                {"name": "admin", "action": "deny", "paths": [{"prefix": "/admin"}]},
                {"name": "rest", "action": "allow", "paths": [{"prefix": "/"}]}
            ]}"#,
        );
        assert_eq!(
            decide(&p, &MockHost::get("/admin/health")),
            (Action::Allow, "health".into())
        );
        assert_eq!(
            decide(&p, &MockHost::get("/admin/users")),
            (Action::Deny, "admin".into())
        );
        assert_eq!(
            decide(&p, &MockHost::get("/home")),
            (Action::Allow, "rest".into())
        );
    }

    #[test]
    fn the_default_action_decides_when_no_rule_matches() {
        let allow = policy(r#"{"name": "p", "default_action": "allow"}"#);
        assert_eq!(
            decide(&allow, &MockHost::get("/")),
            (Action::Allow, DEFAULT_RULE.into())
        );
        let deny = policy(
            r#"{"name": "p", "default_action": "deny",
                "rules": [{"name": "public", "action": "allow", "paths": [{"prefix": "/public/"}]}]}"#,
        );
        assert_eq!(
            decide(&deny, &MockHost::get("/private")),
            (Action::Deny, DEFAULT_RULE.into())
        );
        assert_eq!(
            decide(&deny, &MockHost::get("/public/x")),
            (Action::Allow, "public".into())
        );
    }

    #[test]
    fn bad_rules_are_refused_with_their_field() {
        let cases = [
            (
                r#""paths": [{"regex": "(unclosed"}]"#,
                "policies[0].rules[0].paths[0].regex",
            ),
            // Unbalanced: anchored as written, it would match every path.
            (
                r#""paths": [{"regex": "/public)|(.*"}]"#,
                "policies[0].rules[0].paths[0].regex",
            ),
            (
                r#""paths": [{"exact": "admin"}]"#,
                "policies[0].rules[0].paths[0].exact",
            ),
            (
                r#""paths": []"#,
                "policies[0].rules[0].paths: must not be empty",
            ),
            (
                r#""methods": ["GET", ""]"#,
                "policies[0].rules[0].methods[1]",
            ),
            (
                r#""headers": [{"name": "x", "values": []}]"#,
                "policies[0].rules[0].headers[0].values",
            ),
            (
                r#""principals": ["spiffe://*/x"]"#,
                "policies[0].rules[0].principals[0]",
            ),
            (
                r#""source_ips": ["10.0.0.0/33"]"#,
                "policies[0].rules[0].source_ips[0]",
            ),
            (
                r#""source_ips": ["example.com"]"#,
                "is not an IP address or CIDR",
            ),
        ];
        for (conditions, expected) in cases {
            let message = compile_error(&format!(
                r#"{{"name": "p", "default_action": "allow",
                    "rules": [{{"name": "r", "action": "deny", {conditions}}}]}}"#
            ));
            assert!(message.contains(expected), "{conditions}: {message}");
        }
    }

    #[test]
    fn duplicate_and_malformed_rule_names_are_refused() {
        let message = compile_error(
            r#"{"name": "p", "default_action": "allow", "rules": [
                {"name": "r", "action": "deny"}, {"name": "r", "action": "allow"}]}"#,
        );
        assert!(message.contains("policies[0].rules[1].name"), "{message}");
        let message = compile_error(
            r#"{"name": "p", "default_action": "allow", "rules": [{"name": "a b", "action": "deny"}]}"#,
        );
        assert!(message.contains("policies[0].rules[0].name"), "{message}");
    }

    #[test]
    fn mapped_v6_cidrs_match_v4_clients() {
        let p = deny_rule(r#""source_ips": ["::ffff:10.0.0.0/104"]"#);
        assert!(denied(&p, &MockHost::get("/").with_source("10.3.3.3:1")));
        assert!(!denied(&p, &MockHost::get("/").with_source("11.3.3.3:1")));
    }

    #[test]
    fn a_policy_reports_its_rule_names_in_order() {
        let p = policy(
            r#"{"name": "p", "mode": "audit", "default_action": "allow", "rules": [
                {"name": "b", "action": "deny"}, {"name": "a", "action": "deny"}]}"#,
        );
        assert_eq!(p.rule_names().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(p.mode, config::Mode::Audit);
    }
}
