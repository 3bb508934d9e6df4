//! Encodes upstream `GatewayInvalidParametersRef` (gateway-invalid-parameters-ref.go): a Gateway
//! whose `infrastructure.parametersRef` points at a kind that does not exist is Accepted False
//! with reason InvalidParameters, with its conditions at the latest generation.

use crate::checks::{cond, nn};
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "GatewayInvalidParametersRef",
    description: "A Gateway referencing an invalid or non-existent parametersRef should set the Accepted condition to False with reason InvalidParameters.",
    features: &["Gateway"],
    manifests: &["tests/gateway-invalid-parameters-ref.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let gw = nn(INFRA_NS, "gateway-invalid-parameters-ref");
    s.must_have_latest_conditions("Gateway", &gw.namespace, &gw.name)?;
    s.gateway_must_have_condition(&gw, cond("Accepted", "False", "InvalidParameters"))
}
