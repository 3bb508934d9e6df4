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
use std::collections::{BTreeMap, BTreeSet, HashMap};
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

impl Diagnostic {
    /// An error about a whole file (or directory): no document, line or object.
    pub fn file_error(file: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            file: file.into(),
            document: None,
            line: None,
            object: None,
            message: message.into(),
        }
    }
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
#[derive(Debug, Clone, PartialEq)]
struct Tracked {
    spec_hash: [u8; 32],
    generation: i64,
    created: Time,
}

/// Bounds on what a config directory can make the provider read.
pub mod limits {
    /// Directory levels below the config directory that are read.
    pub const MAX_DEPTH: usize = 16;
    /// YAML files read; the rest (in path order) are reported and left out.
    pub const MAX_FILES: usize = 10_000;
    /// The largest file read.
    pub const MAX_FILE_BYTES: u64 = 16 << 20;
    /// Documents in one file.
    pub const MAX_DOCUMENTS: usize = 10_000;
}

/// Reads a config directory, remembering each file's last good content (and, with a state
/// directory, keeping it across restarts).
#[derive(Debug)]
pub struct FileProvider {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileEntry>,
    tracked: HashMap<(Kind, ObjectKey), Tracked>,
    state: Option<crate::state::StateDir>,
}

impl FileProvider {
    /// A provider for `dir`; nothing is read until [`FileProvider::load`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: BTreeMap::new(),
            tracked: HashMap::new(),
            state: None,
        }
    }

    /// A provider that keeps each file's last good content, and each object's generation and
    /// creation time, in `state_dir` too: after a restart, a file that does not parse still
    /// contributes its last good content, and route precedence (by creation time) holds.
    pub fn with_state_dir(dir: impl Into<PathBuf>, state_dir: &Path) -> std::io::Result<Self> {
        let state = crate::state::StateDir::open(state_dir)?;
        let tracked = state
            .read_objects()
            .into_iter()
            .map(|(kind, key, generation, created, spec_hash)| {
                (
                    (kind, key),
                    Tracked {
                        spec_hash,
                        generation,
                        created,
                    },
                )
            })
            .collect();
        Ok(Self {
            dir: dir.into(),
            files: BTreeMap::new(),
            tracked,
            state: Some(state),
        })
    }

    /// The directory read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the directory (re-parsing only files whose content changed) and returns the
    /// objects in force.
    pub fn load(&mut self) -> Load {
        self.load_deferring(&BTreeSet::new())
    }

    /// Like [`FileProvider::load`], except that the files in `deferred` (being written) keep
    /// the content they had: a half-written file is never applied.
    pub fn load_deferring(&mut self, deferred: &BTreeSet<PathBuf>) -> Load {
        let mut diagnostics = Vec::new();
        let mut paths = match collect_yaml(&self.dir, &mut diagnostics) {
            Ok(paths) => paths,
            Err(e) => {
                let message = format!(
                    "cannot read the config directory: {e}; keeping the last good configuration"
                );
                diagnostics.push(Diagnostic::file_error(
                    self.dir.display().to_string(),
                    message,
                ));
                // Keep everything as it was.
                self.files.keys().cloned().collect()
            }
        };
        paths.sort();
        let mut seen = BTreeMap::new();
        for path in &paths {
            let rel = self.relative(path);
            let previous = self.files.remove(path);
            if deferred.contains(path) {
                // Being written: what it held stays (a new file contributes nothing yet).
                if let Some(entry) = previous {
                    seen.insert(path.clone(), entry);
                }
                continue;
            }
            let entry = previous.unwrap_or_default();
            let entry = match read_capped(path) {
                Ok(bytes) => {
                    let fresh = entry.hash == [0; 32];
                    let mut entry = refresh(entry, &rel, &bytes, &mut self.tracked);
                    if let Some(state) = &self.state {
                        keep_state(state, &rel, &bytes, fresh, &mut entry, &mut self.tracked);
                    }
                    entry
                }
                Err(ReadError::Gone) => continue,
                Err(e) => {
                    let mut entry = FileEntry {
                        diagnostics: vec![Diagnostic::file_error(
                            rel.clone(),
                            format!("{e}; keeping its last good content"),
                        )],
                        ..entry
                    };
                    if entry.good.is_empty()
                        && let Some(state) = &self.state
                    {
                        restore(state, &rel, &mut entry, &mut self.tracked);
                    }
                    entry
                }
            };
            seen.insert(path.clone(), entry);
        }
        if let Some(state) = &self.state {
            let kept: BTreeSet<String> = seen.keys().map(|p| self.relative(p)).collect();
            state.forget_files_except(&kept);
        }
        self.files = seen;
        // Merge: first definition wins.
        let mut input = InputSet::default();
        let mut origin: HashMap<(Kind, ObjectKey), (String, usize)> = HashMap::new();
        for (path, entry) in &self.files {
            let rel = self.relative(path);
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
        if let Some(state) = &self.state {
            let mut objects: Vec<_> = self
                .tracked
                .iter()
                .map(|((kind, key), t)| {
                    (
                        *kind,
                        key.clone(),
                        t.generation,
                        t.created.clone(),
                        t.spec_hash,
                    )
                })
                .collect();
            objects.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            if let Err(e) = state.write_objects(&objects) {
                tracing::warn!("cannot keep object generations in the state directory: {e}");
            }
        }
        diagnostics.sort();
        Load { input, diagnostics }
    }

    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.dir)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// With a state directory: remembers content that parsed, or (the first time a file is read
/// since start) brings back what it held before when it does not parse now.
fn keep_state(
    state: &crate::state::StateDir,
    rel: &str,
    bytes: &[u8],
    fresh: bool,
    entry: &mut FileEntry,
    tracked: &mut HashMap<(Kind, ObjectKey), Tracked>,
) {
    let failed = entry
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error);
    if !failed {
        if let Err(e) = state.write_file(rel, bytes) {
            tracing::warn!(
                file = rel,
                "cannot keep the file's content in the state directory: {e}"
            );
        }
    } else if fresh && entry.good.is_empty() {
        restore(state, rel, entry, tracked);
    }
}

/// Brings back a file's last good content from the state directory (after a restart).
fn restore(
    state: &crate::state::StateDir,
    rel: &str,
    entry: &mut FileEntry,
    tracked: &mut HashMap<(Kind, ObjectKey), Tracked>,
) {
    let Some(bytes) = state.read_file(rel) else {
        return;
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return;
    };
    let mut objects = Vec::new();
    for doc in parse_documents(text) {
        match doc {
            ParsedDocument::Object {
                document, object, ..
            } => objects.push((document, *object)),
            ParsedDocument::Skipped { .. } => {}
            ParsedDocument::Invalid { .. } => return,
        }
    }
    for (_, object) in &mut objects {
        stamp(object, tracked);
    }
    entry.good = objects;
    let count = entry.good.len();
    let mut noted = false;
    for d in &mut entry.diagnostics {
        if d.message.starts_with("file not applied") {
            d.message = format!(
                "file not applied: its last good content from before the control plane restarted \
                 ({count} objects) stays in force until it is fixed"
            );
            noted = true;
        }
    }
    if !noted {
        entry.diagnostics.push(Diagnostic::file_error(
            rel.to_string(),
            format!(
                "its last good content from before the control plane restarted ({count} objects) \
                 stays in force"
            ),
        ));
    }
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    /// It is gone (deleted between listing and reading).
    #[error("gone")]
    Gone,
    /// A FIFO, socket or device named like a YAML file.
    #[error("not a regular file")]
    NotAFile,
    /// Over [`limits::MAX_FILE_BYTES`].
    #[error("larger than {} bytes", limits::MAX_FILE_BYTES)]
    TooLarge,
    /// The operating system's error.
    #[error("cannot read: {0}")]
    Io(std::io::Error),
}

/// Reads a regular file of at most [`limits::MAX_FILE_BYTES`].
fn read_capped(path: &Path) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    let io = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ReadError::Gone
        } else {
            ReadError::Io(e)
        }
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile);
    }
    if meta.len() > limits::MAX_FILE_BYTES {
        return Err(ReadError::TooLarge);
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(limits::MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limits::MAX_FILE_BYTES {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
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
            entry.diagnostics.push(Diagnostic::file_error(
                rel.to_string(),
                format!("not UTF-8 text ({e}); keeping its last good content"),
            ));
            return entry;
        }
    };
    let mut objects = Vec::new();
    let mut failed = false;
    let documents = parse_documents(text);
    if documents.len() > limits::MAX_DOCUMENTS {
        failed = true;
        entry.diagnostics.push(Diagnostic::file_error(
            rel.to_string(),
            format!(
                "{} documents, more than the {} a file may hold",
                documents.len(),
                limits::MAX_DOCUMENTS
            ),
        ));
    }
    for doc in documents.into_iter().take(limits::MAX_DOCUMENTS) {
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
        entry.diagnostics.push(Diagnostic::file_error(
            rel.to_string(),
            format!("file not applied: {kept}"),
        ));
    } else {
        for (_, object) in &mut objects {
            stamp(object, tracked);
        }
        entry.good = objects;
    }
    entry
}

/// Collects YAML files under `dir` (hidden entries skipped), following directory symlinks
/// once each: a directory reached again (a symlink loop) is reported and not read again, and
/// so are levels below [`limits::MAX_DEPTH`] and files past [`limits::MAX_FILES`].
fn collect_yaml(dir: &Path, diagnostics: &mut Vec<Diagnostic>) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut visited = BTreeSet::new();
    if let Some(id) = dir_id(dir) {
        visited.insert(id);
    }
    let mut capped = false;
    walk(
        dir,
        dir,
        0,
        &mut visited,
        &mut out,
        &mut capped,
        diagnostics,
    )?;
    Ok(out)
}

/// The identity of a directory (device and inode), whatever path reaches it.
fn dir_id(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        path.canonicalize()
            .ok()
            .map(|p| (0, Sha256::digest(p.to_string_lossy().as_bytes())[0] as u64))
    }
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    visited: &mut BTreeSet<(u64, u64)>,
    out: &mut Vec<PathBuf>,
    capped: &mut bool,
    diagnostics: &mut Vec<Diagnostic>,
) -> std::io::Result<()> {
    let problem = |severity: Severity, path: &Path, message: String| Diagnostic {
        severity,
        file: path
            .strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string(),
        document: None,
        line: None,
        object: None,
        message,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type()?;
        let is_dir = file_type.is_dir() || (file_type.is_symlink() && path.is_dir());
        if is_dir {
            if depth + 1 > limits::MAX_DEPTH {
                diagnostics.push(problem(
                    Severity::Warning,
                    &path,
                    format!(
                        "more than {} directory levels deep; not read",
                        limits::MAX_DEPTH
                    ),
                ));
                continue;
            }
            match dir_id(&path) {
                Some(id) if !visited.insert(id) => {
                    diagnostics.push(problem(
                        Severity::Warning,
                        &path,
                        "a directory already read (a symlink loop or a second link to it); not read again".to_string(),
                    ));
                    continue;
                }
                None => continue,
                Some(_) => {}
            }
            // A subdirectory that cannot be read is reported; the rest is read.
            if let Err(e) = walk(root, &path, depth + 1, visited, out, capped, diagnostics) {
                diagnostics.push(problem(
                    Severity::Error,
                    &path,
                    format!("cannot read the directory: {e}"),
                ));
            }
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        ) {
            if out.len() >= limits::MAX_FILES {
                if !*capped {
                    *capped = true;
                    diagnostics.push(problem(
                        Severity::Error,
                        &path,
                        format!(
                            "more than {} YAML files; this one and the rest are not read",
                            limits::MAX_FILES
                        ),
                    ));
                }
                continue;
            }
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
///
/// A file being written (modified, and not closed since) keeps its previous content until the
/// writer closes it, or until [`OPEN_WRITE_LIMIT`] passes without another change to it: a
/// file written in pieces, or truncated before it is rewritten, is never applied half-written.
pub fn watch(
    dir: PathBuf,
    debounce: Duration,
) -> Result<tokio_watch::Receiver<Arc<Load>>, notify::Error> {
    watch_with(dir, debounce, None)
}

/// How long a file that was modified and not closed keeps its previous content.
pub const OPEN_WRITE_LIMIT: Duration = Duration::from_secs(2);

/// What a file-system event says about a path.
enum Change {
    /// Written to, and possibly still open for writing.
    Written(Vec<PathBuf>),
    /// Closed after writing, removed, or moved into place: complete.
    Settled(Vec<PathBuf>),
    /// A timer: nothing new, only time passed.
    Tick,
}

/// [`watch`], keeping state in `state_dir` too (see [`FileProvider::with_state_dir`]).
pub fn watch_with(
    dir: PathBuf,
    debounce: Duration,
    state_dir: Option<PathBuf>,
) -> Result<tokio_watch::Receiver<Arc<Load>>, notify::Error> {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
    use notify::{RecursiveMode, Watcher};
    // Paths reported by the watcher and paths read from the directory must agree.
    let dir = dir.canonicalize().map_err(notify::Error::io)?;
    let mut provider = match &state_dir {
        Some(state) => {
            FileProvider::with_state_dir(dir.clone(), state).map_err(notify::Error::io)?
        }
        None => FileProvider::new(dir.clone()),
    };
    let first = provider.load();
    log_diagnostics(&first.diagnostics, &[]);
    let (tx, rx) = tokio_watch::channel(Arc::new(first));
    let (event_tx, mut event_rx) = tokio::sync::mpsc::unbounded_channel::<Change>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(e) = event else {
            let _ = event_tx.send(Change::Settled(Vec::new()));
            return;
        };
        let change = match e.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => Change::Settled(e.paths),
            EventKind::Access(_) => return,
            EventKind::Modify(ModifyKind::Data(_)) | EventKind::Create(_) => {
                Change::Written(e.paths)
            }
            _ => Change::Settled(e.paths),
        };
        let _ = event_tx.send(change);
    })?;
    watcher.watch(&dir, RecursiveMode::Recursive)?;
    tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        // When the last load was applied (none yet: quiet).
        let mut last_load: Option<tokio::time::Instant> = None;
        // Files being written, and when they last changed.
        let mut writing: BTreeMap<PathBuf, tokio::time::Instant> = BTreeMap::new();
        loop {
            // The next event, or the moment a file being written is taken as it is.
            let expiry = writing.values().min().map(|at| *at + OPEN_WRITE_LIMIT);
            let change = tokio::select! {
                change = event_rx.recv() => match change {
                    Some(change) => change,
                    None => return,
                },
                () = sleep_until(expiry) => Change::Tick,
            };
            note(&mut writing, change);
            let window = change_window(last_load, debounce);
            // Wait until no event arrived for `window`, but not forever while files keep
            // changing.
            let deadline =
                tokio::time::Instant::now() + (debounce * 10).max(Duration::from_secs(1));
            loop {
                let wait =
                    window.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                match tokio::time::timeout(wait, event_rx.recv()).await {
                    Ok(Some(change)) if tokio::time::Instant::now() < deadline => {
                        note(&mut writing, change);
                        continue;
                    }
                    Ok(Some(change)) => {
                        note(&mut writing, change);
                        break;
                    }
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let now = tokio::time::Instant::now();
            writing.retain(|_, at| now.duration_since(*at) < OPEN_WRITE_LIMIT);
            let deferred: BTreeSet<PathBuf> = writing.keys().cloned().collect();
            let previous = tx.borrow().clone();
            let next = provider.load_deferring(&deferred);
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

/// Records what an event says about the files being written.
fn note(writing: &mut BTreeMap<PathBuf, tokio::time::Instant>, change: Change) {
    match change {
        Change::Written(paths) => {
            for path in paths {
                writing.insert(path, tokio::time::Instant::now());
            }
        }
        Change::Settled(paths) => {
            for path in paths {
                writing.remove(&path);
            }
        }
        Change::Tick => {}
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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
