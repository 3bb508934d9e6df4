//! Route configurations: virtual hosts per hostname, routes with their matches, actions,
//! header changes, CORS policies and per-route filter switches; encoded in a stable order.

use super::*;
use crate::ir::{
    ActionIr, BackendIr, CorsIr, FilterChainIr, ForwardIr, HeaderIr, HeaderModIr, MatchIr,
    OriginIr, PathMatchIr, PathRewriteIr, ProxyIr, RedirectIr, RouteIr, ValueMatchIr,
};
use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, data_source, header_value_option,
};
use envoy_types::pb::envoy::config::route::v3::FilterConfig;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, header_matcher,
    query_parameter_matcher, redirect_action, retry_policy, route, route_action, route_match,
    weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;
use std::collections::HashMap;
use trellis_xds::{Dependency, ResourceType};

/// `typed_per_filter_config` enabling filters that are off by default in the chain.
pub(super) fn enable_filters(names: &[String]) -> HashMap<String, Any> {
    names
        .iter()
        .map(|name| {
            (
                name.clone(),
                // An empty `config` (present, no type) enables the filter with its chain-level
                // configuration; an absent one is an error for Envoy.
                pack_any(FilterConfig {
                    config: Some(Any::default()),
                    disabled: false,
                    ..Default::default()
                }),
            )
        })
        .collect()
}

/// Clusters (and endpoints) a chain's routes send traffic to.
pub(super) fn route_dependencies(chain: &FilterChainIr, proxy: &ProxyIr) -> Vec<Dependency> {
    let mut deps = Vec::new();
    for vh in &chain.virtual_hosts {
        for r in &vh.routes {
            if let ActionIr::Forward(f) = &r.action {
                let names = f
                    .backends
                    .iter()
                    .filter_map(|b| b.cluster.as_ref())
                    .chain(f.mirrors.iter().map(|m| &m.cluster));
                for name in names {
                    if proxy.clusters.contains_key(name) {
                        for resource_type in [ResourceType::Cluster, ResourceType::Endpoint] {
                            deps.push(Dependency {
                                resource_type,
                                name: name.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    deps
}

/// The route configuration of a filter chain.
pub fn route_configuration(chain: &FilterChainIr) -> RouteConfiguration {
    RouteConfiguration {
        name: chain.route_config.clone(),
        virtual_hosts: chain
            .virtual_hosts
            .iter()
            .map(|vh| VirtualHost {
                name: vh.domain.clone(),
                domains: vec![vh.domain.clone()],
                routes: vh.routes.iter().map(route).collect(),
                typed_per_filter_config: enable_filters(&vh.enabled_filters),
                ..Default::default()
            })
            .collect(),
        // Routes may name clusters that do not exist (unresolved backends answer 500).
        validate_clusters: Some(envoy_types::pb::google::protobuf::BoolValue { value: false }),
        // Match virtual hosts on the host without its port, but forward the Host as sent.
        ignore_port_in_host_matching: true,
        ..Default::default()
    }
}

/// A route configuration encoded with its `typed_per_filter_config` maps in key order: prost
/// writes a map in its hash map's order, which differs between runs, and the resource's version
/// is a hash of the bytes (an unchanged configuration must keep its version, or every proxy
/// would be sent it again after each translation). A parser reads a message's fields in any
/// order, so the maps are appended after the rest.
pub fn canonical_route_configuration(rc: &RouteConfiguration) -> Vec<u8> {
    use prost::Message;
    use prost::encoding::{WireType, encode_key, encode_varint};
    fn map_entries(tag: u32, map: &HashMap<String, Any>, buf: &mut Vec<u8>) {
        let mut entries: Vec<_> = map.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        for (key, value) in entries {
            let mut entry = Vec::new();
            prost::encoding::string::encode(1, key, &mut entry);
            prost::encoding::message::encode(2, value, &mut entry);
            encode_key(tag, WireType::LengthDelimited, buf);
            encode_varint(entry.len() as u64, buf);
            buf.extend_from_slice(&entry);
        }
    }
    fn nested(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(bytes.len() as u64, buf);
        buf.extend_from_slice(bytes);
    }
    // RouteConfiguration.virtual_hosts = 2; VirtualHost.routes = 3 and its map = 15;
    // Route's map = 13.
    let mut top = rc.clone();
    let hosts = std::mem::take(&mut top.virtual_hosts);
    let mut buf = top.encode_to_vec();
    for mut vh in hosts {
        let routes = std::mem::take(&mut vh.routes);
        let vh_map = std::mem::take(&mut vh.typed_per_filter_config);
        let mut vh_buf = vh.encode_to_vec();
        for mut r in routes {
            let r_map = std::mem::take(&mut r.typed_per_filter_config);
            let mut r_buf = r.encode_to_vec();
            map_entries(13, &r_map, &mut r_buf);
            nested(3, &r_buf, &mut vh_buf);
        }
        map_entries(15, &vh_map, &mut vh_buf);
        nested(2, &vh_buf, &mut buf);
    }
    buf
}

pub(super) fn string_matcher(v: &ValueMatchIr) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(match v {
            ValueMatchIr::Exact(s) => string_matcher::MatchPattern::Exact(s.clone()),
            ValueMatchIr::Regex(r) => string_matcher::MatchPattern::SafeRegex(regex(r)),
        }),
        ..Default::default()
    }
}

pub(super) fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.to_string(),
        ..Default::default()
    }
}

pub(super) fn route_match(m: &MatchIr) -> RouteMatch {
    let path = match &m.path {
        PathMatchIr::Exact(p) => route_match::PathSpecifier::Path(p.clone()),
        PathMatchIr::Prefix(p) if p == "/" => route_match::PathSpecifier::Prefix("/".to_string()),
        PathMatchIr::Prefix(p) => route_match::PathSpecifier::PathSeparatedPrefix(p.clone()),
        PathMatchIr::Regex(r) => route_match::PathSpecifier::SafeRegex(regex(r)),
    };
    let mut headers: Vec<HeaderMatcher> = m
        .headers
        .iter()
        .map(|h| HeaderMatcher {
            name: h.name.clone(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                string_matcher(&h.value),
            )),
            ..Default::default()
        })
        .collect();
    if let Some(method) = &m.method {
        headers.push(HeaderMatcher {
            name: ":method".to_string(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                string_matcher(&ValueMatchIr::Exact(method.as_str().to_string())),
            )),
            ..Default::default()
        });
    }
    RouteMatch {
        path_specifier: Some(path),
        headers,
        query_parameters: m
            .query_params
            .iter()
            .map(|q| QueryParameterMatcher {
                name: q.name.clone(),
                query_parameter_match_specifier: Some(
                    query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                        string_matcher(&q.value),
                    ),
                ),
            })
            .collect(),
        ..Default::default()
    }
}

pub(super) fn header_options(m: &HeaderModIr) -> Vec<HeaderValueOption> {
    let option = |h: &HeaderIr, action| HeaderValueOption {
        header: Some(HeaderValue {
            key: h.name.clone(),
            value: formatter_literal(&h.value),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    };
    m.set
        .iter()
        .map(|h| {
            option(
                h,
                header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd,
            )
        })
        .chain(m.add.iter().map(|h| {
            option(
                h,
                header_value_option::HeaderAppendAction::AppendIfExistsOrAdd,
            )
        }))
        .collect()
}

/// A literal header value as Envoy's header formatter reads values: `%` starts a command
/// (`%REQ(...)%`), so a literal one is written `%%`.
fn formatter_literal(value: &str) -> String {
    value.replace('%', "%%")
}

pub(super) fn route(r: &RouteIr) -> Route {
    let action = match &r.action {
        ActionIr::Forward(f) => route::Action::Route(route_action(f)),
        ActionIr::Redirect(redirect) => route::Action::Redirect(redirect_action(redirect)),
        ActionIr::Respond { status, body } => route::Action::DirectResponse(DirectResponseAction {
            status: u32::from(*status),
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(body.clone())),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    Route {
        name: r.origin.route_name(),
        r#match: Some(route_match(&r.matcher)),
        action: Some(action),
        request_headers_to_add: header_options(&r.request_headers),
        request_headers_to_remove: r.request_headers.remove.clone(),
        response_headers_to_add: header_options(&r.response_headers),
        response_headers_to_remove: r.response_headers.remove.clone(),
        typed_per_filter_config: {
            let mut configs = enable_filters(&r.enabled_filters);
            if let Some(cors) = &r.cors {
                configs.insert(CORS_FILTER.to_string(), pack_any(cors_policy(cors)));
            }
            if let Some(fault) = &r.fault {
                configs.insert(
                    super::resilience::FAULT_FILTER.to_string(),
                    pack_any(super::resilience::http_fault(fault)),
                );
            }
            configs
        },
        tracing: r.tracing.as_ref().map(super::tracing::route_tracing),
        ..Default::default()
    }
}

/// Envoy's CORS filter, in a chain whose routes have CORS policies.
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// A route's CORS policy for Envoy's CORS filter. Origins outside it get no CORS headers; their
/// preflights are answered by Envoy (without them) rather than passed to the backend.
pub(super) fn cors_policy(c: &CorsIr) -> CorsPolicy {
    let origins = c
        .allow_origins
        .iter()
        .map(|o| StringMatcher {
            match_pattern: Some(match o {
                OriginIr::Any => string_matcher::MatchPattern::SafeRegex(regex(".*")),
                OriginIr::Exact(origin) => string_matcher::MatchPattern::Exact(origin.clone()),
                OriginIr::Wildcard(pattern) => string_matcher::MatchPattern::SafeRegex(regex(
                    &regex::escape(pattern).replace("\\*", ".*"),
                )),
            }),
            ..Default::default()
        })
        .collect();
    CorsPolicy {
        allow_origin_string_match: origins,
        allow_methods: c.allow_methods.join(", "),
        allow_headers: c.allow_headers.join(", "),
        expose_headers: c.expose_headers.join(", "),
        max_age: c.max_age.as_secs().to_string(),
        allow_credentials: c
            .allow_credentials
            .then_some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
        forward_not_matching_preflights: Some(envoy_types::pb::google::protobuf::BoolValue {
            value: false,
        }),
        ..Default::default()
    }
}

pub(super) fn cluster_weight(b: &BackendIr) -> weighted_cluster::ClusterWeight {
    weighted_cluster::ClusterWeight {
        name: b
            .cluster
            .clone()
            .unwrap_or_else(|| INVALID_BACKEND_CLUSTER.to_string()),
        weight: Some(UInt32Value { value: b.weight }),
        request_headers_to_add: header_options(&b.request_headers),
        request_headers_to_remove: b.request_headers.remove.clone(),
        response_headers_to_add: header_options(&b.response_headers),
        response_headers_to_remove: b.response_headers.remove.clone(),
        ..Default::default()
    }
}

pub(super) fn route_action(f: &ForwardIr) -> RouteAction {
    let single = f.backends.len() == 1
        && f.backends[0].request_headers.is_empty()
        && f.backends[0].response_headers.is_empty();
    let cluster_specifier = if single {
        route_action::ClusterSpecifier::Cluster(
            f.backends[0]
                .cluster
                .clone()
                .unwrap_or_else(|| INVALID_BACKEND_CLUSTER.to_string()),
        )
    } else {
        route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: f.backends.iter().map(cluster_weight).collect(),
            ..Default::default()
        })
    };
    let mut action = RouteAction {
        cluster_specifier: Some(cluster_specifier),
        cluster_not_found_response_code:
            route_action::ClusterNotFoundResponseCode::InternalServerError as i32,
        timeout: f.timeout.map(duration),
        request_mirror_policies: f
            .mirrors
            .iter()
            .map(|m| route_action::RequestMirrorPolicy {
                cluster: m.cluster.clone(),
                runtime_fraction: (m.per_million < 1_000_000).then(|| RuntimeFractionalPercent {
                    default_value: Some(FractionalPercent {
                        numerator: m.per_million,
                        denominator: fractional_percent::DenominatorType::Million as i32,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    if let Some(rewrite) = &f.rewrite {
        if let Some(host) = &rewrite.hostname {
            action.host_rewrite_specifier = Some(
                route_action::HostRewriteSpecifier::HostRewriteLiteral(host.clone()),
            );
        }
        match &rewrite.path {
            Some(PathRewriteIr::Full(path)) => {
                action.regex_rewrite = Some(RegexMatchAndSubstitute {
                    pattern: Some(regex("^/.*$")),
                    substitution: path.clone(),
                });
            }
            Some(PathRewriteIr::Prefix {
                matched,
                replacement,
            }) => apply_prefix_rewrite(
                matched,
                replacement,
                &mut action.prefix_rewrite,
                &mut action.regex_rewrite,
            ),
            None => {}
        }
    }
    let backend_timeout = f.backend_timeout.map(duration);
    if let Some(retry) = &f.retry {
        action.retry_policy = Some(RetryPolicy {
            retry_on: "connect-failure,refused-stream,reset,retriable-status-codes".to_string(),
            retriable_status_codes: retry.codes.clone(),
            num_retries: Some(UInt32Value {
                value: retry.attempts,
            }),
            per_try_timeout: backend_timeout,
            retry_back_off: retry.backoff.map(|b| retry_policy::RetryBackOff {
                base_interval: Some(duration(b.max(std::time::Duration::from_millis(1)))),
                ..Default::default()
            }),
            ..Default::default()
        });
    } else if let Some(t) = backend_timeout {
        action.retry_policy = Some(RetryPolicy {
            num_retries: Some(UInt32Value { value: 0 }),
            per_try_timeout: Some(t),
            ..Default::default()
        });
    }
    action
}

/// Replaces a matched path prefix per Gateway API: `/foo` -> `/xyz` turns `/foo/bar` into
/// `/xyz/bar` and `/foo` into `/xyz`; an empty or `/` replacement turns `/foo/bar` into `/bar`
/// and `/foo` into `/`.
pub(super) fn apply_prefix_rewrite(
    matched: &str,
    replacement: &str,
    prefix_rewrite: &mut String,
    regex_rewrite: &mut Option<RegexMatchAndSubstitute>,
) {
    let replacement = replacement.trim_end_matches('/');
    if matched == "/" {
        *regex_rewrite = Some(RegexMatchAndSubstitute {
            pattern: Some(regex("^/")),
            substitution: format!("{replacement}/"),
        });
    } else if replacement.is_empty() {
        *regex_rewrite = Some(RegexMatchAndSubstitute {
            pattern: Some(regex(&format!("^{}/*", regex_escape(matched)))),
            substitution: "/".to_string(),
        });
    } else {
        *prefix_rewrite = replacement.to_string();
    }
}

pub(super) fn regex_escape(s: &str) -> String {
    regex::escape(s)
}

pub(super) fn redirect_action(r: &RedirectIr) -> RedirectAction {
    let response_code = match r.status {
        301 => redirect_action::RedirectResponseCode::MovedPermanently,
        303 => redirect_action::RedirectResponseCode::SeeOther,
        307 => redirect_action::RedirectResponseCode::TemporaryRedirect,
        308 => redirect_action::RedirectResponseCode::PermanentRedirect,
        _ => redirect_action::RedirectResponseCode::Found,
    };
    let mut action = RedirectAction {
        host_redirect: r.hostname.clone().unwrap_or_default(),
        port_redirect: r.port.map(u32::from).unwrap_or_default(),
        response_code: response_code as i32,
        scheme_rewrite_specifier: r
            .scheme
            .as_ref()
            .map(|s| redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s.as_str().into())),
        ..Default::default()
    };
    match &r.path {
        Some(PathRewriteIr::Full(path)) => {
            action.path_rewrite_specifier = Some(
                redirect_action::PathRewriteSpecifier::PathRedirect(path.clone()),
            );
        }
        Some(PathRewriteIr::Prefix {
            matched,
            replacement,
        }) => {
            let mut prefix = String::new();
            let mut regex_rewrite = None;
            apply_prefix_rewrite(matched, replacement, &mut prefix, &mut regex_rewrite);
            action.path_rewrite_specifier = Some(match regex_rewrite {
                Some(r) => redirect_action::PathRewriteSpecifier::RegexRewrite(r),
                None => redirect_action::PathRewriteSpecifier::PrefixRewrite(prefix),
            });
        }
        None => {}
    }
    action
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn with_maps() -> RouteConfiguration {
        let configs = |n: usize| -> HashMap<String, Any> {
            (0..n)
                .map(|i| (format!("filter-{i}"), pack_any(FilterConfig::default())))
                .collect()
        };
        RouteConfiguration {
            name: "rc".into(),
            virtual_hosts: (0..3)
                .map(|v| VirtualHost {
                    name: format!("vh-{v}"),
                    domains: vec!["*".into()],
                    routes: (0..4)
                        .map(|r| Route {
                            name: format!("r-{r}"),
                            typed_per_filter_config: configs(6),
                            ..Default::default()
                        })
                        .collect(),
                    typed_per_filter_config: configs(5),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn route_configurations_encode_the_same_bytes_every_time_and_decode_to_themselves() {
        // Each HashMap has its own iteration order: prost's encoding differs between two
        // equal configurations, the canonical one does not.
        let first = canonical_route_configuration(&with_maps());
        for _ in 0..20 {
            assert_eq!(canonical_route_configuration(&with_maps()), first);
        }
        assert_eq!(
            RouteConfiguration::decode(first.as_slice()).ok(),
            Some(with_maps())
        );
    }
}
