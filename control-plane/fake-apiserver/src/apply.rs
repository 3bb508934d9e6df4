//! Server-side apply, approximated: field ownership by *map paths*, recorded in
//! `metadata.managedFields` in the real `FieldsV1` shape.
//!
//! ```text
//!  applied object ──leaf_paths──► set A (what this manager now owns)
//!  managedFields[manager=me, operation=Apply] ──► set M (what it owned before)
//!  managedFields[other Apply managers]        ──► sets O₁, O₂, …
//!
//!  conflicts  = paths in A owned by some Oᵢ whose current value differs from the applied one
//!               (409 Conflict unless force=true; with force the path moves to this manager)
//!  removed    = M − A − ⋃Oᵢ   (fields this manager stopped applying and nobody else owns)
//!  result     = (current object − removed) deep-merged with the applied object
//! ```
//!
//! The approximation: lists are atomic (a list is one field, replaced whole, as with
//! `x-kubernetes-list-type: atomic`); there are no per-item ownerships of `listType=map`
//! lists such as `status.conditions`, so two managers applying different conditions of the
//! same list replace each other's list (with force) or conflict. Non-apply writes (PUT,
//! merge/JSON patches) keep `managedFields` as they were and take no ownership. A `null` in
//! an applied object removes the field. A `metadata.resourceVersion` in the applied object is
//! a precondition (409 when it is not the current one), as on the real server.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// A path of map keys from the object's root to a field.
pub(crate) type FieldPath = Vec<String>;

/// Metadata fields the server manages; never owned by an applier.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

/// Every leaf field of `value` (scalars, lists, empty maps), except `apiVersion`, `kind` and
/// server-managed metadata.
pub(crate) fn leaf_paths(value: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    if let Some(map) = value.as_object() {
        for (k, v) in map {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => {
                    if let Some(meta) = v.as_object() {
                        for (mk, mv) in meta {
                            if !SERVER_METADATA.contains(&mk.as_str()) {
                                collect(mv, vec!["metadata".into(), mk.clone()], &mut out);
                            }
                        }
                    }
                }
                _ => collect(v, vec![k.clone()], &mut out),
            }
        }
    }
    out
}

fn collect(value: &Value, path: FieldPath, out: &mut BTreeSet<FieldPath>) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, v) in map {
                let mut p = path.clone();
                p.push(k.clone());
                collect(v, p, out);
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

/// A field set as `FieldsV1` JSON: `{"f:spec":{"f:replicas":{}}}`.
pub(crate) fn to_fields_v1(set: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for key in path {
            let entry = node
                .entry(format!("f:{key}"))
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let Some(next) = entry.as_object_mut() else {
                break;
            };
            node = next;
        }
    }
    Value::Object(root)
}

/// The leaf paths of a `FieldsV1` value. List-item keys (`k:`, `v:`, `i:`) written by a real
/// server make their list one atomic field.
pub(crate) fn from_fields_v1(fields: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    walk_fields(fields, Vec::new(), &mut out);
    out
}

fn walk_fields(node: &Value, path: FieldPath, out: &mut BTreeSet<FieldPath>) {
    let children: Vec<(&String, &Value)> = node
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| k.as_str() != ".").collect())
        .unwrap_or_default();
    if children.is_empty() || children.iter().any(|(k, _)| !k.starts_with("f:")) {
        if !path.is_empty() {
            out.insert(path);
        }
        return;
    }
    for (k, v) in children {
        let mut p = path.clone();
        p.push(k.trim_start_matches("f:").to_string());
        walk_fields(v, p, out);
    }
}

/// The value at a path, if every step is a map key.
pub(crate) fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, k| v.get(k))
}

/// Removes the field at a path (a missing path is fine).
pub(crate) fn remove_path(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = value;
    for k in parents {
        match node.get_mut(k) {
            Some(next) => node = next,
            None => return,
        }
    }
    if let Some(map) = node.as_object_mut() {
        map.remove(last);
    }
}

/// Whether one path is a prefix of the other (the fields overlap).
pub(crate) fn overlaps(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// Merges `applied` into `target`: maps recursively, everything else replaced; `null` removes.
pub(crate) fn deep_merge(target: &mut Value, applied: &Value) {
    match (target.as_object_mut(), applied.as_object()) {
        (Some(t), Some(a)) => {
            for (k, v) in a {
                if v.is_null() {
                    t.remove(k);
                } else if let Some(existing) = t.get_mut(k)
                    && existing.is_object()
                    && v.is_object()
                {
                    deep_merge(existing, v);
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        _ => *target = applied.clone(),
    }
}

/// One `managedFields` entry, parsed.
#[derive(Debug, Clone)]
pub(crate) struct ManagedEntry {
    /// The entry as stored (kept verbatim for entries this apply does not touch).
    pub raw: Value,
    /// `manager`.
    pub manager: String,
    /// `operation` (`Apply` or `Update`).
    pub operation: String,
    /// `subresource` (`""` for the main resource).
    pub subresource: String,
    /// The owned fields.
    pub fields: BTreeSet<FieldPath>,
}

/// Parses `metadata.managedFields`.
pub(crate) fn managed_entries(object: &Value) -> Vec<ManagedEntry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|e| ManagedEntry {
                    raw: e.clone(),
                    manager: str_field(e, "manager"),
                    operation: str_field(e, "operation"),
                    subresource: str_field(e, "subresource"),
                    fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// A `managedFields` entry for an Apply.
pub(crate) fn apply_entry(
    manager: &str,
    api_version: &str,
    subresource: &str,
    fields: &BTreeSet<FieldPath>,
    time: &str,
) -> Value {
    let mut e = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(fields),
    });
    if !subresource.is_empty()
        && let Some(m) = e.as_object_mut()
    {
        m.insert("subresource".into(), Value::String(subresource.into()));
    }
    e
}

/// Renders a path as the real server does in conflict messages: `.spec.replicas`.
pub(crate) fn display_path(path: &[String]) -> String {
    path.iter().map(|k| format!(".{k}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> FieldPath {
        s.split('.').map(String::from).collect()
    }

    #[test]
    fn leaf_paths_skip_server_metadata_and_treat_lists_as_atomic() {
        let obj = json!({
            "apiVersion": "v1", "kind": "X",
            "metadata": { "name": "a", "resourceVersion": "3", "labels": { "app": "web" } },
            "spec": { "ports": [ { "port": 80 } ], "selector": {} },
        });
        let set = leaf_paths(&obj);
        let expected: BTreeSet<FieldPath> = [
            p("metadata.labels.app"),
            p("spec.ports"),
            p("spec.selector"),
        ]
        .into();
        assert_eq!(set, expected);
    }

    #[test]
    fn field_sets_round_trip_through_fields_v1() {
        let set: BTreeSet<FieldPath> = [p("spec.a.b"), p("spec.c"), p("status.x")].into();
        let v1 = to_fields_v1(&set);
        assert_eq!(v1["f:spec"]["f:a"]["f:b"], json!({}));
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn real_list_item_keys_make_the_list_one_field() {
        let v1 = json!({"f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}}}}});
        assert_eq!(from_fields_v1(&v1), [p("status.conditions")].into());
    }

    #[test]
    fn deep_merge_merges_maps_replaces_lists_and_removes_nulls() {
        let mut t = json!({"spec": {"a": 1, "b": [1, 2], "c": {"d": 1}}});
        deep_merge(
            &mut t,
            &json!({"spec": {"b": [3], "c": {"e": 2}, "a": null}}),
        );
        assert_eq!(t, json!({"spec": {"b": [3], "c": {"d": 1, "e": 2}}}));
    }
}
