//! The status report: every managed object's status, shaped like the Kubernetes object it
//! belongs to, with condition transition times that stay put while a condition does not change.
//!
//! Transition times are carried per condition list, found in the typed status and keyed by
//! what the list is about (the object, a listener by name, a route parent or policy ancestor by
//! its reference), so a list keeps its times when others are added, removed or reordered.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use trellis_model::core::{Condition, Time};
use trellis_model::gateway::{GatewayClassStatus, GatewayStatus, ParentReference, RouteStatus};
use trellis_model::policy::PolicyStatus;
use trellis_model::{InputSet, Kind, ObjectKey};
use trellis_sources::Diagnostic;
use trellis_translate::StatusSet;
use trellis_translate::conditions::carry_transition_times;

/// An object's identity and status, shaped like the Kubernetes object it belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusObject {
    /// `gateway.networking.k8s.io/v1`.
    pub api_version: String,
    /// `GatewayClass`, `Gateway`, `HTTPRoute`, or a policy kind.
    pub kind: String,
    /// Name, namespace and generation.
    pub metadata: StatusMetadata,
    /// The status, as the Kubernetes provider would write it.
    pub status: serde_json::Value,
}

/// Identifying metadata of a status object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusMetadata {
    /// Name.
    pub name: String,
    /// Namespace (absent for cluster-scoped kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The generation the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// What `GET /status` returns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// How many times the configuration was translated since start.
    pub translations: u64,
    /// Status of every managed object.
    pub objects: Vec<StatusObject>,
    /// Problems with the inputs (files that do not parse, duplicates, skipped kinds).
    pub diagnostics: Vec<Diagnostic>,
    /// Every pod in the mesh, sorted by namespace and name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<SidecarReport>,
}

/// A pod in the mesh and its sidecar class, in `GET /status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarReport {
    /// The pod, `namespace/name`.
    pub pod: String,
    /// Its class, IPs, readiness and problem.
    #[serde(flatten)]
    pub status: trellis_translate::status::SidecarStatus,
}

/// A status with condition lists: each with a key naming what it is about.
trait ConditionLists {
    fn condition_lists(&mut self) -> Vec<(String, &mut Vec<Condition>)>;
}

impl ConditionLists for GatewayClassStatus {
    fn condition_lists(&mut self) -> Vec<(String, &mut Vec<Condition>)> {
        vec![(String::new(), &mut self.conditions)]
    }
}

impl ConditionLists for GatewayStatus {
    fn condition_lists(&mut self) -> Vec<(String, &mut Vec<Condition>)> {
        let mut lists = vec![(String::new(), &mut self.conditions)];
        for l in &mut self.listeners {
            lists.push((format!("listener {}", l.name), &mut l.conditions));
        }
        lists
    }
}

fn reference(r: &ParentReference) -> String {
    format!(
        "{}/{} {}/{} section {} port {}",
        r.group,
        r.kind,
        r.namespace.as_deref().unwrap_or(""),
        r.name,
        r.section_name.as_deref().unwrap_or(""),
        r.port.map(|p| p.to_string()).unwrap_or_default()
    )
}

impl ConditionLists for RouteStatus {
    fn condition_lists(&mut self) -> Vec<(String, &mut Vec<Condition>)> {
        self.parents
            .iter_mut()
            .map(|p| {
                (
                    format!(
                        "parent {} by {}",
                        reference(&p.parent_ref),
                        p.controller_name
                    ),
                    &mut p.conditions,
                )
            })
            .collect()
    }
}

impl ConditionLists for PolicyStatus {
    fn condition_lists(&mut self) -> Vec<(String, &mut Vec<Condition>)> {
        self.ancestors
            .iter_mut()
            .map(|a| {
                (
                    format!(
                        "ancestor {} by {}",
                        reference(&a.ancestor_ref),
                        a.controller_name
                    ),
                    &mut a.conditions,
                )
            })
            .collect()
    }
}

impl ConditionLists for trellis_model::security::PeerAuthenticationStatus {
    fn condition_lists(&mut self) -> Vec<(String, &mut Vec<Condition>)> {
        vec![(String::new(), &mut self.conditions)]
    }
}

/// Builds status reports, keeping condition transition times stable across translations.
#[derive(Debug, Default)]
pub struct StatusTracker {
    /// Conditions last reported, by object and by condition list.
    previous: BTreeMap<(Kind, ObjectKey), BTreeMap<String, Vec<Condition>>>,
}

/// One report being built.
struct Building<'a> {
    previous: &'a mut BTreeMap<(Kind, ObjectKey), BTreeMap<String, Vec<Condition>>>,
    next: BTreeMap<(Kind, ObjectKey), BTreeMap<String, Vec<Condition>>>,
    objects: Vec<StatusObject>,
    now: &'a Time,
}

impl Building<'_> {
    fn push<S: ConditionLists + Serialize + Clone>(
        &mut self,
        kind: Kind,
        key: &ObjectKey,
        generation: Option<i64>,
        status: &S,
    ) {
        let mut status = status.clone();
        let id = (kind, key.clone());
        let before = self.previous.remove(&id).unwrap_or_default();
        let mut current = BTreeMap::new();
        for (list, conditions) in status.condition_lists() {
            let previous = before.get(&list).map(Vec::as_slice).unwrap_or_default();
            carry_transition_times(conditions, previous, self.now);
            current.insert(list, conditions.clone());
        }
        self.next.insert(id, current);
        self.objects.push(StatusObject {
            api_version: kind.api_version(),
            kind: kind.name().to_string(),
            metadata: StatusMetadata {
                name: key.name.clone(),
                namespace: (!key.namespace.is_empty()).then(|| key.namespace.clone()),
                generation,
            },
            status: serde_json::to_value(&status).unwrap_or_default(),
        });
    }
}

impl StatusTracker {
    /// Turns a translation's status into a report, carrying the transition times of
    /// conditions whose status did not change since the last report.
    pub fn report(
        &mut self,
        input: &InputSet,
        status: &StatusSet,
        diagnostics: &[Diagnostic],
        translations: u64,
        now: &Time,
    ) -> StatusReport {
        let mut b = Building {
            previous: &mut self.previous,
            next: BTreeMap::new(),
            objects: Vec::new(),
            now,
        };
        let generation =
            |kind: Kind, key: &ObjectKey| input.metadata(kind, key).and_then(|m| m.generation);
        for (key, s) in &status.gateway_classes {
            b.push(
                Kind::GatewayClass,
                key,
                generation(Kind::GatewayClass, key),
                s,
            );
        }
        for (key, s) in &status.gateways {
            b.push(Kind::Gateway, key, generation(Kind::Gateway, key), s);
        }
        for (key, s) in &status.http_routes {
            b.push(Kind::HttpRoute, key, generation(Kind::HttpRoute, key), s);
        }
        for (kind, policies) in [
            (Kind::AuthorizationPolicy, &status.authorization_policies),
            (Kind::RateLimitPolicy, &status.rate_limit_policies),
            (Kind::WasmFilter, &status.wasm_filters),
            (Kind::TracingPolicy, &status.tracing_policies),
            (Kind::HealthPolicy, &status.health_policies),
            (Kind::BackendTrafficPolicy, &status.backend_traffic_policies),
            (Kind::ExternalService, &status.external_services),
        ] {
            for (key, s) in policies {
                b.push(kind, key, generation(kind, key), s);
            }
        }
        for (key, s) in &status.peer_authentications {
            let kind = Kind::PeerAuthentication;
            b.push(kind, key, generation(kind, key), s);
        }
        let Building { next, objects, .. } = b;
        self.previous = next;
        StatusReport {
            translations,
            objects,
            diagnostics: diagnostics.to_vec(),
            sidecars: status
                .sidecars
                .iter()
                .map(|(key, s)| SidecarReport {
                    pod: format!("{}/{}", key.namespace, key.name),
                    status: s.clone(),
                })
                .collect(),
        }
    }
}

/// The report as a table: one line per object with its main conditions, then problems.
pub fn render_table(report: &StatusReport) -> String {
    let mut rows = vec![[
        "KIND".to_string(),
        "NAME".to_string(),
        "ACCEPTED".to_string(),
        "PROGRAMMED/RESOLVED".to_string(),
        "DETAIL".to_string(),
    ]];
    for o in &report.objects {
        let name = match &o.metadata.namespace {
            Some(ns) => format!("{ns}/{}", o.metadata.name),
            None => o.metadata.name.clone(),
        };
        let conditions = top_conditions(o);
        let get = |t: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == t)
                .map(|c| {
                    if c.status == "True" {
                        "True".to_string()
                    } else {
                        format!("False ({})", c.reason)
                    }
                })
                .unwrap_or_else(|| "-".to_string())
        };
        let second = match o.kind.as_str() {
            "GatewayClass" => "-".to_string(),
            "Gateway" => get("Programmed"),
            _ => get("ResolvedRefs"),
        };
        let detail = conditions
            .iter()
            .find(|c| c.status != "True")
            .map(|c| c.message.clone())
            .unwrap_or_else(|| detail_ok(o));
        rows.push([o.kind.clone(), name, get("Accepted"), second, detail]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        for (i, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", r[i], w = *w));
        }
        out.push_str(&r[4]);
        out.push('\n');
    }
    if !report.diagnostics.is_empty() {
        out.push_str("\nInput problems:\n");
        for d in &report.diagnostics {
            out.push_str(&format!("  {d}\n"));
        }
    }
    if report.sidecars.is_empty() {
        return out;
    }
    let waiting: Vec<&SidecarReport> = report
        .sidecars
        .iter()
        .filter(|s| s.status.problem.is_some())
        .collect();
    out.push_str(&format!(
        "\nPods in the mesh: {} in {} sidecar classes; {} cannot take traffic{}\n",
        report.sidecars.len(),
        report
            .sidecars
            .iter()
            .map(|s| &s.status.class)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        waiting.len(),
        if waiting.is_empty() { "" } else { ":" }
    ));
    for s in waiting {
        out.push_str(&format!(
            "  Pod {}: {}\n",
            s.pod,
            s.status.problem.as_deref().unwrap_or_default()
        ));
    }
    out
}

/// Conditions that summarize an object: its own, or the worst per type across a route's
/// parents or a policy's ancestors.
fn top_conditions(o: &StatusObject) -> Vec<Condition> {
    if let Some(c) = o.status.get("conditions") {
        return serde_json::from_value(c.clone()).unwrap_or_default();
    }
    let entries = o
        .status
        .get("parents")
        .or_else(|| o.status.get("ancestors"))
        .and_then(|p| p.as_array());
    let mut by_type: BTreeMap<String, Condition> = BTreeMap::new();
    for entry in entries.into_iter().flatten() {
        let conditions: Vec<Condition> = entry
            .get("conditions")
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or_default();
        for c in conditions {
            let slot = by_type.entry(c.type_.clone()).or_insert_with(|| c.clone());
            if c.status != "True" {
                *slot = c;
            }
        }
    }
    by_type.into_values().collect()
}

fn detail_ok(o: &StatusObject) -> String {
    match o.kind.as_str() {
        "Gateway" => {
            let addresses: Vec<String> = o
                .status
                .get("addresses")
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.get("value")?.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let routes: i64 = o
                .status
                .get("listeners")
                .and_then(|l| l.as_array())
                .map(|l| {
                    l.iter()
                        .filter_map(|l| l.get("attachedRoutes")?.as_i64())
                        .sum()
                })
                .unwrap_or(0);
            format!(
                "addresses [{}], {routes} attached routes",
                addresses.join(", ")
            )
        }
        "HTTPRoute" => {
            let n = o
                .status
                .get("parents")
                .and_then(|p| p.as_array())
                .map_or(0, Vec::len);
            format!("{n} parent(s)")
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use trellis_model::core::jiff::Timestamp;
    use trellis_model::gateway::ListenerStatus;
    use trellis_translate::conditions::{ConditionType, Reason, condition};

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    fn listener(name: &str, accepted: bool) -> ListenerStatus {
        ListenerStatus {
            name: name.into(),
            supported_kinds: Vec::new(),
            attached_routes: 0,
            conditions: vec![condition(
                ConditionType::Accepted,
                accepted,
                if accepted {
                    Reason::Accepted
                } else {
                    Reason::UnsupportedProtocol
                },
                "",
                Some(1),
            )],
        }
    }

    fn report(
        tracker: &mut StatusTracker,
        listeners: Vec<ListenerStatus>,
        now: i64,
    ) -> StatusReport {
        let mut status = StatusSet::default();
        status.gateways.insert(
            ObjectKey::new("default", "gw"),
            GatewayStatus {
                listeners,
                ..Default::default()
            },
        );
        tracker.report(&InputSet::default(), &status, &[], 1, &at(now))
    }

    fn times(r: &StatusReport) -> BTreeMap<String, String> {
        r.objects[0].status["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["name"].as_str().unwrap().to_string(),
                    l["conditions"][0]["lastTransitionTime"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn a_condition_keeps_its_time_until_its_status_changes_whatever_happens_around_it() {
        let mut tracker = StatusTracker::default();
        let first = report(
            &mut tracker,
            vec![listener("a", true), listener("b", true)],
            100,
        );
        assert_eq!(times(&first)["a"], "1970-01-01T00:01:40Z");
        // A listener is added before the others, and b turns invalid.
        let second = report(
            &mut tracker,
            vec![
                listener("0", true),
                listener("a", true),
                listener("b", false),
            ],
            200,
        );
        let t = times(&second);
        assert_eq!(t["a"], "1970-01-01T00:01:40Z", "unchanged, though it moved");
        assert_eq!(t["b"], "1970-01-01T00:03:20Z", "changed");
        assert_eq!(t["0"], "1970-01-01T00:03:20Z", "new");
    }

    #[test]
    fn the_table_shows_the_worst_condition_of_a_routes_parents() {
        let mut status = StatusSet::default();
        let parent = |name: &str, accepted: bool| trellis_model::gateway::RouteParentStatus {
            parent_ref: ParentReference {
                group: "gateway.networking.k8s.io".into(),
                kind: "Gateway".into(),
                namespace: None,
                name: name.into(),
                section_name: None,
                port: None,
            },
            controller_name: "trellis.dev/gateway-controller".into(),
            conditions: vec![condition(
                ConditionType::Accepted,
                accepted,
                if accepted {
                    Reason::Accepted
                } else {
                    Reason::NoMatchingParent
                },
                if accepted {
                    "ok"
                } else {
                    "no listener named x"
                },
                Some(1),
            )],
        };
        status.http_routes.insert(
            ObjectKey::new("default", "r"),
            RouteStatus {
                parents: vec![parent("a", true), parent("b", false)],
            },
        );
        let report = StatusTracker::default().report(&InputSet::default(), &status, &[], 1, &at(1));
        let table = render_table(&report);
        assert!(
            table.contains("HTTPRoute  default/r  False (NoMatchingParent)"),
            "{table}"
        );
        assert!(table.contains("no listener named x"), "{table}");
    }
}
