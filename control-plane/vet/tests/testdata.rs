//! One pair of cases per code under `testdata/<code>/`: `bad.yaml` must raise the code (its
//! findings, as `trellis vet` prints them, are pinned in `bad.txt`), and `good.yaml`, the same
//! case fixed, must raise nothing at all. Both are read beside `testdata/base.yaml`, from a
//! directory, as `trellis vet DIR` reads them; a case that needs traffic to see (TRL0903) gives
//! its observations in `p99_ms.txt`, `rps.txt`, `retry_ratio.txt`, `plaintext.txt`,
//! `forwarding.txt` or `collector.txt` (and `good-FILE` for the fixed twin, when the fix is
//! outside the files).
//! `TRELLIS_UPDATE_GOLDEN=1` rewrites `bad.txt`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use trellis_vet::{Code, Finding, Offline};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// The lines of a case's observations file `file` as (key, numbers): `KEY: N N ...` (the key
/// may hold `:`; none when the case has no such file).
fn observed_lines(case: &Path, file: &str) -> Vec<(String, Vec<f64>)> {
    let text = std::fs::read_to_string(observation(case, file)).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (key, values) = l.rsplit_once(':')?;
            let values = values
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>();
            Some((key.trim().to_string(), values.ok()?))
        })
        .collect()
}

/// A Service's or policy's `NS/NAME`.
fn object(key: &str) -> (String, String) {
    let (ns, name) = key.split_once('/').unwrap();
    (ns.to_string(), name.to_string())
}

/// The findings for `case` read beside the base objects, with the observations of the case's
/// files when it has them: `p99_ms.txt`, `rps.txt`, `retry_ratio.txt` (`NS/NAME: value`),
/// `forwarding.txt` (`NS/NAME: served calls continued`), `plaintext.txt` (`IDENTITY PORT:
/// connections`, `-` for the ports without a mode of their own), `collector.txt` (`NS/NAME:
/// failed answered`).
fn vet_case(case: &Path) -> Vec<Finding> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(testdata().join("base.yaml"), dir.path().join("base.yaml")).unwrap();
    std::fs::copy(case, dir.path().join("case.yaml")).unwrap();
    let offline = Offline::read(dir.path());
    let mut findings = offline.vet();
    let mut observations = trellis_vet::Observations::default();
    for (file, into) in [
        ("p99_ms.txt", &mut observations.p99_ms),
        ("rps.txt", &mut observations.rps),
        ("retry_ratio.txt", &mut observations.retry_ratio),
    ] {
        for (key, values) in observed_lines(case, file) {
            into.insert(object(&key), values[0]);
        }
    }
    let count = |v: f64| v as u64;
    for (key, v) in observed_lines(case, "forwarding.txt") {
        let forwarding = trellis_vet::TraceForwarding {
            served: count(v[0]),
            calls: count(v[1]),
            continued: count(v[2]),
        };
        observations
            .trace_forwarding
            .insert(object(&key), forwarding);
    }
    for (key, v) in observed_lines(case, "plaintext.txt") {
        let (identity, port) = key.split_once(' ').unwrap();
        observations
            .plaintext_connections
            .insert((identity.to_string(), port.parse().ok()), count(v[0]));
    }
    for (key, v) in observed_lines(case, "collector.txt") {
        observations
            .collector_exports
            .insert(object(&key), (count(v[0]), count(v[1])));
    }
    findings.extend(trellis_vet::observed(
        &offline.load.input,
        &offline.translation,
        &observations,
    ));
    findings.sort();
    findings
}

/// A case's observations file: `good-FILE` for `good.yaml` when there is one (the problem was
/// fixed where the files cannot say, in an app), else `FILE`.
fn observation(case: &Path, file: &str) -> PathBuf {
    let good = case.with_file_name(format!("good-{file}"));
    if case.file_name().is_some_and(|n| n == "good.yaml") && good.exists() {
        good
    } else {
        case.with_file_name(file)
    }
}

fn text(findings: &[Finding]) -> String {
    findings.iter().map(|f| format!("{f}\n")).collect()
}

#[test]
fn every_code_has_a_pair_that_raises_it_and_a_fixed_twin_that_raises_nothing() {
    let update = std::env::var_os("TRELLIS_UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    // TRL0158 is about the proxies connected to a control plane, not about files: a unit test
    // covers it (`proxy_builds`).
    for code in Code::ALL
        .into_iter()
        .filter(|c| *c != Code::UnsupportedProxy)
    {
        let dir = testdata().join(code.id().to_lowercase());
        let bad = vet_case(&dir.join("bad.yaml"));
        let printed = text(&bad);
        println!("== {} bad.yaml\n{printed}", code.id());
        if !bad.iter().any(|f| f.code == code) {
            failures.push(format!(
                "{}: bad.yaml does not raise it:\n{printed}",
                code.id()
            ));
        }
        let golden = dir.join("bad.txt");
        if update {
            std::fs::write(&golden, &printed).unwrap();
        } else if std::fs::read_to_string(&golden).unwrap_or_default() != printed {
            failures.push(format!(
                "{}: findings differ from bad.txt (TRELLIS_UPDATE_GOLDEN=1 rewrites it):\n{printed}",
                code.id()
            ));
        }
        let good = vet_case(&dir.join("good.yaml"));
        if !good.is_empty() {
            failures.push(format!("{}: good.yaml raises:\n{}", code.id(), text(&good)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_base_objects_alone_raise_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(testdata().join("base.yaml"), dir.path().join("base.yaml")).unwrap();
    let findings = Offline::read(dir.path()).vet();
    assert!(findings.is_empty(), "{}", text(&findings));
}

/// TRL0113's other half: with a plaintext xDS port, Gateway proxies hold no workload
/// certificate and send plaintext to STRICT pods. Offline runs take the default (mutual-TLS
/// xDS, so Gateways originate the mesh's mutual TLS), so this case translates itself.
#[test]
fn gateways_without_certificates_sending_to_strict_pods_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(testdata().join("base.yaml"), dir.path().join("base.yaml")).unwrap();
    std::fs::copy(
        testdata().join("trl0113/good.yaml"),
        dir.path().join("case.yaml"),
    )
    .unwrap();
    let load = trellis_sources::FileProvider::new(dir.path()).load();
    for gateway_mtls in [true, false] {
        let options = trellis_translate::Options {
            gateway_mtls,
            ..trellis_vet::offline_options(&load.input)
        };
        let translation = trellis_translate::translate(&load.input, &options);
        let findings = trellis_vet::vet(&load.input, &translation, &load.diagnostics);
        let printed = text(&findings);
        println!("gateway_mtls {gateway_mtls}:\n{printed}");
        if gateway_mtls {
            assert!(findings.is_empty(), "{printed}");
        } else {
            assert_eq!(findings.len(), 1, "{printed}");
            assert_eq!(findings[0].code, Code::MtlsMismatch);
            assert_eq!(findings[0].object.kind, "Gateway");
            assert!(
                findings[0].message.contains("pod apps/web-1 port 8080"),
                "{printed}"
            );
        }
    }
}
