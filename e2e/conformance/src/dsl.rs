//! Shorthands for writing upstream's expectations as Rust values: header and name lists,
//! requests, expected responses (routed to a backend, answered with a status, redirected),
//! listener statuses and mirror backends. Each builds exactly the value upstream's literal
//! spells out; the fields left out keep their defaults, as in Go.

use super::INFRA_NS;
use super::checks::{Cond, ListenerExpect, cond};
use super::http::{
    ExpectedRequest, ExpectedResponse, MirroredBackend, RedirectRequest, Request, Response,
};

/// Header pairs (upstream's `map[string]string` literals).
pub fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Names (upstream's `AbsentHeaders` literals).
pub fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Headers with their acceptable values (upstream's `ValidHeaderValues` literals).
pub fn header_values(pairs: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    pairs
        .iter()
        .map(|(k, vs)| (k.to_string(), names(vs)))
        .collect()
}

/// A request: `method` (GET when empty) to `host` (the Gateway's address when empty) and
/// `path` (with query), with headers.
pub fn request(method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Request {
    Request {
        method: method.into(),
        host: host.into(),
        path: path.into(),
        headers: self::headers(headers),
        ..Default::default()
    }
}

/// `GET path` to the Gateway's address, without headers.
pub fn get(path: &str) -> Request {
    request("", "", path, &[])
}

/// Upstream's `Response{StatusCode}`.
pub fn status(status_code: u16) -> Response {
    Response {
        status_code,
        ..Default::default()
    }
}

/// Upstream's `ExpectedResponse{Request, Backend, Namespace}`: a 200 from a pod of `backend`
/// in `namespace`, which saw the request as sent.
pub fn routed_to(request: Request, backend: &str, namespace: &str) -> ExpectedResponse {
    ExpectedResponse {
        request,
        backend: backend.into(),
        namespace: namespace.into(),
        ..Default::default()
    }
}

/// Upstream's `ExpectedResponse{Request, Response: {StatusCode}}`.
pub fn answered(request: Request, status_code: u16) -> ExpectedResponse {
    ExpectedResponse {
        request,
        response: status(status_code),
        ..Default::default()
    }
}

/// A redirect case in the infra namespace: `GET path` (redirects not followed) answers `status`
/// with a `Location` matching `redirect` (empty fields take upstream's defaults).
pub fn redirect_case(path: &str, status: u16, redirect: RedirectRequest) -> ExpectedResponse {
    ExpectedResponse {
        request: Request {
            path: path.into(),
            unfollow_redirect: true,
            ..Default::default()
        },
        response: self::status(status),
        redirect_request: Some(redirect),
        namespace: INFRA_NS.into(),
        ..Default::default()
    }
}

/// `GET path` reaches a pod of `backend` in the infra namespace, which receives it at
/// `received_path` (upstream's cases with an `ExpectedRequest` of their own).
pub fn reaches(path: &str, backend: &str, received_path: &str) -> ExpectedResponse {
    ExpectedResponse {
        expected_request: Some(ExpectedRequest {
            path: received_path.into(),
            ..Default::default()
        }),
        ..routed_to(get(path), backend, INFRA_NS)
    }
}

/// The request header changes of upstream's "…-and-modify-headers" rules (a
/// RequestHeaderModifier that adds `X-Header-Add`, appends to `X-Header-Add-Append`, sets
/// `X-Header-Set` and removes `X-Header-Remove`): the request carries the headers to change,
/// and the backend must see them changed (at the request's path, unless the case says where).
pub fn with_modified_headers(mut case: ExpectedResponse) -> ExpectedResponse {
    case.request.headers.extend(headers(&[
        ("X-Header-Remove", "remove-val"),
        ("X-Header-Add-Append", "append-val-1"),
    ]));
    let path = case.request.path.clone();
    let er = case
        .expected_request
        .get_or_insert_with(|| ExpectedRequest {
            path,
            ..Default::default()
        });
    er.headers.extend(headers(&[
        ("X-Header-Add", "header-val-1"),
        ("X-Header-Add-Append", "append-val-1,header-val-2"),
        ("X-Header-Set", "set-overwrites-values"),
    ]));
    er.absent_headers.push("X-Header-Remove".into());
    case
}

/// An expected listener status whose supported kinds are HTTPRoute (or none when `http_route`
/// is false).
pub fn listener(name: &str, http_route: bool, attached: i64, conds: &[Cond]) -> ListenerExpect {
    ListenerExpect {
        name: name.into(),
        supported_kinds: if http_route {
            vec!["HTTPRoute".into()]
        } else {
            Vec::new()
        },
        attached_routes: attached,
        conditions: conds.to_vec(),
    }
}

/// A listener for HTTPRoutes that is Accepted and ResolvedRefs True with `attached` routes.
pub fn ready_listener(name: &str, attached: i64) -> ListenerExpect {
    listener(
        name,
        true,
        attached,
        &[
            cond("Accepted", "True", ""),
            cond("ResolvedRefs", "True", ""),
        ],
    )
}

/// A backend of the infra namespace requests are mirrored to (all of them, or `percent`%).
pub fn mirror(name: &str, percent: Option<u32>) -> MirroredBackend {
    MirroredBackend {
        name: name.into(),
        namespace: INFRA_NS.into(),
        percent,
    }
}
