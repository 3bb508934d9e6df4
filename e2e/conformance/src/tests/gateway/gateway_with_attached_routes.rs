//! Encodes upstream `GatewayWithAttachedRoutes` (gateway-with-attached-routes.go): a listener
//! counts the routes attached to it (one, then two, where a third route with a non-matching
//! hostname is Accepted False / NoMatchingListenerHostname and not counted), and still counts an
//! attached route when its HTTPS listener's certificate and the route's backend are unresolved
//! (listener Programmed and ResolvedRefs False, route ResolvedRefs False).

use crate::checks::{cond, nn};
use crate::dsl::{listener, ready_listener};
use crate::subtests::Subtests;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "GatewayWithAttachedRoutes",
    description: "A Gateway in the gateway-conformance-infra namespace should be attached to routes.",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/gateway-with-attached-routes.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let mut subtests = Subtests::new();
    subtests.run(
        s,
        "Gateway listener should have one valid http routes attached",
        |s| {
            s.gateway_status_must_have_listeners(
                &nn(INFRA_NS, "gateway-with-one-attached-route"),
                &[ready_listener("http", 1)],
            )
        },
    );
    subtests.run(
        s,
        "Gateway listener should have two valid http routes attached",
        |s| {
            let gw = nn(INFRA_NS, "gateway-with-two-attached-routes");
            s.gateway_status_must_have_listeners(&gw, &[ready_listener("http", 2)])?;
            s.http_route_must_have_condition(
                &nn(INFRA_NS, "http-route-not-accepted"),
                &gw,
                cond("Accepted", "False", "NoMatchingListenerHostname"),
            )
        },
    );
    subtests.run(
        s,
        "Gateway listener should have AttachedRoutes set even when Gateway has unresolved refs",
        |s| {
            let gw = nn(
                INFRA_NS,
                "unresolved-gateway-with-one-attached-unresolved-route",
            );
            s.gateway_status_must_have_listeners(
                &gw,
                &[listener(
                    "tls",
                    true,
                    1,
                    &[
                        cond("Programmed", "False", ""),
                        cond("ResolvedRefs", "False", ""),
                    ],
                )],
            )?;
            s.http_route_must_have_condition(
                &nn(INFRA_NS, "http-route-4"),
                &gw,
                cond("ResolvedRefs", "False", ""),
            )
        },
    );
    subtests.finish()
}
