//! The file provider's state directory: what must survive a restart of the control plane so
//! that a restart never changes what is served.
//!
//! ```text
//!  STATE/files/<sha256 of the file's path>.yaml   the last content of each file that parsed
//!  STATE/objects.json                             each object's generation and creation time
//! ```
//!
//! Writes are atomic (a temporary file renamed into place); the directory is private to the
//! control plane (mode 0700).

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use trellis_model::core::Time;
use trellis_model::{Kind, ObjectKey};

/// An object's bookkeeping as kept on disk: kind, key, generation, creation time, spec hash.
pub type TrackedObject = (Kind, ObjectKey, i64, Time, [u8; 32]);

/// The state directory.
#[derive(Debug)]
pub struct StateDir {
    files: PathBuf,
    objects: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ObjectRecord {
    kind: String,
    namespace: String,
    name: String,
    generation: i64,
    created: Time,
    spec_sha256: String,
}

impl StateDir {
    /// Opens (creating it if needed) the state directory at `dir`.
    pub fn open(dir: &Path) -> std::io::Result<StateDir> {
        let files = dir.join("files");
        std::fs::create_dir_all(&files)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(StateDir {
            files,
            objects: dir.join("objects.json"),
        })
    }

    fn file_path(&self, rel: &str) -> PathBuf {
        self.files.join(format!(
            "{}.yaml",
            hex::encode(Sha256::digest(rel.as_bytes()))
        ))
    }

    /// The last good content of the config file `rel`, if kept.
    pub fn read_file(&self, rel: &str) -> Option<Vec<u8>> {
        std::fs::read(self.file_path(rel)).ok()
    }

    /// Keeps `bytes` as the last good content of `rel` (if it changed).
    pub fn write_file(&self, rel: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.file_path(rel);
        if std::fs::read(&path).is_ok_and(|old| old == bytes) {
            return Ok(());
        }
        write_atomically(&path, bytes)
    }

    /// Forgets the files not in `kept` (config files that were removed).
    pub fn forget_files_except(&self, kept: &BTreeSet<String>) {
        let keep: BTreeSet<PathBuf> = kept.iter().map(|rel| self.file_path(rel)).collect();
        let Ok(entries) = std::fs::read_dir(&self.files) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "yaml") && !keep.contains(&path) {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Every object's bookkeeping, as last written (nothing if there is none, or it does not
    /// read).
    pub fn read_objects(&self) -> Vec<TrackedObject> {
        let Ok(bytes) = std::fs::read(&self.objects) else {
            return Vec::new();
        };
        let records: Vec<ObjectRecord> = serde_json::from_slice(&bytes).unwrap_or_default();
        records
            .into_iter()
            .filter_map(|r| {
                let kind = Kind::ALL.into_iter().find(|k| k.name() == r.kind)?;
                let hash: [u8; 32] = hex::decode(&r.spec_sha256).ok()?.try_into().ok()?;
                Some((
                    kind,
                    ObjectKey::new(r.namespace, r.name),
                    r.generation,
                    r.created,
                    hash,
                ))
            })
            .collect()
    }

    /// Writes every object's bookkeeping (when it changed).
    pub fn write_objects(&self, objects: &[TrackedObject]) -> std::io::Result<()> {
        let records: Vec<ObjectRecord> = objects
            .iter()
            .map(|(kind, key, generation, created, hash)| ObjectRecord {
                kind: kind.name().to_string(),
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                generation: *generation,
                created: created.clone(),
                spec_sha256: hex::encode(hash),
            })
            .collect();
        let bytes = serde_json::to_vec_pretty(&records).map_err(std::io::Error::other)?;
        if std::fs::read(&self.objects).is_ok_and(|old| old == bytes) {
            return Ok(());
        }
        write_atomically(&self.objects, &bytes)
    }
}

/// Writes `bytes` to `path` through a temporary file renamed into place.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
