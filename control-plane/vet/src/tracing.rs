//! Tracing seen in the trace store: Services whose apps do not forward trace context
//! (TRL0901, online).

use crate::{Code, Finding, ObjectRef, Severity, TraceForwarding};
use std::collections::BTreeMap;

/// Traced requests served and traced calls made, each, before a Service is judged.
pub const MIN_FORWARDING_SAMPLES: u64 = 5;

/// TRL0901: the pods of a Service served traced requests and made traced calls, and not one
/// call continued a trace: the app does not copy the trace context from the requests it
/// serves onto the calls it makes, so every trace through it breaks in two.
pub(crate) fn context_not_forwarded(
    forwarding: &BTreeMap<(String, String), TraceForwarding>,
    out: &mut Vec<Finding>,
) {
    for ((namespace, name), f) in forwarding {
        if f.served < MIN_FORWARDING_SAMPLES || f.calls < MIN_FORWARDING_SAMPLES || f.continued > 0
        {
            continue;
        }
        out.push(Finding {
            severity: Severity::Warning,
            code: Code::TraceContextDropped,
            object: ObjectRef::new("Service", &trellis_model::ObjectKey::new(namespace, name)),
            field: String::new(),
            message: format!(
                "its pods' sidecars served {} traced requests and carried {} traced calls out \
                 of the same pods, and every call started a new trace: the app does not copy \
                 the trace context of the request it serves onto the calls it makes, so each \
                 trace through it breaks in two (the caller's half and a fresh one)",
                f.served, f.calls
            ),
            fix: "copy traceparent, tracestate and x-request-id (and b3 / x-b3-* if you use \
                  B3) from each incoming request onto the outgoing requests it causes; \
                  OpenTelemetry SDKs' propagators do it (docs/observability.md lists the \
                  headers)"
                .to_string(),
        });
    }
}
