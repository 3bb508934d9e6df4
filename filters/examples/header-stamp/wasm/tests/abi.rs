//! The built header-stamp module through the proxy-wasm ABI, on the Trellis test host: the
//! template for testing a filter the way Envoy runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use trellis_wasm_host::{Action, Module, TestHost, build_module};

fn module() -> Module {
    Module::load(build_module("header-stamp-wasm").unwrap()).unwrap()
}

#[test]
fn responses_are_stamped_and_requests_counted() {
    let host = TestHost::new();
    let mut vm = host
        .start_configured(
            &module(),
            r#"{"header": "x-served-by", "value": "trellis"}"#,
        )
        .unwrap();
    for _ in 0..2 {
        let mut stream = vm.http_stream().unwrap();
        let action = stream
            .on_request_headers(&[(":method", "GET"), (":path", "/")], true)
            .unwrap();
        assert_eq!(action, Action::Continue);
        let action = stream
            .on_response_headers(
                &[(":status", "200"), ("x-served-by", "someone-else")],
                false,
            )
            .unwrap();
        assert_eq!(action, Action::Continue);
        assert_eq!(stream.response_header("x-served-by"), Some("trellis"));
        assert_eq!(stream.response_header(":status"), Some("200"));
        assert_eq!(
            stream
                .response_headers()
                .iter()
                .filter(|(n, _)| n == "x-served-by")
                .count(),
            1,
            "replaced, not added"
        );
        stream.finish().unwrap();
    }
    assert_eq!(host.metric("trellis_header_stamp_requests_total"), Some(2));
}

#[test]
fn a_bad_configuration_is_refused() {
    let host = TestHost::new();
    let mut vm = host.start_vm(&module()).unwrap();
    assert!(!vm.configure(r#"{"header": "x a", "value": "v"}"#).unwrap());
    assert!(host.logged("header-stamp: invalid header-stamp configuration: header: `x a`"));
}
