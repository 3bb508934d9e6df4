//! Status conditions and the one shape of a user mistake.
//!
//! Every mistake the translator finds in a user's object is a [`Problem`]: the condition it
//! shows in (`Accepted`, `ResolvedRefs`, ...), a standard [`Reason`] and a message naming the
//! field. Problems become conditions; they are never errors, and never stop other objects (or
//! other rules of the same route) from being served.
//!
//! The translator stamps every condition with the object's generation and a zero
//! `lastTransitionTime`; the runtime replaces the time, keeping the previous one when a
//! condition's status did not change ([`carry_transition_times`]).

use std::fmt;
use trellis_model::core::{Condition, Time, jiff};

macro_rules! names {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[doc = $doc:literal])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis enum $name {
            $($(#[doc = $doc])* $variant,)+
        }

        impl $name {
            /// The name as written in status.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                self == other.as_str()
            }
        }
    };
}

names! {
    /// Condition types.
    pub enum ConditionType {
        /// The object's configuration was accepted.
        Accepted = "Accepted",
        /// The configuration was sent to (and for Gateways, applied by) the data plane.
        Programmed = "Programmed",
        /// Every reference resolved.
        ResolvedRefs = "ResolvedRefs",
        /// The listener conflicts with another listener.
        Conflicted = "Conflicted",
        /// Some rules of the route are invalid and were dropped.
        PartiallyInvalid = "PartiallyInvalid",
        /// A BackendTrafficPolicy injects faults (Trellis's own type: chaos is on, and where).
        FaultsInjected = "FaultsInjected",
    }
}

names! {
    /// Condition reasons: Gateway API's standard ones, and for Trellis's policy kinds those of
    /// the policy attachment GEP (GEP-713) plus two for Wasm modules.
    pub enum Reason {
        /// The object was accepted.
        Accepted = "Accepted",
        /// The object was programmed.
        Programmed = "Programmed",
        /// Every reference resolved.
        ResolvedRefs = "ResolvedRefs",
        /// No listener conflicts with this one.
        NoConflicts = "NoConflicts",
        /// The object is invalid.
        Invalid = "Invalid",
        /// The GatewayClass's parameters or a Gateway's infrastructure are invalid.
        InvalidParameters = "InvalidParameters",
        /// A field holds a value Trellis does not support.
        UnsupportedValue = "UnsupportedValue",
        /// A listener or backend protocol Trellis does not support.
        UnsupportedProtocol = "UnsupportedProtocol",
        /// A Gateway address of a type Trellis does not support.
        UnsupportedAddress = "UnsupportedAddress",
        /// No listener of the Gateway is valid.
        ListenersNotValid = "ListenersNotValid",
        /// Listeners on one port share a hostname.
        HostnameConflict = "HostnameConflict",
        /// Listeners on one port use different protocols.
        ProtocolConflict = "ProtocolConflict",
        /// A listener allows route kinds Trellis does not serve.
        InvalidRouteKinds = "InvalidRouteKinds",
        /// A listener's certificate reference does not resolve to a usable certificate.
        InvalidCertificateRef = "InvalidCertificateRef",
        /// A cross-namespace reference no ReferenceGrant allows.
        RefNotPermitted = "RefNotPermitted",
        /// No listener of the parent allows the route.
        NotAllowedByListeners = "NotAllowedByListeners",
        /// No listener hostname intersects the route's hostnames.
        NoMatchingListenerHostname = "NoMatchingListenerHostname",
        /// The parent reference names no listener or port of the parent.
        NoMatchingParent = "NoMatchingParent",
        /// A backend does not exist.
        BackendNotFound = "BackendNotFound",
        /// A reference names a kind Trellis does not support there.
        InvalidKind = "InvalidKind",
        /// Not yet done.
        Pending = "Pending",
        /// Faults are injected into requests on purpose.
        Injecting = "Injecting",
        /// A policy's target does not exist or is not served by Trellis.
        TargetNotFound = "TargetNotFound",
        /// A WasmFilter's module could not be read or fetched.
        ModuleNotFound = "ModuleNotFound",
        /// A WasmFilter's module does not have the SHA-256 its spec names.
        ChecksumMismatch = "ChecksumMismatch",
        /// Another policy of the same scope takes precedence.
        Conflicted = "Conflicted",
    }
}

impl ConditionType {
    /// Whether True is the abnormal state of this condition (Gateway API's "negative polarity"
    /// conditions).
    pub fn true_when_wrong(self) -> bool {
        matches!(
            self,
            ConditionType::Conflicted | ConditionType::PartiallyInvalid
        )
    }
}

/// A user mistake (or a reference that does not resolve): the condition it is reported in, the
/// standard reason, and a message naming the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The condition it turns false.
    pub condition: ConditionType,
    /// The standard reason.
    pub reason: Reason,
    /// What is wrong, starting with the field (`spec.rules[1].matches[0].path.value: ...`).
    pub message: String,
}

impl Problem {
    /// A problem reported in `Accepted`.
    pub fn not_accepted(reason: Reason, message: impl Into<String>) -> Problem {
        Problem {
            condition: ConditionType::Accepted,
            reason,
            message: message.into(),
        }
    }

    /// A problem reported in `ResolvedRefs`.
    pub fn unresolved(reason: Reason, message: impl Into<String>) -> Problem {
        Problem {
            condition: ConditionType::ResolvedRefs,
            reason,
            message: message.into(),
        }
    }

    /// A listener conflict, reported in `Conflicted`.
    pub fn conflict(reason: Reason, message: impl Into<String>) -> Problem {
        Problem {
            condition: ConditionType::Conflicted,
            reason,
            message: message.into(),
        }
    }

    /// An unsupported value in a field: `<field>: <message>`, reported in `Accepted`.
    pub fn unsupported(field: impl fmt::Display, message: impl fmt::Display) -> Problem {
        Problem::not_accepted(Reason::UnsupportedValue, format!("{field}: {message}"))
    }

    /// The condition saying so: False for `Accepted`, `ResolvedRefs` and `Programmed`, True
    /// for the conditions whose True is the abnormal state (`Conflicted`, `PartiallyInvalid`).
    pub fn to_condition(&self, generation: Option<i64>) -> Condition {
        condition(
            self.condition,
            self.condition.true_when_wrong(),
            self.reason,
            self.message.clone(),
            generation,
        )
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.condition, self.reason, self.message)
    }
}

/// A condition with `observedGeneration` and a zero transition time.
pub fn condition(
    type_: ConditionType,
    status: bool,
    reason: Reason,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.as_str().to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.as_str().to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_becomes_a_false_condition_of_its_type_with_its_reason() {
        let p = Problem::unsupported("spec.rules[0].matches[0].path.value", "bad regex");
        let c = p.to_condition(Some(3));
        assert_eq!(c.type_, "Accepted");
        assert_eq!(c.status, "False");
        assert_eq!(c.reason, "UnsupportedValue");
        assert_eq!(c.message, "spec.rules[0].matches[0].path.value: bad regex");
        assert_eq!(c.observed_generation, Some(3));
        let r = Problem::unresolved(Reason::BackendNotFound, "Service default/x not found");
        assert_eq!(r.to_condition(None).type_, ConditionType::ResolvedRefs);
    }
}
