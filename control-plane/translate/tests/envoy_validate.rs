//! The Envoy-validate gate: every golden output (both stages), and translations of generated
//! inputs full of hostile values, must be accepted by `envoy --mode validate` (Envoy 1.40, as CI installs it).
//! Whatever Envoy would reject must have been refused by the translator with a condition.
//!
//! Needs Envoy (`ENVOY_BIN`, or `./dev setup`); skipped with a message without it, except in CI.
//! `TRELLIS_VALIDATE_CASES=N` sets how many generated inputs are checked (default 60).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use support::envoy::{envoy_or_skip, validate_all, validation_bootstrap};
use support::{IR_OUTPUTS, gateway_api_cases, ir_cases, load, load_text, options, render_xds};
use trellis_testgen::{Bytes, Seeded, generate};
use trellis_translate::translate;

/// Every golden output as Envoy would get it: the rendered IR cases (read back from their
/// output files), and every proxy of every Gateway API case, translated and rendered.
fn golden_cases() -> Vec<(String, Value)> {
    let mut cases = Vec::new();
    for case in ir_cases() {
        let base = case.to_string_lossy().trim_end_matches(".yaml").to_string();
        let mut resources = serde_json::Map::new();
        for (kind, short) in IR_OUTPUTS {
            let path = format!("{base}.{kind}.yaml");
            if let Ok(text) = std::fs::read_to_string(&path) {
                let list: Value = serde_saphyr::from_str(&text).unwrap();
                resources.insert(short.to_string(), list);
            }
        }
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        cases.push((
            format!("ir/{name}"),
            validation_bootstrap(&Value::Object(resources)),
        ));
    }
    for (input_path, _) in gateway_api_cases() {
        let input = load(&input_path);
        let translation = translate(&input, &options(&input));
        let name = input_path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        for (proxy, resources) in render_xds(&translation.ir) {
            let resources = serde_json::to_value(resources).unwrap();
            cases.push((
                format!("gatewayapi/{name} {proxy}"),
                validation_bootstrap(&resources),
            ));
        }
    }
    cases
}

fn report(refused: &[(String, String)]) -> String {
    refused
        .iter()
        .map(|(name, why)| {
            let last: Vec<&str> = why.lines().rev().take(3).collect();
            format!(
                "{name}:\n  {}",
                last.into_iter().rev().collect::<Vec<_>>().join("\n  ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_golden_output_is_accepted_by_envoy() {
    let Some(envoy) = envoy_or_skip("every_golden_output_is_accepted_by_envoy") else {
        return;
    };
    let cases = golden_cases();
    assert!(!cases.is_empty());
    let count = cases.len();
    let refused = validate_all(&envoy, cases);
    println!(
        "{count} golden configurations (IR cases and Gateway API proxies) validated by Envoy, {} refused",
        refused.len()
    );
    assert!(
        refused.is_empty(),
        "Envoy refuses golden output:\n{}",
        report(&refused)
    );
}

/// Translates `inputs` (name, YAML) and has Envoy validate every proxy's configuration.
fn validate_generated(envoy: &std::path::Path, inputs: Vec<(String, String)>, what: &str) {
    let mut cases = Vec::new();
    let mut resources = 0;
    let (mut accepted, mut refused_routes) = (0, 0);
    let mut why = std::collections::BTreeMap::<String, usize>::new();
    let count = inputs.len();
    let by_name: std::collections::BTreeMap<String, String> = inputs.iter().cloned().collect();
    for (name, yaml) in &inputs {
        let input = load_text(yaml, name, false);
        let translation = translate(&input, &options(&input));
        for status in translation.status.http_routes.values() {
            for parent in &status.parents {
                let ok = parent
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Accepted" && c.status == "True");
                if ok {
                    accepted += 1;
                } else {
                    refused_routes += 1;
                    for c in parent.conditions.iter().filter(|c| c.status == "False") {
                        *why.entry(format!("{}: {}", c.type_, c.reason)).or_insert(0) += 1;
                    }
                }
            }
        }
        let rendered = serde_json::to_value(render_xds(&translation.ir)).unwrap();
        for (proxy, by_type) in rendered.as_object().unwrap() {
            resources += by_type
                .as_object()
                .map(|t| {
                    t.values()
                        .map(|v| v.as_array().map_or(0, Vec::len))
                        .sum::<usize>()
                })
                .unwrap_or(0);
            cases.push((format!("{name} {proxy}"), validation_bootstrap(by_type)));
        }
    }
    let configurations = cases.len();
    let refused = validate_all(envoy, cases);
    println!(
        "{count} {what} ({accepted} route attachments accepted, {refused_routes} refused by the \
         translator): {configurations} proxy configurations ({resources} resources) validated \
         by Envoy, {} refused",
        refused.len()
    );
    println!("  why the translator refused routes: {why:?}");
    if !refused.is_empty() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/validate-failures");
        std::fs::create_dir_all(&dir).unwrap();
        for (case, _) in &refused {
            let input = case.rsplit_once(' ').map_or(case.as_str(), |(n, _)| n);
            if let Some(yaml) = by_name.get(input) {
                std::fs::write(
                    dir.join(format!("{}.yaml", input.replace([' ', '/'], "-"))),
                    yaml,
                )
                .unwrap();
            }
        }
        panic!(
            "Envoy refuses what the translator accepted (inputs in {}):\n{}",
            dir.display(),
            report(&refused)
        );
    }
}

#[test]
fn translations_of_a_fuzz_corpus_are_accepted_by_envoy() {
    let Some(dir) = std::env::var_os("TRELLIS_VALIDATE_CORPUS") else {
        eprintln!("skipped: set TRELLIS_VALIDATE_CORPUS to a corpus of the translate fuzz target");
        return;
    };
    let Some(envoy) = envoy_or_skip("translations_of_a_fuzz_corpus_are_accepted_by_envoy") else {
        return;
    };
    let mut inputs = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        inputs.push((name, generate(&mut Bytes::new(&data))));
    }
    inputs.sort();
    validate_generated(&envoy, inputs, "fuzz corpus inputs");
}

#[test]
fn translations_of_generated_hostile_inputs_are_accepted_by_envoy() {
    let Some(envoy) =
        envoy_or_skip("translations_of_generated_hostile_inputs_are_accepted_by_envoy")
    else {
        return;
    };
    let count: u64 = std::env::var("TRELLIS_VALIDATE_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(60);
    let inputs = (0..count)
        .map(|seed| (format!("seed-{seed}"), generate(&mut Seeded::new(seed))))
        .collect();
    validate_generated(&envoy, inputs, "generated inputs");
}
