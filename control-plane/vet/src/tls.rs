//! TLS on Gateways: HTTPS listeners of one port whose certificates also cover another
//! listener's hostnames (TRL0138).

use crate::{Code, Finding, ObjectRef, Severity};
use std::collections::{BTreeMap, BTreeSet};
use trellis_model::InputSet;
use trellis_translate::ir::{FilterChainIr, Ir, ListenerProtocol};

/// The DNS names a PEM chain's first certificate is valid for (its subjectAltName DNS
/// entries), or `None` when it cannot be read.
fn dns_names(pem: &str) -> Option<Vec<String>> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate, parse_x509_pem};
    let (_, pem) = parse_x509_pem(pem.as_bytes()).ok()?;
    let (_, cert) = X509Certificate::from_der(&pem.contents).ok()?;
    let sans = cert.subject_alternative_name().ok()??;
    Some(
        sans.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
    )
}

/// Whether a certificate name covers a listener hostname, as TLS clients judge it: exactly,
/// or a `*.` wildcard for one more label in front (a wildcard hostname needs the same
/// wildcard).
pub(crate) fn certificate_covers(name: &str, host: &str) -> bool {
    if name == host {
        return true;
    }
    match (name.strip_prefix("*."), host.split_once('.')) {
        (Some(suffix), Some((label, rest))) => rest == suffix && label != "*" && !label.is_empty(),
        _ => false,
    }
}

/// Adds to `out` the hostnames of chain `b` that a certificate of chain `a` also covers (by
/// Secret: the same one, or the DNS names `names` read from it): a client holding a connection
/// to `a` may send their requests on it (HTTP/2 connection reuse).
fn shared_hosts(
    names: &BTreeMap<&str, Vec<String>>,
    a: &FilterChainIr,
    b: &FilterChainIr,
    out: &mut BTreeSet<String>,
) {
    for secret in &a.certificates {
        if b.certificates.contains(secret) {
            out.extend(b.server_names.iter().cloned());
            continue;
        }
        for host in &b.server_names {
            if names
                .get(secret.as_str())
                .is_some_and(|names| names.iter().any(|n| certificate_covers(n, host)))
            {
                out.insert(host.clone());
            }
        }
    }
}

/// TRL0138: two HTTPS listeners of a Gateway on one port, where a certificate of one also
/// covers the other's hostname. An HTTP/2 client (a browser) that holds a connection made for
/// the first may send the second host's requests on it; the connection's listener does not
/// route that host, and Trellis answers 421 Misdirected Request, so the client must retry on
/// a new connection (browsers do; other clients may just fail).
pub(crate) fn shared_certificates(input: &InputSet, ir: &Ir, out: &mut Vec<Finding>) {
    for (key, gateway) in &input.gateways {
        let Some(proxy) = ir.proxies.get(&trellis_translate::proxy_key(key)) else {
            continue;
        };
        // Each certificate's names, read once.
        let names: BTreeMap<&str, Vec<String>> = proxy
            .secrets
            .iter()
            .filter_map(|(name, s)| Some((name.as_str(), dns_names(&s.certificate_chain)?)))
            .collect();
        let index = |section: &str| {
            gateway
                .spec
                .listeners
                .iter()
                .position(|l| l.name == section)
        };
        for listener in &proxy.listeners {
            let https: Vec<(&str, &FilterChainIr)> = listener
                .chains
                .iter()
                .filter(|c| c.protocol == ListenerProtocol::Https)
                .filter_map(|c| Some((c.listener.as_deref()?, c)))
                .collect();
            for (i, (a_name, a)) in https.iter().enumerate() {
                for (b_name, b) in https.iter().skip(i + 1) {
                    let mut hosts = BTreeSet::new();
                    shared_hosts(&names, a, b, &mut hosts);
                    shared_hosts(&names, b, a, &mut hosts);
                    if hosts.is_empty() {
                        continue;
                    }
                    let field = match index(a_name) {
                        Some(i) => format!("spec.listeners[{i}].tls.certificateRefs"),
                        None => String::new(),
                    };
                    out.push(Finding {
                        severity: Severity::Info,
                        code: Code::SharedCertificate,
                        object: ObjectRef::new("Gateway", key),
                        field,
                        message: format!(
                            "HTTPS listeners {a_name} and {b_name} (port {}) present \
                             certificates that cover each other's hostnames ({}): an HTTP/2 \
                             client holding a connection made for one may send the other's \
                             requests on it, and they are answered 421 Misdirected Request \
                             (browsers retry on a new connection; other clients may fail)",
                            listener.port,
                            hosts.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                        fix: format!(
                            "give {a_name} and {b_name} certificates that cover only their own \
                             hostnames, or serve both hostnames from one listener (one \
                             wildcard hostname, with the routes' hostnames telling them apart)"
                        ),
                    });
                }
            }
        }
    }
}
