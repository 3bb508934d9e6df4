//! The xDS protocol as I/O-free state machines, one per stream: [`SotwStream`] for
//! StreamAggregatedResources and [`DeltaStream`] for DeltaAggregatedResources.
//!
//! A stream is fed requests from the proxy (`on_request`) and snapshots from the cache
//! (`on_snapshot`); each call returns the responses to send and [`Event`]s describing what
//! happened (sent, ACKed, NACKed) for logs, metrics and sync status. Nothing here does I/O or
//! reads a clock, so every protocol rule is unit-tested directly.
//!
//! Rules both variants follow:
//! - **One response in flight per type.** A snapshot arriving while a response awaits its ACK
//!   is held and the latest state is sent once the ACK (or NACK) arrives, so bursts coalesce.
//! - **NACK keeps the last good config.** The client keeps what it had; the rejected version is
//!   not sent again until the snapshot changes.
//! - **Make before break.** A resource is sent only once the resources it depends on (a route's
//!   clusters and their endpoints) are ACKed by the client, and a cluster a route still at the
//!   client sends traffic to is kept until that route is replaced. Changing a route's backends
//!   therefore never sends a request to a cluster the proxy does not have yet.
//! - **Not ready is not empty.** Until the first snapshot is published nothing is sent, so a
//!   proxy reconnecting to a restarting control plane keeps serving what it has.

mod delta;
mod limits;
mod sotw;
mod state;

pub use delta::DeltaStream;
pub use limits::{LimitExceeded, StreamLimits, bounded_text};
pub use sotw::SotwStream;
pub use state::SyncStatus;

use crate::resource::ResourceType;

/// Something that happened on a stream, for logs, metrics and sync status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A response was sent.
    Sent {
        /// The resource type.
        resource_type: ResourceType,
        /// The version sent (SotW `version_info`, or the snapshot version for Delta).
        version: String,
        /// The response nonce.
        nonce: String,
        /// Names of the resources sent (added or updated).
        resources: Vec<String>,
        /// Names of resources removed (Delta).
        removed: Vec<String>,
        /// Encoded size of the resources sent.
        bytes: usize,
    },
    /// The client accepted a response.
    Acked {
        /// The resource type.
        resource_type: ResourceType,
        /// The version accepted.
        version: String,
        /// The nonce of the accepted response.
        nonce: String,
    },
    /// The client rejected a response and keeps its previous config.
    Nacked {
        /// The resource type.
        resource_type: ResourceType,
        /// The version rejected.
        version: String,
        /// The nonce of the rejected response.
        nonce: String,
        /// The client's error message (`error_detail.message`).
        error: String,
        /// Names of the resources that were in the rejected response.
        resources: Vec<String>,
    },
    /// After a NACK, the configuration wanted for the client is again one it accepted, so the
    /// rejection no longer applies (nothing needs to be sent).
    Recovered {
        /// The resource type.
        resource_type: ResourceType,
    },
    /// A request named a type Trellis does not serve; it was ignored.
    UnknownType {
        /// The type URL requested.
        type_url: String,
    },
}

#[cfg(test)]
mod tests;
