//! The upstream mesh tests (v1.6.1 `conformance/tests/mesh/*.go`), re-encoded: each a list of
//! requests from a pod and what must come back, run as upstream runs them
//! ([`crate::mesh::expect_eventually`]), plus the weighted-split check.

use crate::mesh::{CONSUMER_NS, MESH_NS, MeshCase, MeshCluster, exec_client, expect_eventually};
use anyhow::{Context, bail};
use std::collections::BTreeMap;

/// The MESH-HTTP profile's core features.
pub const MESH_CORE_FEATURES: &[&str] = &["Mesh", "HTTPRoute"];

/// The MESH-HTTP profile's extended features, and whether Trellis supports each.
pub const MESH_EXTENDED_FEATURES: &[(&str, bool)] = &[
    ("MeshClusterIPMatching", true),
    ("MeshConsumerRoute", true),
    ("MeshHTTPRouteBackendRequestHeaderModification", true),
    ("MeshHTTPRouteNamedRouteRule", true),
    ("MeshHTTPRouteQueryParamMatching", true),
    ("MeshHTTPRouteRedirectPath", true),
    ("MeshHTTPRouteRedirectPort", true),
    ("MeshHTTPRouteRewritePath", true),
    ("MeshHTTPRouteSchemeRedirect", true),
];

/// Features of tests outside the profile that Trellis supports too.
pub const OTHER_SUPPORTED_FEATURES: &[&str] = &[
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteParentRefPort",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
];

/// A mesh test.
pub struct MeshTest {
    /// Upstream's ShortName.
    pub short_name: &'static str,
    /// Its features.
    pub features: &'static [&'static str],
    /// Provisional upstream.
    pub provisional: bool,
    /// Manifests applied first (relative to the upstream conformance directory).
    pub manifests: &'static [&'static str],
    /// The test.
    pub run: fn(&MeshCluster) -> anyhow::Result<()>,
}

fn case(path: &str, backend: &str) -> MeshCase {
    MeshCase {
        path: path.into(),
        backend: backend.into(),
        ..Default::default()
    }
}

fn status(path: &str, code: u16) -> MeshCase {
    MeshCase {
        path: path.into(),
        status: code,
        ..Default::default()
    }
}

/// A redirect: its status, and (checked by this runner, not upstream) its whole `Location`.
fn redirect(path: &str, code: u16, location: &str) -> MeshCase {
    MeshCase {
        path: path.into(),
        status: code,
        response_headers: pairs(&[("Location", location)]),
        ..Default::default()
    }
}

fn with_headers(mut c: MeshCase, headers: &[(&str, &str)]) -> MeshCase {
    c.headers = pairs(headers);
    c
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs cases from the first `app=echo,version=v1` pod of the mesh namespace.
fn from_echo_v1(cluster: &MeshCluster, cases: &[MeshCase]) -> anyhow::Result<()> {
    let pod = cluster.pod(MESH_NS, &[("app", "echo"), ("version", "v1")])?;
    for c in cases {
        expect_eventually(pod, c).with_context(|| format!("{}{}", c.host, c.path))?;
    }
    Ok(())
}

const MESH: &[&str] = &["Mesh"];
const MESH_HTTP: &[&str] = &["Mesh", "HTTPRoute"];

/// Every mesh test of upstream's MESH-HTTP profile, and the seven in no profile (the four
/// mesh-only ones and the 303/307/308 redirects).
pub fn all() -> Vec<MeshTest> {
    vec![
        MeshTest {
            short_name: "MeshBasic",
            features: MESH,
            provisional: false,
            manifests: &[],
            run: |c| from_echo_v1(c, &[case("", "")]),
        },
        MeshTest {
            short_name: "MeshTrafficSplit",
            features: MESH_HTTP,
            provisional: false,
            manifests: &["tests/mesh/mesh-split.yaml"],
            run: |c| from_echo_v1(c, &[case("/v1", "echo-v1"), case("/v2", "echo-v2")]),
        },
        MeshTest {
            short_name: "MeshHTTPRouteSimpleSameNamespace",
            features: MESH_HTTP,
            provisional: false,
            manifests: &["tests/mesh/httproute-simple-same-namespace.yaml"],
            run: |c| from_echo_v1(c, &[case("/", "echo-v1")]),
        },
        MeshTest {
            short_name: "MeshHTTPRouteMatching",
            features: MESH_HTTP,
            provisional: false,
            manifests: &["tests/mesh/httproute-matching.yaml"],
            run: |c| {
                from_echo_v1(
                    c,
                    &[
                        case("/", "echo-v1"),
                        case("/example", "echo-v1"),
                        with_headers(case("/", "echo-v1"), &[("Version", "one")]),
                        case("/v2", "echo-v2"),
                        case("/v2/example", "echo-v2"),
                        with_headers(case("/", "echo-v2"), &[("Version", "two")]),
                        case("/v2/", "echo-v2"),
                        case("/v2example", "echo-v1"),
                        case("/foo/v2/example", "echo-v1"),
                    ],
                )
            },
        },
        MeshTest {
            short_name: "MeshHTTPRouteWeight",
            features: MESH_HTTP,
            provisional: false,
            manifests: &["tests/mesh/httproute-weight.yaml"],
            run: weight,
        },
        MeshTest {
            short_name: "MeshHTTPRouteRedirectHostAndStatus",
            features: MESH_HTTP,
            provisional: false,
            manifests: &["tests/mesh/httproute-redirect-host-and-status.yaml"],
            run: |c| {
                from_echo_v1(
                    c,
                    &[
                        redirect(
                            "/hostname-redirect",
                            302,
                            "http://example.org/hostname-redirect",
                        ),
                        redirect(
                            "/host-and-status",
                            301,
                            "http://example.org/host-and-status",
                        ),
                    ],
                )
            },
        },
        MeshTest {
            short_name: "MeshHTTPRouteRequestHeaderModifier",
            features: MESH_HTTP,
            provisional: false,
            manifests: &["tests/mesh/httproute-request-header-modifier.yaml"],
            run: |c| from_echo_v1(c, &header_cases()),
        },
        MeshTest {
            short_name: "MeshHTTPRouteBackendRequestHeaderModifier",
            features: &[
                "Mesh",
                "HTTPRoute",
                "MeshHTTPRouteBackendRequestHeaderModification",
            ],
            provisional: false,
            manifests: &["tests/mesh/httproute-request-header-modifier-backend.yaml"],
            run: |c| from_echo_v1(c, &header_cases()),
        },
        MeshTest {
            short_name: "MeshHTTPRouteQueryParamMatching",
            features: &["Mesh", "HTTPRoute", "MeshHTTPRouteQueryParamMatching"],
            provisional: false,
            manifests: &["tests/mesh/httproute-query-param-matching.yaml"],
            run: |c| {
                from_echo_v1(
                    c,
                    &[
                        case("/?animal=whale", "echo-v1"),
                        case("/?animal=dolphin", "echo-v2"),
                        case("/?animal=whale&otherparam=irrelevant", "echo-v1"),
                        case("/?animal=dolphin&color=yellow", "echo-v2"),
                        status("/?color=blue", 404),
                        status("/?animal=dog", 404),
                        status("/?animal=whaledolphin", 404),
                        status("/", 404),
                        case("/path1?animal=whale", "echo-v1"),
                        with_headers(case("/?animal=whale", "echo-v2"), &[("version", "one")]),
                        case("/path3?animal=shark", "echo-v1"),
                        with_headers(
                            case("/path4?animal=kraken", "echo-v1"),
                            &[("version", "three")],
                        ),
                        status("/?animal=shark", 404),
                        status("/path4?animal=kraken", 404),
                        case("/path5?animal=hydra", "echo-v1"),
                    ],
                )
            },
        },
        MeshTest {
            short_name: "MeshHTTPRouteRedirectPath",
            features: &["Mesh", "HTTPRoute", "MeshHTTPRouteRedirectPath"],
            provisional: false,
            manifests: &["tests/mesh/httproute-redirect-path.yaml"],
            run: |c| {
                from_echo_v1(
                    c,
                    &[
                        redirect(
                            "/original-prefix/lemon",
                            302,
                            "http://echo/replacement-prefix/lemon",
                        ),
                        redirect(
                            "/full/path/original",
                            302,
                            "http://echo/full-path-replacement",
                        ),
                        redirect(
                            "/path-and-host",
                            302,
                            "http://example.org/replacement-prefix",
                        ),
                        redirect("/path-and-status", 301, "http://echo/replacement-prefix"),
                        redirect(
                            "/full-path-and-host",
                            302,
                            "http://example.org/replacement-full",
                        ),
                        redirect("/full-path-and-status", 301, "http://echo/replacement-full"),
                    ],
                )
            },
        },
        MeshTest {
            short_name: "MeshHTTPRouteRedirectPort",
            features: &["Mesh", "HTTPRoute", "MeshHTTPRouteRedirectPort"],
            provisional: false,
            manifests: &["tests/mesh/httproute-redirect-port.yaml"],
            run: |c| {
                from_echo_v1(
                    c,
                    &[
                        redirect("/port", 302, "http://echo:8083/port"),
                        redirect(
                            "/port-and-host",
                            302,
                            "http://example.org:8083/port-and-host",
                        ),
                        redirect("/port-and-status", 301, "http://echo:8083/port-and-status"),
                        redirect(
                            "/port-and-host-and-status",
                            302,
                            "http://example.org:8083/port-and-host-and-status",
                        ),
                    ],
                )
            },
        },
        MeshTest {
            short_name: "MeshHTTPRouteSchemeRedirect",
            features: &["Mesh", "HTTPRoute", "MeshHTTPRouteSchemeRedirect"],
            provisional: false,
            manifests: &["tests/mesh/httproute-redirect-scheme.yaml"],
            run: |c| {
                from_echo_v1(
                    c,
                    &[
                        redirect("/scheme", 302, "https://echo/scheme"),
                        redirect(
                            "/scheme-and-host",
                            302,
                            "https://example.org/scheme-and-host",
                        ),
                        redirect("/scheme-and-status", 301, "https://echo/scheme-and-status"),
                        redirect(
                            "/scheme-and-host-and-status",
                            302,
                            "https://example.org/scheme-and-host-and-status",
                        ),
                    ],
                )
            },
        },
        MeshTest {
            short_name: "MeshHTTPRouteRewritePath",
            features: &["Mesh", "HTTPRoute", "MeshHTTPRouteRewritePath"],
            provisional: false,
            manifests: &["tests/mesh/httproute-rewrite-path.yaml"],
            run: rewrite_path,
        },
        MeshTest {
            short_name: "MeshHTTPRouteNamedRule",
            features: &["Mesh", "HTTPRoute", "MeshHTTPRouteNamedRouteRule"],
            provisional: true,
            manifests: &["tests/mesh/httproute-named-rule.yaml"],
            run: |c| from_echo_v1(c, &[case("/named", "echo-v1"), case("/unnamed", "echo-v2")]),
        },
        MeshTest {
            short_name: "MeshHTTPRoute303Redirect",
            features: &["Mesh", "HTTPRoute", "HTTPRoute303RedirectStatusCode"],
            provisional: true,
            manifests: &["tests/mesh/httproute-303-redirect.yaml"],
            run: |c| from_echo_v1(c, &[redirect("/redirect", 303, "http://echo/redirect")]),
        },
        MeshTest {
            short_name: "MeshHTTPRoute307Redirect",
            features: &["Mesh", "HTTPRoute", "HTTPRoute307RedirectStatusCode"],
            provisional: true,
            manifests: &["tests/mesh/httproute-307-redirect.yaml"],
            run: |c| from_echo_v1(c, &[redirect("/temporary", 307, "http://echo/temporary")]),
        },
        MeshTest {
            short_name: "MeshHTTPRoute308Redirect",
            features: &["Mesh", "HTTPRoute", "HTTPRoute308RedirectStatusCode"],
            provisional: true,
            manifests: &["tests/mesh/httproute-308-redirect.yaml"],
            run: |c| from_echo_v1(c, &[redirect("/permanent", 308, "http://echo/permanent")]),
        },
        MeshTest {
            short_name: "MeshConsumerRoute",
            features: &[
                "Mesh",
                "MeshConsumerRoute",
                "HTTPRoute",
                "HTTPRouteResponseHeaderModification",
            ],
            provisional: false,
            manifests: &["tests/mesh/mesh-consumer-route.yaml"],
            run: consumer_route,
        },
        MeshTest {
            short_name: "MeshFrontend",
            features: &["Mesh", "HTTPRoute", "HTTPRouteResponseHeaderModification"],
            provisional: false,
            manifests: &["tests/mesh/mesh-frontend.yaml"],
            run: frontend,
        },
        MeshTest {
            short_name: "MeshFrontendHostname",
            features: &[
                "Mesh",
                "MeshClusterIPMatching",
                "HTTPRoute",
                "HTTPRouteResponseHeaderModification",
            ],
            provisional: false,
            manifests: &["tests/mesh/mesh-frontend.yaml"],
            run: frontend_hostname,
        },
        MeshTest {
            short_name: "MeshPorts",
            features: &[
                "Mesh",
                "HTTPRoute",
                "HTTPRouteParentRefPort",
                "HTTPRouteResponseHeaderModification",
            ],
            provisional: false,
            manifests: &["tests/mesh/mesh-ports.yaml"],
            run: ports,
        },
    ]
}

/// The request header modifier cases (`httproute-request-header-modifier*.yaml`): the same
/// as the Gateway tests', sent from a pod.
fn header_cases() -> Vec<MeshCase> {
    use crate::tests::common::{CASE_INSENSITIVITY, MULTIPLE, SET_ADD_REMOVE};
    SET_ADD_REMOVE
        .iter()
        .chain([&MULTIPLE, &CASE_INSENSITIVITY])
        .map(|(path, sent, expected, absent)| MeshCase {
            path: path.to_string(),
            headers: pairs(sent),
            backend: "echo-v1".into(),
            request_headers: pairs(expected),
            absent_request_headers: absent.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .collect()
}

fn rewrite_path(cluster: &MeshCluster) -> anyhow::Result<()> {
    let c = |path: &str, echoed: &str, headers: bool| {
        let mut case = MeshCase {
            path: path.into(),
            backend: "echo-v1".into(),
            echoed_path: Some(echoed.into()),
            ..Default::default()
        };
        if headers {
            case.headers = pairs(&[
                ("X-Header-Remove", "remove-val"),
                ("X-Header-Add-Append", "append-val-1"),
                ("X-Header-Set", "set-val"),
            ]);
            case.request_headers = pairs(&[
                ("X-Header-Add", "header-val-1"),
                ("X-Header-Add-Append", "append-val-1,header-val-2"),
                ("X-Header-Set", "set-overwrites-values"),
            ]);
            case.absent_request_headers = vec!["X-Header-Remove".into()];
        }
        case
    };
    from_echo_v1(
        cluster,
        &[
            c("/prefix/one/two", "/one/two", false),
            c("/strip-prefix/three", "/three", false),
            c("/strip-prefix", "/", false),
            c("/full/one/two", "/one", false),
            c("/full/rewrite-path-and-modify-headers/test", "/test", true),
            c(
                "/prefix/rewrite-path-and-modify-headers/one",
                "/prefix/one",
                true,
            ),
        ],
    )
}

/// Upstream's weighted split: one batch of 500 requests, each backend's share within 0.05 of
/// its weight (70/30), up to 10 tries.
fn weight(cluster: &MeshCluster) -> anyhow::Result<()> {
    from_echo_v1(cluster, &[case("/", "")])?;
    let pod = cluster.pod(MESH_NS, &[("app", "echo"), ("version", "v1")])?;
    let mut last = String::new();
    for _ in 0..10 {
        let out = exec_client(pod, "http://echo/", &[], 500)?;
        let parts = crate::mesh::split(&out);
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut answered = 0;
        for p in &parts {
            let parsed = crate::mesh::parse(p);
            if parsed.hostname.is_empty() {
                continue;
            }
            answered += 1;
            // <deployment>-<replica set>-<pod>: the deployment.
            let mut pieces: Vec<&str> = parsed.hostname.split('-').collect();
            pieces.truncate(pieces.len().saturating_sub(2));
            *seen.entry(pieces.join("-")).or_default() += 1;
        }
        let share = |b: &str| *seen.get(b).unwrap_or(&0) as f64 / 500.0;
        if answered != 500 {
            last = format!("{answered} of 500 requests answered");
        } else if seen.len() != 2 {
            last = format!("backends {seen:?}, want echo-v1 and echo-v2");
        } else if (share("echo-v1") - 0.7).abs() > 0.05 || (share("echo-v2") - 0.3).abs() > 0.05 {
            last = format!("split {seen:?}, want 70/30 within 0.05");
        } else {
            return Ok(());
        }
    }
    bail!("weighted split not met in 10 tries: {last}")
}

fn consumer_route(cluster: &MeshCluster) -> anyhow::Result<()> {
    let consumer = cluster.pod(CONSUMER_NS, &[("app", "echo"), ("version", "v1")])?;
    let producer = cluster.pod(MESH_NS, &[("app", "echo"), ("version", "v1")])?;
    let modified = MeshCase {
        host: "echo-v1.gateway-conformance-mesh".into(),
        path: "/".into(),
        backend: "echo-v1".into(),
        response_headers: pairs(&[("X-Header-Set", "set")]),
        ..Default::default()
    };
    expect_eventually(consumer, &modified).context("from the consumer's namespace")?;
    let plain = MeshCase {
        response_headers: Vec::new(),
        absent_response_headers: vec!["X-Header-Set".into()],
        ..modified
    };
    expect_eventually(producer, &plain).context("from another namespace")
}

fn frontend(cluster: &MeshCluster) -> anyhow::Result<()> {
    let v2 = cluster.pod(MESH_NS, &[("app", "echo"), ("version", "v2")])?;
    from_echo_v1(
        cluster,
        &[
            MeshCase {
                host: "echo-v2".into(),
                backend: "echo-v2".into(),
                response_headers: pairs(&[("X-Header-Set", "set")]),
                ..Default::default()
            },
            MeshCase {
                host: format!("{}:8080", v2.ip()),
                backend: "echo-v2".into(),
                absent_response_headers: vec!["X-Header-Set".into()],
                ..Default::default()
            },
        ],
    )
}

fn frontend_hostname(cluster: &MeshCluster) -> anyhow::Result<()> {
    from_echo_v1(
        cluster,
        &[
            MeshCase {
                host: "echo-v2".into(),
                headers: pairs(&[("Host", "echo-v1")]),
                backend: "echo-v2".into(),
                response_headers: pairs(&[("X-Header-Set", "set")]),
                ..Default::default()
            },
            MeshCase {
                host: "echo-v1".into(),
                headers: pairs(&[("Host", "echo-v2")]),
                backend: "echo-v1".into(),
                absent_response_headers: vec!["X-Header-Set".into()],
                ..Default::default()
            },
        ],
    )
}

fn ports(cluster: &MeshCluster) -> anyhow::Result<()> {
    let c = |host: &str, backend: &str, header: Option<&str>| MeshCase {
        host: host.into(),
        backend: backend.into(),
        response_headers: header
            .map(|v| pairs(&[("X-Header-Set", v)]))
            .unwrap_or_default(),
        absent_response_headers: if header.is_none() {
            vec!["X-Header-Set".into()]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    from_echo_v1(
        cluster,
        &[
            c("echo-v1", "echo-v1", Some("v1")),
            c("echo-v1:8080", "echo-v1", None),
            c("echo-v2", "echo-v2", Some("v2")),
            c("echo-v2:8080", "echo-v2", Some("v2")),
        ],
    )
}
