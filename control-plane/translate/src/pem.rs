//! Checks on PEM certificate material from Secrets, so a malformed Secret becomes a listener
//! condition instead of a configuration Envoy rejects.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Whether `chain` holds at least one PEM certificate and `key` a PEM private key.
pub fn check_certificate_and_key(chain: &str, key: &str) -> Result<(), String> {
    let certs: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    for c in &certs {
        // A certificate is a DER SEQUENCE.
        if c.as_ref().first() != Some(&0x30) {
            return Err("tls.crt holds something that is not a certificate".into());
        }
    }
    PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| format!("tls.key is not a PEM private key: {e}"))?;
    Ok(())
}
