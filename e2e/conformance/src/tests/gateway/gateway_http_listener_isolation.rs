//! Encodes upstream `GatewayHTTPListenerIsolation` (gateway-http-listener-isolation.go): on two
//! Gateways with four HTTP listeners on port 80 (no hostname, `*.example.com`,
//! `*.foo.example.com`, `abc.foo.example.com`), each route attaches to one listener (by
//! `sectionName`; on the second Gateway the routes also carry intersecting hostnames). A request
//! reaches only the routes of the most specific listener matching its host; the others answer
//! 404.

use crate::checks::{GatewayRef, nn};
use crate::dsl::{answered, request, routed_to};
use crate::http::ExpectedResponse;
use crate::subtests::Subtests;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "GatewayHTTPListenerIsolation",
    description: "Listener isolation for HTTP listeners with multiple listeners and HTTPRoutes",
    features: &["Gateway", "GatewayHTTPListenerIsolation", "HTTPRoute"],
    manifests: &[
        "tests/gateway-http-listener-isolation.yaml",
        "tests/gateway-http-listener-isolation-with-hostname-intersection.yaml",
    ],
    provisional: false,
    run,
};

/// The listeners' paths; a request with host `host` on `path` goes to infra-backend-v1 when
/// `path` is the one of the listener its host selects, and answers 404 otherwise.
const PATHS: [&str; 4] = [
    "/empty-hostname",
    "/wildcard-example-com",
    "/wildcard-foo-example-com",
    "/abc-foo-example-com",
];

/// Upstream's cases: (host, path index that routes; the other paths answer 404).
const HOSTS: [(&str, usize); 4] = [
    ("bar.com", 0),
    ("bar.example.com", 1),
    ("bar.foo.example.com", 2),
    ("abc.foo.example.com", 3),
];

fn cases() -> Vec<ExpectedResponse> {
    let mut out = Vec::new();
    for (host, routed) in HOSTS {
        for (i, path) in PATHS.iter().enumerate() {
            let request = request("", host, path, &[]);
            out.push(if i == routed {
                routed_to(request, "infra-backend-v1", INFRA_NS)
            } else {
                ExpectedResponse {
                    // Upstream sets the namespace on one 404 case; it is not checked on 404.
                    namespace: if host == "abc.foo.example.com" && i == 2 {
                        INFRA_NS.into()
                    } else {
                        String::new()
                    },
                    ..answered(request, 404)
                }
            });
        }
    }
    out
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    s.namespaces_must_be_ready(&[INFRA_NS])?;
    let mut subtests = Subtests::new();
    for (subtest, gateway, suffix) in [
        (
            "hostnames are configured only in listeners",
            "http-listener-isolation",
            "",
        ),
        (
            "intersecting hostnames are configured in listeners and HTTPRoutes",
            "http-listener-isolation-with-hostname-intersection",
            "-with-hostname-intersection",
        ),
    ] {
        subtests.run(s, subtest, |s| {
            let routes: Vec<_> = [
                "attaches-to-empty-hostname",
                "attaches-to-wildcard-example-com",
                "attaches-to-wildcard-foo-example-com",
                "attaches-to-abc-foo-example-com",
            ]
            .iter()
            .map(|r| nn(INFRA_NS, &format!("{r}{suffix}")))
            .collect();
            let addr = s.routes_must_be_accepted_and_resolved(
                &GatewayRef::new(INFRA_NS, gateway),
                &routes,
            )?;
            s.expect_cases(&addr, &cases())
        });
    }
    subtests.finish()
}
