//! Generated Kubernetes inputs for the translator: a Gateway with HTTP and HTTPS listeners,
//! Services and EndpointSlices, HTTPRoutes using every match and filter, and sometimes
//! policies, with values drawn from pools that mix the ordinary with what a hostile tenant
//! would write (regular expressions Envoy's RE2 refuses, header values with CR or LF, huge
//! weights and counts, names that are not DNS names).
//!
//! The output is a YAML stream (each object written as JSON, which is YAML), so a consumer
//! reads it as the file provider would. The choices come from a [`Source`]: a seeded
//! generator for tests that must be repeatable, or a fuzzer's bytes.

use serde_json::{Value, json};

/// Where choices come from.
pub trait Source {
    /// The next 32 random bits.
    fn next_u32(&mut self) -> u32;
}

/// A repeatable stream of choices from a seed (xorshift64*).
#[derive(Clone, Debug)]
pub struct Seeded(u64);

impl Seeded {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> Seeded {
        Seeded(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
}

impl Source for Seeded {
    fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }
}

/// Choices from a fuzzer's bytes (zeros once they run out).
#[derive(Clone, Debug)]
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// Choices taken from `data`, four bytes at a time.
    pub fn new(data: &'a [u8]) -> Bytes<'a> {
        Bytes { data }
    }
}

impl Source for Bytes<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut word = [0u8; 4];
        let n = self.data.len().min(4);
        word[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        u32::from_le_bytes(word)
    }
}

/// Choice helpers over a [`Source`].
struct Pick<'s, S: Source + ?Sized> {
    source: &'s mut S,
}

impl<S: Source + ?Sized> Pick<'_, S> {
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.source.next_u32() as usize % n
        }
    }

    fn one<'p, T>(&mut self, pool: &'p [T]) -> &'p T {
        &pool[self.below(pool.len())]
    }

    fn chance(&mut self, in_hundred: usize) -> bool {
        self.below(100) < in_hundred
    }

    /// Mostly an ordinary value, sometimes (one in ten) a hostile one.
    fn value(&mut self, ordinary: &[&'static str], hostile: &[&'static str]) -> &'static str {
        let pool = if self.chance(10) { hostile } else { ordinary };
        pool[self.below(pool.len())]
    }
}

/// Paths for Exact and PathPrefix matches.
const PATHS: &[&str] = &["/", "/api", "/api/", "/v1/items", "/admin", "/a/b/c", "/é"];
/// Paths a tenant should not get through.
const BAD_PATHS: &[&str] = &["/%2F", "/x y", "no-slash", "/a\nb", ""];

/// Regular expressions Envoy accepts.
pub const REGEXES: &[&str] = &[
    "/items/[0-9]+",
    "/api/v[0-9]+/users/[a-f0-9-]{36}/orders",
    "(?i)/api/.*",
    "/x{1000}",
    "\\p{Greek}+",
    "(?P<id>[0-9]+)/(?<name>[a-z]+)",
    ".*",
    "^(?:https://a\\.example\\.com|https://b\\.example\\.com)$",
];

/// Regular expressions Envoy refuses or reads differently.
pub const BAD_REGEXES: &[&str] = &[
    "/x{1001}",
    "(?x) /a b",
    "[a-z&&[^aeiou]]+",
    "\\b{start}/a",
    "\\p{Emoji}",
    "/[0-9",
    "(a{100}){11}",
    "/public)|(.*",
    "",
];

/// Header names.
const HEADER_NAMES: &[&str] = &["x-env", "X-Tenant", "x-api-key"];
/// Header names that are not names a route may use.
const BAD_HEADER_NAMES: &[&str] = &["bad name", "x:colon", ":authority", "host", ""];

/// Header values.
const HEADER_VALUES: &[&str] = &["prod", "a b", "100%", "%REQ(x)%", "é", ""];
/// Header values Envoy refuses.
const BAD_HEADER_VALUES: &[&str] = &["a\nb", "a\r\nb", "nul\u{0}"];

/// Hostnames.
const HOSTNAMES: &[&str] = &[
    "a.example.com",
    "*.example.com",
    "example.com",
    "b.example.com",
];
/// Hostnames that are not.
const BAD_HOSTNAMES: &[&str] = &["UPPER.example.com", "-bad.example.com", "1.2.3.4"];

/// CORS origins.
const ORIGINS: &[&str] = &[
    "https://app0.example0.com",
    "https://app1.example1.com",
    "https://*.example.com",
    "http://localhost:8080",
    "*",
    "https://app2.example2.com",
    "https://app3.example3.com",
    "https://app4.example4.com",
];

/// Backend weights.
const WEIGHTS: &[i64] = &[0, 1, 20, 80, 80, 1_000_000];

/// Durations.
const DURATIONS: &[&str] = &["10s", "0s", "1ms", "500ms", "1h30m", "99999h"];
/// Durations that are not.
const BAD_DURATIONS: &[&str] = &["10x", "-1s", "1.5s"];

/// Endpoint addresses (one not an address).
const ADDRESSES: &[&str] = &["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1", "not-an-ip"];

/// The namespace every generated object is in.
pub const NAMESPACE: &str = "gen";

/// A generated input: a YAML stream of Kubernetes objects.
pub fn generate(source: &mut dyn Source) -> String {
    let mut p = Pick { source };
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
               "metadata": {"name": "trellis"},
               "spec": {"controllerName": "trellis.dev/gateway-controller"}}),
    ];
    let mut listeners = vec![json!({"name": "http", "port": 8080, "protocol": "HTTP"})];
    if p.chance(50) {
        let mut l = json!({"name": "http-host", "port": 8080, "protocol": "HTTP"});
        l["hostname"] = json!(p.value(HOSTNAMES, BAD_HOSTNAMES));
        listeners.push(l);
    }
    if p.chance(40) {
        listeners.push(json!({"name": "https", "port": 8443, "protocol": "HTTPS",
            "tls": {"certificateRefs": [{"name": "cert"}]}}));
    }
    objects.push(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": NAMESPACE},
        "spec": {"gatewayClassName": "trellis",
                 "addresses": [{"type": "IPAddress", "value": "127.0.0.10"}],
                 "listeners": listeners}}),
    );
    let services = 1 + p.below(3);
    for s in 0..services {
        objects.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc-{s}"), "namespace": NAMESPACE},
            "spec": {"ports": [{"name": "http", "port": 80}]}}));
        let endpoints: Vec<Value> = (0..1 + p.below(3))
            .map(|_| json!({"addresses": [p.one(ADDRESSES)]}))
            .collect();
        objects.push(
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("svc-{s}-1"), "namespace": NAMESPACE,
                         "labels": {"kubernetes.io/service-name": format!("svc-{s}")}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": endpoints}),
        );
    }
    for r in 0..1 + p.below(4) {
        objects.push(route(&mut p, r, services));
    }
    if p.chance(30) {
        objects.push(authorization(&mut p));
    }
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_json::to_string_pretty(&object).unwrap_or_default());
        out.push('\n');
    }
    out
}

fn string_match<S: Source + ?Sized>(p: &mut Pick<'_, S>, value: &str) -> Value {
    if p.chance(25) {
        json!({"type": "RegularExpression", "value": p.value(REGEXES, BAD_REGEXES)})
    } else {
        json!({"type": "Exact", "value": value})
    }
}

fn route<S: Source + ?Sized>(p: &mut Pick<'_, S>, index: usize, services: usize) -> Value {
    let mut spec = json!({"parentRefs": [{"name": "gw"}]});
    if p.chance(30) {
        spec["parentRefs"][0]["sectionName"] = json!(if p.chance(50) { "http" } else { "https" });
    }
    if p.chance(60) {
        spec["hostnames"] = json!([p.value(HOSTNAMES, BAD_HOSTNAMES)]);
    }
    let rules: Vec<Value> = (0..1 + p.below(3)).map(|_| rule(p, services)).collect();
    spec["rules"] = json!(rules);
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": format!("route-{index}"), "namespace": NAMESPACE},
           "spec": spec})
}

fn rule<S: Source + ?Sized>(p: &mut Pick<'_, S>, services: usize) -> Value {
    let mut rule = json!({});
    let matches: Vec<Value> = (0..p.below(3))
        .map(|_| {
            let path = match p.below(3) {
                0 => json!({"type": "Exact", "value": p.value(PATHS, BAD_PATHS)}),
                1 => json!({"type": "PathPrefix", "value": p.value(PATHS, BAD_PATHS)}),
                _ => json!({"type": "RegularExpression", "value": p.value(REGEXES, BAD_REGEXES)}),
            };
            let mut m = json!({"path": path});
            if p.chance(40) {
                let value = p.value(HEADER_VALUES, BAD_HEADER_VALUES);
                let mut h = string_match(p, value);
                h["name"] = json!(p.value(HEADER_NAMES, BAD_HEADER_NAMES));
                m["headers"] = json!([h]);
            }
            if p.chance(25) {
                let mut q = string_match(p, "1");
                q["name"] = json!(if p.chance(95) { "page" } else { "" });
                m["queryParams"] = json!([q]);
            }
            if p.chance(25) {
                m["method"] = json!(p.one(&["GET", "POST", "DELETE"]));
            }
            m
        })
        .collect();
    if !matches.is_empty() {
        rule["matches"] = json!(matches);
    }
    let mut filters = Vec::new();
    let mut redirected = false;
    for _ in 0..p.below(3) {
        let filter = match p.below(6) {
            0 | 1 => {
                let kind = if p.chance(50) {
                    "RequestHeaderModifier"
                } else {
                    "ResponseHeaderModifier"
                };
                let field = if kind == "RequestHeaderModifier" {
                    "requestHeaderModifier"
                } else {
                    "responseHeaderModifier"
                };
                let name = p.value(HEADER_NAMES, BAD_HEADER_NAMES);
                let value = p.value(HEADER_VALUES, BAD_HEADER_VALUES);
                json!({"type": kind, field: {"set": [{"name": name, "value": value}],
                                            "add": [{"name": "x-added", "value": p.value(HEADER_VALUES, BAD_HEADER_VALUES)}],
                                            "remove": [p.value(HEADER_NAMES, BAD_HEADER_NAMES)]}})
            }
            2 if !redirected => {
                redirected = true;
                let mut r = json!({"statusCode": p.one(&[301, 302, 308])});
                if p.chance(50) {
                    r["hostname"] = json!(p.value(HOSTNAMES, BAD_HOSTNAMES));
                }
                if p.chance(40) {
                    r["path"] = json!({"type": "ReplaceFullPath", "replaceFullPath": p.value(HEADER_VALUES, BAD_HEADER_VALUES)});
                }
                if p.chance(30) {
                    r["port"] = json!(p.one(&[80, 443, 8443]));
                }
                json!({"type": "RequestRedirect", "requestRedirect": r})
            }
            3 => json!({"type": "URLRewrite", "urlRewrite": {
                "hostname": p.value(HOSTNAMES, BAD_HOSTNAMES),
                "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": p.value(PATHS, BAD_PATHS)}}}),
            4 => json!({"type": "RequestMirror", "requestMirror": {
                "backendRef": {"name": format!("svc-{}", p.below(services)), "port": 80},
                "percent": p.one(&[0, 50, 100, 150])}}),
            _ => {
                let origins: Vec<&str> = (0..p.below(9)).map(|_| *p.one(ORIGINS)).collect();
                json!({"type": "CORS", "cors": {"allowOrigins": origins,
                    "allowMethods": ["GET", "POST"], "allowHeaders": ["x-env"],
                    "maxAge": p.one(&[0, 600, 86400])}})
            }
        };
        filters.push(filter);
    }
    if !filters.is_empty() {
        rule["filters"] = json!(filters);
    }
    let backends: Vec<Value> = (0..p.below(4))
        .map(|_| {
            json!({"name": format!("svc-{}", p.below(services + 1)), "port": 80,
                   "weight": if p.chance(5) { 2_000_000_000 } else { *p.one(WEIGHTS) }})
        })
        .collect();
    if !backends.is_empty() {
        rule["backendRefs"] = json!(backends);
    }
    if p.chance(20) {
        rule["timeouts"] = json!({"request": p.value(DURATIONS, BAD_DURATIONS)});
    }
    if p.chance(15) {
        rule["retry"] = json!({"codes": [500, 503], "attempts": p.below(4), "backoff": p.value(DURATIONS, BAD_DURATIONS)});
    }
    rule
}

fn authorization<S: Source + ?Sized>(p: &mut Pick<'_, S>) -> Value {
    let rules: Vec<Value> = (0..1 + p.below(3))
        .map(|i| {
            let path = if p.chance(30) {
                json!({"type": "RegularExpression", "value": p.value(REGEXES, BAD_REGEXES)})
            } else {
                json!({"type": "Prefix", "value": p.value(PATHS, BAD_PATHS)})
            };
            json!({"name": format!("rule-{i}"), "action": p.one(&["Allow", "Deny"]), "paths": [path]})
        })
        .collect();
    json!({"apiVersion": "policy.trellis.dev/v1alpha1", "kind": "AuthorizationPolicy",
           "metadata": {"name": "authz", "namespace": NAMESPACE},
           "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}],
                    "defaultAction": p.one(&["Allow", "Deny"]),
                    "rules": rules}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_gives_the_same_input_and_seeds_differ() {
        let a = generate(&mut Seeded::new(7));
        assert_eq!(a, generate(&mut Seeded::new(7)));
        assert_ne!(a, generate(&mut Seeded::new(8)));
        assert!(a.contains("\"kind\": \"HTTPRoute\""));
    }

    #[test]
    fn any_bytes_give_an_input() {
        for data in [&[][..], &[0xff; 3][..], &[1, 2, 3, 4, 5, 6, 7, 8, 9][..]] {
            assert!(generate(&mut Bytes::new(data)).contains("\"kind\": \"Gateway\""));
        }
    }
}
