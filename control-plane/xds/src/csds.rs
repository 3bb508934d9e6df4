//! Client Status Discovery Service: the sync state of every connected proxy, from the
//! [`SyncRegistry`], in Envoy's CSDS shape so standard tooling can query it.
//!
//! Per proxy and resource type it reports the version last ACKed, whether the proxy holds what
//! it should (`SYNCED`), is behind (`STALE`), has not asked (`NOT_SENT`), or rejected the last
//! configuration (`ERROR`, with the proxy's error message).

use crate::protocol::SyncStatus;
use crate::registry::{ProxySync, SyncRegistry};
use envoy_types::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::{
    ClientStatusDiscoveryService, ClientStatusDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus, client_config,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// The CSDS service.
#[derive(Clone, Debug)]
pub struct CsdsServer {
    registry: Arc<SyncRegistry>,
}

impl CsdsServer {
    /// A service reporting from `registry`.
    pub fn new(registry: Arc<SyncRegistry>) -> Self {
        Self { registry }
    }

    /// The tonic service to add to a router.
    pub fn into_service(self) -> ClientStatusDiscoveryServiceServer<CsdsServer> {
        ClientStatusDiscoveryServiceServer::new(self)
    }

    /// The status of every proxy the request's node matchers select (every proxy when it has
    /// none).
    pub fn status(&self, request: &ClientStatusRequest) -> ClientStatusResponse {
        let config = self
            .registry
            .proxies()
            .iter()
            .filter(|p| selected(request, p))
            .map(client_config)
            .collect();
        ClientStatusResponse { config }
    }
}

/// Whether a proxy matches the request (by node id; exact or prefix matchers).
fn selected(request: &ClientStatusRequest, proxy: &ProxySync) -> bool {
    if request.node_matchers.is_empty() {
        return true;
    }
    request.node_matchers.iter().any(|m| {
        let Some(id) = &m.node_id else {
            return true;
        };
        match &id.match_pattern {
            Some(string_matcher::MatchPattern::Exact(v)) => proxy.node_id == *v,
            Some(string_matcher::MatchPattern::Prefix(v)) => proxy.node_id.starts_with(v.as_str()),
            Some(string_matcher::MatchPattern::Suffix(v)) => proxy.node_id.ends_with(v.as_str()),
            Some(string_matcher::MatchPattern::Contains(v)) => proxy.node_id.contains(v.as_str()),
            _ => true,
        }
    }) && request
        .node_matchers
        .iter()
        .all(|m| m.node_metadatas.is_empty())
}

fn client_config(p: &ProxySync) -> ClientConfig {
    ClientConfig {
        node: Some(Node {
            id: p.node_id.clone(),
            cluster: p.node_cluster.clone(),
            ..Default::default()
        }),
        generic_xds_configs: p
            .types
            .iter()
            .map(|(t, ts)| {
                let (config_status, client_status) = match ts.status {
                    Some(SyncStatus::Synced) => (ConfigStatus::Synced, ClientResourceStatus::Acked),
                    Some(SyncStatus::Stale) => {
                        (ConfigStatus::Stale, ClientResourceStatus::Requested)
                    }
                    Some(SyncStatus::Nacked) => (ConfigStatus::Error, ClientResourceStatus::Nacked),
                    Some(SyncStatus::NotSent) | None => {
                        (ConfigStatus::NotSent, ClientResourceStatus::Requested)
                    }
                };
                client_config::GenericXdsConfig {
                    type_url: t.type_url(),
                    version_info: ts.acked_version.clone().unwrap_or_default(),
                    config_status: config_status as i32,
                    client_status: client_status as i32,
                    error_state: ts.nack.as_ref().map(|n| UpdateFailureState {
                        details: n.error.clone(),
                        version_info: n.version.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            })
            .collect(),
        ..Default::default()
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for CsdsServer {
    type StreamClientStatusStream = StatusStream;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<Self::StreamClientStatusStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let this = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                if tx.send(Ok(this.status(&req))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        Ok(Response::new(self.status(request.get_ref())))
    }
}
