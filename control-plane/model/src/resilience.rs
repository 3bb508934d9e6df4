//! `BackendTrafficPolicy` (`policy.trellis.dev/v1alpha1`): chaos and protection for the traffic
//! to a backend — fault injection, circuit breaking and outlier detection — attached like the
//! other policy kinds, and shaped after Envoy Gateway's BackendTrafficPolicy.
//!
//! ```text
//!  BackendTrafficPolicy ─targetRefs─► Gateway (every route of it, or one listener's)  faults
//!                                   ├► HTTPRoute (its routes, or one named rule; a consumer
//!                                   │  route in the caller's namespace: that namespace only)
//!                                   └► Service (every caller: Gateways' routes to it and
//!                                      every sidecar's)                    faults, limits,
//!                                                                          outlier detection
//! ```
//!
//! The spec is kept as written and parsed strictly by the translator, so a misspelt field, a
//! percentage over 100 or a negative duration is an `Accepted=False` condition naming the
//! field, never a configuration Envoy refuses.

use crate::policy::{PolicyObject, PolicyTargetReference};
use serde::{Deserialize, Serialize};

/// `BackendTrafficPolicy`: faults, circuit breakers and outlier detection for its targets.
pub type BackendTrafficPolicy = PolicyObject<BackendTrafficPolicySpec>;

/// The spec of a BackendTrafficPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendTrafficPolicySpec {
    /// Gateways (optionally one listener), HTTPRoutes (optionally one named rule) and
    /// Services, in the policy's namespace.
    pub target_refs: Vec<PolicyTargetReference>,
    /// Requests aborted or delayed on purpose (off unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_injection: Option<FaultInjection>,
    /// Limits on the connections and requests to a Service (Service targets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Endpoints that keep failing taken out of the load balancer for a while (Service
    /// targets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
}

/// Faults: an abort, a delay, or both, optionally only for requests carrying headers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultInjection {
    /// Answer a share of requests with an error instead of forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
    /// Hold a share of requests before forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Only requests carrying all these headers (exact values) are faulted: a tester can
    /// target their own requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<FaultHeader>,
}

/// An abort: an HTTP status, or a gRPC status for gRPC requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// The HTTP status answered (200–599).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i64>,
    /// The gRPC status answered (0–16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<i64>,
    /// The share of requests aborted, 0–100 (up to four decimals; 100 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
}

/// A delay before the request is forwarded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// How long, as a Gateway API duration (`200ms`, `1s`).
    pub fixed_delay: String,
    /// The share of requests delayed, 0–100 (up to four decimals; 100 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
}

/// A request header a fault requires.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultHeader {
    /// The header's name.
    pub name: String,
    /// Its exact value.
    pub value: String,
}

/// Circuit-breaker thresholds of each proxy's connections to a Service (every limit is per
/// calling proxy, as in Envoy).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Connections open to all of the Service's endpoints at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    /// Requests waiting for a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<i64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_requests: Option<i64>,
    /// Retries in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_retries: Option<i64>,
    /// Retries in flight as a share of requests in flight (replaces `maxParallelRetries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// Retries allowed as a share of the active requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Retries in flight at most this share of the requests in flight, 0–100 (20 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Retries always allowed whatever the share (3 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<i64>,
}

/// Passive health checking: endpoints that fail in a row are ejected for a while.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// 5xx answers in a row (including local failures, unless split) that eject an
    /// endpoint (5 by default; 0 turns this off).
    #[serde(
        default,
        rename = "consecutive5xxErrors",
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_5xx_errors: Option<i64>,
    /// 502, 503 and 504 answers (and connection failures) in a row that eject an endpoint
    /// (off unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<i64>,
    /// Failures to connect, resets and timeouts in a row that eject an endpoint (5 by
    /// default; counted apart from answers only with `splitExternalLocalOriginErrors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<i64>,
    /// Count local-origin failures apart from the endpoint's answers.
    #[serde(default)]
    pub split_external_local_origin_errors: bool,
    /// How often ejections are reviewed (`10s` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// How long a first ejection lasts; each further ejection of the endpoint lasts this times
    /// the number of its ejections (`30s` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    /// The most endpoints ejected at once, in percent of the Service's (10 by default; at
    /// least one endpoint can always be ejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_spec;
    use serde_json::json;

    #[test]
    fn a_backend_traffic_policy_reads_as_written_and_refuses_unknown_fields() {
        let spec: BackendTrafficPolicySpec = parse_spec(&json!({
            "targetRefs": [{"group": "", "kind": "Service", "name": "api"}],
            "faultInjection": {
                "abort": {"httpStatus": 503, "percentage": 30},
                "delay": {"fixedDelay": "200ms"},
                "headers": [{"name": "x-chaos", "value": "me"}],
            },
            "circuitBreaker": {"maxParallelRequests": 10},
            "outlierDetection": {"consecutive5xxErrors": 3, "baseEjectionTime": "5s"},
        }))
        .unwrap();
        let fault = spec.fault_injection.unwrap();
        assert_eq!(fault.abort.unwrap().http_status, Some(503));
        assert_eq!(fault.delay.unwrap().fixed_delay, "200ms");
        let outlier = spec.outlier_detection.unwrap();
        assert_eq!(outlier.consecutive_5xx_errors, Some(3));
        let e = parse_spec::<BackendTrafficPolicySpec>(&json!({
            "targetRefs": [], "circuitBreaker": {"maxRequests": 5}
        }))
        .unwrap_err();
        assert!(e.message.contains("maxRequests"), "{e}");
    }
}
