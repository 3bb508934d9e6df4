//! `trellis-bench`: the control plane's scale benchmarks. Each prints its figures next to its
//! target; none is a pass/fail test. See `docs/benchmarks.md`.
//!
//! ```text
//! cargo run --release -p trellis-e2e --bin trellis-bench -- route-scale
//! cargo run --release -p trellis-e2e --bin trellis-bench -- fanout
//! cargo run --release -p trellis-e2e --bin trellis-bench -- memory
//! cargo run --release -p trellis-e2e --bin trellis-bench -- sidecar-latency
//! cargo run --release -p trellis-e2e --bin trellis-bench -- sidecar-memory
//! cargo run --release -p trellis-e2e --bin trellis-bench -- mesh-fanout
//! cargo run --release -p trellis-bench --bin trellis-bench -- telemetry
//! ```

mod fanout;
mod memory;
mod mesh;
mod procfs;
mod route_scale;
mod scenario;
mod telemetry;

use clap::{Parser, Subcommand};

/// Trellis scale benchmarks.
#[derive(Debug, Parser)]
#[command(name = "trellis-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N HTTPRoutes written at once: time until all answer 200 through a real Envoy.
    RouteScale(route_scale::Args),
    /// Thousands of simulated proxies; one EndpointSlice change: convergence p50/p99, bytes
    /// per push, control plane CPU and memory per proxy.
    Fanout(fanout::Args),
    /// Control plane RSS at a small, a large and the small configuration again.
    Memory(memory::Args),
    /// Latency a pair of sidecars adds: pods as network namespaces (root), direct and through
    /// both sidecars, p50/p99 side by side.
    SidecarLatency(mesh::LatencyArgs),
    /// One sidecar's RSS with 10, 100 and 1000 Services in the mesh (root).
    SidecarMemory(mesh::MemoryArgs),
    /// Simulated sidecars of many classes; one EndpointSlice change: convergence p50/p99 and
    /// control-plane memory per sidecar.
    MeshFanout(mesh::FanoutArgs),
    /// Thousands of simulated proxies pushing stats deltas (and spans): the receiver's,
    /// aggregator's and trace store's memory and CPU.
    Telemetry(telemetry::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::RouteScale(args) => route_scale::run(args),
        Command::Fanout(args) => fanout::run(args),
        Command::Memory(args) => memory::run(args),
        Command::SidecarLatency(args) => mesh::latency(args),
        Command::SidecarMemory(args) => mesh::memory(args),
        Command::MeshFanout(args) => mesh::fanout(args),
        Command::Telemetry(args) => telemetry::run(args),
    }
}
