//! Each host call of the test host, exercised through the proxy-wasm Rust SDK by the probe
//! fixture module (`filters/testhost/probe`): header maps, properties, metrics, time, ticks,
//! continue, bodies, VM configuration, configuration refusal, and a panicking module.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, UNIX_EPOCH};

use trellis_wasm_host::{Action, Error, LogLevel, Module, TestHost, Vm, build_module};

fn probe() -> Module {
    Module::load(build_module("trellis-wasm-host-probe").unwrap()).unwrap()
}

fn configured(host: &TestHost) -> Vm {
    host.start_configured(&probe(), "{}").unwrap()
}

/// Runs the probe named `op` with extra request headers; returns the action and the request
/// headers as the module left them.
fn run(vm: &mut Vm, op: &str, extra: &[(&str, &str)]) -> (Action, Vec<(String, String)>) {
    let mut headers = vec![(":method", "GET"), (":path", "/"), ("x-probe", op)];
    headers.extend_from_slice(extra);
    let mut stream = vm.http_stream().unwrap();
    stream.set_property(&["source", "address"], "10.1.2.3:4567");
    let action = stream.on_request_headers(&headers, true).unwrap();
    let headers = stream.request_headers().to_vec();
    stream.finish().unwrap();
    (action, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn header_pairs_are_read_in_the_sdk_s_encoding() {
    let host = TestHost::new();
    let mut vm = configured(&host);
    let (action, headers) = run(&mut vm, "pairs", &[("X-Extra", "a")]);
    assert_eq!(action, Action::Continue);
    assert_eq!(header(&headers, "x-probe-count"), ["4"]);
    assert_eq!(header(&headers, "x-extra"), ["a"], "names are lower-cased");
}

#[test]
fn headers_can_be_added_removed_and_replaced_wholesale() {
    let host = TestHost::new();
    let mut vm = configured(&host);
    let (_, headers) = run(&mut vm, "add", &[]);
    assert_eq!(header(&headers, "x-added"), ["1", "1"]);
    let (_, headers) = run(
        &mut vm,
        "remove",
        &[("x-remove-me", "1"), ("X-Remove-Me", "2")],
    );
    assert!(header(&headers, "x-remove-me").is_empty(), "{headers:?}");
    assert_eq!(header(&headers, "x-probe"), ["remove"]);
    let (_, headers) = run(&mut vm, "set-pairs", &[]);
    assert_eq!(
        headers,
        [
            (":path".to_string(), "/rewritten".to_string()),
            ("x-only".to_string(), "1".to_string())
        ]
    );
}

#[test]
fn a_stream_resumed_by_the_module_is_recorded() {
    let host = TestHost::new();
    let mut vm = configured(&host);
    let mut stream = vm.http_stream().unwrap();
    let action = stream
        .on_request_headers(&[(":path", "/"), ("x-probe", "continue")], true)
        .unwrap();
    assert_eq!(action, Action::Pause);
    assert_eq!(stream.continued(), [0], "the request stream");
}

#[test]
fn gauges_and_counters_are_recorded_and_read_back() {
    let host = TestHost::new();
    let mut vm = configured(&host);
    let (_, headers) = run(&mut vm, "metrics", &[]);
    assert_eq!(header(&headers, "x-gauge"), ["42"]);
    assert_eq!(header(&headers, "x-counter"), ["3"]);
    // A second VM (another worker) adds to the same counter: one stat per name.
    let mut other = configured(&host);
    let (_, headers) = run(&mut other, "metrics", &[]);
    assert_eq!(header(&headers, "x-counter"), ["6"]);
    assert_eq!(host.metric("probe_counter"), Some(6));
    assert_eq!(host.metric("probe_gauge"), Some(42));
}

#[test]
fn properties_come_from_the_stream_and_can_be_set_by_the_module() {
    let host = TestHost::new();
    let mut vm = configured(&host);
    let (_, headers) = run(&mut vm, "property", &[]);
    assert_eq!(header(&headers, "x-note"), ["hello"]);
    assert_eq!(header(&headers, "x-source"), ["10.1.2.3:4567"]);
}

#[test]
fn the_module_sees_the_host_s_clock() {
    let host = TestHost::new();
    host.set_time(UNIX_EPOCH + Duration::from_secs(1_000_000));
    host.advance(Duration::from_millis(1500));
    let mut vm = configured(&host);
    let (_, headers) = run(&mut vm, "time", &[]);
    assert_eq!(header(&headers, "x-time"), ["1000001500000000"]);
    assert_eq!(host.now_nanos(), 1_000_001_500_000_000);
}

#[test]
fn the_tick_period_is_recorded_and_ticks_reach_the_root_context() {
    let host = TestHost::new();
    let mut vm = configured(&host);
    assert_eq!(vm.tick_period(), Some(Duration::from_millis(250)));
    vm.tick().unwrap();
    vm.tick().unwrap();
    assert_eq!(host.metric("probe_ticks"), Some(2));
}

#[test]
fn request_bodies_are_read_and_replaced() {
    let host = TestHost::new();
    let mut vm = configured(&host);
    let mut stream = vm.http_stream().unwrap();
    stream
        .on_request_headers(&[(":method", "POST"), (":path", "/")], false)
        .unwrap();
    assert_eq!(
        stream.on_request_body(b"hello", false).unwrap(),
        Action::Pause,
        "not the end of the body yet"
    );
    assert_eq!(stream.request_body(), b"hello");
    assert_eq!(
        stream.on_request_body(b"hello world", true).unwrap(),
        Action::Continue
    );
    assert_eq!(stream.request_body(), b"HELLO WORLD");
    stream.finish().unwrap();
}

#[test]
fn the_vm_configuration_reaches_on_vm_start() {
    let host = TestHost::new();
    let vm = host.start_vm_with(&probe(), b"vm-settings").unwrap();
    drop(vm);
    assert!(host.logged("probe vm config: vm-settings"));
}

#[test]
fn a_refused_configuration_is_reported() {
    let host = TestHost::new();
    let mut vm = host.start_vm(&probe()).unwrap();
    assert!(!vm.configure("refuse").unwrap());
    assert!(vm.configure("{}").unwrap());
    assert!(matches!(
        host.start_configured(&probe(), "refuse"),
        Err(Error::Instantiate(_))
    ));
}

#[test]
fn a_panicking_module_traps_logs_its_message_and_stays_down() {
    let host = TestHost::new();
    let mut vm = configured(&host);
    let mut stream = vm.http_stream().unwrap();
    let error = stream
        .on_request_headers(&[(":path", "/"), ("x-probe", "panic")], true)
        .unwrap_err();
    assert!(
        matches!(&error, Error::Trap { call, .. } if call == "proxy_on_request_headers"),
        "{error}"
    );
    drop(stream);
    let panic_line = host
        .logs()
        .into_iter()
        .find(|l| l.message.contains("probe panic"))
        .expect("the panic message reaches the log through WASI fd_write");
    assert_eq!(panic_line.level, LogLevel::Error);
    assert!(matches!(vm.http_stream(), Err(Error::VmFailed(_))));
}
