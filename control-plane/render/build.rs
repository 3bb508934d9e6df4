//! Compiles the Envoy protos that Trellis's resources use (from the envoy-types crate's
//! `proto/` directory) into a descriptor set the crate embeds, so that resources can be written
//! as JSON without the protos at run time.

use prost::Message;
use std::path::{Path, PathBuf};

/// The message files the control plane's resources and filters use (their imports follow).
const FILES: [&str; 20] = [
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
    "envoy/extensions/filters/http/fault/v3/fault.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/filters/http/wasm/v3/wasm.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/listener/original_dst/v3/original_dst.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
    "envoy/config/trace/v3/opentelemetry.proto",
    "envoy/extensions/http/early_header_mutation/header_mutation/v3/header_mutation.proto",
    "google/protobuf/wrappers.proto",
    "google/protobuf/empty.proto",
];

/// The `proto/` directory of the envoy-types crate in use. Found without running cargo (a
/// build script that runs `cargo metadata` can wait forever on a lock the building cargo holds,
/// and offline it fails for crates of other platforms that were never downloaded):
/// `TRELLIS_ENVOY_PROTO_DIR` if set, else the version in the workspace's `Cargo.lock` under
/// `$CARGO_HOME/registry/src/*/` (or a `vendor/` directory beside the lock file).
fn envoy_types_proto_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TRELLIS_ENVOY_PROTO_DIR") {
        return PathBuf::from(dir);
    }
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let lock = manifest_dir
        .ancestors()
        .map(|d| d.join("Cargo.lock"))
        .find(|p| p.exists())
        .expect("a Cargo.lock above the crate");
    let text = std::fs::read_to_string(&lock).expect("Cargo.lock reads");
    let version = text
        .split("[[package]]")
        .find(|block| block.contains("name = \"envoy-types\""))
        .and_then(|block| {
            block
                .lines()
                .find_map(|l| l.trim().strip_prefix("version = \""))
                .map(|v| v.trim_end_matches('"').to_string())
        })
        .expect("envoy-types in Cargo.lock");
    let crate_dir = format!("envoy-types-{version}");
    let mut candidates = Vec::new();
    if let Some(root) = lock.parent() {
        candidates.push(root.join("vendor").join("envoy-types"));
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    if let Some(home) = cargo_home
        && let Ok(registries) = std::fs::read_dir(home.join("registry").join("src"))
    {
        candidates.extend(registries.flatten().map(|r| r.path().join(&crate_dir)));
    }
    candidates
        .into_iter()
        .map(|c| c.join("proto"))
        .find(|p| p.join("data-plane-api").exists())
        .unwrap_or_else(|| {
            panic!(
                "cannot find {crate_dir}/proto under $CARGO_HOME/registry/src; set \
                 TRELLIS_ENVOY_PROTO_DIR to the envoy-types crate's proto directory"
            )
        })
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TRELLIS_ENVOY_PROTO_DIR");
    let root = envoy_types_proto_dir();
    let includes: Vec<PathBuf> = [
        "data-plane-api",
        "xds",
        "googleapis",
        "protoc-gen-validate",
        "cel-spec/proto",
        "opentelemetry-proto",
        "client_model",
    ]
    .iter()
    .map(|d| root.join(d))
    .collect();
    let set = protox::compile(FILES, includes).expect("Envoy's protos compile");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"))
        .join("envoy_descriptors.bin");
    std::fs::write(out, set.encode_to_vec()).expect("OUT_DIR is writable");
}
