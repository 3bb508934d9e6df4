//! Encodes upstream's `HTTPRouteBackendProtocolWebSocket` (v1.6.1): a route to the Service
//! port with `appProtocol: kubernetes.io/ws` is Accepted, and a websocket opened on
//! `ws://<gateway>/ws` echoes a text frame and a binary frame, three sessions in a row.

use super::support::websocket_echo;
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::await_convergence;
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};
use anyhow::Context;

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteBackendProtocolWebSocket",
    description: "A HTTPRoute with a BackendRef that has an appProtocol kubernetes.io/ws should be functional",
    features: &["Gateway", "HTTPRoute", "HTTPRouteBackendProtocolWebSocket"],
    manifests: &["tests/httproute-backend-protocol-websocket.yaml"],
    provisional: false,
    run,
};

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "backend-protocol-ws");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    // Subtest "websocket connection should reach backend"; upstream's Origin is
    // `ws://gateway/<test name>`.
    let origin =
        "ws://gateway/HTTPRouteBackendProtocolWebSocket/websocket_connection_should_reach_backend";
    let timeouts = s.timeouts;
    await_convergence(
        timeouts.required_successes,
        timeouts.max_time_to_consistency,
        |_| websocket_echo(&addr, origin, timeouts.request),
    )
    .context("websocket connection should reach backend")?;
    s.logf("passed: websocket connection should reach backend");
    Ok(())
}
