//! HTTPRoutes: attachment to Gateway listeners (parentRefs, allowedRoutes, hostnames) and route
//! status; the rules are translated in [`crate::rule`], their matches in [`crate::matches`].

use crate::StatusSet;
use crate::backend::{Backends, http_route_referrer};
use crate::conditions::{Problem, Reason};
use crate::gateway::{Contribution, GatewayState, ListenerState};
use crate::hostname;
use crate::ir::{ListenerProtocol, Scheme};
use crate::rule::{Rules, translate_rules};
use std::collections::BTreeMap;
use trellis_model::core::LabelSelector;
use trellis_model::gateway::{
    FromNamespaces, GROUP, HttpRoute, ParentReference, RouteParentStatus, RouteStatus,
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
        let rules = translate_rules(key, route, backends, http_route_referrer(&key.namespace));
        let mut parent_statuses = Vec::new();
        for parent in parents {
            let gateway_key = parent_key(key, parent);
            let Some(gateway) = gateways.get_mut(&gateway_key) else {
                continue;
            };
            let accepted = attach(input, key, route, parent, gateway, &rules);
            let conditions = rules.parent_conditions(&accepted, generation);
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
        let scheme = listener
            .protocol
            .map_or(Scheme::Http, ListenerProtocol::scheme);
        let entries = rules.entries_for(scheme, listener.spec.port);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A GatewayClass and a Gateway `ns/gw` with one HTTP listener, for routes to attach to.
    const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
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
---";

    /// The objects of a YAML stream, with creation times from `created` (document index in,
    /// time out) where given, else as written.
    fn input(yaml: &str, created: Option<fn(usize) -> i64>) -> InputSet {
        let mut input = InputSet::default();
        for doc in trellis_sources::parse_documents(yaml) {
            if let trellis_sources::ParsedDocument::Object {
                document, object, ..
            } = doc
            {
                let mut object = *object;
                if let Some(created) = created {
                    object.metadata_mut().creation_timestamp = Some(trellis_model::core::Time(
                        trellis_model::core::jiff::Timestamp::from_second(created(document))
                            .unwrap_or_default(),
                    ));
                }
                input.insert(object);
            }
        }
        input
    }

    /// The routes of the only virtual host of the only proxy, in the order Envoy tries them.
    fn order(input: &InputSet) -> Vec<String> {
        let t = crate::translate(input, &crate::Options::default());
        let proxy = t.ir.proxies.values().next().expect("a proxy");
        proxy.listeners[0].chains[0].virtual_hosts[0]
            .routes
            .iter()
            .map(|r| r.origin.route_name())
            .collect()
    }

    /// [`order`], with routes created in document order.
    fn route_order(yaml: &str) -> Vec<String> {
        order(&input(
            yaml,
            Some(|document| 1_700_000_000 + document as i64),
        ))
    }

    #[test]
    fn the_older_route_wins_a_tie_even_when_one_creation_time_has_fractional_seconds() {
        // As RFC 3339 text, "...:00.5Z" sorts before "...:00Z" although it is later.
        let yaml = &format!(
            "{GATEWAY}{}",
            r#"
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
"#
        );
        let order = order(&input(yaml, None));
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
        let yaml = &format!(
            "{GATEWAY}{}",
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: ns}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /cart}}]
  - matches: [{path: {type: RegularExpression, value: "/items/[0-9+"}}]
"#
        );
        assert_eq!(route_order(yaml), ["httproute/ns/shop/rule/0/match/0"]);
        let t = crate::translate(&input(yaml, None), &crate::Options::default());
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
        let yaml = &format!(
            "{GATEWAY}{}",
            r#"
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
"#
        );
        assert_eq!(
            route_order(yaml),
            [
                "httproute/ns/b/rule/0/match/0",
                "httproute/ns/a/rule/0/match/0"
            ]
        );
    }
}
