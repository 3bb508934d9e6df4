//! Encodes upstream's HTTPRouteListenerPortMatching: HTTP listeners on ports 80, 8080 and
//! 8090 (with hostnames `foo.com` and `bar.com`); routes bound by parentRef port (and, for
//! 8090, sectionName `listener-4`) attach to the listeners on that port only, and each request
//! is sent to the port its Host header names and reaches the route bound to that port.

use super::support::{
    answered, expect_cases_routed, gateway_and_routes_accepted, namespaces_must_be_ready, request,
    resolved_refs_true, routed_to,
};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteListenerPortMatching",
    description: "Multiple HTTP listeners with different ports, each with a different HTTPRoute",
    features: &["Gateway", "HTTPRoute", "HTTPRouteParentRefPort"],
    manifests: &["tests/httproute-listener-port-matching.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let ns = INFRA_NS;
    // The test adds a Gateway to the infra namespace, so it waits for the namespace.
    namespaces_must_be_ready(s, &[ns])?;
    let route1 = nn(ns, "backend-v1");
    let route2 = nn(ns, "backend-v2");
    let route3 = nn(ns, "backend-v3");
    let gw = "httproute-listener-port-matching";
    let gw_nn = nn(ns, gw);

    // Routes bound by port carry no sectionName, so parents are matched as upstream does,
    // without comparing sectionName.
    let addr80 = gateway_and_routes_accepted(
        s,
        &GatewayRef::with_listeners(ns, gw, &["listener-1"]),
        std::slice::from_ref(&route1),
    )?;
    resolved_refs_true(s, &route1, &gw_nn)?;
    let addr8080 = gateway_and_routes_accepted(
        s,
        &GatewayRef::with_listeners(ns, gw, &["listener-2"]),
        std::slice::from_ref(&route2),
    )?;
    resolved_refs_true(s, &route2, &gw_nn)?;
    let addr8090 = gateway_and_routes_accepted(
        s,
        &GatewayRef::with_listeners(ns, gw, &["listener-4"]),
        std::slice::from_ref(&route3),
    )?;
    resolved_refs_true(s, &route3, &gw_nn)?;

    let to = |host: &str, backend: &str| routed_to(request("", host, "/", &[]), backend, ns);
    let cases = [
        to("foo.com", "infra-backend-v1"),
        to("foo.com:8080", "infra-backend-v2"),
        to("bar.com:8080", "infra-backend-v2"),
        to("foo.com:8090", "infra-backend-v3"),
        answered(request("", "bar.com:8090", "/", &[]), 404),
    ];
    // Each request goes to the Gateway port its Host header names (80 when it names none).
    expect_cases_routed(s, &cases, |case| {
        match case.request.host.split_once(':').map(|(_, port)| port) {
            Some("8080") => addr8080.clone(),
            Some("8090") => addr8090.clone(),
            _ => addr80.clone(),
        }
    })
}
