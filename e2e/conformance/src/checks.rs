//! Assertions on status and traffic, with upstream's semantics: conditions are matched by type,
//! status and reason (empty matches any); "latest" conditions carry the object's generation as
//! `observedGeneration`; route parents match by controller, group, kind, name, namespace and
//! conditions; requests converge when they pass three times in a row.

use super::Suite;
use super::cluster::{CONTROLLER, ObjId};
use super::http::{
    self, ExpectedResponse, Protocol, Tls, await_convergence, compare, round_trip, wire_request,
};
use super::subtests::Subtests;
use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Annotation that excludes a Gateway from upstream's `NamespacesMustBeReady`.
const SKIP_READINESS: &str = "gateway-api/skip-this-for-readiness";

/// A namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nn {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Shorthand for a namespaced name.
pub fn nn(namespace: &str, name: &str) -> Nn {
    Nn {
        namespace: namespace.into(),
        name: name.into(),
    }
}

impl std::fmt::Display for Nn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A Gateway, optionally narrowed to some listeners.
#[derive(Clone, Debug)]
pub struct GatewayRef {
    /// The Gateway.
    pub nn: Nn,
    /// Listener (section) names; the whole Gateway when empty.
    pub listeners: Vec<String>,
}

impl GatewayRef {
    /// The whole Gateway.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            nn: nn(namespace, name),
            listeners: Vec::new(),
        }
    }

    /// Some listeners of the Gateway.
    pub fn with_listeners(namespace: &str, name: &str, listeners: &[&str]) -> Self {
        Self {
            nn: nn(namespace, name),
            listeners: listeners.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// An expected condition; empty status or reason matches any.
#[derive(Clone, Debug)]
pub struct Cond {
    /// Type.
    pub type_: String,
    /// "True", "False" or "" (any).
    pub status: String,
    /// Reason or "" (any).
    pub reason: String,
}

/// Shorthand for an expected condition.
pub fn cond(type_: &str, status: &str, reason: &str) -> Cond {
    Cond {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
    }
}

/// An expected route parent status. As upstream, parents are matched by controller, group,
/// kind, name, namespace and conditions; `section_name` and `port` document the expectation but
/// are not compared.
#[derive(Clone, Debug)]
pub struct ParentExpect {
    /// The parent Gateway.
    pub gateway: Nn,
    /// `sectionName`, if the parentRef has one.
    pub section_name: Option<String>,
    /// `port`, if the parentRef has one.
    pub port: Option<i64>,
    /// Conditions that must be present.
    pub conditions: Vec<Cond>,
}

/// Shorthand for a parent expectation on a whole Gateway.
pub fn parent(gateway: Nn, conditions: Vec<Cond>) -> ParentExpect {
    ParentExpect {
        gateway,
        section_name: None,
        port: None,
        conditions,
    }
}

/// An expected listener status.
#[derive(Clone, Debug)]
pub struct ListenerExpect {
    /// Listener name.
    pub name: String,
    /// Route kinds (group gateway.networking.k8s.io) that must be listed.
    pub supported_kinds: Vec<String>,
    /// Exact attachedRoutes.
    pub attached_routes: i64,
    /// Conditions that must be present.
    pub conditions: Vec<Cond>,
}

/// The generation a status report (`{kind, metadata, status}`) was made for.
fn generation_of(report: &Value) -> i64 {
    report["metadata"]["generation"].as_i64().unwrap_or(0)
}

/// The elements of a JSON array (none when it is absent).
fn items(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// Whether `actual` has a condition matching `expected`.
pub fn has_condition(actual: &Value, expected: &Cond) -> bool {
    actual.as_array().into_iter().flatten().any(|c| {
        c["type"] == expected.type_.as_str()
            && (expected.status.is_empty() || c["status"] == expected.status.as_str())
            && (expected.reason.is_empty() || c["reason"] == expected.reason.as_str())
    })
}

/// Whether every expected condition is present.
pub fn conditions_match(actual: &Value, expected: &[Cond]) -> bool {
    actual.as_array().map_or(0, Vec::len) >= expected.len()
        && expected.iter().all(|e| has_condition(actual, e))
}

/// Whether every condition carries the generation.
pub fn latest(conditions: &Value, generation: i64) -> bool {
    conditions
        .as_array()
        .into_iter()
        .flatten()
        .all(|c| c["observedGeneration"].as_i64() == Some(generation))
}

impl Suite {
    /// Polls `f` until it returns `Ok(Some(_))`, for the status timeout.
    pub fn eventually<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&Suite) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + self.timeouts.status;
        let mut last = String::from("not yet");
        loop {
            match f(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}: {last}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The status report object (`{kind, metadata, status}`) of an object, if reported.
    pub fn status(&self, kind: &str, namespace: &str, name: &str) -> anyhow::Result<Option<Value>> {
        self.cluster.status_object(kind, namespace, name)
    }

    /// The generation Trellis holds for an object.
    pub fn generation(&self, kind: &str, namespace: &str, name: &str) -> anyhow::Result<i64> {
        self.status(kind, namespace, name)?
            .and_then(|o| o["metadata"]["generation"].as_i64())
            .ok_or_else(|| anyhow!("{kind} {namespace}/{name} has no status"))
    }

    /// Waits for the Gateway's address; returns `ip:port` of its first (or named) listener.
    pub fn wait_gateway_address(&self, gw: &GatewayRef) -> anyhow::Result<String> {
        self.eventually(&format!("Gateway {} to have an address", gw.nn), |s| {
            let Some(o) = s.status("Gateway", &gw.nn.namespace, &gw.nn.name)? else {
                return Ok(None);
            };
            let generation = generation_of(&o);
            if !latest(&o["status"]["conditions"], generation) {
                return Ok(None);
            }
            let spec = s
                .cluster
                .get(&super::cluster::ObjId::new(
                    "Gateway",
                    &gw.nn.namespace,
                    &gw.nn.name,
                ))
                .cloned()
                .unwrap_or_default();
            let listeners = items(&spec["spec"]["listeners"]);
            let listener = gw
                .listeners
                .first()
                .and_then(|n| listeners.iter().find(|l| l["name"] == n.as_str()))
                .or(listeners.first())
                .cloned()
                .unwrap_or_default();
            let port = listener["port"].as_i64().unwrap_or(80);
            let ip = o["status"]["addresses"]
                .as_array()
                .and_then(|a| a.iter().find(|a| a["type"].is_string()))
                .and_then(|a| a["value"].as_str())
                .map(str::to_string);
            Ok(ip.map(|ip| format!("{ip}:{port}")))
        })
    }

    /// Upstream's `GatewayAndHTTPRoutesMustBeAccepted`: the Gateway has an address, each route
    /// is Accepted by it (per listener named), and every listener is Accepted, ResolvedRefs and
    /// Programmed. Returns the Gateway's `ip:port`.
    pub fn gateway_and_http_routes_must_be_accepted(
        &mut self,
        gw: &GatewayRef,
        routes: &[Nn],
    ) -> anyhow::Result<String> {
        let addr = self.wait_gateway_address(gw)?;
        let sections: Vec<Option<String>> = if gw.listeners.is_empty() {
            vec![None]
        } else {
            gw.listeners.iter().cloned().map(Some).collect()
        };
        for route in routes {
            let namespace_required = route.namespace != gw.nn.namespace;
            let parents: Vec<ParentExpect> = sections
                .iter()
                .map(|s| ParentExpect {
                    gateway: gw.nn.clone(),
                    section_name: s.clone(),
                    port: None,
                    conditions: vec![cond("Accepted", "True", "Accepted")],
                })
                .collect();
            self.http_route_must_have_parents(route, &parents, namespace_required)?;
        }
        self.gateway_listeners_must_have_conditions(
            &gw.nn,
            &[
                cond("ResolvedRefs", "True", ""),
                cond("Accepted", "True", ""),
                cond("Programmed", "True", ""),
            ],
        )?;
        self.logf(format!(
            "Gateway {} and routes accepted; address {addr}",
            gw.nn
        ));
        Ok(addr)
    }

    /// Upstream's usual preamble: [`Self::gateway_and_http_routes_must_be_accepted`], then
    /// `HTTPRouteMustHaveResolvedRefsConditionsTrue` for each route. Returns the Gateway's
    /// `ip:port`.
    pub fn routes_must_be_accepted_and_resolved(
        &mut self,
        gw: &GatewayRef,
        routes: &[Nn],
    ) -> anyhow::Result<String> {
        let addr = self.gateway_and_http_routes_must_be_accepted(gw, routes)?;
        for route in routes {
            self.http_route_must_have_resolved_refs(route, &gw.nn)?;
        }
        Ok(addr)
    }

    /// Upstream's `HTTPRouteMustHaveParents` (the route's parents match, with latest
    /// observedGeneration).
    pub fn http_route_must_have_parents(
        &self,
        route: &Nn,
        expected: &[ParentExpect],
        namespace_required: bool,
    ) -> anyhow::Result<()> {
        self.eventually(
            &format!("HTTPRoute {route} to have the expected parents"),
            |s| {
                let Some(o) = s.status("HTTPRoute", &route.namespace, &route.name)? else {
                    return Ok(None);
                };
                let generation = generation_of(&o);
                let actual = items(&o["status"]["parents"]);
                for p in &actual {
                    if !latest(&p["conditions"], generation) {
                        return Ok(None);
                    }
                }
                let all = expected.iter().all(|e| {
                    actual.iter().any(|a| {
                        let r = &a["parentRef"];
                        a["controllerName"] == CONTROLLER
                            && r["group"] == "gateway.networking.k8s.io"
                            && r["kind"] == "Gateway"
                            && r["name"] == e.gateway.name.as_str()
                            && (match r["namespace"].as_str() {
                                Some(ns) => ns == e.gateway.namespace,
                                None => !namespace_required,
                            })
                            && conditions_match(&a["conditions"], &e.conditions)
                    })
                });
                if all {
                    Ok(Some(()))
                } else {
                    Err(anyhow!(
                        "parents are {}",
                        serde_json::to_string(&actual).unwrap_or_default()
                    ))
                }
            },
        )
    }

    /// Upstream's `HTTPRouteMustHaveNoAcceptedParents`, polled every second: the route has no
    /// parents (seen on two polls in a row, to tell "not set" from "not yet set"), or exactly
    /// one parent whose conditions carry the route's generation and include Accepted False.
    pub fn http_route_must_have_no_accepted_parents(&self, route: &Nn) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.timeouts.route_must_not_have_parents;
        let mut empty_seen = false;
        let mut last = String::from("no status");
        loop {
            if let Some(o) = self.status("HTTPRoute", &route.namespace, &route.name)? {
                let generation = generation_of(&o);
                let parents = items(&o["status"]["parents"]);
                last = serde_json::to_string(&parents).unwrap_or_default();
                match parents.as_slice() {
                    [] if empty_seen => return Ok(()),
                    [] => empty_seen = true,
                    [p] => {
                        empty_seen = false;
                        if latest(&p["conditions"], generation)
                            && conditions_match(&p["conditions"], &[cond("Accepted", "False", "")])
                        {
                            return Ok(());
                        }
                    }
                    _ => empty_seen = false,
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for HTTPRoute {route} to have no accepted parents; parents are {last}"
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Upstream's `HTTPRouteMustHaveCondition`: the route's status for the Gateway has the
    /// condition.
    pub fn http_route_must_have_condition(
        &self,
        route: &Nn,
        gateway: &Nn,
        c: Cond,
    ) -> anyhow::Result<()> {
        self.eventually(
            &format!("HTTPRoute {route} to have {c:?} for {gateway}"),
            |s| {
                let Some(o) = s.status("HTTPRoute", &route.namespace, &route.name)? else {
                    return Ok(None);
                };
                let generation = generation_of(&o);
                let parents = items(&o["status"]["parents"]);
                let ok = parents.iter().any(|p| {
                    let r = &p["parentRef"];
                    r["name"] == gateway.name.as_str()
                        && r["namespace"].as_str().unwrap_or(&route.namespace) == gateway.namespace
                        && latest(&p["conditions"], generation)
                        && has_condition(&p["conditions"], &c)
                });
                if ok {
                    Ok(Some(()))
                } else {
                    Err(anyhow!(
                        "parents are {}",
                        serde_json::to_string(&parents).unwrap_or_default()
                    ))
                }
            },
        )
    }

    /// Upstream's `HTTPRouteMustHaveResolvedRefsConditionsTrue`: the route's status for the
    /// Gateway has ResolvedRefs True with reason ResolvedRefs.
    pub fn http_route_must_have_resolved_refs(
        &self,
        route: &Nn,
        gateway: &Nn,
    ) -> anyhow::Result<()> {
        self.http_route_must_have_condition(
            route,
            gateway,
            cond("ResolvedRefs", "True", "ResolvedRefs"),
        )
    }

    /// Every listener of the Gateway has these conditions.
    pub fn gateway_listeners_must_have_conditions(
        &self,
        gw: &Nn,
        conditions: &[Cond],
    ) -> anyhow::Result<()> {
        self.eventually(
            &format!("listeners of Gateway {gw} to have {conditions:?}"),
            |s| {
                let Some(o) = s.status("Gateway", &gw.namespace, &gw.name)? else {
                    return Ok(None);
                };
                let listeners = items(&o["status"]["listeners"]);
                let ok = !listeners.is_empty()
                    && listeners
                        .iter()
                        .all(|l| conditions_match(&l["conditions"], conditions));
                if ok {
                    Ok(Some(()))
                } else {
                    Err(anyhow!(
                        "listeners are {}",
                        serde_json::to_string(&listeners).unwrap_or_default()
                    ))
                }
            },
        )
    }

    /// One listener of the Gateway has these conditions.
    pub fn gateway_listener_must_have_conditions(
        &self,
        gw: &Nn,
        listener: &str,
        conditions: &[Cond],
    ) -> anyhow::Result<()> {
        self.eventually(
            &format!("listener {listener} of Gateway {gw} to have {conditions:?}"),
            |s| {
                let Some(o) = s.status("Gateway", &gw.namespace, &gw.name)? else {
                    return Ok(None);
                };
                let l = o["status"]["listeners"]
                    .as_array()
                    .and_then(|ls| ls.iter().find(|l| l["name"] == listener).cloned());
                match l {
                    Some(l) if conditions_match(&l["conditions"], conditions) => Ok(Some(())),
                    other => Err(anyhow!(
                        "listener status is {}",
                        serde_json::to_string(&other).unwrap_or_default()
                    )),
                }
            },
        )
    }

    /// Upstream's `GatewayStatusMustHaveListeners`: the listener statuses match exactly in
    /// count, and each has the kinds, attachedRoutes and conditions expected.
    pub fn gateway_status_must_have_listeners(
        &self,
        gw: &Nn,
        expected: &[ListenerExpect],
    ) -> anyhow::Result<()> {
        self.eventually(
            &format!("Gateway {gw} to have the expected listener status"),
            |s| {
                let Some(o) = s.status("Gateway", &gw.namespace, &gw.name)? else {
                    return Ok(None);
                };
                let generation = generation_of(&o);
                if !latest(&o["status"]["conditions"], generation) {
                    return Ok(None);
                }
                let actual = items(&o["status"]["listeners"]);
                let ok = actual.len() == expected.len()
                    && expected.iter().all(|e| {
                        actual
                            .iter()
                            .find(|a| a["name"] == e.name.as_str())
                            .is_some_and(|a| {
                                let kinds = items(&a["supportedKinds"]);
                                let kinds_ok = if e.supported_kinds.is_empty() {
                                    kinds.is_empty()
                                } else {
                                    e.supported_kinds.iter().all(|k| {
                                        kinds.iter().any(|ak| {
                                            ak["kind"] == k.as_str()
                                                && ak["group"]
                                                    .as_str()
                                                    .unwrap_or("gateway.networking.k8s.io")
                                                    == "gateway.networking.k8s.io"
                                        })
                                    })
                                };
                                kinds_ok
                                    && a["attachedRoutes"].as_i64() == Some(e.attached_routes)
                                    && conditions_match(&a["conditions"], &e.conditions)
                            })
                    });
                if ok {
                    Ok(Some(()))
                } else {
                    Err(anyhow!(
                        "listeners are {}",
                        serde_json::to_string(&actual).unwrap_or_default()
                    ))
                }
            },
        )
    }

    /// Upstream's `GatewayMustHaveZeroRoutes`: the Gateway's conditions carry its generation and
    /// its status lists no listener, or exactly one listener with zero attached routes.
    pub fn gateway_must_have_zero_routes(&self, gw: &Nn) -> anyhow::Result<()> {
        self.eventually(&format!("Gateway {gw} to have zero routes"), |s| {
            let Some(o) = s.status("Gateway", &gw.namespace, &gw.name)? else {
                return Ok(None);
            };
            let generation = generation_of(&o);
            if !latest(&o["status"]["conditions"], generation) {
                return Err(anyhow!("Gateway conditions are stale"));
            }
            let listeners = items(&o["status"]["listeners"]);
            match listeners.as_slice() {
                [] => Ok(Some(())),
                [l] if l["attachedRoutes"].as_i64() == Some(0) => Ok(Some(())),
                _ => Err(anyhow!(
                    "want zero listeners or one with zero routes, listeners are {}",
                    serde_json::to_string(&listeners).unwrap_or_default()
                )),
            }
        })
    }

    /// Upstream's `GatewayMustHaveCondition` (with latest observedGeneration).
    pub fn gateway_must_have_condition(&self, gw: &Nn, c: Cond) -> anyhow::Result<()> {
        self.eventually(&format!("Gateway {gw} to have {c:?}"), |s| {
            let Some(o) = s.status("Gateway", &gw.namespace, &gw.name)? else {
                return Ok(None);
            };
            let generation = generation_of(&o);
            let conditions = &o["status"]["conditions"];
            if latest(conditions, generation) && has_condition(conditions, &c) {
                Ok(Some(()))
            } else {
                Err(anyhow!("conditions are {conditions}"))
            }
        })
    }

    /// Upstream's `GWCMustHaveAcceptedConditionAny`: the GatewayClass's conditions carry its
    /// generation and it has an Accepted condition (any status).
    pub fn gateway_class_must_have_accepted_condition_any(&self, name: &str) -> anyhow::Result<()> {
        self.eventually(
            &format!("GatewayClass {name} to have an Accepted condition"),
            |s| {
                let Some(o) = s.status("GatewayClass", "", name)? else {
                    return Ok(None);
                };
                let generation = generation_of(&o);
                let conditions = &o["status"]["conditions"];
                if !latest(conditions, generation) {
                    bail!("conditions are not at generation {generation}: {conditions}");
                }
                if has_condition(conditions, &cond("Accepted", "", "")) {
                    Ok(Some(()))
                } else {
                    Err(anyhow!("conditions are {conditions}"))
                }
            },
        )
    }

    /// Upstream's `NamespacesMustBeReady`: in each namespace, every Gateway not annotated
    /// `gateway-api/skip-this-for-readiness: "true"` has its conditions at the latest generation
    /// and is Accepted and Programmed, and the namespace has pods (ours are ready once started).
    pub fn namespaces_must_be_ready(&self, namespaces: &[&str]) -> anyhow::Result<()> {
        self.eventually(&format!("namespaces {namespaces:?} to be ready"), |s| {
            for ns in namespaces {
                let ids = s.cluster.ids();
                for id in ids
                    .iter()
                    .filter(|id| id.kind == "Gateway" && id.namespace == *ns)
                {
                    let skipped = s
                        .cluster
                        .get(id)
                        .is_some_and(|g| g["metadata"]["annotations"][SKIP_READINESS] == "true");
                    if skipped {
                        continue;
                    }
                    let Some(o) = s.status("Gateway", ns, &id.name)? else {
                        bail!("{id} has no status yet");
                    };
                    let generation = generation_of(&o);
                    let conditions = &o["status"]["conditions"];
                    if !latest(conditions, generation) {
                        bail!("{id} conditions are not at generation {generation}: {conditions}");
                    }
                    for t in ["Accepted", "Programmed"] {
                        if !has_condition(conditions, &cond(t, "True", "")) {
                            bail!("{id} is not {t} yet: {conditions}");
                        }
                    }
                }
                let has_pods = ids
                    .iter()
                    .filter(|id| id.kind == "Deployment" && id.namespace == *ns)
                    .any(|d| !s.cluster.pods(ns, &d.name).is_empty());
                if !has_pods {
                    bail!("no pods deployed in {ns} yet");
                }
            }
            Ok(Some(()))
        })
    }

    /// Changes an object's spec as upstream's tests do, and waits for the step the API server
    /// makes synchronously: Trellis reports a generation different from the one before (once
    /// it has read the file). Returns the generation before the change.
    pub fn patch_bumping_generation(
        &mut self,
        id: &ObjId,
        change: impl FnOnce(&mut Value),
    ) -> anyhow::Result<i64> {
        let before = self.generation(&id.kind, &id.namespace, &id.name)?;
        self.cluster.patch(id, change)?;
        self.eventually(
            &format!("the generation of {id} to change from {before}"),
            |s| Ok((s.generation(&id.kind, &id.namespace, &id.name)? != before).then_some(())),
        )?;
        Ok(before)
    }

    /// Upstream's closing check of the observedGeneration tests: the generation is no longer
    /// the one before the update.
    pub fn generation_must_have_changed(&self, id: &ObjId, before: i64) -> anyhow::Result<()> {
        let updated = self.generation(&id.kind, &id.namespace, &id.name)?;
        if updated == before {
            bail!("generation should change after an update (still {before})");
        }
        Ok(())
    }

    /// The object's own conditions carry its generation (Gateway, GatewayClass); for an
    /// HTTPRoute, every parent's conditions do.
    pub fn must_have_latest_conditions(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<()> {
        self.eventually(
            &format!("{kind} {namespace}/{name} to have the latest observedGeneration"),
            |s| {
                let Some(o) = s.status(kind, namespace, name)? else {
                    return Ok(None);
                };
                let generation = generation_of(&o);
                let ok = match kind {
                    "HTTPRoute" => o["status"]["parents"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().all(|p| latest(&p["conditions"], generation))),
                    _ => {
                        o["status"]["conditions"]
                            .as_array()
                            .is_some_and(|c| !c.is_empty())
                            && latest(&o["status"]["conditions"], generation)
                    }
                };
                if ok {
                    Ok(Some(()))
                } else {
                    Err(anyhow!("status is {}", o["status"]))
                }
            },
        )
    }

    /// Upstream's `MakeRequestAndExpectEventuallyConsistentResponse`: over plain HTTP, with the
    /// request's protocol (HTTP/1.1 unless set).
    pub fn expect(&mut self, gateway: &str, expected: &ExpectedResponse) -> anyhow::Result<()> {
        self.expect_with(gateway, expected, None)
    }

    /// The same with HTTP/2 prior knowledge (upstream's `H2C_PRIOR_KNOWLEDGE` requests).
    pub fn expect_h2c(&mut self, gateway: &str, expected: &ExpectedResponse) -> anyhow::Result<()> {
        let mut expected = expected.clone();
        expected.request.protocol = Protocol::H2c;
        self.expect_with(gateway, &expected, None)
    }

    /// Upstream's `MakeTLSRequestAndExpectEventuallyConsistentResponse`: over HTTPS with the
    /// given TLS settings, with the request's protocol (HTTP/1.1 unless set).
    pub fn expect_tls(
        &mut self,
        gateway: &str,
        expected: &ExpectedResponse,
        tls: &Tls,
    ) -> anyhow::Result<()> {
        self.expect_with(gateway, expected, Some(tls))
    }

    /// The same with HTTP/2 over TLS (upstream's `H2` requests: ALPN `h2` only, the request's
    /// host as `:authority`).
    pub fn expect_h2(
        &mut self,
        gateway: &str,
        expected: &ExpectedResponse,
        tls: &Tls,
    ) -> anyhow::Result<()> {
        let mut expected = expected.clone();
        expected.request.protocol = Protocol::H2;
        self.expect_with(gateway, &expected, Some(tls))
    }

    fn expect_with(
        &mut self,
        gateway: &str,
        expected: &ExpectedResponse,
        tls: Option<&Tls>,
    ) -> anyhow::Result<()> {
        let addr = resolve(gateway, tls.is_some())?;
        let req = wire_request(expected);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let sni = tls
            .map(|t| format!(" (SNI {})", t.server_name))
            .unwrap_or_default();
        let timeouts = self.timeouts;
        let name = expected.name(0);
        await_convergence(
            timeouts.required_successes,
            timeouts.max_time_to_consistency,
            |_| {
                let captured = round_trip(addr, &req, tls, timeouts.request)?;
                compare(scheme, &captured, expected)
            },
        )
        .with_context(|| {
            format!(
                "{name}: {} {} {}{}{sni}",
                req.protocol, req.method, expected.request.host, expected.request.path
            )
        })?;
        self.logf(format!("passed: {name}"));
        Ok(())
    }

    /// Runs a table of expectations as upstream's subtests named by `GetTestCaseName` (one after
    /// the other here, where upstream runs them in parallel); fails listing every case that did
    /// not converge.
    pub fn expect_cases(
        &mut self,
        gateway: &str,
        cases: &[ExpectedResponse],
    ) -> anyhow::Result<()> {
        self.expect_cases_routed(cases, |_| gateway.to_string())
    }

    /// Like [`Self::expect_cases`], choosing each case's Gateway address with `address_of`.
    pub fn expect_cases_routed(
        &mut self,
        cases: &[ExpectedResponse],
        address_of: impl Fn(&ExpectedResponse) -> String,
    ) -> anyhow::Result<()> {
        let mut subtests = Subtests::new();
        for (i, case) in cases.iter().enumerate() {
            let mut case = case.clone();
            case.test_case_name = case.name(i);
            let gateway = address_of(&case);
            subtests.run(self, &case.test_case_name.clone(), |s| {
                s.expect(&gateway, &case)
            });
        }
        subtests.finish()
    }

    /// Upstream's websocket probe, converging like a request: `what` holds when
    /// [`http::websocket_echo`] with this `Origin` succeeds three times in a row.
    pub fn expect_websocket_echo(
        &mut self,
        gateway: &str,
        origin: &str,
        what: &str,
    ) -> anyhow::Result<()> {
        let addr = resolve(gateway, false)?;
        let timeouts = self.timeouts;
        await_convergence(
            timeouts.required_successes,
            timeouts.max_time_to_consistency,
            |_| http::websocket_echo(addr, origin, timeouts.request),
        )
        .context(what.to_string())?;
        self.logf(format!("passed: {what}"));
        Ok(())
    }

    /// Upstream's `MakeRequestAndExpectFailure`: the request consistently does not succeed
    /// (a 200 fails the test at once).
    pub fn expect_failure(
        &mut self,
        gateway: &str,
        expected: &ExpectedResponse,
    ) -> anyhow::Result<()> {
        let addr = resolve(gateway, false)?;
        let req = wire_request(expected);
        let timeouts = self.timeouts;
        await_convergence(5, timeouts.max_time_to_consistency, |_| {
            let captured = round_trip(addr, &req, None, timeouts.request)?;
            if captured.status == 200 {
                bail!("request {} should have failed, got 200", req.path);
            }
            Ok(())
        })
    }

    /// One request, no retries.
    pub fn send(
        &self,
        gateway: &str,
        req: &http::Request,
        tls: Option<&Tls>,
    ) -> anyhow::Result<http::Captured> {
        round_trip(
            resolve(gateway, tls.is_some())?,
            req,
            tls,
            self.timeouts.request,
        )
    }
}

/// `ip:port`, or `ip` with the scheme's default port.
pub fn resolve(gateway: &str, https: bool) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = gateway.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip: std::net::IpAddr = gateway
        .parse()
        .with_context(|| format!("gateway address {gateway:?}"))?;
    Ok(SocketAddr::new(ip, if https { 443 } else { 80 }))
}

/// The IP of an `ip:port` gateway address (upstream's "portless" address).
pub fn host_of(gateway: &str) -> String {
    gateway
        .rsplit_once(':')
        .map(|(h, _)| h.to_string())
        .unwrap_or_else(|| gateway.to_string())
}

/// Calls `f` `total` times from `concurrency` threads; returns the first error, if any (the
/// senders of upstream's traffic distribution checks).
fn send_concurrently(
    total: usize,
    concurrency: usize,
    f: impl Fn() -> anyhow::Result<()> + Sync,
) -> Option<String> {
    let counter = AtomicUsize::new(0);
    let error = Mutex::new(None::<String>);
    std::thread::scope(|scope| {
        for _ in 0..concurrency {
            scope.spawn(|| {
                while counter.fetch_add(1, Ordering::Relaxed) < total {
                    if let Err(e) = f()
                        && let Ok(mut slot) = error.lock()
                    {
                        slot.get_or_insert(format!("{e:#}"));
                    }
                }
            });
        }
    });
    error.into_inner().unwrap_or_default()
}

impl Suite {
    /// Upstream's weighted distribution check: 500 requests, 10 at a time, each backend's share
    /// within ±5% of its weight (backends with weight 0 get nothing), up to 10 attempts.
    pub fn expect_weighted_distribution(
        &mut self,
        gateway: &str,
        expected: &ExpectedResponse,
        weights: &[(&str, f64)],
    ) -> anyhow::Result<()> {
        const TOTAL: usize = 500;
        const CONCURRENCY: usize = 10;
        let addr = resolve(gateway, false)?;
        let timeout = self.timeouts.request;
        let mut last = String::new();
        for attempt in 1..=10 {
            let seen = Mutex::new(std::collections::BTreeMap::<String, f64>::new());
            let error = send_concurrently(TOTAL, CONCURRENCY, || {
                let mut e = expected.clone();
                e.request.headers.push((
                    "X-Jitter".into(),
                    format!("{}", trellis_harness::rand_u32()),
                ));
                let c = round_trip(addr, &wire_request(&e), None, timeout)?;
                compare("http", &c, &e)?;
                let pod = c
                    .echo
                    .as_ref()
                    .and_then(|j| j["pod"].as_str())
                    .unwrap_or_default()
                    .to_string();
                let parts: Vec<&str> = pod.split('-').collect();
                let backend = if parts.len() < 3 {
                    pod.clone()
                } else {
                    parts[..parts.len() - 2].join("-")
                };
                if let Ok(mut s) = seen.lock() {
                    *s.entry(backend).or_default() += 1.0;
                }
                Ok(())
            });
            let seen = seen.into_inner().unwrap_or_default();
            let mut problems = Vec::new();
            if let Some(e) = error {
                problems.push(format!("request failed: {e}"));
            }
            let active = weights.iter().filter(|(_, w)| *w > 0.0).count();
            if seen.len() != active {
                problems.push(format!(
                    "expected {active} backends to receive traffic, got {seen:?}"
                ));
            }
            for (backend, want) in weights {
                let got = seen.get(*backend).copied().unwrap_or(0.0) / TOTAL as f64;
                if (got - want).abs() > 0.05 {
                    problems.push(format!(
                        "backend {backend} got {got:.3}, want {want} ± 0.05"
                    ));
                }
            }
            if problems.is_empty() {
                self.logf(format!(
                    "weighted distribution held on attempt {attempt}: {seen:?}"
                ));
                return Ok(());
            }
            last = problems.join("; ");
        }
        bail!("weighted distribution failed 10 times: {last}")
    }

    /// How many times the pods of `namespace/deployment` logged a request to exactly `path`
    /// (upstream's `GetMirrorLogRegexp` matches).
    pub fn mirror_log_count(&self, namespace: &str, deployment: &str, path: &str) -> usize {
        let needle = format!("Echoing back request made to {path} to client");
        self.cluster
            .pods(namespace, deployment)
            .iter()
            .map(|p| self.cluster.pod_log(p).matches(&needle).count())
            .sum()
    }

    /// Upstream's `ExpectMirroredRequest`: every mirror backend's pods logged the request path.
    pub fn expect_mirrored(
        &self,
        mirrored: &[http::MirroredBackend],
        path: &str,
    ) -> anyhow::Result<()> {
        for m in mirrored {
            self.eventually(
                &format!(
                    "{}/{} to log the mirrored request {path}",
                    m.namespace, m.name
                ),
                |s| Ok((s.mirror_log_count(&m.namespace, &m.name, path) > 0).then_some(())),
            )?;
        }
        Ok(())
    }

    /// Upstream's percentage-mirror distribution check (`HTTPRouteRequestPercentageMirror`): up
    /// to 5 times, a fresh request ID goes into the path and 500 requests (10 at a time, each
    /// retried until it meets `expected` once) are sent; every mirror backend must then have
    /// logged `500·p ± 3·√(500·p·(1−p))` of them, `p` being its `percent`.
    ///
    /// Upstream reads the logs right after the requests return, through the Kubernetes log API;
    /// the local pods' logs are read once their counts stop growing (mirrors are sent
    /// asynchronously).
    pub fn expect_mirrored_percentage(
        &mut self,
        gateway: &str,
        expected: &ExpectedResponse,
    ) -> anyhow::Result<()> {
        const CONCURRENT_REQUESTS: usize = 10;
        const TOTAL_REQUESTS: usize = 500;
        const NUM_DISTRIBUTION_CHECKS: usize = 5;
        const TOLERANCE_STD_DEVS: f64 = 3.0;
        for m in &expected.mirrored_to {
            if m.name.is_empty() || m.percent.is_none() {
                bail!("mirrored backend without a name or percent: {m:?}");
            }
        }
        let addr = resolve(gateway, false)?;
        let timeouts = self.timeouts;
        let mut expected = expected.clone();
        let mut last = String::new();
        for check in 1..=NUM_DISTRIBUTION_CHECKS {
            expected.add_request_id_query_param(&http::new_uuid());
            let req = wire_request(&expected);
            let error = send_concurrently(TOTAL_REQUESTS, CONCURRENT_REQUESTS, || {
                await_convergence(1, timeouts.max_time_to_consistency, |_| {
                    let captured = round_trip(addr, &req, None, timeouts.request)?;
                    compare("http", &captured, &expected)
                })
            });
            if let Some(e) = error {
                bail!("request {} failed: {e}", req.path);
            }
            let path = &expected.request.path;
            let mut problems = Vec::new();
            let mut observed = Vec::new();
            for m in &expected.mirrored_to {
                let deadline = Instant::now() + Duration::from_secs(5);
                let mut count = self.mirror_log_count(&m.namespace, &m.name, path);
                loop {
                    std::thread::sleep(Duration::from_millis(300));
                    let again = self.mirror_log_count(&m.namespace, &m.name, path);
                    let settled = again == count || Instant::now() > deadline;
                    count = again;
                    if settled {
                        break;
                    }
                }
                let p = f64::from(m.percent.unwrap_or_default()) / 100.0;
                let n = TOTAL_REQUESTS as f64;
                let want = n * p;
                let margin = TOLERANCE_STD_DEVS * (n * p * (1.0 - p)).sqrt();
                let (min, max) = (want - margin, want + margin);
                let actual = count as f64;
                observed.push(format!(
                    "{}: {actual} (want {want} in [{min:.1}, {max:.1}])",
                    m.name
                ));
                if actual < min || actual > max {
                    problems.push(format!(
                        "pod {} did not meet the mirroring percentage within tolerance: expected between {min:.1} and {max:.1}, got {actual}",
                        m.name
                    ));
                }
            }
            if problems.is_empty() {
                self.logf(format!(
                    "mirror distribution held on check {check}: {}",
                    observed.join("; ")
                ));
                return Ok(());
            }
            last = problems.join("; ");
            self.logf(format!(
                "traffic distribution check failed ({check}/{NUM_DISTRIBUTION_CHECKS}): {last}"
            ));
            std::thread::sleep(Duration::from_secs(2));
        }
        bail!("percentage based mirror distribution tests failed: {last}")
    }
}
