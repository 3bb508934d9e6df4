//! Encodes upstream `GatewayClassObservedGenerationBump`
//! (gatewayclass-observed-generation-bump.go): changing a GatewayClass's description bumps its
//! generation, and its Accepted condition (and every other) follows with the new
//! observedGeneration.

use crate::cluster::ObjId;
use crate::{ConformanceTest, Suite};
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
    s.gateway_class_must_have_accepted_condition_any(name)?;
    s.must_have_latest_conditions("GatewayClass", "", name)?;
    let original =
        s.patch_bumping_generation(&id, |gwc| gwc["spec"]["description"] = json!("new"))?;
    s.gateway_class_must_have_accepted_condition_any(name)?;
    s.must_have_latest_conditions("GatewayClass", "", name)?;
    s.generation_must_have_changed(&id, original)
}
