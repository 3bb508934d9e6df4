//! Status going back: the report the admin endpoint serves, the status files written in file
//! mode, and the `trellis status` command that prints them.
//!
//! ```text
//!  Translation.status ──carry transition times──► StatusReport ─┬─► GET /status (JSON)
//!                                                                ├─► --status-dir/<kind>/<ns>/<name>.yaml
//!                                                                └─► trellis status (table)
//! ```

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use trellis_model::core::{Condition, Time};
use trellis_model::{InputSet, Kind, ObjectKey};
use trellis_sources::Diagnostic;
use trellis_translate::StatusSet;
use trellis_translate::conditions::carry_transition_times;

/// An object's identity and status, shaped like the Kubernetes object it belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusObject {
    /// `gateway.networking.k8s.io/v1`.
    pub api_version: String,
    /// `GatewayClass`, `Gateway`, `HTTPRoute`.
    pub kind: String,
    /// Name, namespace and generation.
    pub metadata: StatusMetadata,
    /// The status, as the Kubernetes provider would write it.
    pub status: serde_json::Value,
}

/// Identifying metadata of a status object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusMetadata {
    /// Name.
    pub name: String,
    /// Namespace (absent for cluster-scoped kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The generation the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// What `GET /status` returns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// How many times the configuration was translated since start.
    pub translations: u64,
    /// Status of every managed object.
    pub objects: Vec<StatusObject>,
    /// Problems with the inputs (files that do not parse, duplicates, skipped kinds).
    pub diagnostics: Vec<Diagnostic>,
}

/// Builds status reports, keeping condition transition times stable across translations.
#[derive(Debug, Default)]
pub struct StatusTracker {
    /// Conditions last reported, by object and by the path of their array in the status.
    previous: BTreeMap<(Kind, ObjectKey), BTreeMap<String, Vec<Condition>>>,
}

impl StatusTracker {
    /// Turns a translation's status into a report, carrying transition times of unchanged
    /// conditions.
    pub fn report(
        &mut self,
        input: &InputSet,
        status: &StatusSet,
        diagnostics: &[Diagnostic],
        translations: u64,
        now: &Time,
    ) -> StatusReport {
        let mut objects = Vec::new();
        let mut next = BTreeMap::new();
        let mut push =
            |kind: Kind, key: &ObjectKey, generation: Option<i64>, mut value: serde_json::Value| {
                // Every "conditions" array in the status gets stable times.
                let id = (kind, key.clone());
                let previous = self.previous.remove(&id).unwrap_or_default();
                let mut current = BTreeMap::new();
                visit_conditions(
                    &mut value,
                    "",
                    &mut |path: &str, conditions: &mut Vec<Condition>| {
                        let before = previous.get(path).map(Vec::as_slice).unwrap_or_default();
                        carry_transition_times(conditions, before, now);
                        current.insert(path.to_string(), conditions.clone());
                    },
                );
                next.insert(id, current);
                objects.push(StatusObject {
                    api_version: kind.api_version().to_string(),
                    kind: kind.name().to_string(),
                    metadata: StatusMetadata {
                        name: key.name.clone(),
                        namespace: (!key.namespace.is_empty()).then(|| key.namespace.clone()),
                        generation,
                    },
                    status: value,
                });
            };
        for (key, s) in &status.gateway_classes {
            let generation = input
                .gateway_classes
                .get(key)
                .and_then(|o| o.metadata.generation);
            push(Kind::GatewayClass, key, generation, to_value(s));
        }
        for (key, s) in &status.gateways {
            let generation = input.gateways.get(key).and_then(|o| o.metadata.generation);
            push(Kind::Gateway, key, generation, to_value(s));
        }
        for (key, s) in &status.http_routes {
            let generation = input
                .http_routes
                .get(key)
                .and_then(|o| o.metadata.generation);
            push(Kind::HttpRoute, key, generation, to_value(s));
        }
        for (key, s) in &status.authorization_policies {
            let generation = input
                .authorization_policies
                .get(key)
                .and_then(|o| o.metadata.generation);
            push(Kind::AuthorizationPolicy, key, generation, to_value(s));
        }
        for (key, s) in &status.rate_limit_policies {
            let generation = input
                .rate_limit_policies
                .get(key)
                .and_then(|o| o.metadata.generation);
            push(Kind::RateLimitPolicy, key, generation, to_value(s));
        }
        for (key, s) in &status.wasm_filters {
            let generation = input
                .wasm_filters
                .get(key)
                .and_then(|o| o.metadata.generation);
            push(Kind::WasmFilter, key, generation, to_value(s));
        }
        self.previous = next;
        StatusReport {
            translations,
            objects,
            diagnostics: diagnostics.to_vec(),
        }
    }
}

fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// Calls `f` with the path and contents of every `conditions` array in a status value
/// (Gateway conditions, listener conditions, route parent conditions), writing changes back.
fn visit_conditions(
    value: &mut serde_json::Value,
    path: &str,
    f: &mut dyn FnMut(&str, &mut Vec<Condition>),
) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let here = format!("{path}.{k}");
                if k == "conditions"
                    && let Ok(mut conditions) = serde_json::from_value::<Vec<Condition>>(v.clone())
                {
                    f(&here, &mut conditions);
                    *v = to_value(&conditions);
                } else {
                    visit_conditions(v, &here, f);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                visit_conditions(v, &format!("{path}[{i}]"), f);
            }
        }
        _ => {}
    }
}

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

    /// Where an object's status goes: `DIR/<plural>/<namespace>/<name>.yaml`; `None` for names
    /// that are not DNS names (the sources refuse those; this keeps every write inside `DIR`
    /// whatever arrives).
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
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("status")
    ));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}

/// Arguments of `trellis status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// How to reach the control plane's admin endpoint.
    #[command(flatten)]
    pub admin: crate::admin::AdminClient,
    /// Print the full report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Fetches `/status` from a running control plane and prints it.
pub fn run_command(args: &StatusArgs) -> anyhow::Result<()> {
    let body = crate::admin::get_blocking(&args.admin, "/status")?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let report: StatusReport =
        serde_json::from_str(&body).context("unexpected /status response")?;
    print!("{}", render_table(&report));
    Ok(())
}

/// The report as a table: one line per object with its main conditions, then problems.
pub fn render_table(report: &StatusReport) -> String {
    let mut rows = vec![[
        "KIND".to_string(),
        "NAME".to_string(),
        "ACCEPTED".to_string(),
        "PROGRAMMED/RESOLVED".to_string(),
        "DETAIL".to_string(),
    ]];
    for o in &report.objects {
        let name = match &o.metadata.namespace {
            Some(ns) => format!("{ns}/{}", o.metadata.name),
            None => o.metadata.name.clone(),
        };
        let conditions = top_conditions(o);
        let get = |t: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == t)
                .map(|c| {
                    if c.status == "True" {
                        "True".to_string()
                    } else {
                        format!("False ({})", c.reason)
                    }
                })
                .unwrap_or_else(|| "-".to_string())
        };
        let second = if o.kind == "HTTPRoute" {
            get("ResolvedRefs")
        } else if o.kind == "GatewayClass" {
            "-".to_string()
        } else {
            get("Programmed")
        };
        let detail = conditions
            .iter()
            .find(|c| c.status != "True")
            .map(|c| c.message.clone())
            .unwrap_or_else(|| detail_ok(o));
        rows.push([o.kind.clone(), name, get("Accepted"), second, detail]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        for (i, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", r[i], w = *w));
        }
        out.push_str(&r[4]);
        out.push('\n');
    }
    if !report.diagnostics.is_empty() {
        out.push_str("\nInput problems:\n");
        for d in &report.diagnostics {
            out.push_str(&format!("  {d}\n"));
        }
    }
    out
}

/// Conditions that summarize an object: the object's own, or a route's per-parent ones.
fn top_conditions(o: &StatusObject) -> Vec<Condition> {
    let direct = o.status.get("conditions").cloned();
    let from_parents = o
        .status
        .get("parents")
        .and_then(|p| p.as_array())
        .map(|parents| {
            parents
                .iter()
                .filter_map(|p| p.get("conditions").cloned())
                .flat_map(|c| serde_json::from_value::<Vec<Condition>>(c).unwrap_or_default())
                .collect::<Vec<_>>()
        });
    match (direct, from_parents) {
        (Some(c), _) => serde_json::from_value(c).unwrap_or_default(),
        (None, Some(c)) => {
            // The worst condition per type across parents.
            let mut by_type: BTreeMap<String, Condition> = BTreeMap::new();
            for c in c {
                let entry = by_type.entry(c.type_.clone()).or_insert_with(|| c.clone());
                if c.status != "True" {
                    *entry = c;
                }
            }
            by_type.into_values().collect()
        }
        _ => Vec::new(),
    }
}

fn detail_ok(o: &StatusObject) -> String {
    match o.kind.as_str() {
        "Gateway" => {
            let addresses: Vec<String> = o
                .status
                .get("addresses")
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.get("value")?.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let routes: i64 = o
                .status
                .get("listeners")
                .and_then(|l| l.as_array())
                .map(|l| {
                    l.iter()
                        .filter_map(|l| l.get("attachedRoutes")?.as_i64())
                        .sum()
                })
                .unwrap_or(0);
            format!(
                "addresses [{}], {routes} attached routes",
                addresses.join(", ")
            )
        }
        "HTTPRoute" => {
            let n = o
                .status
                .get("parents")
                .and_then(|p| p.as_array())
                .map_or(0, Vec::len);
            format!("{n} parent(s)")
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
        assert!(dir.join("httproutes/apps/fine.yaml").exists());
        let mut everything = Vec::new();
        let mut stack = vec![tmp.path().to_path_buf()];
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
        assert_eq!(everything, [dir.join("httproutes/apps/fine.yaml")]);
    }
}
