//! Trellis's security kinds (`security.trellis.dev/v1alpha1`): [`PeerAuthentication`], which
//! says whether the sidecars of the pods it selects accept plaintext, mutual TLS, or both.
//!
//! The spec has Istio's shape (`selector`, `mtls.mode`, `portLevelMtls`), so an Istio user can
//! move a policy across by changing its `apiVersion`; unlike Istio's, it reports status (the
//! mode in force and what it selects).
//!
//! ```text
//!  pod ──► the policy of its namespace whose selector matches it (workload policy)
//!      └─► else the policy of its namespace without a selector (namespace policy)
//!      └─► else the policy of the control plane's namespace without a selector (mesh policy)
//!      └─► else PERMISSIVE
//!  UNSET at any level means: what the next level down says.
//! ```

use crate::policy::PolicyObject;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The API group of the security kinds.
pub const GROUP: &str = "security.trellis.dev";

/// `PeerAuthentication`: the mutual-TLS mode of the sidecars of the pods it selects.
pub type PeerAuthentication = PolicyObject<PeerAuthenticationSpec>;

/// The spec of a PeerAuthentication.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    /// The pods (of the policy's namespace) it applies to; without it, every pod of the
    /// namespace (or of the mesh, in the control plane's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The mode of every port of the selected pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// The mode of single ports (container ports), over `mtls`; needs a `selector`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

/// Which pods a policy applies to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// The pods carrying every one of these labels.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// A mutual-TLS setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MutualTls {
    /// The mode.
    #[serde(default)]
    pub mode: MtlsMode,
}

/// Whether a sidecar accepts plaintext, mutual TLS, or both.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit: what the policy one level down says (PERMISSIVE at the bottom).
    #[default]
    Unset,
    /// Plaintext only: meshed clients send plaintext too.
    Disable,
    /// Both mutual TLS (from meshed clients) and plaintext (from anything else).
    Permissive,
    /// Mutual TLS only: plaintext connections are closed.
    Strict,
}

impl MtlsMode {
    /// The name as written in a spec (`STRICT`).
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Unset => "UNSET",
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        }
    }

    /// This mode, or `parent` when it is UNSET.
    pub fn or(self, parent: MtlsMode) -> MtlsMode {
        if self == MtlsMode::Unset {
            parent
        } else {
            self
        }
    }
}

/// Status of a PeerAuthentication.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthenticationStatus {
    /// `Accepted`.
    #[serde(default)]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    /// The mode its `mtls` puts in force (UNSET resolved through the levels below it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
    /// How many pods of the mesh take their mode from it.
    #[serde(default)]
    pub pods: u32,
    /// How many of those pods' ports take their mode from its `portLevelMtls`.
    #[serde(default)]
    pub ports: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;

    #[test]
    fn a_spec_reads_as_istio_writes_it() {
        let policy = PeerAuthentication::new(
            ObjectMeta::default(),
            json!({
                "selector": {"matchLabels": {"app": "db"}},
                "mtls": {"mode": "STRICT"},
                "portLevelMtls": {"8080": {"mode": "DISABLE"}}
            }),
        );
        let spec = policy.parse_spec().unwrap();
        assert_eq!(spec.mtls.unwrap().mode, MtlsMode::Strict);
        assert_eq!(spec.port_level_mtls[&8080].mode, MtlsMode::Disable);
        assert_eq!(spec.selector.unwrap().match_labels["app"], "db");
        let bad =
            PeerAuthentication::new(ObjectMeta::default(), json!({"mtls": {"mode": "strict"}}));
        let err = bad.parse_spec().unwrap_err();
        assert_eq!(err.field, "spec.mtls.mode", "{err}");
        assert_eq!(MtlsMode::Unset.or(MtlsMode::Strict), MtlsMode::Strict);
        assert_eq!(MtlsMode::Disable.or(MtlsMode::Strict), MtlsMode::Disable);
    }
}
