//! The status Trellis reports for the objects it manages.

use std::collections::BTreeMap;
use trellis_model::ObjectKey;
use trellis_model::gateway::{GatewayClassStatus, GatewayStatus, RouteStatus};
use trellis_model::policy::PolicyStatus;
use trellis_model::security::PeerAuthenticationStatus;

/// Status of every managed object, by key. Objects Trellis does not manage (another
/// controller's GatewayClass, Gateways of such classes, routes not attached to Trellis
/// Gateways) have no entry.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusSet {
    /// GatewayClasses naming Trellis's controller.
    pub gateway_classes: BTreeMap<ObjectKey, GatewayClassStatus>,
    /// Gateways of those classes.
    pub gateways: BTreeMap<ObjectKey, GatewayStatus>,
    /// HTTPRoutes with at least one parentRef to such a Gateway.
    pub http_routes: BTreeMap<ObjectKey, RouteStatus>,
    /// Every AuthorizationPolicy (policies are Trellis's own kinds).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub authorization_policies: BTreeMap<ObjectKey, PolicyStatus>,
    /// Every RateLimitPolicy.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_limit_policies: BTreeMap<ObjectKey, PolicyStatus>,
    /// Every WasmFilter.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub wasm_filters: BTreeMap<ObjectKey, PolicyStatus>,
    /// Every BackendTrafficPolicy.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub backend_traffic_policies: BTreeMap<ObjectKey, PolicyStatus>,
    /// Every ExternalService.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub external_services: BTreeMap<ObjectKey, PolicyStatus>,
    /// Every TracingPolicy.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tracing_policies: BTreeMap<ObjectKey, PolicyStatus>,
    /// Every HealthPolicy.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub health_policies: BTreeMap<ObjectKey, PolicyStatus>,
    /// Every PeerAuthentication.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub peer_authentications: BTreeMap<ObjectKey, PeerAuthenticationStatus>,
    /// Every pod in the mesh: its sidecar class, and what keeps it from serving (Pods' status
    /// belongs to the kubelet, so this is reported here rather than written to the Pod).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sidecars: BTreeMap<ObjectKey, SidecarStatus>,
}

/// A pod in the mesh, as the control plane sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SidecarStatus {
    /// The sidecar class whose configuration the pod's sidecar is served
    /// (`sidecar/<namespace>/<hash of its inbound ports>`).
    pub class: String,
    /// The pod's IPs (`status.podIPs`).
    pub ips: Vec<String>,
    /// The pod's Ready condition.
    pub ready: bool,
    /// Why the pod cannot take traffic yet, if it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// With workload identity: the SPIFFE ID its sidecar presents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// With workload identity: the mutual-TLS mode of its ports (PeerAuthentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<crate::ir::InboundMtlsIr>,
}
