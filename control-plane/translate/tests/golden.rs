//! Golden translator tests: `testdata/<name>.in.yaml` (Kubernetes objects) is translated and
//! compared with
//! - `testdata/<name>.out.yaml`: the status of every managed object and the IR, and
//! - `testdata/<name>.xds.yaml`: the Envoy resources of every proxy, as Envoy's JSON mapping.
//!
//! Regenerate after an intended change with:
//!
//! ```sh
//! TRELLIS_UPDATE_GOLDEN=1 cargo test -p trellis-translate --test golden
//! ```
//!
//! and review the diff. Without the variable, any difference fails the test (and CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde::Serialize;
use std::path::{Path, PathBuf};
use support::{load, options, render_xds, testdata};
use trellis_translate::{StatusSet, ir::Ir, translate};

#[derive(Serialize)]
struct Golden<'a> {
    status: &'a StatusSet,
    ir: &'a Ir,
}

fn check(path: &Path, actual: &str, update: bool, failures: &mut Vec<String>) {
    if update {
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
        failures.push(format!(
            "{} differs from the translation, first at line {}:\n  expected: {:?}\n  actual:   {:?}",
            path.display(),
            first + 1,
            expected.lines().nth(first).unwrap_or("<end>"),
            actual.lines().nth(first).unwrap_or("<end>"),
        ));
    }
}

#[test]
fn translations_match_the_golden_files() {
    let update = std::env::var_os("TRELLIS_UPDATE_GOLDEN").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(testdata())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    cases.sort();
    assert!(
        !cases.is_empty(),
        "no golden inputs in {}",
        testdata().display()
    );
    let mut failures = Vec::new();
    for input_path in cases {
        let base = input_path
            .to_string_lossy()
            .trim_end_matches(".in.yaml")
            .to_string();
        let input = load(&input_path);
        let options = options(&input);
        let translation = translate(&input, &options);
        // Translation is deterministic.
        assert_eq!(translation, translate(&input, &options));
        let golden = serde_saphyr::to_string(&Golden {
            status: &translation.status,
            ir: &translation.ir,
        })
        .unwrap();
        check(
            Path::new(&format!("{base}.out.yaml")),
            &golden,
            update,
            &mut failures,
        );
        let xds = serde_saphyr::to_string(&render_xds(&translation.ir)).unwrap();
        check(
            Path::new(&format!("{base}.xds.yaml")),
            &xds,
            update,
            &mut failures,
        );
    }
    assert!(
        failures.is_empty(),
        "{}\n\nIf the change is intended, regenerate with\n  TRELLIS_UPDATE_GOLDEN=1 cargo test -p trellis-translate --test golden\nand review the diff.",
        failures.join("\n\n")
    );
}
