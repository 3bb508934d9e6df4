//! Label and field selectors, parsed from the `labelSelector` / `fieldSelector` query
//! parameters and matched against stored objects.
//!
//! Label selectors: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists) and `!k`
//! (does not exist), comma-separated and all required. Field selectors: `metadata.name` and
//! `metadata.namespace` with `=`, `==` and `!=`; any other field is refused with 400, as the
//! real server does for fields a resource does not index.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::error::ApiError;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    /// `k=v` / `k==v`: the label exists with this value.
    Equals(String, String),
    /// `k!=v`: the label is absent or has another value.
    NotEquals(String, String),
    /// `k in (a,b)`: the label exists with one of the values.
    In(String, BTreeSet<String>),
    /// `k notin (a,b)`: the label is absent or has none of the values.
    NotIn(String, BTreeSet<String>),
    /// `k`: the label exists.
    Exists(String),
    /// `!k`: the label does not exist.
    DoesNotExist(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let bad = |why: &str| {
            ApiError::BadRequest(format!(
                "unable to parse requirement: invalid label selector {text:?}: {why}"
            ))
        };
        let mut requirements = Vec::new();
        for term in split_outside_parens(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let req = if let Some(key) = term.strip_prefix('!') {
                LabelRequirement::DoesNotExist(valid_key(key.trim()).ok_or_else(|| bad("key"))?)
            } else if let Some((key, rest)) = split_set_operator(term, " notin ") {
                LabelRequirement::NotIn(
                    valid_key(key).ok_or_else(|| bad("key"))?,
                    parse_set(rest).ok_or_else(|| bad("set"))?,
                )
            } else if let Some((key, rest)) = split_set_operator(term, " in ") {
                LabelRequirement::In(
                    valid_key(key).ok_or_else(|| bad("key"))?,
                    parse_set(rest).ok_or_else(|| bad("set"))?,
                )
            } else if let Some((key, value)) = term.split_once("!=") {
                LabelRequirement::NotEquals(
                    valid_key(key.trim()).ok_or_else(|| bad("key"))?,
                    value.trim().to_string(),
                )
            } else if let Some((key, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                LabelRequirement::Equals(
                    valid_key(key.trim()).ok_or_else(|| bad("key"))?,
                    value.trim().to_string(),
                )
            } else if term.contains(['<', '>', '(', ')', ' ']) {
                return Err(bad("unsupported operator"));
            } else {
                LabelRequirement::Exists(valid_key(term).ok_or_else(|| bad("key"))?)
            };
            requirements.push(req);
        }
        Ok(Self { requirements })
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, set) => label(k).is_some_and(|l| set.contains(l)),
            LabelRequirement::NotIn(k, set) => !label(k).is_some_and(|l| set.contains(l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::DoesNotExist(k) => label(k).is_none(),
        })
    }
}

/// Splits on commas that are not inside `( )`.
fn split_outside_parens(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// `key in (a,b)` → `("key", "(a,b)")`, tolerating extra spaces.
fn split_set_operator<'a>(term: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let i = term.find(op)?;
    Some((term[..i].trim(), term[i + op.len()..].trim()))
}

/// `(a, b)` → {a, b}.
fn parse_set(text: &str) -> Option<BTreeSet<String>> {
    let inner = text.strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

/// A label key: optional DNS prefix and `/`, then a name of alphanumerics, `-`, `_`, `.`.
fn valid_key(key: &str) -> Option<String> {
    let name = key.rsplit_once('/').map_or(key, |(_, n)| n);
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    ok.then(|| key.to_string())
}

/// One field requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    /// JSON pointer to the field, e.g. `/metadata/name`.
    pointer: &'static str,
    /// The value compared with.
    value: String,
    /// `!=` rather than `=`.
    negated: bool,
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, negated) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, v, false)
            } else {
                return Err(ApiError::BadRequest(format!(
                    "invalid field selector: invalid selector: '{term}'; can't understand '{term}'"
                )));
            };
            let pointer = match field.trim() {
                "metadata.name" => "/metadata/name",
                "metadata.namespace" => "/metadata/namespace",
                // The real server supports it for Pods only; here for any kind.
                "status.phase" => "/status/phase",
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "field label not supported: {other}"
                    )));
                }
            };
            requirements.push(FieldRequirement {
                pointer,
                value: value.trim().to_string(),
                negated,
            });
        }
        Ok(Self { requirements })
    }

    /// Whether the object satisfies every requirement (a missing field reads as "").
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = object
                .pointer(r.pointer)
                .and_then(Value::as_str)
                .unwrap_or("");
            (actual == r.value) != r.negated
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labelled(labels: Value) -> Value {
        json!({ "metadata": { "name": "a", "namespace": "ns", "labels": labels } })
    }

    #[test]
    fn every_label_operator_matches_as_kubernetes_defines_it() {
        let obj = labelled(json!({ "app": "web", "tier": "front" }));
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app in (web, db)", true),
            ("app in (db)", false),
            ("app notin (db)", true),
            ("missing notin (db)", true),
            ("app notin (web)", false),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("app=web,tier in (front,back),!canary", true),
            ("app=web,tier=back", false),
            ("", true),
        ];
        for (selector, expected) in cases {
            let s = LabelSelector::parse(selector).expect(selector);
            assert_eq!(s.matches(&obj), expected, "{selector}");
        }
    }

    #[test]
    fn malformed_label_selectors_are_bad_requests() {
        for bad in ["app in web", "a b", "x>1", "=v"] {
            let e = LabelSelector::parse(bad).expect_err(bad);
            assert_eq!(e.code(), 400, "{bad}");
        }
    }

    #[test]
    fn field_selectors_match_name_and_namespace_and_refuse_other_fields() {
        let obj = labelled(json!({}));
        let s = FieldSelector::parse("metadata.name=a,metadata.namespace!=other").expect("parses");
        assert!(s.matches(&obj));
        let s = FieldSelector::parse("metadata.name==b").expect("parses");
        assert!(!s.matches(&obj));
        let e = FieldSelector::parse("spec.nodeName=x").expect_err("unsupported");
        assert_eq!(e.code(), 400);
    }
}
