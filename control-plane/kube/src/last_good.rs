//! The last valid spec of every policy, kept in the ConfigMap `trellis-last-good` of the
//! control plane's namespace, so that a restarted or new replica keeps applying what the
//! others apply while a policy's current spec is invalid (an invalid deny rule never fails
//! open because a replica restarted).
//!
//! ```text
//!  control loop ──LastGood JSON──► writer (leader only; server-side apply when it changed)
//!                                     └──► ConfigMap trellis-last-good { policies.json }
//!  start of any replica ──get──► the same JSON ──► the first translation's LastGood
//! ```
//!
//! The specs read back are checked again like any spec before they are used.

use crate::health::Health;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The ConfigMap's name.
pub const CONFIG_MAP: &str = "trellis-last-good";
/// The key holding the specs.
pub const KEY: &str = "policies.json";
/// The most bytes written (a ConfigMap holds at most 1 MiB).
pub const MAX_BYTES: usize = 900 * 1024;
/// The field manager of the writes.
const MANAGER: &str = "trellis-last-good";

/// Reads the kept JSON, if there is any.
pub async fn read(client: &Client, namespace: &str) -> Result<Option<String>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .get_opt(CONFIG_MAP)
        .await?
        .and_then(|cm| cm.data)
        .and_then(|mut data| data.remove(KEY)))
}

/// Writes what `content` carries whenever it changes while `leader` is true (retrying with
/// backoff after a failure), until `content`'s sender is gone.
pub fn spawn_writer(
    client: Client,
    namespace: String,
    mut content: watch::Receiver<Option<Arc<String>>>,
    mut leader: watch::Receiver<bool>,
    health: Arc<Health>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
        let mut written: Option<Arc<String>> = None;
        let mut backoff = Duration::from_secs(1);
        loop {
            let due = content.borrow_and_update().clone();
            let leads = *leader.borrow_and_update();
            if leads && let Some(text) = due.filter(|t| written.as_ref() != Some(t)) {
                if text.len() > MAX_BYTES {
                    tracing::warn!(
                        bytes = text.len(),
                        "the last valid policy specs are too large to keep in a ConfigMap"
                    );
                    written = Some(text);
                } else {
                    match write(&api, &text).await {
                        Ok(()) => {
                            written = Some(text);
                            backoff = Duration::from_secs(1);
                        }
                        Err(e) => {
                            health.status_write_failed(&format!("ConfigMap {CONFIG_MAP}: {e}"));
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                            continue;
                        }
                    }
                }
            }
            if !leads {
                // A new leader writes what it holds.
                written = None;
            }
            tokio::select! {
                changed = content.changed() => if changed.is_err() { return; },
                changed = leader.changed() => if changed.is_err() { return; },
            }
        }
    })
}

async fn write(api: &Api<ConfigMap>, text: &str) -> Result<(), kube::Error> {
    let object = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIG_MAP,
            "labels": {"app.kubernetes.io/name": "trellis"},
        },
        "data": {KEY: text},
    });
    api.patch(
        CONFIG_MAP,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await?;
    Ok(())
}
