//! Encodes upstream `GatewayClassObservedGenerationBump`
//! (gatewayclass-observed-generation-bump.go): changing a GatewayClass's description bumps its
//! generation, and its Accepted condition (and every other) follows with the new
//! observedGeneration.

use super::support;
use crate::conformance::cluster::ObjId;
use crate::conformance::{ConformanceTest, Suite};
use serde_json::json;

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "GatewayClassObservedGenerationBump",
    description: "A GatewayClass should update the observedGeneration in all of it's Status.Conditions after an update to the spec",
    features: &["Gateway"],
    manifests: &["tests/gatewayclass-observed-generation-bump.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let name = "gatewayclass-observed-generation-bump";
    let id = ObjId::new("GatewayClass", "", name);
    s.logf("subtest: observedGeneration should increment");
    support::gateway_class_must_have_accepted_condition_any(s, name)?;
    let original = support::generation_of(s, &id)?;
    s.must_have_latest_conditions("GatewayClass", "", name)?;
    s.cluster
        .patch(&id, |gwc| gwc["spec"]["description"] = json!("new"))?;
    // The API server bumps the generation on the patch; Trellis reports it once it has read it.
    support::generation_must_change(s, &id, original)?;
    support::gateway_class_must_have_accepted_condition_any(s, name)?;
    s.must_have_latest_conditions("GatewayClass", "", name)?;
    let updated = support::generation_of(s, &id)?;
    if updated == original {
        anyhow::bail!("generation should change after an update (still {original})");
    }
    Ok(())
}
