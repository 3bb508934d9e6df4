//! Fault injection: the handle a test holds to make the server misbehave the ways a real API
//! server does.
//!
//! ```text
//!  Faults ──drop_watches()──► every open watch stream ends cleanly (clients resume)
//!         ──compact()───────► history forgotten: watches/continues from older rvs get 410
//!         ──refuse_for(d)───► requests answered 503 (or connections closed) for d; open
//!                             watches are dropped, as an outage would
//!         ──set_latency(d)──► every request waits d before it is handled
//! ```
//!
//! The `/fake/...` admin endpoints are never refused or delayed, so a test can always undo a
//! fault over HTTP.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::store::Store;

/// How refused requests are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 503 ServiceUnavailable with a `Status` body and `Retry-After: 1`.
    ServiceUnavailable,
    /// The connection is closed without an answer (in-process: the service returns an error;
    /// over TCP: new connections are closed on accept and requests on open ones are dropped).
    CloseConnection,
}

/// The fault state shared by the server and every `Faults` handle.
#[derive(Debug)]
pub(crate) struct FaultState {
    drop_watches: watch::Sender<u64>,
    refusal: Mutex<Option<(Refusal, Option<Instant>)>>,
    latency: Mutex<Duration>,
    pub(crate) open_watches: Arc<AtomicUsize>,
}

impl FaultState {
    pub(crate) fn new() -> Self {
        Self {
            drop_watches: watch::channel(0).0,
            refusal: Mutex::new(None),
            latency: Mutex::new(Duration::ZERO),
            open_watches: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A receiver that changes whenever watches are to be dropped.
    pub(crate) fn drop_signal(&self) -> watch::Receiver<u64> {
        self.drop_watches.subscribe()
    }

    /// The refusal in force now, if any (an expired one is cleared).
    pub(crate) fn refusal(&self) -> Option<Refusal> {
        let mut refusal = self.refusal.lock().unwrap_or_else(PoisonError::into_inner);
        match *refusal {
            Some((_, Some(until))) if Instant::now() >= until => {
                *refusal = None;
                None
            }
            Some((how, _)) => Some(how),
            None => None,
        }
    }

    /// The latency added to every request.
    pub(crate) fn latency(&self) -> Duration {
        *self.latency.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A handle to inject faults; cheap to clone.
#[derive(Debug, Clone)]
pub struct Faults {
    pub(crate) state: Arc<FaultState>,
    pub(crate) store: Arc<Store>,
}

impl Faults {
    /// Ends every open watch stream now (cleanly: the body ends). Clients resume from the last
    /// resourceVersion they saw.
    pub fn drop_watches(&self) {
        self.state.drop_watches.send_modify(|n| *n += 1);
    }

    /// Forgets the change history: a watch or continue token from any resourceVersion older
    /// than the current one gets 410 Expired (inside the watch stream). A client that is
    /// caught up can still resume from the current resourceVersion.
    pub fn compact(&self) {
        self.store.compact();
    }

    /// Refuses every request (503) for `duration`, dropping open watches.
    pub fn refuse_for(&self, duration: Duration) {
        self.set_refusal(Refusal::ServiceUnavailable, Some(Instant::now() + duration));
    }

    /// Refuses every request in the given way for `duration`, dropping open watches.
    pub fn refuse_for_with(&self, duration: Duration, how: Refusal) {
        self.set_refusal(how, Some(Instant::now() + duration));
    }

    /// Refuses every request in the given way until [`Faults::recover`], dropping open watches.
    pub fn refuse(&self, how: Refusal) {
        self.set_refusal(how, None);
    }

    /// Stops refusing requests.
    pub fn recover(&self) {
        *self
            .state
            .refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Whether requests are being refused now, and how.
    pub fn refusing(&self) -> Option<Refusal> {
        self.state.refusal()
    }

    /// Delays every (non-admin) request by `latency`; `Duration::ZERO` turns it off.
    pub fn set_latency(&self, latency: Duration) {
        *self
            .state
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = latency;
    }

    /// How many watch streams are open now.
    pub fn open_watches(&self) -> usize {
        self.state.open_watches.load(Ordering::SeqCst)
    }

    fn set_refusal(&self, how: Refusal, until: Option<Instant>) {
        *self
            .state
            .refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((how, until));
        self.drop_watches();
    }
}
