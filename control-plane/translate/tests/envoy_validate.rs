//! The Envoy-validate gate: every golden output, and translations of generated inputs full of
//! hostile values, must be accepted by `envoy --mode validate` (Envoy 1.40, as CI installs it).
//! Whatever Envoy would reject must have been refused by the translator with a condition.
//!
//! Needs Envoy (`ENVOY_BIN`, or `./dev setup`); skipped with a message without it, except in CI.
//! `TRELLIS_VALIDATE_CASES=N` sets how many generated inputs are checked (default 60).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use support::envoy::{envoy_or_skip, validate_all, validation_bootstrap};
use support::{load_text, options, render_xds, testdata};
use trellis_testgen::{Seeded, generate};
use trellis_translate::translate;

/// The golden Envoy resources, by case and proxy.
fn golden_cases() -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(testdata())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".xds.yaml"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let proxies: Value = serde_saphyr::from_str(&text).unwrap();
        let case = file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".xds.yaml", "");
        for (proxy, resources) in proxies.as_object().unwrap() {
            cases.push((format!("{case} {proxy}"), validation_bootstrap(resources)));
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
        "{count} golden proxy configurations validated by Envoy, {} refused",
        refused.len()
    );
    assert!(
        refused.is_empty(),
        "Envoy refuses golden output:\n{}",
        report(&refused)
    );
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
    let mut cases = Vec::new();
    let mut inputs = std::collections::BTreeMap::new();
    let mut resources = 0;
    let (mut accepted, mut refused_routes) = (0, 0);
    let mut why = std::collections::BTreeMap::<String, usize>::new();
    for seed in 0..count {
        let yaml = generate(&mut Seeded::new(seed));
        let input = load_text(&yaml, &format!("seed {seed}"), false);
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
            cases.push((
                format!("seed {seed} {proxy}"),
                validation_bootstrap(by_type),
            ));
        }
        inputs.insert(format!("seed {seed}"), yaml);
    }
    let configurations = cases.len();
    let refused = validate_all(&envoy, cases);
    println!(
        "{count} generated inputs ({accepted} route attachments accepted, {refused_routes} \
         refused by the translator): {configurations} proxy configurations ({resources} \
         resources) validated by Envoy, {} refused",
        refused.len()
    );
    println!("  why the translator refused routes: {why:?}");
    if !refused.is_empty() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/validate-failures");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, _) in &refused {
            let seed = name.split(' ').take(2).collect::<Vec<_>>().join(" ");
            std::fs::write(
                dir.join(format!("{}.yaml", seed.replace(' ', "-"))),
                &inputs[&seed],
            )
            .unwrap();
        }
        panic!(
            "Envoy refuses what the translator accepted (inputs in {}):\n{}",
            dir.display(),
            report(&refused)
        );
    }
}
