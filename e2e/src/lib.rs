//! End-to-end testing with real processes: Trellis, a real Envoy and echo backends on loopback.
//!
//! The library holds what the tests (`e2e/tests/`) and the binaries share: the process
//! [`harness`] (ephemeral ports, start and stop), the [`echo`] backend, a simulated xDS client
//! ([`xds_client`]) for protocol and scale tests, a request [`load`] generator, and the Gateway
//! API [`conformance`] runner. The binaries: `trellis-echo`, `trellis-quickstart` (`./dev up`),
//! `conformance`, `trellis-bench` and `policy-bench` (see `docs/benchmarks.md`, `docs/policy.md`).

pub mod conformance;
pub mod echo;
pub mod harness;
pub mod load;
pub mod scenario;
pub mod xds_client;
