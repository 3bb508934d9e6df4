//! The telemetry kinds: a TracingPolicy's spec checked into a [`TracingIr`] (attached to
//! chains, routes and sidecars by [`crate::policy`], with the policy kinds' status and
//! last-valid-spec machinery), and HealthPolicies turned into each Service's objectives.
//!
//! ```text
//!  TracingPolicy ──check()──► (targets, TracingIr) ──► policy::attach (Gateways, HTTPRoutes,
//!                                                       Services) ──► HCM / route / sidecar
//!  HealthPolicy ──health_objectives()──► { Service -> ObjectiveIr } + status per Service
//! ```

use crate::conditions::{ConditionType, Problem, Reason, condition};
use crate::ir::{CollectorClusterIr, CollectorIr, TagIr, TagValueIr, TracingIr};
use crate::status::StatusSet;
use std::collections::BTreeMap;
use trellis_model::gateway::ParentReference;
use trellis_model::policy::{PolicyAncestorStatus, PolicyStatus, SpecError, parse_spec};
use trellis_model::telemetry::{CustomTag, HealthPolicySpec, TracingPolicySpec};
use trellis_model::{CONTROLLER_NAME, InputSet, ObjectKey};

/// Span tags per policy at most.
const MAX_TAGS: usize = 32;
/// Longest literal tag value.
const MAX_LITERAL: usize = 256;

fn invalid(field: impl std::fmt::Display, message: impl std::fmt::Display) -> Problem {
    Problem::not_accepted(Reason::Invalid, format!("{field}: {message}"))
}

fn spec_error(e: SpecError) -> Problem {
    Problem::not_accepted(Reason::Invalid, e.to_string())
}

/// A checked TracingPolicy: its targets and what it asks of a connection manager (the
/// `service_name` is filled in where it is applied).
pub(crate) fn check_tracing(
    key: &ObjectKey,
    spec: &serde_json::Value,
) -> Result<(Vec<trellis_model::policy::PolicyTargetReference>, TracingIr), Problem> {
    let spec: TracingPolicySpec = parse_spec(spec).map_err(spec_error)?;
    let sampling = sampling(spec.sampling_percent)?;
    if spec.custom_tags.len() > MAX_TAGS {
        return Err(invalid(
            "spec.customTags",
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    let mut custom_tags = Vec::new();
    for (i, tag) in spec.custom_tags.iter().enumerate() {
        custom_tags.push(custom_tag(i, tag)?);
    }
    if spec.baggage_tags.len() > 16 {
        return Err(invalid("spec.baggageTags", "at most 16 keys"));
    }
    for (i, key) in spec.baggage_tags.iter().enumerate() {
        if !is_token(key) || key.contains('.') {
            return Err(invalid(
                format!("spec.baggageTags[{i}]"),
                format!("{key:?} is not a baggage key (1–64 letters, digits, '-' or '_')"),
            ));
        }
    }
    let mut baggage_tags = spec.baggage_tags.clone();
    baggage_tags.sort();
    baggage_tags.dedup();
    let collector = match &spec.destination.otlp {
        None => CollectorIr::ControlPlane,
        Some(address) => {
            let (host, port) =
                host_port(address).map_err(|message| invalid("spec.destination.otlp", message))?;
            CollectorIr::Otlp(CollectorClusterIr {
                name: format!("tracing/{}/{}", key.namespace, key.name),
                host,
                port,
            })
        }
    };
    Ok((
        spec.target_refs,
        TracingIr {
            policy: format!("{}/{}", key.namespace, key.name),
            sampling,
            custom_tags,
            trust_incoming_context: spec.trust_incoming_context,
            collector,
            service_name: String::new(),
            baggage_tags,
        },
    ))
}

/// A percentage (1 when unset) in hundredths of a percent.
fn sampling(percent: Option<f64>) -> Result<u32, Problem> {
    let percent = percent.unwrap_or(1.0);
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err(invalid(
            "spec.samplingPercent",
            format!("{percent} is not between 0 and 100"),
        ));
    }
    let hundredths = (percent * 100.0).round();
    if (hundredths - percent * 100.0).abs() > 1e-6 {
        return Err(invalid(
            "spec.samplingPercent",
            format!("{percent}: at most two decimal places (0.01% steps)"),
        ));
    }
    // In 0..=10000, checked above.
    Ok(hundredths as u32)
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn custom_tag(i: usize, tag: &CustomTag) -> Result<TagIr, Problem> {
    let field = format!("spec.customTags[{i}]");
    if !is_token(&tag.name) {
        return Err(invalid(
            format!("{field}.name"),
            "1–64 letters, digits, '-', '_' or '.'",
        ));
    }
    let default = tag.default_value.clone().unwrap_or_default();
    if default.len() > MAX_LITERAL {
        return Err(invalid(
            format!("{field}.defaultValue"),
            format!("at most {MAX_LITERAL} bytes"),
        ));
    }
    let value = match (&tag.literal, &tag.header, &tag.environment) {
        (Some(value), None, None) => {
            if value.len() > MAX_LITERAL {
                return Err(invalid(
                    format!("{field}.literal"),
                    format!("at most {MAX_LITERAL} bytes"),
                ));
            }
            TagValueIr::Literal(value.clone())
        }
        (None, Some(header), None) => {
            if !is_token(header) || header.contains('.') {
                return Err(invalid(
                    format!("{field}.header"),
                    format!("{header:?} is not a header name"),
                ));
            }
            TagValueIr::Header {
                name: header.to_ascii_lowercase(),
                default,
            }
        }
        (None, None, Some(variable)) => {
            if variable.is_empty()
                || variable.len() > 64
                || !variable
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(invalid(
                    format!("{field}.environment"),
                    format!("{variable:?} is not an environment variable name"),
                ));
            }
            TagValueIr::Environment {
                name: variable.clone(),
                default,
            }
        }
        _ => {
            return Err(invalid(
                field,
                "set exactly one of literal, header and environment",
            ));
        }
    };
    Ok(TagIr {
        name: tag.name.clone(),
        value,
    })
}

/// `HOST:PORT` with a DNS name or an IP address (`[v6]:port`).
fn host_port(address: &str) -> Result<(String, u16), String> {
    let bad = || format!("{address:?} is not HOST:PORT");
    let (host, port) = match address.strip_prefix('[') {
        Some(rest) => {
            let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
            host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            (host, port)
        }
        None => address.rsplit_once(':').ok_or_else(bad)?,
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    if !crate::hostname::is_dns_name(host) && host.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("{host:?} is neither a DNS name nor an IP address"));
    }
    Ok((host.to_string(), port))
}

/// A Service's objectives, from the HealthPolicy targeting it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ObjectiveIr {
    /// The HealthPolicy (`<ns>/<name>`).
    pub policy: String,
    /// The share of requests that must succeed (0–1).
    pub availability: f64,
    /// The 99th-percentile latency objective, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_latency_ms: Option<f64>,
}

fn check_health(spec: &serde_json::Value) -> Result<(Vec<String>, ObjectiveIr), Problem> {
    let spec: HealthPolicySpec = parse_spec(spec).map_err(spec_error)?;
    if spec.target_refs.is_empty() {
        return Err(invalid(
            "spec.targetRefs",
            "at least one Service is required",
        ));
    }
    if spec.target_refs.len() > 16 {
        return Err(invalid("spec.targetRefs", "at most 16 targets"));
    }
    let mut names = Vec::new();
    for (i, t) in spec.target_refs.iter().enumerate() {
        if t.kind != "Service" || !(t.group.is_empty() || t.group == "core") {
            return Err(invalid(
                format!("spec.targetRefs[{i}]"),
                "a HealthPolicy targets Services (group \"\", kind Service)",
            ));
        }
        if t.section_name.is_some() {
            return Err(invalid(
                format!("spec.targetRefs[{i}].sectionName"),
                "is not supported (the objectives are the whole Service's)",
            ));
        }
        names.push(t.name.clone());
    }
    let availability = spec.availability_percent.unwrap_or(99.9);
    if !availability.is_finite() || !(50.0..100.0).contains(&availability) {
        return Err(invalid(
            "spec.availabilityPercent",
            format!("{availability} is not at least 50 and below 100"),
        ));
    }
    if let Some(p99) = spec.p99_latency_ms
        && (!p99.is_finite() || !(1.0..=600_000.0).contains(&p99))
    {
        return Err(invalid(
            "spec.p99LatencyMs",
            format!("{p99} is not between 1 and 600000"),
        ));
    }
    Ok((
        names,
        ObjectiveIr {
            policy: String::new(),
            availability: availability / 100.0,
            p99_latency_ms: spec.p99_latency_ms,
        },
    ))
}

/// Every HealthPolicy: the objectives of the Services they target (for a Service targeted by
/// several, the first policy by namespace and name), and their status.
pub(crate) fn health_objectives(
    input: &InputSet,
    status: &mut StatusSet,
) -> BTreeMap<ObjectKey, ObjectiveIr> {
    let mut out = BTreeMap::new();
    for (key, policy) in &input.health_policies {
        let generation = policy.metadata.generation;
        let service_ref = |name: &str| ParentReference {
            group: String::new(),
            kind: "Service".to_string(),
            namespace: Some(key.namespace.clone()),
            name: name.to_string(),
            section_name: None,
            port: None,
        };
        let ancestors = match check_health(&policy.spec) {
            Err(problem) => vec![PolicyAncestorStatus {
                ancestor_ref: ParentReference {
                    group: trellis_model::telemetry::GROUP.to_string(),
                    kind: "HealthPolicy".to_string(),
                    namespace: Some(key.namespace.clone()),
                    name: key.name.clone(),
                    section_name: None,
                    port: None,
                },
                controller_name: CONTROLLER_NAME.to_string(),
                conditions: vec![condition(
                    ConditionType::Accepted,
                    false,
                    Reason::Invalid,
                    format!("{}; the policy is not applied", problem.message),
                    generation,
                )],
            }],
            Ok((names, mut objective)) => {
                objective.policy = format!("{}/{}", key.namespace, key.name);
                names
                    .iter()
                    .map(|name| {
                        let service = ObjectKey::new(&key.namespace, name);
                        let (accepted, reason, message) = if !input.services.contains_key(&service)
                        {
                            (
                                false,
                                Reason::TargetNotFound,
                                format!("Service {service} does not exist"),
                            )
                        } else if let Some(other) =
                            out.get(&service).map(|o: &ObjectiveIr| &o.policy)
                        {
                            (
                                false,
                                Reason::Conflicted,
                                format!(
                                    "HealthPolicy {other} already sets the objectives of \
                                     Service {service}"
                                ),
                            )
                        } else {
                            out.insert(service.clone(), objective.clone());
                            (true, Reason::Accepted, "Policy accepted".to_string())
                        };
                        PolicyAncestorStatus {
                            ancestor_ref: service_ref(name),
                            controller_name: CONTROLLER_NAME.to_string(),
                            conditions: vec![condition(
                                ConditionType::Accepted,
                                accepted,
                                reason,
                                message,
                                generation,
                            )],
                        }
                    })
                    .collect()
            }
        };
        status
            .health_policies
            .insert(key.clone(), PolicyStatus { ancestors });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sampling_is_kept_in_hundredths_of_a_percent() {
        assert_eq!(sampling(None).unwrap(), 100);
        assert_eq!(sampling(Some(10.0)).unwrap(), 1000);
        assert_eq!(sampling(Some(0.01)).unwrap(), 1);
        assert_eq!(sampling(Some(100.0)).unwrap(), 10000);
        assert!(sampling(Some(100.5)).is_err());
        assert!(sampling(Some(-1.0)).is_err());
        assert!(sampling(Some(f64::NAN)).is_err());
        assert!(sampling(Some(0.001)).is_err());
    }

    #[test]
    fn collector_addresses_are_host_and_port() {
        assert_eq!(
            host_port("collector.obs:4317").unwrap(),
            ("collector.obs".to_string(), 4317)
        );
        assert_eq!(
            host_port("10.0.0.1:4317").unwrap(),
            ("10.0.0.1".to_string(), 4317)
        );
        assert_eq!(host_port("[::1]:4317").unwrap(), ("::1".to_string(), 4317));
        for bad in [
            "collector",
            "collector:0",
            "collector:x",
            "Coll_ector:1",
            ":4317",
            "a b:1",
        ] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mistakes_name_their_field() {
        let key = ObjectKey::new("demo", "t");
        let check = |spec| check_tracing(&key, &spec).unwrap_err().message;
        assert!(
            check(json!({"targetRefs": [], "customTags": [{"name": "a", "literal": "x", "header": "y"}]}))
                .contains("spec.customTags[0]: set exactly one")
        );
        assert!(
            check(json!({"targetRefs": [], "customTags": [{"name": "a b", "literal": "x"}]}))
                .contains("spec.customTags[0].name")
        );
        assert!(
            check(json!({"targetRefs": [], "destination": {"otlp": "nowhere"}}))
                .contains("spec.destination.otlp")
        );
        let (_, t) = check_tracing(
            &key,
            &json!({"targetRefs": [], "samplingPercent": 2.5,
                    "customTags": [{"name": "user", "header": "X-User", "defaultValue": "-"}]}),
        )
        .unwrap();
        assert_eq!(t.sampling, 250);
        assert_eq!(
            t.custom_tags[0].value,
            TagValueIr::Header {
                name: "x-user".into(),
                default: "-".into()
            }
        );
        assert_eq!(t.collector, CollectorIr::ControlPlane);
        assert!(!t.trust_incoming_context);
    }

    #[test]
    fn health_objectives_are_checked() {
        let (names, o) = check_health(&json!({
            "targetRefs": [{"kind": "Service", "name": "b"}],
            "availabilityPercent": 99.5, "p99LatencyMs": 250
        }))
        .unwrap();
        assert_eq!(names, ["b"]);
        assert!((o.availability - 0.995).abs() < 1e-9);
        assert_eq!(o.p99_latency_ms, Some(250.0));
        for bad in [
            json!({"targetRefs": [{"kind": "Gateway", "name": "b"}]}),
            json!({"targetRefs": [{"kind": "Service", "name": "b"}], "availabilityPercent": 100}),
            json!({"targetRefs": [{"kind": "Service", "name": "b"}], "p99LatencyMs": 0}),
            json!({"targetRefs": []}),
        ] {
            assert!(check_health(&bad).is_err(), "{bad}");
        }
    }
}
