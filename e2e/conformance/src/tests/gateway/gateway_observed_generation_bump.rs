//! GatewayObservedGenerationBump: changing a Gateway's spec bumps its generation, and its
//! conditions follow with the new observedGeneration.

use crate::cluster::ObjId;
use crate::{ConformanceTest, INFRA_NS, Suite};
use serde_json::json;

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "GatewayObservedGenerationBump",
    description: "A Gateway in the gateway-conformance-infra namespace should update the observedGeneration in all of its Status.Conditions after an update to the spec",
    features: &["Gateway"],
    manifests: &["tests/gateway-observed-generation-bump.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let name = "gateway-observed-generation-bump";
    s.must_have_latest_conditions("Gateway", INFRA_NS, name)?;
    s.patch_bumping_generation(&ObjId::new("Gateway", INFRA_NS, name), |gw| {
        if let Some(listeners) = gw["spec"]["listeners"].as_array_mut() {
            listeners.push(json!({
                "name": "alternate",
                "hostname": "foo.com",
                "port": 80,
                "protocol": "HTTP",
                "allowedRoutes": {"namespaces": {"from": "All"}},
            }));
        }
    })?;
    s.must_have_latest_conditions("Gateway", INFRA_NS, name)
}
