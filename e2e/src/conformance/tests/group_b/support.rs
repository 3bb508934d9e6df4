//! Assertions batch B needs beyond `checks`, each following the upstream helper it names
//! (`conformance/utils/kubernetes/helpers.go` at v1.6.1), plus a runner for tables of
//! expected responses.

use crate::conformance::Suite;
use crate::conformance::checks::{
    Cond, GatewayRef, Nn, cond, conditions_match, has_condition, latest,
};
use crate::conformance::cluster::{CONTROLLER, ObjId};
use crate::conformance::http::{ExpectedResponse, Request, Response};
use anyhow::{anyhow, bail};
use std::time::{Duration, Instant};

/// Annotation that excludes a Gateway from upstream's `NamespacesMustBeReady`.
const SKIP_READINESS: &str = "gateway-api/skip-this-for-readiness";

/// Upstream's `HTTPRouteMustHaveResolvedRefsConditionsTrue`: the route's status for the
/// Gateway has ResolvedRefs True with reason ResolvedRefs.
pub fn resolved_refs_true(s: &Suite, route: &Nn, gateway: &Nn) -> anyhow::Result<()> {
    s.http_route_must_have_condition(route, gateway, cond("ResolvedRefs", "True", "ResolvedRefs"))
}

/// Upstream's `HTTPRouteMustHaveParents` as upstream matches parents: each expected parent
/// must be matched by an actual one with the same controller, group, kind, name, namespace
/// (an absent namespace is accepted unless `namespace_required`) and conditions. Unlike
/// `Suite::http_route_must_have_parents`, `sectionName` and `port` are not compared, since
/// upstream's `parentsForRouteMatch` does not compare them. Every parent's conditions must
/// carry the route's generation.
pub fn route_must_have_parents(
    s: &Suite,
    route: &Nn,
    gateway: &Nn,
    expected: &[Vec<Cond>],
    namespace_required: bool,
) -> anyhow::Result<()> {
    s.eventually(
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
            if actual.iter().any(|p| !latest(&p["conditions"], generation)) {
                return Ok(None);
            }
            let all = expected.iter().all(|conditions| {
                actual.iter().any(|a| {
                    let r = &a["parentRef"];
                    a["controllerName"] == CONTROLLER
                        && r["group"] == "gateway.networking.k8s.io"
                        && r["kind"] == "Gateway"
                        && r["name"] == gateway.name.as_str()
                        && match r["namespace"].as_str() {
                            Some(ns) => ns == gateway.namespace,
                            None => !namespace_required,
                        }
                        && conditions_match(&a["conditions"], conditions)
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

/// Upstream's `GatewayAndHTTPRoutesMustBeAccepted` with upstream's parent matching (see
/// [`route_must_have_parents`]): the Gateway has an address, each route has one Accepted
/// parent per listener named (one when none is), and every listener is ResolvedRefs,
/// Accepted and Programmed. Returns `ip:port` of the first named (or first) listener.
pub fn gateway_and_routes_accepted(
    s: &mut Suite,
    gw: &GatewayRef,
    routes: &[Nn],
) -> anyhow::Result<String> {
    let addr = s.wait_gateway_address(gw)?;
    let count = gw.listeners.len().max(1);
    let expected = vec![vec![cond("Accepted", "True", "Accepted")]; count];
    for route in routes {
        let namespace_required = route.namespace != gw.nn.namespace;
        route_must_have_parents(s, route, &gw.nn, &expected, namespace_required)?;
    }
    s.gateway_listeners_must_have_conditions(
        &gw.nn,
        &[
            cond("ResolvedRefs", "True", ""),
            cond("Accepted", "True", ""),
            cond("Programmed", "True", ""),
        ],
    )?;
    s.logf(format!(
        "Gateway {} and routes accepted; address {addr}",
        gw.nn
    ));
    Ok(addr)
}

/// Upstream's `HTTPRouteMustHaveNoAcceptedParents`, polled every second for 60 s: the route
/// has no parents (seen on two polls in a row, to tell "not set" from "not yet set"), or
/// exactly one parent whose conditions carry the route's generation and include Accepted
/// False.
pub fn route_must_have_no_accepted_parents(s: &Suite, route: &Nn) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut empty_seen = false;
    let mut last = String::from("no status");
    loop {
        if let Some(o) = s.status("HTTPRoute", &route.namespace, &route.name)? {
            let generation = o["metadata"]["generation"].as_i64().unwrap_or(0);
            let parents = o["status"]["parents"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            last = serde_json::to_string(&parents).unwrap_or_default();
            match parents.as_slice() {
                [] if empty_seen => return Ok(()),
                [] => empty_seen = true,
                [p] => {
                    empty_seen = false;
                    if latest(&p["conditions"], generation)
                        && has_condition(&p["conditions"], &cond("Accepted", "False", ""))
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

/// Upstream's `GatewayMustHaveZeroRoutes`: the Gateway's conditions carry its generation and
/// its status lists no listener, or exactly one listener with zero attached routes.
pub fn gateway_must_have_zero_routes(s: &Suite, gw: &Nn) -> anyhow::Result<()> {
    s.eventually(&format!("Gateway {gw} to have zero routes"), |s| {
        let Some(o) = s.status("Gateway", &gw.namespace, &gw.name)? else {
            return Ok(None);
        };
        let generation = o["metadata"]["generation"].as_i64().unwrap_or(0);
        if !latest(&o["status"]["conditions"], generation) {
            return Err(anyhow!("Gateway conditions are stale"));
        }
        let listeners = o["status"]["listeners"]
            .as_array()
            .cloned()
            .unwrap_or_default();
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

/// Upstream's `NamespacesMustBeReady` for Gateways: every Gateway of the namespaces (but
/// those annotated `gateway-api/skip-this-for-readiness: "true"`) has conditions carrying its
/// generation, Accepted True and Programmed True. (Pods are ready by construction: the
/// simulated cluster waits for each echo pod's health check when it starts it.)
pub fn namespaces_must_be_ready(s: &Suite, namespaces: &[&str]) -> anyhow::Result<()> {
    let gateways: Vec<ObjId> = s
        .cluster
        .ids()
        .into_iter()
        .filter(|id| id.kind == "Gateway" && namespaces.contains(&id.namespace.as_str()))
        .filter(|id| {
            s.cluster
                .get(id)
                .is_none_or(|v| v["metadata"]["annotations"][SKIP_READINESS] != "true")
        })
        .collect();
    s.eventually(&format!("namespaces {namespaces:?} to be ready"), |s| {
        for id in &gateways {
            let Some(o) = s.status("Gateway", &id.namespace, &id.name)? else {
                return Err(anyhow!("{id} has no status"));
            };
            let generation = o["metadata"]["generation"].as_i64().unwrap_or(0);
            let conditions = &o["status"]["conditions"];
            if !latest(conditions, generation) {
                return Err(anyhow!("{id} has stale conditions"));
            }
            for c in [cond("Accepted", "True", ""), cond("Programmed", "True", "")] {
                if !has_condition(conditions, &c) {
                    return Err(anyhow!("{id} lacks {c:?}: {conditions}"));
                }
            }
        }
        Ok(Some(()))
    })
}

/// Runs a table of expectations against a Gateway address, one after the other (upstream
/// runs them as parallel subtests named by `GetTestCaseName`), and fails listing every case
/// that did not converge.
pub fn expect_cases(
    s: &mut Suite,
    gateway: &str,
    cases: &[ExpectedResponse],
) -> anyhow::Result<()> {
    expect_cases_routed(s, cases, |_| gateway.to_string())
}

/// Like [`expect_cases`], choosing each case's Gateway address with `address_of`.
pub fn expect_cases_routed(
    s: &mut Suite,
    cases: &[ExpectedResponse],
    address_of: impl Fn(&ExpectedResponse) -> String,
) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let mut case = case.clone();
        case.test_case_name = case.name(i);
        if let Err(e) = s.expect(&address_of(&case), &case) {
            failures.push(format!("{e:#}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!(
            "{} of {} cases failed:\n  {}",
            failures.len(),
            cases.len(),
            failures.join("\n  ")
        )
    }
}

/// A request: `GET` unless `method` is given, to `host` (the Gateway's address when empty)
/// and `path` (with query), with headers.
pub fn request(method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Request {
    Request {
        method: method.into(),
        host: host.into(),
        path: path.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// Upstream's `ExpectedResponse{Request, Backend, Namespace}`: a 200 from a pod of `backend`
/// in `namespace`, which saw the request as sent.
pub fn routed_to(request: Request, backend: &str, namespace: &str) -> ExpectedResponse {
    ExpectedResponse {
        request,
        backend: backend.into(),
        namespace: namespace.into(),
        ..Default::default()
    }
}

/// Upstream's `ExpectedResponse{Request, Response: {StatusCode}}`.
pub fn answered(request: Request, status_code: u16) -> ExpectedResponse {
    ExpectedResponse {
        request,
        response: Response {
            status_code,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Upstream's `t.Run` subtests: each runs even when an earlier one failed, and the test fails
/// if any did (a failure outside subtests still ends the test at once, through `?`).
#[derive(Default)]
pub struct Subtests {
    failures: Vec<String>,
}

impl Subtests {
    /// Runs one subtest, noting its failure.
    pub fn run(
        &mut self,
        s: &mut Suite,
        name: &str,
        f: impl FnOnce(&mut Suite) -> anyhow::Result<()>,
    ) {
        match f(s) {
            Ok(()) => s.logf(format!("subtest passed: {name}")),
            Err(e) => {
                s.logf(format!("subtest failed: {name}"));
                self.failures.push(format!("{name}: {e:#}"));
            }
        }
    }

    /// Fails listing the subtests that failed, if any.
    pub fn finish(self) -> anyhow::Result<()> {
        if self.failures.is_empty() {
            Ok(())
        } else {
            bail!("{}", self.failures.join("\n"))
        }
    }
}
