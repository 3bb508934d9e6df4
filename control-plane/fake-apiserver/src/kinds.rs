//! Resource kinds: what the server serves, registered generically at startup (or later, by
//! creating a `CustomResourceDefinition`).
//!
//! ```text
//!  ResourceKind { group, version, kind, plural, namespaced, status_subresource }
//!        │ register
//!        ▼
//!  Registry ── by (group, version, plural) ──► URL routing and discovery
//!           ── by (group, version, Kind)   ──► loading YAML
//! ```
//!
//! Objects are stored per *group resource* (group + plural), not per version: the same
//! HTTPRoute is served under every registered version of its group, with `apiVersion`
//! rewritten (the Gateway API's versions share one schema, so no other conversion is done).

use std::any::TypeId;
use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use kube::Resource;

use crate::error::Error;

/// One served resource type: a kind at one group/version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceKind {
    /// API group; empty for the core group (`v1`).
    pub group: String,
    /// API version within the group, e.g. `v1`, `v1beta1`.
    pub version: String,
    /// Kind, e.g. `HTTPRoute`.
    pub kind: String,
    /// Plural resource name used in URLs, e.g. `httproutes`.
    pub plural: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether the kind has a `/status` subresource: then writes to the main resource ignore
    /// `.status`, writes to `/status` change only `.status`, and `metadata.generation` counts
    /// changes to everything but metadata and status.
    pub status_subresource: bool,
}

impl ResourceKind {
    /// A kind with a `/status` subresource.
    pub fn new(
        group: impl Into<String>,
        version: impl Into<String>,
        kind: impl Into<String>,
        plural: impl Into<String>,
        namespaced: bool,
    ) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            status_subresource: true,
        }
    }

    /// The same kind without a `/status` subresource (like ConfigMap, Secret, Lease).
    pub fn without_status(mut self) -> Self {
        self.status_subresource = false;
        self
    }

    /// The kind of a kube [`Resource`] type (k8s-openapi types or `#[derive(CustomResource)]`),
    /// namespaced when its scope is `NamespaceResourceScope`.
    pub fn of<K>() -> Self
    where
        K: Resource<DynamicType = ()>,
        K::Scope: 'static,
    {
        Self::new(
            K::group(&()),
            K::version(&()),
            K::kind(&()),
            K::plural(&()),
            TypeId::of::<K::Scope>() == TypeId::of::<NamespaceResourceScope>(),
        )
    }

    /// Parses `group/version/Kind/plural[/cluster]` (empty group for core, e.g. `/v1/Service/services`).
    pub fn parse_spec(spec: &str) -> Result<Self, Error> {
        let parts: Vec<&str> = spec.split('/').collect();
        let bad = || Error::KindSpec(spec.to_string());
        let (namespaced, parts) = match parts.as_slice() {
            [g, v, k, p] => (true, [*g, *v, *k, *p]),
            [g, v, k, p, "cluster"] => (false, [*g, *v, *k, *p]),
            [g, v, k, p, "namespaced"] => (true, [*g, *v, *k, *p]),
            _ => return Err(bad()),
        };
        if parts[1..].iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        Ok(Self::new(
            parts[0], parts[1], parts[2], parts[3], namespaced,
        ))
    }

    /// `apiVersion` as written in objects: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The resource as named in errors: `plural` or `plural.group`.
    pub fn resource_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The storage key shared by every version of this kind.
    pub(crate) fn group_resource(&self) -> GroupResource {
        GroupResource {
            group: self.group.clone(),
            plural: self.plural.clone(),
        }
    }
}

/// Group and plural: where objects of a kind are stored, whatever version serves them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct GroupResource {
    pub group: String,
    pub plural: String,
}

/// The kinds every server starts with: the core and networking kinds the provider reads,
/// Leases, CRDs, and the Gateway API's standard channel.
pub fn builtin_kinds() -> Vec<ResourceKind> {
    let gw = "gateway.networking.k8s.io";
    vec![
        ResourceKind::new("", "v1", "Namespace", "namespaces", false),
        ResourceKind::new("", "v1", "Service", "services", true),
        ResourceKind::new("", "v1", "Endpoints", "endpoints", true).without_status(),
        ResourceKind::new("", "v1", "Secret", "secrets", true).without_status(),
        ResourceKind::new("", "v1", "ConfigMap", "configmaps", true).without_status(),
        ResourceKind::new("", "v1", "Pod", "pods", true),
        ResourceKind::new("", "v1", "Event", "events", true).without_status(),
        ResourceKind::new("events.k8s.io", "v1", "Event", "events", true).without_status(),
        ResourceKind::new(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            true,
        )
        .without_status(),
        ResourceKind::new("coordination.k8s.io", "v1", "Lease", "leases", true).without_status(),
        ResourceKind::new(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            false,
        )
        .without_status(),
        ResourceKind::new(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        ),
        ResourceKind::new(gw, "v1", "GatewayClass", "gatewayclasses", false),
        ResourceKind::new(gw, "v1", "Gateway", "gateways", true),
        ResourceKind::new(gw, "v1", "HTTPRoute", "httproutes", true),
        ResourceKind::new(gw, "v1", "GRPCRoute", "grpcroutes", true),
        ResourceKind::new(gw, "v1beta1", "GatewayClass", "gatewayclasses", false),
        ResourceKind::new(gw, "v1beta1", "Gateway", "gateways", true),
        ResourceKind::new(gw, "v1beta1", "HTTPRoute", "httproutes", true),
        ResourceKind::new(gw, "v1beta1", "ReferenceGrant", "referencegrants", true)
            .without_status(),
    ]
}

/// The registered kinds, looked up by URL (plural) or by object (Kind).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// (group, version, plural) → kind.
    by_plural: BTreeMap<(String, String, String), ResourceKind>,
}

impl Registry {
    /// Adds (or replaces) a kind.
    pub fn register(&mut self, kind: ResourceKind) {
        self.by_plural.insert(
            (
                kind.group.clone(),
                kind.version.clone(),
                kind.plural.clone(),
            ),
            kind,
        );
    }

    /// The kind served at `group/version/plural`.
    pub fn by_plural(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceKind> {
        self.by_plural
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
    }

    /// The kind named by an object's `apiVersion` and `kind`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceKind> {
        let (group, version) = split_api_version(api_version);
        self.by_plural
            .values()
            .find(|k| k.group == group && k.version == version && k.kind == kind)
    }

    /// Whether any kind is served at `group/version`.
    pub fn serves(&self, group: &str, version: &str) -> bool {
        self.by_plural
            .keys()
            .any(|(g, v, _)| g == group && v == version)
    }

    /// Every kind, ordered by group, version and plural.
    pub fn all(&self) -> impl Iterator<Item = &ResourceKind> {
        self.by_plural.values()
    }

    /// The versions served for `group`, in registration-independent order (sorted so that
    /// `v1` comes before `v1beta1` and `v1alpha1`, as Kubernetes' version priority does).
    pub fn versions(&self, group: &str) -> Vec<String> {
        let mut versions: Vec<String> = self
            .by_plural
            .keys()
            .filter(|(g, _, _)| g == group)
            .map(|(_, v, _)| v.clone())
            .collect();
        versions.dedup();
        versions.sort_by_key(|v| version_priority(v));
        versions
    }

    /// Every group with at least one kind (the core group is `""`), sorted.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self.by_plural.keys().map(|(g, _, _)| g.clone()).collect();
        groups.dedup();
        groups
    }
}

/// Splits `apiVersion` into group and version (`v1` → `("", "v1")`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Sort key: GA versions first (higher first), then beta, then alpha, then anything else.
fn version_priority(v: &str) -> (u8, std::cmp::Reverse<u32>, std::cmp::Reverse<u32>, String) {
    use std::cmp::Reverse;
    let Some(rest) = v.strip_prefix('v') else {
        return (3, Reverse(0), Reverse(0), v.to_string());
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major: u32 = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let (class, minor) = if tail.is_empty() {
        (0, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (1, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (2, n.parse().unwrap_or(0))
    } else {
        return (3, Reverse(0), Reverse(0), v.to_string());
    };
    (class, Reverse(major), Reverse(minor), String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Namespace;

    #[test]
    fn kinds_of_typed_resources_know_their_scope() {
        let lease = ResourceKind::of::<Lease>();
        assert_eq!(lease.api_version(), "coordination.k8s.io/v1");
        assert_eq!(lease.plural, "leases");
        assert!(lease.namespaced);
        assert!(!ResourceKind::of::<Namespace>().namespaced);
    }

    #[test]
    fn versions_are_listed_in_kubernetes_priority_order() {
        let mut r = Registry::default();
        for v in ["v1alpha1", "v1beta1", "v2", "v1"] {
            r.register(ResourceKind::new("x.dev", v, "Thing", "things", true));
        }
        assert_eq!(r.versions("x.dev"), ["v2", "v1", "v1beta1", "v1alpha1"]);
    }

    #[test]
    fn kind_specs_parse_with_an_empty_core_group_and_a_cluster_flag() {
        let k = ResourceKind::parse_spec("/v1/Service/services").expect("parses");
        assert_eq!(k.api_version(), "v1");
        assert!(k.namespaced);
        let k =
            ResourceKind::parse_spec("policy.trellis.dev/v1alpha1/MeshPolicy/meshpolicies/cluster")
                .expect("parses");
        assert!(!k.namespaced);
        assert!(ResourceKind::parse_spec("v1/Service").is_err());
    }
}
