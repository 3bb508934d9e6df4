//! Encodes upstream's HTTPRouteListenerHostnameMatching: four HTTP listeners on port 80 with
//! different hostnames (`bar.com`, `foo.bar.com`, `*.bar.com`, `*.foo.com`), each route bound
//! by sectionName; requests go to the route of the most specific matching listener, and hosts
//! no listener matches answer 404.

use crate::dsl::{answered, request, routed_to};
use crate::tests::common::routes_on_listeners;
use crate::{ConformanceTest, INFRA_NS, Suite};

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
    let addrs = routes_on_listeners(
        s,
        "httproute-listener-hostname-matching",
        &[
            (&["listener-1"], "backend-v1"),
            (&["listener-2"], "backend-v2"),
            (&["listener-3", "listener-4"], "backend-v3"),
        ],
    )?;
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
    s.expect_cases(&addrs[2], &cases)
}
