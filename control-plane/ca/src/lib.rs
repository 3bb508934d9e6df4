//! Trellis's certificate authority.
//!
//! ```text
//!  Ca::load_or_create(dir) ── root key + certificate, created once (ECDSA P-256, 10 years),
//!                             kept in a directory only its owner may read (0700, files 0600)
//!  Ca::sign(csr, identity, lifetime, now)
//!      ── the CSR's signature is checked, and its public key is the only thing taken from it:
//!         the certificate names `identity` (which the caller's authenticated token decided),
//!         whatever SANs or subject the CSR asked for
//!  rotate_at(not_before, not_after, jitter) ── half-life, moved by up to ±jitter
//! ```
//!
//! The certificate service, the tokens that authenticate its callers and the agent beside each
//! sidecar build on this crate.

mod identity;
pub mod service;
pub mod token;

pub use identity::{DEFAULT_TRUST_DOMAIN, IdentityError, SpiffeId};
pub use token::{TokenError, TokenKey};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;

/// A leaf certificate's lifetime when none is configured (as in Istio).
pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The root's lifetime.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The largest CSR accepted, in bytes of PEM (an ECDSA or RSA-4096 request is well under it).
pub const MAX_CSR_BYTES: usize = 16 * 1024;
/// How far back a leaf's validity starts, for clocks a little behind the control plane's.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Why the CA cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CA directory or one of its files cannot be read or written.
    #[error("CA directory {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The CA directory or a key file may be read by others than its owner.
    #[error("{path} is readable by others than its owner (mode {mode:o}): it holds the CA's key")]
    Permissions {
        /// The path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The stored root does not parse, or its key does not match it.
    #[error("the CA's stored root is not usable: {0}")]
    BadRoot(String),
    /// The CSR is too large, does not parse, or its signature is wrong.
    #[error("certificate signing request refused: {0}")]
    BadCsr(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(#[from] rcgen::Error),
    /// A workload named for a token is not a valid identity.
    #[error("{0}")]
    Identity(#[from] IdentityError),
}

/// The root: its certificate (PEM) and key.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    not_after: SystemTime,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A signed leaf.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The leaf, then the root (PEM).
    pub chain_pem: String,
    /// When it starts being valid.
    pub not_before: SystemTime,
    /// When it expires.
    pub not_after: SystemTime,
}

const CERT_FILE: &str = "root-cert.pem";
const KEY_FILE: &str = "root-key.pem";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Refuses a path that others than its owner may read, write or enter.
fn owner_only(path: &Path) -> Result<(), CaError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(io(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// The CA directory, created (0700) when missing; refused when others may use it.
fn ensure_dir(dir: &Path) -> Result<(), CaError> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
    }
    owner_only(dir)
}

/// Writes a file only its owner may read (0600), atomically.
fn write_owner_only(path: &Path, data: &[u8]) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(data).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

impl Ca {
    /// A new root, valid from `now` for [`ROOT_LIFETIME`], named after `trust_domain`.
    pub fn generate(trust_domain: &str, now: SystemTime) -> Result<Ca, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, trust_domain);
        params.distinguished_name.push(
            DnType::CommonName,
            format!("Trellis root CA ({trust_domain})"),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = offset(now - BACKDATE);
        params.not_after = offset(now + ROOT_LIFETIME);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            not_after: now + ROOT_LIFETIME,
            issuer: Issuer::new(params, key),
        })
    }

    /// The root stored in `dir`, or a new one written there (the directory 0700, the files
    /// 0600). A directory or key that others may read is refused rather than used.
    pub fn load_or_create(dir: &Path, trust_domain: &str, now: SystemTime) -> Result<Ca, CaError> {
        ensure_dir(dir)?;
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        if key_path.exists() {
            owner_only(&key_path)?;
            let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            return Ca::from_pem(&cert_pem, &key_pem);
        }
        let ca = Ca::generate(trust_domain, now)?;
        let write = |path: &Path, text: &str| write_owner_only(path, text.as_bytes());
        write(&key_path, &ca.issuer.key().serialize_pem())?;
        write(&cert_path, &ca.cert_pem)?;
        Ok(ca)
    }

    /// A root from its certificate and key (PEM), as stored or as an operator provides it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::BadRoot(e.to_string()))?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| CaError::BadRoot(e.to_string()))?;
        let (_, not_after) = certificate_validity(cert_pem).map_err(CaError::BadRoot)?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            issuer,
            not_after,
        })
    }

    /// The root's private key (PEM), for storing the CA where only the control plane reads it
    /// (its directory, or a Secret in Kubernetes mode). Never sent to a workload.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The root certificate (PEM): what peers trust (SDS `ROOTCA`).
    pub fn root_pem(&self) -> &str {
        &self.cert_pem
    }

    /// When the root expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Signs a leaf for `identity` with the public key of `csr_pem`, valid from a little
    /// before `now` for `lifetime` (never past the root). Nothing else of the CSR is used:
    /// its subject, SANs and extensions are ignored, so a caller cannot ask for another
    /// identity. The CSR must be signed by the key it carries.
    pub fn sign(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Issued, CaError> {
        if csr_pem.len() > MAX_CSR_BYTES {
            return Err(CaError::BadCsr(format!(
                "it is {} bytes; at most {MAX_CSR_BYTES} are accepted",
                csr_pem.len()
            )));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let not_before = now - BACKDATE;
        let not_after = (now + lifetime).min(self.not_after);
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            identity
                .to_string()
                .try_into()
                .map_err(|e: rcgen::Error| CaError::BadCsr(e.to_string()))?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = offset(not_before);
        params.not_after = offset(not_after);
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(Issued {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            not_before,
            not_after,
        })
    }
}

/// A certificate and key the CA issues to the control plane itself (its xDS serving
/// certificate).
#[derive(Clone, Debug)]
pub struct ServingCertificate {
    /// The certificate then the root, PEM.
    pub chain_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub key_pem: String,
    /// When it stops being valid.
    pub not_after: SystemTime,
}

impl Ca {
    /// A key and a certificate for the control plane: `identity` as its URI SAN and
    /// `dns_names` as DNS SANs (what clients connect by), both server and client use.
    pub fn issue_serving(
        &self,
        identity: &SpiffeId,
        dns_names: &[String],
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<ServingCertificate, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut sans = vec![SanType::URI(
            identity
                .to_string()
                .try_into()
                .map_err(|e: rcgen::Error| CaError::BadCsr(e.to_string()))?,
        )];
        for name in dns_names {
            sans.push(SanType::DnsName(
                name.clone()
                    .try_into()
                    .map_err(|e: rcgen::Error| CaError::BadCsr(e.to_string()))?,
            ));
        }
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let not_after = (now + lifetime).min(self.not_after);
        params.not_before = offset(now - BACKDATE);
        params.not_after = offset(not_after);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServingCertificate {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
            not_after,
        })
    }
}

/// The first URI SAN of a DER certificate (a workload's SPIFFE ID), if it has one.
pub fn uri_san(cert_der: &[u8]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let sans = cert.subject_alternative_name().ok()??;
    sans.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(uri) => Some((*uri).to_string()),
        _ => None,
    })
}

/// The service account a Gateway's proxies run as: `<gateway>-gateway`, in the Gateway's
/// namespace (the identity the control plane expects of them on xDS).
pub fn gateway_service_account(gateway: &str) -> String {
    format!("{gateway}-gateway")
}

/// A PEM certificate's validity: `notBefore` and `notAfter` (times before 1970 read as 1970).
pub fn certificate_validity(cert_pem: &str) -> Result<(SystemTime, SystemTime), String> {
    use x509_parser::prelude::{FromDer, X509Certificate, parse_x509_pem};
    let (_, pem) = parse_x509_pem(cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    let (_, cert) = X509Certificate::from_der(&pem.contents).map_err(|e| e.to_string())?;
    let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    Ok((
        at(cert.validity().not_before.timestamp()),
        at(cert.validity().not_after.timestamp()),
    ))
}

/// When to renew a certificate valid from `not_before` to `not_after`: at half its lifetime,
/// moved by `jitter` (a fraction of the lifetime, at most ±0.25), so that certificates issued
/// together are not renewed together. `unit` in `[-1, 1]` chooses where in the jitter window
/// (callers pass a random value).
pub fn rotate_at(
    not_before: SystemTime,
    not_after: SystemTime,
    jitter: f64,
    unit: f64,
) -> SystemTime {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    let jitter = jitter.clamp(0.0, 0.25);
    let at = lifetime * (0.5 + jitter * unit.clamp(-1.0, 1.0));
    not_before + Duration::from_secs_f64(at.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn now() -> SystemTime {
        SystemTime::now()
    }

    /// A CSR from a fresh key, asking for `sans`.
    fn csr(sans: &[&str]) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans
            .iter()
            .map(|s| SanType::URI((*s).try_into().unwrap()))
            .collect();
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn leaf_der(chain: &str) -> Vec<u8> {
        let first = chain.split("-----END CERTIFICATE-----").next().unwrap();
        let pem = format!("{first}-----END CERTIFICATE-----\n");
        let (_, p) = parse_x509_pem(pem.as_bytes()).unwrap();
        p.contents
    }

    fn uri_sans(der: &[u8]) -> Vec<String> {
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        cert.subject_alternative_name()
            .unwrap()
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::URI(u) => Some(u.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_leaf_names_the_callers_identity_whatever_the_csr_asks_for() {
        let ca = Ca::generate("cluster.local", now()).unwrap();
        let caller = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders").unwrap();
        let issued = ca
            .sign(
                &csr(&["spiffe://cluster.local/ns/kube-system/sa/admin"]),
                &caller,
                DEFAULT_LEAF_LIFETIME,
                now(),
            )
            .unwrap();
        let der = leaf_der(&issued.chain_pem);
        assert_eq!(uri_sans(&der), [caller.to_string()]);
        // Signed by the root, not a CA itself, for both ends of a connection.
        let (_, leaf) = X509Certificate::from_der(&der).unwrap();
        let (_, root_pem) = parse_x509_pem(ca.root_pem().as_bytes()).unwrap();
        let (_, root) = X509Certificate::from_der(&root_pem.contents).unwrap();
        leaf.verify_signature(Some(root.public_key())).unwrap();
        assert!(!leaf.is_ca());
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let lifetime =
            leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
        assert_eq!(
            lifetime,
            (DEFAULT_LEAF_LIFETIME + BACKDATE).as_secs() as i64
        );
    }

    #[test]
    fn a_csr_not_signed_by_its_key_or_too_large_or_garbled_is_refused() {
        let ca = Ca::generate("cluster.local", now()).unwrap();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
        // Flip a byte inside the request's signature.
        let good = csr(&[]);
        let (_, pem) = parse_x509_pem(good.as_bytes()).unwrap();
        let mut der = pem.contents.clone();
        let last = der.len() - 3;
        der[last] ^= 0x55;
        let tampered_pem = pem_of(&der);
        let err = ca
            .sign(&tampered_pem, &id, DEFAULT_LEAF_LIFETIME, now())
            .unwrap_err();
        assert!(matches!(err, CaError::BadCsr(_)), "{err}");
        let huge = "A".repeat(MAX_CSR_BYTES + 1);
        assert!(ca.sign(&huge, &id, DEFAULT_LEAF_LIFETIME, now()).is_err());
        assert!(
            ca.sign("not a csr", &id, DEFAULT_LEAF_LIFETIME, now())
                .is_err()
        );
    }

    fn pem_of(der: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
                << (8 * (3 - chunk.len()));
            for i in 0..4 {
                if i <= chunk.len() {
                    b64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    b64.push('=');
                }
            }
        }
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn a_leaf_never_outlives_its_root() {
        let start = now();
        let ca = Ca::generate("cluster.local", start).unwrap();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
        let late = start + ROOT_LIFETIME - Duration::from_secs(3600);
        let issued = ca
            .sign(&csr(&[]), &id, DEFAULT_LEAF_LIFETIME, late)
            .unwrap();
        assert_eq!(issued.not_after, ca.not_after());
    }

    #[test]
    fn the_root_is_stored_for_its_owner_only_and_loaded_again() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        let first = Ca::load_or_create(&dir, "cluster.local", now()).unwrap();
        for f in [KEY_FILE, CERT_FILE] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let second = Ca::load_or_create(&dir, "cluster.local", now()).unwrap();
        assert_eq!(first.root_pem(), second.root_pem());
        // A leaf of the reloaded root verifies against the first one's certificate.
        let id = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
        let issued = second
            .sign(&csr(&[]), &id, DEFAULT_LEAF_LIFETIME, now())
            .unwrap();
        let leaf_bytes = leaf_der(&issued.chain_pem);
        let (_, leaf) = X509Certificate::from_der(&leaf_bytes).unwrap();
        let (_, root_pem) = parse_x509_pem(first.root_pem().as_bytes()).unwrap();
        let (_, root) = X509Certificate::from_der(&root_pem.contents).unwrap();
        leaf.verify_signature(Some(root.public_key())).unwrap();
        // A key others may read is refused, not used.
        std::fs::set_permissions(dir.join(KEY_FILE), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let err = Ca::load_or_create(&dir, "cluster.local", now()).unwrap_err();
        assert!(matches!(err, CaError::Permissions { .. }), "{err}");
    }

    #[test]
    fn certificates_rotate_at_half_life_within_the_jitter() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(24 * 3600);
        let half = start + Duration::from_secs(12 * 3600);
        assert_eq!(rotate_at(start, end, 0.01, 0.0), half);
        let early = rotate_at(start, end, 0.01, -1.0);
        let late = rotate_at(start, end, 0.01, 1.0);
        assert_eq!(half.duration_since(early).unwrap().as_secs(), 864);
        assert_eq!(late.duration_since(half).unwrap().as_secs(), 864);
        // Silly inputs stay within the certificate's life.
        let at = rotate_at(start, end, 9.0, 9.0);
        assert!(at < end && at > start);
        assert_eq!(rotate_at(end, start, 0.01, 0.0), end);
    }
}
