//! `ExternalService` (`networking.trellis.dev/v1alpha1`): a destination outside the mesh that the
//! sidecars of its namespace may call, and how — by host name, with TLS originated by the
//! sidecar when the app speaks plain HTTP.
//!
//! ```text
//!  app ─http://api.example.com/─► sidecar ─(Host: api.example.com)─► external/<ns>/<name>/<port>
//!                                     │                               TLS to api.example.com:443
//!                                     └─ any other destination ─► passthrough, or blocked when the
//!                                        namespace is `trellis.dev/outbound-traffic: registry-only`
//! ```
//!
//! Why a kind of its own rather than `ExternalName` Services: an ExternalName Service is a DNS
//! alias with nowhere to say that the sidecar should originate TLS, to which port, or trusting
//! which CA, and it changes what every pod of the cluster resolves. An ExternalService changes
//! nothing but the sidecars of its own namespace, so one tenant's declaration never redirects
//! another tenant's traffic.

use crate::policy::PolicyObject;
use serde::{Deserialize, Serialize};

/// The API group of ExternalService.
pub const GROUP: &str = "networking.trellis.dev";

/// `ExternalService`: a declared destination outside the mesh.
pub type ExternalService = PolicyObject<ExternalServiceSpec>;

/// The spec of an ExternalService.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalServiceSpec {
    /// The DNS names apps call (the `Host` header of HTTP requests, the SNI of TLS
    /// connections); 1 to 16.
    pub hosts: Vec<String>,
    /// The ports apps call; 1 to 16.
    pub ports: Vec<ExternalPort>,
    /// Where the sidecar connects; without them, the first host, resolved by DNS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<ExternalEndpoint>,
}

/// A port of an external service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalPort {
    /// The port's name (unique in the spec).
    pub name: String,
    /// The port apps call.
    pub port: i64,
    /// `HTTP` (routed by the `Host` header) or `TLS` (the app's own TLS, routed by SNI).
    pub protocol: ExternalProtocol,
    /// The port the sidecar connects to (the same as `port` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<i64>,
    /// HTTP only: the sidecar originates TLS to the external service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOrigination>,
}

/// How a port is spoken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExternalProtocol {
    /// Plain HTTP from the app.
    #[default]
    #[serde(rename = "HTTP")]
    Http,
    /// TLS from the app, passed through by SNI.
    #[serde(rename = "TLS")]
    Tls,
}

/// TLS the sidecar starts on the app's behalf.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsOrigination {
    /// The server name sent and verified (the first host by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// A ConfigMap in the same namespace holding the PEM CA bundle to verify the server
    /// against; without it, the proxy's system trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate_ref: Option<CaCertificateRef>,
}

/// A CA bundle in a ConfigMap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaCertificateRef {
    /// `ConfigMap`.
    pub kind: String,
    /// The ConfigMap's name.
    pub name: String,
    /// The key holding the bundle (`ca.crt` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// An address the sidecar connects to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalEndpoint {
    /// An IP address or a DNS name.
    pub address: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_spec;
    use serde_json::json;

    #[test]
    fn an_external_service_reads_as_written() {
        let spec: ExternalServiceSpec = parse_spec(&json!({
            "hosts": ["api.example.com"],
            "ports": [{"name": "http", "port": 80, "protocol": "HTTP", "targetPort": 443,
                       "tls": {"caCertificateRef": {"kind": "ConfigMap", "name": "ca"}}}],
        }))
        .unwrap();
        assert_eq!(spec.ports[0].protocol, ExternalProtocol::Http);
        assert_eq!(spec.ports[0].target_port, Some(443));
        let e = parse_spec::<ExternalServiceSpec>(&json!({
            "hosts": [], "ports": [{"name": "x", "port": 1, "protocol": "UDP"}]
        }))
        .unwrap_err();
        assert!(e.field.starts_with("spec.ports"), "{e}");
    }
}
