//! HTTPRouteInvalidNonExistentBackendRef: a route whose only backend does not exist is
//! ResolvedRefs False / BackendNotFound and answers 500.

use crate::checks::{cond, nn};
use crate::dsl::{answered, request};
use crate::tests::common::{same_namespace, same_namespace_route_accepted};
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteInvalidNonExistentBackendRef",
    description: "A single HTTPRoute in the gateway-conformance-infra namespace should set a ResolvedRefs status False with reason BackendNotFound and return 500 when binding to a Gateway in the same namespace if the route has a BackendRef Service that does not exist",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-invalid-nonexistent-backendref.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = "invalid-nonexistent-backend-ref";
    let addr = same_namespace_route_accepted(s, route)?;
    s.http_route_must_have_condition(
        &nn(INFRA_NS, route),
        &same_namespace().nn,
        cond("ResolvedRefs", "False", "BackendNotFound"),
    )?;
    s.expect(&addr, &answered(request("GET", "", "/", &[]), 500))
}
