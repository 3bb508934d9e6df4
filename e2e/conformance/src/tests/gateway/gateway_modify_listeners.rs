//! Encodes upstream `GatewayModifyListeners` (gateway-modify-listeners.go): adding an HTTP
//! listener to a Gateway with one HTTPS listener gives both listeners Accepted and ResolvedRefs
//! True with the (section-less) route attached to each; removing the HTTPS listener of a Gateway
//! with two leaves one listener with the route attached. Each change bumps the Gateway's
//! generation and its conditions follow.

use crate::checks::{ListenerExpect, nn};
use crate::cluster::ObjId;
use crate::dsl::ready_listener;
use crate::subtests::Subtests;
use crate::{ConformanceTest, INFRA_NS, Suite};
use serde_json::{Value, json};

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "GatewayModifyListeners",
    description: "A Gateway in the gateway-conformance-infra namespace should handle adding and removing listeners.",
    features: &["Gateway"],
    manifests: &["tests/gateway-modify-listeners.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let mut subtests = Subtests::new();
    subtests.run(
        s,
        "should be able to add a listener that then becomes available for routing traffic",
        |s| {
            modify_listeners(
                s,
                "gateway-add-listener",
                |listeners| {
                    listeners.push(json!({
                        "name": "http",
                        "port": 80,
                        "protocol": "HTTP",
                        "hostname": "data.test.com",
                        "allowedRoutes": {"namespaces": {"from": "All"}},
                    }))
                },
                &[ready_listener("https", 1), ready_listener("http", 1)],
            )
        },
    );
    subtests.run(
        s,
        "should be able to remove listeners, which would then stop routing the relevant traffic",
        |s| {
            let gateway = "gateway-remove-listener";
            let count = s
                .cluster
                .must_exist(&ObjId::new("Gateway", INFRA_NS, gateway))?["spec"]["listeners"]
                .as_array()
                .map_or(0, Vec::len);
            if count != 2 {
                anyhow::bail!("the gateway must have 2 listeners, has {count}");
            }
            modify_listeners(
                s,
                gateway,
                |listeners| listeners.retain(|l| l["name"] == "http"),
                &[ready_listener("http", 1)],
            )
        },
    );
    subtests.finish()
}

/// Upstream's steps for both subtests: once the namespace is ready and the Gateway's
/// conditions are at its generation, its listeners are changed; the generation changes, the
/// namespace is ready again, and the listener statuses are as expected, at the new generation.
fn modify_listeners(
    s: &mut Suite,
    gateway: &str,
    change: impl FnOnce(&mut Vec<Value>),
    expected: &[ListenerExpect],
) -> anyhow::Result<()> {
    let id = ObjId::new("Gateway", INFRA_NS, gateway);
    s.namespaces_must_be_ready(&[INFRA_NS])?;
    s.must_have_latest_conditions("Gateway", INFRA_NS, gateway)?;
    let original = s.patch_bumping_generation(&id, |g| {
        if let Some(listeners) = g["spec"]["listeners"].as_array_mut() {
            change(listeners);
        }
    })?;
    s.namespaces_must_be_ready(&[INFRA_NS])?;
    s.gateway_status_must_have_listeners(&nn(INFRA_NS, gateway), expected)?;
    s.must_have_latest_conditions("Gateway", INFRA_NS, gateway)?;
    s.generation_must_have_changed(&id, original)
}
