//! Discovery documents, generated from the registry: `/version`, `/api`, `/apis`,
//! `/apis/{group}`, `/api/v1` and `/apis/{group}/{version}` in the legacy (non-aggregated)
//! format that `kube::Discovery::run()` and `kubectl` read.
//!
//! ```text
//!  Registry ──► APIVersions (core) / APIGroupList / APIGroup
//!           ──► APIResourceList per group/version: one entry per kind, plus `<plural>/status`
//! ```

use serde_json::{Value, json};

use crate::kinds::Registry;

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `/version`: a Kubernetes 1.34 server.
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "gitVersion": "v1.34.0-trellis-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`: the core group's versions.
pub(crate) fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1" }],
    })
}

/// `/apis/{group}`, or `None` when no kind is in the group.
pub(crate) fn group(registry: &Registry, name: &str) -> Option<Value> {
    let versions = registry.versions(name);
    let preferred = versions.first()?.clone();
    let entry = |v: &String| json!({ "groupVersion": format!("{name}/{v}"), "version": v });
    Some(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": versions.iter().map(entry).collect::<Vec<_>>(),
        "preferredVersion": entry(&preferred),
    }))
}

/// `/apis`: every non-core group.
pub(crate) fn groups(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry
        .groups()
        .iter()
        .filter(|g| !g.is_empty())
        .filter_map(|g| {
            let mut v = group(registry, g)?;
            if let Some(m) = v.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            Some(v)
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `/api/v1` or `/apis/{group}/{version}`, or `None` when nothing is served there.
pub(crate) fn resources(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    if !registry.serves(group, version) {
        return None;
    }
    let mut resources = Vec::new();
    for k in registry
        .all()
        .filter(|k| k.group == group && k.version == version)
    {
        resources.push(json!({
            "name": k.plural,
            "singularName": k.kind.to_lowercase(),
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": VERBS,
        }));
        if k.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", k.plural),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}
