//! Trellis's telemetry kinds (`telemetry.trellis.dev/v1alpha1`): [`TracingPolicy`], which turns
//! on Envoy's native OpenTelemetry tracing for the Gateways, HTTPRoutes and Services it targets,
//! and [`HealthPolicy`], the objectives a Service's health score is measured against.
//!
//! ```text
//!  TracingPolicy ─targetRefs─► Gateway (every route of it, or one listener)
//!                            ├► HTTPRoute (its routes, or one named rule: a per-route override)
//!                            └► Service (its pods' sidecars, inbound, and every sidecar's
//!                               outbound listener for it)
//!  HealthPolicy ─targetRefs─► Service (availability objective, p99 latency objective)
//! ```
//!
//! Both keep the spec as written and are parsed strictly by the translator, like the policy
//! kinds ([`crate::policy`]): a misspelt field is an `Accepted=False` condition naming it.

use crate::policy::{PolicyObject, PolicyTargetReference};
use serde::{Deserialize, Serialize};

/// The API group of the telemetry kinds.
pub const GROUP: &str = "telemetry.trellis.dev";

/// `TracingPolicy`: sampling, tags and the destination of the spans of its targets.
pub type TracingPolicy = PolicyObject<TracingPolicySpec>;
/// `HealthPolicy`: the objectives of the Services it targets.
pub type HealthPolicy = PolicyObject<HealthPolicySpec>;

/// The spec of a TracingPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingPolicySpec {
    /// What is traced: Gateways (optionally one listener), HTTPRoutes (optionally one named
    /// rule) and Services, in the policy's namespace.
    pub target_refs: Vec<PolicyTargetReference>,
    /// The share of requests that start a trace, 0–100 in steps of 0.01 (1 by default). A
    /// request arriving with a sampled trace context is traced whatever this says (when the
    /// context is trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_percent: Option<f64>,
    /// Tags added to every span.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_tags: Vec<CustomTag>,
    /// W3C baggage keys (of the `baggage` request header) copied onto spans as tags
    /// `baggage.<key>`, by the policy filter (where the control plane serves it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baggage_tags: Vec<String>,
    /// Whether a Gateway continues the trace context (`traceparent`, `tracestate`) a client
    /// sends. False by default: at the edge of the mesh a client could otherwise force
    /// sampling or join its requests to traces it does not own, so the context is removed and
    /// every request starts a fresh trace. Sidecars always continue their callers' context.
    #[serde(default)]
    pub trust_incoming_context: bool,
    /// Where spans go (the control plane's trace store by default).
    #[serde(default)]
    pub destination: TraceDestination,
}

/// A span tag: a literal value, a request header or an environment variable of the proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTag {
    /// The tag's name.
    pub name: String,
    /// A fixed value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<String>,
    /// The value of this request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The value of this environment variable of the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The value when the header or variable is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
}

/// Where a TracingPolicy's spans go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceDestination {
    /// An OpenTelemetry collector speaking OTLP over gRPC (plaintext HTTP/2), as `HOST:PORT`
    /// (a DNS name or an IP address); without it, the control plane's trace store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<String>,
}

/// The spec of a HealthPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthPolicySpec {
    /// The Services (kind `Service`, group `""`) in the policy's namespace.
    pub target_refs: Vec<PolicyTargetReference>,
    /// The share of requests that must succeed, in percent (99.9 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_percent: Option<f64>,
    /// The 99th-percentile latency objective in milliseconds; without it, latency is judged
    /// against the Service's learned baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_latency_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_spec;
    use serde_json::json;

    #[test]
    fn a_tracing_policy_reads_as_written_and_refuses_unknown_fields() {
        let spec: TracingPolicySpec = parse_spec(&json!({
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "web"}],
            "samplingPercent": 10,
            "customTags": [{"name": "env", "literal": "prod"}],
            "destination": {"otlp": "collector.obs:4317"},
        }))
        .unwrap();
        assert_eq!(spec.sampling_percent, Some(10.0));
        assert!(!spec.trust_incoming_context);
        assert_eq!(spec.destination.otlp.as_deref(), Some("collector.obs:4317"));
        let e = parse_spec::<TracingPolicySpec>(&json!({
            "targetRefs": [], "samplingPercentage": 5
        }))
        .unwrap_err();
        assert!(e.field.starts_with("spec"), "{e}");
        assert!(e.message.contains("samplingPercentage"), "{e}");
    }
}
