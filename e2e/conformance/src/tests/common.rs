//! What several encoded tests share: upstream's usual preamble on the `same-namespace`
//! Gateway, and the bodies of tests that upstream writes more than once with other names and
//! values (redirect status codes, timeouts, routes that must not attach, unresolved backends,
//! mirrors, header modifiers, routes bound to listeners).

use crate::checks::{Cond, GatewayRef, Nn, cond, nn};
use crate::dsl::{answered, get, listener, redirect_case, request, routed_to, status};
use crate::http::{ExpectedResponse, RedirectRequest};
use crate::subtests::Subtests;
use crate::{INFRA_NS, Suite, WEB_NS};
use anyhow::Context;

/// The infra namespace's `same-namespace` Gateway, where most tests attach their route.
pub fn same_namespace() -> GatewayRef {
    GatewayRef::new(INFRA_NS, "same-namespace")
}

/// Upstream's usual preamble for a route of the infra namespace on `same-namespace`: the
/// Gateway and the route are accepted, and the route's refs are resolved. Returns the
/// Gateway's `ip:port`.
pub fn same_namespace_route_ready(s: &mut Suite, route: &str) -> anyhow::Result<String> {
    s.routes_must_be_accepted_and_resolved(&same_namespace(), &[nn(INFRA_NS, route)])
}

/// The same without the ResolvedRefs check (for tests whose upstream does not make it).
pub fn same_namespace_route_accepted(s: &mut Suite, route: &str) -> anyhow::Result<String> {
    s.gateway_and_http_routes_must_be_accepted(&same_namespace(), &[nn(INFRA_NS, route)])
}

/// The body of `HTTPRoute303Redirect`, `…307…` and `…308…`: the route is ready, and `method
/// path` (redirects not followed) answers `status` with a `Location` keeping the scheme, host,
/// default port and path.
pub fn redirect_status(
    s: &mut Suite,
    route: &str,
    method: &str,
    path: &str,
    status: u16,
) -> anyhow::Result<()> {
    let addr = same_namespace_route_ready(s, route)?;
    let mut case = redirect_case(
        path,
        status,
        RedirectRequest {
            path: path.into(),
            ..Default::default()
        },
    );
    case.request.method = method.into();
    s.expect(&addr, &case)
}

/// The body of `HTTPRouteTimeoutRequest` and `HTTPRouteTimeoutBackendRequest`: the route is
/// ready; `path` answers 200, and 504 with a backend delay of 1s (any timeout status counts, as
/// upstream's `IsTimeoutError`), while `disabled_path` answers 200 with the same delay.
pub fn timeout_applies(
    s: &mut Suite,
    route: &str,
    path: &str,
    disabled_path: &str,
) -> anyhow::Result<()> {
    let addr = same_namespace_route_ready(s, route)?;
    let case = |path: String, status_code: u16| ExpectedResponse {
        namespace: INFRA_NS.into(),
        ..answered(get(&path), status_code)
    };
    let cases = [
        case(path.to_string(), 200),
        case(format!("{path}?delay=1s"), 504),
        case(format!("{disabled_path}?delay=1s"), 200),
    ];
    s.expect_cases(&addr, &cases)
}

/// The body of upstream's tests of a route whose parentRef matches no listener of `gw`: the
/// route has Accepted False with `reason` (subtest `accepted_subtest`), no accepted parent
/// (subtest `parents_subtest`), and the Gateway counts zero routes.
pub fn route_must_not_attach(
    s: &mut Suite,
    route: &Nn,
    gw: &Nn,
    reason: &str,
    accepted_subtest: &str,
    parents_subtest: &str,
) -> anyhow::Result<()> {
    let mut t = Subtests::new();
    t.run(s, accepted_subtest, |s| {
        s.http_route_must_have_condition(route, gw, cond("Accepted", "False", reason))
    });
    t.run(s, parents_subtest, |s| {
        s.http_route_must_have_no_accepted_parents(route)
    });
    t.run(s, "Gateway should have 0 Routes attached", |s| {
        s.gateway_must_have_zero_routes(gw)
    });
    t.finish()
}

/// The body of upstream's tests of a route of the infra namespace whose backendRef cannot be
/// resolved: the route is accepted by `same-namespace`, has ResolvedRefs False with `reason`
/// (subtest `condition_subtest`), and each request subtest holds.
pub fn unresolved_backend_ref(
    s: &mut Suite,
    route: &str,
    reason: &str,
    condition_subtest: &str,
    requests: Vec<(&str, ExpectedResponse)>,
) -> anyhow::Result<()> {
    let gw = same_namespace();
    let route = nn(INFRA_NS, route);
    let addr = s.gateway_and_http_routes_must_be_accepted(&gw, std::slice::from_ref(&route))?;
    let mut t = Subtests::new();
    t.run(s, condition_subtest, |s| {
        s.http_route_must_have_condition(&route, &gw.nn, cond("ResolvedRefs", "False", reason))
    });
    for (name, expected) in requests {
        t.run(s, name, |s| s.expect(&addr, &expected));
    }
    t.finish()
}

/// `GET /` meant for `web-backend` in the web backend namespace, answering `status_code`.
pub fn web_backend(status_code: u16) -> ExpectedResponse {
    ExpectedResponse {
        response: status(status_code),
        ..routed_to(request("GET", "", "/", &[]), "web-backend", WEB_NS)
    }
}

/// Upstream's mirror subtests: a fresh request ID goes into each case's path, the request must
/// meet the expectation, and every mirror backend must log the request.
pub fn expect_with_mirrors(
    s: &mut Suite,
    gateway: &str,
    cases: Vec<ExpectedResponse>,
) -> anyhow::Result<()> {
    for (i, mut case) in cases.into_iter().enumerate() {
        let name = case.name(i);
        case.add_request_id_query_param(&crate::http::new_uuid());
        s.expect(gateway, &case)
            .and_then(|()| s.expect_mirrored(&case.mirrored_to, &case.request.path))
            .with_context(|| format!("case {name}"))?;
    }
    Ok(())
}

/// A header modifier case: path, headers sent (or set by the backend), headers that must be
/// seen, headers that must be absent.
pub type HeaderCase = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

/// The cases upstream's request and response header modifier tests share: set (overwriting),
/// add (appending) and remove.
pub const SET_ADD_REMOVE: &[HeaderCase] = &[
    (
        "/set",
        &[("Some-Other-Header", "val")],
        &[
            ("Some-Other-Header", "val"),
            ("X-Header-Set", "set-overwrites-values"),
        ],
        &[],
    ),
    (
        "/set",
        &[
            ("Some-Other-Header", "val"),
            ("X-Header-Set", "some-other-value"),
        ],
        &[
            ("Some-Other-Header", "val"),
            ("X-Header-Set", "set-overwrites-values"),
        ],
        &[],
    ),
    (
        "/add",
        &[("Some-Other-Header", "val")],
        &[
            ("Some-Other-Header", "val"),
            ("X-Header-Add", "add-appends-values"),
        ],
        &[],
    ),
    (
        "/add",
        &[
            ("Some-Other-Header", "val"),
            ("X-Header-Add", "some-other-value"),
        ],
        &[
            ("Some-Other-Header", "val"),
            ("X-Header-Add", "some-other-value,add-appends-values"),
        ],
        &[],
    ),
    (
        "/remove",
        &[("X-Header-Remove", "val")],
        &[],
        &["X-Header-Remove"],
    ),
];

/// Upstream's `/multiple` header modifier case (set, add and remove in one rule).
pub const MULTIPLE: HeaderCase = (
    "/multiple",
    &[
        ("X-Header-Set-2", "set-val-2"),
        ("X-Header-Add-2", "add-val-2"),
        ("X-Header-Remove-2", "remove-val-2"),
        ("Another-Header", "another-header-val"),
    ],
    &[
        ("X-Header-Set-1", "header-set-1"),
        ("X-Header-Set-2", "header-set-2"),
        ("X-Header-Add-1", "header-add-1"),
        ("X-Header-Add-2", "add-val-2,header-add-2"),
        ("X-Header-Add-3", "header-add-3"),
        ("Another-Header", "another-header-val"),
    ],
    &["X-Header-Remove-1", "X-Header-Remove-2"],
);

/// Upstream's `/case-insensitivity` header modifier case: the filter uses canonical header
/// names, the request lower-case ones.
pub const CASE_INSENSITIVITY: HeaderCase = (
    "/case-insensitivity",
    &[
        ("x-header-set", "original-val-set"),
        ("x-header-add", "original-val-add"),
        ("x-header-remove", "original-val-remove"),
        ("Another-Header", "another-header-val"),
    ],
    &[
        ("X-Header-Set", "header-set"),
        ("X-Header-Add", "original-val-add,header-add"),
        ("Another-Header", "another-header-val"),
    ],
    &["x-header-remove", "X-Header-Remove"],
);

/// Upstream's check of an HTTPS listener whose certificate is a Secret of another namespace
/// (subtest `subtest`): the Gateway's only listener, `https`, supports HTTPRoute, has no route
/// and has these conditions.
pub fn https_listener_must_have(
    s: &mut Suite,
    subtest: &str,
    gateway: &str,
    conditions: &[Cond],
) -> anyhow::Result<()> {
    s.logf(format!("subtest: {subtest}"));
    s.gateway_status_must_have_listeners(
        &nn(INFRA_NS, gateway),
        &[listener("https", true, 0, conditions)],
    )
}

/// Upstream's preamble for a Gateway whose listeners each take one route (by `sectionName` or
/// port): the infra namespace is ready, then for each `(listeners, route)` the Gateway and the
/// route are accepted on those listeners and the route's refs are resolved. Returns the
/// Gateway's `ip:port` for each entry (the port of its first listener).
pub fn routes_on_listeners(
    s: &mut Suite,
    gateway: &str,
    bindings: &[(&[&str], &str)],
) -> anyhow::Result<Vec<String>> {
    // The test adds a Gateway to the infra namespace, so it waits for the namespace.
    s.namespaces_must_be_ready(&[INFRA_NS])?;
    bindings
        .iter()
        .map(|(listeners, route)| {
            let gw = GatewayRef::with_listeners(INFRA_NS, gateway, listeners);
            s.routes_must_be_accepted_and_resolved(&gw, &[nn(INFRA_NS, route)])
        })
        .collect()
}
