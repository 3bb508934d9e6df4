//! xDS for Trellis: versioned per-proxy snapshots and the ADS server, SotW and Delta.
//!
//! ```text
//!  SnapshotWriter ──publish──► SnapshotCache ──► AdsServer (tonic) ──► one task per stream
//!                                                      │                    │
//!                                                      │        SotwStream / DeltaStream
//!                                                      │        (I/O-free protocol logic)
//!                                                      └──────► SyncRegistry (ACK/NACK state)
//! ```
//!
//! Nothing here knows about the Gateway API: resources arrive encoded, named and versioned, with
//! the dependencies that order their delivery.

pub mod csds;
pub mod limits;
pub mod protocol;
pub mod registry;
pub mod resource;
pub mod server;
pub mod snapshot;

pub use csds::CsdsServer;
pub use limits::LimitHits;
pub use protocol::{DeltaStream, Event, LimitExceeded, SotwStream, StreamLimits, SyncStatus};
pub use registry::{
    KeyState, NackInfo, Protocol, ProxyCertificate, ProxySync, SyncRegistry, TypeSync, TypeTotals,
};
pub use resource::{Dependency, Resource, ResourceType, content_hash};
pub use server::{AdsServer, AdsService, NodeResolver, PeerInfo, ServerLimits, StreamAuthorizer};
pub use snapshot::{
    Snapshot, SnapshotCache, SnapshotWriter, Snapshots, Spare, TypeResources, snapshot_cache,
};
