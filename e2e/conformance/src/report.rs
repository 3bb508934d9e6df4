//! The conformance report, in the shape of upstream's `ConformanceReport`
//! (`gateway.networking.k8s.io/v1`), with a reason for every skipped test.

use serde::Serialize;
use std::collections::BTreeMap;

/// What happened to one test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Passed,
    /// It failed, with the error.
    Failed(String),
    /// It was not run, with the reason.
    Skipped(String),
}

/// A test's result, as the report needs it.
#[derive(Clone, Debug)]
pub struct TestResult {
    /// ShortName.
    pub name: String,
    /// Core (all features core) or extended.
    pub core: bool,
    /// Provisional upstream.
    pub provisional: bool,
    /// Its features.
    pub features: Vec<String>,
    /// Outcome.
    pub outcome: Outcome,
    /// Seconds it took.
    pub seconds: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    api_version: &'static str,
    kind: &'static str,
    date: String,
    #[serde(rename = "gatewayAPIVersion")]
    gateway_api_version: &'static str,
    #[serde(rename = "gatewayAPIChannel")]
    gateway_api_channel: &'static str,
    mode: &'static str,
    implementation: Implementation,
    profiles: Vec<Profile>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    succeeded_provisional_tests: Vec<String>,
}

#[derive(Serialize)]
struct Implementation {
    organization: &'static str,
    project: &'static str,
    url: &'static str,
    version: String,
    contact: Vec<&'static str>,
}

#[derive(Serialize)]
struct Profile {
    name: String,
    summary: String,
    core: Status,
    extended: Extended,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    result: &'static str,
    statistics: Statistics,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skipped_tests: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed_tests: Vec<String>,
    /// Not in upstream's shape: why each test was skipped.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    skip_reasons: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Extended {
    #[serde(flatten)]
    status: Status,
    supported_features: Vec<String>,
    unsupported_features: Vec<String>,
}

#[derive(Serialize)]
#[allow(non_snake_case)]
struct Statistics {
    Failed: u32,
    Passed: u32,
    Skipped: u32,
}

fn status(results: &[&TestResult]) -> Status {
    let mut s = Status {
        result: "success",
        statistics: Statistics {
            Failed: 0,
            Passed: 0,
            Skipped: 0,
        },
        skipped_tests: Vec::new(),
        failed_tests: Vec::new(),
        skip_reasons: BTreeMap::new(),
    };
    for r in results {
        match &r.outcome {
            Outcome::Passed => s.statistics.Passed += 1,
            Outcome::Failed(_) => {
                s.statistics.Failed += 1;
                s.failed_tests.push(r.name.clone());
            }
            Outcome::Skipped(reason) => {
                s.statistics.Skipped += 1;
                s.skipped_tests.push(r.name.clone());
                s.skip_reasons.insert(r.name.clone(), reason.clone());
            }
        }
    }
    s.result = if s.statistics.Failed > 0 {
        "failure"
    } else if s.statistics.Skipped > 0 {
        "partial"
    } else {
        "success"
    };
    s
}

/// Renders the report as YAML.
pub fn render(
    profile: &str,
    results: &[TestResult],
    supported: &[&str],
    unsupported: &[&str],
    version: &str,
    date: &str,
) -> anyhow::Result<String> {
    let core: Vec<&TestResult> = results.iter().filter(|r| r.core).collect();
    let extended: Vec<&TestResult> = results.iter().filter(|r| !r.core).collect();
    let core_status = status(&core);
    let ext_status = status(&extended);
    let summary = format!(
        "Core tests: {} passed, {} failed, {} skipped. Extended tests: {} passed, {} failed, {} skipped.",
        core_status.statistics.Passed,
        core_status.statistics.Failed,
        core_status.statistics.Skipped,
        ext_status.statistics.Passed,
        ext_status.statistics.Failed,
        ext_status.statistics.Skipped,
    );
    let report = Report {
        api_version: "gateway.networking.k8s.io/v1",
        kind: "ConformanceReport",
        date: date.to_string(),
        gateway_api_version: "v1.6.1",
        gateway_api_channel: "standard",
        mode: "default",
        implementation: Implementation {
            organization: "trellis-mesh",
            project: "trellis",
            url: "https://github.com/trellis-mesh/trellis",
            version: version.to_string(),
            contact: vec!["https://github.com/trellis-mesh/trellis/issues"],
        },
        profiles: vec![Profile {
            name: profile.to_string(),
            summary,
            core: core_status,
            extended: Extended {
                status: ext_status,
                supported_features: supported.iter().map(|s| s.to_string()).collect(),
                unsupported_features: unsupported.iter().map(|s| s.to_string()).collect(),
            },
        }],
        succeeded_provisional_tests: results
            .iter()
            .filter(|r| r.provisional && r.outcome == Outcome::Passed)
            .map(|r| r.name.clone())
            .collect(),
    };
    Ok(serde_saphyr::to_string(&report)?)
}
