//! Workload identities: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, the form
//! Istio uses, so policies and tooling written for it carry over.

use std::fmt;

/// The trust domain when none is configured (as in Istio).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Why a name cannot be part of an identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// A trust domain, namespace or service account that is not a DNS-style name.
    #[error("{what} {value:?} is not a valid name: {why}")]
    InvalidName {
        /// Which part.
        what: &'static str,
        /// The value, cut to 80 characters.
        value: String,
        /// Why.
        why: &'static str,
    },
    /// A URI that is not `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    #[error(
        "{0:?} is not a workload identity (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)"
    )]
    NotWorkloadId(String),
}

/// A workload's identity: its trust domain, namespace and service account.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Checks a DNS-style name (a trust domain may have dots; the others are DNS labels or, for
/// service accounts, DNS subdomains, as Kubernetes allows).
fn check(what: &'static str, value: &str, dots: bool) -> Result<(), IdentityError> {
    let fail = |why| IdentityError::InvalidName {
        what,
        value: value.chars().take(80).collect(),
        why,
    };
    if value.is_empty() {
        return Err(fail("it is empty"));
    }
    if value.len() > 253 {
        return Err(fail("it is longer than 253 characters"));
    }
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    if !value.chars().all(allowed) {
        return Err(fail(
            "only lowercase letters, digits, '-' (and '.' where allowed) may appear",
        ));
    }
    if value
        .split('.')
        .any(|label| label.is_empty() || label.starts_with('-') || label.ends_with('-'))
    {
        return Err(fail("a label is empty or starts or ends with '-'"));
    }
    Ok(())
}

impl SpiffeId {
    /// The identity of a service account; each part must be a valid Kubernetes name.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, IdentityError> {
        check("trust domain", trust_domain, true)?;
        check("namespace", namespace, false)?;
        check("service account", service_account, true)?;
        Ok(SpiffeId {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        })
    }

    /// Parses `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn parse(uri: &str) -> Result<SpiffeId, IdentityError> {
        let not = || IdentityError::NotWorkloadId(uri.chars().take(200).collect());
        let rest = uri.strip_prefix("spiffe://").ok_or_else(not)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts[..] {
            [td, "ns", ns, "sa", sa] => SpiffeId::new(td, ns, sa),
            _ => Err(not()),
        }
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_print_and_parse_in_istios_form() {
        let id = SpiffeId::new(DEFAULT_TRUST_DOMAIN, "shop", "orders").unwrap();
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/orders");
        assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
    }

    #[test]
    fn malformed_identities_and_names_are_refused() {
        for bad in [
            "spiffe://cluster.local/ns/shop",
            "https://cluster.local/ns/shop/sa/x",
            "spiffe://cluster.local/ns/shop/sa/x/extra",
            "spiffe://cluster.local/ns/Shop/sa/x",
            "spiffe://cluster.local/ns/../sa/x",
            "spiffe://cluster.local/ns/sh%2Fop/sa/x",
            "spiffe:///ns/shop/sa/x",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
        assert!(
            SpiffeId::new("cluster.local", "a.b", "x").is_err(),
            "namespaces have no dots"
        );
        assert!(SpiffeId::new("cluster.local", &"a".repeat(300), "x").is_err());
        assert!(SpiffeId::new("cluster.local", "-a", "x").is_err());
    }
}
