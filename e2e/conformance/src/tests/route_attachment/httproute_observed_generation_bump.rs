//! Encodes upstream `HTTPRouteObservedGenerationBump` (httproute-observed-generation-bump.go):
//! changing an HTTPRoute's backend bumps its generation, and its parent conditions (Accepted,
//! ResolvedRefs True/ResolvedRefs) follow with the new observedGeneration.

use crate::checks::{cond, nn};
use crate::cluster::ObjId;
use crate::{ConformanceTest, INFRA_NS, Suite};
use serde_json::json;

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteObservedGenerationBump",
    description: "A HTTPRoute in the gateway-conformance-infra namespace should update the observedGeneration in all of it's Status.Conditions after an update to the spec",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-observed-generation-bump.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "observed-generation-bump");
    let gw = nn(INFRA_NS, "same-namespace");
    let id = ObjId::new("HTTPRoute", INFRA_NS, &route.name);
    s.logf("subtest: observedGeneration should increment");
    s.namespaces_must_be_ready(&[INFRA_NS])?;
    s.must_have_latest_conditions("HTTPRoute", INFRA_NS, &route.name)?;
    let original = s.patch_bumping_generation(&id, |r| {
        r["spec"]["rules"][0]["backendRefs"][0]["name"] = json!("infra-backend-v2");
    })?;
    s.http_route_must_have_condition(&route, &gw, cond("Accepted", "True", ""))?;
    s.http_route_must_have_resolved_refs(&route, &gw)?;
    s.must_have_latest_conditions("HTTPRoute", INFRA_NS, &route.name)?;
    s.generation_must_have_changed(&id, original)
}
