//! `conformance`: runs the upstream Gateway API conformance suite against Trellis without a
//! cluster — GATEWAY-HTTP with a real Envoy per Gateway, MESH-HTTP with pods as network
//! namespaces and Envoy sidecars (root) — and writes a report in the upstream shape.
//!
//! ```sh
//! cargo run --release -p trellis-e2e --bin conformance -- --report conformance-report.yaml
//! cargo run --release -p trellis-e2e --bin conformance -- --report r.yaml --run-test HTTPRouteWeight
//! cargo run --release -p trellis-e2e --bin conformance -- --report mesh.yaml --profile MESH-HTTP
//! ```

use anyhow::{Context, bail};
use clap::Parser;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;
use trellis_conformance::report::{self, Outcome, TestResult};
use trellis_conformance::tests::{SUPPORTED_FEATURES, all, catalog::CATALOG};
use trellis_conformance::{CORE_FEATURES, Suite};
use trellis_harness::workspace_root;

mod mesh_run;
use mesh_run::run_mesh;

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "conformance", about)]
pub(crate) struct Args {
    /// Where to write the report (YAML).
    #[arg(long)]
    pub(crate) report: PathBuf,
    /// The conformance profile.
    #[arg(long, default_value = "GATEWAY-HTTP")]
    pub(crate) profile: String,
    /// Run only this test (by ShortName); the others are reported as skipped.
    #[arg(long)]
    pub(crate) run_test: Option<String>,
    /// The upstream conformance directory (manifests), unmodified.
    #[arg(long, env = "TRELLIS_CONFORMANCE_DIR")]
    upstream: Option<PathBuf>,
    /// Loopback range Gateways get their addresses from.
    #[arg(long, default_value = "127.30.0.0/24")]
    gateway_address_pool: String,
    /// The first two octets of the pods' loopback addresses (pods get `<prefix>.x.y`).
    #[arg(long, default_value = "127.40")]
    pod_address_prefix: String,
    /// Keep logs, config and status here (a temporary directory by default).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !["GATEWAY-HTTP", "MESH-HTTP"].contains(&args.profile.as_str()) {
        bail!(
            "the GATEWAY-HTTP and MESH-HTTP profiles are implemented, not {}",
            args.profile
        );
    }
    let upstream = args
        .upstream
        .clone()
        .unwrap_or_else(|| workspace_root().join("../shared/gateway-api-conformance"));
    let upstream = upstream
        .canonicalize()
        .with_context(|| format!("upstream conformance manifests at {}", upstream.display()))?;
    let _tmp;
    let work = match &args.work_dir {
        Some(d) => {
            trellis_conformance::cluster::fresh_dir(d)?;
            d.clone()
        }
        None => {
            let t = tempfile::tempdir()?;
            let p = t.path().to_path_buf();
            _tmp = t;
            p
        }
    };
    if args.profile == "MESH-HTTP" {
        return run_mesh(&args, &upstream, &work);
    }
    let started = Instant::now();
    println!(
        "Setting up: base manifests, certificates, echo pods, Gateways ({})",
        work.display()
    );
    let prefix: Vec<u8> = args
        .pod_address_prefix
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("--pod-address-prefix must look like 127.40")?;
    let [a, b] = prefix[..] else {
        bail!("--pod-address-prefix must have two octets, like 127.40");
    };
    let mut suite = Suite::setup(&work, &upstream, &args.gateway_address_pool, [a, b])
        .context("suite setup")?;
    println!("Setup done in {:.1}s", started.elapsed().as_secs_f64());

    let encoded = all();
    let supported: BTreeSet<&str> = SUPPORTED_FEATURES.iter().copied().collect();
    let mut results = Vec::new();
    for (name, features, provisional, _) in CATALOG {
        let core = features.iter().all(|f| CORE_FEATURES.contains(f));
        let mut result = TestResult {
            name: name.to_string(),
            core,
            provisional: *provisional,
            features: features.iter().map(|f| f.to_string()).collect(),
            outcome: Outcome::Passed,
            seconds: 0.0,
        };
        let missing: Vec<&str> = features
            .iter()
            .copied()
            .filter(|f| !supported.contains(f))
            .collect();
        let test = encoded.iter().find(|t| t.short_name == *name);
        result.outcome = if args.run_test.as_deref().is_some_and(|r| r != *name) {
            Outcome::Skipped("not selected by --run-test".into())
        } else if !missing.is_empty() {
            Outcome::Skipped(format!("unsupported feature(s): {}", missing.join(", ")))
        } else if let Some(test) = test {
            let t0 = Instant::now();
            let outcome = match suite.run_test(test) {
                Ok(()) => Outcome::Passed,
                Err(e) => Outcome::Failed(format!("{e:#}")),
            };
            result.seconds = t0.elapsed().as_secs_f64();
            outcome
        } else {
            Outcome::Skipped("not encoded in the runner yet".into())
        };
        match &result.outcome {
            Outcome::Passed => println!("PASS  {name} ({:.1}s)", result.seconds),
            Outcome::Failed(e) => {
                println!("FAIL  {name} ({:.1}s): {e}", result.seconds);
                for line in suite.log.iter().rev().take(5).rev() {
                    println!("        {line}");
                }
            }
            Outcome::Skipped(reason) if args.run_test.is_none() => {
                println!("SKIP  {name}: {reason}")
            }
            Outcome::Skipped(_) => {}
        }
        results.push(result);
    }
    let unsupported: Vec<&str> = CATALOG
        .iter()
        .flat_map(|(_, f, _, _)| f.iter().copied())
        .filter(|f| !supported.contains(f) && !CORE_FEATURES.contains(f))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let supported_extended: Vec<&str> = supported
        .iter()
        .copied()
        .filter(|f| !CORE_FEATURES.contains(f))
        .collect();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let yaml = report::render(
        &args.profile,
        &results,
        &supported_extended,
        &unsupported,
        env!("CARGO_PKG_VERSION"),
        &date,
    )?;
    std::fs::write(&args.report, &yaml)
        .with_context(|| format!("writing {}", args.report.display()))?;
    let count = |core: bool, f: fn(&Outcome) -> bool| {
        results
            .iter()
            .filter(|r| r.core == core && f(&r.outcome))
            .count()
    };
    let passed = |o: &Outcome| matches!(o, Outcome::Passed);
    let failed = |o: &Outcome| matches!(o, Outcome::Failed(_));
    let skipped = |o: &Outcome| matches!(o, Outcome::Skipped(_));
    println!();
    println!(
        "{:<10} {:>7} {:>7} {:>8}",
        args.profile, "passed", "failed", "skipped"
    );
    println!(
        "{:<10} {:>7} {:>7} {:>8}",
        "core",
        count(true, passed),
        count(true, failed),
        count(true, skipped)
    );
    println!(
        "{:<10} {:>7} {:>7} {:>8}",
        "extended",
        count(false, passed),
        count(false, failed),
        count(false, skipped)
    );
    println!(
        "wall time {:.1}s; report written to {}",
        started.elapsed().as_secs_f64(),
        args.report.display()
    );
    // Stop every process (control plane, Envoys, pods) before reporting the outcome.
    drop(suite);
    if results
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Failed(_)))
    {
        bail!("some tests failed");
    }
    Ok(())
}
