//! How the conversation with the API server is going, for logs, metrics and readiness.
//!
//! ```text
//!  watchers ──errors, relists, initial sync──►┐
//!  probe (GET /version) ──reachable or not───►├─► Health ──► /metrics, /readyz (trellis serve)
//!  status writer ──writes, errors, conflicts─►│
//!  leader election ──leader or not───────────►┘
//! ```
//!
//! Every field is atomic or behind a short lock: writers never wait on readers.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared health of the Kubernetes side of the control plane.
#[derive(Debug, Default)]
pub struct Health {
    synced: AtomicBool,
    leader: AtomicBool,
    status_writes: AtomicU64,
    status_write_errors: AtomicU64,
    status_conflicts: AtomicU64,
    leader_transitions: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Watch errors by kind.
    watch_errors: BTreeMap<String, u64>,
    /// Relists (a watch restarted from a fresh list) by kind.
    relists: BTreeMap<String, u64>,
    /// Whether the API server answered the last probe or request; `None` before any.
    connected: Option<bool>,
    /// When the API server last became unreachable (while it is).
    disconnected_since: Option<Instant>,
    /// When trouble was last seen: now while disconnected, else the time it ended.
    last_trouble: Option<Instant>,
    /// The last error seen, for readiness and logs.
    last_error: Option<String>,
}

/// A snapshot of the counters, for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HealthSnapshot {
    /// Every watched kind listed and watching since start.
    pub synced: bool,
    /// The API server answers.
    pub connected: bool,
    /// This replica holds the leader Lease.
    pub leader: bool,
    /// Watch errors by kind.
    pub watch_errors: BTreeMap<String, u64>,
    /// Relists by kind.
    pub relists: BTreeMap<String, u64>,
    /// Status writes that changed an object.
    pub status_writes: u64,
    /// Status writes that failed (conflicts excluded).
    pub status_write_errors: u64,
    /// Status writes refused because the object changed meanwhile (retried).
    pub status_conflicts: u64,
    /// Times this replica became or stopped being the leader.
    pub leader_transitions: u64,
    /// Seconds the API server has been unreachable, if it is.
    pub disconnected_seconds: Option<f64>,
    /// The last error seen.
    pub last_error: Option<String>,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that every watch finished its initial list.
    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    /// Whether every watch finished its initial list.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// Counts a watch error of `kind`.
    pub fn watch_error(&self, kind: &str, error: &str) {
        let mut inner = self.lock();
        *inner.watch_errors.entry(kind.to_string()).or_default() += 1;
        inner.last_error = Some(format!("watch of {kind}: {error}"));
    }

    /// Counts a relist of `kind`.
    pub fn relist(&self, kind: &str) {
        *self.lock().relists.entry(kind.to_string()).or_default() += 1;
    }

    /// Records that the API server answered. Returns how long it had been unreachable, when
    /// this ends an outage.
    pub fn set_connected(&self) -> Option<Duration> {
        let mut inner = self.lock();
        let was = inner.connected;
        inner.connected = Some(true);
        let since = inner.disconnected_since.take();
        if was == Some(false) {
            inner.last_trouble = Some(Instant::now());
        }
        since.map(|s| s.elapsed())
    }

    /// Records that the API server could not be reached. Returns true when this starts an
    /// outage (so the caller logs it once).
    pub fn set_disconnected(&self, error: &str) -> bool {
        let mut inner = self.lock();
        let now = Instant::now();
        inner.last_trouble = Some(now);
        inner.last_error = Some(error.to_string());
        let starts = inner.connected != Some(false);
        inner.connected = Some(false);
        if starts {
            inner.disconnected_since = Some(now);
        }
        starts
    }

    /// Whether the API server answered last time it was asked.
    pub fn connected(&self) -> bool {
        self.lock().connected == Some(true)
    }

    /// How long ago the API server was last unreachable (zero while it is); `None` if it never
    /// was. Judgements based on the absence of updates (a replica that stopped renewing its
    /// Lease) are suspended for a while after an outage.
    pub fn since_trouble(&self) -> Option<Duration> {
        let inner = self.lock();
        if inner.connected == Some(false) {
            return Some(Duration::ZERO);
        }
        inner.last_trouble.map(|t| t.elapsed())
    }

    /// Records whether this replica is the leader; counts transitions.
    pub fn set_leader(&self, leader: bool) {
        if self.leader.swap(leader, Ordering::Relaxed) != leader {
            self.leader_transitions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether this replica is the leader.
    pub fn leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Counts a status write.
    pub fn status_written(&self) {
        self.status_writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed status write.
    pub fn status_write_failed(&self, error: &str) {
        self.status_write_errors.fetch_add(1, Ordering::Relaxed);
        self.lock().last_error = Some(format!("status write: {error}"));
    }

    /// Counts a status write refused by a resourceVersion conflict.
    pub fn status_conflict(&self) {
        self.status_conflicts.fetch_add(1, Ordering::Relaxed);
    }

    /// The last error seen.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// Every counter and flag, for `/metrics`.
    pub fn snapshot(&self) -> HealthSnapshot {
        let inner = self.lock();
        HealthSnapshot {
            synced: self.synced(),
            connected: inner.connected == Some(true),
            leader: self.leader(),
            watch_errors: inner.watch_errors.clone(),
            relists: inner.relists.clone(),
            status_writes: self.status_writes.load(Ordering::Relaxed),
            status_write_errors: self.status_write_errors.load(Ordering::Relaxed),
            status_conflicts: self.status_conflicts.load(Ordering::Relaxed),
            leader_transitions: self.leader_transitions.load(Ordering::Relaxed),
            disconnected_seconds: inner.disconnected_since.map(|s| s.elapsed().as_secs_f64()),
            last_error: inner.last_error.clone(),
        }
    }

    /// Readiness in words: `Err` until the initial sync is done (the replica has nothing to
    /// serve yet); afterwards `Ok` with a note when the API server is unreachable, since the
    /// last good configuration is still served and proxies must be able to reach it.
    pub fn readiness(&self) -> Result<String, String> {
        let snap = self.snapshot();
        if !snap.synced {
            return Err(match snap.last_error {
                Some(e) => format!(
                    "waiting for the initial sync with the Kubernetes API server (last error: {e})"
                ),
                None => "waiting for the initial sync with the Kubernetes API server".to_string(),
            });
        }
        Ok(match snap.disconnected_seconds {
            Some(s) => format!(
                "kubernetes: API server unreachable for {s:.0}s; serving the last good configuration ({})",
                snap.last_error.unwrap_or_default()
            ),
            None => "kubernetes: synced".to_string(),
        })
    }
}

/// Probes the API server (`GET /version`) every second while it is unreachable and every five
/// seconds otherwise, logging once when it becomes unreachable and once when it is back.
pub async fn probe(client: kube::Client, health: std::sync::Arc<Health>) {
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(2), client.apiserver_version()).await;
        match answer {
            Ok(Ok(_)) => {
                if let Some(outage) = health.set_connected() {
                    tracing::info!(
                        outage_seconds = outage.as_secs_f64(),
                        "Kubernetes API server reachable again; resuming updates"
                    );
                }
            }
            Ok(Err(e)) => unreachable(&health, &e.to_string()),
            Err(_) => unreachable(&health, "no answer within 2s"),
        }
        let wait = if health.connected() { 5 } else { 1 };
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

/// What an outage is called in logs: one cause for every way the server can be unreachable
/// (refused, reset, closed, timed out), so it is logged once, not once per symptom.
pub(crate) const UNREACHABLE: &str = "API server unreachable";

/// Whether a client error means the API server could not be reached or is failing (5xx, 429)
/// rather than refusing this request (4xx).
pub(crate) fn is_unreachable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429,
        _ => true,
    }
}

/// Records and logs (once per outage) that the API server cannot be reached.
pub(crate) fn unreachable(health: &Health, error: &str) {
    if health.set_disconnected(error) {
        tracing::warn!(
            error,
            "Kubernetes API server unreachable; serving the last good configuration"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_reported_once_and_its_end_measured() {
        let h = Health::default();
        assert!(h.set_disconnected("refused"));
        assert!(!h.set_disconnected("refused"), "reported once");
        assert_eq!(h.since_trouble(), Some(Duration::ZERO));
        assert!(h.set_connected().is_some());
        assert!(h.set_connected().is_none());
        assert!(h.since_trouble().is_some());
    }

    #[test]
    fn readiness_waits_for_the_initial_sync_and_then_reports_outages_without_failing() {
        let h = Health::default();
        assert!(h.readiness().is_err());
        h.set_synced();
        h.set_connected();
        assert_eq!(h.readiness(), Ok("kubernetes: synced".to_string()));
        h.set_disconnected("connection refused");
        let text = h.readiness().expect("still ready");
        assert!(text.contains("unreachable") && text.contains("last good"));
    }
}
