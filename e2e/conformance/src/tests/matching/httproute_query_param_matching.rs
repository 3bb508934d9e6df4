//! Encodes upstream's HTTPRouteQueryParamMatching: a route with query parameter matches
//! (alone and combined with path and header matches) sends each request to the backend
//! upstream expects: exact, case-sensitive values, ANDed match fields, ORed matches, the
//! spec's precedence, and 404 when nothing matches.

use crate::dsl::{answered, request, routed_to};
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteQueryParamMatching",
    description: "A single HTTPRoute with query param matching for different backends",
    features: &["Gateway", "HTTPRoute", "HTTPRouteQueryParamMatching"],
    manifests: &["tests/httproute-query-param-matching.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let ns = INFRA_NS;
    let addr = same_namespace_route_ready(s, "query-param-matching")?;
    let (v1, v2, v3) = ("infra-backend-v1", "infra-backend-v2", "infra-backend-v3");
    let get = |path: &str, headers: &[(&str, &str)]| request("", "", path, headers);
    let cases = [
        routed_to(get("/?animal=whale", &[]), v1, ns),
        routed_to(get("/?animal=dolphin", &[]), v2, ns),
        routed_to(get("/?animal=dolphin&color=blue", &[]), v3, ns),
        routed_to(get("/?ANIMAL=Whale", &[]), v3, ns),
        routed_to(get("/?animal=whale&otherparam=irrelevant", &[]), v1, ns),
        routed_to(get("/?animal=dolphin&color=yellow", &[]), v2, ns),
        answered(get("/?color=blue", &[]), 404),
        answered(get("/?animal=dog", &[]), 404),
        answered(get("/?animal=whaledolphin", &[]), 404),
        answered(get("/", &[]), 404),
        // Combinations of query param matching with other core matches.
        routed_to(get("/path1?animal=whale", &[]), v1, ns),
        routed_to(get("/?animal=whale", &[("version", "one")]), v2, ns),
        routed_to(get("/path2?animal=whale", &[("version", "two")]), v3, ns),
        // Matches ORed together match when only one of them is used.
        routed_to(get("/path3?animal=shark", &[]), v1, ns),
        routed_to(get("/path4?animal=kraken", &[("version", "three")]), v1, ns),
        // Match types ANDed together do not match when only a subset is used.
        answered(get("/?animal=shark", &[]), 404),
        answered(get("/path4?animal=kraken", &[]), 404),
        // Requests satisfying several matches follow the spec's precedence.
        routed_to(get("/path5?animal=hydra", &[]), v1, ns),
        routed_to(get("/?animal=hydra", &[("version", "four")]), v3, ns),
    ];
    s.expect_cases(&addr, &cases)
}
