//! Golden translator tests, one directory per stage:
//!
//! - `testdata/gatewayapi/<case>.in.yaml` (Kubernetes objects) is translated, and the status
//!   of every managed object and the IR are compared with `<case>.out.yaml`;
//! - `testdata/ir/<case>.yaml` (the IR of one gateway proxy, or of one sidecar class for
//!   `sidecar*.yaml`) is rendered, and its Envoy resources, as
//!   Envoy's JSON mapping, are compared with `<case>.listeners.yaml`, `.routes.yaml`,
//!   `.clusters.yaml`, `.endpoints.yaml` and `.secrets.yaml` (a file per type it has).
//!
//! Every output of both stages also goes through `envoy --mode validate` (`envoy_validate.rs`).
//! Regenerate after an intended change with `./dev golden` (that is,
//! `TRELLIS_UPDATE_GOLDEN=1 cargo test -p trellis-translate --test golden`) and review the diff.
//! Without the variable, any difference, missing output or output without an input fails the
//! test (and CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use support::{IR_OUTPUTS, gateway_api_cases, ir_cases, load, options, read_ir, render_proxy};
use trellis_translate::{StatusSet, ir::Ir, translate};

#[derive(Serialize)]
struct Golden<'a> {
    status: &'a StatusSet,
    ir: &'a Ir,
}

struct Check {
    update: bool,
    failures: Vec<String>,
    written: BTreeSet<PathBuf>,
}

impl Check {
    fn new() -> Check {
        Check {
            update: std::env::var_os("TRELLIS_UPDATE_GOLDEN").is_some(),
            failures: Vec::new(),
            written: BTreeSet::new(),
        }
    }

    fn compare(&mut self, path: &Path, actual: &str) {
        self.written.insert(path.to_path_buf());
        if self.update {
            std::fs::write(path, actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(path).unwrap_or_default();
        if expected != actual {
            let first = expected
                .lines()
                .zip(actual.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(expected.lines().count().min(actual.lines().count()));
            self.failures.push(format!(
                "{} differs from the translation, first at line {}:\n  expected: {:?}\n  actual:   {:?}",
                path.display(),
                first + 1,
                expected.lines().nth(first).unwrap_or("<end>"),
                actual.lines().nth(first).unwrap_or("<end>"),
            ));
        }
    }

    /// Outputs in `dir` (files ending in one of `suffixes`) that no input produced: stale.
    fn stale(&mut self, dir: &Path, suffixes: &[&str]) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let output = suffixes.iter().any(|s| name.ends_with(s));
            if output && !self.written.contains(&path) {
                if self.update {
                    std::fs::remove_file(&path).unwrap();
                } else {
                    self.failures
                        .push(format!("{} has no input (stale output)", path.display()));
                }
            }
        }
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{}\n\nIf the change is intended, regenerate with\n  ./dev golden\nand review the diff.",
            self.failures.join("\n\n")
        );
    }
}

#[test]
fn gateway_api_objects_translate_to_the_golden_status_and_ir() {
    let mut check = Check::new();
    let cases = gateway_api_cases();
    assert!(cases.len() >= 60, "{} Gateway API cases", cases.len());
    for (input_path, out_path) in &cases {
        let input = load(input_path);
        let options = options(&input);
        let translation = translate(&input, &options);
        // Translation is deterministic.
        assert_eq!(translation, translate(&input, &options));
        let golden = serde_saphyr::to_string(&Golden {
            status: &translation.status,
            ir: &translation.ir,
        })
        .unwrap();
        check.compare(out_path, &golden);
    }
    println!("{} Gateway API cases", cases.len());
    check.stale(&support::testdata().join("gatewayapi"), &[".out.yaml"]);
    check.finish();
}

#[test]
fn ir_renders_to_the_golden_envoy_resources() {
    let mut check = Check::new();
    let cases = ir_cases();
    assert!(cases.len() >= 15, "{} IR cases", cases.len());
    for case in &cases {
        let proxy = read_ir(case);
        // The IR reads back as written.
        let text = serde_saphyr::to_string(&proxy).unwrap();
        assert_eq!(proxy.reread(&text), proxy, "{} reads back", case.display());
        let rendered = render_proxy(&proxy);
        let base = case.to_string_lossy().trim_end_matches(".yaml").to_string();
        for (kind, short) in IR_OUTPUTS {
            if let Some(resources) = rendered.get(short) {
                let text = serde_saphyr::to_string(resources).unwrap();
                check.compare(Path::new(&format!("{base}.{kind}.yaml")), &text);
            }
        }
    }
    println!("{} IR cases", cases.len());
    let suffixes: Vec<String> = IR_OUTPUTS
        .iter()
        .map(|(kind, _)| format!(".{kind}.yaml"))
        .collect();
    let suffixes: Vec<&str> = suffixes.iter().map(String::as_str).collect();
    check.stale(&support::testdata().join("ir"), &suffixes);
    check.finish();
}
