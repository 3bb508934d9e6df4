//! Encodes upstream `GatewayListenerUnsupportedProtocol`
//! (gateway-invalid-listeners-unsupported-protocol.go): a listener with an unsupported protocol
//! is Accepted False / UnsupportedProtocol with no supported kinds; a Gateway with only such
//! listeners is Accepted False / ListenersNotValid, and one that also has a valid HTTP listener
//! is Accepted True with reason ListenersNotValid.

use crate::checks::{ListenerExpect, cond, nn};
use crate::dsl::listener;
use crate::subtests::Subtests;
use crate::{ConformanceTest, INFRA_NS, Suite};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "GatewayListenerUnsupportedProtocol",
    description: "A Gateway should set the Accepted condition to False with reason UnsupportedProtocol on listeners whose protocol is not supported. The Gateway itself should only be Accepted if at least one of its listeners is accepted.",
    features: &["Gateway"],
    manifests: &["tests/gateway-invalid-listeners-unsupported-protocol.yaml"],
    provisional: false,
    run,
};

fn unsupported() -> ListenerExpect {
    listener(
        "invalid",
        false,
        0,
        &[cond("Accepted", "False", "UnsupportedProtocol")],
    )
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let mut subtests = Subtests::new();
    subtests.run(
        s,
        "Gateway with no accepted listeners should not be accepted and the listener should have the Accepted condition set to False with reason UnsupportedProtocol",
        |s| {
            let gw = nn(INFRA_NS, "gateway-only-unsupported-protocols");
            s.must_have_latest_conditions("Gateway", &gw.namespace, &gw.name)?;
            s.gateway_must_have_condition(&gw, cond("Accepted", "False", "ListenersNotValid"))?;
            s.gateway_status_must_have_listeners(&gw, &[unsupported()])
        },
    );
    subtests.run(
        s,
        "Gateway with at least one accepted listeners should be accepted and the listeners should have the Accepted condition set accordingly",
        |s| {
            let gw = nn(INFRA_NS, "gateway-supported-and-unsupported-protocols");
            s.must_have_latest_conditions("Gateway", &gw.namespace, &gw.name)?;
            s.gateway_must_have_condition(&gw, cond("Accepted", "True", "ListenersNotValid"))?;
            s.gateway_status_must_have_listeners(
                &gw,
                &[
                    listener("http", true, 0, &[cond("Accepted", "True", "Accepted")]),
                    unsupported(),
                ],
            )
        },
    );
    subtests.finish()
}
