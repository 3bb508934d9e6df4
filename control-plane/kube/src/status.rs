//! Status going back to the API server: the leader patches the `/status` subresource of every
//! managed object whose status differs from what the API holds.
//!
//! ```text
//!  control loop ──DesiredStatus──┐
//!  provider ──Observed (status, resourceVersion)──┼──► writer (acts only while leader)
//!  leader election ──is leader──┘                    │ per object: target = desired, with
//!                                                    │   lastTransitionTime carried from the API
//!                                                    │   (and other controllers' route parents kept)
//!                                                    │ target == observed? nothing to do
//!                                                    ▼
//!              PATCH <kind>/<name>/status (merge patch, metadata.resourceVersion precondition,
//!                                          fieldManager trellis)
//!                  409 ─► retried once the watch brings the new version (backoff 0.1 s → 5 s)
//!                  404 ─► the object is gone: nothing to do
//!                  other 4xx ─► per-object backoff 1 s → 5 min, logged once per cause
//!                  5xx, 429, unreachable ─► every write waits (0.5 s → 10 s), logged once per cause
//! ```
//!
//! Writes are conditional and computed against what the API holds, not against what this
//! replica last wrote: a new leader that computes the same status writes nothing, so
//! leadership can move without status flapping. Condition transition times are taken from the
//! API's copy when a condition's type and status did not change.
//!
//! HTTPRoute status is shared between controllers: only the `parents` entries whose
//! `controllerName` is Trellis's are written, others are kept as read, and Trellis's entries
//! are removed from routes that no longer name a Trellis Gateway.

use crate::convert::{ObservedObject, observe};
use crate::health::{Health, unreachable};
use crate::kinds::WatchedKind;
use crate::provider::Observed;
use kube::api::{Patch, PatchParams};
use kube::core::DynamicObject;
use kube::{Api, Client};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use trellis_model::{Kind, ObjectKey};

/// The status Trellis computed for every object it manages, as JSON shaped like `.status`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredStatus {
    /// GatewayClass, Gateway and HTTPRoute statuses (for routes: `{"parents": [...]}` with
    /// Trellis's entries only).
    pub objects: BTreeMap<(Kind, ObjectKey), Value>,
}

/// How the writer behaves.
#[derive(Clone, Debug)]
pub struct StatusWriterConfig {
    /// The controller names in route parent entries that are Trellis's (its Gateways' and its
    /// mesh's).
    pub controller_names: Vec<String>,
    /// `fieldManager` of the writes.
    pub field_manager: String,
    /// How long changes are gathered before writing (a proxy's ACK usually arrives within it,
    /// so a Gateway does not flip to Pending and back on every update).
    pub settle: Duration,
    /// How long one write may take.
    pub request_timeout: Duration,
}

impl Default for StatusWriterConfig {
    fn default() -> Self {
        Self {
            controller_names: vec![
                trellis_model::CONTROLLER_NAME.to_string(),
                trellis_model::MESH_CONTROLLER_NAME.to_string(),
            ],
            field_manager: "trellis".to_string(),
            settle: Duration::from_millis(250),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Starts the writer. It writes nothing until `desired` holds a status, and runs until
/// `desired` or `leader` is closed.
pub fn spawn(
    client: Client,
    config: StatusWriterConfig,
    desired: watch::Receiver<Option<Arc<DesiredStatus>>>,
    observed: Observed,
    leader: watch::Receiver<bool>,
    health: Arc<Health>,
) -> JoinHandle<()> {
    let writer = Writer {
        client,
        config,
        observed,
        health,
        written: HashMap::new(),
        failures: HashMap::new(),
        global: None,
    };
    tokio::spawn(writer.run(desired, leader))
}

/// What this leader last wrote to an object.
#[derive(Debug)]
struct Written {
    target: Value,
    /// The resourceVersion the write was conditional on, and the one it produced.
    versions: [String; 2],
}

/// A write that failed, and when to try again.
#[derive(Debug)]
struct Failure {
    cause: String,
    attempts: u32,
    next_try: Instant,
    target: Value,
}

/// A failure that holds every write back (the API server is unreachable or overloaded).
#[derive(Debug)]
struct GlobalFailure {
    cause: String,
    attempts: u32,
    next_try: Instant,
}

type Id = (Kind, ObjectKey);

struct Writer {
    client: Client,
    config: StatusWriterConfig,
    observed: Observed,
    health: Arc<Health>,
    written: HashMap<Id, Written>,
    failures: HashMap<Id, Failure>,
    global: Option<GlobalFailure>,
}

/// One write to make: the full target status and the patch's `.status`.
struct Work {
    id: Id,
    seen: ObservedObject,
    target: Value,
    patch: Value,
}

enum Outcome {
    Written(Box<DynamicObject>),
    Conflict,
    Gone,
    Rejected(String),
    Unavailable(String),
}

impl Writer {
    async fn run(
        mut self,
        mut desired: watch::Receiver<Option<Arc<DesiredStatus>>>,
        mut leader: watch::Receiver<bool>,
    ) {
        let mut observed_changes = self.observed.subscribe();
        let mut retry_at: Option<Instant> = None;
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    r = desired.changed() => if r.is_err() { return },
                    r = leader.changed() => if r.is_err() { return },
                    r = observed_changes.changed() => if r.is_err() { return },
                    () = sleep_until(retry_at), if retry_at.is_some() => {}
                }
            }
            first = false;
            if !*leader.borrow_and_update() {
                // A follower forgets: the next leader (maybe this replica again) starts from
                // what the API holds.
                self.written.clear();
                self.failures.clear();
                self.global = None;
                retry_at = None;
                continue;
            }
            tokio::time::sleep(self.config.settle).await;
            // Nothing is written before the control loop computed a status from a complete
            // view: an empty one would strip Trellis's entries from every route.
            let Some(target) = desired.borrow_and_update().clone() else {
                continue;
            };
            observed_changes.borrow_and_update();
            retry_at = self.sync(&target, &leader).await;
        }
    }

    /// Writes what differs; returns when to try again for writes held back.
    async fn sync(
        &mut self,
        desired: &DesiredStatus,
        leader: &watch::Receiver<bool>,
    ) -> Option<Instant> {
        let observed = self.observed.snapshot();
        let work = plan(desired, &observed, &self.config.controller_names);
        // Failures of objects that no longer need writing are over.
        self.failures
            .retain(|id, _| work.iter().any(|w| &w.id == id));
        let now = Instant::now();
        let mut retry: Option<Instant> = None;
        let earliest = |t: Instant, retry: &mut Option<Instant>| {
            *retry = Some(retry.map_or(t, |r| r.min(t)));
        };
        for w in work {
            if !*leader.borrow() {
                return None;
            }
            if let Some(done) = self.written.get(&w.id)
                && done.target == w.target
                && done.versions.contains(&w.seen.resource_version)
            {
                // Written already; the watch has not caught up, or the server keeps it in
                // another form.
                continue;
            }
            if let Some(g) = &self.global
                && now < g.next_try
            {
                earliest(g.next_try, &mut retry);
                break;
            }
            if let Some(f) = self.failures.get(&w.id)
                && f.target == w.target
                && now < f.next_try
            {
                earliest(f.next_try, &mut retry);
                continue;
            }
            match self.write(&w).await {
                Outcome::Written(object) => {
                    self.health.status_written();
                    let after = observe(&object);
                    debug!(kind = %w.id.0, object = %w.id.1, rv = %after.resource_version, "status written");
                    self.written.insert(
                        w.id.clone(),
                        Written {
                            target: w.target.clone(),
                            versions: [
                                w.seen.resource_version.clone(),
                                after.resource_version.clone(),
                            ],
                        },
                    );
                    if let Some(f) = self.failures.remove(&w.id)
                        && f.attempts > 0
                        && !f.cause.starts_with("conflict")
                    {
                        info!(kind = %w.id.0, object = %w.id.1, "status written after earlier failures");
                    }
                    if let Some(g) = self.global.take() {
                        info!(previous_error = %g.cause, "status writes resumed");
                    }
                    self.observed.set(w.id.0, w.id.1.clone(), after);
                }
                Outcome::Gone => {
                    self.failures.remove(&w.id);
                }
                Outcome::Conflict => {
                    self.health.status_conflict();
                    // The watch brings the new version and wakes the writer; retry on a timer
                    // too, backing off in case it does not.
                    let f = self.fail(
                        &w,
                        "conflict".to_string(),
                        Duration::from_millis(100),
                        Duration::from_secs(5),
                    );
                    debug!(kind = %w.id.0, object = %w.id.1, attempts = f.attempts, "status write conflicted; will retry on the new version");
                    earliest(f.next_try, &mut retry);
                }
                Outcome::Rejected(cause) => {
                    self.health.status_write_failed(&cause);
                    let previous = self.failures.get(&w.id).map(|f| f.cause.clone());
                    let f = self.fail(
                        &w,
                        cause.clone(),
                        Duration::from_secs(1),
                        Duration::from_secs(300),
                    );
                    let wait = f.next_try.saturating_duration_since(Instant::now());
                    if previous.as_deref() != Some(cause.as_str()) {
                        warn!(kind = %w.id.0, object = %w.id.1, error = %cause, retry_in = ?wait, "cannot write status");
                    }
                    earliest(f.next_try, &mut retry);
                }
                Outcome::Unavailable(cause) => {
                    self.health.status_write_failed(&cause);
                    unreachable(&self.health, &cause);
                    let g = self.global.get_or_insert(GlobalFailure {
                        cause: String::new(),
                        attempts: 0,
                        next_try: now,
                    });
                    if g.cause != cause {
                        warn!(error = %cause, "status writes failing; retrying with backoff");
                        g.cause = cause;
                    }
                    g.attempts += 1;
                    let delay = backoff(
                        g.attempts,
                        Duration::from_millis(500),
                        Duration::from_secs(10),
                    );
                    g.next_try = Instant::now() + delay;
                    earliest(g.next_try, &mut retry);
                    break;
                }
            }
        }
        retry
    }

    fn fail(&mut self, w: &Work, cause: String, base: Duration, max: Duration) -> &Failure {
        let f = self.failures.entry(w.id.clone()).or_insert(Failure {
            cause: String::new(),
            attempts: 0,
            next_try: Instant::now(),
            target: Value::Null,
        });
        if f.target != w.target {
            // New content: it may well be accepted; start the backoff over.
            f.attempts = 0;
            f.target = w.target.clone();
        }
        f.attempts += 1;
        f.cause = cause;
        f.next_try = Instant::now() + backoff(f.attempts, base, max);
        f
    }

    async fn write(&self, w: &Work) -> Outcome {
        let Some(watched) = WatchedKind::of(w.id.0) else {
            return Outcome::Gone;
        };
        let resource = watched.api_resource();
        let api: Api<DynamicObject> = if watched.namespaced {
            Api::namespaced_with(self.client.clone(), &w.id.1.namespace, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        };
        let body = json!({
            "metadata": {"resourceVersion": w.seen.resource_version},
            "status": w.patch,
        });
        let params = PatchParams {
            field_manager: Some(self.config.field_manager.clone()),
            ..PatchParams::default()
        };
        let patch = Patch::Merge(&body);
        let call = api.patch_status(&w.id.1.name, &params, &patch);
        match tokio::time::timeout(self.config.request_timeout, call).await {
            Err(_) => Outcome::Unavailable(format!(
                "no answer within {:?}",
                self.config.request_timeout
            )),
            Ok(Ok(object)) => Outcome::Written(Box::new(object)),
            Ok(Err(kube::Error::Api(status))) => match status.code {
                409 => Outcome::Conflict,
                404 => Outcome::Gone,
                code if code >= 500 || code == 429 => {
                    Outcome::Unavailable(format!("{} ({code})", status.message))
                }
                code => Outcome::Rejected(format!("{} ({code} {})", status.message, status.reason)),
            },
            Ok(Err(e)) => Outcome::Unavailable(e.to_string()),
        }
    }
}

fn backoff(attempts: u32, base: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(16));
    base.saturating_mul(factor).min(max)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The writes that would bring the API in line with `desired`, in a stable order.
fn plan(
    desired: &DesiredStatus,
    observed: &BTreeMap<Id, ObservedObject>,
    controllers: &[String],
) -> Vec<Work> {
    let mut work = Vec::new();
    for (id, status) in &desired.objects {
        // Not in the API (yet, or any more): nothing to write to.
        let Some(seen) = observed.get(id) else {
            continue;
        };
        let (target, patch) = match id.0 {
            Kind::HttpRoute => route_target(&seen.status, Some(status), controllers),
            _ => owned_target(&seen.status, status),
        };
        if target != seen.status {
            work.push(Work {
                id: id.clone(),
                seen: seen.clone(),
                target,
                patch,
            });
        }
    }
    // Routes Trellis no longer manages lose Trellis's parent entries.
    let has_ours = |status: &Value| {
        status
            .get("parents")
            .and_then(Value::as_array)
            .is_some_and(|ps| ps.iter().any(|p| is_ours(p, controllers)))
    };
    for (id, seen) in observed {
        if id.0 != Kind::HttpRoute || desired.objects.contains_key(id) || !has_ours(&seen.status) {
            continue;
        }
        let (target, patch) = route_target(&seen.status, None, controllers);
        if target != seen.status {
            work.push(Work {
                id: id.clone(),
                seen: seen.clone(),
                target,
                patch,
            });
        }
    }
    work
}

/// GatewayClass, Gateway and policy status are Trellis's alone: the target is the desired
/// status with transition times carried over; fields the API holds that Trellis does not write
/// are removed.
fn owned_target(observed: &Value, desired: &Value) -> (Value, Value) {
    let mut target = desired.clone();
    carry_times(&mut target, observed);
    let mut patch = target.clone();
    if let (Some(patch), Some(seen)) = (patch.as_object_mut(), observed.as_object()) {
        for key in seen.keys() {
            if !patch.contains_key(key) {
                patch.insert(key.clone(), Value::Null);
            }
        }
    }
    (target, patch)
}

/// Whether a route parent entry is written by one of Trellis's controllers.
fn is_ours(parent: &Value, controllers: &[String]) -> bool {
    parent
        .get("controllerName")
        .and_then(Value::as_str)
        .is_some_and(|c| controllers.iter().any(|ours| ours == c))
}

/// HTTPRoute status: other controllers' parent entries as read, then Trellis's.
fn route_target(
    observed: &Value,
    desired: Option<&Value>,
    controllers: &[String],
) -> (Value, Value) {
    let mut parents: Vec<Value> = observed
        .get("parents")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter(|p| !is_ours(p, controllers))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut ours = desired
        .and_then(|d| d.get("parents"))
        .cloned()
        .unwrap_or_else(|| json!([]));
    carry_entry_times(Some(&mut ours), observed.get("parents"));
    if let Some(list) = ours.as_array() {
        parents.extend(list.iter().cloned());
    }
    let mut target = match observed {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    target.insert("parents".into(), Value::Array(parents.clone()));
    (
        Value::Object(target),
        json!({ "parents": Value::Array(parents) }),
    )
}

/// Keeps a condition's `lastTransitionTime` from `observed` when a condition of the same type
/// and status is there.
fn carry_conditions(target: Option<&mut Value>, observed: Option<&Value>) {
    let (Some(Value::Array(target)), Some(Value::Array(observed))) = (target, observed) else {
        return;
    };
    for c in target.iter_mut() {
        let same = observed
            .iter()
            .find(|o| o.get("type") == c.get("type") && o.get("status") == c.get("status"));
        if let (Some(o), Some(map)) = (same, c.as_object_mut())
            && let Some(time) = o.get("lastTransitionTime")
        {
            map.insert("lastTransitionTime".into(), time.clone());
        }
    }
}

/// Carries transition times of the object's conditions and of those of each entry of its
/// `listeners`, `parents` (routes) and `ancestors` (policies).
fn carry_times(target: &mut Value, observed: &Value) {
    carry_conditions(target.get_mut("conditions"), observed.get("conditions"));
    for list in ["listeners", "parents", "ancestors"] {
        carry_entry_times(target.get_mut(list), observed.get(list));
    }
}

/// Carries transition times of each entry of a status list from the entry in `observed` it
/// stands for: the same listener name, parentRef or ancestorRef, for the same controller.
fn carry_entry_times(entries: Option<&mut Value>, observed: Option<&Value>) {
    let (Some(Value::Array(entries)), Some(Value::Array(observed))) = (entries, observed) else {
        return;
    };
    let same_entry = |a: &Value, b: &Value| {
        ["name", "parentRef", "ancestorRef", "controllerName"]
            .iter()
            .all(|key| a.get(key) == b.get(key))
    };
    for entry in entries {
        let before = observed.iter().find(|o| same_entry(o, entry));
        carry_conditions(
            entry.get_mut("conditions"),
            before.and_then(|b| b.get("conditions")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "trellis.dev/gateway-controller";

    fn our_controllers() -> Vec<String> {
        StatusWriterConfig::default().controller_names
    }

    fn cond(t: &str, s: &str, time: &str) -> Value {
        json!({"type": t, "status": s, "reason": t, "message": "", "observedGeneration": 1,
               "lastTransitionTime": time})
    }

    fn seen(status: Value) -> ObservedObject {
        ObservedObject {
            resource_version: "7".into(),
            generation: Some(1),
            status,
        }
    }

    #[test]
    fn unchanged_conditions_keep_the_api_transition_time_so_nothing_is_written() {
        let observed = json!({"conditions": [cond("Accepted", "True", "2020-01-01T00:00:00Z")]});
        let desired = json!({"conditions": [cond("Accepted", "True", "2030-01-01T00:00:00Z")]});
        let mut d = DesiredStatus::default();
        let id = (Kind::GatewayClass, ObjectKey::cluster("trellis"));
        d.objects.insert(id.clone(), desired);
        let obs = BTreeMap::from([(id, seen(observed))]);
        assert!(plan(&d, &obs, &our_controllers()).is_empty());
    }

    #[test]
    fn a_changed_condition_is_written_with_a_new_time_and_stale_fields_cleared() {
        let observed = json!({"conditions": [cond("Accepted", "True", "2020-01-01T00:00:00Z")],
                              "extra": 1});
        let desired = json!({"conditions": [cond("Accepted", "False", "2030-01-01T00:00:00Z")]});
        let (target, patch) = owned_target(&observed, &desired);
        assert_eq!(
            target["conditions"][0]["lastTransitionTime"],
            "2030-01-01T00:00:00Z"
        );
        assert_eq!(patch["extra"], Value::Null);
        assert!(target.get("extra").is_none());
    }

    #[test]
    fn listener_conditions_are_matched_by_listener_name() {
        let observed = json!({"listeners": [
            {"name": "b", "conditions": [cond("Programmed", "True", "2020-01-01T00:00:00Z")]},
        ]});
        let mut target = json!({"listeners": [
            {"name": "a", "conditions": [cond("Programmed", "True", "2030-01-01T00:00:00Z")]},
            {"name": "b", "conditions": [cond("Programmed", "True", "2030-01-01T00:00:00Z")]},
        ]});
        carry_times(&mut target, &observed);
        assert_eq!(
            target["listeners"][0]["conditions"][0]["lastTransitionTime"],
            "2030-01-01T00:00:00Z"
        );
        assert_eq!(
            target["listeners"][1]["conditions"][0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
    }

    #[test]
    fn a_policys_ancestor_conditions_keep_the_api_transition_time_so_nothing_is_written() {
        // Another replica wrote this status at another time: a new leader writes nothing.
        let ancestor = |time: &str| {
            json!({"ancestorRef": {"name": "web"}, "controllerName": OURS,
                   "conditions": [cond("Accepted", "False", time)]})
        };
        let id = (Kind::AuthorizationPolicy, ObjectKey::new("ns", "p"));
        let mut d = DesiredStatus::default();
        d.objects.insert(
            id.clone(),
            json!({"ancestors": [ancestor("2030-01-01T00:00:00Z")]}),
        );
        let obs = BTreeMap::from([(
            id,
            seen(json!({"ancestors": [ancestor("2020-01-01T00:00:00Z")]})),
        )]);
        assert!(plan(&d, &obs, &our_controllers()).is_empty());
    }

    #[test]
    fn route_status_keeps_other_controllers_entries_and_replaces_ours() {
        let theirs = json!({"parentRef": {"name": "other"}, "controllerName": "example.com/x",
                            "conditions": []});
        let old_ours = json!({"parentRef": {"name": "web"}, "controllerName": OURS,
                              "conditions": [cond("Accepted", "True", "2020-01-01T00:00:00Z")]});
        let observed = json!({"parents": [theirs.clone(), old_ours]});
        let new_ours = json!({"parentRef": {"name": "web"}, "controllerName": OURS,
                              "conditions": [cond("Accepted", "True", "2030-01-01T00:00:00Z")]});
        let (target, patch) = route_target(
            &observed,
            Some(&json!({"parents": [new_ours]})),
            &our_controllers(),
        );
        assert_eq!(target, observed, "same conditions: nothing to write");
        assert_eq!(patch["parents"][0], theirs);
        // A route that no longer names a Trellis Gateway loses only Trellis's entry.
        let (target, _) = route_target(&observed, None, &our_controllers());
        assert_eq!(target, json!({"parents": [theirs]}));
    }

    #[test]
    fn routes_no_longer_managed_are_cleaned_and_unknown_objects_skipped() {
        let ours = json!({"parentRef": {"name": "web"}, "controllerName": OURS, "conditions": []});
        let route = (Kind::HttpRoute, ObjectKey::new("ns", "r"));
        let gone = (Kind::Gateway, ObjectKey::new("ns", "not-in-api"));
        let mut d = DesiredStatus::default();
        d.objects.insert(gone, json!({"conditions": []}));
        let obs = BTreeMap::from([(route.clone(), seen(json!({"parents": [ours]})))]);
        let work = plan(&d, &obs, &our_controllers());
        assert_eq!(work.len(), 1);
        assert_eq!(work[0].id, route);
        assert_eq!(work[0].patch, json!({"parents": []}));
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let b = |n| backoff(n, Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(b(1), Duration::from_secs(1));
        assert_eq!(b(3), Duration::from_secs(4));
        assert_eq!(b(30), Duration::from_secs(300));
    }

    #[test]
    fn mesh_parent_entries_are_trellis_s_too_and_other_controllers_entries_stay() {
        let observed = json!({"parents": [
            {"parentRef": {"name": "echo", "kind": "Service", "group": ""},
             "controllerName": "trellis.dev/mesh-controller", "conditions": []},
            {"parentRef": {"name": "echo", "kind": "Service", "group": ""},
             "controllerName": "istio.io/gateway-controller", "conditions": []},
        ]});
        let (target, _) = route_target(&observed, None, &our_controllers());
        let parents = target["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 1);
        assert_eq!(parents[0]["controllerName"], "istio.io/gateway-controller");
    }
}
