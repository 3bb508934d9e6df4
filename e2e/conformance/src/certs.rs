//! Certificates the upstream suite creates at setup: self-signed server certificates, CAs and
//! CA-signed server and client certificates, as Kubernetes Secrets (`kubernetes.io/tls`) and
//! ConfigMaps (`ca.crt`). ECDSA P-256 keys stand in for upstream's RSA ones.

use anyhow::Context;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};

/// A CA that can sign certificates.
pub struct Ca {
    /// The CA certificate (PEM).
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct Pem {
    /// Certificate chain.
    pub cert: String,
    /// Private key.
    pub key: String,
}

fn params(hosts: &[&str], server: bool) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "default");
    p.distinguished_name
        .push(DnType::OrganizationName, "Acme Co");
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let now = std::time::SystemTime::now();
    p.not_before = (now - std::time::Duration::from_secs(3600)).into();
    p.not_after = (now + std::time::Duration::from_secs(365 * 24 * 3600)).into();
    for h in hosts {
        let san = if let Ok(ip) = h.parse::<std::net::IpAddr>() {
            SanType::IpAddress(ip)
        } else if h.contains("://") {
            SanType::URI(rcgen::string::Ia5String::try_from(h.to_string())?)
        } else {
            SanType::DnsName(rcgen::string::Ia5String::try_from(h.to_string())?)
        };
        p.subject_alt_names.push(san);
    }
    Ok(p)
}

/// A self-signed server certificate for `hosts`.
pub fn self_signed(hosts: &[&str]) -> anyhow::Result<Pem> {
    let key = KeyPair::generate()?;
    let cert = params(hosts, true)?.self_signed(&key)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

impl Ca {
    /// A new CA.
    pub fn new(name: &str) -> anyhow::Result<Ca> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = std::time::SystemTime::now();
        p.not_before = (now - std::time::Duration::from_secs(3600)).into();
        p.not_after = (now + std::time::Duration::from_secs(365 * 24 * 3600)).into();
        let cert = p.self_signed(&key).context("self-signing the CA")?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        })
    }

    /// A server certificate for `hosts`, signed by this CA.
    pub fn server(&self, hosts: &[&str]) -> anyhow::Result<Pem> {
        let key = KeyPair::generate()?;
        let cert = params(hosts, true)?.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    /// A client certificate signed by this CA.
    pub fn client(&self) -> anyhow::Result<Pem> {
        let key = KeyPair::generate()?;
        let cert = params(&["client.example.com"], false)?.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// A `kubernetes.io/tls` Secret.
pub fn tls_secret(namespace: &str, name: &str, pem: &Pem) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(&pem.cert), "tls.key": b64(&pem.key)},
    })
}

/// A ConfigMap with `ca.crt`.
pub fn ca_config_map(namespace: &str, name: &str, ca_pem: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"ca.crt": ca_pem},
    })
}
