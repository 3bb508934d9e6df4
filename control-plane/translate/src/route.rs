//! HTTPRoutes: attachment to Gateway listeners (parentRefs, allowedRoutes, hostnames), rules
//! to route entries (matches, filters, backends), and route status.

use crate::StatusSet;
use crate::backend::{BackendRef, Backends, Referrer, http_route_referrer};
use crate::conditions::{ConditionType, Problem, Reason, condition};
use crate::gateway::{Contribution, Entry, GatewayState, ListenerState, Precedence};
use crate::hostname;
use crate::ir::{
    ActionIr, BackendIr, ClusterIr, CorsIr, ForwardIr, HeaderIr, HeaderModIr, ListenerProtocol,
    MatchIr, Method, MirrorIr, OriginIr, PathMatchIr, PathRewriteIr, RedirectIr, RetryIr,
    RewriteIr, RouteIr, RouteOrigin, Scheme, StringMatchIr, ValueMatchIr,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use trellis_model::core::{LabelSelector, jiff};
use trellis_model::gateway::{
    Cors, FromNamespaces, GROUP, HeaderModifier, HttpRoute, HttpRouteFilterType, HttpRouteMatch,
    HttpRouteRule, ParentReference, PathMatchType, PathModifierType, RequestRedirect,
    RouteParentStatus, RouteStatus, StringMatchType, UrlRewrite,
};
use trellis_model::{CONTROLLER_NAME, InputSet, ObjectKey};

/// Translates every HTTPRoute, attaching entries to listeners and writing route status.
pub(crate) fn http_routes(
    input: &InputSet,
    backends: &Backends<'_>,
    gateways: &mut BTreeMap<ObjectKey, GatewayState<'_>>,
    status: &mut StatusSet,
) {
    for (key, route) in &input.http_routes {
        let parents: Vec<&ParentReference> = route
            .spec
            .parent_refs
            .iter()
            .filter(|p| p.group == GROUP && p.kind == "Gateway")
            .filter(|p| gateways.contains_key(&parent_key(key, p)))
            .collect();
        if parents.is_empty() {
            continue;
        }
        let generation = route.metadata.generation;
        let rules = translate_rules(key, route, backends);
        let mut parent_statuses = Vec::new();
        for parent in parents {
            let gateway_key = parent_key(key, parent);
            let Some(gateway) = gateways.get_mut(&gateway_key) else {
                continue;
            };
            let accepted = attach(input, key, route, parent, gateway, &rules);
            let mut conditions = vec![match &accepted {
                Ok(()) => condition(
                    ConditionType::Accepted,
                    true,
                    Reason::Accepted,
                    "Route accepted",
                    generation,
                ),
                Err(p) => p.to_condition(generation),
            }];
            conditions.push(match rules.ref_problems.first() {
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
                conditions.extend(rules.partially_invalid(generation));
            }
            parent_statuses.push(RouteParentStatus {
                parent_ref: parent.clone(),
                controller_name: CONTROLLER_NAME.to_string(),
                conditions,
            });
        }
        status.http_routes.insert(
            key.clone(),
            RouteStatus {
                parents: parent_statuses,
            },
        );
    }
}

fn parent_key(route: &ObjectKey, parent: &ParentReference) -> ObjectKey {
    ObjectKey::new(
        parent
            .namespace
            .clone()
            .unwrap_or_else(|| route.namespace.clone()),
        parent.name.clone(),
    )
}

/// Attaches a route to the listeners its parentRef selects; returns why it was not accepted.
fn attach(
    input: &InputSet,
    key: &ObjectKey,
    route: &HttpRoute,
    parent: &ParentReference,
    gateway: &mut GatewayState<'_>,
    rules: &Rules,
) -> Result<(), Problem> {
    if let Some(problem) = rules.not_accepted() {
        return Err(problem);
    }
    let gateway_namespace = gateway.key.namespace.clone();
    let selected: Vec<usize> = gateway
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            parent
                .section_name
                .as_ref()
                .is_none_or(|s| *s == l.spec.name)
        })
        .filter(|(_, l)| parent.port.is_none_or(|p| p == l.spec.port))
        .map(|(i, _)| i)
        .collect();
    if selected.is_empty() {
        let what = match (&parent.section_name, parent.port) {
            (Some(s), Some(p)) => format!("no listener named {s} on port {p}"),
            (Some(s), None) => format!("no listener named {s}"),
            (None, Some(p)) => format!("no listener on port {p}"),
            (None, None) => "the Gateway has no listeners".to_string(),
        };
        return Err(Problem::not_accepted(
            Reason::NoMatchingParent,
            format!("Gateway {}: {what}", gateway.key),
        ));
    }
    let allowed: Vec<usize> = selected
        .into_iter()
        .filter(|i| {
            listener_allows(
                input,
                &gateway.listeners[*i],
                &gateway_namespace,
                &key.namespace,
            )
        })
        .collect();
    if allowed.is_empty() {
        return Err(Problem::not_accepted(
            Reason::NotAllowedByListeners,
            format!(
                "no selected listener of Gateway {} allows HTTPRoutes from namespace {}",
                gateway.key, key.namespace
            ),
        ));
    }
    let with_hosts: Vec<(usize, Vec<Option<String>>)> = allowed
        .iter()
        .map(|i| {
            let l = &gateway.listeners[*i];
            (
                *i,
                hostname::effective(l.spec.hostname.as_deref(), &route.spec.hostnames),
            )
        })
        .filter(|(_, hosts)| !hosts.is_empty())
        .collect();
    if with_hosts.is_empty() {
        return Err(Problem::not_accepted(
            Reason::NoMatchingListenerHostname,
            format!(
                "none of the route's hostnames match a hostname of the selected listeners of Gateway {}",
                gateway.key
            ),
        ));
    }
    // A route attaches to the listeners it is allowed on and shares a hostname with.
    for (i, hostnames) in with_hosts {
        gateway.listeners[i].attached_routes.insert(key.clone());
        let listener = &mut gateway.listeners[i];
        let entries = rules.entries_for(listener);
        listener
            .contributions
            .push(Contribution { hostnames, entries });
    }
    Ok(())
}

/// Whether a listener accepts HTTPRoutes from `route_namespace`.
fn listener_allows(
    input: &InputSet,
    listener: &ListenerState<'_>,
    gateway_namespace: &str,
    route_namespace: &str,
) -> bool {
    let kind_ok = listener
        .supported_kinds
        .iter()
        .any(|k| k.group == GROUP && k.kind == "HTTPRoute");
    if !kind_ok {
        return false;
    }
    let namespaces = listener
        .spec
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    match namespaces.and_then(|n| n.from).unwrap_or_default() {
        FromNamespaces::All => true,
        FromNamespaces::Same => gateway_namespace == route_namespace,
        FromNamespaces::None => false,
        FromNamespaces::Selector => {
            let selector = namespaces.and_then(|n| n.selector.as_ref());
            selector.is_some_and(|s| selector_matches(s, &input.namespace_labels(route_namespace)))
        }
    }
}

/// Whether a label selector matches a label set (matchLabels and matchExpressions ANDed).
pub(crate) fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// A route's rules, translated once and specialised per listener.
struct Rules {
    /// The valid rules, which are served.
    rules: Vec<RuleIr>,
    /// Invalid rules, dropped (Gateway API's GEP-1364): their index, reason and message. The
    /// route stays accepted while any rule is valid, with `PartiallyInvalid` saying which were
    /// dropped; with none valid, it is not accepted.
    dropped: Vec<(usize, Problem)>,
    /// References that did not resolve (the route is still accepted).
    ref_problems: Vec<Problem>,
}

impl Rules {
    /// Why the whole route is not accepted: every rule is invalid.
    fn not_accepted(&self) -> Option<Problem> {
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

    /// `PartiallyInvalid`: the rules dropped while others are served.
    fn partially_invalid(&self, generation: Option<i64>) -> Option<trellis_model::core::Condition> {
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

struct RuleIr {
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
    fn entries_for(&self, listener: &ListenerState<'_>) -> Vec<Entry> {
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
                        ActionIr::Redirect(redirect(r, &matcher.path, listener))
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
fn redirect(r: &RequestRedirect, path: &PathMatchIr, listener: &ListenerState<'_>) -> RedirectIr {
    let listener_scheme = listener
        .protocol
        .map_or(Scheme::Http, ListenerProtocol::scheme);
    let new_scheme = r.scheme.as_deref().and_then(scheme);
    let port = match (r.port, new_scheme) {
        (Some(p), _) => Some(p),
        (None, Some(_)) => None,
        (None, None) => Some(listener.spec.port),
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
fn translate_rules(key: &ObjectKey, route: &HttpRoute, backends: &Backends<'_>) -> Rules {
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
        match translate_rule(key, rule, rule_index, created, backends, &mut rule_refs) {
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
    key: &ObjectKey,
    rule: &HttpRouteRule,
    rule_index: usize,
    created: jiff::Timestamp,
    backends: &Backends<'_>,
    ref_problems: &mut Vec<Problem>,
) -> Result<RuleIr, Problem> {
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
    let referrer = http_route_referrer(&key.namespace);
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
    if let Some(p) = &r.path {
        check_path_modifier(p, matches, at)?;
    }
    if let Some(h) = &r.hostname {
        hostname::validate(h).map_err(|e| {
            Problem::not_accepted(
                Reason::UnsupportedValue,
                format!("{at}.requestRedirect.hostname: {e}"),
            )
        })?;
    }
    if let Some(s) = &r.scheme
        && scheme(s).is_none()
    {
        return Err(Problem::unsupported(
            format!("{at}.requestRedirect.scheme"),
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
    if let Some(p) = &r.path {
        check_path_modifier(p, matches, at)?;
    }
    if let Some(h) = &r.hostname {
        hostname::validate(h).map_err(|e| {
            Problem::not_accepted(
                Reason::UnsupportedValue,
                format!("{at}.urlRewrite.hostname: {e}"),
            )
        })?;
    }
    Ok(r.clone())
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

/// The method of a match.
fn method(m: trellis_model::gateway::HttpMethod) -> Method {
    use trellis_model::gateway::HttpMethod as M;
    match m {
        M::GET => Method::Get,
        M::HEAD => Method::Head,
        M::POST => Method::Post,
        M::PUT => Method::Put,
        M::DELETE => Method::Delete,
        M::CONNECT => Method::Connect,
        M::OPTIONS => Method::Options,
        M::TRACE => Method::Trace,
        M::PATCH => Method::Patch,
    }
}

/// Whether `name` is an HTTP token (RFC 9110), as Gateway API's header names are.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The largest backend weight (Gateway API's own bound; 16 of them cannot overflow Envoy's
/// 32-bit total).
const MAX_WEIGHT: i32 = 1_000_000;

fn check_header_name(name: &str, at: &str) -> Result<(), Problem> {
    let valid = is_token(name);
    let lower = name.to_ascii_lowercase();
    let reserved = lower == "host" || lower.starts_with(':');
    if !valid || reserved {
        return Err(Problem::not_accepted(
            Reason::UnsupportedValue,
            format!("{at}: {name:?} is not a header name a filter may change"),
        ));
    }
    Ok(())
}

/// A match in IR form, with its precedence (route-level fields filled by the caller).
fn translate_match(m: &HttpRouteMatch, at: &str) -> Result<(MatchIr, Precedence), Problem> {
    let value = &m.path.value;
    check_text(value, &format!("{at}.path.value"), "path")?;
    if !value.starts_with('/') && m.path.type_ != PathMatchType::RegularExpression {
        return Err(Problem::not_accepted(
            Reason::UnsupportedValue,
            format!("{at}.path.value: {value:?} must start with '/'"),
        ));
    }
    let (path, kind, len) = match m.path.type_ {
        PathMatchType::Exact => (PathMatchIr::Exact(value.clone()), 0, value.len()),
        PathMatchType::RegularExpression => {
            check_regex(value, &format!("{at}.path.value"))?;
            (PathMatchIr::Regex(value.clone()), 1, value.len())
        }
        PathMatchType::PathPrefix => {
            // A trailing '/' is ignored: "/foo/" matches like "/foo".
            let trimmed = value.trim_end_matches('/');
            let prefix = if trimmed.is_empty() { "/" } else { trimmed };
            (PathMatchIr::Prefix(prefix.to_string()), 2, prefix.len())
        }
    };
    // Only the first header match of a name counts.
    let mut seen = BTreeSet::new();
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        if !is_token(&h.name) {
            return Err(Problem::not_accepted(
                Reason::UnsupportedValue,
                format!("{at}.headers[{i}].name: {:?} is not a header name", h.name),
            ));
        }
        let name = h.name.to_ascii_lowercase();
        if !seen.insert(name.clone()) {
            continue;
        }
        headers.push(StringMatchIr {
            name,
            value: value_match(h.type_, &h.value, &format!("{at}.headers[{i}].value"))?,
        });
    }
    let mut seen = BTreeSet::new();
    let mut query_params = Vec::new();
    for (i, q) in m.query_params.iter().enumerate() {
        if q.name.is_empty() || q.name.len() > 256 || q.name.bytes().any(|b| b.is_ascii_control()) {
            return Err(Problem::not_accepted(
                Reason::UnsupportedValue,
                format!(
                    "{at}.queryParams[{i}].name: {:?} is not a query parameter name",
                    q.name
                ),
            ));
        }
        if !seen.insert(q.name.clone()) {
            continue;
        }
        query_params.push(StringMatchIr {
            name: q.name.clone(),
            value: value_match(q.type_, &q.value, &format!("{at}.queryParams[{i}].value"))?,
        });
    }
    let precedence = Precedence {
        path_kind: kind,
        path_len: -(len as i64),
        method: if m.method.is_some() { 0 } else { 1 },
        headers: -(headers.len() as i64),
        query_params: -(query_params.len() as i64),
        created: jiff::Timestamp::UNIX_EPOCH,
        route: ObjectKey::default(),
        rule: 0,
        match_index: 0,
    };
    Ok((
        MatchIr {
            path,
            headers,
            query_params,
            method: m.method.map(method),
        },
        precedence,
    ))
}

fn value_match(t: StringMatchType, value: &str, at: &str) -> Result<ValueMatchIr, Problem> {
    check_text(value, at, "value")?;
    Ok(match t {
        StringMatchType::Exact => ValueMatchIr::Exact(value.to_string()),
        StringMatchType::RegularExpression => {
            check_regex(value, at)?;
            ValueMatchIr::Regex(value.to_string())
        }
    })
}

/// Rejects expressions Envoy's RE2 would reject (or read differently), so a bad regex is a
/// route condition instead of a NACKed configuration ([`crate::re2`]).
fn check_regex(expression: &str, at: &str) -> Result<(), Problem> {
    crate::re2::check(expression).map_err(|reason| {
        Problem::not_accepted(
            Reason::UnsupportedValue,
            format!("{at}: {expression:?}: {reason}"),
        )
    })
}

/// Rejects a header value Envoy would reject: NUL, CR or LF, or longer than 16 KiB.
fn check_header_value(value: &str, at: &str) -> Result<(), Problem> {
    check_text(value, at, "header value")
}

/// Rejects text Envoy's header-value rules refuse (header values, redirect and rewrite
/// hostnames and paths): NUL, CR or LF, or longer than 16 KiB.
fn check_text(value: &str, at: &str, what: &str) -> Result<(), Problem> {
    if value.len() > MAX_HEADER_VALUE {
        return Err(Problem::not_accepted(
            Reason::UnsupportedValue,
            format!(
                "{at}: a {what} of {} bytes is longer than {MAX_HEADER_VALUE}",
                value.len()
            ),
        ));
    }
    if value.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err(Problem::not_accepted(
            Reason::UnsupportedValue,
            format!("{at}: a {what} may not contain NUL, CR or LF"),
        ));
    }
    Ok(())
}

/// The longest header value (and redirect or rewrite text) accepted: Envoy's limit.
const MAX_HEADER_VALUE: usize = 16 * 1024;

/// Parses a Gateway API duration (`1h30m`, `10s`, `500ms`, `0s`).
pub(crate) fn duration(text: &str, at: &str) -> Result<Duration, Problem> {
    let bad = || {
        Problem::not_accepted(
            Reason::UnsupportedValue,
            format!("{at}: {text:?} is not a duration like 10s, 500ms or 1h30m"),
        )
    };
    let mut total: u64 = 0;
    let mut rest = text;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += n * unit;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(Duration::from_millis(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The routes of the only virtual host of the only proxy, in the order Envoy tries them.
    fn route_order(yaml: &str) -> Vec<String> {
        let mut input = trellis_model::InputSet::default();
        for doc in trellis_sources::parse_documents(yaml) {
            if let trellis_sources::ParsedDocument::Object {
                document, object, ..
            } = doc
            {
                let mut object = *object;
                object.metadata_mut().creation_timestamp = Some(trellis_model::core::Time(
                    jiff::Timestamp::from_second(1_700_000_000 + document as i64)
                        .unwrap_or_default(),
                ));
                input.insert(object);
            }
        }
        let t = crate::translate(&input, &crate::Options::default());
        let proxy = t.ir.proxies.values().next().expect("a proxy");
        proxy.listeners[0].chains[0].virtual_hosts[0]
            .routes
            .iter()
            .map(|r| r.origin.route_name())
            .collect()
    }

    #[test]
    fn the_older_route_wins_a_tie_even_when_one_creation_time_has_fractional_seconds() {
        // As RFC 3339 text, "...:00.5Z" sorts before "...:00Z" although it is later.
        let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: trellis}
spec: {controllerName: trellis.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns}
spec:
  gatewayClassName: trellis
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: newer, namespace: ns, creationTimestamp: "2026-01-01T00:00:00.5Z"}
spec:
  parentRefs: [{name: gw}]
  rules: [{matches: [{path: {type: PathPrefix, value: /api}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: older, namespace: ns, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw}]
  rules: [{matches: [{path: {type: PathPrefix, value: /api}}]}]
"#;
        let mut input = trellis_model::InputSet::default();
        for doc in trellis_sources::parse_documents(yaml) {
            if let trellis_sources::ParsedDocument::Object { object, .. } = doc {
                input.insert(*object);
            }
        }
        let t = crate::translate(&input, &crate::Options::default());
        let proxy = t.ir.proxies.values().next().expect("a proxy");
        let order: Vec<String> = proxy.listeners[0].chains[0].virtual_hosts[0]
            .routes
            .iter()
            .map(|r| r.origin.route_name())
            .collect();
        assert_eq!(
            order,
            [
                "httproute/ns/older/rule/0/match/0",
                "httproute/ns/newer/rule/0/match/0"
            ]
        );
    }

    #[test]
    fn one_bad_regex_drops_its_rule_and_the_rest_of_the_route_keeps_serving() {
        let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: trellis}
spec: {controllerName: trellis.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns}
spec:
  gatewayClassName: trellis
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: ns}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /cart}}]
  - matches: [{path: {type: RegularExpression, value: "/items/[0-9+"}}]
"#;
        assert_eq!(route_order(yaml), ["httproute/ns/shop/rule/0/match/0"]);
        let mut input = trellis_model::InputSet::default();
        for doc in trellis_sources::parse_documents(yaml) {
            if let trellis_sources::ParsedDocument::Object { object, .. } = doc {
                input.insert(*object);
            }
        }
        let t = crate::translate(&input, &crate::Options::default());
        let conditions = &t.status.http_routes[&ObjectKey::new("ns", "shop")].parents[0].conditions;
        let find = |t: &str| conditions.iter().find(|c| c.type_ == t).cloned();
        assert_eq!(find("Accepted").map(|c| c.status), Some("True".to_string()));
        let partial = find("PartiallyInvalid").expect("PartiallyInvalid");
        assert_eq!(partial.status, "True");
        assert_eq!(partial.reason, "UnsupportedValue");
        assert!(
            partial.message.starts_with("Dropped Rule(s) 1: "),
            "{}",
            partial.message
        );
    }

    #[test]
    fn cors_does_not_change_which_route_wins() {
        // Route A (older) has CORS; route B, on the same path, also matches a header. B has the
        // more specific match and wins for every request carrying the header, whatever its
        // origin, and CORS adds no entries that could come before it.
        let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: trellis}
spec: {controllerName: trellis.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns}
spec:
  gatewayClassName: trellis
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a, namespace: ns}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters: [{type: CORS, cors: {allowOrigins: ["https://app.example.com"], allowMethods: [GET]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b, namespace: ns}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-env, value: prod}]}]
"#;
        assert_eq!(
            route_order(yaml),
            [
                "httproute/ns/b/rule/0/match/0",
                "httproute/ns/a/rule/0/match/0"
            ]
        );
    }

    #[test]
    fn durations_parse_like_gateway_api() {
        assert_eq!(duration("10s", "t"), Ok(Duration::from_millis(10_000)));
        assert_eq!(duration("500ms", "t"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("1h30m", "t"), Ok(Duration::from_millis(5_400_000)));
        assert_eq!(duration("0s", "t"), Ok(Duration::from_millis(0)));
        assert!(duration("1.5s", "t").is_err());
        assert!(duration("", "t").is_err());
        assert!(duration("10", "t").is_err());
        assert!(duration("1d", "t").is_err());
    }
}
