//! Encodes upstream `GatewayModifyListeners` (gateway-modify-listeners.go): adding an HTTP
//! listener to a Gateway with one HTTPS listener gives both listeners Accepted and ResolvedRefs
//! True with the (section-less) route attached to each; removing the HTTPS listener of a Gateway
//! with two leaves one listener with the route attached. Each change bumps the Gateway's
//! generation and its conditions follow.

use super::support::{self, Subtests, listener};
use crate::conformance::checks::{Cond, cond, nn};
use crate::conformance::cluster::ObjId;
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};
use serde_json::json;

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "GatewayModifyListeners",
    description: "A Gateway in the gateway-conformance-infra namespace should handle adding and removing listeners.",
    features: &["Gateway"],
    manifests: &["tests/gateway-modify-listeners.yaml"],
    provisional: false,
    run,
};

fn ready() -> [Cond; 2] {
    [
        cond("Accepted", "True", ""),
        cond("ResolvedRefs", "True", ""),
    ]
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let mut subtests = Subtests::new();
    subtests.run(
        s,
        "should be able to add a listener that then becomes available for routing traffic",
        add_listener,
    );
    subtests.run(
        s,
        "should be able to remove listeners, which would then stop routing the relevant traffic",
        remove_listener,
    );
    subtests.finish()
}

fn add_listener(s: &mut Suite) -> anyhow::Result<()> {
    let gw = nn(INFRA_NS, "gateway-add-listener");
    let id = ObjId::new("Gateway", INFRA_NS, &gw.name);
    support::namespaces_must_be_ready(s, &[INFRA_NS])?;
    s.must_have_latest_conditions("Gateway", INFRA_NS, &gw.name)?;
    let original = support::generation_of(s, &id)?;
    s.cluster.patch(&id, |g| {
        if let Some(listeners) = g["spec"]["listeners"].as_array_mut() {
            listeners.push(json!({
                "name": "http",
                "port": 80,
                "protocol": "HTTP",
                "hostname": "data.test.com",
                "allowedRoutes": {"namespaces": {"from": "All"}},
            }));
        }
    })?;
    // The API server bumps the generation on the patch; Trellis reports it once it has read it.
    support::generation_must_change(s, &id, original)?;
    support::namespaces_must_be_ready(s, &[INFRA_NS])?;
    s.gateway_status_must_have_listeners(
        &gw,
        &[
            listener("https", true, 1, &ready()),
            listener("http", true, 1, &ready()),
        ],
    )?;
    s.must_have_latest_conditions("Gateway", INFRA_NS, &gw.name)?;
    let updated = support::generation_of(s, &id)?;
    if updated == original {
        anyhow::bail!("generation should change after an update (still {original})");
    }
    Ok(())
}

fn remove_listener(s: &mut Suite) -> anyhow::Result<()> {
    let gw = nn(INFRA_NS, "gateway-remove-listener");
    let id = ObjId::new("Gateway", INFRA_NS, &gw.name);
    support::namespaces_must_be_ready(s, &[INFRA_NS])?;
    s.must_have_latest_conditions("Gateway", INFRA_NS, &gw.name)?;
    let original = support::generation_of(s, &id)?;
    let count = s.cluster.must_exist(&id)?["spec"]["listeners"]
        .as_array()
        .map_or(0, Vec::len);
    if count != 2 {
        anyhow::bail!("the gateway must have 2 listeners, has {count}");
    }
    s.cluster.patch(&id, |g| {
        if let Some(listeners) = g["spec"]["listeners"].as_array_mut() {
            listeners.retain(|l| l["name"] == "http");
        }
    })?;
    support::generation_must_change(s, &id, original)?;
    support::namespaces_must_be_ready(s, &[INFRA_NS])?;
    s.gateway_status_must_have_listeners(&gw, &[listener("http", true, 1, &ready())])?;
    s.must_have_latest_conditions("Gateway", INFRA_NS, &gw.name)?;
    let updated = support::generation_of(s, &id)?;
    if updated == original {
        anyhow::bail!("generation should change after an update (still {original})");
    }
    Ok(())
}
