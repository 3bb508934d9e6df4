//! Encodes upstream `HTTPRouteMultipleGateways` (httproute-multiple-gateways.go): a route with
//! two Gateway parents (`same-namespace`, `all-namespaces`) serves `/shared` through both, while
//! each Gateway's dedicated route serves `/` only through its own parent.

use crate::checks::{GatewayRef, nn};
use crate::dsl::{get, routed_to, status};
use crate::http::ExpectedResponse;
use crate::subtests::Subtests;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteMultipleGateways",
    description: "An HTTPRoute that is attached to multiple Gateways receives traffic from each Gateway independently, and shared routes are accessible via all parent Gateways while dedicated routes are only accessible via their respective parent.",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-multiple-gateways.yaml"],
    provisional: false,
    run,
};

fn expect_backend(s: &mut Suite, addr: &str, path: &str, backend: &str) -> anyhow::Result<()> {
    s.expect(
        addr,
        &ExpectedResponse {
            response: status(200),
            ..routed_to(get(path), backend, INFRA_NS)
        },
    )
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let mut subtests = Subtests::new();
    for (gateway, dedicated, backend) in [
        (
            "same-namespace",
            "same-namespace-dedicated-route",
            "infra-backend-v2",
        ),
        (
            "all-namespaces",
            "all-namespaces-dedicated-route",
            "infra-backend-v3",
        ),
    ] {
        subtests.run(s, &format!("Gateway {gateway}"), |s| {
            let gw = GatewayRef::new(INFRA_NS, gateway);
            let routes = [
                nn(INFRA_NS, "multiple-gateways-shared-route"),
                nn(INFRA_NS, dedicated),
            ];
            let addr = s.gateway_and_http_routes_must_be_accepted(&gw, &routes)?;
            let mut cases = Subtests::new();
            cases.run(
                s,
                "shared route is accessible and routed to infra-backend-v1",
                |s| expect_backend(s, &addr, "/shared", "infra-backend-v1"),
            );
            cases.run(
                s,
                &format!("dedicated route is accessible and routed to {backend}"),
                |s| expect_backend(s, &addr, "/", backend),
            );
            cases.finish()
        });
    }
    subtests.finish()
}
