//! Trellis's policy kinds (`policy.trellis.dev/v1alpha1`): [`AuthorizationPolicy`],
//! [`RateLimitPolicy`] and [`WasmFilter`]. All three attach to Gateways and HTTPRoutes by
//! `targetRefs` (Gateway API policy attachment) and report status per ancestor.
//!
//! ```text
//!  file / API server ──► PolicyObject<S> { metadata, spec: JSON as written }
//!                                   │ parse_spec()  (strict: unknown fields are errors)
//!                                   ▼
//!                         S (AuthorizationPolicySpec, ...) ──► translate
//! ```
//!
//! The spec is kept as written ([`serde_json::Value`]) and parsed strictly by the translator
//! ([`PolicyObject::parse_spec`]): a misspelt or unknown field must not be silently dropped
//! (a dropped `rules` entry could open a route), and it must not make the object vanish either,
//! so it becomes an `Accepted=False` condition naming the field instead of a file error.

use crate::gateway::ParentReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::marker::PhantomData;

/// The API group of the policy kinds.
pub const GROUP: &str = "policy.trellis.dev";
/// The `apiVersion` of the policy kinds.
pub const API_VERSION: &str = "policy.trellis.dev/v1alpha1";

/// An object of a policy kind: metadata and the spec as written. `S` is the typed spec
/// [`PolicyObject::parse_spec`] reads.
#[derive(Serialize, Deserialize)]
pub struct PolicyObject<S> {
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The spec exactly as written.
    #[serde(default)]
    pub spec: serde_json::Value,
    #[serde(skip)]
    _spec: PhantomData<fn() -> S>,
}

impl<S> PolicyObject<S> {
    /// An object from its metadata and spec.
    pub fn new(metadata: ObjectMeta, spec: serde_json::Value) -> Self {
        Self {
            metadata,
            spec,
            _spec: PhantomData,
        }
    }
}

impl<S> Clone for PolicyObject<S> {
    fn clone(&self) -> Self {
        Self::new(self.metadata.clone(), self.spec.clone())
    }
}

impl<S> fmt::Debug for PolicyObject<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyObject")
            .field("metadata", &self.metadata)
            .field("spec", &self.spec)
            .finish()
    }
}

impl<S> PartialEq for PolicyObject<S> {
    fn eq(&self, other: &Self) -> bool {
        self.metadata == other.metadata && self.spec == other.spec
    }
}

impl<S> Default for PolicyObject<S> {
    fn default() -> Self {
        Self::new(ObjectMeta::default(), serde_json::Value::Null)
    }
}

/// Why a spec could not be read: the field (`spec.rules[0].paths`) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// Path of the offending field, starting with `spec`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for SpecError {}

/// Reads a spec strictly (every object rejects unknown fields), naming the field that failed.
pub fn parse_spec<S: DeserializeOwned>(spec: &serde_json::Value) -> Result<S, SpecError> {
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "spec".to_string()
        } else {
            format!("spec.{path}")
        };
        SpecError {
            field,
            message: e.into_inner().to_string(),
        }
    })
}

impl<S: DeserializeOwned> PolicyObject<S> {
    /// The typed spec, or the first field that does not fit the schema.
    pub fn parse_spec(&self) -> Result<S, SpecError> {
        parse_spec(&self.spec)
    }
}

/// `AuthorizationPolicy`: ordered allow/deny rules for the requests of its targets, enforced
/// by the policy filter.
pub type AuthorizationPolicy = PolicyObject<AuthorizationPolicySpec>;
/// `RateLimitPolicy`: local token-bucket rate limits for the requests of its targets,
/// enforced by the policy filter and shared by every worker of a proxy.
pub type RateLimitPolicy = PolicyObject<RateLimitPolicySpec>;
/// `WasmFilter`: a proxy-wasm module (verified by SHA-256) run in the HTTP filter chain of its
/// targets, with its own configuration.
pub type WasmFilter = PolicyObject<WasmFilterSpec>;

/// A reference from a policy to what it applies to (Gateway API's
/// `LocalPolicyTargetReferenceWithSectionName`): a Gateway or an HTTPRoute in the policy's
/// namespace, optionally one listener (Gateway) or one named rule (HTTPRoute); or (for
/// AuthorizationPolicy and RateLimitPolicy) a Service of the mesh, applied where its pods'
/// sidecars receive requests.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// `gateway.networking.k8s.io`, or `""` (core) for a Service.
    #[serde(default)]
    pub group: String,
    /// `Gateway`, `HTTPRoute` or `Service`.
    pub kind: String,
    /// Name of the target, in the policy's namespace.
    pub name: String,
    /// A Gateway listener name, or an HTTPRoute rule name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// Whether a policy's denials are enforced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyMode {
    /// Denials answer 403.
    #[default]
    Enforce,
    /// Denials are logged and counted, and requests go on.
    Audit,
}

/// What a rule (or a policy's default) does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyAction {
    /// Let the request through (to the next policy).
    Allow,
    /// Refuse it with 403.
    Deny,
}

/// The spec of an AuthorizationPolicy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// What the policy applies to (1–16 references).
    pub target_refs: Vec<PolicyTargetReference>,
    /// `Enforce` (default) or `Audit`.
    #[serde(default)]
    pub mode: PolicyMode,
    /// The decision when no rule matches.
    pub default_action: PolicyAction,
    /// Ordered rules; the first whose conditions all hold decides.
    #[serde(default)]
    pub rules: Vec<AuthorizationRule>,
}

/// One rule of an AuthorizationPolicy. Conditions are ANDed, the values of one condition
/// ORed; an omitted condition matches every request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationRule {
    /// Name, unique within the policy (shown in metrics).
    pub name: String,
    /// What to do when the conditions hold.
    pub action: PolicyAction,
    /// The path (without query) matches one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<PolicyPathMatch>>,
    /// The method is one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Each listed header has one of its values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<PolicyHeaderMatch>>,
    /// The peer's SPIFFE ID is one of these (`*` suffix: prefix match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principals: Option<Vec<String>>,
    /// The peer's namespace (from its SPIFFE ID, `.../ns/<ns>/sa/<sa>`) is one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    /// The client address is one of these IPs or in one of these CIDRs.
    #[serde(default, rename = "sourceIPs", skip_serializing_if = "Option::is_none")]
    pub source_ips: Option<Vec<String>>,
}

/// How a path is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathMatchKind {
    /// Equal.
    Exact,
    /// Starts with (character-wise).
    Prefix,
    /// The whole path matches the regular expression.
    RegularExpression,
}

/// A path condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPathMatch {
    /// How to compare.
    #[serde(rename = "type")]
    pub kind: PathMatchKind,
    /// The path, prefix or expression.
    pub value: String,
}

/// A header condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyHeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// Accepted values (exact).
    pub values: Vec<String>,
}

/// The spec of a RateLimitPolicy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitPolicySpec {
    /// What the limits apply to.
    pub target_refs: Vec<PolicyTargetReference>,
    /// The limits; every one in force takes a token per request.
    pub limits: Vec<RateLimit>,
}

/// One token-bucket limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Name, unique within the policy (shown in 429 bodies and metrics).
    pub name: String,
    /// What a bucket is kept per.
    pub key: RateLimitKey,
    /// Requests allowed per `per`.
    pub requests: u32,
    /// `Second`, `Minute` or `Hour`.
    pub per: RatePeriod,
    /// Bucket size (requests that may arrive at once); `requests` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Distinct key values tracked (10000 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<u32>,
}

/// What a rate limit keeps a bucket per.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitKey {
    /// `ClientIP`, `Principal` or `Header`.
    #[serde(rename = "type")]
    pub kind: RateLimitKeyKind,
    /// The header name, for `Header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

/// The kinds of rate-limit key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RateLimitKeyKind {
    /// The client address.
    #[serde(rename = "ClientIP")]
    ClientIp,
    /// The peer's SPIFFE ID.
    Principal,
    /// A request header's value.
    Header,
}

/// The period of a rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RatePeriod {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
}

/// The spec of a WasmFilter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmFilterSpec {
    /// What the filter applies to.
    pub target_refs: Vec<PolicyTargetReference>,
    /// Where the module comes from and its digest.
    pub module: WasmModule,
    /// The filter's configuration, passed to it as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// Position among the WasmFilters of a listener: lower runs first (ties by namespace/name).
    #[serde(default)]
    pub order: i32,
    /// What happens to requests when the module fails.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
}

/// Where a Wasm module comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmModule {
    /// A file on the control plane's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// An `http://` or `https://` URL the control plane fetches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Hex SHA-256 of the module (64 characters).
    pub sha256: String,
}

/// What happens to requests when a Wasm module fails (a panic, a VM that cannot start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailurePolicy {
    /// Requests get 503 (Envoy `FAIL_CLOSED`).
    #[default]
    FailClosed,
    /// Requests skip the filter (Envoy `FAIL_OPEN`).
    FailOpen,
}

/// Status of a policy: one entry per ancestor (Gateway) it affects, as Gateway API's
/// `PolicyStatus`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// One entry per ancestor.
    #[serde(default)]
    pub ancestors: Vec<PolicyAncestorStatus>,
}

/// The status of a policy for one ancestor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    /// The ancestor: a Gateway (for targets that do not resolve, the target itself).
    pub ancestor_ref: ParentReference,
    /// `trellis.dev/gateway-controller`.
    pub controller_name: String,
    /// Accepted and ResolvedRefs.
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let policy = AuthorizationPolicy::new(
            ObjectMeta::default(),
            json!({
                "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "g"}],
                "defaultAction": "Deny",
                "rules": [{"name": "a", "action": "Allow", "pathz": []}]
            }),
        );
        let err = policy.parse_spec().unwrap_err();
        assert_eq!(err.field, "spec.rules[0].pathz");
        assert!(err.message.contains("unknown field `pathz`"), "{err}");
    }

    #[test]
    fn specs_read_with_defaults() {
        let filter = WasmFilter::new(
            ObjectMeta::default(),
            json!({
                "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "r"}],
                "module": {"path": "/m.wasm", "sha256": "00"},
                "config": {"any": ["thing"]}
            }),
        );
        let spec = filter.parse_spec().unwrap();
        assert_eq!(spec.failure_policy, FailurePolicy::FailClosed);
        assert_eq!(spec.order, 0);
        assert_eq!(spec.config, Some(json!({"any": ["thing"]})));
    }
}
