//! Encodes upstream's `HTTPRouteRequestPercentageMirror` (v1.6.1): a route mirroring to
//! `infra-backend-v2` a percentage of requests (`percent: 20`, `fraction: 25/50`, and
//! `percent: 35` after a RequestHeaderModifier) is Accepted with ResolvedRefs; each path
//! reaches `infra-backend-v1` as expected, and of 500 requests the mirror logs a share within
//! three standard deviations of the configured one (up to five attempts).

use super::support::{accepted_with_resolved_refs, expect_mirrored_percentage, headers, names};
use crate::conformance::checks::{GatewayRef, nn};
use crate::conformance::http::{ExpectedRequest, ExpectedResponse, MirroredBackend, Request};
use crate::conformance::{ConformanceTest, INFRA_NS, Suite};
use anyhow::Context;

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRequestPercentageMirror",
    description: "An HTTPRoute with percentage based request mirroring",
    features: &["Gateway", "HTTPRoute", "HTTPRouteRequestPercentageMirror"],
    manifests: &["tests/httproute-request-percentage-mirror.yaml"],
    provisional: true,
    run,
};

/// `infra-backend-v2` receiving `percent`% of the requests as mirrors.
fn mirror(percent: u32) -> Vec<MirroredBackend> {
    vec![MirroredBackend {
        name: "infra-backend-v2".into(),
        namespace: INFRA_NS.into(),
        percent: Some(percent),
    }]
}

/// A case with no header changes.
fn plain(path: &str, percent: u32) -> ExpectedResponse {
    ExpectedResponse {
        request: Request {
            path: path.into(),
            ..Default::default()
        },
        expected_request: Some(ExpectedRequest {
            path: path.into(),
            ..Default::default()
        }),
        backend: "infra-backend-v1".into(),
        mirrored_to: mirror(percent),
        namespace: INFRA_NS.into(),
        ..Default::default()
    }
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let route = nn(INFRA_NS, "request-percentage-mirror");
    let gw = GatewayRef::new(INFRA_NS, "same-namespace");
    let addr = accepted_with_resolved_refs(s, &gw, &route)?;
    let cases = [
        plain("/percent-mirror", 20),
        plain("/percent-mirror-fraction", 50),
        ExpectedResponse {
            request: Request {
                path: "/percent-mirror-and-modify-headers".into(),
                headers: headers(&[
                    ("X-Header-Remove", "remove-val"),
                    ("X-Header-Add-Append", "append-val-1"),
                ]),
                ..Default::default()
            },
            expected_request: Some(ExpectedRequest {
                path: "/percent-mirror-and-modify-headers".into(),
                headers: headers(&[
                    ("X-Header-Add", "header-val-1"),
                    ("X-Header-Add-Append", "append-val-1,header-val-2"),
                    ("X-Header-Set", "set-overwrites-values"),
                ]),
                absent_headers: names(&["X-Header-Remove"]),
                ..Default::default()
            }),
            backend: "infra-backend-v1".into(),
            mirrored_to: mirror(35),
            namespace: INFRA_NS.into(),
            ..Default::default()
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let name = case.name(i);
        // The request succeeds before the distribution is checked.
        s.expect(&addr, case)
            .and_then(|()| expect_mirrored_percentage(s, &addr, case))
            .with_context(|| format!("case {name}"))?;
    }
    Ok(())
}
