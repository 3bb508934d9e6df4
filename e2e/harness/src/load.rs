//! Load for policy tests and the policy benchmark: Wasm modules built for the control plane to
//! serve, a keep-alive HTTP/1.1 client, and CPU time of a process.
//!
//! ```text
//!  wasm_module("trellis-policy-wasm") ──► trellis serve --policy-module PATH
//!  KeepAlive ──GET, GET, GET… (one connection)──► Envoy ──► echo
//!  cpu_ticks(pid): utime + stime from /proc/<pid>/stat
//! ```

use crate::workspace_root;
use anyhow::{Context, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Builds (once per process) the `cdylib` of a filter package for `wasm32-wasip1` with the
/// `wasm` profile and returns the module's path; `TRELLIS_WASM_<PACKAGE>` (e.g.
/// `TRELLIS_WASM_TRELLIS_POLICY_WASM`) names a prebuilt module instead.
pub fn wasm_module(package: &str) -> anyhow::Result<PathBuf> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    let variable = format!(
        "TRELLIS_WASM_{}",
        package.to_ascii_uppercase().replace('-', "_")
    );
    if let Some(path) = std::env::var_os(&variable) {
        return Ok(PathBuf::from(path));
    }
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(package) {
        return Ok(p.clone());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", package, "--target", "wasm32-wasip1"])
        .args(["--profile", "wasm"])
        .current_dir(workspace_root())
        .status()
        .context("running cargo build")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let path = target
        .join("wasm32-wasip1/wasm")
        .join(format!("{}.wasm", package.replace('-', "_")));
    if !status.success() || !path.exists() {
        bail!(
            "could not build {package} for wasm32-wasip1 (expected {})",
            path.display()
        );
    }
    built.insert(package.to_string(), path.clone());
    Ok(path)
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &std::path::Path) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

/// One keep-alive HTTP/1.1 connection sending GETs and reading whole responses.
#[derive(Debug)]
pub struct KeepAlive {
    address: SocketAddr,
    reader: Option<BufReader<TcpStream>>,
    request: Vec<u8>,
}

impl KeepAlive {
    /// A client for `GET path` with `Host: host` and extra headers; connects lazily.
    pub fn new(address: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Self {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        Self {
            address,
            reader: None,
            request: request.into_bytes(),
        }
    }

    /// Sends the request and returns the status; reconnects once if the connection closed.
    pub fn send(&mut self) -> anyhow::Result<u16> {
        match self.try_send() {
            Ok(status) => Ok(status),
            Err(_) => {
                self.reader = None;
                self.try_send()
            }
        }
    }

    fn try_send(&mut self) -> anyhow::Result<u16> {
        if self.reader.is_none() {
            let stream = TcpStream::connect_timeout(&self.address, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.set_nodelay(true)?;
            self.reader = Some(BufReader::new(stream));
        }
        let reader = self.reader.as_mut().context("not connected")?;
        reader.get_mut().write_all(&self.request)?;
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .context("no status")?
            .parse()?;
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                match k.as_str() {
                    "content-length" => length = v.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        if chunked {
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16)?;
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            let mut body = vec![0; n];
            reader.read_exact(&mut body)?;
        }
        if close {
            self.reader = None;
        }
        Ok(status)
    }
}

/// CPU time (user + system) a process used so far, in clock ticks (`/proc/<pid>/stat`).
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, utime field 14, stime field 15 (1-based in proc(5)).
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
pub fn ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The value of a Prometheus sample in `text`: metric `name` with exactly these labels (in any
/// order).
pub fn prometheus_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = match series.split_once('{') {
            Some((m, r)) => (m, r.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            return None;
        }
        let found: Vec<(&str, &str)> = rest
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((k, v.trim_matches('"')))
            })
            .collect();
        (found.len() == labels.len() && labels.iter().all(|l| found.contains(l)))
            .then(|| value.parse().ok())?
    })
}
