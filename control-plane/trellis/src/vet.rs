//! `trellis vet DIR`: checks a directory of Kubernetes YAML offline, as `trellis serve
//! --config-dir` would read and translate it, and prints every finding (docs/vet.md lists the
//! codes). The exit status says whether a finding reached `--fail-on`, for CI.

use clap::ValueEnum;
use std::path::PathBuf;
use std::process::ExitCode;
use trellis_vet::{Finding, Offline, Severity};

/// Arguments of `trellis vet`.
#[derive(Debug, clap::Args)]
pub struct VetArgs {
    /// The directory of Kubernetes YAML to check (read like `trellis serve --config-dir`).
    pub dir: PathBuf,
    /// How to print the findings.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Exit with status 1 when a finding is at least this severe (`none`: never).
    #[arg(long, value_enum, default_value_t = FailOn::Error)]
    pub fail_on: FailOn,
}

/// How findings are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// One finding per paragraph, then a summary line.
    Text,
    /// `{"findings": [...], "errors": N, "warnings": N, "infos": N}`.
    Json,
}

/// The least severe finding that fails the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Errors fail the run.
    Error,
    /// Errors and warnings fail the run.
    Warning,
    /// Any finding fails the run.
    Info,
    /// Nothing fails the run.
    None,
}

impl FailOn {
    fn fails(self, severity: Severity) -> bool {
        match self {
            FailOn::Error => severity == Severity::Error,
            FailOn::Warning => severity <= Severity::Warning,
            FailOn::Info => true,
            FailOn::None => false,
        }
    }
}

/// The findings as `trellis vet` prints them.
pub fn render(findings: &[Finding], output: Output) -> String {
    let (errors, warnings, infos) = trellis_vet::counts(findings);
    match output {
        Output::Json => {
            let doc = serde_json::json!({
                "findings": findings,
                "errors": errors,
                "warnings": warnings,
                "infos": infos,
            });
            format!("{doc:#}\n")
        }
        Output::Text => {
            let mut out: String = findings.iter().map(|f| format!("{f}\n\n")).collect();
            out.push_str(&format!(
                "{errors} errors, {warnings} warnings, {infos} infos\n"
            ));
            out
        }
    }
}

/// Runs `trellis vet`: 0 when no finding reaches `--fail-on`, 1 when one does, 2 when the
/// directory cannot be read.
pub fn run(args: &VetArgs) -> ExitCode {
    if !args.dir.is_dir() {
        eprintln!("error: {} is not a directory", args.dir.display());
        return ExitCode::from(2);
    }
    let findings = Offline::read(&args.dir).vet();
    if let Err(e) = crate::render::print_out(&render(&findings, args.output)) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if findings.iter().any(|f| args.fail_on.fails(f.severity)) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
