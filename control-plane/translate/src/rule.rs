//! HTTPRoute rules: each rule translated once (its filters, timeouts, retries and weighted
//! backends), then specialised per listener into route entries. An invalid rule is dropped with
//! the [`Problem`] that says why (Gateway API's GEP-1364); the route's other rules keep serving.
//!
//! ```text
//!  HttpRouteRule ──translate_rule──► RuleIr (matches via matches.rs, filters, action, clusters)
//!                                      └─ Rules::entries_for(listener) ──► Entry { RouteIr, precedence }
//! ```

use crate::backend::{BackendRef, Backends, Referrer};
use crate::conditions::{ConditionType, Problem, Reason, condition};
use crate::gateway::{Entry, Precedence};
use crate::hostname;
use crate::ir::{
    ActionIr, BackendIr, ClusterIr, CorsIr, ForwardIr, HeaderIr, HeaderModIr, MatchIr, MirrorIr,
    OriginIr, PathMatchIr, PathRewriteIr, RedirectIr, RetryIr, RewriteIr, RouteIr, RouteOrigin,
    Scheme,
};
use crate::matches::{
    check_header_name, check_header_value, check_text, duration, translate_match,
};
use std::time::Duration;
use trellis_model::ObjectKey;
use trellis_model::core::jiff;
use trellis_model::gateway::{
    Cors, HeaderModifier, HttpRoute, HttpRouteFilterType, HttpRouteRule, PathModifierType,
    RequestRedirect, UrlRewrite,
};

/// A route's rules, translated once and specialised per listener.
pub(crate) struct Rules {
    /// The valid rules, which are served.
    rules: Vec<RuleIr>,
    /// Invalid rules, dropped (Gateway API's GEP-1364): their index, reason and message. The
    /// route stays accepted while any rule is valid, with `PartiallyInvalid` saying which were
    /// dropped; with none valid, it is not accepted.
    dropped: Vec<(usize, Problem)>,
    /// References that did not resolve (the route is still accepted).
    pub(crate) ref_problems: Vec<Problem>,
}

impl Rules {
    /// Why the whole route is not accepted: every rule is invalid.
    pub(crate) fn not_accepted(&self) -> Option<Problem> {
        if !self.rules.is_empty() {
            return None;
        }
        let (_, first) = self.dropped.first()?;
        let messages: Vec<&str> = self
            .dropped
            .iter()
            .map(|(_, p)| p.message.as_str())
            .collect();
        Some(Problem::not_accepted(
            first.reason,
            format!("No rule is valid: {}", messages.join("; ")),
        ))
    }

    /// A route parent's conditions: `Accepted` (from whether the route attached to it),
    /// `ResolvedRefs`, and `PartiallyInvalid` when it attached and some rules were dropped.
    pub(crate) fn parent_conditions(
        &self,
        accepted: &Result<(), Problem>,
        generation: Option<i64>,
    ) -> Vec<trellis_model::core::Condition> {
        let mut conditions = vec![match accepted {
            Ok(()) => condition(
                ConditionType::Accepted,
                true,
                Reason::Accepted,
                "Route accepted",
                generation,
            ),
            Err(p) => p.to_condition(generation),
        }];
        conditions.push(match self.ref_problems.first() {
            None => condition(
                ConditionType::ResolvedRefs,
                true,
                Reason::ResolvedRefs,
                "All references resolved",
                generation,
            ),
            Some(p) => p.to_condition(generation),
        });
        if accepted.is_ok() {
            conditions.extend(self.partially_invalid(generation));
        }
        conditions
    }

    /// `PartiallyInvalid`: the rules dropped while others are served.
    pub(crate) fn partially_invalid(
        &self,
        generation: Option<i64>,
    ) -> Option<trellis_model::core::Condition> {
        if self.rules.is_empty() || self.dropped.is_empty() {
            return None;
        }
        let indexes: Vec<String> = self.dropped.iter().map(|(i, _)| i.to_string()).collect();
        let messages: Vec<&str> = self
            .dropped
            .iter()
            .map(|(_, p)| p.message.as_str())
            .collect();
        Some(condition(
            ConditionType::PartiallyInvalid,
            true,
            Reason::UnsupportedValue,
            format!(
                "Dropped Rule(s) {}: {}",
                indexes.join(", "),
                messages.join("; ")
            ),
            generation,
        ))
    }
}

pub(crate) struct RuleIr {
    matches: Vec<(MatchIr, Precedence)>,
    request_headers: HeaderModIr,
    response_headers: HeaderModIr,
    action: RuleAction,
    clusters: Vec<ClusterIr>,
    cors: Option<Cors>,
}

enum RuleAction {
    Forward {
        backends: Vec<BackendIr>,
        rewrite: Option<UrlRewrite>,
        mirrors: Vec<MirrorIr>,
        timeout: Option<Duration>,
        backend_timeout: Option<Duration>,
        retry: Option<RetryIr>,
    },
    Redirect(RequestRedirect),
    Respond(u16, String),
}

impl Rules {
    /// Route entries for one listener (redirect ports depend on the listener's).
    /// Route entries for requests arriving with `scheme` on `port` (a redirect keeps that
    /// port unless it is the scheme's default).
    pub(crate) fn entries_for(&self, scheme: Scheme, port: i32) -> Vec<Entry> {
        let mut out = Vec::new();
        for rule in &self.rules {
            for (matcher, precedence) in &rule.matches {
                let action = match &rule.action {
                    RuleAction::Forward {
                        backends,
                        rewrite,
                        mirrors,
                        timeout,
                        backend_timeout,
                        retry,
                    } => ActionIr::Forward(ForwardIr {
                        backends: backends.clone(),
                        rewrite: rewrite.as_ref().map(|r| RewriteIr {
                            hostname: r.hostname.clone(),
                            path: r
                                .path
                                .as_ref()
                                .and_then(|p| path_modifier(p, &matcher.path)),
                        }),
                        mirrors: mirrors.clone(),
                        timeout: *timeout,
                        backend_timeout: *backend_timeout,
                        retry: retry.clone(),
                    }),
                    RuleAction::Redirect(r) => {
                        ActionIr::Redirect(redirect(r, &matcher.path, scheme, port))
                    }
                    RuleAction::Respond(status, body) => ActionIr::Respond {
                        status: *status,
                        body: body.clone(),
                    },
                };
                let entry = Entry {
                    route: RouteIr {
                        origin: RouteOrigin::HttpRoute {
                            route: precedence.route.clone(),
                            rule: precedence.rule,
                            match_index: precedence.match_index,
                        },
                        matcher: matcher.clone(),
                        request_headers: rule.request_headers.clone(),
                        response_headers: rule.response_headers.clone(),
                        action,
                        cors: rule.cors.as_ref().map(cors_ir),
                        enabled_filters: Vec::new(),
                        tracing: None,
                        fault: None,
                    },
                    precedence: precedence.clone(),
                    clusters: rule.clusters.clone(),
                };
                out.push(entry);
            }
        }
        out
    }
}

/// A rule's CORS filter as the route's CORS policy (Gateway API's default `maxAge` is 5 s).
fn cors_ir(cors: &Cors) -> CorsIr {
    CorsIr {
        allow_origins: cors
            .allow_origins
            .iter()
            .map(|o| {
                if o == "*" {
                    OriginIr::Any
                } else if o.contains('*') {
                    OriginIr::Wildcard(o.clone())
                } else {
                    OriginIr::Exact(o.clone())
                }
            })
            .collect(),
        allow_methods: cors.allow_methods.clone(),
        allow_headers: cors.allow_headers.clone(),
        expose_headers: cors.expose_headers.clone(),
        max_age: Duration::from_secs(cors.max_age.unwrap_or(5).max(0) as u64),
        allow_credentials: cors.allow_credentials,
    }
}

/// A path modifier for one match: prefix replacement needs the match's prefix.
fn path_modifier(
    modifier: &trellis_model::gateway::HttpPathModifier,
    path: &PathMatchIr,
) -> Option<PathRewriteIr> {
    match modifier.type_ {
        PathModifierType::ReplaceFullPath => Some(PathRewriteIr::Full(
            modifier.replace_full_path.clone().unwrap_or_default(),
        )),
        PathModifierType::ReplacePrefixMatch => match path {
            PathMatchIr::Prefix(prefix) => Some(PathRewriteIr::Prefix {
                matched: prefix.clone(),
                replacement: modifier.replace_prefix_match.clone().unwrap_or_default(),
            }),
            _ => None,
        },
    }
}

/// A redirect for a match on a listener, with Gateway API's port rules: an explicit port is
/// kept unless it is the scheme's default; without one, a new scheme implies its default
/// port, and an unchanged scheme keeps the listener's port unless that is the default.
fn redirect(
    r: &RequestRedirect,
    path: &PathMatchIr,
    listener_scheme: Scheme,
    listener_port: i32,
) -> RedirectIr {
    let new_scheme = r.scheme.as_deref().and_then(scheme);
    let port = match (r.port, new_scheme) {
        (Some(p), _) => Some(p),
        (None, Some(_)) => None,
        (None, None) => Some(listener_port),
    }
    .and_then(|p| u16::try_from(p).ok())
    .filter(|p| *p != new_scheme.unwrap_or(listener_scheme).default_port());
    RedirectIr {
        scheme: new_scheme,
        hostname: r.hostname.clone(),
        port,
        path: r.path.as_ref().and_then(|p| path_modifier(p, path)),
        status: r
            .status_code
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(302),
    }
}

/// Translates a route's rules once.
pub(crate) fn translate_rules(
    key: &ObjectKey,
    route: &HttpRoute,
    backends: &Backends<'_>,
    referrer: Referrer<'_>,
) -> Rules {
    let mut rules = Vec::new();
    let mut dropped = Vec::new();
    let mut ref_problems = Vec::new();
    let created = route
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    for (rule_index, rule) in route.spec.rules.iter().enumerate() {
        // A dropped rule's unresolved references are not the route's.
        let mut rule_refs = Vec::new();
        let at = RuleAt {
            route: key,
            index: rule_index,
            created,
        };
        match translate_rule(&at, rule, backends, referrer, &mut rule_refs) {
            Ok(r) => {
                rules.push(r);
                ref_problems.extend(rule_refs);
            }
            Err(problem) => dropped.push((rule_index, problem)),
        }
    }
    Rules {
        rules,
        dropped,
        ref_problems,
    }
}

/// Which rule of which route, and when the route was created (for precedence).
#[derive(Clone, Copy)]
struct RuleAt<'a> {
    route: &'a ObjectKey,
    index: usize,
    created: jiff::Timestamp,
}

/// What a rule's filters add up to.
#[derive(Default)]
struct RuleFilters {
    request_headers: HeaderModIr,
    response_headers: HeaderModIr,
    redirect: Option<RequestRedirect>,
    rewrite: Option<UrlRewrite>,
    mirrors: Vec<MirrorIr>,
    clusters: Vec<ClusterIr>,
    /// A filter that cannot run: the rule answers 500 with this.
    broken: Option<String>,
    cors: Option<Cors>,
}

/// Translates one rule: its matches, its filters, then its action (a redirect, a 500 for a
/// filter that cannot run, or forwarding to its backends).
fn translate_rule(
    rule_at: &RuleAt<'_>,
    rule: &HttpRouteRule,
    backends: &Backends<'_>,
    referrer: Referrer<'_>,
    ref_problems: &mut Vec<Problem>,
) -> Result<RuleIr, Problem> {
    let RuleAt {
        route: key,
        index: rule_index,
        created,
    } = *rule_at;
    let at = format!("spec.rules[{rule_index}]");
    let mut matches = Vec::new();
    for (match_index, m) in rule.matches.iter().enumerate() {
        let (matcher, mut precedence) =
            translate_match(m, &format!("{at}.matches[{match_index}]"))?;
        precedence.created = created;
        precedence.route = key.clone();
        precedence.rule = rule_index;
        precedence.match_index = match_index;
        matches.push((matcher, precedence));
    }
    let mut filters = RuleFilters::default();
    for (i, filter) in rule.filters.iter().enumerate() {
        let at = format!("{at}.filters[{i}]");
        rule_filter(
            filter,
            &at,
            &matches,
            backends,
            referrer,
            &mut filters,
            ref_problems,
        )?;
    }
    if filters.redirect.is_some() && filters.rewrite.is_some() {
        return Err(Problem::not_accepted(
            Reason::UnsupportedValue,
            format!("{at}: RequestRedirect and URLRewrite cannot be used together"),
        ));
    }
    let RuleFilters {
        request_headers,
        response_headers,
        redirect,
        rewrite,
        mirrors,
        mut clusters,
        broken,
        cors,
    } = filters;
    let (timeout, backend_timeout) = rule_timeouts(rule, &at)?;
    let retry = rule_retry(rule, &at)?;
    let action = if let Some(message) = broken {
        RuleAction::Respond(500, message)
    } else if let Some(r) = redirect {
        RuleAction::Redirect(r)
    } else {
        let weighted = rule_backends(rule, &at, backends, referrer, &mut clusters, ref_problems)?;
        if weighted.is_empty() || weighted.iter().all(|b| b.cluster.is_none()) {
            let reason = if rule.backend_refs.is_empty() {
                "no backends"
            } else {
                "no backend available"
            };
            RuleAction::Respond(500, reason.to_string())
        } else {
            RuleAction::Forward {
                backends: weighted,
                rewrite,
                mirrors,
                timeout,
                backend_timeout,
                retry,
            }
        }
    };
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    clusters.dedup_by(|a, b| a.name == b.name);
    Ok(RuleIr {
        matches,
        request_headers,
        response_headers,
        action,
        clusters,
        cors,
    })
}

/// Adds one of a rule's filters to what the rule does.
fn rule_filter(
    filter: &trellis_model::gateway::HttpRouteFilter,
    at: &str,
    matches: &[(MatchIr, Precedence)],
    backends: &Backends<'_>,
    referrer: Referrer<'_>,
    out: &mut RuleFilters,
    ref_problems: &mut Vec<Problem>,
) -> Result<(), Problem> {
    match filter.type_ {
        HttpRouteFilterType::RequestHeaderModifier => merge_headers(
            &mut out.request_headers,
            filter.request_header_modifier.as_ref(),
            at,
        )?,
        HttpRouteFilterType::ResponseHeaderModifier => merge_headers(
            &mut out.response_headers,
            filter.response_header_modifier.as_ref(),
            at,
        )?,
        HttpRouteFilterType::RequestRedirect => {
            out.redirect = Some(redirect_filter(filter, at, matches)?);
        }
        HttpRouteFilterType::UrlRewrite => {
            out.rewrite = Some(rewrite_filter(filter, at, matches)?);
        }
        HttpRouteFilterType::RequestMirror => {
            let m = filter
                .request_mirror
                .as_ref()
                .ok_or_else(|| missing(at, "requestMirror"))?;
            match mirror(m, backends, referrer) {
                Ok((mirror, cluster)) => {
                    out.mirrors.push(mirror);
                    out.clusters.push(cluster);
                }
                Err(problem) => ref_problems.push(problem),
            }
        }
        HttpRouteFilterType::ExtensionRef => {
            let what = filter
                .extension_ref
                .as_ref()
                .map(|e| format!("{}/{} {}", e.group, e.kind, e.name))
                .unwrap_or_default();
            ref_problems.push(Problem::unresolved(
                Reason::InvalidKind,
                format!("{at}: extensionRef {what} is not a filter Trellis knows"),
            ));
            out.broken = Some(format!("filter {what} is not available"));
        }
        HttpRouteFilterType::Cors => {
            out.cors = Some(filter.cors.clone().ok_or_else(|| missing(at, "cors"))?);
        }
        HttpRouteFilterType::ExternalAuth => {
            return Err(Problem::not_accepted(
                Reason::UnsupportedValue,
                format!("{at}: filter type {:?} is not supported", filter.type_),
            ));
        }
    }
    Ok(())
}

/// A RequestRedirect filter, checked.
fn redirect_filter(
    filter: &trellis_model::gateway::HttpRouteFilter,
    at: &str,
    matches: &[(MatchIr, Precedence)],
) -> Result<RequestRedirect, Problem> {
    let r = filter
        .request_redirect
        .as_ref()
        .ok_or_else(|| missing(at, "requestRedirect"))?;
    let at = format!("{at}.requestRedirect");
    check_path_and_hostname(r.path.as_ref(), r.hostname.as_deref(), matches, &at)?;
    if let Some(s) = &r.scheme
        && scheme(s).is_none()
    {
        return Err(Problem::unsupported(
            format!("{at}.scheme"),
            format!("{s:?} is not http or https"),
        ));
    }
    Ok(r.clone())
}

/// A URLRewrite filter, checked.
fn rewrite_filter(
    filter: &trellis_model::gateway::HttpRouteFilter,
    at: &str,
    matches: &[(MatchIr, Precedence)],
) -> Result<UrlRewrite, Problem> {
    let r = filter
        .url_rewrite
        .as_ref()
        .ok_or_else(|| missing(at, "urlRewrite"))?;
    let at = format!("{at}.urlRewrite");
    check_path_and_hostname(r.path.as_ref(), r.hostname.as_deref(), matches, &at)?;
    Ok(r.clone())
}

/// What redirects and rewrites share: a path modifier the rule's matches allow, and a hostname.
fn check_path_and_hostname(
    path: Option<&trellis_model::gateway::HttpPathModifier>,
    hostname: Option<&str>,
    matches: &[(MatchIr, Precedence)],
    at: &str,
) -> Result<(), Problem> {
    if let Some(p) = path {
        check_path_modifier(p, matches, &format!("{at}.path"))?;
    }
    if let Some(h) = hostname {
        hostname::validate(h).map_err(|e| Problem::unsupported(format!("{at}.hostname"), e))?;
    }
    Ok(())
}

/// A RequestMirror filter: the mirror and the cluster it sends copies to.
fn mirror(
    m: &trellis_model::gateway::RequestMirror,
    backends: &Backends<'_>,
    referrer: Referrer<'_>,
) -> Result<(MirrorIr, ClusterIr), Problem> {
    let b = &m.backend_ref;
    let target = BackendRef {
        group: &b.group,
        kind: &b.kind,
        name: &b.name,
        namespace: b.namespace.as_deref(),
        port: b.port,
    };
    let cluster = backends.resolve(referrer, target)?;
    let per_million = match (&m.fraction, m.percent) {
        (Some(f), _) if f.denominator > 0 => {
            ((f.numerator.max(0) as u64 * 1_000_000) / f.denominator as u64).min(1_000_000) as u32
        }
        (_, Some(p)) => (p.clamp(0, 100) as u32) * 10_000,
        _ => 1_000_000,
    };
    Ok((
        MirrorIr {
            cluster: cluster.name.clone(),
            per_million,
        },
        cluster,
    ))
}

/// A rule's request and backend-request timeouts.
type Timeouts = (Option<Duration>, Option<Duration>);

/// A rule's request and backend-request timeouts.
fn rule_timeouts(rule: &HttpRouteRule, at: &str) -> Result<Timeouts, Problem> {
    let Some(t) = &rule.timeouts else {
        return Ok((None, None));
    };
    Ok((
        t.request
            .as_deref()
            .map(|d| duration(d, &format!("{at}.timeouts.request")))
            .transpose()?,
        t.backend_request
            .as_deref()
            .map(|d| duration(d, &format!("{at}.timeouts.backendRequest")))
            .transpose()?,
    ))
}

/// A rule's retry policy.
fn rule_retry(rule: &HttpRouteRule, at: &str) -> Result<Option<RetryIr>, Problem> {
    let Some(r) = &rule.retry else {
        return Ok(None);
    };
    Ok(Some(RetryIr {
        codes: r
            .codes
            .iter()
            .filter_map(|c| u32::try_from(*c).ok())
            .collect(),
        attempts: r.attempts.map(|a| a.max(0) as u32).unwrap_or(1),
        backoff: r
            .backoff
            .as_deref()
            .map(|d| duration(d, &format!("{at}.retry.backoff")))
            .transpose()?,
    }))
}

/// A rule's weighted backends (with their filters); the clusters they resolve to are added to
/// `clusters`, and references that do not resolve to `ref_problems` (their share answers 500).
fn rule_backends(
    rule: &HttpRouteRule,
    at: &str,
    backends: &Backends<'_>,
    referrer: Referrer<'_>,
    clusters: &mut Vec<ClusterIr>,
    ref_problems: &mut Vec<Problem>,
) -> Result<Vec<BackendIr>, Problem> {
    let mut weighted = Vec::new();
    for (i, b) in rule.backend_refs.iter().enumerate() {
        let target = BackendRef {
            group: &b.group,
            kind: &b.kind,
            name: &b.name,
            namespace: b.namespace.as_deref(),
            port: b.port,
        };
        let resolved = backends.resolve(referrer, target);
        let mut backend_request = HeaderModIr::default();
        let mut backend_response = HeaderModIr::default();
        for (j, f) in b.filters.iter().enumerate() {
            let at = format!("{at}.backendRefs[{i}].filters[{j}]");
            match f.type_ {
                HttpRouteFilterType::RequestHeaderModifier => merge_headers(
                    &mut backend_request,
                    f.request_header_modifier.as_ref(),
                    &at,
                )?,
                HttpRouteFilterType::ResponseHeaderModifier => merge_headers(
                    &mut backend_response,
                    f.response_header_modifier.as_ref(),
                    &at,
                )?,
                other => {
                    return Err(Problem::not_accepted(
                        Reason::UnsupportedValue,
                        format!("{at}: filter type {other:?} is not supported on a backendRef"),
                    ));
                }
            }
        }
        let cluster = match resolved {
            Ok(c) => {
                let name = c.name.clone();
                clusters.push(c);
                Some(name)
            }
            Err(problem) => {
                ref_problems.push(problem);
                None
            }
        };
        if b.weight > MAX_WEIGHT {
            return Err(Problem::not_accepted(
                Reason::UnsupportedValue,
                format!(
                    "{at}.backendRefs[{i}].weight: {} is over {MAX_WEIGHT}",
                    b.weight
                ),
            ));
        }
        if b.weight <= 0 {
            continue;
        }
        weighted.push(BackendIr {
            cluster,
            weight: b.weight as u32,
            request_headers: backend_request,
            response_headers: backend_response,
        });
    }
    Ok(weighted)
}

fn missing(at: &str, field: &str) -> Problem {
    Problem::not_accepted(
        Reason::UnsupportedValue,
        format!("{at}: the filter's {field} field is missing"),
    )
}

fn check_path_modifier(
    modifier: &trellis_model::gateway::HttpPathModifier,
    matches: &[(MatchIr, Precedence)],
    at: &str,
) -> Result<(), Problem> {
    for text in [&modifier.replace_full_path, &modifier.replace_prefix_match]
        .into_iter()
        .flatten()
    {
        check_text(text, at, "path")?;
    }
    match modifier.type_ {
        PathModifierType::ReplaceFullPath if modifier.replace_full_path.is_none() => {
            Err(Problem::not_accepted(
                Reason::UnsupportedValue,
                format!("{at}: ReplaceFullPath needs replaceFullPath"),
            ))
        }
        PathModifierType::ReplacePrefixMatch => {
            if modifier.replace_prefix_match.is_none() {
                return Err(Problem::not_accepted(
                    Reason::UnsupportedValue,
                    format!("{at}: ReplacePrefixMatch needs replacePrefixMatch"),
                ));
            }
            if matches
                .iter()
                .any(|(m, _)| !matches!(m.path, PathMatchIr::Prefix(_)))
            {
                return Err(Problem::not_accepted(
                    Reason::UnsupportedValue,
                    format!(
                        "{at}: ReplacePrefixMatch needs every match of the rule to be a PathPrefix match"
                    ),
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Adds a header modifier's changes (header names compared case-insensitively).
fn merge_headers(
    into: &mut HeaderModIr,
    modifier: Option<&HeaderModifier>,
    at: &str,
) -> Result<(), Problem> {
    let m = modifier.ok_or_else(|| missing(at, "headerModifier"))?;
    for h in &m.set {
        check_header_name(&h.name, at)?;
        check_header_value(&h.value, &format!("{at}.set[{}]", h.name))?;
        into.set.push(HeaderIr {
            name: h.name.to_ascii_lowercase(),
            value: h.value.clone(),
        });
    }
    for h in &m.add {
        check_header_name(&h.name, at)?;
        check_header_value(&h.value, &format!("{at}.add[{}]", h.name))?;
        into.add.push(HeaderIr {
            name: h.name.to_ascii_lowercase(),
            value: h.value.clone(),
        });
    }
    for name in &m.remove {
        check_header_name(name, at)?;
        into.remove.push(name.to_ascii_lowercase());
    }
    Ok(())
}

/// The scheme a redirect names, if Trellis can redirect to it.
fn scheme(text: &str) -> Option<Scheme> {
    match text {
        "http" => Some(Scheme::Http),
        "https" => Some(Scheme::Https),
        _ => None,
    }
}

/// The largest backend weight (Gateway API's own bound; 16 of them cannot overflow Envoy's
/// 32-bit total).
const MAX_WEIGHT: i32 = 1_000_000;
