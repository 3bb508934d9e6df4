//! Encodes upstream's HTTPRouteServiceTypes: one route reaches `infra-backend-v1` through
//! three kinds of Service: one without selector whose EndpointSlices are managed by hand, a
//! headless Service with a selector, and a headless Service with hand-managed EndpointSlices.
//! As upstream does, the test fills the hand-managed EndpointSlices (one per IP family) with
//! the addresses of `infra-backend-v1`'s pods, then expects each path to reach them.

use crate::cluster::ObjId;
use crate::dsl::{get, routed_to, status};
use crate::http::ExpectedResponse;
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, INFRA_NS, Suite};
use anyhow::bail;
use serde_json::{Value, json};
use std::net::IpAddr;

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteServiceTypes",
    description: "A single HTTPRoute should be able to route traffic to various service type backends",
    features: &["Gateway", "HTTPRoute"],
    manifests: &["tests/httproute-service-types.yaml"],
    provisional: false,
    run,
};

/// Services whose EndpointSlices the test fills in.
const MANUAL_ENDPOINT_SLICES: &[&str] =
    &["manual-endpointslices", "headless-manual-endpointslices"];
/// Services whose EndpointSlices the (simulated) EndpointSlice controller manages.
const MANAGED: &[&str] = &["headless"];
/// An IP family: EndpointSlice name suffix and membership test.
type Family = (&'static str, fn(&IpAddr) -> bool);
/// IP families of the hand-managed EndpointSlices.
const FAMILIES: &[Family] = &[("ip4", IpAddr::is_ipv4), ("ip6", IpAddr::is_ipv6)];

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let result = check(s);
    // The runner leaves EndpointSlices alone when cleaning up (it manages the generated
    // ones), so the hand-managed ones this test's manifest created are removed here.
    let slices: Vec<ObjId> = MANUAL_ENDPOINT_SLICES
        .iter()
        .flat_map(|prefix| {
            FAMILIES.iter().map(move |(suffix, _)| {
                ObjId::new("EndpointSlice", INFRA_NS, &format!("{prefix}-{suffix}"))
            })
        })
        .filter(|id| s.cluster.get(id).is_some())
        .collect();
    let cleanup = s.cluster.delete(&slices);
    result.and(cleanup)
}

fn check(s: &mut Suite) -> anyhow::Result<()> {
    let ns = INFRA_NS;
    let addr = same_namespace_route_ready(s, "service-types")?;

    // The pods of the infra-backend-v1 Deployment (the Deployment's selector).
    let pods: Vec<(IpAddr, String, String)> = s
        .cluster
        .pods(ns, "infra-backend-v1")
        .iter()
        .map(|p| (IpAddr::V4(p.ip), p.name.clone(), p.namespace.clone()))
        .collect();
    if pods.is_empty() {
        bail!("expected 'infra-backend-v1' to have running pods");
    }
    setup_endpoint_slices(s, ns, &pods)?;

    let cases: Vec<ExpectedResponse> = MANUAL_ENDPOINT_SLICES
        .iter()
        .chain(MANAGED)
        .map(|path| ExpectedResponse {
            response: status(200),
            ..routed_to(get(&format!("/{path}")), "infra-backend-v1", ns)
        })
        .collect();
    s.expect_cases(&addr, &cases)
}

/// Upstream's `setupEndpointSlices`: each hand-managed EndpointSlice gets one ready endpoint
/// per pod address of its family (slices of a family without addresses are left alone).
fn setup_endpoint_slices(
    s: &mut Suite,
    ns: &str,
    pods: &[(IpAddr, String, String)],
) -> anyhow::Result<()> {
    for (suffix, is_member) in FAMILIES {
        for prefix in MANUAL_ENDPOINT_SLICES {
            let id = ObjId::new("EndpointSlice", ns, &format!("{prefix}-{suffix}"));
            s.cluster.must_exist(&id)?;
            let endpoints: Vec<Value> = pods
                .iter()
                .filter(|(ip, _, _)| is_member(ip))
                .map(|(ip, name, namespace)| {
                    json!({
                        "addresses": [ip.to_string()],
                        "conditions": {"ready": true, "serving": true, "terminating": false},
                        "targetRef": {"kind": "Pod", "name": name, "namespace": namespace},
                    })
                })
                .collect();
            if endpoints.is_empty() {
                continue;
            }
            s.cluster
                .patch(&id, |slice| slice["endpoints"] = json!(endpoints))?;
        }
    }
    Ok(())
}
