//! `conformance --profile MESH-HTTP`: the mesh manifests on pods as network namespaces, every
//! mesh test, and the report: MESH-HTTP's core and extended tests in the upstream shape, the
//! tests that count in no profile printed beside it.

use crate::Args;
use anyhow::{Context, bail};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;
use trellis_conformance::cluster::read_manifest;
use trellis_conformance::mesh::MeshCluster;
use trellis_conformance::mesh_tests::{
    MESH_CORE_FEATURES, MESH_EXTENDED_FEATURES, OTHER_SUPPORTED_FEATURES, all,
};
use trellis_conformance::report::{self, Outcome, TestResult};

/// Sets up the mesh, runs the tests, writes the report.
pub fn run_mesh(args: &Args, upstream: &Path, work: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    println!(
        "Setting up: mesh manifests, echo pods with sidecars ({})",
        work.display()
    );
    let mut cluster = MeshCluster::start(work).context("mesh setup")?;
    cluster.apply(read_manifest(&upstream.join("mesh/manifests.yaml"), |t| t)?)?;
    cluster.wait_ready()?;
    println!("Setup done in {:.1}s", started.elapsed().as_secs_f64());

    let in_profile: BTreeSet<&str> = MESH_CORE_FEATURES
        .iter()
        .copied()
        .chain(MESH_EXTENDED_FEATURES.iter().map(|(f, _)| *f))
        .collect();
    let supported: BTreeSet<&str> = MESH_CORE_FEATURES
        .iter()
        .copied()
        .chain(
            MESH_EXTENDED_FEATURES
                .iter()
                .filter(|(_, s)| *s)
                .map(|(f, _)| *f),
        )
        .chain(OTHER_SUPPORTED_FEATURES.iter().copied())
        .collect();
    let (mut profile, mut others) = (Vec::new(), Vec::new());
    for test in all() {
        let mut result = TestResult {
            name: test.short_name.to_string(),
            core: test.features.iter().all(|f| MESH_CORE_FEATURES.contains(f)),
            provisional: test.provisional,
            features: test.features.iter().map(|f| f.to_string()).collect(),
            outcome: Outcome::Passed,
            seconds: 0.0,
        };
        let missing: Vec<&str> = test
            .features
            .iter()
            .copied()
            .filter(|f| !supported.contains(f))
            .collect();
        result.outcome = if args
            .run_test
            .as_deref()
            .is_some_and(|r| r != test.short_name)
        {
            Outcome::Skipped("not selected by --run-test".into())
        } else if !missing.is_empty() {
            Outcome::Skipped(format!("unsupported feature(s): {}", missing.join(", ")))
        } else {
            let t0 = Instant::now();
            let before: BTreeSet<_> = cluster.ids().into_iter().collect();
            let outcome = (|| {
                for m in test.manifests {
                    cluster.apply(read_manifest(&upstream.join(m), |t| t)?)?;
                }
                (test.run)(&cluster)
            })();
            let created: Vec<_> = cluster
                .ids()
                .into_iter()
                .filter(|id| !before.contains(id))
                .collect();
            cluster.delete(&created)?;
            result.seconds = t0.elapsed().as_secs_f64();
            match outcome {
                Ok(()) => Outcome::Passed,
                Err(e) => Outcome::Failed(format!("{e:#}")),
            }
        };
        let name = test.short_name;
        match &result.outcome {
            Outcome::Passed => println!("PASS  {name} ({:.1}s)", result.seconds),
            Outcome::Failed(e) => println!("FAIL  {name} ({:.1}s): {e}", result.seconds),
            Outcome::Skipped(reason) if args.run_test.is_none() => {
                println!("SKIP  {name}: {reason}")
            }
            Outcome::Skipped(_) => {}
        }
        if test.features.iter().all(|f| in_profile.contains(f)) {
            profile.push(result);
        } else {
            others.push(result);
        }
    }
    let supported_extended: Vec<&str> = MESH_EXTENDED_FEATURES
        .iter()
        .filter(|(_, s)| *s)
        .map(|(f, _)| *f)
        .collect();
    let unsupported: Vec<&str> = MESH_EXTENDED_FEATURES
        .iter()
        .filter(|(_, s)| !*s)
        .map(|(f, _)| *f)
        .collect();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let yaml = report::render(
        "MESH-HTTP",
        &profile,
        &supported_extended,
        &unsupported,
        env!("CARGO_PKG_VERSION"),
        &date,
    )?;
    std::fs::write(&args.report, &yaml)
        .with_context(|| format!("writing {}", args.report.display()))?;
    let count = |results: &[TestResult], core: Option<bool>, f: fn(&Outcome) -> bool| {
        results
            .iter()
            .filter(|r| core.is_none_or(|c| r.core == c) && f(&r.outcome))
            .count()
    };
    let passed = |o: &Outcome| matches!(o, Outcome::Passed);
    let failed = |o: &Outcome| matches!(o, Outcome::Failed(_));
    let skipped = |o: &Outcome| matches!(o, Outcome::Skipped(_));
    println!();
    println!(
        "{:<10} {:>7} {:>7} {:>8}",
        "MESH-HTTP", "passed", "failed", "skipped"
    );
    for (label, core) in [("core", Some(true)), ("extended", Some(false))] {
        println!(
            "{label:<10} {:>7} {:>7} {:>8}",
            count(&profile, core, passed),
            count(&profile, core, failed),
            count(&profile, core, skipped)
        );
    }
    println!(
        "{:<10} {:>7} {:>7} {:>8}   (in no profile: {})",
        "other",
        count(&others, None, passed),
        count(&others, None, failed),
        count(&others, None, skipped),
        others
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "wall time {:.1}s; report written to {}",
        started.elapsed().as_secs_f64(),
        args.report.display()
    );
    drop(cluster);
    if profile
        .iter()
        .chain(&others)
        .any(|r| matches!(r.outcome, Outcome::Failed(_)))
    {
        bail!("some tests failed");
    }
    Ok(())
}
