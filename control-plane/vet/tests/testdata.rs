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

/// The findings for `case` read beside the base objects, with the observations of the case's
/// `p99_ms.txt`, `rps.txt` and `retry_ratio.txt` (`ns/name: value` per line) when it has them.
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
        let Ok(text) = std::fs::read_to_string(observation(case, file)) else {
            continue;
        };
        into.extend(text.lines().filter_map(|l| {
            let (service, value) = l.split_once(':')?;
            let (ns, name) = service.trim().split_once('/')?;
            Some((
                (ns.to_string(), name.to_string()),
                value.trim().parse().ok()?,
            ))
        }));
    }
    // `NS/NAME: served calls continued` per line.
    if let Ok(text) = std::fs::read_to_string(observation(case, "forwarding.txt")) {
        observations
            .trace_forwarding
            .extend(text.lines().filter_map(|l| {
                let (service, counts) = l.split_once(':')?;
                let (ns, name) = service.trim().split_once('/')?;
                let n: Vec<u64> = counts
                    .split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect();
                let [served, calls, continued] = n[..] else {
                    return None;
                };
                Some((
                    (ns.to_string(), name.to_string()),
                    trellis_vet::TraceForwarding {
                        served,
                        calls,
                        continued,
                    },
                ))
            }));
    }
    // `IDENTITY PORT: connections` per line (`-` for the ports without a mode of their own).
    if let Ok(text) = std::fs::read_to_string(observation(case, "plaintext.txt")) {
        observations
            .plaintext_connections
            .extend(text.lines().filter_map(|l| {
                let (key, n) = l.rsplit_once(':')?;
                let (identity, port) = key.trim().split_once(' ')?;
                Some((
                    (identity.to_string(), port.parse().ok()),
                    n.trim().parse().ok()?,
                ))
            }));
    }
    // `NS/NAME: failed answered` per line.
    if let Ok(text) = std::fs::read_to_string(observation(case, "collector.txt")) {
        observations
            .collector_exports
            .extend(text.lines().filter_map(|l| {
                let (policy, counts) = l.split_once(':')?;
                let (ns, name) = policy.trim().split_once('/')?;
                let (failed, answered) = counts.trim().split_once(' ')?;
                Some((
                    (ns.to_string(), name.to_string()),
                    (failed.parse().ok()?, answered.trim().parse().ok()?),
                ))
            }));
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
