//! Encodes upstream's HTTPRouteListenerPortMatching: HTTP listeners on ports 80, 8080 and
//! 8090 (with hostnames `foo.com` and `bar.com`); routes bound by parentRef port (and, for
//! 8090, sectionName `listener-4`) attach to the listeners on that port only, and each request
//! is sent to the port its Host header names and reaches the route bound to that port.

use crate::dsl::{answered, request, routed_to};
use crate::tests::common::routes_on_listeners;
use crate::{ConformanceTest, INFRA_NS, Suite};

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
    // Routes bound by port carry no sectionName; parents are matched as upstream does, without
    // comparing sectionName.
    let addrs = routes_on_listeners(
        s,
        "httproute-listener-port-matching",
        &[
            (&["listener-1"], "backend-v1"),
            (&["listener-2"], "backend-v2"),
            (&["listener-4"], "backend-v3"),
        ],
    )?;
    let to = |host: &str, backend: &str| routed_to(request("", host, "/", &[]), backend, ns);
    let cases = [
        to("foo.com", "infra-backend-v1"),
        to("foo.com:8080", "infra-backend-v2"),
        to("bar.com:8080", "infra-backend-v2"),
        to("foo.com:8090", "infra-backend-v3"),
        answered(request("", "bar.com:8090", "/", &[]), 404),
    ];
    // Each request goes to the Gateway port its Host header names (80 when it names none).
    s.expect_cases_routed(&cases, |case| {
        match case.request.host.split_once(':').map(|(_, port)| port) {
            Some("8080") => addrs[1].clone(),
            Some("8090") => addrs[2].clone(),
            _ => addrs[0].clone(),
        }
    })
}
