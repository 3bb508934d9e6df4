//! Envoy's validate mode as the judge of what the translator emits. A proxy's resources, as
//! Envoy's JSON mapping (the golden files' form), become one static bootstrap: each RDS route
//! configuration inlined into the listeners that name it, EDS clusters made static with their
//! assignments, SDS secrets static (with a real certificate and key in place of the redacted
//! ones), and Envoy's RE2 program-size limit as `trellis bootstrap` sets it. Then
//! `envoy --mode validate` must accept it.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The Envoy binary: `ENVOY_BIN`, or the workspace's `.venv` (what `./dev setup` installs).
pub fn envoy_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return Some(PathBuf::from(bin));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/envoy");
    venv.exists().then_some(venv)
}

/// The Envoy binary, or `None` with the reason printed; in CI (`CI` set) a missing Envoy fails.
pub fn envoy_or_skip(test: &str) -> Option<PathBuf> {
    match envoy_bin() {
        Some(bin) => Some(bin),
        None if std::env::var_os("CI").is_some() => {
            panic!("{test}: Envoy is needed in CI (set ENVOY_BIN, or run ./dev setup)")
        }
        None => {
            eprintln!("{test}: skipped, no Envoy (set ENVOY_BIN, or run ./dev setup)");
            None
        }
    }
}

/// A certificate and its key for static secrets: the test pair of the `https` golden case.
fn test_pair() -> (String, String) {
    let text = std::fs::read_to_string(super::testdata().join("gatewayapi/https.in.yaml")).unwrap();
    let cert = section(&text, "tls.crt: |");
    let key = section(&text, "tls.key: |");
    (cert, key)
}

/// The indented block after `marker` in a YAML file, unindented.
fn section(text: &str, marker: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim() == marker {
            inside = true;
            continue;
        }
        if inside {
            let trimmed = line.trim();
            if trimmed.is_empty() || !line.starts_with("    ") {
                break;
            }
            out.push_str(trimmed);
            out.push('\n');
            if trimmed.starts_with("-----END") {
                break;
            }
        }
    }
    out
}

/// The static bootstrap that holds one proxy's resources (`{"LDS": [...], "RDS": [...], ...}`).
pub fn validation_bootstrap(resources: &Value) -> Value {
    let list = |t: &str| -> Vec<Value> {
        resources
            .get(t)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let routes: BTreeMap<String, Value> = list("RDS")
        .into_iter()
        .map(|r| (r["name"].as_str().unwrap_or_default().to_string(), r))
        .collect();
    let assignments: BTreeMap<String, Value> = list("EDS")
        .into_iter()
        .map(|a| (a["clusterName"].as_str().unwrap_or_default().to_string(), a))
        .collect();
    let mut listeners = list("LDS");
    for listener in &mut listeners {
        inline(listener, &routes);
    }
    let mut clusters = list("CDS");
    for cluster in &mut clusters {
        if cluster["type"] == "EDS" {
            let name = cluster["name"].as_str().unwrap_or_default().to_string();
            let object = cluster.as_object_mut().unwrap();
            object.remove("edsClusterConfig");
            object.insert("type".into(), json!("STATIC"));
            object.insert(
                "loadAssignment".into(),
                assignments
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| json!({"clusterName": name})),
            );
        }
    }
    let (cert, key) = test_pair();
    let secrets: Vec<Value> = list("SDS")
        .into_iter()
        .map(|s| {
            json!({"name": s["name"], "tlsCertificate": {
                "certificateChain": {"inlineString": cert},
                "privateKey": {"inlineString": key}}})
        })
        .collect();
    // Sidecars with mutual TLS load their certificate from the pod agent, whose cluster
    // `trellis bootstrap --sds-socket` defines.
    if resources
        .to_string()
        .contains(trellis_translate::envoy::mtls::AGENT_SDS_CLUSTER)
    {
        clusters.push(json!({
            "name": trellis_translate::envoy::mtls::AGENT_SDS_CLUSTER,
            "type": "STATIC",
            "connectTimeout": "1s",
            "loadAssignment": {"clusterName": trellis_translate::envoy::mtls::AGENT_SDS_CLUSTER,
                "endpoints": [{"lbEndpoints": [{"endpoint": {"address": {"pipe": {"path": "/var/run/trellis/sds.sock"}}}}]}]},
            "typedExtensionProtocolOptions": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicitHttpConfig": {"http2ProtocolOptions": {}}}},
        }));
    }
    // Tracing to the control plane goes through the bootstrap's `trellis-telemetry` cluster.
    if resources
        .to_string()
        .contains(trellis_translate::envoy::tracing::TELEMETRY_CLUSTER)
    {
        clusters.push(json!({
            "name": trellis_translate::envoy::tracing::TELEMETRY_CLUSTER,
            "type": "STATIC",
            "connectTimeout": "1s",
            "loadAssignment": {"clusterName": trellis_translate::envoy::tracing::TELEMETRY_CLUSTER,
                "endpoints": [{"lbEndpoints": [{"endpoint": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": 18000}}}}]}]},
            "typedExtensionProtocolOptions": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicitHttpConfig": {"http2ProtocolOptions": {}}}},
        }));
    }
    json!({
        // SDS from another cluster needs the node named, as every real bootstrap does.
        "node": {"id": "validate", "cluster": "validate"},
        "staticResources": {"listeners": listeners, "clusters": clusters, "secrets": secrets},
        "layeredRuntime": {"layers": [{"name": "trellis", "staticLayer": {
            trellis_translate::re2::ENVOY_PROGRAM_SIZE_KEY: trellis_translate::re2::ENVOY_PROGRAM_SIZE_LIMIT
        }}]},
    })
}

/// Inlines RDS route configurations, points SDS references at static secrets, and turns the
/// golden files' marker for an empty `Any` back into one.
fn inline(value: &mut Value, routes: &BTreeMap<String, Value>) {
    match value {
        Value::Object(object) => {
            if object
                .get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("/envoy.config.route.v3.FilterConfig"))
                && object["config"]["@type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("/google.protobuf.Empty"))
            {
                object.insert("config".into(), json!({}));
            }
            if let Some(name) = object
                .get("rds")
                .and_then(|r| r["routeConfigName"].as_str())
                .map(str::to_string)
            {
                object.remove("rds");
                let route = routes
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| json!({"name": name}));
                object.insert("routeConfig".into(), route);
            }
            if let Some(Value::Array(configs)) = object.get_mut("tlsCertificateSdsSecretConfigs") {
                for config in configs {
                    // The control plane's secrets become static ones; the pod agent's (mutual
                    // TLS) stay, fetched from the agent's cluster.
                    if let Some(c) = config.as_object_mut()
                        && c.get("sdsConfig").is_some_and(|s| s.get("ads").is_some())
                    {
                        c.remove("sdsConfig");
                    }
                }
            }
            for v in object.values_mut() {
                inline(v, routes);
            }
        }
        Value::Array(items) => {
            for v in items {
                inline(v, routes);
            }
        }
        _ => {}
    }
}

/// Runs `envoy --mode validate` on every bootstrap (a few at once); returns the refused ones
/// with Envoy's reason.
pub fn validate_all(envoy: &Path, cases: Vec<(String, Value)>) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4);
    let chunk = cases.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = cases
            .chunks(chunk)
            .map(|part| {
                let dir = dir.path();
                scope.spawn(move || {
                    let mut refused = Vec::new();
                    for (name, bootstrap) in part {
                        let file = dir.join(format!("{}.json", name.replace(['/', ' '], "_")));
                        std::fs::write(&file, serde_json::to_vec(bootstrap).unwrap()).unwrap();
                        let output = std::process::Command::new(envoy)
                            .args(["--mode", "validate", "--disable-hot-restart", "-l", "error"])
                            .args(["--concurrency", "1", "-c"])
                            .arg(&file)
                            .output()
                            .expect("envoy runs");
                        if !output.status.success() {
                            let text = String::from_utf8_lossy(&output.stdout).to_string()
                                + &String::from_utf8_lossy(&output.stderr);
                            refused.push((name.clone(), text));
                        }
                    }
                    refused
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}
