//! Findings from what is already reported elsewhere: problems reading files (TRL0001), status
//! conditions that are not fine (TRL0002, or TRL0101 for references to nothing), and
//! ReferenceGrants naming objects that do not exist (TRL0101; grants have no status).

use crate::{Code, Finding, ObjectRef, Severity};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use trellis_model::InputSet;
use trellis_model::policy::PolicyStatus;
use trellis_sources::Diagnostic;
use trellis_translate::StatusSet;

/// TRL0001: every problem reading the files.
pub(crate) fn diagnostics(diagnostics: &[Diagnostic], out: &mut Vec<Finding>) {
    for d in diagnostics {
        let mut field = String::new();
        if let Some(document) = d.document {
            field.push_str(&format!("document {document}"));
        }
        if let Some(line) = d.line {
            if !field.is_empty() {
                field.push_str(", ");
            }
            field.push_str(&format!("line {line}"));
        }
        let message = match &d.object {
            Some(object) => format!("{object}: {}", d.message),
            None => d.message.clone(),
        };
        out.push(Finding {
            severity: match d.severity {
                trellis_sources::Severity::Error => Severity::Error,
                trellis_sources::Severity::Warning => Severity::Warning,
            },
            code: Code::InvalidFile,
            object: ObjectRef {
                kind: "File".to_string(),
                namespace: String::new(),
                name: d.file.clone(),
            },
            field,
            message,
            fix: "correct the file; until then the last good content of it stays in force"
                .to_string(),
        });
    }
}

/// Reasons that mean a reference names nothing.
const DANGLING: [&str; 3] = ["TargetNotFound", "BackendNotFound", "InvalidCertificateRef"];

/// Whether a condition says something is wrong: a positive condition that is False, or a
/// negative one (Conflicted, OverlappingTLSConfig) that is True.
fn is_problem(c: &Condition) -> bool {
    match c.type_.as_str() {
        "Conflicted" | "OverlappingTLSConfig" => c.status == "True",
        "Accepted" | "ResolvedRefs" | "Programmed" | "Ready" => c.status == "False",
        _ => false,
    }
}

/// One finding per problem condition of an object.
fn from_conditions(object: &ObjectRef, at: &str, conditions: &[Condition], out: &mut Vec<Finding>) {
    for c in conditions
        .iter()
        .filter(|c| c.type_ == "FaultsInjected" && c.status == "True")
    {
        out.push(Finding {
            severity: Severity::Info,
            code: Code::FaultsInjected,
            object: object.clone(),
            field: format!("{at}.conditions[FaultsInjected]"),
            message: format!("chaos is on: {}", c.message),
            fix: "nothing, if the faults are meant; delete the policy's faultInjection (or the \
                  policy) to stop them"
                .to_string(),
        });
    }
    for c in conditions.iter().filter(|c| is_problem(c)) {
        let dangling = DANGLING.contains(&c.reason.as_str());
        let (severity, fix) = if dangling {
            (
                Severity::Error,
                "create the object it names, or correct the reference".to_string(),
            )
        } else if c.type_ == "Accepted" || c.type_ == "Programmed" {
            (
                Severity::Error,
                format!("see reason {}: correct the field it names", c.reason),
            )
        } else {
            (
                Severity::Warning,
                format!("see reason {}: correct the field it names", c.reason),
            )
        };
        let field = if at.is_empty() {
            format!("status.conditions[{}]", c.type_)
        } else {
            format!("{at}.conditions[{}]", c.type_)
        };
        out.push(Finding {
            severity,
            code: if dangling {
                Code::DanglingReference
            } else {
                Code::StatusCondition
            },
            object: object.clone(),
            field,
            message: format!("{} {} ({}): {}", c.type_, c.status, c.reason, c.message),
            fix,
        });
    }
}

fn policies(
    kind: &str,
    statuses: &[(&trellis_model::ObjectKey, &PolicyStatus)],
    out: &mut Vec<Finding>,
) {
    for (key, status) in statuses {
        let object = ObjectRef::new(kind, key);
        for (i, ancestor) in status.ancestors.iter().enumerate() {
            let at = format!(
                "status.ancestors[{i}] ({} {})",
                ancestor.ancestor_ref.kind, ancestor.ancestor_ref.name
            );
            from_conditions(&object, &at, &ancestor.conditions, out);
        }
    }
}

/// TRL0002 and TRL0101 from every object's status.
pub(crate) fn conditions(status: &StatusSet, out: &mut Vec<Finding>) {
    for (key, gc) in &status.gateway_classes {
        from_conditions(
            &ObjectRef::new("GatewayClass", key),
            "",
            &gc.conditions,
            out,
        );
    }
    for (key, gw) in &status.gateways {
        let object = ObjectRef::new("Gateway", key);
        from_conditions(&object, "", &gw.conditions, out);
        for l in &gw.listeners {
            let at = format!("status.listeners[{}]", l.name);
            from_conditions(&object, &at, &l.conditions, out);
        }
    }
    for (key, route) in &status.http_routes {
        let object = ObjectRef::new("HTTPRoute", key);
        for (i, parent) in route.parents.iter().enumerate() {
            let at = format!(
                "status.parents[{i}] ({} {})",
                parent.parent_ref.kind, parent.parent_ref.name
            );
            from_conditions(&object, &at, &parent.conditions, out);
        }
    }
    let kinds = [
        ("AuthorizationPolicy", &status.authorization_policies),
        ("RateLimitPolicy", &status.rate_limit_policies),
        ("WasmFilter", &status.wasm_filters),
        ("BackendTrafficPolicy", &status.backend_traffic_policies),
        ("ExternalService", &status.external_services),
        ("TracingPolicy", &status.tracing_policies),
        ("HealthPolicy", &status.health_policies),
    ];
    for (kind, map) in kinds {
        let statuses: Vec<_> = map.iter().collect();
        policies(kind, &statuses, out);
    }
    for (key, pa) in &status.peer_authentications {
        from_conditions(
            &ObjectRef::new("PeerAuthentication", key),
            "",
            &pa.conditions,
            out,
        );
    }
    for (key, sidecar) in &status.sidecars {
        if let Some(problem) = &sidecar.problem {
            out.push(Finding {
                severity: Severity::Warning,
                code: Code::StatusCondition,
                object: ObjectRef::new("Pod", key),
                field: String::new(),
                message: format!("its sidecar cannot take traffic: {problem}"),
                fix: "see the message; `trellis status` shows every pod's sidecar".to_string(),
            });
        }
    }
}

/// TRL0101: a ReferenceGrant whose `to.name` names an object that does not exist.
pub(crate) fn reference_grants(input: &InputSet, out: &mut Vec<Finding>) {
    for (key, grant) in &input.reference_grants {
        for (i, to) in grant.spec.to.iter().enumerate() {
            let Some(name) = &to.name else { continue };
            let target = trellis_model::ObjectKey::new(&key.namespace, name);
            let exists = match (to.group.as_str(), to.kind.as_str()) {
                ("", "Service") => input.services.contains_key(&target),
                ("", "Secret") => input.secrets.contains_key(&target),
                _ => continue,
            };
            if !exists {
                out.push(Finding {
                    severity: Severity::Warning,
                    code: Code::DanglingReference,
                    object: ObjectRef::new("ReferenceGrant", key),
                    field: format!("spec.to[{i}].name"),
                    message: format!(
                        "grants access to {} {}/{name}, which does not exist",
                        to.kind, key.namespace
                    ),
                    fix: format!(
                        "create {} {}/{name}, or correct or remove this entry",
                        to.kind, key.namespace
                    ),
                });
            }
        }
    }
}

/// Whether anything in namespace `from` (of `from_kind`) refers to an object of `kind` in
/// `namespace`: HTTPRoutes to Services, Gateways to Secrets.
fn referred(input: &InputSet, from_kind: &str, from: &str, kind: &str, namespace: &str) -> bool {
    match (from_kind, kind) {
        ("HTTPRoute", "Service") => input.http_routes.iter().any(|(k, r)| {
            k.namespace == from
                && r.spec
                    .rules
                    .iter()
                    .flat_map(|rule| &rule.backend_refs)
                    .any(|b| b.kind == "Service" && b.namespace.as_deref() == Some(namespace))
        }),
        ("Gateway", "Secret") => input.gateways.iter().any(|(k, g)| {
            k.namespace == from
                && g.spec
                    .listeners
                    .iter()
                    .filter_map(|l| l.tls.as_ref())
                    .flat_map(|t| &t.certificate_refs)
                    .any(|c| c.namespace.as_deref() == Some(namespace))
        }),
        // Other kinds: not judged.
        _ => true,
    }
}

/// TRL0905: a ReferenceGrant entry that grants every object of a kind (no `to.name`) while
/// nothing it lets in refers to that kind here: access granted for nothing.
pub(crate) fn unused_grants(input: &InputSet, out: &mut Vec<Finding>) {
    for (key, grant) in &input.reference_grants {
        for (i, to) in grant.spec.to.iter().enumerate() {
            if to.name.is_some() {
                continue;
            }
            let used = grant
                .spec
                .from
                .iter()
                .any(|f| referred(input, &f.kind, &f.namespace, &to.kind, &key.namespace));
            if used {
                continue;
            }
            let from: Vec<String> = grant
                .spec
                .from
                .iter()
                .map(|f| format!("{}s of namespace {}", f.kind, f.namespace))
                .collect();
            out.push(Finding {
                severity: Severity::Info,
                code: Code::UnusedGrant,
                object: ObjectRef::new("ReferenceGrant", key),
                field: format!("spec.to[{i}]"),
                message: format!(
                    "grants {} access to every {} of namespace {}, and none of them refers to one",
                    from.join(" and "),
                    to.kind,
                    key.namespace
                ),
                fix: "remove the entry, or name the one object it is for (to.name)".to_string(),
            });
        }
    }
}
