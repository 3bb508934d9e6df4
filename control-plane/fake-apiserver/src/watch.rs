//! WATCH: one task per open watch, reading the store's history after a cursor and writing
//! newline-delimited JSON events into the response body.
//!
//! ```text
//!  GET ...?watch=true&resourceVersion=X
//!        │
//!        ▼
//!  task: cursor = X ──► store.changes_after(cursor) ──► filter (kind, namespace, selectors)
//!          ▲                 │ Err(410)                     │
//!          │                 ▼                              ▼
//!          │     {"type":"ERROR","object":Status 410}   {"type":"ADDED|MODIFIED|DELETED",...}\n
//!          │                 then end                       │
//!          └── wait: store changed │ bookmark tick │ drop-watches fault │ timeoutSeconds │ client gone
//! ```
//!
//! `resourceVersion` absent or `"0"` starts "from now" with a synthetic ADDED per existing
//! object, as the real server does; `sendInitialEvents=true` does the same and then sends the
//! BOOKMARK annotated `k8s.io/initial-events-end`. With `allowWatchBookmarks=true`, a BOOKMARK
//! with the cursor's resourceVersion (and the kind's `apiVersion` and `kind`) is sent every
//! bookmark interval. Selector transitions are reported as the real server does: an object that
//! starts matching is ADDED, one that stops matching is DELETED.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::kinds::ResourceKind;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Change, ChangeType, Store, present};

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchStart {
    /// `resourceVersion` absent or `"0"`: synthetic ADDED events for what exists, then changes.
    Now,
    /// `resourceVersion=X`: every change after X (410 if X is older than the history).
    After(u64),
    /// `sendInitialEvents=true`: like `Now`, then the initial-events-end bookmark.
    InitialEvents,
}

/// What to project objects to before sending them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Projection {
    /// The whole object.
    Full,
    /// `PartialObjectMetadata` (requested by kube's `metadata_watcher`).
    Metadata,
}

impl Projection {
    /// Projects one object.
    pub(crate) fn apply(self, object: Value) -> Value {
        match self {
            Self::Full => object,
            Self::Metadata => json!({
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadata",
                "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
            }),
        }
    }
}

/// A parsed watch request.
#[derive(Debug, Clone)]
pub(crate) struct WatchRequest {
    pub kind: ResourceKind,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub start: WatchStart,
    pub bookmarks: bool,
    pub timeout: Duration,
    pub projection: Projection,
}

/// What a watch needs from the server besides the store.
#[derive(Debug, Clone)]
pub(crate) struct WatchHooks {
    /// Bumped by the drop-watches fault: every open watch ends.
    pub drop: watch::Receiver<u64>,
    /// How often bookmarks are sent.
    pub bookmark_interval: Duration,
    /// Count of open watches.
    pub open: Arc<AtomicUsize>,
}

/// Counts an open watch for as long as it lives.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Starts the watch task; the returned stream is the response body.
pub(crate) fn watch_stream(
    store: Arc<Store>,
    hooks: WatchHooks,
    request: WatchRequest,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let guard = OpenGuard::new(hooks.open.clone());
    tokio::spawn(async move {
        let _guard = guard;
        run(store, hooks, request, tx).await;
    });
    ReceiverStream::new(rx)
}

async fn run(
    store: Arc<Store>,
    mut hooks: WatchHooks,
    request: WatchRequest,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let send = |line: Value| {
        let tx = tx.clone();
        async move {
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            tx.send(Ok(Bytes::from(bytes))).await.is_ok()
        }
    };
    // `hooks.drop` was subscribed when the request was routed: a drop since then still ends
    // this watch (no borrow_and_update here, which would swallow it).
    let mut changes = store.subscribe();
    changes.borrow_and_update();
    let deadline = tokio::time::Instant::now() + request.timeout;
    let mut cursor = match request.start {
        WatchStart::After(rv) => rv,
        WatchStart::Now | WatchStart::InitialEvents => {
            let (objects, rv) = store.snapshot(&request.kind, request.namespace.as_deref());
            for object in objects.into_iter().filter(|o| matches(&request, o)) {
                let event = json!({ "type": "ADDED", "object": request.projection.apply(object) });
                if !send(event).await {
                    return;
                }
            }
            if request.start == WatchStart::InitialEvents
                && !send(bookmark(&request.kind, rv, true)).await
            {
                return;
            }
            rv
        }
    };
    let period = hooks.bookmark_interval.max(Duration::from_millis(10));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        changes.borrow_and_update();
        match store.changes_after(cursor) {
            Err(expired) => {
                let _ = send(json!({ "type": "ERROR", "object": expired.status_json() })).await;
                return;
            }
            Ok((batch, next)) => {
                for change in batch {
                    if let Some(event) = event_for(&request, &change)
                        && !send(event).await
                    {
                        return;
                    }
                }
                cursor = next;
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = ticks.tick() => {
                if request.bookmarks && !send(bookmark(&request.kind, cursor, false)).await {
                    return;
                }
            }
            _ = hooks.drop.changed() => return,
            () = tokio::time::sleep_until(deadline) => return,
            () = tx.closed() => return,
        }
    }
}

fn matches(request: &WatchRequest, object: &Value) -> bool {
    request.labels.matches(object) && request.fields.matches(object)
}

/// The event a change produces for this watch, if any.
fn event_for(request: &WatchRequest, change: &Change) -> Option<Value> {
    if change.group_resource != request.kind.group_resource() {
        return None;
    }
    if let Some(ns) = &request.namespace
        && &change.namespace != ns
    {
        return None;
    }
    let now = matches(request, &change.object);
    let before = change
        .previous
        .as_ref()
        .is_some_and(|p| matches(request, p));
    let (kind, object) = match change.change {
        ChangeType::Added if now => ("ADDED", change.object.clone()),
        ChangeType::Deleted if now => ("DELETED", change.object.clone()),
        ChangeType::Modified => match (before, now) {
            (true, true) => ("MODIFIED", change.object.clone()),
            (false, true) => ("ADDED", change.object.clone()),
            (true, false) => {
                // The object left the selection: DELETED with its previous state at this rv.
                let mut previous = change.previous.clone()?;
                previous["metadata"]["resourceVersion"] = Value::String(change.rv.to_string());
                ("DELETED", previous)
            }
            (false, false) => return None,
        },
        _ => return None,
    };
    let object = request.projection.apply(present(&request.kind, object));
    Some(json!({ "type": kind, "object": object }))
}

/// A BOOKMARK event carrying `rv`.
fn bookmark(kind: &ResourceKind, rv: u64, initial_events_end: bool) -> Value {
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    json!({
        "type": "BOOKMARK",
        "object": { "kind": kind.kind, "apiVersion": kind.api_version(), "metadata": metadata },
    })
}
