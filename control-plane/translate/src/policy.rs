//! Policy attachment: AuthorizationPolicy, RateLimitPolicy and WasmFilter objects become Wasm
//! HTTP filters in the filter chains of the Gateways they target, with status per ancestor.
//!
//! ```text
//!  policy object ──check──► valid spec ──────────────┐           (else: the last valid spec
//!     │   (strict parse, targetRefs, module state,     │            of the object, if any, and
//!     │    the policy filter's own config parser)      │            Accepted=False)
//!     │                                                ▼
//!     └── targetRefs ──resolve──► (proxy, selector) attachments
//!                                        │
//!          per filter chain ◄────────────┘
//!          ├─ trellis.policy: one filter, every AuthorizationPolicy/RateLimitPolicy of the
//!          │  chain with a scope ("all", or the names of the routes it selects)
//!          └─ wasmfilter/<ns>/<name>: on for the chain, or off by default and enabled on the
//!             virtual hosts (Gateway listener targets) and routes (HTTPRoute targets)
//! ```
//!
//! An HTTPRoute target selects IR routes by their [`RouteOrigin`] (the route, and the rule when
//! the target names a section), never by the text of their names.
//!
//! Nothing here does I/O: which modules the control plane holds (fetched and checked against
//! their SHA-256) arrives in [`ModuleOptions`], and the last valid spec of every policy in
//! [`LastGood`], which the translation hands back updated.

use crate::conditions::{ConditionType, Problem, Reason, condition};
use crate::ir::{
    EndpointIr, FilterChainIr, Ir, RouteIr, RouteOrigin, RouteTracingIr, TracingIr, WasmFilterIr,
};
use crate::proxy_key;
use crate::status::StatusSet;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use trellis_model::gateway::{GROUP as GATEWAY_GROUP, ParentReference};
use trellis_model::policy::{
    AuthorizationPolicySpec, FailurePolicy, PathMatchKind, PolicyAction, PolicyAncestorStatus,
    PolicyMode, PolicyStatus, PolicyTargetReference, RateLimitKeyKind, RateLimitPolicySpec,
    RatePeriod, SpecError, WasmFilterSpec, WasmModule, parse_spec,
};
use trellis_model::{CONTROLLER_NAME, InputSet, Kind, ObjectKey};

/// The HTTP filter name (and VM id) of the built-in policy filter.
pub const POLICY_FILTER: &str = "trellis.policy";
/// The cluster through which proxies fetch modules from the control plane.
pub const MODULE_CLUSTER: &str = "trellis/wasm";

/// What the control plane knows of a module a WasmFilter names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleState {
    /// Read (or fetched), its SHA-256 checked, and served to proxies by the control plane.
    Verified,
    /// Not available to proxies.
    Problem {
        /// `ModuleNotFound` or `ChecksumMismatch`.
        reason: Reason,
        /// What went wrong.
        message: String,
    },
}

/// Wasm modules as the control plane holds them.
#[derive(Clone, Debug, Default)]
pub struct ModuleOptions {
    /// The SHA-256 of the policy filter module the control plane serves, if it has one.
    pub policy_module: Option<String>,
    /// The state of every module WasmFilters name (absent: not looked at yet).
    pub modules: BTreeMap<WasmModule, ModuleState>,
    /// The address proxies reach the control plane's module server at (`GET /wasm/<sha256>`).
    pub server: Option<EndpointIr>,
}

/// The last valid spec of every policy object, kept across translations: when an object's
/// spec becomes invalid (a bad regex, a wrong checksum), its last valid spec stays in force.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LastGood {
    specs: BTreeMap<(Kind, ObjectKey), GoodSpec>,
}

#[derive(Clone, Debug, PartialEq)]
struct GoodSpec {
    generation: Option<i64>,
    spec: Value,
}

impl LastGood {
    /// How many objects have a remembered valid spec.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether no object has one.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The remembered specs as JSON, to keep across restarts of the control plane:
    /// `[{kind, namespace, name, generation, spec}]`, sorted.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.specs
                .iter()
                .map(|((kind, key), good)| {
                    json!({
                        "kind": kind.name(),
                        "namespace": key.namespace,
                        "name": key.name,
                        "generation": good.generation,
                        "spec": good.spec,
                    })
                })
                .collect(),
        )
    }

    /// Reads what [`LastGood::to_json`] wrote; entries that do not read are left out. The
    /// specs are checked again before they are used, like any spec.
    pub fn from_json(value: &Value) -> LastGood {
        let specs = value
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let kind = Kind::ALL
                    .into_iter()
                    .find(|k| Some(k.name()) == entry["kind"].as_str())?;
                let key = ObjectKey::new(entry["namespace"].as_str()?, entry["name"].as_str()?);
                let good = GoodSpec {
                    generation: entry["generation"].as_i64(),
                    spec: entry.get("spec")?.clone(),
                };
                Some(((kind, key), good))
            })
            .collect();
        LastGood { specs }
    }
}

/// The modules the configuration may use: those WasmFilters name in their current specs and
/// in their last valid ones (which stay in force while a current spec is invalid).
pub fn wanted_modules(input: &InputSet, last_good: &LastGood) -> BTreeSet<WasmModule> {
    let module_of = |spec: &Value| {
        spec.get("module")
            .and_then(|m| serde_json::from_value::<WasmModule>(m.clone()).ok())
    };
    let current = input
        .wasm_filters
        .values()
        .filter_map(|f| module_of(&f.spec));
    let kept = last_good
        .specs
        .iter()
        .filter(|((kind, _), _)| *kind == Kind::WasmFilter)
        .filter_map(|(_, good)| module_of(&good.spec));
    current.chain(kept).collect()
}

/// The digests of every module a translated configuration runs: what proxies may fetch.
pub fn used_modules(ir: &Ir) -> BTreeSet<String> {
    ir.proxies
        .values()
        .flat_map(|p| &p.listeners)
        .flat_map(|l| &l.chains)
        .flat_map(|c| &c.http_filters)
        .map(|f| f.sha256.clone())
        .collect()
}

/// A spec's mistake: reported in `Accepted` (reason `Invalid`) with the field.
fn invalid(field: impl std::fmt::Display, message: impl std::fmt::Display) -> Problem {
    Problem::not_accepted(Reason::Invalid, format!("{field}: {message}"))
}

fn spec_error(e: SpecError) -> Problem {
    Problem::not_accepted(Reason::Invalid, e.to_string())
}

/// Where in a proxy an attachment applies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Selector {
    /// A whole Gateway, or one of its listeners.
    Gateway(Option<String>),
    /// Routes of an HTTPRoute, or of one of its rules.
    Routes(RouteTarget),
    /// A sidecar class's inbound HTTP ports that a Service reaches.
    Ports(ObjectKey, Vec<u16>),
    /// The callers' side of a Service: a sidecar class's outbound listeners for it
    /// (TracingPolicy, BackendTrafficPolicy), a gateway's routes and clusters to it
    /// (BackendTrafficPolicy).
    Outbound(ObjectKey),
}

/// An HTTPRoute, or one rule of it, as a policy's target.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RouteTarget {
    pub(crate) route: ObjectKey,
    pub(crate) rule: Option<usize>,
}

impl RouteTarget {
    /// Whether a route came from this target.
    pub(crate) fn selects(&self, origin: &RouteOrigin) -> bool {
        origin.rule().is_some_and(|(route, rule)| {
            *route == self.route && self.rule.is_none_or(|r| r == rule)
        })
    }

    fn selects_any(targets: &[RouteTarget], route: &RouteIr) -> bool {
        targets.iter().any(|t| t.selects(&route.origin))
    }
}

/// What a checked spec contributes to filter chains.
pub(crate) enum Contribution {
    Authorization(Value),
    RateLimits(Vec<Value>),
    Wasm {
        order: i32,
        filter: WasmFilterIr,
    },
    /// A TracingPolicy (its `service_name` is filled in where it applies).
    Tracing(TracingIr),
    /// A BackendTrafficPolicy.
    Traffic(crate::resilience::TrafficIr),
}

struct Checked {
    targets: Vec<PolicyTargetReference>,
    contribution: Contribution,
}

/// One policy's contribution to one proxy.
pub(crate) struct Attachment {
    key: ObjectKey,
    pub(crate) selectors: Vec<Selector>,
    pub(crate) contribution: std::rc::Rc<Contribution>,
}

/// Attaches every policy object to the IR and reports their status. Returns the new
/// [`LastGood`].
pub(crate) fn attach(
    input: &InputSet,
    modules: &ModuleOptions,
    last_good: &LastGood,
    objectives: &BTreeMap<ObjectKey, crate::telemetry::ObjectiveIr>,
    ir: &mut Ir,
    status: &mut StatusSet,
) -> LastGood {
    let mut run = Attacher {
        input,
        ir,
        last_good,
        next: LastGood::default(),
        attachments: BTreeMap::new(),
    };
    for (key, object) in &input.authorization_policies {
        let s = run.policy(
            Kind::AuthorizationPolicy,
            key,
            object.metadata.generation,
            &object.spec,
            &|spec| check_authorization(key, spec, modules),
        );
        status.authorization_policies.insert(key.clone(), s);
    }
    for (key, object) in &input.rate_limit_policies {
        let s = run.policy(
            Kind::RateLimitPolicy,
            key,
            object.metadata.generation,
            &object.spec,
            &|spec| check_rate_limits(key, spec, modules),
        );
        status.rate_limit_policies.insert(key.clone(), s);
    }
    for (key, object) in &input.wasm_filters {
        let s = run.policy(
            Kind::WasmFilter,
            key,
            object.metadata.generation,
            &object.spec,
            &|spec| check_wasm_filter(key, spec, modules),
        );
        status.wasm_filters.insert(key.clone(), s);
    }
    attach_tracing_and_traffic(&mut run, input, status);
    let Attacher {
        next,
        mut attachments,
        ..
    } = run;
    // Gateways with routes to a Service that has a latency objective get the telemetry core
    // even when no policy attaches to them.
    if modules.policy_module.is_some() && !objectives.is_empty() {
        for proxy_name in ir.proxies.keys() {
            attachments.entry(proxy_name.clone()).or_default();
        }
    }
    for (proxy_name, list) in attachments {
        if let Some(sidecar) = ir.sidecars.get_mut(&proxy_name) {
            apply_to_sidecar(sidecar, &list, modules);
            crate::resilience::apply_to_sidecar(sidecar, &list);
            continue;
        }
        let Some(proxy) = ir.proxies.get_mut(&proxy_name) else {
            continue;
        };
        crate::resilience::apply_to_proxy(proxy, &list);
        let mut used = false;
        for listener in &mut proxy.listeners {
            for chain in &mut listener.chains {
                used |= apply_to_chain(chain, &list, modules);
                trace_chain(chain, &list, &proxy_name);
                used |= telemetry_core(chain, modules, objectives);
            }
        }
        if used {
            proxy.module_server = modules.server.clone();
        }
    }
    next
}

/// TracingPolicies and BackendTrafficPolicies: checked, resolved and recorded in `run`.
fn attach_tracing_and_traffic(run: &mut Attacher<'_>, input: &InputSet, status: &mut StatusSet) {
    for (key, object) in &input.tracing_policies {
        let s = run.policy(
            Kind::TracingPolicy,
            key,
            object.metadata.generation,
            &object.spec,
            &|spec| {
                let (targets, tracing) = crate::telemetry::check_tracing(key, spec)?;
                check_targets(&targets, true)?;
                Ok(Checked {
                    targets,
                    contribution: Contribution::Tracing(tracing),
                })
            },
        );
        status.tracing_policies.insert(key.clone(), s);
    }
    for (key, object) in &input.backend_traffic_policies {
        let s = run.policy(
            Kind::BackendTrafficPolicy,
            key,
            object.metadata.generation,
            &object.spec,
            &|spec| {
                let (targets, traffic) = crate::resilience::check_traffic(key, spec)?;
                Ok(Checked {
                    targets,
                    contribution: Contribution::Traffic(traffic),
                })
            },
        );
        status.backend_traffic_policies.insert(key.clone(), s);
    }
}

/// Checks and resolves policies one by one, gathering what attaches to each proxy.
struct Attacher<'a> {
    input: &'a InputSet,
    ir: &'a Ir,
    last_good: &'a LastGood,
    next: LastGood,
    attachments: BTreeMap<String, Vec<Attachment>>,
}

/// The spec a policy is served with: the current one if valid, else its last valid one.
struct Chosen {
    checked: Option<Checked>,
    problem: Option<Problem>,
    /// `Some(generation)` when the last valid spec stands in for an invalid current one.
    kept: Option<Option<i64>>,
}

impl Attacher<'_> {
    /// One policy: its spec checked (or its last valid one), its targets resolved, its
    /// attachments recorded, and its status.
    fn policy(
        &mut self,
        kind: Kind,
        key: &ObjectKey,
        generation: Option<i64>,
        spec: &Value,
        check: &dyn Fn(&Value) -> Result<Checked, Problem>,
    ) -> PolicyStatus {
        let Chosen {
            checked,
            problem,
            kept,
        } = self.choose(kind, key, generation, spec, check);
        let targets = match &checked {
            Some(c) => c.targets.clone(),
            None => lenient_targets(spec),
        };
        let (mut ancestors, by_proxy) = self.resolve_targets(kind, key, &targets);
        if let Some(c) = checked {
            let contribution = std::rc::Rc::new(c.contribution);
            for (proxy, selectors) in by_proxy {
                self.attachments.entry(proxy).or_default().push(Attachment {
                    key: key.clone(),
                    selectors,
                    contribution: contribution.clone(),
                });
            }
        }
        if ancestors.is_empty() {
            // Nothing to hang the conditions on: report against the object itself.
            ancestors.insert(
                ParentReference {
                    group: trellis_model::policy::GROUP.to_string(),
                    kind: kind.name().to_string(),
                    namespace: Some(key.namespace.clone()),
                    name: key.name.clone(),
                    section_name: None,
                    port: None,
                },
                Err("spec.targetRefs: no target".to_string()),
            );
        }
        PolicyStatus {
            ancestors: ancestors
                .into_iter()
                .map(|(ancestor_ref, found)| PolicyAncestorStatus {
                    ancestor_ref,
                    controller_name: CONTROLLER_NAME.to_string(),
                    conditions: conditions(&found, problem.as_ref(), kept, generation),
                })
                .collect(),
        }
    }

    /// The current spec if it is valid (remembered as the last valid one), else the last
    /// valid spec if there is one and it still checks.
    fn choose(
        &mut self,
        kind: Kind,
        key: &ObjectKey,
        generation: Option<i64>,
        spec: &Value,
        check: &dyn Fn(&Value) -> Result<Checked, Problem>,
    ) -> Chosen {
        match check(spec) {
            Ok(c) => {
                self.next.specs.insert(
                    (kind, key.clone()),
                    GoodSpec {
                        generation,
                        spec: spec.clone(),
                    },
                );
                Chosen {
                    checked: Some(c),
                    problem: None,
                    kept: None,
                }
            }
            Err(problem) => match self.last_good.specs.get(&(kind, key.clone())) {
                Some(good) => match check(&good.spec) {
                    Ok(c) => {
                        self.next.specs.insert((kind, key.clone()), good.clone());
                        Chosen {
                            checked: Some(c),
                            problem: Some(problem),
                            kept: Some(good.generation),
                        }
                    }
                    Err(_) => Chosen {
                        checked: None,
                        problem: Some(problem),
                        kept: None,
                    },
                },
                None => Chosen {
                    checked: None,
                    problem: Some(problem),
                    kept: None,
                },
            },
        }
    }

    /// Each target's ancestors (the Gateways it takes effect on, or why it does not resolve),
    /// and the selectors by proxy.
    #[allow(clippy::type_complexity)]
    fn resolve_targets(
        &self,
        kind: Kind,
        key: &ObjectKey,
        targets: &[PolicyTargetReference],
    ) -> (
        BTreeMap<ParentReference, Result<(), String>>,
        BTreeMap<String, Vec<Selector>>,
    ) {
        let mut ancestors: BTreeMap<ParentReference, Result<(), String>> = BTreeMap::new();
        let mut by_proxy: BTreeMap<String, Vec<Selector>> = BTreeMap::new();
        for target in targets {
            match resolve(self.input, self.ir, kind, &key.namespace, target) {
                Ok(found) => {
                    for (ancestor, proxy, selector) in found {
                        ancestors.insert(ancestor, Ok(()));
                        by_proxy.entry(proxy).or_default().push(selector);
                    }
                }
                Err(message) => {
                    let r = target_ref(&key.namespace, target);
                    ancestors.entry(r).or_insert(Err(message));
                }
            }
        }
        (ancestors, by_proxy)
    }
}

fn conditions(
    found: &Result<(), String>,
    problem: Option<&Problem>,
    kept: Option<Option<i64>>,
    generation: Option<i64>,
) -> Vec<trellis_model::core::Condition> {
    let accepted = match (found, problem) {
        (_, Some(p)) => {
            let message = match kept {
                Some(Some(g)) => format!(
                    "{}; the last valid version (generation {g}) stays in force",
                    p.message
                ),
                Some(None) => format!("{}; the last valid version stays in force", p.message),
                None => format!("{}; the policy is not applied", p.message),
            };
            condition(
                ConditionType::Accepted,
                false,
                Reason::Invalid,
                message,
                generation,
            )
        }
        (Err(message), None) => condition(
            ConditionType::Accepted,
            false,
            Reason::TargetNotFound,
            message.clone(),
            generation,
        ),
        (Ok(()), None) => condition(
            ConditionType::Accepted,
            true,
            Reason::Accepted,
            "Policy accepted",
            generation,
        ),
    };
    let resolved = match problem.filter(|p| p.condition == ConditionType::ResolvedRefs) {
        Some(p) => p.to_condition(generation),
        None => condition(
            ConditionType::ResolvedRefs,
            true,
            Reason::ResolvedRefs,
            "References resolved",
            generation,
        ),
    };
    vec![accepted, resolved]
}

/// The targetRefs of a spec that does not parse as a whole, where they can be read.
fn lenient_targets(spec: &Value) -> Vec<PolicyTargetReference> {
    spec.get("targetRefs")
        .and_then(|t| serde_json::from_value::<Vec<Value>>(t.clone()).ok())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| serde_json::from_value(t).ok())
        .collect()
}

fn gateway_ref(gateway: &ObjectKey, target: &PolicyTargetReference) -> ParentReference {
    let section_name = if target.kind == "Gateway" {
        target.section_name.clone()
    } else {
        None
    };
    ParentReference {
        group: GATEWAY_GROUP.to_string(),
        kind: "Gateway".to_string(),
        namespace: Some(gateway.namespace.clone()),
        name: gateway.name.clone(),
        section_name,
        port: None,
    }
}

fn target_ref(namespace: &str, target: &PolicyTargetReference) -> ParentReference {
    ParentReference {
        group: target.group.clone(),
        kind: target.kind.clone(),
        namespace: Some(namespace.to_string()),
        name: target.name.clone(),
        section_name: target.section_name.clone(),
        port: None,
    }
}

/// Where a target applies: each ancestor (a Gateway, or for a Service the Service itself), the
/// proxy (or sidecar class) snapshot key, and where in it.
fn resolve(
    input: &InputSet,
    ir: &Ir,
    kind: Kind,
    namespace: &str,
    target: &PolicyTargetReference,
) -> Result<Vec<(ParentReference, String, Selector)>, String> {
    let key = ObjectKey::new(namespace, &target.name);
    let on_gateway = |(gateway, selector): (ObjectKey, Selector)| {
        (gateway_ref(&gateway, target), proxy_key(&gateway), selector)
    };
    match target.kind.as_str() {
        "Service" if kind == Kind::BackendTrafficPolicy => resolve_callers(input, ir, &key),
        "Service" => resolve_service(input, ir, &key, kind == Kind::TracingPolicy),
        "Gateway" => {
            let gateway = input
                .gateways
                .get(&key)
                .ok_or_else(|| format!("Gateway {key} does not exist"))?;
            if !ir.proxies.contains_key(&proxy_key(&key)) {
                return Err(format!("Gateway {key} is not served by Trellis"));
            }
            if let Some(section) = &target.section_name
                && !gateway.spec.listeners.iter().any(|l| &l.name == section)
            {
                return Err(format!("Gateway {key} has no listener {section:?}"));
            }
            Ok(vec![on_gateway((
                key,
                Selector::Gateway(target.section_name.clone()),
            ))])
        }
        "HTTPRoute" => {
            let route = input
                .http_routes
                .get(&key)
                .ok_or_else(|| format!("HTTPRoute {key} does not exist"))?;
            let mut selected = RouteTarget {
                route: key.clone(),
                rule: None,
            };
            if let Some(section) = &target.section_name {
                let index = route
                    .spec
                    .rules
                    .iter()
                    .position(|r| r.name.as_deref() == Some(section))
                    .ok_or_else(|| format!("HTTPRoute {key} has no rule named {section:?}"))?;
                selected.rule = Some(index);
            }
            let found: Vec<(ParentReference, String, Selector)> = input
                .gateways
                .keys()
                .filter(|g| {
                    ir.proxies.get(&proxy_key(g)).is_some_and(|p| {
                        p.listeners
                            .iter()
                            .any(|l| l.chains.iter().any(|c| chain_has_route(c, &selected)))
                    })
                })
                .map(|g| on_gateway((g.clone(), Selector::Routes(selected.clone()))))
                .chain(
                    (kind == Kind::BackendTrafficPolicy)
                        .then(|| mesh_route_callers(ir, &selected))
                        .into_iter()
                        .flatten(),
                )
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "HTTPRoute {key} is not attached to a Gateway served by Trellis{}",
                    if kind == Kind::BackendTrafficPolicy {
                        " nor to a Service of the mesh"
                    } else {
                        ""
                    }
                ));
            }
            Ok(found)
        }
        other => Err(format!("kind {other:?} cannot be targeted")),
    }
}

fn service_ref(key: &ObjectKey) -> ParentReference {
    ParentReference {
        group: String::new(),
        kind: "Service".to_string(),
        namespace: Some(key.namespace.clone()),
        name: key.name.clone(),
        section_name: None,
        port: None,
    }
}

/// A BackendTrafficPolicy's Service target: every proxy that calls it — the Gateways with a
/// cluster of it, and the sidecar classes with an outbound listener for it.
fn resolve_callers(
    input: &InputSet,
    ir: &Ir,
    key: &ObjectKey,
) -> Result<Vec<(ParentReference, String, Selector)>, String> {
    if !input.services.contains_key(key) {
        return Err(format!("Service {key} does not exist"));
    }
    let ancestor = service_ref(key);
    let gateways = ir
        .proxies
        .iter()
        .filter(|(_, p)| {
            p.clusters
                .keys()
                .any(|c| cluster_service(c).as_ref() == Some(key))
        })
        .map(|(name, _)| name);
    let sidecars = ir
        .sidecars
        .iter()
        .filter(|(_, s)| s.outbound.iter().any(|l| l.service == *key))
        .map(|(name, _)| name);
    let found: Vec<_> = gateways
        .chain(sidecars)
        .map(|name| {
            (
                ancestor.clone(),
                name.clone(),
                Selector::Outbound(key.clone()),
            )
        })
        .collect();
    if found.is_empty() {
        return Err(format!(
            "Service {key} is called through no proxy Trellis serves (no Gateway routes to it, \
             and it is not in the mesh)"
        ));
    }
    Ok(found)
}

/// The sidecar classes whose mesh routes came from an HTTPRoute (or one rule of it), with the
/// Service each route configuration belongs to as the ancestor.
fn mesh_route_callers(ir: &Ir, target: &RouteTarget) -> Vec<(ParentReference, String, Selector)> {
    let mut found = Vec::new();
    for (class, sidecar) in &ir.sidecars {
        for l in &sidecar.outbound {
            let selects = l
                .route_config
                .as_ref()
                .and_then(|rc| sidecar.route_configs.get(rc))
                .is_some_and(|r| r.routes.iter().any(|r| target.selects(&r.origin)));
            if selects {
                found.push((
                    service_ref(&l.service),
                    class.clone(),
                    Selector::Routes(target.clone()),
                ));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// A Service target: the sidecar classes of the pods it sends to, and the ports it reaches.
fn resolve_service(
    input: &InputSet,
    ir: &Ir,
    key: &ObjectKey,
    outbound: bool,
) -> Result<Vec<(ParentReference, String, Selector)>, String> {
    if !input.services.contains_key(key) {
        return Err(format!("Service {key} does not exist"));
    }
    let ancestor = ParentReference {
        group: String::new(),
        kind: "Service".to_string(),
        namespace: Some(key.namespace.clone()),
        name: key.name.clone(),
        section_name: None,
        port: None,
    };
    let mut found: Vec<_> = ir
        .sidecars
        .iter()
        .filter_map(|(class, sidecar)| {
            let ports = sidecar.inbound_services.get(key)?;
            Some((
                ancestor.clone(),
                class.clone(),
                Selector::Ports(key.clone(), ports.clone()),
            ))
        })
        .collect();
    if outbound {
        // Its callers' sidecars too: they start the trace and time the whole call.
        found.extend(
            ir.sidecars
                .iter()
                .filter(|(_, s)| {
                    s.outbound
                        .iter()
                        .any(|l| l.service == *key && l.route_config.is_some())
                })
                .map(|(class, _)| {
                    (
                        ancestor.clone(),
                        class.clone(),
                        Selector::Outbound(key.clone()),
                    )
                }),
        );
    }
    if found.is_empty() {
        return Err(format!(
            "Service {key} sends to no HTTP port of a pod in the mesh (policies on a Service \
             apply in its pods' sidecars)"
        ));
    }
    Ok(found)
}

fn chain_has_route(chain: &FilterChainIr, target: &RouteTarget) -> bool {
    chain
        .virtual_hosts
        .iter()
        .any(|vh| vh.routes.iter().any(|r| target.selects(&r.origin)))
}

/// Checks a policy's targets; `services`: whether it may target Services (the policy filter's
/// policies may; WasmFilters not yet).
pub(crate) fn check_targets(
    targets: &[PolicyTargetReference],
    services: bool,
) -> Result<(), Problem> {
    if targets.is_empty() {
        return Err(invalid(
            "spec.targetRefs",
            "at least one target is required",
        ));
    }
    if targets.len() > 16 {
        return Err(invalid("spec.targetRefs", "at most 16 targets"));
    }
    for (i, t) in targets.iter().enumerate() {
        if t.kind == "Service" && services {
            if !t.group.is_empty() && t.group != "core" {
                return Err(invalid(
                    format!("spec.targetRefs[{i}].group"),
                    "a Service's group is \"\" (core)",
                ));
            }
            if t.section_name.is_some() {
                return Err(invalid(
                    format!("spec.targetRefs[{i}].sectionName"),
                    "is not supported for a Service (the policy applies to every HTTP port it \
                     reaches)",
                ));
            }
            continue;
        }
        if t.group != GATEWAY_GROUP {
            return Err(invalid(
                format!("spec.targetRefs[{i}].group"),
                format!("must be {GATEWAY_GROUP}"),
            ));
        }
        if t.kind != "Gateway" && t.kind != "HTTPRoute" {
            let kinds = if services {
                "Gateway, HTTPRoute or Service"
            } else {
                "Gateway or HTTPRoute"
            };
            return Err(invalid(
                format!("spec.targetRefs[{i}].kind"),
                format!("{:?} is not supported ({kinds})", t.kind),
            ));
        }
    }
    Ok(())
}

fn policy_module(modules: &ModuleOptions) -> Result<String, Problem> {
    match (&modules.policy_module, &modules.server) {
        (Some(sha), Some(_)) => Ok(sha.clone()),
        _ => Err(Problem::unresolved(
            Reason::ModuleNotFound,
            "the control plane has no policy filter module to serve (start it with \
             --policy-module)",
        )),
    }
}

fn policy_name(key: &ObjectKey) -> String {
    format!("{}/{}", key.namespace, key.name)
}

/// The policy filter's JSON for an AuthorizationPolicy (without scope).
fn authorization_json(key: &ObjectKey, spec: &AuthorizationPolicySpec) -> Value {
    let action = |a: PolicyAction| match a {
        PolicyAction::Allow => "allow",
        PolicyAction::Deny => "deny",
    };
    let rules: Vec<Value> = spec
        .rules
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert("name".into(), json!(r.name));
            m.insert("action".into(), json!(action(r.action)));
            if let Some(paths) = &r.paths {
                let paths: Vec<Value> = paths
                    .iter()
                    .map(|p| match p.kind {
                        PathMatchKind::Exact => json!({"exact": p.value}),
                        PathMatchKind::Prefix => json!({"prefix": p.value}),
                        PathMatchKind::RegularExpression => json!({"regex": p.value}),
                    })
                    .collect();
                m.insert("paths".into(), Value::Array(paths));
            }
            if let Some(methods) = &r.methods {
                m.insert("methods".into(), json!(methods));
            }
            if let Some(headers) = &r.headers {
                let headers: Vec<Value> = headers
                    .iter()
                    .map(|h| json!({"name": h.name, "values": h.values}))
                    .collect();
                m.insert("headers".into(), Value::Array(headers));
            }
            if let Some(principals) = &r.principals {
                m.insert("principals".into(), json!(principals));
            }
            if let Some(namespaces) = &r.namespaces {
                m.insert("namespaces".into(), json!(namespaces));
            }
            if let Some(ips) = &r.source_ips {
                m.insert("source_ips".into(), json!(ips));
            }
            Value::Object(m)
        })
        .collect();
    json!({
        "name": policy_name(key),
        "mode": match spec.mode { PolicyMode::Enforce => "enforce", PolicyMode::Audit => "audit" },
        "default_action": action(spec.default_action),
        "rules": rules,
    })
}

/// The policy filter's JSON for the limits of a RateLimitPolicy (without scope).
fn rate_limits_json(key: &ObjectKey, spec: &RateLimitPolicySpec) -> Result<Vec<Value>, Problem> {
    let mut out = Vec::new();
    for (i, l) in spec.limits.iter().enumerate() {
        let key_json = match (l.key.kind, &l.key.header) {
            (RateLimitKeyKind::Header, Some(h)) if !h.is_empty() => json!({"header": h}),
            (RateLimitKeyKind::Header, _) => {
                return Err(invalid(
                    format!("spec.limits[{i}].key.header"),
                    "required for type Header",
                ));
            }
            (_, Some(_)) => {
                return Err(invalid(
                    format!("spec.limits[{i}].key.header"),
                    "only allowed for type Header",
                ));
            }
            (RateLimitKeyKind::ClientIp, None) => json!("client_ip"),
            (RateLimitKeyKind::Principal, None) => json!("principal"),
        };
        let mut m = Map::new();
        m.insert(
            "name".into(),
            json!(format!("{}/{}", policy_name(key), l.name)),
        );
        m.insert("key".into(), key_json);
        m.insert("requests".into(), json!(l.requests));
        m.insert(
            "per".into(),
            json!(match l.per {
                RatePeriod::Second => "second",
                RatePeriod::Minute => "minute",
                RatePeriod::Hour => "hour",
            }),
        );
        if let Some(b) = l.burst {
            m.insert("burst".into(), json!(b));
        }
        if let Some(k) = l.max_keys {
            m.insert("max_keys".into(), json!(k));
        }
        out.push(Value::Object(m));
    }
    Ok(out)
}

/// Runs the policy filter's own configuration parser, naming the spec field on failure.
fn validate_policy_config(config: &Value) -> Result<(), Problem> {
    let bytes = serde_json::to_vec(config).unwrap_or_default();
    trellis_policy::PolicyFilter::from_json(&bytes)
        .map(|_| ())
        .map_err(|e| {
            let (field, message) = match e {
                trellis_policy::ConfigError::Json { path, message } => (path, message),
                trellis_policy::ConfigError::Invalid { field, reason } => (field, reason),
            };
            invalid(spec_field(&field), message)
        })
}

/// Maps a field path of the policy filter's configuration (`policies[0].rules[1].paths[0].regex`)
/// to the spec's (`spec.rules[1].paths[0].value`).
fn spec_field(path: &str) -> String {
    let mut out = String::from("spec");
    let rest = path
        .strip_prefix("policies[0]")
        .map(str::to_string)
        .or_else(|| {
            path.strip_prefix("rate_limits[")
                .map(|r| format!(".limits[{r}"))
        })
        .unwrap_or_else(|| format!(".{path}"));
    for segment in rest.split('.').filter(|s| !s.is_empty()) {
        let mapped = match segment {
            "default_action" => "defaultAction",
            "source_ips" => "sourceIPs",
            "max_keys" => "maxKeys",
            "exact" | "prefix" | "regex" => "value",
            s => s,
        };
        let mapped = match segment.split_once('[') {
            Some(("source_ips", idx)) => format!("sourceIPs[{idx}"),
            _ => mapped.to_string(),
        };
        out.push('.');
        out.push_str(&mapped);
    }
    out
}

fn check_authorization(
    key: &ObjectKey,
    spec: &Value,
    modules: &ModuleOptions,
) -> Result<Checked, Problem> {
    let spec: AuthorizationPolicySpec = parse_spec(spec).map_err(spec_error)?;
    check_targets(&spec.target_refs, true)?;
    let policy = authorization_json(key, &spec);
    validate_policy_config(&json!({ "policies": [policy] }))?;
    policy_module(modules)?;
    Ok(Checked {
        targets: spec.target_refs,
        contribution: Contribution::Authorization(policy),
    })
}

fn check_rate_limits(
    key: &ObjectKey,
    spec: &Value,
    modules: &ModuleOptions,
) -> Result<Checked, Problem> {
    let spec: RateLimitPolicySpec = parse_spec(spec).map_err(spec_error)?;
    check_targets(&spec.target_refs, true)?;
    if spec.limits.is_empty() {
        return Err(invalid("spec.limits", "at least one limit is required"));
    }
    let limits = rate_limits_json(key, &spec)?;
    validate_policy_config(&json!({ "rate_limits": limits }))?;
    policy_module(modules)?;
    Ok(Checked {
        targets: spec.target_refs,
        contribution: Contribution::RateLimits(limits),
    })
}

fn check_wasm_filter(
    key: &ObjectKey,
    spec: &Value,
    modules: &ModuleOptions,
) -> Result<Checked, Problem> {
    let spec: WasmFilterSpec = parse_spec(spec).map_err(spec_error)?;
    check_targets(&spec.target_refs, false)?;
    let module = &spec.module;
    match (&module.path, &module.url) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(invalid("spec.module", "set exactly one of path and url"));
        }
        (Some(p), None) if p.is_empty() => {
            return Err(invalid(
                "spec.module.path",
                "must name a file in the control plane's module directory",
            ));
        }
        (None, Some(u)) if !(u.starts_with("http://") || u.starts_with("https://")) => {
            return Err(invalid(
                "spec.module.url",
                "must be an http:// or https:// URL",
            ));
        }
        _ => {}
    }
    if module.sha256.len() != 64
        || !module
            .sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(invalid(
            "spec.module.sha256",
            "must be 64 lower-case hex digits",
        ));
    }
    let configuration = spec.config.clone().unwrap_or(Value::Null);
    if modules.policy_module.as_deref() == Some(module.sha256.as_str()) {
        // The policy filter: its configuration can be checked here rather than by Envoy.
        let bytes = serde_json::to_vec(&configuration).unwrap_or_default();
        let bytes = if configuration.is_null() {
            Vec::new()
        } else {
            bytes
        };
        if let Err(e) = trellis_policy::PolicyFilter::from_json(&bytes) {
            return Err(invalid("spec.config", e));
        }
    }
    if modules.server.is_none() {
        return Err(Problem::unresolved(
            Reason::ModuleNotFound,
            "the control plane serves no modules",
        ));
    }
    match modules.modules.get(module) {
        Some(ModuleState::Verified) => {}
        Some(ModuleState::Problem { reason, message }) => {
            return Err(Problem::unresolved(
                *reason,
                format!("spec.module: {message}"),
            ));
        }
        None => {
            return Err(Problem::unresolved(
                Reason::ModuleNotFound,
                "spec.module: not fetched yet",
            ));
        }
    }
    let name = format!("wasmfilter/{}/{}", key.namespace, key.name);
    Ok(Checked {
        targets: spec.target_refs,
        contribution: Contribution::Wasm {
            order: spec.order,
            filter: WasmFilterIr {
                vm_id: name.clone(),
                name,
                sha256: module.sha256.clone(),
                configuration,
                fail_open: spec.failure_policy == FailurePolicy::FailOpen,
                disabled: false,
            },
        },
    })
}

/// Where in a chain an attachment applies.
enum ChainScope {
    All,
    Parts {
        listeners: BTreeSet<String>,
        routes: Vec<RouteTarget>,
    },
}

fn chain_scope(chain: &FilterChainIr, selectors: &[Selector]) -> Option<ChainScope> {
    let mut listeners = BTreeSet::new();
    let mut routes = Vec::new();
    for selector in selectors {
        match selector {
            Selector::Gateway(None) => return Some(ChainScope::All),
            Selector::Gateway(Some(l)) => {
                let own_chain = chain.listener.as_ref() == Some(l);
                let all_vhosts = !chain.virtual_hosts.is_empty()
                    && chain.virtual_hosts.iter().all(|vh| &vh.listener == l);
                if own_chain || all_vhosts {
                    return Some(ChainScope::All);
                }
                if chain.virtual_hosts.iter().any(|vh| &vh.listener == l) {
                    listeners.insert(l.clone());
                }
            }
            Selector::Routes(target) => {
                if chain_has_route(chain, target) {
                    routes.push(target.clone());
                }
            }
            Selector::Ports(..) | Selector::Outbound(_) => {}
        }
    }
    (!listeners.is_empty() || !routes.is_empty()).then_some(ChainScope::Parts { listeners, routes })
}

/// The policy filter's scope for a chain scope: `"all"`, or the names of the routes selected
/// (every route of a selected Gateway listener's virtual hosts, and every route that came from
/// a selected HTTPRoute or rule).
fn policy_scope(chain: &FilterChainIr, scope: &ChainScope) -> Option<Value> {
    match scope {
        ChainScope::All => Some(json!("all")),
        ChainScope::Parts { listeners, routes } => {
            let names: BTreeSet<String> = chain
                .virtual_hosts
                .iter()
                .flat_map(|vh| {
                    let whole = listeners.contains(&vh.listener);
                    vh.routes
                        .iter()
                        .filter(move |r| whole || RouteTarget::selects_any(routes, r))
                })
                .map(|r| r.origin.route_name())
                .collect();
            (!names.is_empty()).then(|| json!({ "routes": names }))
        }
    }
}

/// Adds the policy filter to the inbound HTTP ports of a sidecar class that its attachments'
/// Services reach: the callers are the mesh's, so their principals come from the mutual-TLS
/// handshake, and their address from the connection.
fn apply_to_sidecar(
    sidecar: &mut crate::ir::SidecarIr,
    attachments: &[Attachment],
    modules: &ModuleOptions,
) {
    trace_sidecar(sidecar, attachments);
    let Some(sha256) = &modules.policy_module else {
        return;
    };
    sidecar.inbound_filters.clear();
    for port in sidecar.inbound.iter().map(|p| p.port) {
        let mut policies = Vec::new();
        let mut limits = Vec::new();
        for a in attachments {
            let reaches = a.selectors.iter().any(|s| match s {
                Selector::Ports(_, ports) => ports.contains(&port),
                _ => false,
            });
            if !reaches {
                continue;
            }
            match &*a.contribution {
                Contribution::Authorization(policy) => {
                    let mut p = policy.clone();
                    p["scope"] = json!("all");
                    policies.push(p);
                }
                Contribution::RateLimits(list) => {
                    for l in list {
                        let mut l = l.clone();
                        l["scope"] = json!("all");
                        limits.push(l);
                    }
                }
                Contribution::Wasm { .. } | Contribution::Tracing(_) | Contribution::Traffic(_) => {
                }
            }
        }
        if policies.is_empty() && limits.is_empty() {
            continue;
        }
        let mut configuration = Map::new();
        if sidecar.mtls.is_some() {
            // Requests counted by the caller's SPIFFE ID (trellis_inbound_requests_total), the
            // callers that are no Trellis proxy included.
            configuration.insert("telemetry".into(), json!({"peer_counters": true}));
        }
        let filter = policy_filter(sha256, configuration, policies, limits);
        sidecar.inbound_filters.insert(port, vec![filter]);
    }
    if !sidecar.inbound_filters.is_empty() {
        sidecar.module_server = modules.server.clone();
    }
}

/// The policy filter with `configuration` and the policies and limits it enforces.
fn policy_filter(
    sha256: &str,
    mut configuration: Map<String, Value>,
    policies: Vec<Value>,
    limits: Vec<Value>,
) -> WasmFilterIr {
    if !policies.is_empty() {
        configuration.insert("policies".into(), Value::Array(policies));
    }
    if !limits.is_empty() {
        configuration.insert("rate_limits".into(), Value::Array(limits));
    }
    WasmFilterIr {
        name: POLICY_FILTER.to_string(),
        sha256: sha256.to_string(),
        vm_id: POLICY_FILTER.to_string(),
        configuration: Value::Object(configuration),
        fail_open: false,
        disabled: false,
    }
}

/// The Service a cluster (`service/<ns>/<name>/<port>`) sends to.
pub fn cluster_service(cluster: &str) -> Option<ObjectKey> {
    let mut parts = cluster.strip_prefix("service/")?.split('/');
    let (ns, name, _port) = (parts.next()?, parts.next()?, parts.next()?);
    parts.next().is_none().then(|| ObjectKey::new(ns, name))
}

/// The policy filter's telemetry core on one gateway chain: with tracing, the decision and the
/// deciding rule (and allow-listed baggage keys) become span tags; routes to a Service with a
/// p99 objective (HealthPolicy) are classified good or bad against it, exactly, per request.
/// The chain gets the policy filter for it when it has none (and the control plane serves the
/// module); returns whether it runs the filter.
fn telemetry_core(
    chain: &mut FilterChainIr,
    modules: &ModuleOptions,
    objectives: &BTreeMap<ObjectKey, crate::telemetry::ObjectiveIr>,
) -> bool {
    let Some(sha256) = &modules.policy_module else {
        return false;
    };
    let has_filter = chain.http_filters.iter().any(|f| f.name == POLICY_FILTER);
    // Routes by objective (whole milliseconds, rounded up): the strictest of their backends'.
    let mut by_objective: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for r in chain.virtual_hosts.iter().flat_map(|vh| &vh.routes) {
        let crate::ir::ActionIr::Forward(forward) = &r.action else {
            continue;
        };
        let objective = forward
            .backends
            .iter()
            .filter_map(|b| b.cluster.as_deref().and_then(cluster_service))
            .filter_map(|s| objectives.get(&s)?.p99_latency_ms)
            .min_by(f64::total_cmp);
        if let Some(ms) = objective {
            by_objective
                .entry(ms.ceil() as u64)
                .or_default()
                .insert(r.origin.route_name());
        }
    }
    let baggage = chain
        .tracing
        .as_ref()
        .map(|t| t.baggage_tags.clone())
        .unwrap_or_default();
    if !has_filter && baggage.is_empty() && by_objective.is_empty() {
        return false;
    }
    let span_tags = chain.tracing.is_some();
    let telemetry = json!({
        "span_tags": span_tags,
        "baggage_tags": if span_tags { baggage.clone() } else { Vec::new() },
        "latency_objectives": by_objective
            .iter()
            .map(|(ms, routes)| json!({"scope": {"routes": routes}, "objective_ms": ms}))
            .collect::<Vec<_>>(),
    });
    if has_filter {
        for f in &mut chain.http_filters {
            if f.name == POLICY_FILTER
                && let Some(config) = f.configuration.as_object_mut()
            {
                config.insert("telemetry".into(), telemetry.clone());
            }
        }
    } else {
        let mut configuration = Map::new();
        configuration.insert("client_ip_header".into(), json!("x-forwarded-for"));
        configuration.insert("client_certificates".into(), json!(false));
        configuration.insert("telemetry".into(), telemetry);
        chain.http_filters.insert(
            0,
            policy_filter(sha256, configuration, Vec::new(), Vec::new()),
        );
    }
    if let Some(t) = &mut chain.tracing {
        use crate::ir::{TagIr, TagValueIr};
        use trellis_policy::telemetry::{DECISION_STATE, RULE_STATE, baggage_state};
        t.custom_tags.push(TagIr {
            name: "trellis.decision".into(),
            value: TagValueIr::FilterState(DECISION_STATE.into()),
        });
        t.custom_tags.push(TagIr {
            name: "trellis.rule".into(),
            value: TagValueIr::FilterState(RULE_STATE.into()),
        });
        for key in &baggage {
            t.custom_tags.push(TagIr {
                name: format!("baggage.{key}"),
                value: TagValueIr::FilterState(baggage_state(key)),
            });
        }
    }
    true
}

/// Tracing of one gateway chain: the first TracingPolicy (by namespace and name) targeting the
/// whole chain (its Gateway, or the listener it serves) sets it; policies targeting routes set
/// those routes' sampling and tags, and when none targets the whole chain the first of them
/// supplies the tracer, sampling nothing else.
fn trace_chain(chain: &mut FilterChainIr, attachments: &[Attachment], proxy: &str) {
    let mut whole: Option<&TracingIr> = None;
    let mut parts: Vec<(ChainScope, &TracingIr)> = Vec::new();
    for a in attachments {
        let Contribution::Tracing(t) = &*a.contribution else {
            continue;
        };
        match chain_scope(chain, &a.selectors) {
            Some(ChainScope::All) => {
                whole.get_or_insert(t);
            }
            Some(scope) => parts.push((scope, t)),
            None => {}
        }
    }
    let mut tracer = whole.cloned();
    for (scope, t) in parts.iter().rev() {
        let ChainScope::Parts { listeners, routes } = scope else {
            continue;
        };
        for vh in &mut chain.virtual_hosts {
            let whole_host = listeners.contains(&vh.listener);
            for r in &mut vh.routes {
                if whole_host || RouteTarget::selects_any(routes, r) {
                    r.tracing = Some(RouteTracingIr {
                        sampling: t.sampling,
                        custom_tags: t.custom_tags.clone(),
                    });
                }
            }
        }
        if whole.is_none() {
            tracer = Some(TracingIr {
                sampling: 0,
                custom_tags: Vec::new(),
                ..(*t).clone()
            });
        }
    }
    chain.tracing = tracer.map(|mut t| {
        t.service_name = proxy.to_string();
        t
    });
}

/// Tracing of a sidecar class: the inbound HTTP ports a targeted Service reaches (spans named
/// for that Service), and its clients' outbound listeners for it (spans named for the
/// callers' namespace).
fn trace_sidecar(sidecar: &mut crate::ir::SidecarIr, attachments: &[Attachment]) {
    sidecar.inbound_tracing.clear();
    for l in &mut sidecar.outbound {
        l.tracing = None;
    }
    for a in attachments {
        let Contribution::Tracing(t) = &*a.contribution else {
            continue;
        };
        for selector in &a.selectors {
            match selector {
                Selector::Ports(service, ports) => {
                    for port in ports {
                        sidecar
                            .inbound_tracing
                            .entry(*port)
                            .or_insert_with(|| TracingIr {
                                service_name: format!("{}/{}", service.namespace, service.name),
                                // Inside the mesh, the caller's context is the trace's.
                                trust_incoming_context: true,
                                ..t.clone()
                            });
                    }
                }
                Selector::Outbound(service) => {
                    let caller = sidecar.namespace.clone();
                    for l in &mut sidecar.outbound {
                        if l.service == *service && l.route_config.is_some() && l.tracing.is_none()
                        {
                            l.tracing = Some(TracingIr {
                                service_name: caller.clone(),
                                // The app's context (of the request it is serving) continues.
                                trust_incoming_context: true,
                                ..t.clone()
                            });
                        }
                    }
                }
                Selector::Gateway(_) | Selector::Routes(_) => {}
            }
        }
    }
}

/// Adds the filters of a proxy's attachments to one chain; returns whether it has any.
fn apply_to_chain(
    chain: &mut FilterChainIr,
    attachments: &[Attachment],
    modules: &ModuleOptions,
) -> bool {
    let mut policies = Vec::new();
    let mut limits = Vec::new();
    let mut wasm: Vec<(i32, &ObjectKey, WasmFilterIr)> = Vec::new();
    for a in attachments {
        let Some(scope) = chain_scope(chain, &a.selectors) else {
            continue;
        };
        match &*a.contribution {
            Contribution::Authorization(policy) => {
                if let Some(s) = policy_scope(chain, &scope) {
                    let mut p = policy.clone();
                    p["scope"] = s;
                    policies.push(p);
                }
            }
            Contribution::RateLimits(list) => {
                if let Some(s) = policy_scope(chain, &scope) {
                    for l in list {
                        let mut l = l.clone();
                        l["scope"] = s.clone();
                        limits.push(l);
                    }
                }
            }
            Contribution::Wasm { order, filter } => {
                let mut filter = filter.clone();
                if let ChainScope::Parts { listeners, routes } = &scope {
                    filter.disabled = true;
                    for vh in &mut chain.virtual_hosts {
                        if listeners.contains(&vh.listener) {
                            vh.enabled_filters.push(filter.name.clone());
                        }
                        for r in &mut vh.routes {
                            if RouteTarget::selects_any(routes, r) {
                                r.enabled_filters.push(filter.name.clone());
                            }
                        }
                    }
                }
                wasm.push((*order, &a.key, filter));
            }
            Contribution::Tracing(_) | Contribution::Traffic(_) => {}
        }
    }
    let mut filters = Vec::new();
    if (!policies.is_empty() || !limits.is_empty())
        && let Some(sha256) = &modules.policy_module
    {
        let mut configuration = Map::new();
        // The connection manager sets `use_remote_address` (no trusted hops): Envoy appends the
        // connection's address to x-forwarded-for, so its last entry is the client IP, read
        // with the headers rather than by a costlier property lookup.
        configuration.insert("client_ip_header".into(), json!("x-forwarded-for"));
        // No listener asks for client certificates (yet): no request has a principal.
        configuration.insert("client_certificates".into(), json!(false));
        filters.push(policy_filter(sha256, configuration, policies, limits));
    }
    wasm.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    filters.extend(wasm.into_iter().map(|(_, _, f)| f));
    let used = !filters.is_empty();
    chain.http_filters = filters;
    used
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Options, translate};
    use std::sync::Arc;
    use trellis_model::Object;
    use trellis_model::policy::AuthorizationPolicy;
    use trellis_sources::{ParsedDocument, parse_documents};

    const BASE: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: trellis}
spec: {controllerName: trellis.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: apps}
spec:
  gatewayClassName: trellis
  addresses: [{value: 127.0.0.10}]
  listeners: [{name: http, port: 8080, protocol: HTTP}]
";

    fn input(policy_spec: &str) -> InputSet {
        let mut input = InputSet::default();
        for doc in parse_documents(BASE) {
            if let ParsedDocument::Object { object, .. } = doc {
                input.insert(*object);
            }
        }
        let spec: Value = serde_json::from_str(policy_spec).unwrap();
        let mut meta = trellis_model::core::ObjectMeta {
            name: Some("p".into()),
            namespace: Some("apps".into()),
            ..Default::default()
        };
        meta.generation = Some(if spec.to_string().contains("[0-9+") {
            2
        } else {
            1
        });
        input.insert(Object::AuthorizationPolicy(Arc::new(
            AuthorizationPolicy::new(meta, spec),
        )));
        input
    }

    fn options(last_good: LastGood) -> Options {
        Options {
            modules: ModuleOptions {
                policy_module: Some("ab".repeat(32)),
                server: Some(EndpointIr {
                    address: "127.0.0.1".into(),
                    port: 1,
                    mtls: false,
                }),
                ..Default::default()
            },
            last_good,
            ..Default::default()
        }
    }

    fn policy_config(t: &crate::Translation) -> Option<String> {
        let chain = &t.ir.proxies["gateway/apps/web"].listeners[0].chains[0];
        chain
            .http_filters
            .first()
            .map(|f| f.configuration.to_string())
    }

    const GOOD: &str = r#"{"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "web"}],
        "defaultAction": "Allow", "rules": [{"name": "r", "action": "Deny", "paths": [{"type": "RegularExpression", "value": "/items/[0-9]+"}]}]}"#;
    const BAD: &str = r#"{"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "web"}],
        "defaultAction": "Allow", "rules": [{"name": "r", "action": "Deny", "paths": [{"type": "RegularExpression", "value": "/items/[0-9+"}]}]}"#;

    #[test]
    fn an_invalid_policy_keeps_its_last_valid_version_in_force() {
        let first = translate(&input(GOOD), &options(LastGood::default()));
        let good_config = policy_config(&first).expect("the policy filter is configured");
        assert!(good_config.contains("/items/[0-9]+"), "{good_config}");
        assert_eq!(first.last_good.len(), 1);

        let second = translate(&input(BAD), &options(first.last_good.clone()));
        assert_eq!(policy_config(&second), Some(good_config));
        let status = &second.status.authorization_policies[&ObjectKey::new("apps", "p")];
        let accepted = &status.ancestors[0].conditions[0];
        assert_eq!(accepted.status, "False");
        assert_eq!(accepted.reason, "Invalid");
        assert!(
            accepted
                .message
                .contains("spec.rules[0].paths[0].value: is not a valid regular expression"),
            "{}",
            accepted.message
        );
        assert!(
            accepted
                .message
                .contains("the last valid version (generation 1) stays in force"),
            "{}",
            accepted.message
        );
        assert_eq!(second.last_good, first.last_good);
        // Kept across a restart: what was written reads back the same.
        assert_eq!(
            LastGood::from_json(&first.last_good.to_json()),
            first.last_good
        );
    }

    #[test]
    fn an_invalid_policy_without_a_valid_version_is_not_applied() {
        let t = translate(&input(BAD), &options(LastGood::default()));
        assert_eq!(policy_config(&t), None);
        assert!(t.last_good.is_empty());
        let status = &t.status.authorization_policies[&ObjectKey::new("apps", "p")];
        assert!(
            status.ancestors[0].conditions[0]
                .message
                .ends_with("the policy is not applied")
        );
    }

    #[test]
    fn a_deleted_policy_is_forgotten() {
        let first = translate(&input(GOOD), &options(LastGood::default()));
        let mut without = input(GOOD);
        without.authorization_policies.clear();
        let second = translate(&without, &options(first.last_good));
        assert!(second.last_good.is_empty());
        assert_eq!(policy_config(&second), None);
    }

    #[test]
    fn filter_fields_map_to_spec_fields() {
        assert_eq!(
            spec_field("policies[0].rules[1].paths[0].regex"),
            "spec.rules[1].paths[0].value"
        );
        assert_eq!(
            spec_field("policies[0].rules[0].source_ips[2]"),
            "spec.rules[0].sourceIPs[2]"
        );
        assert_eq!(spec_field("rate_limits[1].name"), "spec.limits[1].name");
        assert_eq!(
            spec_field("rate_limits[0].max_keys"),
            "spec.limits[0].maxKeys"
        );
    }
}
