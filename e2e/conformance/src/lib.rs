//! Our runner for the upstream Gateway API conformance suite (v1.6.1), without a cluster.
//!
//! The upstream manifests (`../shared/gateway-api-conformance`, Apache-2.0, read as they are)
//! are applied to a [`cluster::Cluster`] made of Trellis's file provider and local processes;
//! each upstream test's expectations are re-encoded in Rust under [`tests`], written with the
//! shorthands of [`dsl`] and [`subtests`] and the assertions in [`checks`] and [`http`], which
//! follow upstream's semantics (status conditions with observedGeneration, requests retried
//! until they pass three times in a row within 30 s).
//!
//! ```text
//!  conformance --report PATH ──► Suite::setup (base manifests, certificates, GatewayClass)
//!                               ──► for each test: apply manifests, run, clean up
//!                               ──► report (upstream ConformanceReport shape)
//! ```

pub mod certs;
pub mod checks;
pub mod cluster;
pub mod dsl;
pub mod http;
pub mod mesh;
pub mod mesh_tests;
pub mod report;
pub mod subtests;
pub mod tests;

use anyhow::Context;
use cluster::{Cluster, ObjId};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Namespace of the suite's infrastructure (Gateways, most backends).
pub const INFRA_NS: &str = "gateway-conformance-infra";
/// Namespace of the app backends.
pub const APP_NS: &str = "gateway-conformance-app-backend";
/// Namespace of the web backend.
pub const WEB_NS: &str = "gateway-conformance-web-backend";

/// A test of the suite.
#[derive(Clone, Copy)]
pub struct ConformanceTest {
    /// Upstream's ShortName.
    pub short_name: &'static str,
    /// What it checks.
    pub description: &'static str,
    /// Features it needs; core when all are core features.
    pub features: &'static [&'static str],
    /// Manifests applied before the test (relative to the upstream conformance directory).
    pub manifests: &'static [&'static str],
    /// Upstream marks it provisional.
    pub provisional: bool,
    /// The test.
    pub run: fn(&mut Suite) -> anyhow::Result<()>,
}

/// Features that make a test core in GATEWAY-HTTP.
pub const CORE_FEATURES: &[&str] = &["Gateway", "HTTPRoute", "ReferenceGrant"];

/// The suite's state shared by tests.
pub struct Suite {
    /// The simulated cluster.
    pub cluster: Cluster,
    /// Timeouts.
    pub timeouts: http::Timeouts,
    /// Upstream conformance directory (manifests).
    pub upstream: PathBuf,
    /// PEM of the CA behind `tls-checks-certificate` and friends.
    pub tls_checks_ca: String,
    /// PEM of the self-signed `tls-validity-checks-certificate` (`*`, `*.org`, `*.wildcard.org`).
    pub tls_validity_cert: String,
    /// PEM of the self-signed `certificate` in the web backend namespace (`*`).
    pub web_cert: String,
    /// Client certificate signed by `tls-validity-checks-ca-certificate` (cert, key).
    pub validity_client: (String, String),
    /// Client certificate signed by the per-port CA (cert, key).
    pub per_port_client: (String, String),
    /// Log of the current test.
    pub log: Vec<String>,
}

impl Suite {
    /// Starts the cluster and applies the base manifests and generated certificates.
    pub fn setup(
        work: &Path,
        upstream: &Path,
        gateway_pool: &str,
        pod_prefix: [u8; 2],
    ) -> anyhow::Result<Suite> {
        let mut cluster = Cluster::start(work, gateway_pool, pod_prefix)?;
        // The GatewayClass the suite is run against.
        cluster.apply(vec![serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": cluster::GATEWAY_CLASS},
            "spec": {"controllerName": cluster::CONTROLLER},
        })])?;
        // Certificates and CAs, as upstream's setup creates them.
        let web = certs::self_signed(&["*"])?;
        let validity = certs::self_signed(&["*", "*.org", "*.wildcard.org"])?;
        let web_ca = certs::Ca::new("web-backend-ca")?;
        let validity_ca = certs::Ca::new("tls-validity-checks-ca")?;
        let validity_client = validity_ca.client()?;
        let per_port_ca = certs::Ca::new("tls-validity-checks-per-port-ca")?;
        let per_port_client = per_port_ca.client()?;
        let checks_ca = certs::Ca::new("tls-checks-ca")?;
        let checks_server = checks_ca.server(&[
            "abc.example.com",
            "spiffe://abc.example.com/test-identity",
            "other.example.com",
        ])?;
        let checks_client = checks_ca.client()?;
        let passthrough = checks_ca.server(&["abc.example.com"])?;
        let terminate = checks_ca.server(&["tls.example.com"])?;
        let mismatch_ca = certs::Ca::new("mismatch-ca")?;
        let base = cluster.read_manifest(&upstream.join("base/manifests.yaml"))?;
        // Namespaces first, then the Secrets pods mount, then the rest.
        let (namespaces, rest): (Vec<Value>, Vec<Value>) =
            base.into_iter().partition(|v| v["kind"] == "Namespace");
        cluster.apply(namespaces)?;
        cluster.apply(vec![
            certs::tls_secret(WEB_NS, "certificate", &web),
            certs::tls_secret(INFRA_NS, "tls-validity-checks-certificate", &validity),
            certs::ca_config_map(WEB_NS, "web-backend-cm", &web_ca.cert_pem),
            certs::ca_config_map(
                INFRA_NS,
                "tls-validity-checks-ca-certificate",
                &validity_ca.cert_pem,
            ),
            certs::tls_secret(
                INFRA_NS,
                "tls-validity-checks-client-certificate",
                &validity_client,
            ),
            certs::ca_config_map(
                INFRA_NS,
                "tls-validity-checks-per-port-ca-certificate",
                &per_port_ca.cert_pem,
            ),
            certs::tls_secret(
                INFRA_NS,
                "tls-validity-checks-per-port-client-certificate",
                &per_port_client,
            ),
            certs::ca_config_map(INFRA_NS, "tls-checks-ca-certificate", &checks_ca.cert_pem),
            certs::tls_secret(INFRA_NS, "tls-checks-certificate", &checks_server),
            certs::tls_secret(INFRA_NS, "tls-checks-client-certificate", &checks_client),
            certs::tls_secret(INFRA_NS, "tls-passthrough-checks-certificate", &passthrough),
            certs::tls_secret(APP_NS, "tls-passthrough-checks-certificate", &passthrough),
            certs::tls_secret(INFRA_NS, "tls-terminate-checks-certificate", &terminate),
            certs::ca_config_map(INFRA_NS, "mismatch-ca-certificate", &mismatch_ca.cert_pem),
        ])?;
        cluster.apply(rest)?;
        let suite = Suite {
            cluster,
            timeouts: http::Timeouts::default(),
            upstream: upstream.to_path_buf(),
            tls_checks_ca: checks_ca.cert_pem.clone(),
            tls_validity_cert: validity.cert.clone(),
            web_cert: web.cert.clone(),
            validity_client: (validity_client.cert.clone(), validity_client.key.clone()),
            per_port_client: (per_port_client.cert.clone(), per_port_client.key.clone()),
            log: Vec::new(),
        };
        // The base Gateways must be up before tests start.
        for gw in [
            "same-namespace",
            "same-namespace-with-https-listener",
            "all-namespaces",
            "backend-namespaces",
        ] {
            suite
                .wait_gateway_address(&checks::GatewayRef::new(INFRA_NS, gw))
                .with_context(|| format!("base Gateway {gw}"))?;
        }
        Ok(suite)
    }

    /// Notes a line in the current test's log (printed as it happens when
    /// `TRELLIS_CONFORMANCE_VERBOSE` is set).
    pub fn logf(&mut self, line: impl Into<String>) {
        let line = line.into();
        if std::env::var_os("TRELLIS_CONFORMANCE_VERBOSE").is_some() {
            println!("        {line}");
        }
        self.log.push(line);
    }

    /// Applies a manifest from the upstream directory; returns what it created.
    pub fn apply_manifest(&mut self, relative: &str) -> anyhow::Result<Vec<ObjId>> {
        let objects = self.cluster.read_manifest(&self.upstream.join(relative))?;
        self.cluster.apply(objects)
    }

    /// Runs one test: applies its manifests, runs it, then removes what it created and puts
    /// back what it changed.
    pub fn run_test(&mut self, test: &ConformanceTest) -> anyhow::Result<()> {
        self.log.clear();
        let before: std::collections::BTreeMap<ObjId, Value> = self
            .cluster
            .ids()
            .into_iter()
            .filter_map(|id| self.cluster.get(&id).cloned().map(|v| (id, v)))
            .collect();
        let result = (|| {
            for m in test.manifests {
                self.apply_manifest(m)?;
            }
            (test.run)(self)
        })();
        let created: Vec<ObjId> = self
            .cluster
            .ids()
            .into_iter()
            .filter(|id| !before.contains_key(id) && !self.cluster.is_generated_slice(id))
            .collect();
        let changed: Vec<Value> = before
            .iter()
            .filter(|(id, v)| {
                self.cluster.get(id) != Some(*v) && !self.cluster.is_generated_slice(id)
            })
            .map(|(_, v)| v.clone())
            .collect();
        let cleanup = self.cluster.delete(&created).and_then(|()| {
            if changed.is_empty() {
                Ok(())
            } else {
                self.cluster.apply(changed).map(|_| ())
            }
        });
        // Give the control plane a moment to drop the test's objects before the next test.
        std::thread::sleep(Duration::from_millis(150));
        result.and(cleanup)
    }
}
