//! Configuration vet: mistakes that Gateway API status cannot express, found in the objects and
//! their translation, each with a stable code, the object and field, and how to fix it.
//!
//! ```text
//!  InputSet ──translate()──► Translation ──vet()──► [Finding] (sorted; docs/vet.md per code)
//! ```
//!
//! The same function serves `trellis vet DIR` (offline, on files, with an exit status for CI)
//! and the control plane's `GET /api/vet` (on what it serves). Status conditions that are not
//! fine are findings too (TRL0002, or TRL0101 for references to nothing), so one list says
//! everything that needs a look.

#![warn(clippy::too_many_lines)]

mod mesh;
mod policy;
mod routes;
mod services;
mod status;
mod tls;
mod tracing;

use serde::Serialize;
use std::fmt;
use std::path::Path;
use trellis_model::InputSet;
use trellis_sources::Diagnostic;
use trellis_translate::ir::EndpointIr;
use trellis_translate::policy::{ModuleOptions, ModuleState};
use trellis_translate::security::MeshIdentity;
use trellis_translate::{Options, Translation};

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Traffic is refused or misrouted: an object is not in force, or a request fails.
    Error,
    /// Something does not do what it says (a match that never wins, a policy rule that never
    /// decides), or fails under conditions that are easy to meet.
    Warning,
    /// Worth knowing; nothing is broken.
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        })
    }
}

/// A finding's code: stable, documented one by one in docs/vet.md. Numbers follow Istio's
/// analysis messages where the concept matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    /// A file could not be read or an object in it is invalid.
    InvalidFile,
    /// An object's status condition says it is not (wholly) in force.
    StatusCondition,
    /// A reference to an object that does not exist (a policy targeting nothing, a backend,
    /// a certificate, a ReferenceGrant's `to.name`).
    DanglingReference,
    /// A mesh route that no sidecar applies: no namespace it would apply to is in the mesh.
    MeshRouteUnused,
    /// A pod in a meshed namespace runs without a sidecar.
    PodWithoutSidecar,
    /// A client sends plaintext to a server whose mutual-TLS mode is STRICT.
    MtlsMismatch,
    /// Two HTTPRoutes with identical matches: one silently wins.
    IdenticalMatches,
    /// A Service port that looks like gRPC or HTTP/2 without an `appProtocol` saying so.
    BackendProtocol,
    /// A match that can never win: an earlier one takes every request it would.
    UnreachableMatch,
    /// An AuthorizationPolicy rule that never decides: an earlier rule matches all it would.
    UnreachablePolicyRule,
    /// A backend Service with no ready endpoints: its requests are answered 503.
    NoReadyEndpoints,
    /// A BackendTrafficPolicy injects faults: chaos is on.
    FaultsInjected,
    /// A ReferenceGrant grants every object of a kind, and nothing uses it.
    UnusedGrant,
    /// A route's request timeout is below its backend's observed p99 latency.
    TimeoutBelowLatency,
    /// A proxy runs an Envoy build other than the one Trellis supports.
    UnsupportedProxy,
    /// Every request of a busy Service is traced.
    TraceEverything,
    /// Retries make up a large share of a Service's requests: retries amplify its failures.
    RetryAmplification,
    /// A PERMISSIVE port of the mesh takes plaintext connections.
    PlaintextCallers,
    /// A Service's app does not forward trace context: traces through it break.
    TraceContextDropped,
    /// HTTPS listeners of one port with certificates that cover each other's hostnames.
    SharedCertificate,
    /// Span exports to a TracingPolicy's own collector fail.
    TraceExportFailing,
}

impl Code {
    /// Every code, in order.
    pub const ALL: [Code; 21] = [
        Code::InvalidFile,
        Code::StatusCondition,
        Code::DanglingReference,
        Code::MeshRouteUnused,
        Code::PodWithoutSidecar,
        Code::MtlsMismatch,
        Code::IdenticalMatches,
        Code::BackendProtocol,
        Code::UnreachableMatch,
        Code::UnreachablePolicyRule,
        Code::NoReadyEndpoints,
        Code::FaultsInjected,
        Code::UnusedGrant,
        Code::TimeoutBelowLatency,
        Code::UnsupportedProxy,
        Code::TraceEverything,
        Code::RetryAmplification,
        Code::PlaintextCallers,
        Code::TraceContextDropped,
        Code::SharedCertificate,
        Code::TraceExportFailing,
    ];

    /// `TRLnnnn`.
    pub fn id(self) -> &'static str {
        match self {
            Code::InvalidFile => "TRL0001",
            Code::StatusCondition => "TRL0002",
            Code::DanglingReference => "TRL0101",
            Code::MeshRouteUnused => "TRL0102",
            Code::PodWithoutSidecar => "TRL0103",
            Code::MtlsMismatch => "TRL0113",
            Code::IdenticalMatches => "TRL0109",
            Code::BackendProtocol => "TRL0118",
            Code::UnreachableMatch => "TRL0130",
            Code::UnreachablePolicyRule => "TRL0167",
            Code::NoReadyEndpoints => "TRL0173",
            Code::FaultsInjected => "TRL0201",
            Code::UnusedGrant => "TRL0905",
            Code::TimeoutBelowLatency => "TRL0903",
            Code::UnsupportedProxy => "TRL0158",
            Code::TraceEverything => "TRL0157",
            Code::RetryAmplification => "TRL0904",
            Code::PlaintextCallers => "TRL0114",
            Code::TraceContextDropped => "TRL0901",
            Code::SharedCertificate => "TRL0138",
            Code::TraceExportFailing => "TRL0156",
        }
    }

    /// A short name.
    pub fn title(self) -> &'static str {
        match self {
            Code::InvalidFile => "InvalidFile",
            Code::StatusCondition => "StatusCondition",
            Code::DanglingReference => "DanglingReference",
            Code::MeshRouteUnused => "MeshRouteUnused",
            Code::PodWithoutSidecar => "PodWithoutSidecar",
            Code::MtlsMismatch => "MtlsMismatch",
            Code::IdenticalMatches => "IdenticalMatches",
            Code::BackendProtocol => "BackendProtocol",
            Code::UnreachableMatch => "UnreachableMatch",
            Code::UnreachablePolicyRule => "UnreachablePolicyRule",
            Code::NoReadyEndpoints => "NoReadyEndpoints",
            Code::FaultsInjected => "FaultsInjected",
            Code::UnusedGrant => "UnusedGrant",
            Code::TimeoutBelowLatency => "TimeoutBelowLatency",
            Code::UnsupportedProxy => "UnsupportedProxy",
            Code::TraceEverything => "TraceEverything",
            Code::RetryAmplification => "RetryAmplification",
            Code::PlaintextCallers => "PlaintextCallers",
            Code::TraceContextDropped => "TraceContextDropped",
            Code::SharedCertificate => "SharedCertificate",
            Code::TraceExportFailing => "TraceExportFailing",
        }
    }

    /// Where the code is explained (relative to the repository).
    pub fn doc(self) -> String {
        format!("docs/vet.md#{}", self.id().to_lowercase())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// The object a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    /// Its kind (`HTTPRoute`); `File` for a file that could not be read.
    pub kind: String,
    /// Its namespace (empty for cluster-scoped objects and files).
    pub namespace: String,
    /// Its name (for a file: its path in the directory).
    pub name: String,
}

impl ObjectRef {
    /// An object of `kind` by key.
    pub fn new(kind: &str, key: &trellis_model::ObjectKey) -> Self {
        Self {
            kind: kind.to_string(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// Its code.
    pub code: Code,
    /// The object.
    pub object: ObjectRef,
    /// The field, as a path (`spec.rules[1].matches[0]`); empty for the whole object.
    pub field: String,
    /// What is wrong and what happens because of it.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}] {}", self.severity, self.code.id(), self.object)?;
        if !self.field.is_empty() {
            write!(f, " {}", self.field)?;
        }
        write!(
            f,
            ": {}\n  fix: {}\n  see: {}",
            self.message,
            self.fix,
            self.code.doc()
        )
    }
}

/// Every finding about `input` (as `translation` translated it) and the problems reading it,
/// sorted by severity, code, object and field.
pub fn vet(
    input: &InputSet,
    translation: &Translation,
    diagnostics: &[Diagnostic],
) -> Vec<Finding> {
    let mut out = Vec::new();
    status::diagnostics(diagnostics, &mut out);
    status::conditions(&translation.status, &mut out);
    status::reference_grants(input, &mut out);
    status::unused_grants(input, &mut out);
    routes::shadowed_matches(input, &translation.ir, &mut out);
    routes::empty_backends(input, &translation.status, &mut out);
    routes::unused_mesh_routes(input, &mut out);
    services::protocols(input, &mut out);
    policy::unreachable_rules(input, &mut out);
    mesh::pods_without_sidecars(input, &mut out);
    let by_ip = mesh::sidecars_by_ip(&translation.status);
    mesh::strict_behind_gateways(input, &translation.ir, &by_ip, &mut out);
    mesh::strict_behind_external_services(input, &translation.ir, &by_ip, &mut out);
    tls::shared_certificates(input, &translation.ir, &mut out);
    out.sort();
    out.dedup();
    out
}

/// The options an offline run translates with, as a control plane in file mode with a
/// certificate authority would: the policy module and every module WasmFilters name are taken
/// as available (offline tools fetch nothing), and workload identity is on (Gateways hold
/// certificates too, as with mutual TLS on the xDS port).
pub fn offline_options(input: &InputSet) -> Options {
    let mut modules = ModuleOptions {
        policy_module: Some(OFFLINE_MODULE.to_string()),
        server: Some(EndpointIr {
            address: "127.0.0.1".to_string(),
            port: 15012,
            mtls: false,
        }),
        ..Default::default()
    };
    for filter in input.wasm_filters.values() {
        if let Some(module) = filter.spec.get("module").and_then(|m| {
            serde_json::from_value::<trellis_model::policy::WasmModule>(m.clone()).ok()
        }) {
            modules.modules.insert(module, ModuleState::Verified);
        }
    }
    Options {
        modules,
        mesh_identity: Some(MeshIdentity {
            trust_domain: "cluster.local".to_string(),
            root_namespace: "trellis-system".to_string(),
        }),
        gateway_mtls: true,
        ..Default::default()
    }
}

/// The policy module's checksum in offline translations (no module is read).
pub const OFFLINE_MODULE: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A directory read and translated as `trellis serve --config-dir` would.
#[derive(Debug)]
pub struct Offline {
    /// The objects and the problems reading them.
    pub load: trellis_sources::Load,
    /// Their translation.
    pub translation: Translation,
}

impl Offline {
    /// Reads and translates `dir` (once; nothing is watched).
    pub fn read(dir: &Path) -> Offline {
        let load = trellis_sources::FileProvider::new(dir).load();
        let translation = trellis_translate::translate(&load.input, &offline_options(&load.input));
        Offline { load, translation }
    }

    /// Every finding about the directory.
    pub fn vet(&self) -> Vec<Finding> {
        vet(&self.load.input, &self.translation, &self.load.diagnostics)
    }
}

/// What the health scores observe per Service (namespace, name), for the findings that need
/// traffic to see.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    /// p99 latency (ms).
    pub p99_ms: std::collections::BTreeMap<(String, String), f64>,
    /// Requests per second.
    pub rps: std::collections::BTreeMap<(String, String), f64>,
    /// The share of requests that were retries.
    pub retry_ratio: std::collections::BTreeMap<(String, String), f64>,
    /// Plaintext connections sidecars accepted beside mutual TLS, by the sidecars' workload
    /// identity and port (`None`: the ports without a mode of their own).
    pub plaintext_connections: std::collections::BTreeMap<(String, Option<u16>), u64>,
    /// Per Service, how its pods carry trace context onto their calls (from the trace store).
    pub trace_forwarding: std::collections::BTreeMap<(String, String), TraceForwarding>,
    /// Per TracingPolicy with a collector of its own: span exports (failed, answered).
    pub collector_exports: std::collections::BTreeMap<(String, String), (u64, u64)>,
}

/// How the pods of one Service carry the trace context of the requests they serve onto the
/// calls they make, as stored traces show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceForwarding {
    /// Traced requests the pods' sidecars served.
    pub served: u64,
    /// Traced calls the same sidecars carried out of the pods.
    pub calls: u64,
    /// Of those, calls that continued a trace.
    pub continued: u64,
}

/// Findings that need traffic to see (the control plane has it, `trellis vet` on files does
/// not): route timeouts below the observed p99 latency of their backends (TRL0903), every
/// request of a busy Service traced (TRL0157), retries amplifying a failing Service's load
/// (TRL0904), plaintext callers of PERMISSIVE ports (TRL0114), Services whose apps do not
/// forward trace context (TRL0901), and users' collectors that fail (TRL0156).
pub fn observed(
    input: &InputSet,
    translation: &Translation,
    observations: &Observations,
) -> Vec<Finding> {
    let mut out = Vec::new();
    routes::timeouts_below_p99(&translation.ir, &observations.p99_ms, &mut out);
    routes::busy_full_sampling(&translation.ir, &observations.rps, &mut out);
    routes::retry_amplification(&translation.ir, &observations.retry_ratio, &mut out);
    mesh::plaintext_callers(
        &translation.status,
        &observations.plaintext_connections,
        &mut out,
    );
    tracing::context_not_forwarded(&observations.trace_forwarding, &mut out);
    tracing::failing_collectors(input, &observations.collector_exports, &mut out);
    // A route with several backends of one Service, or routes of one rule in several proxies,
    // find the same thing once each.
    out.sort();
    out.dedup();
    out
}

/// The Envoy release Trellis builds and tests its configuration for (`major.minor`).
pub const SUPPORTED_ENVOY: &str = "1.40";

/// TRL0158 for the connected proxies (`(proxy key, build)`, the build as `envoy/1.40.0`): those
/// running another Envoy release than [`SUPPORTED_ENVOY`], or not saying which. At most 100
/// findings.
pub fn proxy_builds(proxies: &[(String, Option<String>)]) -> Vec<Finding> {
    let supported = format!("envoy/{SUPPORTED_ENVOY}.");
    let mut out: Vec<Finding> = proxies
        .iter()
        .filter(|(_, build)| !build.as_deref().is_some_and(|b| b.starts_with(&supported)))
        .take(100)
        .map(|(key, build)| Finding {
            severity: Severity::Warning,
            code: Code::UnsupportedProxy,
            object: ObjectRef {
                kind: "Proxy".to_string(),
                namespace: String::new(),
                name: key.clone(),
            },
            field: String::new(),
            message: match build {
                Some(b) => format!("runs {b}; Trellis builds and tests its configuration for Envoy {SUPPORTED_ENVOY}"),
                None => format!("does not say which Envoy it runs; Trellis supports Envoy {SUPPORTED_ENVOY}"),
            },
            fix: format!("run Envoy {SUPPORTED_ENVOY} (the release docs/testing.md installs)"),
        })
        .collect();
    out.sort();
    out
}

/// Counts of findings by severity: (errors, warnings, infos).
pub fn counts(findings: &[Finding]) -> (usize, usize, usize) {
    let of = |s| findings.iter().filter(|f| f.severity == s).count();
    (
        of(Severity::Error),
        of(Severity::Warning),
        of(Severity::Info),
    )
}

#[cfg(test)]
mod tests;
