//! Names of the counters the policy filter keeps.
//!
//! Envoy shows a proxy-wasm counter named `N` as `wasmcustom.N` in `/stats` and as `N` in
//! `/stats/prometheus`. Envoy stat names are dot-separated, so each label is encoded as two
//! segments after the metric name:
//!
//! ```text
//! trellis_policy_denied_total.policy.<policy>.rule.<rule>
//! trellis_policy_rate_limited_total.limit.<limit>
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

/// The `stats_tags` entries (tag name, regex) that Envoy's bootstrap needs so the labels become
/// Prometheus labels. The control plane puts them under `stats_config.stats_tags`.
pub const STATS_TAGS: [(&str, &str); 3] = [
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
    fn the_stats_tags_extract_every_label_and_leave_the_metric_name() {
        let [policy, rule, limit] = STATS_TAGS;
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
        }
        for counter in LimitCounter::ALL {
            let name = format!("wasmcustom.{}", limit_counter(counter, "per-ip"));
            let (rest, value) = extract(limit.1, &name).unwrap();
            assert_eq!(value, "per-ip");
            assert_eq!(rest, format!("wasmcustom.{}", counter.base_name()));
            assert_eq!(extract(policy.1, &name), None);
            assert_eq!(extract(rule.1, &name), None);
        }
    }
}
