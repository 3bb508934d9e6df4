//! The file provider: a directory of Kubernetes YAML, read into an [`InputSet`] and watched.
//!
//! Rules:
//! - Every `*.yaml`/`*.yml` under the directory (recursively, hidden entries skipped) is read,
//!   in path order; each may hold many documents.
//! - A file that does not parse (bad YAML, a field of the wrong type, a missing name) is
//!   reported with its file, document, line and reason, and its **last good content stays in
//!   force**; a file that never parsed contributes nothing.
//! - Kinds Trellis does not read are skipped with a warning.
//! - The same object defined twice: the first definition in path order wins; the other is
//!   reported.
//! - Like an API server, the provider keeps `metadata.generation` (bumped when the spec
//!   changes) and `metadata.creationTimestamp` (first seen) for objects that do not set them.

use crate::parse::{ParsedDocument, now, parse_documents};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch as tokio_watch;
use trellis_model::core::Time;
use trellis_model::{InputSet, Kind, Object, ObjectKey};

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something was not applied.
    Error,
    /// Something was ignored on purpose.
    Warning,
}

/// A problem with an input file, for logs, `trellis status` and the admin endpoint.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file, relative to the config directory; `kubernetes` for objects read from the
    /// API server by the Kubernetes provider (`trellis-kube`), which reports through the same
    /// type.
    pub file: String,
    /// 1-based document index in the file, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// 1-based line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The object (`Kind ns/name`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// What is wrong, and what happened because of it.
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(d) = self.document {
            write!(f, " (document {d})")?;
        }
        if let Some(o) = &self.object {
            write!(f, " {o}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The result of reading the directory: the objects in force and what went wrong.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Load {
    /// Objects in force (including last good content of files that now fail).
    pub input: InputSet,
    /// Problems, sorted by file and line.
    pub diagnostics: Vec<Diagnostic>,
}

/// One file's state.
#[derive(Debug, Default)]
struct FileEntry {
    /// Hash of the content last read.
    hash: [u8; 32],
    /// Objects of the last content that parsed completely: (document, object).
    good: Vec<(usize, Object)>,
    /// Problems with the content last read.
    diagnostics: Vec<Diagnostic>,
}

/// Generation bookkeeping for one object.
#[derive(Debug)]
struct Tracked {
    spec_hash: [u8; 32],
    generation: i64,
    created: Time,
}

/// Reads a config directory, remembering each file's last good content.
#[derive(Debug)]
pub struct FileProvider {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileEntry>,
    tracked: HashMap<(Kind, ObjectKey), Tracked>,
}

impl FileProvider {
    /// A provider for `dir`; nothing is read until [`FileProvider::load`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: BTreeMap::new(),
            tracked: HashMap::new(),
        }
    }

    /// The directory read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the directory (re-parsing only files whose content changed) and returns the
    /// objects in force.
    pub fn load(&mut self) -> Load {
        let mut diagnostics = Vec::new();
        let mut paths = Vec::new();
        if let Err(e) = collect_yaml(&self.dir, &mut paths) {
            diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: self.dir.display().to_string(),
                document: None,
                line: None,
                object: None,
                message: format!(
                    "cannot read the config directory: {e}; keeping the last good configuration"
                ),
            });
            // Keep everything as it was.
            paths = self.files.keys().cloned().collect();
        }
        paths.sort();
        let mut seen = BTreeMap::new();
        for path in &paths {
            let rel = path
                .strip_prefix(&self.dir)
                .unwrap_or(path)
                .display()
                .to_string();
            let entry = self.files.remove(path).unwrap_or_default();
            let entry = match std::fs::read(path) {
                Ok(bytes) => refresh(entry, &rel, &bytes, &mut self.tracked),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => FileEntry {
                    diagnostics: vec![Diagnostic {
                        severity: Severity::Error,
                        file: rel.clone(),
                        document: None,
                        line: None,
                        object: None,
                        message: format!("cannot read: {e}; keeping its last good content"),
                    }],
                    ..entry
                },
            };
            seen.insert(path.clone(), entry);
        }
        self.files = seen;
        // Merge: first definition wins.
        let mut input = InputSet::default();
        let mut origin: HashMap<(Kind, ObjectKey), (String, usize)> = HashMap::new();
        for (path, entry) in &self.files {
            let rel = path
                .strip_prefix(&self.dir)
                .unwrap_or(path)
                .display()
                .to_string();
            diagnostics.extend(entry.diagnostics.iter().cloned());
            for (document, object) in &entry.good {
                let id = (object.kind(), object.key());
                if let Some((first_file, first_doc)) = origin.get(&id) {
                    diagnostics.push(Diagnostic {
                        severity: Severity::Error,
                        file: rel.clone(),
                        document: Some(*document),
                        line: None,
                        object: Some(format!("{} {}", id.0, id.1)),
                        message: format!(
                            "duplicate: already defined in {first_file} (document {first_doc}); this definition is ignored"
                        ),
                    });
                    continue;
                }
                origin.insert(id, (rel.clone(), *document));
                input.insert(object.clone());
            }
        }
        // Forget generations of objects that are gone.
        self.tracked.retain(|id, _| input.contains(id.0, &id.1));
        // After a large configuration shrinks, give its table back too.
        if self.tracked.capacity() > 4 * self.tracked.len().max(64) {
            self.tracked.shrink_to_fit();
        }
        diagnostics.sort();
        Load { input, diagnostics }
    }
}

/// Fills `metadata.generation` and `metadata.creationTimestamp` where a file leaves them out,
/// the way an API server would: the generation starts at 1 and grows when the spec changes.
fn stamp(object: &mut Object, tracked: &mut HashMap<(Kind, ObjectKey), Tracked>) {
    let hash: [u8; 32] = Sha256::digest(object.spec_bytes()).into();
    let id = (object.kind(), object.key());
    let t = tracked.entry(id).or_insert_with(|| Tracked {
        spec_hash: hash,
        generation: 1,
        created: now(),
    });
    if t.spec_hash != hash {
        t.spec_hash = hash;
        t.generation += 1;
    }
    let (generation, created) = (t.generation, t.created.clone());
    let meta = object.metadata();
    if meta.generation.is_none() || meta.creation_timestamp.is_none() {
        let meta = object.metadata_mut();
        meta.generation.get_or_insert(generation);
        meta.creation_timestamp.get_or_insert(created);
    }
}

/// Re-parses a file if its content changed.
fn refresh(
    mut entry: FileEntry,
    rel: &str,
    bytes: &[u8],
    tracked: &mut HashMap<(Kind, ObjectKey), Tracked>,
) -> FileEntry {
    let hash: [u8; 32] = Sha256::digest(bytes).into();
    if hash == entry.hash && (entry.hash != [0; 32]) {
        return entry;
    }
    entry.hash = hash;
    entry.diagnostics.clear();
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            entry.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: rel.to_string(),
                document: None,
                line: None,
                object: None,
                message: format!("not UTF-8 text ({e}); keeping its last good content"),
            });
            return entry;
        }
    };
    let mut objects = Vec::new();
    let mut failed = false;
    for doc in parse_documents(text) {
        match doc {
            ParsedDocument::Object {
                document, object, ..
            } => objects.push((document, *object)),
            ParsedDocument::Skipped {
                document,
                line,
                api_version,
                kind,
                name,
            } => entry.diagnostics.push(Diagnostic {
                severity: Severity::Warning,
                file: rel.to_string(),
                document: Some(document),
                line: Some(line),
                object: Some(format!("{kind} {name}")),
                message: format!("kind {kind} ({api_version}) is not read by Trellis; skipped"),
            }),
            ParsedDocument::Invalid {
                document,
                line,
                object,
                message,
            } => {
                failed = true;
                entry.diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    file: rel.to_string(),
                    document: Some(document),
                    line: Some(line),
                    object,
                    message,
                });
            }
        }
    }
    if failed {
        let kept = if entry.good.is_empty() {
            "nothing from this file is applied until it is fixed".to_string()
        } else {
            format!(
                "the file's last good content ({} objects) stays in force until it is fixed",
                entry.good.len()
            )
        };
        entry.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            file: rel.to_string(),
            document: None,
            line: None,
            object: None,
            message: format!("file not applied: {kept}"),
        });
    } else {
        for (_, object) in &mut objects {
            stamp(object, tracked);
        }
        entry.good = objects;
    }
    entry
}

/// Collects YAML files under `dir`, skipping hidden entries.
fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() || (file_type.is_symlink() && path.is_dir()) {
            collect_yaml(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// How long a change arriving after a quiet period waits for the rest of its write (the
/// events of one file write or rename come within microseconds of each other).
pub const SETTLE: Duration = Duration::from_millis(10);

/// How long a change that arrives now waits before it is applied, given when the last load was
/// applied (`None`: never): after at least `debounce` without one, the [`SETTLE`] (or
/// `debounce`, if shorter); otherwise the change belongs to a burst and waits for `debounce`.
pub fn change_window(last_load: Option<tokio::time::Instant>, debounce: Duration) -> Duration {
    if last_load.is_none_or(|at| at.elapsed() >= debounce) {
        SETTLE.min(debounce)
    } else {
        debounce
    }
}

/// Loads `dir` and keeps reloading it when files change, publishing each new [`Load`]. Returns
/// once the first load is published; the watcher runs until the receiver is dropped.
///
/// A change arriving after at least `debounce` without one is applied once no other event
/// came for [`SETTLE`] (or `debounce`, if shorter): a lone edit reaches the proxies without
/// waiting out the window. Changes that keep coming within `debounce` of the last load are
/// coalesced: applied once none came for `debounce`, and at the latest after ten windows (at
/// least one second), so a burst costs at most two loads however long it is.
pub fn watch(
    dir: PathBuf,
    debounce: Duration,
) -> Result<tokio_watch::Receiver<Arc<Load>>, notify::Error> {
    use notify::{RecursiveMode, Watcher};
    let mut provider = FileProvider::new(dir.clone());
    let first = provider.load();
    log_diagnostics(&first.diagnostics, &[]);
    let (tx, rx) = tokio_watch::channel(Arc::new(first));
    let (event_tx, mut event_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event
            && !e.kind.is_access()
        {
            let _ = event_tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::Recursive)?;
    tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        // When the last load was applied (none yet: quiet).
        let mut last_load: Option<tokio::time::Instant> = None;
        while event_rx.recv().await.is_some() {
            let window = change_window(last_load, debounce);
            // Wait until no event arrived for `window`, but not forever while files keep
            // changing.
            let deadline =
                tokio::time::Instant::now() + (debounce * 10).max(Duration::from_secs(1));
            loop {
                let wait =
                    window.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                match tokio::time::timeout(wait, event_rx.recv()).await {
                    Ok(Some(())) if tokio::time::Instant::now() < deadline => continue,
                    Ok(None) => return,
                    _ => break,
                }
            }
            let previous = tx.borrow().clone();
            let next = provider.load();
            last_load = Some(tokio::time::Instant::now());
            if next == *previous {
                continue;
            }
            log_diagnostics(&next.diagnostics, &previous.diagnostics);
            tracing::info!(objects = next.input.len(), "config directory reloaded");
            if tx.send(Arc::new(next)).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Logs diagnostics that are new since the previous load.
fn log_diagnostics(current: &[Diagnostic], previous: &[Diagnostic]) {
    for d in current.iter().filter(|d| !previous.contains(d)) {
        match d.severity {
            Severity::Error => tracing::error!("{d}"),
            Severity::Warning => tracing::warn!("{d}"),
        }
    }
}
