//! Gateway API hostnames: validation, wildcard matching, listener/route intersection and
//! specificity.
//!
//! A hostname is either exact (`foo.example.com`) or a wildcard (`*.example.com`), which
//! matches any name with at least one more label (`a.example.com`, `a.b.example.com`) but not
//! `example.com` itself. This is also how Envoy matches `*.` virtual host domains.

use std::cmp::Ordering;

/// Why a hostname is not valid.
pub fn validate(hostname: &str) -> Result<(), String> {
    let name = hostname.strip_prefix("*.").unwrap_or(hostname);
    if hostname.is_empty() {
        return Err("hostname is empty".into());
    }
    if hostname.len() > 253 {
        return Err("hostname is longer than 253 characters".into());
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("{hostname:?} is an IP address, not a hostname"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{hostname:?} is not a valid hostname: labels are lower-case letters, digits and \
                 '-', 1 to 63 characters, and only a leading \"*.\" wildcard is allowed"
            ));
        }
    }
    Ok(())
}

/// Whether `pattern` (exact or `*.` wildcard) matches the exact `host`.
pub fn matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern == host,
    }
}

/// Whether every name `inner` matches is also matched by `outer` (both exact or wildcard).
pub fn covers(outer: &str, inner: &str) -> bool {
    match (outer.strip_prefix('*'), inner.strip_prefix('*')) {
        (Some(_), None) | (None, None) => matches(outer, inner),
        (Some(o), Some(i)) => i.ends_with(o),
        (None, Some(_)) => false,
    }
}

/// The names a route hostname and a listener hostname have in common, as one hostname, or
/// `None` when they share nothing. `None` for the listener means "any host".
pub fn intersect(listener: Option<&str>, route: &str) -> Option<String> {
    let Some(listener) = listener else {
        return Some(route.to_string());
    };
    if covers(listener, route) {
        Some(route.to_string())
    } else if covers(route, listener) {
        Some(listener.to_string())
    } else {
        None
    }
}

/// The hostnames a route serves on a listener: the intersections of its hostnames with the
/// listener's, or the listener's own (`None` = any host) when the route names none. An empty
/// result means the route's hostnames and the listener's do not meet.
pub fn effective(listener: Option<&str>, route_hostnames: &[String]) -> Vec<Option<String>> {
    if route_hostnames.is_empty() {
        return vec![listener.map(str::to_string)];
    }
    let mut out: Vec<Option<String>> = route_hostnames
        .iter()
        .filter_map(|r| intersect(listener, r))
        .map(Some)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The hostnames that cover `host` (without `host` itself), most specific first: the
/// wildcards of each of its parent domains, then "any host" (`None`). For `a.b.c`: `*.b.c`,
/// `*.c`, any; for `*.b.c`: `*.c`, any; for any: nothing.
pub fn covering(host: Option<&str>) -> Vec<Option<String>> {
    let Some(host) = host else {
        return Vec::new();
    };
    let labels: Vec<&str> = host.strip_prefix("*.").unwrap_or(host).split('.').collect();
    let mut out: Vec<Option<String>> = (1..labels.len())
        .map(|i| Some(format!("*.{}", labels[i..].join("."))))
        .collect();
    out.push(None);
    out
}

/// Orders hostnames from most to least specific: exact names first (longer first), then
/// wildcards (longer suffix first), then "any host" (`None`).
pub fn specificity(a: Option<&str>, b: Option<&str>) -> Ordering {
    fn rank(h: Option<&str>) -> (u8, isize) {
        match h {
            None => (2, 0),
            Some(h) if h.starts_with('*') => (1, -(h.len() as isize)),
            Some(h) => (0, -(h.len() as isize)),
        }
    }
    rank(a).cmp(&rank(b)).then_with(|| a.cmp(&b))
}

/// Whether `name` is a lower-case DNS name (RFC 1123 labels, no wildcard): what a proxy can
/// resolve or send as SNI.
pub(crate) fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wildcard_matches_one_or_more_extra_labels_but_not_the_bare_suffix() {
        assert!(matches("*.example.com", "a.example.com"));
        assert!(matches("*.example.com", "a.b.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(!matches("*.example.com", "aexample.com"));
        assert!(matches("foo.com", "foo.com"));
        assert!(!matches("foo.com", "bar.foo.com"));
    }

    #[test]
    fn intersection_keeps_the_more_specific_side() {
        assert_eq!(
            intersect(Some("*.example.com"), "foo.example.com").as_deref(),
            Some("foo.example.com")
        );
        assert_eq!(
            intersect(Some("foo.example.com"), "*.example.com").as_deref(),
            Some("foo.example.com")
        );
        assert_eq!(
            intersect(Some("*.example.com"), "*.foo.example.com").as_deref(),
            Some("*.foo.example.com")
        );
        assert_eq!(
            intersect(Some("*.foo.example.com"), "*.example.com").as_deref(),
            Some("*.foo.example.com")
        );
        assert_eq!(intersect(Some("*.example.com"), "example.com"), None);
        assert_eq!(intersect(Some("foo.com"), "bar.com"), None);
        assert_eq!(intersect(None, "bar.com").as_deref(), Some("bar.com"));
    }

    #[test]
    fn route_without_hostnames_takes_the_listeners() {
        assert_eq!(
            effective(Some("a.com"), &[]),
            vec![Some("a.com".to_string())]
        );
        assert_eq!(effective(None, &[]), vec![None]);
        assert!(effective(Some("a.com"), &["b.com".to_string()]).is_empty());
    }

    #[test]
    fn validation_rejects_what_the_api_server_would() {
        assert!(validate("foo.example.com").is_ok());
        assert!(validate("*.example.com").is_ok());
        assert!(validate("Foo.com").is_err());
        assert!(validate("foo..com").is_err());
        assert!(validate("a.*.com").is_err());
        assert!(validate("10.0.0.1").is_err());
        assert!(validate("-a.com").is_err());
    }

    #[test]
    fn covering_lists_parent_wildcards_then_any() {
        let c = |h: Option<&str>| -> Vec<Option<String>> { covering(h) };
        assert_eq!(
            c(Some("a.b.c")),
            vec![Some("*.b.c".into()), Some("*.c".into()), None]
        );
        assert_eq!(c(Some("*.b.c")), vec![Some("*.c".into()), None]);
        assert_eq!(c(Some("c")), vec![None]);
        assert!(c(None).is_empty());
    }

    #[test]
    fn specificity_orders_exact_then_wildcards_then_any() {
        let mut hosts = vec![
            None,
            Some("*.a.com"),
            Some("x.a.com"),
            Some("*.b.a.com"),
            Some("a.com"),
        ];
        hosts.sort_by(|a, b| specificity(*a, *b));
        assert_eq!(
            hosts,
            vec![
                Some("x.a.com"),
                Some("a.com"),
                Some("*.b.a.com"),
                Some("*.a.com"),
                None
            ]
        );
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-c]{1,2}"
    }
    fn host() -> impl Strategy<Value = String> {
        prop::collection::vec(label(), 1..4).prop_map(|l| l.join("."))
    }
    fn pattern() -> impl Strategy<Value = String> {
        (any::<bool>(), host()).prop_map(|(w, h)| if w { format!("*.{h}") } else { h })
    }

    proptest! {
        /// A host matched by the intersection is matched by both sides, and a host matched by
        /// both sides is matched by the intersection.
        #[test]
        fn intersection_matches_exactly_what_both_sides_match(l in pattern(), r in pattern(), h in host()) {
            let both = matches(&l, &h) && matches(&r, &h);
            match intersect(Some(&l), &r) {
                Some(i) => {
                    prop_assert_eq!(matches(&i, &h), both, "l={} r={} i={} h={}", l, r, i, h);
                }
                // No intersection: no host is matched by both sides.
                None => prop_assert!(!both, "l={} r={} h={}", l, r, h),
            }
        }

        /// `covering` lists exactly the hostnames (of a bounded family) that cover a host.
        #[test]
        fn covering_agrees_with_covers(h in pattern()) {
            for c in covering(Some(&h)).into_iter().flatten() {
                prop_assert!(covers(&c, &h) && c != h, "{} {}", c, h);
            }
        }

        /// `covers` agrees with matching: if outer covers inner, every host inner matches,
        /// outer matches too.
        #[test]
        fn covers_implies_matching(o in pattern(), i in pattern(), h in host()) {
            if covers(&o, &i) && matches(&i, &h) {
                prop_assert!(matches(&o, &h));
            }
        }
    }
}
