//! Status files (`--status-dir`, file mode): one YAML file per managed object, where a user of
//! the file provider reads what Kubernetes would put in `.status`.
//!
//! ```text
//!  DIR/<plural>/<namespace>/<name>.yaml     (DIR/<plural>/<name>.yaml when cluster-scoped)
//! ```

use crate::report::{StatusObject, StatusReport};
use anyhow::Context;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use trellis_model::Kind;

/// Writes one YAML file per object under a directory, atomically, only when it changed, and
/// removes files of objects that are gone.
#[derive(Debug)]
pub struct StatusWriter {
    dir: PathBuf,
    written: BTreeMap<PathBuf, String>,
}

impl StatusWriter {
    /// A writer for `dir` (created on first write).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            written: BTreeMap::new(),
        }
    }

    /// Where an object's status goes; `None` for names that are not DNS names (the sources
    /// refuse those; this keeps every write inside the directory whatever arrives).
    fn path(&self, o: &StatusObject) -> Option<PathBuf> {
        let plural = Kind::ALL
            .into_iter()
            .find(|k| k.name() == o.kind)
            .map(Kind::plural)?;
        let mut p = self.dir.join(plural);
        if let Some(ns) = &o.metadata.namespace {
            if !trellis_sources::is_dns_label(ns) {
                return None;
            }
            p = p.join(ns);
        }
        if !trellis_sources::is_dns_subdomain(&o.metadata.name) {
            return None;
        }
        Some(p.join(format!("{}.yaml", o.metadata.name)))
    }

    /// Brings the directory in line with `report`.
    pub fn write(&mut self, report: &StatusReport) -> anyhow::Result<()> {
        let mut live = BTreeSet::new();
        for object in &report.objects {
            let Some(path) = self.path(object) else {
                continue;
            };
            let text = serde_saphyr::to_string(object).with_context(|| {
                format!(
                    "cannot render status of {} {}",
                    object.kind, object.metadata.name
                )
            })?;
            live.insert(path.clone());
            if self.written.get(&path) == Some(&text) {
                continue;
            }
            write_atomically(&path, &text)?;
            self.written.insert(path, text);
        }
        let gone: Vec<PathBuf> = self
            .written
            .keys()
            .filter(|p| !live.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", path.display()));
                }
            }
            self.written.remove(&path);
        }
        Ok(())
    }
}

/// Writes a file via a temporary file and a rename, so readers never see half a file.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("status path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    trellis_sources::state::write_atomically(path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::report::StatusMetadata;

    fn object(namespace: &str, name: &str) -> StatusObject {
        StatusObject {
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "HTTPRoute".into(),
            metadata: StatusMetadata {
                name: name.into(),
                namespace: Some(namespace.into()),
                generation: Some(1),
            },
            status: serde_json::json!({}),
        }
    }

    fn files(root: &Path) -> Vec<PathBuf> {
        let mut everything = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    everything.push(p);
                }
            }
        }
        everything.sort();
        everything
    }

    #[test]
    fn status_writer_never_writes_outside_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("status");
        let mut writer = StatusWriter::new(dir.clone());
        let report = StatusReport {
            objects: vec![
                object(&tmp.path().join("outside").display().to_string(), "x"),
                object("apps", "../../escaped"),
                object("apps", "web/rule/0"),
                object("apps", "fine"),
            ],
            ..StatusReport::default()
        };
        writer.write(&report).unwrap();
        assert_eq!(files(tmp.path()), [dir.join("httproutes/apps/fine.yaml")]);
    }

    #[test]
    fn files_of_objects_that_are_gone_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut writer = StatusWriter::new(tmp.path().to_path_buf());
        let both = StatusReport {
            objects: vec![object("apps", "a"), object("apps", "b")],
            ..StatusReport::default()
        };
        writer.write(&both).unwrap();
        assert_eq!(files(tmp.path()).len(), 2);
        let one = StatusReport {
            objects: vec![object("apps", "b")],
            ..StatusReport::default()
        };
        writer.write(&one).unwrap();
        assert_eq!(
            files(tmp.path()),
            [tmp.path().join("httproutes/apps/b.yaml")]
        );
    }
}
