//! Tracing seen in traffic: Services whose apps do not forward trace context (TRL0901, from
//! the trace store) and users' collectors that do not take the spans sent to them (TRL0156,
//! from the proxies' stats).

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

/// TRL0156: span exports to a TracingPolicy's own collector (`destination.otlp`) failed over
/// the health window (`exports`: failed, answered per policy): the collector refused or never
/// answered the connection, or answered 5xx, and those spans are lost.
pub(crate) fn failing_collectors(
    input: &trellis_model::InputSet,
    exports: &BTreeMap<(String, String), (u64, u64)>,
    out: &mut Vec<Finding>,
) {
    for ((namespace, name), (failed, answered)) in exports {
        if *failed == 0 {
            continue;
        }
        let key = trellis_model::ObjectKey::new(namespace, name);
        let address = input
            .tracing_policies
            .get(&key)
            .and_then(|p| p.spec.pointer("/destination/otlp"))
            .and_then(|a| a.as_str())
            .map_or_else(|| "its collector".to_string(), |a| format!("collector {a}"));
        out.push(Finding {
            severity: Severity::Warning,
            code: Code::TraceExportFailing,
            object: ObjectRef::new("TracingPolicy", &key),
            field: "spec.destination.otlp".to_string(),
            message: format!(
                "exporting spans to {address} failed {failed} times over the health window \
                 ({answered} exports went through): the collector refused or never answered \
                 the proxies' connections, or answered with an error, so those spans are lost"
            ),
            fix: "check that the collector runs and listens on that address for OTLP over \
                  gRPC, and that the proxies can reach it; or drop destination.otlp to keep \
                  the spans in the control plane's trace store"
                .to_string(),
        });
    }
}
