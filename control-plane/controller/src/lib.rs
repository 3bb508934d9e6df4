//! What the control loop decides between translation and the outside world, as plain functions
//! and types with unit tests; `trellis serve` only wires them to sources, the xDS server, the
//! admin endpoint and Kubernetes.
//!
//! ```text
//!  inputs ──AddressPool::assign──► Options.assigned_addresses ──► translate()
//!                                                                    │ Translation.status
//!  xDS registry (KeyState per proxy) ──programmed::apply_proxy_sync──►│ Programmed per Gateway
//!                                                                    ▼
//!                                       StatusTracker::report ──► StatusReport ─┬─► GET /status
//!                                       (transition times kept                   ├─► StatusWriter
//!                                        per condition list)                     └─► Kubernetes
//!  Envoy node ──node::resolve_node──► snapshot key        StateDir: what survives a restart
//! ```

pub mod address_pool;
pub mod node;
pub mod programmed;
pub mod report;
pub mod state_dir;
pub mod status_files;

pub use address_pool::AddressPool;
pub use node::resolve_node;
pub use programmed::{apply_proxy_sync, with_peers};
pub use report::{
    SidecarReport, StatusMetadata, StatusObject, StatusReport, StatusTracker, render_table,
};
pub use state_dir::StateDir;
pub use status_files::StatusWriter;
