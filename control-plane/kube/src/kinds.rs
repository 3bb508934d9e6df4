//! What the provider reads and writes in the API, in one table: the watched kinds with their
//! API group, version and plural, the kinds whose status Trellis writes, and the permissions
//! all of that takes. The RBAC manifests under `deploy/` are checked against
//! [`required_permissions`] by a test, so they grant exactly what this module names.
//!
//! ```text
//!  WATCHED ──► one watcher per kind (per namespace with --watch-namespaces): list, watch
//!  STATUS_KINDS ──► merge patches on <plural>/status: patch
//!  Leases (leader election, replica liveness) ──► get, list, watch, create, update
//! ```

use kube::core::ApiResource;
use trellis_model::Kind;

/// One kind the provider watches, and where it is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchedKind {
    /// The model kind objects of this resource become.
    pub kind: Kind,
    /// API group (`""` for core).
    pub group: &'static str,
    /// The version read. ReferenceGrant is read as `v1beta1`, which every Gateway API release
    /// since v0.6 serves (v1.6 serves `v1` too, but stores `v1beta1`).
    pub version: &'static str,
    /// Plural resource name.
    pub plural: &'static str,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Served by a CustomResourceDefinition a cluster may not have installed (Trellis's own
    /// policy kinds): while the API answers 404, the kind reads as having no objects, and it
    /// is read as soon as the definition is installed.
    pub optional: bool,
}

impl WatchedKind {
    /// The field selector its watch takes, if any: Pods that have terminated (Succeeded,
    /// Failed) carry no traffic, so they are not read (nor kept) at all; the control plane's
    /// own ConfigMap (`trellis-last-good`) is not read, or each write of it would be a change.
    pub fn field_selector(&self) -> Option<&'static str> {
        match self.kind {
            Kind::Pod => Some(POD_FIELD_SELECTOR),
            Kind::ConfigMap => Some(CONFIG_MAP_FIELD_SELECTOR),
            _ => None,
        }
    }

    /// `apiVersion` of the objects read.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kube-rs dynamic resource description.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_string(),
            version: self.version.to_string(),
            api_version: self.api_version(),
            kind: self.kind.name().to_string(),
            plural: self.plural.to_string(),
        }
    }

    /// The watched kind for a model kind, if the provider reads it.
    pub fn of(kind: Kind) -> Option<&'static WatchedKind> {
        WATCHED.iter().find(|w| w.kind == kind)
    }
}

/// Every kind the provider watches: the model's kinds marked watched.
pub static WATCHED: std::sync::LazyLock<Vec<WatchedKind>> = std::sync::LazyLock::new(|| {
    Kind::ALL
        .into_iter()
        .filter(|k| k.watched())
        .map(|kind| WatchedKind {
            kind,
            group: kind.group(),
            version: kind.version(),
            plural: kind.plural(),
            namespaced: kind.namespaced(),
            optional: kind.optional(),
        })
        .collect()
});

/// Kinds whose `/status` Trellis writes (GatewayClasses only when they name Trellis's
/// controller; HTTPRoutes only in the `parents` entries carrying Trellis's controller name;
/// the policy kinds are Trellis's own).
pub static STATUS_KINDS: std::sync::LazyLock<Vec<Kind>> = std::sync::LazyLock::new(|| {
    Kind::ALL
        .into_iter()
        .filter(|k| k.writes_status())
        .collect()
});

/// The field selector of the Pod watch.
pub const POD_FIELD_SELECTOR: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// The field selector of the ConfigMap watch: every ConfigMap but the control plane's own.
pub const CONFIG_MAP_FIELD_SELECTOR: &str = "metadata.name!=trellis-last-good";

/// The `coordination.k8s.io` group of Leases.
pub const LEASE_GROUP: &str = "coordination.k8s.io";

/// Where a permission is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Across the cluster (a ClusterRole), or in each watched namespace with
    /// `--watch-namespaces`.
    Cluster,
    /// Only in the namespace of the leader-election Lease (a Role there).
    LeaseNamespace,
}

/// One permission the code uses: a verb on a resource of a group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    /// Where it is needed.
    pub scope: Scope,
    /// API group (`""` for core).
    pub group: String,
    /// Resource, with `/status` for the subresource.
    pub resource: String,
    /// The verb.
    pub verb: String,
    /// The one object it is needed on, when it is restricted to one (`resourceNames`).
    pub name: Option<String>,
}

/// Every permission the provider, the status writer and leader election use, sorted. The
/// deploy manifests must grant these and nothing else.
pub fn required_permissions() -> Vec<Permission> {
    let p = |scope, group: &str, resource: &str, verb: &str| Permission {
        scope,
        group: group.to_string(),
        resource: resource.to_string(),
        verb: verb.to_string(),
        name: None,
    };
    let mut out = Vec::new();
    for w in WATCHED.iter() {
        // The watcher lists, then watches; it never GETs single objects.
        for verb in ["list", "watch"] {
            out.push(p(Scope::Cluster, w.group, w.plural, verb));
        }
    }
    for kind in STATUS_KINDS.iter() {
        if let Some(w) = WatchedKind::of(*kind) {
            // Merge patches with a resourceVersion precondition; no GET, no PUT.
            out.push(p(
                Scope::Cluster,
                w.group,
                &format!("{}/status", w.plural),
                "patch",
            ));
        }
    }
    // The election Lease: read, created once, renewed or taken over by update. Replica
    // Leases: the same, plus list/watch to see the other replicas.
    for verb in ["get", "list", "watch", "create", "update"] {
        out.push(p(Scope::LeaseNamespace, LEASE_GROUP, "leases", verb));
    }
    // The ConfigMap keeping the last valid policy specs: read at start, written (server-side
    // apply, which creates it) by the leader. Nothing else of the namespace's ConfigMaps.
    for verb in ["get", "patch"] {
        out.push(Permission {
            name: Some(crate::last_good::CONFIG_MAP.to_string()),
            ..p(Scope::LeaseNamespace, "", "configmaps", verb)
        });
    }
    // The CA's root: the Secret read at start, created once when missing (create cannot be
    // limited to a name). No other Secret of the namespace is read.
    out.push(Permission {
        name: Some(crate::identity::CA_SECRET.to_string()),
        ..p(Scope::LeaseNamespace, "", "secrets", "get")
    });
    out.push(p(Scope::LeaseNamespace, "", "secrets", "create"));
    // The certificate service authenticates its callers' ServiceAccount tokens.
    out.push(p(
        Scope::Cluster,
        "authentication.k8s.io",
        "tokenreviews",
        "create",
    ));
    // The sidecar injector's webhook configuration: its caBundle kept current by the leader.
    for verb in ["get", "patch"] {
        out.push(Permission {
            name: Some(INJECTOR_WEBHOOK.to_string()),
            ..p(
                Scope::Cluster,
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
                verb,
            )
        });
    }
    out.sort();
    out.dedup();
    out
}

/// The MutatingWebhookConfiguration of the sidecar injector (`deploy/`).
pub const INJECTOR_WEBHOOK: &str = "trellis-sidecar-injector";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_watched_kind_is_a_model_kind_with_matching_scope() {
        for w in WATCHED.iter() {
            assert_eq!(w.namespaced, w.kind.namespaced(), "{:?}", w.kind);
            assert!(w.kind.accepts_api_version(&w.api_version()), "{:?}", w.kind);
            assert_eq!(w.plural, w.kind.plural());
        }
    }

    #[test]
    fn permissions_cover_watching_status_leases_and_one_configmap_only() {
        let perms = required_permissions();
        assert!(perms.iter().all(|p| p.verb != "delete" && p.verb != "*"));
        assert!(
            perms
                .iter()
                .filter(|p| p.resource.ends_with("/status"))
                .all(|p| p.verb == "patch")
        );
        let local: Vec<_> = perms
            .iter()
            .filter(|p| p.scope == Scope::LeaseNamespace)
            .collect();
        assert_eq!(local.iter().filter(|p| p.resource == "leases").count(), 5);
        let configmaps: Vec<_> = local
            .iter()
            .filter(|p| p.resource == "configmaps")
            .collect();
        assert_eq!(configmaps.len(), 2);
        assert!(
            configmaps
                .iter()
                .all(|p| p.name.as_deref() == Some(crate::last_good::CONFIG_MAP))
        );
    }
}
