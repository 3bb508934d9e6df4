//! Encodes upstream's HTTPRouteListenerHostnameMatching: four HTTP listeners on port 80 with
//! different hostnames (`bar.com`, `foo.bar.com`, `*.bar.com`, `*.foo.com`), each route bound
//! by sectionName; requests go to the route of the most specific matching listener, and hosts
//! no listener matches answer 404.

use super::support::{
    answered, expect_cases, namespaces_must_be_ready, request, resolved_refs_true, routed_to,
};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteListenerHostnameMatching",
    description: "Multiple HTTP listeners with the same port and different hostnames, each with a different HTTPRoute",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-listener-hostname-matching.yaml"],
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
    let gw = "httproute-listener-hostname-matching";
    let gw_nn = nn(ns, gw);

    s.gateway_and_http_routes_must_be_accepted(
        &GatewayRef::with_listeners(ns, gw, &["listener-1"]),
        std::slice::from_ref(&route1),
    )?;
    resolved_refs_true(s, &route1, &gw_nn)?;
    s.gateway_and_http_routes_must_be_accepted(
        &GatewayRef::with_listeners(ns, gw, &["listener-2"]),
        std::slice::from_ref(&route2),
    )?;
    resolved_refs_true(s, &route2, &gw_nn)?;
    let addr = s.gateway_and_http_routes_must_be_accepted(
        &GatewayRef::with_listeners(ns, gw, &["listener-3", "listener-4"]),
        std::slice::from_ref(&route3),
    )?;
    resolved_refs_true(s, &route3, &gw_nn)?;

    let to = |host: &str, backend: &str| routed_to(request("", host, "/", &[]), backend, ns);
    let cases = [
        to("bar.com", "infra-backend-v1"),
        to("foo.bar.com", "infra-backend-v2"),
        to("baz.bar.com", "infra-backend-v3"),
        to("boo.bar.com", "infra-backend-v3"),
        to("multiple.prefixes.bar.com", "infra-backend-v3"),
        to("multiple.prefixes.foo.com", "infra-backend-v3"),
        answered(request("", "foo.com", "/", &[]), 404),
        answered(request("", "no.matching.host", "/", &[]), 404),
    ];
    expect_cases(s, &addr, &cases)
}
