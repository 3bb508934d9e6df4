//! The policy filter: its configuration parser on any JSON-ish text, and, for configurations it
//! accepts, the request path on requests built from the rest of the bytes. No panic (a panic is
//! a trap in Envoy); a decision is always reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_policy::PolicyFilter;
use trellis_policy::mock::MockHost;

/// A configuration the fuzzer mutates around: policies and limits of every kind.
const SEED: &str = r#"{"policies":[{"name":"p","default_action":"deny","mode":"enforce","rules":[{"name":"r","action":"allow","paths":[{"prefix":"/a"},{"regex":"/i/[0-9]+"}],"methods":["GET"],"headers":[{"name":"x-t","values":["a"]}],"source_ips":["10.0.0.0/8"],"principals":["spiffe://td/*"]}]}],"rate_limits":[{"name":"l","key":"client_ip","requests":2,"per":"second"}]}"#;

fuzz_target!(|data: &[u8]| {
    // The first part is the configuration (or, when it starts with 0xff, the seed), the rest
    // the request: method, path, a header value, the source address.
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (config, rest) = data.split_at(split);
    let config = if config.first() == Some(&0xff) {
        SEED.as_bytes()
    } else {
        config
    };
    let Ok(filter) = PolicyFilter::from_json(config) else {
        return;
    };
    let rest = rest.get(1..).unwrap_or_default();
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split('\n');
    let method = parts.next().unwrap_or("GET");
    let path = parts.next().unwrap_or("/");
    let header = parts.next().unwrap_or("");
    let source = parts.next().unwrap_or("10.0.0.1:1");
    let host = MockHost::get(path)
        .with_header(":method", method)
        .with_header("x-t", header)
        .with_source(source)
        .with_principal(header);
    for _ in 0..3 {
        let _ = filter.on_request_headers(&host);
    }
});
