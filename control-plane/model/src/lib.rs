//! The typed input set Trellis translates.
//!
//! Every source (the file provider, the Kubernetes provider) produces the same [`InputSet`]: the
//! Kubernetes objects that matter to Trellis, keyed by identity and sorted, so translation is a
//! pure, deterministic function of it.
//!
//! ```text
//!  files / API server ──► Object ──► InputSet ──► translate ──► IR + status ──► xDS
//! ```
//!
//! Gateway API kinds are Trellis's own serde types ([`gateway`]); core kinds (Service,
//! EndpointSlice, Pod, Secret, Namespace, ConfigMap) are `k8s-openapi`'s. Which pods are in the
//! mesh, and how a Service port is spoken, is decided in [`mesh`]. Trellis's own policy kinds
//! (`policy.trellis.dev`) are in [`policy`], PeerAuthentication (`security.trellis.dev`) in
//! [`security`], TracingPolicy and HealthPolicy (`telemetry.trellis.dev`) in [`telemetry`],
//! BackendTrafficPolicy (`policy.trellis.dev`) in [`resilience`] and ExternalService
//! (`networking.trellis.dev`) in [`egress`].

pub mod egress;
pub mod gateway;
mod input;
pub mod mesh;
pub mod policy;
pub mod resilience;
pub mod security;
pub mod telemetry;

pub use input::{InputSet, Kind, KindVisitor, Object, ObjectKey, Objects};

/// Core Kubernetes types re-exported for sources and the translator.
pub mod core {
    pub use k8s_openapi::api::core::v1::{
        ConfigMap, Container, ContainerPort, Namespace, Pod, PodCondition, PodIP, PodSpec,
        PodStatus, Secret, Service, ServicePort,
    };
    pub use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
    pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        Condition, LabelSelector, LabelSelectorRequirement, ObjectMeta, Time,
    };
    pub use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    pub use k8s_openapi::jiff;
}

/// The controller name Trellis answers to in `GatewayClass.spec.controllerName`.
pub const CONTROLLER_NAME: &str = "trellis.dev/gateway-controller";

/// The controller name of Trellis's mesh, in the status of HTTPRoutes whose parent is a
/// Service.
pub const MESH_CONTROLLER_NAME: &str = "trellis.dev/mesh-controller";
