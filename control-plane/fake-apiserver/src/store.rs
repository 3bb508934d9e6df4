//! The object store: every object as `serde_json::Value`, one global resourceVersion counter,
//! and the change history that watches read from.
//!
//! ```text
//!  create / replace / patch / delete ──► Inner (one mutex)
//!                                          ├─ objects: (group, plural, namespace, name) → object
//!                                          ├─ rv: u64, +1 per write, stamped on the object
//!                                          └─ history: Change{rv, ADDED|MODIFIED|DELETED,
//!                                                              object, previous} (rv > history_start)
//!                                                  │
//!  changes: watch::Sender<rv> ─── "something happened" ──► watch streams read history after
//!                                                          their cursor (410 if it is older
//!                                                          than history_start)
//! ```
//!
//! The store does what the real registry does for metadata: `uid`, `creationTimestamp`,
//! `generation` (1 on create, +1 when anything but metadata and status changes), `resourceVersion`
//! preconditions (409), finalizers (`deletionTimestamp` until the last one is removed), and the
//! `/status` split (writes to the main resource keep `.status`, writes to `/status` change only
//! `.status`, for kinds with a status subresource; `.status` is dropped on create). An update
//! that changes nothing is a no-op: no new resourceVersion, no event.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use base64::Engine;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::apply::{self, FieldPath};
use crate::error::ApiError;
use crate::kinds::{GroupResource, ResourceKind};
use crate::selector::{FieldSelector, LabelSelector};

/// How many changes are kept for watches to resume from, unless configured otherwise.
pub const DEFAULT_HISTORY: usize = 10_000;

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// The object itself (`.../name`).
    Main,
    /// The `/status` subresource (`.../name/status`).
    Status,
}

/// The type of a change, as named in watch events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// The object was created.
    Added,
    /// The object was changed (including a delete that only set `deletionTimestamp`).
    Modified,
    /// The object was removed.
    Deleted,
}

impl ChangeType {
    /// The watch event `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One write, as kept in the history.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion this write produced.
    pub rv: u64,
    /// What happened.
    pub change: ChangeType,
    /// The object's group.
    pub(crate) group_resource: GroupResource,
    /// The object's namespace (`""` for cluster-scoped objects).
    pub namespace: String,
    /// The object after the write (for a delete: its last state, stamped with `rv`).
    pub object: Value,
    /// The object before the write (`None` for a create).
    pub previous: Option<Value>,
}

/// A patch body, by content type.
#[derive(Debug, Clone)]
pub enum Patch {
    /// `application/merge-patch+json` (RFC 7386).
    Merge(Value),
    /// `application/strategic-merge-patch+json`, approximated as a JSON merge patch
    /// (no `$patch` directives, lists replaced whole).
    Strategic(Value),
    /// `application/json-patch+json` (RFC 6902).
    Json(json_patch::Patch),
    /// `application/apply-patch+yaml`: server-side apply (see the `apply` module for the
    /// approximation).
    Apply {
        /// The applied (partial) object.
        object: Value,
        /// `fieldManager`.
        manager: String,
        /// `force=true`: take over conflicting fields.
        force: bool,
    },
}

/// Options of list and delete-collection requests.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0: no limit).
    pub limit: usize,
    /// `continue`.
    pub continue_token: Option<String>,
}

/// Preconditions of a delete (`DeleteOptions.preconditions`).
#[derive(Debug, Clone, Default)]
pub struct Preconditions {
    /// The object's uid must be this.
    pub uid: Option<String>,
    /// The object's resourceVersion must be this.
    pub resource_version: Option<String>,
}

/// Where a continue token resumes.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    /// The list's resourceVersion.
    rv: u64,
    /// The last key returned: namespace.
    ns: String,
    /// The last key returned: name.
    name: String,
}

/// The key of one object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ObjectKey {
    group_resource: GroupResource,
    namespace: String,
    name: String,
}

/// The objects, the counter and the history, guarded by one mutex.
struct Inner {
    rv: u64,
    objects: BTreeMap<ObjectKey, Value>,
    history: VecDeque<Arc<Change>>,
    /// Every change with `rv > history_start` is in `history`.
    history_start: u64,
    max_history: usize,
    ids: IdSource,
}

/// The in-memory object store. Cheap to share behind an `Arc`; every method is synchronous
/// and holds the lock only for the operation.
pub struct Store {
    inner: Mutex<Inner>,
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("resource_version", &self.resource_version())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// An empty store keeping at most `max_history` changes for watches.
    pub fn new(max_history: usize) -> Self {
        let (changes, _) = watch::channel(1);
        Self {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                history_start: 1,
                max_history: max_history.max(1),
                ids: IdSource::new(),
            }),
            changes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// The oldest resourceVersion a watch can start from without 410.
    pub fn oldest_resource_version(&self) -> u64 {
        self.lock().history_start
    }

    /// Forgets the history: watches and continue tokens from any resourceVersion older than
    /// the current one get 410 Expired.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.history_start = inner.rv;
    }

    /// A receiver told the new resourceVersion after every write.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The changes after `cursor` and the resourceVersion they bring the cursor to, or 410
    /// when `cursor` is older than the history.
    pub(crate) fn changes_after(&self, cursor: u64) -> Result<(Vec<Arc<Change>>, u64), ApiError> {
        let inner = self.lock();
        if cursor < inner.history_start {
            return Err(ApiError::Expired {
                requested: cursor,
                oldest: inner.history_start,
            });
        }
        let from = inner.history.partition_point(|c| c.rv <= cursor);
        let changes = inner.history.range(from..).cloned().collect();
        Ok((changes, inner.rv.max(cursor)))
    }

    /// Every object of a kind (in one namespace, or all) with the resourceVersion they are
    /// current at, taken atomically.
    pub(crate) fn snapshot(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
    ) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let objects = inner
            .range(&kind.group_resource(), namespace, None)
            .map(|(_, v)| present(kind, v.clone()))
            .collect();
        (objects, inner.rv)
    }

    /// Reads one object.
    pub fn get(&self, kind: &ResourceKind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let inner = self.lock();
        inner
            .objects
            .get(&key(kind, namespace, name))
            .map(|v| present(kind, v.clone()))
            .ok_or_else(|| not_found(kind, name))
    }

    /// Lists objects as a `<Kind>List`, with paging and selectors.
    pub fn list(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<Value, ApiError> {
        let inner = self.lock();
        let (list_rv, after) = match &options.continue_token {
            Some(token) => {
                let t = decode_continue(token)?;
                if t.rv < inner.history_start {
                    return Err(ApiError::Expired {
                        requested: t.rv,
                        oldest: inner.history_start,
                    });
                }
                (t.rv, Some((t.ns, t.name)))
            }
            None => (inner.rv, None),
        };
        let gr = kind.group_resource();
        let mut items = Vec::new();
        let mut last = None;
        let mut more = false;
        let mut remaining = 0usize;
        for (k, v) in inner.range(&gr, namespace, after) {
            if !(options.labels.matches(v) && options.fields.matches(v)) {
                continue;
            }
            if options.limit > 0 && items.len() == options.limit {
                more = true;
                remaining += 1;
                continue;
            }
            items.push(present(kind, v.clone()));
            last = Some(k);
        }
        let mut metadata = json!({ "resourceVersion": list_rv.to_string() });
        if more && let Some(k) = last {
            let token = ContinueToken {
                rv: list_rv,
                ns: k.namespace.clone(),
                name: k.name.clone(),
            };
            metadata["continue"] = Value::String(encode_continue(&token)?);
            metadata["remainingItemCount"] = json!(remaining);
        }
        Ok(json!({
            "apiVersion": kind.api_version(),
            "kind": format!("{}List", kind.kind),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// Creates an object (POST). `namespace` is `""` for cluster-scoped kinds.
    pub fn create(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        object: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let mut object = prepare_body(kind, namespace, object)?;
        if let Some(rv) = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && !rv.is_empty()
        {
            return Err(ApiError::BadRequest(
                "resourceVersion should not be set on objects to be created".into(),
            ));
        }
        let name = match str_at(&object, "/metadata/name") {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match str_at(&object, "/metadata/generateName") {
                Some(prefix) if !prefix.is_empty() => {
                    let name = format!("{prefix}{}", inner.ids.suffix());
                    metadata_mut(&mut object)?.insert("name".into(), Value::String(name.clone()));
                    name
                }
                _ => {
                    return Err(invalid(
                        kind,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            },
        };
        validate_name(kind, &name)?;
        if kind.status_subresource
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        inner.insert_new(self, kind, namespace, &name, object, None, dry_run)
    }

    /// Stores an object as given (status included), creating or replacing it. For seeding a
    /// test or loading files; it goes through the same metadata rules and produces the same
    /// watch events as an API write.
    pub fn upsert(&self, kind: &ResourceKind, object: Value) -> Result<Value, ApiError> {
        let namespace = if kind.namespaced {
            str_at(&object, "/metadata/namespace")
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let object = prepare_body(kind, &namespace, object)?;
        let name = str_at(&object, "/metadata/name").unwrap_or("").to_string();
        validate_name(kind, &name)?;
        let mut inner = self.lock();
        match inner.objects.get(&key(kind, &namespace, &name)).cloned() {
            None => inner.insert_new(self, kind, &namespace, &name, object, None, false),
            Some(old) => {
                let mut candidate = object;
                set_meta(&mut candidate, "resourceVersion", Value::Null);
                let with_status = inner.commit_update(
                    self,
                    kind,
                    &namespace,
                    old,
                    candidate.clone(),
                    Subresource::Main,
                    None,
                    false,
                )?;
                if kind.status_subresource {
                    return inner.commit_update(
                        self,
                        kind,
                        &namespace,
                        with_status,
                        candidate,
                        Subresource::Status,
                        None,
                        false,
                    );
                }
                Ok(with_status)
            }
        }
    }

    /// Replaces an object (PUT), or its status (PUT `.../status`).
    pub fn replace(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
        object: Value,
        subresource: Subresource,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let object = prepare_body(kind, namespace, object)?;
        match str_at(&object, "/metadata/name") {
            Some(n) if n == name => {}
            Some(n) if !n.is_empty() => {
                return Err(ApiError::BadRequest(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => {
                return Err(ApiError::BadRequest(
                    "name is required in the body of an update".into(),
                ));
            }
        }
        let old = inner
            .objects
            .get(&key(kind, namespace, name))
            .cloned()
            .ok_or_else(|| not_found(kind, name))?;
        inner.commit_update(
            self,
            kind,
            namespace,
            old,
            object,
            subresource,
            None,
            dry_run,
        )
    }

    /// Patches an object (PATCH), or its status (PATCH `.../status`). An apply patch to an
    /// object that does not exist creates it.
    pub fn patch(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
        patch: Patch,
        subresource: Subresource,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let old = inner.objects.get(&key(kind, namespace, name)).cloned();
        match patch {
            Patch::Merge(p) | Patch::Strategic(p) => {
                let old = old.ok_or_else(|| not_found(kind, name))?;
                if !p.is_object() {
                    return Err(ApiError::BadRequest(
                        "a merge patch must be a JSON object".into(),
                    ));
                }
                let mut candidate = old.clone();
                json_patch::merge(&mut candidate, &p);
                inner.commit_update(
                    self,
                    kind,
                    namespace,
                    old,
                    candidate,
                    subresource,
                    None,
                    dry_run,
                )
            }
            Patch::Json(ops) => {
                let old = old.ok_or_else(|| not_found(kind, name))?;
                let mut candidate = old.clone();
                json_patch::patch(&mut candidate, &ops)
                    .map_err(|e| invalid(kind, name, &format!("json patch: {e}")))?;
                inner.commit_update(
                    self,
                    kind,
                    namespace,
                    old,
                    candidate,
                    subresource,
                    None,
                    dry_run,
                )
            }
            Patch::Apply {
                object,
                manager,
                force,
            } => {
                let object = prepare_apply(kind, namespace, name, object)?;
                // A resourceVersion in the applied object is an optimistic lock, as for updates.
                if let Some(rv) = str_at(&object, "/metadata/resourceVersion")
                    && !rv.is_empty()
                    && Some(rv)
                        != old
                            .as_ref()
                            .and_then(|o| str_at(o, "/metadata/resourceVersion"))
                {
                    return Err(ApiError::Conflict {
                        resource: kind.resource_name(),
                        name: name.to_string(),
                        message: "the object has been modified; please apply your changes to the latest version and try again".into(),
                    });
                }
                let sub = match subresource {
                    Subresource::Main => "",
                    Subresource::Status => "status",
                };
                let in_scope = |p: &FieldPath| match subresource {
                    Subresource::Main => !(kind.status_subresource && is_status(p)),
                    Subresource::Status => is_status(p),
                };
                let applied: BTreeSet<FieldPath> = apply::leaf_paths(&object)
                    .into_iter()
                    .filter(|p| in_scope(p))
                    .collect();
                let scoped = scoped_object(kind, &object, subresource);
                let time = now();
                let Some(old) = old else {
                    if subresource == Subresource::Status {
                        return Err(not_found(kind, name));
                    }
                    validate_name(kind, name)?;
                    let entry =
                        apply::apply_entry(&manager, &kind.api_version(), sub, &applied, &time);
                    let managed = (!applied.is_empty()).then(|| json!([entry]));
                    return inner.insert_new(self, kind, namespace, name, scoped, managed, dry_run);
                };
                let mut entries = apply::managed_entries(&old);
                let mine: BTreeSet<FieldPath> = entries
                    .iter()
                    .filter(|e| {
                        e.manager == manager && e.operation == "Apply" && e.subresource == sub
                    })
                    .flat_map(|e| e.fields.iter().cloned())
                    .collect();
                let is_other = |e: &apply::ManagedEntry| {
                    e.operation == "Apply" && e.subresource == sub && e.manager != manager
                };
                // Conflicts: fields another applier owns, applied here with another value.
                let mut conflicts = Vec::new();
                for path in &applied {
                    for e in entries.iter_mut().filter(|e| is_other(e)) {
                        let owned: Vec<FieldPath> = e
                            .fields
                            .iter()
                            .filter(|f| apply::overlaps(f, path))
                            .cloned()
                            .collect();
                        if owned.is_empty()
                            || apply::get_path(&old, path) == apply::get_path(&object, path)
                        {
                            continue;
                        }
                        if force {
                            for f in owned {
                                e.fields.remove(&f);
                            }
                        } else {
                            conflicts.push(format!(
                                "conflict with \"{}\": {}",
                                e.manager,
                                apply::display_path(path)
                            ));
                        }
                    }
                }
                if !conflicts.is_empty() {
                    return Err(ApiError::Conflict {
                        resource: kind.resource_name(),
                        name: name.to_string(),
                        message: format!(
                            "Apply failed with {} conflict{}: {}",
                            conflicts.len(),
                            if conflicts.len() == 1 { "" } else { "s" },
                            conflicts.join(", ")
                        ),
                    });
                }
                let mut candidate = old.clone();
                for gone in mine.difference(&applied) {
                    let owned_elsewhere = entries
                        .iter()
                        .filter(|e| is_other(e))
                        .any(|e| e.fields.iter().any(|f| apply::overlaps(f, gone)));
                    if !owned_elsewhere {
                        apply::remove_path(&mut candidate, gone);
                    }
                }
                apply::deep_merge(&mut candidate, &scoped);
                let mut managed: Vec<Value> = Vec::new();
                for e in &entries {
                    if e.manager == manager && e.operation == "Apply" && e.subresource == sub {
                        continue;
                    }
                    if is_other(e) {
                        if e.fields.is_empty() {
                            continue;
                        }
                        let mut raw = e.raw.clone();
                        raw["fieldsV1"] = apply::to_fields_v1(&e.fields);
                        managed.push(raw);
                    } else {
                        managed.push(e.raw.clone());
                    }
                }
                if !applied.is_empty() {
                    managed.push(apply::apply_entry(
                        &manager,
                        &kind.api_version(),
                        sub,
                        &applied,
                        &time,
                    ));
                }
                inner.commit_update(
                    self,
                    kind,
                    namespace,
                    old,
                    candidate,
                    subresource,
                    Some(Value::Array(managed)),
                    dry_run,
                )
            }
        }
    }

    /// Deletes an object: removes it, or, while it has finalizers, sets `deletionTimestamp`.
    pub fn delete(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
        preconditions: &Preconditions,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let k = key(kind, namespace, name);
        let old = inner
            .objects
            .get(&k)
            .cloned()
            .ok_or_else(|| not_found(kind, name))?;
        let conflict = |message: String| ApiError::Conflict {
            resource: kind.resource_name(),
            name: name.to_string(),
            message,
        };
        if let Some(uid) = &preconditions.uid {
            let actual = str_at(&old, "/metadata/uid").unwrap_or("");
            if uid != actual {
                return Err(conflict(format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                )));
            }
        }
        if let Some(rv) = &preconditions.resource_version {
            let actual = str_at(&old, "/metadata/resourceVersion").unwrap_or("");
            if rv != actual {
                return Err(conflict(format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                )));
            }
        }
        if dry_run {
            return Ok(present(kind, old));
        }
        let has_finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(present(kind, old));
            }
            let mut new = old.clone();
            set_meta(&mut new, "deletionTimestamp", Value::String(now()));
            set_meta(&mut new, "deletionGracePeriodSeconds", json!(0));
            return Ok(present(
                kind,
                inner.record(self, k, ChangeType::Modified, new, Some(old)),
            ));
        }
        Ok(present(kind, inner.remove(self, k, old)))
    }

    /// Deletes every object a list would return (DELETE on a collection); returns them as a list.
    pub fn delete_collection(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        options: &ListOptions,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let all = ListOptions {
            limit: 0,
            continue_token: None,
            ..options.clone()
        };
        let list = self.list(kind, namespace, &all)?;
        let mut deleted = Vec::new();
        for item in list["items"].as_array().into_iter().flatten() {
            let ns = str_at(item, "/metadata/namespace").unwrap_or("");
            let name = str_at(item, "/metadata/name").unwrap_or("");
            match self.delete(kind, ns, name, &Preconditions::default(), dry_run) {
                Ok(v) => deleted.push(v),
                Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(json!({
            "apiVersion": kind.api_version(),
            "kind": format!("{}List", kind.kind),
            "metadata": { "resourceVersion": self.resource_version().to_string() },
            "items": deleted,
        }))
    }

    /// How many objects of a kind are stored (all namespaces).
    pub fn count(&self, kind: &ResourceKind) -> usize {
        let inner = self.lock();
        inner.range(&kind.group_resource(), None, None).count()
    }
}

impl Inner {
    /// Objects of one group resource, optionally one namespace, strictly after a key.
    fn range<'a>(
        &'a self,
        gr: &'a GroupResource,
        namespace: Option<&'a str>,
        after: Option<(String, String)>,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a Value)> + 'a {
        let start = match after {
            Some((ns, name)) => Bound::Excluded(ObjectKey {
                group_resource: gr.clone(),
                namespace: ns,
                name,
            }),
            None => Bound::Included(ObjectKey {
                group_resource: gr.clone(),
                namespace: namespace.unwrap_or("").to_string(),
                name: String::new(),
            }),
        };
        self.objects
            .range((start, Bound::Unbounded))
            .take_while(move |(k, _)| {
                k.group_resource == *gr && namespace.is_none_or(|ns| k.namespace == ns)
            })
    }

    /// Stamps a new object's server-managed metadata and stores it (ADDED).
    #[allow(clippy::too_many_arguments)]
    fn insert_new(
        &mut self,
        store: &Store,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
        mut object: Value,
        managed: Option<Value>,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let k = key(kind, namespace, name);
        if self.objects.contains_key(&k) {
            return Err(ApiError::AlreadyExists {
                resource: kind.resource_name(),
                name: name.to_string(),
            });
        }
        let meta = metadata_mut(&mut object)?;
        meta.insert("name".into(), Value::String(name.to_string()));
        meta.insert("uid".into(), Value::String(self.ids.uid()));
        meta.insert("creationTimestamp".into(), Value::String(now()));
        meta.insert("generation".into(), json!(1));
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        match managed {
            Some(m) => meta.insert("managedFields".into(), m),
            None => meta.remove("managedFields"),
        };
        if dry_run {
            return Ok(present(kind, object));
        }
        Ok(present(
            kind,
            self.record(store, k, ChangeType::Added, object, None),
        ))
    }

    /// Applies the update rules to `candidate` and stores it (MODIFIED), removes it (DELETED)
    /// when its last finalizer went away during deletion, or does nothing if nothing changed.
    #[allow(clippy::too_many_arguments)]
    fn commit_update(
        &mut self,
        store: &Store,
        kind: &ResourceKind,
        namespace: &str,
        old: Value,
        candidate: Value,
        subresource: Subresource,
        managed: Option<Value>,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let name = str_at(&old, "/metadata/name").unwrap_or("").to_string();
        let old_rv = str_at(&old, "/metadata/resourceVersion")
            .unwrap_or("")
            .to_string();
        if let Some(rv) = str_at(&candidate, "/metadata/resourceVersion")
            && !rv.is_empty()
            && rv != old_rv
        {
            return Err(ApiError::Conflict {
                resource: kind.resource_name(),
                name,
                message: "the object has been modified; please apply your changes to the latest version and try again".into(),
            });
        }
        if let Some(uid) = str_at(&candidate, "/metadata/uid")
            && !uid.is_empty()
            && Some(uid) != str_at(&old, "/metadata/uid")
        {
            return Err(ApiError::Conflict {
                resource: kind.resource_name(),
                name,
                message: format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    str_at(&old, "/metadata/uid").unwrap_or("")
                ),
            });
        }
        let mut new = match subresource {
            Subresource::Main => {
                let mut new = candidate;
                if kind.status_subresource {
                    set_or_remove(&mut new, "status", old.get("status").cloned());
                }
                let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
                let meta = metadata_mut(&mut new)?;
                for field in [
                    "name",
                    "namespace",
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "managedFields",
                ] {
                    match old_meta.get(field) {
                        Some(v) => meta.insert(field.into(), v.clone()),
                        None => meta.remove(field),
                    };
                }
                new
            }
            Subresource::Status => {
                let mut new = old.clone();
                set_or_remove(&mut new, "status", candidate.get("status").cloned());
                new
            }
        };
        if let Some(m) = managed {
            set_meta(&mut new, "managedFields", m);
        }
        set_meta(&mut new, "resourceVersion", Value::String(old_rv));
        if let Some(map) = new.as_object_mut() {
            map.insert(
                "apiVersion".into(),
                old.get("apiVersion").cloned().unwrap_or(Value::Null),
            );
            map.insert(
                "kind".into(),
                old.get("kind").cloned().unwrap_or(Value::Null),
            );
        }
        if without_managed_fields(&new) == without_managed_fields(&old) {
            return Ok(present(kind, old));
        }
        if subresource == Subresource::Main && spec_of(kind, &new) != spec_of(kind, &old) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            set_meta(&mut new, "generation", json!(generation + 1));
        }
        if dry_run {
            return Ok(present(kind, new));
        }
        let k = key(
            kind,
            namespace,
            str_at(&new, "/metadata/name").unwrap_or(""),
        );
        let finalized = new.pointer("/metadata/deletionTimestamp").is_some()
            && new
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        if finalized {
            self.objects.insert(k.clone(), new.clone());
            return Ok(present(kind, self.remove(store, k, new)));
        }
        Ok(present(
            kind,
            self.record(store, k, ChangeType::Modified, new, Some(old)),
        ))
    }

    /// Removes an object (DELETED); returns its last state stamped with the delete's rv.
    fn remove(&mut self, store: &Store, k: ObjectKey, old: Value) -> Value {
        self.rv += 1;
        let mut last = old.clone();
        set_meta(
            &mut last,
            "resourceVersion",
            Value::String(self.rv.to_string()),
        );
        self.objects.remove(&k);
        self.push(store, k, ChangeType::Deleted, last.clone(), Some(old));
        last
    }

    /// Stamps a new resourceVersion on `object`, stores it and records the change.
    fn record(
        &mut self,
        store: &Store,
        k: ObjectKey,
        change: ChangeType,
        mut object: Value,
        previous: Option<Value>,
    ) -> Value {
        self.rv += 1;
        set_meta(
            &mut object,
            "resourceVersion",
            Value::String(self.rv.to_string()),
        );
        self.objects.insert(k.clone(), object.clone());
        self.push(store, k, change, object.clone(), previous);
        object
    }

    fn push(
        &mut self,
        store: &Store,
        k: ObjectKey,
        change: ChangeType,
        object: Value,
        previous: Option<Value>,
    ) {
        self.history.push_back(Arc::new(Change {
            rv: self.rv,
            change,
            group_resource: k.group_resource,
            namespace: k.namespace,
            object,
            previous,
        }));
        while self.history.len() > self.max_history {
            if let Some(c) = self.history.pop_front() {
                self.history_start = c.rv;
            }
        }
        store.changes.send_replace(self.rv);
    }
}

fn key(kind: &ResourceKind, namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        group_resource: kind.group_resource(),
        namespace: if kind.namespaced {
            namespace.to_string()
        } else {
            String::new()
        },
        name: name.to_string(),
    }
}

/// The object as served under `kind`'s version.
pub(crate) fn present(kind: &ResourceKind, mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(kind.api_version()));
        map.insert("kind".into(), Value::String(kind.kind.clone()));
    }
    object
}

fn not_found(kind: &ResourceKind, name: &str) -> ApiError {
    ApiError::NotFound {
        resource: kind.resource_name(),
        name: name.to_string(),
    }
}

fn invalid(kind: &ResourceKind, name: &str, message: &str) -> ApiError {
    ApiError::Invalid {
        kind: kind.kind.clone(),
        name: name.to_string(),
        message: message.to_string(),
    }
}

/// Checks a request body's type and namespace against the URL and fills them in.
fn prepare_body(
    kind: &ResourceKind,
    namespace: &str,
    mut object: Value,
) -> Result<Value, ApiError> {
    let Some(map) = object.as_object_mut() else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    };
    let api_version = kind.api_version();
    if let Some(v) = map.get("apiVersion").and_then(Value::as_str)
        && v != api_version
    {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({v}) does not match the expected API version ({api_version})"
        )));
    }
    if let Some(k) = map.get("kind").and_then(Value::as_str)
        && k != kind.kind
    {
        return Err(ApiError::BadRequest(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            kind.kind
        )));
    }
    map.insert("apiVersion".into(), Value::String(api_version));
    map.insert("kind".into(), Value::String(kind.kind.clone()));
    let meta = metadata_mut(&mut object)?;
    if kind.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != namespace => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
            _ => {
                meta.insert("namespace".into(), Value::String(namespace.to_string()));
            }
        }
    } else {
        meta.remove("namespace");
    }
    Ok(object)
}

/// Checks an applied object: it must name its type, and its name must match the URL.
fn prepare_apply(
    kind: &ResourceKind,
    namespace: &str,
    name: &str,
    object: Value,
) -> Result<Value, ApiError> {
    for field in ["apiVersion", "kind"] {
        if object
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ApiError::BadRequest(format!(
                "{field} must be set in an applied object"
            )));
        }
    }
    let mut object = prepare_body(kind, namespace, object)?;
    match str_at(&object, "/metadata/name") {
        Some(n) if n == name => {}
        Some(n) if !n.is_empty() => {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => set_meta(&mut object, "name", Value::String(name.to_string())),
    }
    Ok(object)
}

/// The part of an applied object a write to `subresource` may change.
fn scoped_object(kind: &ResourceKind, object: &Value, subresource: Subresource) -> Value {
    let mut scoped = object.clone();
    if let Some(map) = scoped.as_object_mut() {
        match subresource {
            Subresource::Main if kind.status_subresource => {
                map.remove("status");
            }
            Subresource::Main => {}
            Subresource::Status => map.retain(|k, _| k == "status"),
        }
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in [
                "resourceVersion",
                "uid",
                "generation",
                "creationTimestamp",
                "managedFields",
            ] {
                meta.remove(f);
            }
        }
    }
    scoped
}

/// Everything `metadata.generation` counts: all but metadata (and status, when it is a subresource).
fn spec_of(kind: &ResourceKind, object: &Value) -> Value {
    let mut v = object.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("metadata");
        if kind.status_subresource {
            map.remove("status");
        }
    }
    v
}

/// Whether a field path is under `.status`.
fn is_status(path: &FieldPath) -> bool {
    path.first().is_some_and(|k| k == "status")
}

fn without_managed_fields(object: &Value) -> Value {
    let mut v = object.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    v
}

/// A metadata name must be a DNS subdomain (lowercase alphanumerics, `-`, `.`).
fn validate_name(kind: &ResourceKind, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            kind,
            name,
            &format!(
                "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ))
    }
}

fn metadata_mut(object: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let map = object
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("the body must be a JSON object".into()))?;
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if meta.is_null() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("metadata must be an object".into()))
}

fn set_meta(object: &mut Value, field: &str, value: Value) {
    if let Ok(meta) = metadata_mut(object) {
        if value.is_null() {
            meta.remove(field);
        } else {
            meta.insert(field.into(), value);
        }
    }
}

fn set_or_remove(object: &mut Value, field: &str, value: Option<Value>) {
    if let Some(map) = object.as_object_mut() {
        match value {
            Some(v) => map.insert(field.into(), v),
            None => map.remove(field),
        };
    }
}

fn str_at<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

/// Now, as Kubernetes writes timestamps (RFC 3339, seconds, UTC).
pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn encode_continue(token: &ContinueToken) -> Result<String, ApiError> {
    let bytes = serde_json::to_vec(token).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn decode_continue(token: &str) -> Result<ContinueToken, ApiError> {
    let bad = || ApiError::BadRequest(format!("invalid continue token {token:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// Random uids and name suffixes (splitmix64 seeded from the process's random hasher keys).
struct IdSource {
    state: u64,
}

impl IdSource {
    fn new() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        Self { state: h.finish() }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A version-4 UUID.
    fn uid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        let a = (a & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
        let b = (b & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xFFFF,
            a & 0xFFFF,
            b >> 48,
            b & 0xFFFF_FFFF_FFFF
        )
    }

    /// Five characters for `generateName`, from the real server's alphabet.
    fn suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut n = self.next();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(n % ALPHABET.len() as u64) as usize];
                n /= ALPHABET.len() as u64;
                char::from(c)
            })
            .collect()
    }
}
