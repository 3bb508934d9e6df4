//! What the translator's integration tests share: reading inputs as the file provider would,
//! the control plane's options, Envoy resources as Envoy's JSON, and Envoy's validate mode.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod envoy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use trellis_model::core::{Time, jiff};
use trellis_model::{InputSet, Object};
use trellis_sources::{ParsedDocument, parse_documents};
use trellis_translate::Options;
use trellis_translate::ir::{EndpointIr, Ir};
use trellis_translate::policy::{ModuleOptions, ModuleState};
use trellis_translate::security::MeshIdentity;

/// The translator's golden cases: `gatewayapi/` and `ir/`.
pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// The Gateway API stage's cases: (`<case>.in.yaml`, `<case>.out.yaml`), sorted.
pub fn gateway_api_cases() -> Vec<(PathBuf, PathBuf)> {
    let dir = testdata().join("gatewayapi");
    let mut cases: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().to_string();
            let case = name.strip_suffix(".in.yaml")?;
            Some((p.clone(), dir.join(format!("{case}.out.yaml"))))
        })
        .collect();
    cases.sort();
    cases
}

/// The IR stage's inputs: `ir/<case>.yaml` (not the outputs beside them), sorted.
pub fn ir_cases() -> Vec<PathBuf> {
    let dir = testdata().join("ir");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.ends_with(".yaml")
                && !IR_OUTPUTS
                    .iter()
                    .any(|(kind, _)| name.ends_with(&format!(".{kind}.yaml")))
        })
        .collect();
    cases.sort();
    cases
}

/// The IR stage's outputs: file suffix and the resource type's short name.
pub const IR_OUTPUTS: [(&str, &str); 5] = [
    ("listeners", "LDS"),
    ("routes", "RDS"),
    ("clusters", "CDS"),
    ("endpoints", "EDS"),
    ("secrets", "SDS"),
];

/// An IR case: a gateway proxy's IR, or (files named `sidecar*.yaml`) a sidecar class's.
#[derive(Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum IrCase {
    /// A gateway proxy.
    Proxy(trellis_translate::ir::ProxyIr),
    /// A sidecar class.
    Sidecar(Box<trellis_translate::ir::SidecarIr>),
}

/// Reads an IR case.
pub fn read_ir(path: &Path) -> IrCase {
    let text = std::fs::read_to_string(path).unwrap();
    let sidecar = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("sidecar"));
    let fail = |e: serde_saphyr::Error| -> IrCase { panic!("{}: {e}", path.display()) };
    if sidecar {
        serde_saphyr::from_str(&text).map_or_else(fail, |s| IrCase::Sidecar(Box::new(s)))
    } else {
        serde_saphyr::from_str(&text).map_or_else(fail, IrCase::Proxy)
    }
}

impl IrCase {
    /// Reads back what [`IrCase`] serialized, as the same variant.
    pub fn reread(&self, text: &str) -> IrCase {
        match self {
            IrCase::Proxy(_) => IrCase::Proxy(serde_saphyr::from_str(text).unwrap()),
            IrCase::Sidecar(_) => IrCase::Sidecar(Box::new(serde_saphyr::from_str(text).unwrap())),
        }
    }
}

/// The Envoy resources of one IR case, by type short name.
pub fn render_proxy(case: &IrCase) -> BTreeMap<&'static str, Vec<serde_json::Value>> {
    let mut ir = Ir::default();
    match case {
        IrCase::Proxy(p) => {
            ir.proxies.insert("gateway/golden/proxy".into(), p.clone());
        }
        IrCase::Sidecar(s) => {
            ir.sidecars
                .insert("sidecar/golden/class".into(), s.as_ref().clone());
        }
    }
    render_xds(&ir).into_values().next().unwrap_or_default()
}

/// Reads an input file like the file provider would, with generation 1 and creation times in
/// document order where the file leaves them out.
pub fn load(path: &Path) -> InputSet {
    let text = std::fs::read_to_string(path).unwrap();
    load_text(&text, &path.display().to_string(), true)
}

/// Reads a YAML stream like [`load`]; documents that do not parse are an error when `strict`,
/// else skipped (the file provider reports them).
pub fn load_text(text: &str, name: &str, strict: bool) -> InputSet {
    let mut input = InputSet::default();
    for doc in parse_documents(text) {
        match doc {
            ParsedDocument::Object {
                document, object, ..
            } => {
                let mut object: Object = *object;
                let meta = object.metadata_mut();
                meta.generation.get_or_insert(1);
                meta.creation_timestamp.get_or_insert_with(|| {
                    Time(jiff::Timestamp::from_second(1_700_000_000 + document as i64).unwrap())
                });
                input.insert(object);
            }
            ParsedDocument::Skipped { .. } => {}
            ParsedDocument::Invalid { line, message, .. } => {
                assert!(!strict, "{name}:{line}: {message}");
            }
        }
    }
    input
}

/// The SHA-256 the golden tests give the policy filter module.
pub const POLICY_MODULE_SHA256: &str =
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Options as the control plane would pass them: it serves the policy module at
/// 127.0.0.1:18001, and holds every module WasmFilters name, except those whose path says
/// `missing` (not found) or whose sha256 is all `f` (checksum mismatch). A case holding a
/// PeerAuthentication gets workload identity (trust domain `cluster.local`, root namespace
/// `trellis-system`), so its sidecars and Gateways speak mutual TLS.
pub fn options(input: &InputSet) -> Options {
    let mut modules = ModuleOptions {
        policy_module: Some(POLICY_MODULE_SHA256.to_string()),
        server: Some(EndpointIr {
            address: "127.0.0.1".to_string(),
            port: 18001,
            mtls: false,
        }),
        ..Default::default()
    };
    for filter in input.wasm_filters.values() {
        let Some(module) = filter.spec.get("module").and_then(|m| {
            serde_json::from_value::<trellis_model::policy::WasmModule>(m.clone()).ok()
        }) else {
            continue;
        };
        let state = if module.path.as_deref().unwrap_or("").contains("missing") {
            ModuleState::Problem {
                reason: trellis_translate::conditions::Reason::ModuleNotFound,
                message:
                    "cannot read /var/lib/trellis/modules/missing.wasm: No such file or directory"
                        .to_string(),
            }
        } else if module.sha256.bytes().all(|b| b == b'f') {
            ModuleState::Problem {
                reason: trellis_translate::conditions::Reason::ChecksumMismatch,
                message: format!(
                    "the module's sha256 is {POLICY_MODULE_SHA256}, not {}",
                    module.sha256
                ),
            }
        } else {
            ModuleState::Verified
        };
        modules.modules.insert(module, state);
    }
    Options {
        modules,
        mesh_identity: (!input.peer_authentications.is_empty()).then(|| MeshIdentity {
            trust_domain: "cluster.local".to_string(),
            root_namespace: "trellis-system".to_string(),
        }),
        // As a control plane serving xDS over mutual TLS: Gateways hold certificates.
        gateway_mtls: true,
        ..Default::default()
    }
}

/// Envoy resources of every proxy as JSON values, by proxy, type and name (keys redacted).
pub fn render_xds(ir: &Ir) -> BTreeMap<String, BTreeMap<&'static str, Vec<serde_json::Value>>> {
    trellis_render::render(ir, trellis_render::Keys::Redacted).expect("every resource renders")
}
