//! How Envoy picks a virtual host and a route, for one request: the same rules the translator
//! relies on (exact host before wildcards, routes in order, the first whose every condition
//! holds).

use crate::{Candidate, Request, origin_name};
use trellis_translate::hostname;
use trellis_translate::ir::{
    MatchIr, PathMatchIr, RouteIr, StringMatchIr, ValueMatchIr, VirtualHostIr,
};

/// The host without a port, lower case.
pub(crate) fn bare_host(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, _)) => format!("[{h}]"),
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port))
            if !h.contains(':') && !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) =>
        {
            h.to_string()
        }
        _ => host,
    }
}

/// The virtual host Envoy picks for `host` (bare, lower case): an exact domain, else the
/// longest wildcard, else `*` (the translator's order, [`hostname::specificity`]).
pub(crate) fn virtual_host<'a>(
    hosts: &[&'a VirtualHostIr],
    host: &str,
) -> Option<&'a VirtualHostIr> {
    fn domain(v: &VirtualHostIr) -> Option<&str> {
        (v.domain != "*").then_some(v.domain.as_str())
    }
    hosts
        .iter()
        .copied()
        .filter(|v| hostname::matches(&v.domain, host))
        .min_by(|a, b| hostname::specificity(domain(a), domain(b)))
}

/// Whether `host` names Service `ns/name` as a pod in namespace `from` would: `name` (same
/// namespace), `name.ns`, `name.ns.svc`, `name.ns.svc.cluster.local`.
pub(crate) fn service_host(host: &str, ns: &str, name: &str, from: &str) -> bool {
    (host == name && ns == from)
        || host == format!("{name}.{ns}")
        || host == format!("{name}.{ns}.svc")
        || host == format!("{name}.{ns}.svc.cluster.local")
}

/// A request header's value (names compared without case; `:authority` is the host).
pub(crate) fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    if name.eq_ignore_ascii_case("host") || name == ":authority" {
        return Some(&request.host);
    }
    request
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn value_matches(m: &ValueMatchIr, value: &str) -> bool {
    match m {
        ValueMatchIr::Exact(v) => v == value,
        ValueMatchIr::Regex(r) => {
            regex::Regex::new(&format!("^(?:{r})$")).is_ok_and(|re| re.is_match(value))
        }
    }
}

fn value_text(m: &ValueMatchIr) -> String {
    match m {
        ValueMatchIr::Exact(v) => format!("= {v:?}"),
        ValueMatchIr::Regex(r) => format!("~ {r:?}"),
    }
}

fn query<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    let (_, q) = request.path.split_once('?')?;
    q.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

fn path_only(request: &Request) -> &str {
    request.path.split(['?', '#']).next().unwrap_or("/")
}

/// The conditions of a match, each with whether the request meets it and what it failed.
fn conditions(m: &MatchIr, request: &Request) -> Vec<Result<(), String>> {
    let path = path_only(request);
    let mut out = vec![match &m.path {
        PathMatchIr::Exact(v) if path == v => Ok(()),
        PathMatchIr::Exact(v) => Err(format!("path {path} is not {v}")),
        PathMatchIr::Prefix(p) => {
            let p = p.trim_end_matches('/');
            if p.is_empty() || path == p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
            {
                Ok(())
            } else {
                Err(format!(
                    "path {path} is not under {}",
                    if p.is_empty() { "/" } else { p }
                ))
            }
        }
        PathMatchIr::Regex(r) => {
            if regex::Regex::new(&format!("^(?:{r})$")).is_ok_and(|re| re.is_match(path)) {
                Ok(())
            } else {
                Err(format!("path {path} does not match {r:?}"))
            }
        }
    }];
    if let Some(method) = m.method {
        let want = method.as_str();
        out.push(if want == request.method {
            Ok(())
        } else {
            Err(format!("method {} is not {want}", request.method))
        });
    }
    let check = |what: &str, s: &StringMatchIr, got: Option<&str>| match got {
        Some(v) if value_matches(&s.value, v) => Ok(()),
        Some(v) => Err(format!(
            "{what} {} is {v:?}, wants {}",
            s.name,
            value_text(&s.value)
        )),
        None => Err(format!(
            "{what} {} is missing (wants {})",
            s.name,
            value_text(&s.value)
        )),
    };
    for h in &m.headers {
        out.push(check("header", h, header(request, &h.name)));
    }
    for q in &m.query_params {
        out.push(check("query parameter", q, query(request, &q.name)));
    }
    out
}

/// A match in words.
pub(crate) fn describe(m: &MatchIr) -> String {
    let mut parts = vec![match &m.path {
        PathMatchIr::Exact(p) => format!("path = {p}"),
        PathMatchIr::Prefix(p) => format!("path prefix {p}"),
        PathMatchIr::Regex(r) => format!("path ~ {r}"),
    }];
    if let Some(method) = m.method {
        parts.push(format!("method {}", method.as_str()));
    }
    for h in &m.headers {
        parts.push(format!("header {} {}", h.name, value_text(&h.value)));
    }
    for q in &m.query_params {
        parts.push(format!("query {} {}", q.name, value_text(&q.value)));
    }
    parts.join(", ")
}

/// The first route whose every condition the request meets; else the routes that came
/// closest to matching: most conditions met first (then in order), at most five.
pub(crate) fn pick<'a>(
    routes: &'a [RouteIr],
    request: &Request,
) -> Result<&'a RouteIr, Vec<Candidate>> {
    let mut near: Vec<(usize, Candidate)> = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        let c = conditions(&r.matcher, request);
        let met = c.iter().filter(|x| x.is_ok()).count();
        let Some(failed) = c.into_iter().find_map(Result::err) else {
            return Ok(r);
        };
        near.push((
            i,
            Candidate {
                route: origin_name(r),
                matcher: describe(&r.matcher),
                failed,
                met,
            },
        ));
    }
    near.sort_by_key(|(i, c)| (std::cmp::Reverse(c.met), *i));
    Err(near.into_iter().take(5).map(|(_, c)| c).collect())
}
