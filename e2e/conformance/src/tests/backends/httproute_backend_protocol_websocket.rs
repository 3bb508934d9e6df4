//! Encodes upstream's `HTTPRouteBackendProtocolWebSocket` (v1.6.1): a route to the Service
//! port with `appProtocol: kubernetes.io/ws` is Accepted, and a websocket opened on
//! `ws://<gateway>/ws` echoes a text frame and a binary frame, three sessions in a row.

use crate::tests::common::same_namespace_route_accepted;
use crate::{ConformanceTest, Suite};

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
    let addr = same_namespace_route_accepted(s, "backend-protocol-ws")?;
    // Subtest "websocket connection should reach backend"; upstream's Origin is
    // `ws://gateway/<test name>`.
    s.expect_websocket_echo(
        &addr,
        "ws://gateway/HTTPRouteBackendProtocolWebSocket/websocket_connection_should_reach_backend",
        "websocket connection should reach backend",
    )
}
