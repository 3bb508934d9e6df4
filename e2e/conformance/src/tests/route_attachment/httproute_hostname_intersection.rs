//! Encodes upstream's HTTPRouteHostnameIntersection: routes attach to a Gateway's listeners
//! only where their hostnames intersect the listeners' (specific and wildcard on both sides),
//! and serve only the intersecting hostnames (the Host header's port is ignored); a route with
//! no intersecting hostname is Accepted False / NoMatchingListenerHostname and is not counted
//! in any listener's attachedRoutes; a listener without hostname serves exactly the route's
//! hostnames.

use crate::checks::{GatewayRef, cond, nn, parent};
use crate::dsl::{answered, ready_listener, request, routed_to};
use crate::http::ExpectedResponse;
use crate::subtests::Subtests;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteHostnameIntersection",
    description: "HTTPRoutes should attach to listeners only if they have intersecting hostnames, and should accept requests only for the intersecting hostnames",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-hostname-intersection.yaml"],
    provisional: false,
    run,
};

const V1: &str = "infra-backend-v1";
const V2: &str = "infra-backend-v2";
const V3: &str = "infra-backend-v3";

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let ns = INFRA_NS;
    let gw = nn(ns, "httproute-hostname-intersection");
    // The test adds a Gateway to the infra namespace, so it waits for the namespace.
    s.namespaces_must_be_ready(&[ns])?;
    let mut t = Subtests::new();

    t.run(
        s,
        "HTTPRoutes that do intersect with listener hostnames",
        |s| {
            let routes = [
                nn(ns, "specific-host-matches-listener-specific-host"),
                nn(ns, "specific-host-matches-listener-wildcard-host"),
                nn(ns, "wildcard-host-matches-listener-specific-host"),
                nn(ns, "wildcard-host-matches-listener-wildcard-host"),
            ];
            let addr =
                s.routes_must_be_accepted_and_resolved(&GatewayRef::new(ns, &gw.name), &routes)?;
            let to = |host: &str, path: &str, backend: &str| {
                routed_to(request("", host, path, &[]), backend, ns)
            };
            let not_found = |host: &str, path: &str| answered(request("", host, path, &[]), 404);
            let cases = [
                // specific-host-matches-listener-specific-host
                to("very.specific.com", "/s1", V1),
                // The Host header's port must not count when matching hostnames.
                to("very.specific.com:1234", "/s1", V1),
                not_found("non.matching.com", "/s1"),
                not_found("foo.nonmatchingwildcard.io", "/s1"),
                not_found("foo.wildcard.io", "/s1"),
                not_found("very.specific.com", "/non-matching-prefix"),
                // specific-host-matches-listener-wildcard-host
                to("foo.wildcard.io", "/s2", V2),
                to("bar.wildcard.io", "/s2", V2),
                to("foo.bar.wildcard.io", "/s2", V2),
                not_found("non.matching.com", "/s2"),
                not_found("wildcard.io", "/s2"),
                not_found("very.specific.com", "/s2"),
                not_found("foo.wildcard.io", "/non-matching-prefix"),
                // wildcard-host-matches-listener-specific-host
                to("very.specific.com", "/s3", V3),
                not_found("non.matching.com", "/s3"),
                not_found("foo.specific.com", "/s3"),
                not_found("foo.wildcard.io", "/s3"),
                not_found("very.specific.com", "/non-matching-prefix"),
                // wildcard-host-matches-listener-wildcard-host
                to("foo.anotherwildcard.io", "/s4", V1),
                to("bar.anotherwildcard.io", "/s4", V1),
                to("foo.bar.anotherwildcard.io", "/s4", V1),
                not_found("anotherwildcard.io", "/s4"),
                not_found("foo.wildcard.io", "/s4"),
                not_found("very.specific.com", "/s4"),
                not_found("foo.anotherwildcard.io", "/non-matching-prefix"),
            ];
            s.expect_cases(&addr, &cases)
        },
    );

    t.run(
        s,
        "HTTPRoutes that do not intersect with listener hostnames",
        |s| {
            let addr =
                s.gateway_and_http_routes_must_be_accepted(&GatewayRef::new(ns, &gw.name), &[])?;
            let route = nn(ns, "no-intersecting-hosts");
            s.http_route_must_have_parents(
                &route,
                &[parent(
                    gw.clone(),
                    vec![cond("Accepted", "False", "NoMatchingListenerHostname")],
                )],
                true,
            )?;
            let cases = [
                answered(request("", "specific.but.wrong.com", "/s5", &[]), 404),
                answered(request("", "wildcard.io", "/s5", &[]), 404),
            ];
            s.expect_cases(&addr, &cases)
        },
    );

    t.run(
        s,
        "HTTPRoutes have to be counted in AttachedRoutes only if they are Accepted",
        |s| {
            // no-intersecting-hosts must not be attached to any listener.
            s.gateway_status_must_have_listeners(
                &gw,
                &[
                    // specific-host-matches-listener-specific-host and
                    // wildcard-host-matches-listener-specific-host
                    ready_listener("listener-1", 2),
                    // specific-host-matches-listener-wildcard-host
                    ready_listener("listener-2", 1),
                    // wildcard-host-matches-listener-wildcard-host
                    ready_listener("listener-3", 1),
                ],
            )
        },
    );

    t.run(
        s,
        "HTTPRoutes intersects with an unspecified hostname listener",
        |s| {
            let all = "httproute-hostname-intersection-all";
            let addr =
                s.routes_must_be_accepted_and_resolved(&GatewayRef::new(ns, all), &[nn(ns, all)])?;
            let to = |host: &str| routed_to(request("", host, "/", &[]), V2, ns);
            let not_found = |host: &str| ExpectedResponse {
                namespace: ns.into(),
                ..answered(request("", host, "/", &[]), 404)
            };
            let cases = [
                to("first.com"),
                to("sub.first.com"),
                to("second.com"),
                to("sub.second.com"),
                // Not among the route's hostnames.
                not_found("third.com"),
                not_found("sub.third.com"),
            ];
            s.expect_cases(&addr, &cases)
        },
    );

    t.finish()
}
