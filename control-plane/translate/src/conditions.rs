//! Status conditions with Gateway API's standard types and reasons.
//!
//! The translator stamps every condition with the object's generation and a zero
//! `lastTransitionTime`; the runtime replaces the time, keeping the previous one when a
//! condition's status did not change ([`carry_transition_times`]).

use trellis_model::core::{Condition, Time, jiff};

/// Condition types.
pub mod types {
    /// The object's configuration was accepted.
    pub const ACCEPTED: &str = "Accepted";
    /// The configuration was sent to (and for Gateways, applied by) the data plane.
    pub const PROGRAMMED: &str = "Programmed";
    /// Every reference resolved.
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    /// The listener conflicts with another listener.
    pub const CONFLICTED: &str = "Conflicted";
    /// Some rules of the route are invalid and were dropped.
    pub const PARTIALLY_INVALID: &str = "PartiallyInvalid";
}

/// Condition reasons.
#[allow(missing_docs)]
pub mod reasons {
    pub const ACCEPTED: &str = "Accepted";
    pub const PROGRAMMED: &str = "Programmed";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const NO_CONFLICTS: &str = "NoConflicts";
    pub const INVALID: &str = "Invalid";
    pub const INVALID_PARAMETERS: &str = "InvalidParameters";
    pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
    pub const UNSUPPORTED_ADDRESS: &str = "UnsupportedAddress";
    pub const ADDRESS_NOT_ASSIGNED: &str = "AddressNotAssigned";
    pub const ADDRESS_NOT_USABLE: &str = "AddressNotUsable";
    pub const LISTENERS_NOT_VALID: &str = "ListenersNotValid";
    pub const PORT_UNAVAILABLE: &str = "PortUnavailable";
    pub const HOSTNAME_CONFLICT: &str = "HostnameConflict";
    pub const PROTOCOL_CONFLICT: &str = "ProtocolConflict";
    pub const INVALID_ROUTE_KINDS: &str = "InvalidRouteKinds";
    pub const INVALID_CERTIFICATE_REF: &str = "InvalidCertificateRef";
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    pub const NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
    pub const NO_MATCHING_LISTENER_HOSTNAME: &str = "NoMatchingListenerHostname";
    pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    pub const INVALID_KIND: &str = "InvalidKind";
    pub const PENDING: &str = "Pending";
}

/// A condition with `observedGeneration` and a zero transition time.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
    }
}

/// Sets transition times: a condition whose type and status match one in `previous` keeps its
/// time; any other gets `now`.
pub fn carry_transition_times(conditions: &mut [Condition], previous: &[Condition], now: &Time) {
    for c in conditions {
        c.last_transition_time = previous
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
            .map(|p| p.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
    }
}
