//! Certificates and keys for SDS.

use super::*;
use crate::ir::SecretIr;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    Secret, TlsCertificate, secret,
};

/// A certificate and key for SDS.
pub fn secret(s: &SecretIr) -> Secret {
    Secret {
        name: s.name.clone(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline_bytes(&s.certificate_chain)),
            private_key: Some(inline_bytes(&s.private_key)),
            ..Default::default()
        })),
    }
}
