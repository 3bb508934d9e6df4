//! What the two xDS targets share: a few snapshots whose resources depend on each other, and
//! requests built from the fuzzer's bytes.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use std::sync::Arc;
use trellis_xds::{Dependency, Resource, ResourceType, Snapshot};

pub const NAMES: [&str; 4] = ["a", "b", "c", "d"];

pub const TYPES: [ResourceType; 5] = [
    ResourceType::Cluster,
    ResourceType::Endpoint,
    ResourceType::Listener,
    ResourceType::Route,
    ResourceType::Secret,
];

/// Snapshot `which` (0..4): routes to clusters that come and go, a listener depending on a
/// cluster, versions that change.
pub fn snapshot(which: u8) -> Option<Arc<Snapshot>> {
    if which % 5 == 4 {
        return None;
    }
    let tag = u32::from(which % 5);
    let mut resources = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        if (i as u32 + tag) % 3 == 0 {
            continue;
        }
        resources.push(Resource::new(
            *name,
            &Cluster {
                name: name.to_string(),
                alt_stat_name: format!("v{tag}"),
                ..Default::default()
            },
        ));
        resources.push(Resource::new(
            *name,
            &ClusterLoadAssignment {
                cluster_name: format!("{name}-{tag}"),
                ..Default::default()
            },
        ));
        let dep = |t| Dependency {
            resource_type: t,
            name: name.to_string(),
        };
        resources.push(Resource::with_dependencies(
            *name,
            &RouteConfiguration {
                name: format!("{name}-{tag}"),
                ..Default::default()
            },
            vec![dep(ResourceType::Cluster), dep(ResourceType::Endpoint)],
        ));
        resources.push(Resource::with_dependencies(
            *name,
            &Listener {
                name: name.to_string(),
                stat_prefix: format!("{tag}"),
                ..Default::default()
            },
            vec![dep(ResourceType::Cluster)],
        ));
    }
    Some(Arc::new(Snapshot::from_resources(resources)))
}

/// Reads choices from the fuzzer's bytes.
pub struct Choices<'a> {
    pub data: &'a [u8],
}

impl Choices<'_> {
    pub fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(*first)
    }

    pub fn names(&mut self) -> Vec<String> {
        let mask = self.byte().unwrap_or(0);
        let mut names: Vec<String> = NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, n)| n.to_string())
            .collect();
        if mask & 0x80 != 0 {
            names.push("*".into());
        }
        if mask & 0x40 != 0 {
            names.push("unknown".into());
        }
        names
    }
}
