//! The quickstart as a new user runs it: `trellis-quickstart --check` on a copy of
//! `deploy/quickstart`, moved to a loopback range and port of its own so it cannot collide
//! with a quickstart already running on this machine. As root its mesh runs too, on a pod
//! network of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use trellis_harness::{private_loopback, workspace_root};

#[test]
fn quickstart_serves_every_sample_request() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("quickstart");
    std::fs::create_dir_all(&config).unwrap();
    let (ip, port) = private_loopback();
    // The mesh's pods (as root) on a /16 of their own too.
    let pod_network = 100 + (std::process::id() % 150) as u8;
    let octets = ip.octets();
    let prefix = format!("{}.{}.{}.", octets[0], octets[1], octets[2]);
    for entry in std::fs::read_dir(workspace_root().join("deploy/quickstart")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut text = text
            .replace("127.0.10.", &prefix)
            .replace("10.244.", &format!("10.{pod_network}."));
        if path.ends_with("10-gateway.yaml") {
            text = text.replace("port: 8080", &format!("port: {port}"));
        }
        std::fs::write(config.join(path.file_name().unwrap()), text).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_trellis-quickstart"))
        .arg("--config-dir")
        .arg(&config)
        .arg("--check")
        .arg("--pod-network")
        .arg(pod_network.to_string())
        .arg("--work-dir")
        .arg(tmp.path().join("work"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    // As root the mesh runs too: the Gateway's route into it and the GAMMA samples answer.
    let root = trellis_harness::netns::unavailable().is_none();
    let expected = if root { 8 } else { 4 };
    assert!(
        stdout.contains(&format!("check: all {expected} sample requests answered")),
        "{stdout}"
    );
    if root {
        assert!(
            stdout.contains("(x-mesh-route: orders-canary)")
                && stdout.contains("(x-mesh-route: orders)"),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("store-v2"),
        "the canary header reaches store-v2"
    );
}
