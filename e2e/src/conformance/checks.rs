//! Assertions on status and traffic, with upstream's semantics: conditions are matched by type,
//! status and reason (empty matches any); "latest" conditions carry the object's generation as
//! `observedGeneration`; route parents match by controller, group, kind, name, namespace and
//! conditions; requests converge when they pass three times in a row.

use super::Suite;
use super::cluster::CONTROLLER;
use super::http::{
    self, ExpectedResponse, Tls, await_convergence, compare, round_trip, wire_request,
};
use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
            let generation = o["metadata"]["generation"].as_i64().unwrap_or(0);
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
            let listeners = spec["spec"]["listeners"]
                .as_array()
                .cloned()
                .unwrap_or_default();
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
                let generation = o["metadata"]["generation"].as_i64().unwrap_or(0);
                let actual = o["status"]["parents"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
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

    /// Upstream's `HTTPRouteMustHaveNoAcceptedParents`: no parent has Accepted True (an empty
    /// parent list counts).
    pub fn http_route_must_have_no_accepted_parents(&self, route: &Nn) -> anyhow::Result<()> {
        self.eventually(
            &format!("HTTPRoute {route} to have no accepted parents"),
            |s| {
                let o = s.status("HTTPRoute", &route.namespace, &route.name)?;
                let parents = o
                    .as_ref()
                    .and_then(|o| o["status"]["parents"].as_array().cloned())
                    .unwrap_or_default();
                let accepted = parents
                    .iter()
                    .any(|p| has_condition(&p["conditions"], &cond("Accepted", "True", "")));
                Ok((!accepted).then_some(()))
            },
        )
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
                let generation = o["metadata"]["generation"].as_i64().unwrap_or(0);
                let parents = o["status"]["parents"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
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
                let listeners = o["status"]["listeners"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
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
                let generation = o["metadata"]["generation"].as_i64().unwrap_or(0);
                if !latest(&o["status"]["conditions"], generation) {
                    return Ok(None);
                }
                let actual = o["status"]["listeners"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let ok = actual.len() == expected.len()
                    && expected.iter().all(|e| {
                        actual
                            .iter()
                            .find(|a| a["name"] == e.name.as_str())
                            .is_some_and(|a| {
                                let kinds =
                                    a["supportedKinds"].as_array().cloned().unwrap_or_default();
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

    /// Upstream's `GatewayMustHaveCondition` (with latest observedGeneration).
    pub fn gateway_must_have_condition(&self, gw: &Nn, c: Cond) -> anyhow::Result<()> {
        self.eventually(&format!("Gateway {gw} to have {c:?}"), |s| {
            let Some(o) = s.status("Gateway", &gw.namespace, &gw.name)? else {
                return Ok(None);
            };
            let generation = o["metadata"]["generation"].as_i64().unwrap_or(0);
            let conditions = &o["status"]["conditions"];
            if latest(conditions, generation) && has_condition(conditions, &c) {
                Ok(Some(()))
            } else {
                Err(anyhow!("conditions are {conditions}"))
            }
        })
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
                let generation = o["metadata"]["generation"].as_i64().unwrap_or(0);
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

    /// Upstream's `MakeRequestAndExpectEventuallyConsistentResponse` over plain HTTP.
    pub fn expect(&mut self, gateway: &str, expected: &ExpectedResponse) -> anyhow::Result<()> {
        self.expect_with(gateway, expected, None)
    }

    /// The same over HTTPS with the given TLS settings.
    pub fn expect_tls(
        &mut self,
        gateway: &str,
        expected: &ExpectedResponse,
        tls: &Tls,
    ) -> anyhow::Result<()> {
        self.expect_with(gateway, expected, Some(tls))
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
                "{name}: {} {}{}",
                req.method, expected.request.host, expected.request.path
            )
        })?;
        self.logf(format!("passed: {name}"));
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
            let counter = std::sync::atomic::AtomicUsize::new(0);
            let seen = std::sync::Mutex::new(std::collections::BTreeMap::<String, f64>::new());
            let error = std::sync::Mutex::new(None::<String>);
            std::thread::scope(|scope| {
                for _ in 0..CONCURRENCY {
                    scope.spawn(|| {
                        while counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < TOTAL {
                            let mut e = expected.clone();
                            e.request.headers.push((
                                "X-Jitter".into(),
                                format!("{}", crate::harness::rand_u32()),
                            ));
                            let req = wire_request(&e);
                            let result = round_trip(addr, &req, None, timeout)
                                .and_then(|c| compare("http", &c, &e).map(|()| c));
                            match result {
                                Ok(c) => {
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
                                }
                                Err(err) => {
                                    if let Ok(mut slot) = error.lock() {
                                        slot.get_or_insert(format!("{err:#}"));
                                    }
                                }
                            }
                        }
                    });
                }
            });
            let seen = seen.into_inner().unwrap_or_default();
            let mut problems = Vec::new();
            if let Some(e) = error.into_inner().unwrap_or_default() {
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

    /// Upstream's `ExpectMirroredRequest`: every mirror backend's pods logged the request path.
    pub fn expect_mirrored(
        &self,
        mirrored: &[http::MirroredBackend],
        path: &str,
    ) -> anyhow::Result<()> {
        let needle = format!("Echoing back request made to {path} to client");
        for m in mirrored {
            self.eventually(
                &format!(
                    "{}/{} to log the mirrored request {path}",
                    m.namespace, m.name
                ),
                |s| {
                    let found = s
                        .cluster
                        .pods(&m.namespace, &m.name)
                        .iter()
                        .any(|p| s.cluster.pod_log(p).contains(&needle));
                    Ok(found.then_some(()))
                },
            )?;
        }
        Ok(())
    }
}
