//! Building a filter crate's `.wasm` from a test, so ABI tests always run the current code.
//!
//! [`build_module`] runs `cargo build -p <package> --target wasm32-wasip1 --profile wasm` with
//! the cargo that runs the tests (the `CARGO` variable cargo sets), reads the artifact's path
//! from cargo's JSON messages, and remembers it for the rest of the process. Setting
//! `TRELLIS_WASM_<PACKAGE>` (the package name upper-cased, `-` as `_`, e.g.
//! `TRELLIS_WASM_TRELLIS_POLICY_WASM`) to a `.wasm` path skips the build.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use crate::Error;
use crate::env::lock;

/// The Rust target filter modules are built for.
pub const TARGET: &str = "wasm32-wasip1";
/// The cargo profile filter modules are built with.
pub const PROFILE: &str = "wasm";

/// Builds (once per process) the `cdylib` of cargo package `package` for `wasm32-wasip1` with
/// the `wasm` profile and returns the `.wasm` path, or the path in `TRELLIS_WASM_<PACKAGE>`.
pub fn build_module(package: &str) -> Result<PathBuf, Error> {
    let variable = format!(
        "TRELLIS_WASM_{}",
        package.to_ascii_uppercase().replace('-', "_")
    );
    if let Some(path) = std::env::var_os(&variable) {
        return Ok(PathBuf::from(path));
    }
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    // Held during the build: tests of one binary that need the same module wait for one build.
    let mut built = lock(&BUILT);
    if let Some(path) = built.get(package) {
        return Ok(path.clone());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "-p",
            package,
            "--target",
            TARGET,
            "--profile",
            PROFILE,
        ])
        .arg("--message-format=json-render-diagnostics")
        .output()
        .map_err(|error| Error::Build {
            package: package.to_string(),
            message: format!("cannot run cargo: {error}"),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(Error::Build {
            package: package.to_string(),
            message: tail.join("\n"),
        });
    }
    let stem = format!("{}.wasm", package.replace('-', "_"));
    let path = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .flat_map(|message| message["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|name| name.as_str().map(PathBuf::from))
        .find(|name| {
            name.file_name()
                .is_some_and(|n| n.to_string_lossy() == stem)
        })
        .ok_or_else(|| Error::Build {
            package: package.to_string(),
            message: format!("cargo reported no {stem}; is the crate a cdylib?"),
        })?;
    built.insert(package.to_string(), path.clone());
    Ok(path)
}
