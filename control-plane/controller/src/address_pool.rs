//! Addresses for Gateways that request none, from an operator-given pool (`--address-pool`):
//! a Gateway keeps its address while it exists, and a freed address goes to the next Gateway
//! that needs one.

use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use tracing::{info, warn};
use trellis_model::{InputSet, ObjectKey};

/// Stable address assignment from a pool.
#[derive(Debug)]
pub struct AddressPool {
    pool: IpNet,
    assigned: BTreeMap<ObjectKey, String>,
}

impl AddressPool {
    /// A pool of the host addresses of `pool`.
    pub fn new(pool: IpNet) -> AddressPool {
        AddressPool {
            pool,
            assigned: BTreeMap::new(),
        }
    }

    /// The address of every Gateway that requests none: the one it had, else the first free
    /// one. Gateways that are gone (or now request an address) give theirs back first. A
    /// Gateway left without one when the pool is exhausted is logged; the translator then binds
    /// it to every interface.
    pub fn assign(&mut self, input: &InputSet) -> BTreeMap<ObjectKey, String> {
        let wanting: BTreeSet<&ObjectKey> = input
            .gateways
            .iter()
            .filter(|(_, g)| {
                g.spec
                    .addresses
                    .iter()
                    .all(|a| a.value.as_deref().unwrap_or("").is_empty())
            })
            .map(|(k, _)| k)
            .collect();
        self.assigned.retain(|k, _| wanting.contains(k));
        for key in wanting {
            if self.assigned.contains_key(key) {
                continue;
            }
            let used: BTreeSet<&String> = self.assigned.values().collect();
            let free = self
                .pool
                .hosts()
                .map(|ip| ip.to_string())
                .find(|ip| !used.contains(ip));
            match free {
                Some(ip) => {
                    info!(gateway = %key, address = %ip, "address assigned from the pool");
                    self.assigned.insert(key.clone(), ip);
                }
                None => warn!(gateway = %key, pool = %self.pool, "address pool exhausted"),
            }
        }
        self.assigned.clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;
    use trellis_model::Object;
    use trellis_model::gateway::{Gateway, GatewaySpecAddress};

    fn gateway(name: &str, address: Option<&str>) -> Object {
        let mut g: Gateway = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"gatewayClassName": "trellis", "listeners": []}
        }))
        .unwrap();
        if let Some(a) = address {
            g.spec.addresses.push(GatewaySpecAddress {
                type_: None,
                value: Some(a.to_string()),
            });
        }
        Object::Gateway(Arc::new(g))
    }

    fn input(gateways: &[(&str, Option<&str>)]) -> InputSet {
        let mut input = InputSet::default();
        for (name, address) in gateways {
            input.insert(gateway(name, *address));
        }
        input
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("default", name)
    }

    #[test]
    fn gateways_keep_their_address_and_freed_ones_are_reused() {
        let mut pool = AddressPool::new("10.9.0.0/30".parse().unwrap());
        let first = pool.assign(&input(&[
            ("a", None),
            ("b", None),
            ("fixed", Some("1.2.3.4")),
        ]));
        assert_eq!(first.get(&key("a")).unwrap(), "10.9.0.1");
        assert_eq!(first.get(&key("b")).unwrap(), "10.9.0.2");
        assert!(!first.contains_key(&key("fixed")), "it requests its own");
        // A new Gateway sorting first does not take a's address.
        let second = pool.assign(&input(&[("0-new", None), ("a", None), ("b", None)]));
        assert_eq!(second.get(&key("a")).unwrap(), "10.9.0.1");
        assert_eq!(second.get(&key("b")).unwrap(), "10.9.0.2");
        assert_eq!(second.get(&key("0-new")), None, "a /30 has two hosts");
        // a goes away: its address is free for the one that waited.
        let third = pool.assign(&input(&[("0-new", None), ("b", None)]));
        assert_eq!(third.get(&key("0-new")).unwrap(), "10.9.0.1");
        assert_eq!(third.len(), 2);
    }
}
