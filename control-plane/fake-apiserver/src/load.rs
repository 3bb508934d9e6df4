//! Loading objects from YAML (or JSON) files: every document of every `.yaml`, `.yml` and
//! `.json` file under a directory, `kind: List` expanded, CustomResourceDefinitions first so
//! that the kinds they define can be loaded from the same directory.
//!
//! ```text
//!  DIR/**/*.yaml ──► documents ──► CRDs: store + register kinds
//!                              └─► the rest: kind looked up by apiVersion+kind ──► store.upsert
//! ```
//!
//! Objects are stored as written (status included), with the namespace defaulting to
//! `default`; an object whose kind is not registered is an error.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{ApiError, Error};
use crate::service::State;

/// Loads every object under `dir`; returns how many were stored.
pub(crate) fn load_dir(state: &State, dir: &Path) -> Result<usize, Error> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    let mut documents = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let docs = parse(&text).map_err(|message| Error::Parse {
            path: path.clone(),
            message,
        })?;
        documents.extend(docs.into_iter().map(|d| (path.clone(), d)));
    }
    store_all(state, documents).map_err(|failure| {
        let (path, what, source) = *failure;
        Error::Load {
            path,
            what,
            source: Box::new(source),
        }
    })
}

/// Loads the objects of one YAML stream (the admin API's `POST /fake/objects`).
pub(crate) fn load_text(state: &State, text: &str) -> Result<usize, ApiError> {
    let docs = parse(text).map_err(ApiError::BadRequest)?;
    let documents = docs.into_iter().map(|d| (PathBuf::new(), d)).collect();
    store_all(state, documents).map_err(|failure| {
        let (_, what, e) = *failure;
        match e {
            ApiError::NoSuchResource => {
                ApiError::BadRequest(format!("{what}: kind is not registered"))
            }
            other => other,
        }
    })
}

/// The files a `kustomization.yaml` in `dir` lists under `resources`, joined as one YAML stream
/// in their order: what `kubectl apply -k dir` applies when the kustomization only lists local
/// files. A listed directory or remote resource is an error, as are transformations this does
/// not apply (anything but `apiVersion`, `kind` and `resources`).
pub fn kustomization_yaml(dir: &Path) -> Result<String, Error> {
    let path = dir.join("kustomization.yaml");
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let unsupported = |message: String| Error::Parse {
        path: path.clone(),
        message,
    };
    let k: Value = serde_saphyr::from_str(&read(&path)?).map_err(|e| unsupported(e.to_string()))?;
    if let Some(other) = k.as_object().and_then(|o| {
        o.keys()
            .find(|key| !matches!(key.as_str(), "apiVersion" | "kind" | "resources"))
    }) {
        return Err(unsupported(format!("field {other} is not applied")));
    }
    let mut out = Vec::new();
    for resource in k["resources"].as_array().into_iter().flatten() {
        let Some(name) = resource.as_str() else {
            return Err(unsupported(format!("resource {resource} is not a path")));
        };
        let file = dir.join(name);
        if name.contains("://") || !file.is_file() {
            return Err(unsupported(format!("resource {name} is not a local file")));
        }
        out.push(read(&file)?);
    }
    Ok(out.join("\n---\n"))
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Every non-empty document, with `kind: List` expanded.
fn parse(text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for doc in docs {
        if doc.is_null() {
            continue;
        }
        if doc["kind"]
            .as_str()
            .is_some_and(|k| k == "List" || k.ends_with("List"))
            && let Some(items) = doc["items"].as_array()
        {
            out.extend(items.iter().cloned());
        } else {
            out.push(doc);
        }
    }
    Ok(out)
}

/// Where loading stopped: the file, the object (`Kind namespace/name`) and why.
type LoadFailure = Box<(PathBuf, String, ApiError)>;

fn store_all(state: &State, documents: Vec<(PathBuf, Value)>) -> Result<usize, LoadFailure> {
    let is_crd = |d: &Value| d["kind"] == "CustomResourceDefinition";
    let (crds, rest): (Vec<_>, Vec<_>) = documents.into_iter().partition(|(_, d)| is_crd(d));
    let mut count = 0;
    for (path, doc) in crds.into_iter().chain(rest) {
        let api_version = doc["apiVersion"].as_str().unwrap_or("").to_string();
        let kind_name = doc["kind"].as_str().unwrap_or("").to_string();
        let what = format!(
            "{kind_name} {}",
            match doc["metadata"]["namespace"].as_str() {
                Some(ns) => format!("{ns}/{}", doc["metadata"]["name"].as_str().unwrap_or("")),
                None => doc["metadata"]["name"].as_str().unwrap_or("").to_string(),
            }
        );
        let kind = state
            .registry()
            .by_kind(&api_version, &kind_name)
            .cloned()
            .ok_or_else(|| Box::new((path.clone(), what.clone(), ApiError::NoSuchResource)))?;
        let stored = state
            .store
            .upsert(&kind, doc)
            .map_err(|e| Box::new((path.clone(), what.clone(), e)))?;
        if is_crd(&stored) {
            state.register_crd(&stored);
        }
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::kustomization_yaml;
    use crate::error::Error;

    fn dir_with(kustomization: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kustomization.yaml"), kustomization).unwrap();
        std::fs::write(dir.path().join("a.yaml"), "kind: A\n").unwrap();
        std::fs::write(dir.path().join("b.yaml"), "kind: B\n").unwrap();
        dir
    }

    fn refusal(kustomization: &str) -> String {
        match kustomization_yaml(dir_with(kustomization).path()) {
            Err(Error::Parse { message, .. }) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn listed_files_are_joined_in_their_order() {
        let dir = dir_with("kind: Kustomization\nresources: [b.yaml, a.yaml]\n");
        assert_eq!(
            kustomization_yaml(dir.path()).unwrap(),
            "kind: B\n\n---\nkind: A\n"
        );
    }

    #[test]
    fn what_is_not_a_local_file_or_not_applied_is_refused() {
        assert_eq!(
            refusal("resources: [a.yaml]\nnamespace: other\n"),
            "field namespace is not applied"
        );
        assert_eq!(
            refusal("resources: [https://example.com/x.yaml]\n"),
            "resource https://example.com/x.yaml is not a local file"
        );
        assert_eq!(
            refusal("resources: [missing.yaml]\n"),
            "resource missing.yaml is not a local file"
        );
    }
}
