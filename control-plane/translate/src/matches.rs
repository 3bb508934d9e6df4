//! HTTPRoute matches to IR matches with their precedence, and the checks of user values that
//! Envoy must accept (RE2 regexes, header names and values, text, durations): what Envoy would
//! reject becomes a [`Problem`] naming the field, never a configuration Envoy NACKs.

use crate::conditions::{Problem, Reason};
use crate::gateway::Precedence;
use crate::ir::{MatchIr, Method, PathMatchIr, StringMatchIr, ValueMatchIr};
use std::collections::BTreeSet;
use std::time::Duration;
use trellis_model::ObjectKey;
use trellis_model::core::jiff;
use trellis_model::gateway::{HttpRouteMatch, PathMatchType, StringMatchType};

/// The method of a match.
fn method(m: trellis_model::gateway::HttpMethod) -> Method {
    use trellis_model::gateway::HttpMethod as M;
    match m {
        M::GET => Method::Get,
        M::HEAD => Method::Head,
        M::POST => Method::Post,
        M::PUT => Method::Put,
        M::DELETE => Method::Delete,
        M::CONNECT => Method::Connect,
        M::OPTIONS => Method::Options,
        M::TRACE => Method::Trace,
        M::PATCH => Method::Patch,
    }
}

/// Whether `name` is an HTTP token (RFC 9110), as Gateway API's header names are.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(crate) fn check_header_name(name: &str, at: &str) -> Result<(), Problem> {
    let valid = is_token(name);
    let lower = name.to_ascii_lowercase();
    let reserved = lower == "host" || lower.starts_with(':');
    if !valid || reserved {
        return Err(Problem::not_accepted(
            Reason::UnsupportedValue,
            format!("{at}: {name:?} is not a header name a filter may change"),
        ));
    }
    Ok(())
}

/// A match in IR form, with its precedence (route-level fields filled by the caller).
pub(crate) fn translate_match(
    m: &HttpRouteMatch,
    at: &str,
) -> Result<(MatchIr, Precedence), Problem> {
    let value = &m.path.value;
    check_text(value, &format!("{at}.path.value"), "path")?;
    if !value.starts_with('/') && m.path.type_ != PathMatchType::RegularExpression {
        return Err(Problem::not_accepted(
            Reason::UnsupportedValue,
            format!("{at}.path.value: {value:?} must start with '/'"),
        ));
    }
    let (path, kind, len) = match m.path.type_ {
        PathMatchType::Exact => (PathMatchIr::Exact(value.clone()), 0, value.len()),
        PathMatchType::RegularExpression => {
            check_regex(value, &format!("{at}.path.value"))?;
            (PathMatchIr::Regex(value.clone()), 1, value.len())
        }
        PathMatchType::PathPrefix => {
            // A trailing '/' is ignored: "/foo/" matches like "/foo".
            let trimmed = value.trim_end_matches('/');
            let prefix = if trimmed.is_empty() { "/" } else { trimmed };
            (PathMatchIr::Prefix(prefix.to_string()), 2, prefix.len())
        }
    };
    // Only the first header match of a name counts.
    let mut seen = BTreeSet::new();
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        if !is_token(&h.name) {
            return Err(Problem::not_accepted(
                Reason::UnsupportedValue,
                format!("{at}.headers[{i}].name: {:?} is not a header name", h.name),
            ));
        }
        let name = h.name.to_ascii_lowercase();
        if !seen.insert(name.clone()) {
            continue;
        }
        headers.push(StringMatchIr {
            name,
            value: value_match(h.type_, &h.value, &format!("{at}.headers[{i}].value"))?,
        });
    }
    let mut seen = BTreeSet::new();
    let mut query_params = Vec::new();
    for (i, q) in m.query_params.iter().enumerate() {
        if q.name.is_empty() || q.name.len() > 256 || q.name.bytes().any(|b| b.is_ascii_control()) {
            return Err(Problem::not_accepted(
                Reason::UnsupportedValue,
                format!(
                    "{at}.queryParams[{i}].name: {:?} is not a query parameter name",
                    q.name
                ),
            ));
        }
        if !seen.insert(q.name.clone()) {
            continue;
        }
        query_params.push(StringMatchIr {
            name: q.name.clone(),
            value: value_match(q.type_, &q.value, &format!("{at}.queryParams[{i}].value"))?,
        });
    }
    let precedence = Precedence {
        path_kind: kind,
        path_len: -(len as i64),
        method: if m.method.is_some() { 0 } else { 1 },
        headers: -(headers.len() as i64),
        query_params: -(query_params.len() as i64),
        created: jiff::Timestamp::UNIX_EPOCH,
        route: ObjectKey::default(),
        rule: 0,
        match_index: 0,
    };
    Ok((
        MatchIr {
            path,
            headers,
            query_params,
            method: m.method.map(method),
        },
        precedence,
    ))
}

fn value_match(t: StringMatchType, value: &str, at: &str) -> Result<ValueMatchIr, Problem> {
    check_text(value, at, "value")?;
    Ok(match t {
        StringMatchType::Exact => ValueMatchIr::Exact(value.to_string()),
        StringMatchType::RegularExpression => {
            check_regex(value, at)?;
            ValueMatchIr::Regex(value.to_string())
        }
    })
}

/// Rejects expressions Envoy's RE2 would reject (or read differently), so a bad regex is a
/// route condition instead of a NACKed configuration ([`crate::re2`]).
fn check_regex(expression: &str, at: &str) -> Result<(), Problem> {
    crate::re2::check(expression).map_err(|reason| {
        Problem::not_accepted(
            Reason::UnsupportedValue,
            format!("{at}: {expression:?}: {reason}"),
        )
    })
}

/// Rejects a header value Envoy would reject: NUL, CR or LF, or longer than 16 KiB.
pub(crate) fn check_header_value(value: &str, at: &str) -> Result<(), Problem> {
    check_text(value, at, "header value")
}

/// Rejects text Envoy's header-value rules refuse (header values, redirect and rewrite
/// hostnames and paths): NUL, CR or LF, or longer than 16 KiB.
pub(crate) fn check_text(value: &str, at: &str, what: &str) -> Result<(), Problem> {
    if value.len() > MAX_HEADER_VALUE {
        return Err(Problem::not_accepted(
            Reason::UnsupportedValue,
            format!(
                "{at}: a {what} of {} bytes is longer than {MAX_HEADER_VALUE}",
                value.len()
            ),
        ));
    }
    if value.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err(Problem::not_accepted(
            Reason::UnsupportedValue,
            format!("{at}: a {what} may not contain NUL, CR or LF"),
        ));
    }
    Ok(())
}

/// The longest header value (and redirect or rewrite text) accepted: Envoy's limit.
const MAX_HEADER_VALUE: usize = 16 * 1024;

/// Parses a Gateway API duration (`1h30m`, `10s`, `500ms`, `0s`).
pub(crate) fn duration(text: &str, at: &str) -> Result<Duration, Problem> {
    let bad = || {
        Problem::not_accepted(
            Reason::UnsupportedValue,
            format!("{at}: {text:?} is not a duration like 10s, 500ms or 1h30m"),
        )
    };
    let mut total: u64 = 0;
    let mut rest = text;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += n * unit;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(Duration::from_millis(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_gateway_api() {
        assert_eq!(duration("10s", "t"), Ok(Duration::from_millis(10_000)));
        assert_eq!(duration("500ms", "t"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("1h30m", "t"), Ok(Duration::from_millis(5_400_000)));
        assert_eq!(duration("0s", "t"), Ok(Duration::from_millis(0)));
        assert!(duration("1.5s", "t").is_err());
        assert!(duration("", "t").is_err());
        assert!(duration("10", "t").is_err());
        assert!(duration("1d", "t").is_err());
    }
}
