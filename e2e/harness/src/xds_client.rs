//! A simulated Envoy for load and protocol tests: one ADS stream (SotW or Delta) that
//! subscribes like Envoy does (CDS and LDS wildcard, then EDS for the clusters it got and RDS
//! for the route configurations its listeners name), ACKs every response — or NACKs the types
//! it is told to — and records what arrived and when.

use anyhow::Context;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::{Any, Struct, Value, value};
use envoy_types::pb::google::rpc::Status;
use prost::{Message, Name};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Type URLs of the resource types the client subscribes to.
pub mod types {
    /// CDS.
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// EDS.
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// LDS.
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// RDS.
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
}

/// How a simulated proxy behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The node id.
    pub node_id: String,
    /// The Gateway it serves, `ns/name`.
    pub gateway: String,
    /// Speak Delta instead of SotW.
    pub delta: bool,
    /// Type URLs whose responses it rejects.
    pub nack: BTreeSet<String>,
    /// A sidecar's pod, `ns/name`: sent as `trellis.dev/pod` instead of the Gateway.
    pub pod: Option<String>,
}

/// One response as the client saw it.
#[derive(Clone, Debug)]
pub struct Received {
    /// Type URL.
    pub type_url: String,
    /// When it arrived.
    pub at: Instant,
    /// Encoded size of the resources in it.
    pub bytes: usize,
    /// Resources (name, version) it carried; versions are Delta's or the SotW response's.
    pub resources: Vec<(String, String)>,
    /// Names it removed (Delta).
    pub removed: Vec<String>,
}

/// What a client has seen, shared with the test or benchmark driving it.
#[derive(Debug, Default)]
pub struct ClientLog {
    /// Every response, in order.
    pub received: Vec<Received>,
    /// The resources held now, by type URL and name, with their encoded bodies.
    pub held: BTreeMap<String, BTreeMap<String, Any>>,
}

/// A handle on a running client.
#[derive(Debug, Clone)]
pub struct Client {
    /// What it has seen.
    pub log: Arc<Mutex<ClientLog>>,
}

fn node(config: &ClientConfig) -> Node {
    let (key, value) = match &config.pod {
        Some(pod) => ("trellis.dev/pod", pod.clone()),
        None => ("trellis.dev/gateway", config.gateway.clone()),
    };
    Node {
        id: config.node_id.clone(),
        cluster: config.gateway.clone(),
        metadata: Some(Struct {
            fields: [(
                key.to_string(),
                Value {
                    kind: Some(value::Kind::StringValue(value)),
                },
            )]
            .into(),
        }),
        ..Default::default()
    }
}

/// The RDS names a listener's HTTP connection managers use.
fn route_names(any: &Any) -> Vec<String> {
    let Ok(listener) = Listener::decode(any.value.as_slice()) else {
        return Vec::new();
    };
    listener
        .filter_chains
        .iter()
        .flat_map(|c| c.filters.iter())
        .filter_map(|f| match &f.config_type {
            Some(filter::ConfigType::TypedConfig(tc))
                if tc.type_url == HttpConnectionManager::type_url() =>
            {
                HttpConnectionManager::decode(tc.value.as_slice()).ok()
            }
            _ => None,
        })
        .filter_map(|hcm| match hcm.route_specifier {
            Some(http_connection_manager::RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
            _ => None,
        })
        .collect()
}

fn cluster_name(any: &Any) -> Option<String> {
    Cluster::decode(any.value.as_slice()).ok().map(|c| c.name)
}

/// Opens a channel to an xDS server.
pub async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// Starts a simulated proxy on `channel`; it runs until the stream ends.
pub async fn start(
    channel: tonic::transport::Channel,
    config: ClientConfig,
) -> anyhow::Result<Client> {
    let log = Arc::new(Mutex::new(ClientLog::default()));
    let client = Client { log: log.clone() };
    let grpc = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20);
    if config.delta {
        run_delta(grpc, config, log).await?;
    } else {
        run_sotw(grpc, config, log).await?;
    }
    Ok(client)
}

fn nack_status() -> Status {
    Status {
        code: 13,
        message: "rejected on purpose by the simulated proxy".into(),
        details: vec![],
    }
}

async fn run_sotw(
    mut grpc: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
    config: ClientConfig,
    log: Arc<Mutex<ClientLog>>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(64);
    let request = |type_url: &str,
                   names: Vec<String>,
                   version: String,
                   nonce: String,
                   error: Option<Status>| DiscoveryRequest {
        type_url: type_url.to_string(),
        resource_names: names,
        version_info: version,
        response_nonce: nonce,
        error_detail: error,
        ..Default::default()
    };
    let mut first = request(types::CLUSTER, vec![], String::new(), String::new(), None);
    first.node = Some(node(&config));
    tx.send(first).await?;
    tx.send(request(
        types::LISTENER,
        vec![],
        String::new(),
        String::new(),
        None,
    ))
    .await?;
    let mut inbound = grpc
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    tokio::spawn(async move {
        let mut subscribed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut accepted: BTreeMap<String, String> = BTreeMap::new();
        let mut last_nonce: BTreeMap<String, String> = BTreeMap::new();
        while let Ok(Some(response)) = inbound.message().await {
            let t = response.type_url.clone();
            let reject = config.nack.contains(&t);
            {
                let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                l.received.push(Received {
                    type_url: t.clone(),
                    at: Instant::now(),
                    bytes: response.resources.iter().map(|r| r.value.len()).sum(),
                    resources: response
                        .resources
                        .iter()
                        .map(|r| (resource_name(r), response.version_info.clone()))
                        .collect(),
                    removed: Vec::new(),
                });
                if !reject {
                    let held = l.held.entry(t.clone()).or_default();
                    if t == types::CLUSTER || t == types::LISTENER {
                        held.clear();
                    }
                    for r in &response.resources {
                        held.insert(resource_name(r), r.clone());
                    }
                }
            }
            last_nonce.insert(t.clone(), response.nonce.clone());
            let names = subscribed.get(&t).cloned().unwrap_or_default();
            let ack = if reject {
                request(
                    &t,
                    names,
                    accepted.get(&t).cloned().unwrap_or_default(),
                    response.nonce.clone(),
                    Some(nack_status()),
                )
            } else {
                accepted.insert(t.clone(), response.version_info.clone());
                request(
                    &t,
                    names,
                    response.version_info.clone(),
                    response.nonce.clone(),
                    None,
                )
            };
            if tx.send(ack).await.is_err() {
                return;
            }
            if reject {
                continue;
            }
            // Follow-up subscriptions, as Envoy makes them.
            let follow = if t == types::CLUSTER {
                Some((
                    types::ENDPOINT,
                    response
                        .resources
                        .iter()
                        .filter_map(cluster_name)
                        .collect::<Vec<_>>(),
                ))
            } else if t == types::LISTENER {
                Some((
                    types::ROUTE,
                    response
                        .resources
                        .iter()
                        .flat_map(route_names)
                        .collect::<Vec<_>>(),
                ))
            } else {
                None
            };
            if let Some((ft, mut names)) = follow {
                names.sort();
                names.dedup();
                if subscribed.get(ft) != Some(&names) {
                    subscribed.insert(ft.to_string(), names.clone());
                    let nonce = last_nonce.get(ft).cloned().unwrap_or_default();
                    let version = accepted.get(ft).cloned().unwrap_or_default();
                    if tx
                        .send(request(ft, names, version, nonce, None))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    Ok(())
}

async fn run_delta(
    mut grpc: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
    config: ClientConfig,
    log: Arc<Mutex<ClientLog>>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(64);
    let subscribe = |type_url: &str, add: Vec<String>, remove: Vec<String>| DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        resource_names_subscribe: add,
        resource_names_unsubscribe: remove,
        ..Default::default()
    };
    let mut first = subscribe(types::CLUSTER, vec![], vec![]);
    first.node = Some(node(&config));
    tx.send(first).await?;
    tx.send(subscribe(types::LISTENER, vec![], vec![])).await?;
    let mut inbound = grpc
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    tokio::spawn(async move {
        let mut subscribed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        while let Ok(Some(response)) = inbound.message().await {
            let t = response.type_url.clone();
            let reject = config.nack.contains(&t);
            let (clusters, routes) = {
                let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                l.received.push(Received {
                    type_url: t.clone(),
                    at: Instant::now(),
                    bytes: response
                        .resources
                        .iter()
                        .filter_map(|r| r.resource.as_ref())
                        .map(|a| a.value.len())
                        .sum(),
                    resources: response
                        .resources
                        .iter()
                        .map(|r| (r.name.clone(), r.version.clone()))
                        .collect(),
                    removed: response.removed_resources.clone(),
                });
                if !reject {
                    let held = l.held.entry(t.clone()).or_default();
                    for r in &response.resources {
                        if let Some(a) = &r.resource {
                            held.insert(r.name.clone(), a.clone());
                        }
                    }
                    for name in &response.removed_resources {
                        held.remove(name);
                    }
                }
                let held = l.held.get(&t).cloned().unwrap_or_default();
                let clusters: BTreeSet<String> = if t == types::CLUSTER {
                    held.values().filter_map(cluster_name).collect()
                } else {
                    BTreeSet::new()
                };
                let routes: BTreeSet<String> = if t == types::LISTENER {
                    held.values().flat_map(route_names).collect()
                } else {
                    BTreeSet::new()
                };
                (clusters, routes)
            };
            let mut ack = subscribe(&t, vec![], vec![]);
            ack.response_nonce = response.nonce.clone();
            if reject {
                ack.error_detail = Some(nack_status());
            }
            if tx.send(ack).await.is_err() {
                return;
            }
            if reject {
                continue;
            }
            let follow = if t == types::CLUSTER {
                Some((types::ENDPOINT, clusters))
            } else if t == types::LISTENER {
                Some((types::ROUTE, routes))
            } else {
                None
            };
            if let Some((ft, names)) = follow {
                let current = subscribed.entry(ft.to_string()).or_default();
                let add: Vec<String> = names.difference(current).cloned().collect();
                let remove: Vec<String> = current.difference(&names).cloned().collect();
                if !add.is_empty() || !remove.is_empty() {
                    *current = names;
                    if tx.send(subscribe(ft, add, remove)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(())
}

/// A resource's name from its body (clusters, listeners, route configurations, load
/// assignments).
pub fn resource_name(any: &Any) -> String {
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    match any.type_url.as_str() {
        types::CLUSTER => cluster_name(any).unwrap_or_default(),
        types::LISTENER => Listener::decode(any.value.as_slice())
            .map(|l| l.name)
            .unwrap_or_default(),
        types::ROUTE => RouteConfiguration::decode(any.value.as_slice())
            .map(|r| r.name)
            .unwrap_or_default(),
        types::ENDPOINT => ClusterLoadAssignment::decode(any.value.as_slice())
            .map(|c| c.cluster_name)
            .unwrap_or_default(),
        _ => String::new(),
    }
}
