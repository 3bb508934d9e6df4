//! Policies: AuthorizationPolicy rules that never decide because an earlier rule matches every
//! request they would (TRL0167). Rules are tried in order and the first whose conditions all
//! hold decides, so a later rule covered by an earlier one is dead.

use crate::{Code, Finding, ObjectRef, Severity};
use trellis_model::InputSet;
use trellis_model::policy::{
    AuthorizationPolicySpec, AuthorizationRule, PathMatchKind, PolicyPathMatch,
};

/// Whether condition `a` (None: any request) holds for every request condition `b` holds for,
/// given that a value of `a` covers a value of `b` when `covers` says so.
fn condition_covers<T>(
    a: &Option<Vec<T>>,
    b: &Option<Vec<T>>,
    covers: impl Fn(&T, &T) -> bool,
) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => b.iter().all(|y| a.iter().any(|x| covers(x, y))),
    }
}

fn path_covers(a: &PolicyPathMatch, b: &PolicyPathMatch) -> bool {
    match (a.kind, b.kind) {
        (PathMatchKind::Prefix, PathMatchKind::Prefix | PathMatchKind::Exact) => {
            b.value.starts_with(&a.value)
        }
        _ => a.kind == b.kind && a.value == b.value,
    }
}

/// A principal pattern (`*` suffix: prefix) covers another value or pattern.
fn principal_covers(a: &String, b: &String) -> bool {
    match a.strip_suffix('*') {
        Some(prefix) => b.starts_with(prefix),
        None => a == b,
    }
}

/// Whether rule `a` matches every request rule `b` matches.
pub(crate) fn rule_covers(a: &AuthorizationRule, b: &AuthorizationRule) -> bool {
    let headers = match (&a.headers, &b.headers) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(ah), Some(bh)) => ah.iter().all(|x| {
            bh.iter().any(|y| {
                x.name.eq_ignore_ascii_case(&y.name)
                    && y.values.iter().all(|v| x.values.contains(v))
            })
        }),
    };
    headers
        && condition_covers(&a.paths, &b.paths, path_covers)
        && condition_covers(&a.methods, &b.methods, |x, y| x.eq_ignore_ascii_case(y))
        && condition_covers(&a.principals, &b.principals, principal_covers)
        && condition_covers(&a.namespaces, &b.namespaces, |x, y| x == y)
        && condition_covers(&a.source_ips, &b.source_ips, |x, y| x == y)
}

/// TRL0167 for every AuthorizationPolicy whose spec reads (an unreadable one has a condition).
pub(crate) fn unreachable_rules(input: &InputSet, out: &mut Vec<Finding>) {
    for (key, policy) in &input.authorization_policies {
        let Ok(spec) = policy.parse_spec() else {
            continue;
        };
        let spec: AuthorizationPolicySpec = spec;
        for (j, later) in spec.rules.iter().enumerate() {
            let Some((i, earlier)) = spec.rules[..j]
                .iter()
                .enumerate()
                .find(|(_, e)| rule_covers(e, later))
            else {
                continue;
            };
            let outcome = if earlier.action == later.action {
                "with the same action, so it changes nothing"
            } else {
                "with the opposite action, so this rule's action never happens"
            };
            out.push(Finding {
                severity: Severity::Warning,
                code: Code::UnreachablePolicyRule,
                object: ObjectRef::new("AuthorizationPolicy", key),
                field: format!("spec.rules[{j}]"),
                message: format!(
                    "rule {:?} never decides: rule {:?} (spec.rules[{i}]) comes first and \
                     matches every request it would, {outcome}",
                    later.name, earlier.name
                ),
                fix: format!(
                    "move rule {:?} before rule {:?}, narrow rule {:?}, or remove rule {:?}",
                    later.name, earlier.name, earlier.name, later.name
                ),
            });
        }
    }
}
