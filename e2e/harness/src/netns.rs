//! Pods as Linux network namespaces, for mesh tests without a cluster.
//!
//! ```text
//!  root namespace: bridge <tag>br  10.N.0.1/16 ── the control plane listens here
//!     │ veth
//!     ├── netns <tag>-<pod>  10.N.0.x/16, default route via the bridge, its own loopback
//!     │     app (any uid) ── capture rules (trellis capture) ── Envoy sidecar (uid 1337)
//!     └── ...
//! ```
//!
//! Every pod has its own loopback, so every sidecar uses the real fixed ports (15000, 15001,
//! 15006, 15021). Names resolve through `/etc/netns/<netns>/hosts` for processes started with
//! `ip netns exec`; a test thread entering a pod ([`Netns::run`]) connects by IP.
//!
//! Needs root, `ip` (iproute2), `iptables` and `setpriv` (util-linux); [`unavailable`] says
//! which is missing.

use anyhow::{Context, bail};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Why pods cannot be made here, or `None` when they can.
pub fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("network namespaces need root (CI runs as root)".into());
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("setpriv", "util-linux"),
    ] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!("`{tool}` is missing (Debian package {package})"));
        }
    }
    None
}

/// Runs a command and fails with its output when it fails.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(())
}

/// The host's IPv4 addresses (`ip -o -4 addr show`).
fn used_addresses() -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .context("cannot list addresses")?
            .stdout,
    )
    .to_string())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args))
}

/// A bridge and a /16 for the pods of one test.
#[derive(Debug)]
pub struct Network {
    /// The bridge's name.
    pub bridge: String,
    /// The bridge's address: the pods' default gateway, where the control plane listens.
    pub gateway: Ipv4Addr,
    /// Prefix for the names of this network's namespaces and links.
    tag: String,
    second: u8,
    next: AtomicU32,
}

static NETWORKS: AtomicU32 = AtomicU32::new(0);

impl Network {
    /// A new bridge on a /16 of 10.0.0.0/8 that no interface of the host uses.
    pub fn create() -> anyhow::Result<Network> {
        let used = used_addresses()?;
        let seed = std::process::id() * 31 + NETWORKS.fetch_add(1, Ordering::Relaxed) * 7;
        for attempt in 0..150 {
            let second = 100 + ((seed + attempt) % 150) as u8;
            if used.contains(&format!(" 10.{second}.")) {
                continue;
            }
            if let Ok(net) = Network::bridge(second, format!("t{}", (seed + attempt) % 100_000)) {
                return Ok(net);
            }
        }
        bail!("no free /16 in 10.100-249.0.0 for a test bridge")
    }

    /// A bridge on 10.`second`.0.0/16 (the quickstart's pods are written at fixed addresses),
    /// its links named after `tag`; fails when an interface of the host uses that range.
    pub fn create_on(second: u8, tag: &str) -> anyhow::Result<Network> {
        if used_addresses()?.contains(&format!(" 10.{second}.")) {
            bail!("10.{second}.0.0/16 is in use on this machine");
        }
        Network::bridge(second, tag.to_string())
    }

    fn bridge(second: u8, tag: String) -> anyhow::Result<Network> {
        let bridge = format!("{tag}br");
        let gateway = Ipv4Addr::new(10, second, 0, 1);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        let net = Network {
            bridge: bridge.clone(),
            gateway,
            tag,
            second,
            next: AtomicU32::new(2),
        };
        ip(&["addr", "add", &format!("{gateway}/16"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        Ok(net)
    }

    /// The next pod address.
    pub fn allocate(&self) -> Ipv4Addr {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ipv4Addr::new(10, self.second, (n / 250) as u8, (n % 250 + 2) as u8)
    }

    /// A ClusterIP-like address in 10.96.N.x: routed nowhere, only ever captured.
    pub fn service_ip(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 96, self.second, n)
    }

    /// A new pod namespace on this network.
    pub fn pod(&self, name: &str) -> anyhow::Result<Netns> {
        Netns::create(self, name, self.allocate())
    }

    /// A new pod namespace with the address `ip` (in this network's /16).
    pub fn pod_at(&self, name: &str, ip: Ipv4Addr) -> anyhow::Result<Netns> {
        anyhow::ensure!(
            ip.octets()[..2] == [10, self.second],
            "{ip} is not in this network's 10.{}.0.0/16",
            self.second
        );
        self.next.fetch_add(1, Ordering::Relaxed);
        Netns::create(self, name, ip)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// One pod's network namespace.
#[derive(Debug)]
pub struct Netns {
    /// The namespace's name (`ip netns`).
    pub name: String,
    /// The pod's IP.
    pub ip: Ipv4Addr,
    etc: PathBuf,
}

impl Netns {
    fn create(net: &Network, pod: &str, ip_addr: Ipv4Addr) -> anyhow::Result<Netns> {
        let index = net.next.load(Ordering::Relaxed);
        let name = format!("{}-{index}-{pod}", net.tag);
        let veth = format!("{}v{index}", net.tag);
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            name: name.clone(),
            ip: ip_addr,
            etc: PathBuf::from("/etc/netns").join(&name),
        };
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ])?;
        ip(&["link", "set", &veth, "master", &net.bridge, "up"])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ip_addr}/16"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &name, "link", "set", "eth0", "up"])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &name,
            "route",
            "add",
            "default",
            "via",
            &net.gateway.to_string(),
        ])?;
        // Names resolve from a hosts file; nothing waits on a DNS server that is not there.
        std::fs::create_dir_all(&ns.etc)?;
        std::fs::write(ns.etc.join("resolv.conf"), "options timeout:1 attempts:1\n")?;
        ns.write_hosts(&[])?;
        Ok(ns)
    }

    /// Writes the pod's hosts file: localhost, the machine's hostname, and `entries`.
    pub fn write_hosts(&self, entries: &[(Ipv4Addr, Vec<String>)]) -> anyhow::Result<()> {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let mut text = format!("127.0.0.1 localhost {hostname}\n");
        for (ip, names) in entries {
            text.push_str(&format!("{ip} {}\n", names.join(" ")));
        }
        std::fs::write(self.etc.join("hosts"), text)?;
        Ok(())
    }

    /// A command run inside the pod (`ip netns exec`), as `uid` (and the same gid) when given.
    pub fn command(&self, uid: Option<u32>, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]);
        if let Some(uid) = uid {
            cmd.arg("setpriv")
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups");
        }
        cmd.arg(program);
        cmd
    }

    /// Installs the capture rules (`trellis capture`) in the pod.
    pub fn capture(&self, trellis: &Path, extra: &[&str]) -> anyhow::Result<()> {
        run(self.command(None, trellis).arg("capture").args(extra))
    }

    /// Runs `f` on a thread inside the pod's network namespace (as root: its connections are
    /// captured like the app's).
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        self.spawn(f)
            .join()
            .map_err(|_| anyhow::anyhow!("the thread in {} panicked", self.name))?
    }

    /// Like [`Netns::run`], without waiting: the thread's handle.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<anyhow::Result<T>> {
        let path = PathBuf::from("/var/run/netns").join(&self.name);
        std::thread::spawn(move || -> anyhow::Result<T> {
            let file = std::fs::File::open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .context("setns")?;
            Ok(f())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

/// The Envoy executable itself (not the pip wrapper script, which another uid may not run).
pub fn envoy_executable() -> anyhow::Result<PathBuf> {
    let bin = crate::envoy_bin()?;
    let head = std::fs::read(&bin).unwrap_or_default();
    if !head.starts_with(b"#!") {
        return Ok(bin);
    }
    let venv = bin
        .parent()
        .and_then(Path::parent)
        .context("the Envoy wrapper is not in a virtualenv")?;
    for entry in std::fs::read_dir(venv.join("lib"))? {
        let candidate = entry?.path().join("site-packages/envoy/_bin/envoy");
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!("no Envoy executable under {}", venv.display())
}
