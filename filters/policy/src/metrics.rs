//! Names of the counters the policy filter keeps.
//!
//! Envoy shows a proxy-wasm counter named `N` as `wasmcustom.N` in `/stats` and as `N` in
//! `/stats/prometheus`. Envoy stat names are dot-separated, so each label is encoded as two
//! segments after the metric name:
//!
//! ```text
//! trellis_policy_denied_total.policy.<policy>.rule.<rule>
//! trellis_policy_rate_limited_total.limit.<limit>
//! trellis_slo_requests_total.route.<route>.class.<good|bad>     (telemetry)
//! trellis_inbound_requests_total.peer.<peer>                     (telemetry)
//! ```
//!
//! With the bootstrap `stats_tags` from [`STATS_TAGS`] (see `docs/filters.md`), Envoy turns
//! those segments into tags, and Prometheus sees `trellis_policy_denied_total{policy="...",
//! rule="..."}`. Without them the labels stay in the name (still unique, only less tidy).
//! A `.` inside a name would start a new segment, so it is written as `_`.

/// The per-policy counters, labelled with policy and rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyCounter {
    /// The policy allowed the request (`trellis_policy_allowed_total`).
    Allowed,
    /// The policy (enforcing) denied the request with a 403 (`trellis_policy_denied_total`).
    Denied,
    /// The policy (in audit mode) would have denied the request (`trellis_policy_audit_denied_total`).
    AuditDenied,
}

impl PolicyCounter {
    /// Every policy counter.
    pub const ALL: [PolicyCounter; 3] = [
        PolicyCounter::Allowed,
        PolicyCounter::Denied,
        PolicyCounter::AuditDenied,
    ];

    /// The metric name without labels.
    pub fn base_name(self) -> &'static str {
        match self {
            PolicyCounter::Allowed => "trellis_policy_allowed_total",
            PolicyCounter::Denied => "trellis_policy_denied_total",
            PolicyCounter::AuditDenied => "trellis_policy_audit_denied_total",
        }
    }
}

/// The per-limit counters, labelled with the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitCounter {
    /// Requests answered 429 (`trellis_policy_rate_limited_total`).
    RateLimited,
    /// Requests let through because the bucket could not be updated
    /// (`trellis_policy_rate_limit_errors_total`).
    Errors,
}

impl LimitCounter {
    /// Every limit counter.
    pub const ALL: [LimitCounter; 2] = [LimitCounter::RateLimited, LimitCounter::Errors];

    /// The metric name without labels.
    pub fn base_name(self) -> &'static str {
        match self {
            LimitCounter::RateLimited => "trellis_policy_rate_limited_total",
            LimitCounter::Errors => "trellis_policy_rate_limit_errors_total",
        }
    }
}

/// Requests classified against a latency objective, labelled with route and class
/// (telemetry `latency_objectives`).
pub const SLO_REQUESTS: &str = "trellis_slo_requests_total";
/// Requests by the caller's SPIFFE ID, labelled with peer (telemetry `peer_counters`).
pub const INBOUND_REQUESTS: &str = "trellis_inbound_requests_total";
/// The `route` label of the counters of an objective scoped to every route.
pub const ALL_ROUTES: &str = "(all)";
/// The `peer` label of requests without a peer certificate (or without a URI SAN in it).
pub const NO_PEER: &str = "none";
/// The `peer` label of requests from peers beyond `max_peers`.
pub const OTHER_PEERS: &str = "other";
/// The longest `peer` label; longer SPIFFE IDs are cut.
pub const MAX_PEER_LABEL: usize = 256;

/// How a request compared to its route's latency objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SloClass {
    /// It took at most the objective (`good`).
    Good,
    /// It took longer (`bad`).
    Bad,
}

impl SloClass {
    /// Both classes.
    pub const ALL: [SloClass; 2] = [SloClass::Good, SloClass::Bad];

    /// The `class` label.
    pub fn label(self) -> &'static str {
        match self {
            SloClass::Good => "good",
            SloClass::Bad => "bad",
        }
    }
}

/// The `stats_tags` entries (tag name, regex) that Envoy's bootstrap needs so the labels become
/// Prometheus labels. The control plane puts them under `stats_config.stats_tags`.
pub const STATS_TAGS: [(&str, &str); 6] = [
    (
        "policy",
        r"^wasmcustom\.trellis_policy_\w+?_total(\.policy\.([^.]+))\.rule\.[^.]+$",
    ),
    (
        "rule",
        r"^wasmcustom\.trellis_policy_\w+?_total\.policy\.[^.]+(\.rule\.([^.]+))$",
    ),
    (
        "limit",
        r"^wasmcustom\.trellis_policy_\w+?_total(\.limit\.([^.]+))$",
    ),
    (
        "route",
        r"^wasmcustom\.trellis_slo_requests_total(\.route\.([^.]+))\.class\.[^.]+$",
    ),
    (
        "class",
        r"^wasmcustom\.trellis_slo_requests_total\.route\.[^.]+(\.class\.([^.]+))$",
    ),
    (
        "peer",
        r"^wasmcustom\.trellis_inbound_requests_total(\.peer\.([^.]+))$",
    ),
];

/// `trellis_policy_<counter>_total.policy.<policy>.rule.<rule>`.
pub fn policy_counter(counter: PolicyCounter, policy: &str, rule: &str) -> String {
    format!(
        "{}.policy.{}.rule.{}",
        counter.base_name(),
        segment(policy),
        segment(rule)
    )
}

/// `trellis_policy_<counter>_total.limit.<limit>`.
pub fn limit_counter(counter: LimitCounter, limit: &str) -> String {
    format!("{}.limit.{}", counter.base_name(), segment(limit))
}

/// `trellis_slo_requests_total.route.<route>.class.<class>`; `route` is a route name from the
/// configuration, a route prefix, or [`ALL_ROUTES`].
pub fn slo_counter(route: &str, class: SloClass) -> String {
    format!(
        "{SLO_REQUESTS}.route.{}.class.{}",
        segment(route),
        class.label()
    )
}

/// `trellis_inbound_requests_total.peer.<peer>`; `peer` is a [`peer_label`], [`NO_PEER`] or
/// [`OTHER_PEERS`].
pub fn peer_counter(peer: &str) -> String {
    format!("{INBOUND_REQUESTS}.peer.{}", segment(peer))
}

/// A peer's SPIFFE ID as a label value: at most [`MAX_PEER_LABEL`] bytes, `.` written as `_`
/// like every label, and any byte other than ASCII letters, digits and `-_/:` also written as
/// `_` (the ID comes from a certificate: it may hold anything).
/// `spiffe://cluster.local/ns/shop/sa/web` → `spiffe://cluster_local/ns/shop/sa/web`.
pub fn peer_label(peer: &str) -> String {
    peer.bytes()
        .take(MAX_PEER_LABEL)
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/' | b':') {
                char::from(b)
            } else {
                '_'
            }
        })
        .collect()
}

fn segment(name: &str) -> String {
    name.replace('.', "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex_lite::Regex;

    /// What Envoy does with a stats_tags regex: the first group is cut from the name, the
    /// second is the tag value.
    fn extract(regex: &str, name: &str) -> Option<(String, String)> {
        let captures = Regex::new(regex).unwrap().captures(name)?;
        let cut = captures.get(1)?;
        let value = captures.get(2)?.as_str().to_string();
        let rest = format!("{}{}", &name[..cut.start()], &name[cut.end()..]);
        Some((rest, value))
    }

    #[test]
    fn names_put_labels_in_dot_segments() {
        assert_eq!(
            policy_counter(PolicyCounter::Denied, "default/deny-admin", "admin"),
            "trellis_policy_denied_total.policy.default/deny-admin.rule.admin"
        );
        assert_eq!(
            policy_counter(PolicyCounter::AuditDenied, "ns/a.b", "x.y"),
            "trellis_policy_audit_denied_total.policy.ns/a_b.rule.x_y"
        );
        assert_eq!(
            limit_counter(LimitCounter::RateLimited, "per-ip"),
            "trellis_policy_rate_limited_total.limit.per-ip"
        );
    }

    #[test]
    fn telemetry_names_put_labels_in_dot_segments() {
        assert_eq!(
            slo_counter("httproute/shop/web/rule/0/match/0", SloClass::Good),
            "trellis_slo_requests_total.route.httproute/shop/web/rule/0/match/0.class.good"
        );
        assert_eq!(
            slo_counter(ALL_ROUTES, SloClass::Bad),
            "trellis_slo_requests_total.route.(all).class.bad"
        );
        assert_eq!(
            peer_counter(&peer_label("spiffe://cluster.local/ns/shop/sa/web")),
            "trellis_inbound_requests_total.peer.spiffe://cluster_local/ns/shop/sa/web"
        );
        assert_eq!(peer_label("spiffe://td/a b\n\"é"), "spiffe://td/a_b____");
        assert_eq!(peer_label(&"x".repeat(1000)).len(), MAX_PEER_LABEL);
        assert_eq!(peer_label("é".repeat(200).as_str()).len(), MAX_PEER_LABEL);
    }

    #[test]
    fn the_telemetry_stats_tags_extract_route_class_and_peer() {
        let [policy, rule, limit, route, class, peer] = STATS_TAGS;
        for c in SloClass::ALL {
            let name = format!(
                "wasmcustom.{}",
                slo_counter("httproute/shop/web/rule/0/match/0", c)
            );
            // Envoy matches every extractor against the whole name and cuts all their first
            // groups.
            let (rest, value) = extract(route.1, &name).unwrap();
            assert_eq!(value, "httproute/shop/web/rule/0/match/0");
            assert_eq!(
                rest,
                format!("wasmcustom.trellis_slo_requests_total.class.{}", c.label())
            );
            let (rest, value) = extract(class.1, &name).unwrap();
            assert_eq!(value, c.label());
            assert_eq!(
                rest,
                "wasmcustom.trellis_slo_requests_total.route.httproute/shop/web/rule/0/match/0"
            );
            for other in [policy, rule, limit, peer] {
                assert_eq!(extract(other.1, &name), None, "{}", other.0);
            }
        }
        let name = format!(
            "wasmcustom.{}",
            peer_counter(&peer_label("spiffe://cluster.local/ns/a/sa/b"))
        );
        let (rest, value) = extract(peer.1, &name).unwrap();
        assert_eq!(value, "spiffe://cluster_local/ns/a/sa/b");
        assert_eq!(rest, "wasmcustom.trellis_inbound_requests_total");
        for other in [policy, rule, limit, route, class] {
            assert_eq!(extract(other.1, &name), None, "{}", other.0);
        }
    }

    #[test]
    fn the_stats_tags_extract_every_label_and_leave_the_metric_name() {
        let [policy, rule, limit, route, class, peer] = STATS_TAGS;
        for counter in PolicyCounter::ALL {
            let name = format!(
                "wasmcustom.{}",
                policy_counter(counter, "default/deny-admin", "(default)")
            );
            let (_, value) = extract(policy.1, &name).unwrap();
            assert_eq!(value, "default/deny-admin");
            let (_, value) = extract(rule.1, &name).unwrap();
            assert_eq!(value, "(default)");
            assert_eq!(extract(limit.1, &name), None);
            for other in [route, class, peer] {
                assert_eq!(extract(other.1, &name), None);
            }
        }
        for counter in LimitCounter::ALL {
            let name = format!("wasmcustom.{}", limit_counter(counter, "per-ip"));
            let (rest, value) = extract(limit.1, &name).unwrap();
            assert_eq!(value, "per-ip");
            assert_eq!(rest, format!("wasmcustom.{}", counter.base_name()));
            assert_eq!(extract(policy.1, &name), None);
            assert_eq!(extract(rule.1, &name), None);
            for other in [route, class, peer] {
                assert_eq!(extract(other.1, &name), None);
            }
        }
    }
}
