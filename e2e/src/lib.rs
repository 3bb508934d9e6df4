//! End-to-end tests with real processes: the `trellis` binary, a real Envoy and echo backends on
//! loopback (`tests/`). What they share lives in `trellis-harness`; the echo backend, the
//! conformance runner, the benchmarks and the quickstart are crates of their own beside this
//! one (`e2e/echo`, `e2e/conformance`, `e2e/bench`, `e2e/quickstart`).
