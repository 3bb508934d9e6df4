//! The Kubernetes provider: Trellis inside a cluster.
//!
//! ```text
//!                 ┌──────────────── API server ─────────────────┐
//!   list/watch    │ GatewayClass Gateway HTTPRoute ReferenceGrant│   PATCH .../status
//!   ┌─────────────┤ Service EndpointSlice Secret Namespace       ├◄───────────────┐
//!   ▼             │ Lease (election)  Leases (replicas)          │                │
//!  provider       └──────────────────────────────────────────────┘                │
//!   │ Load (the file provider's type) ──► control loop ──► translate ──► xDS      │
//!   │ Observed (status, resourceVersion)          │ DesiredStatus                 │
//!   └──────────────────────────────────────────► status writer ──(leader only)────┘
//!                                                   ▲ leader::Election   ▲ replicas (proxy sync
//!                                                   │                    │  of the other replicas)
//! ```
//!
//! - [`provider`] watches the kinds in [`kinds::WATCHED`] and publishes [`trellis_sources::Load`]s,
//!   the same stream the file provider produces: one pipeline, two sources.
//! - [`status`] writes status back through the `/status` subresource, only when it differs from
//!   what the API holds, and only on the leader.
//! - [`leader`] elects the replica that writes status with a `coordination.k8s.io/v1` Lease;
//!   [`replicas`] shares each replica's proxy sync state so the leader's `Programmed` condition
//!   counts every proxy.
//! - [`last_good`] keeps the last valid spec of every policy in a ConfigMap, so that a
//!   restarted replica applies what the others apply.
//! - [`health`] counts what goes wrong, for logs, metrics and readiness.
//!
//! Nothing here panics on bad input: an object that does not read becomes a diagnostic and its
//! last good version stays in force; an unreachable API server leaves the last good
//! configuration served.

pub mod convert;
pub mod health;
pub mod identity;
pub mod kinds;
pub mod last_good;
pub mod leader;
pub mod provider;
pub mod replicas;
pub mod status;

pub use convert::ObservedObject;
pub use health::{Health, HealthSnapshot};
pub use provider::{Observed, Provider, ProviderConfig, watch};
pub use status::{DesiredStatus, StatusWriterConfig};

use std::path::{Path, PathBuf};

/// Why a client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig given could not be read or used.
    #[error("cannot use the kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig (`KUBECONFIG`, `~/.kube/config`) nor the in-cluster service
    /// account could be used.
    #[error("no Kubernetes configuration: {0}")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A client from `kubeconfig`, or else the inferred configuration: `KUBECONFIG` or
/// `~/.kube/config`, then the in-cluster service account.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let wrap = |source| Error::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(wrap)?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(wrap)?
        }
        None => kube::Config::infer().await.map_err(Error::Infer)?,
    };
    kube::Client::try_from(config).map_err(Error::Client)
}
