//! The ADS server against hostile clients: each bound refuses the client that crosses it, with
//! a status saying why, and counts the hit.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trellis_xds::{
    AdsServer, LimitHits, Resource, ResourceType, ServerLimits, Snapshot, StreamLimits,
    SyncRegistry, snapshot_cache,
};

const KEY: &str = "gateway/ns/web";

struct Server {
    addr: std::net::SocketAddr,
    registry: Arc<SyncRegistry>,
    hits: Arc<LimitHits>,
    _writer: trellis_xds::SnapshotWriter,
}

async fn server(limits: ServerLimits) -> Server {
    let (writer, cache) = snapshot_cache();
    let routes: Vec<Arc<Resource>> = (0..3)
        .map(|i| {
            Resource::new(
                format!("route-{i}"),
                &RouteConfiguration {
                    name: format!("route-{i}"),
                    ..Default::default()
                },
            )
        })
        .collect();
    writer.publish(BTreeMap::from([(
        KEY.to_string(),
        Snapshot::from_resources(routes),
    )]));
    let registry = Arc::new(SyncRegistry::default());
    let hits = Arc::new(LimitHits::default());
    let ads = AdsServer::new(
        cache,
        registry.clone(),
        Arc::new(|_: &Node| Ok(KEY.to_string())),
    )
    .with_limits(limits, hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ads.into_service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Server {
        addr,
        registry,
        hits,
        _writer: writer,
    }
}

async fn client(
    addr: std::net::SocketAddr,
) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    AggregatedDiscoveryServiceClient::new(channel).max_encoding_message_size(64 << 20)
}

fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.to_string(),
        cluster: "ns/web".to_string(),
        ..Default::default()
    })
}

fn route_type() -> String {
    ResourceType::Route.type_url().to_string()
}

/// Sends `requests` on a SotW stream and returns how the stream ended.
async fn sotw_outcome(
    addr: std::net::SocketAddr,
    requests: Vec<DiscoveryRequest>,
) -> tonic::Status {
    let (tx, rx) = mpsc::channel(16);
    for r in requests {
        tx.send(r).await.unwrap();
    }
    let mut grpc = client(addr).await;
    let result = grpc
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await;
    let mut stream = match result {
        Ok(r) => r.into_inner(),
        Err(status) => return status,
    };
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return tonic::Status::ok("closed"),
            Ok(Err(status)) => return status,
            Err(_) => panic!("the stream stayed open"),
        }
    }
}

/// Sends `requests` on a Delta stream (keeping it open) and returns how the stream ended.
async fn delta_outcome(
    addr: std::net::SocketAddr,
    requests: Vec<DeltaDiscoveryRequest>,
) -> tonic::Status {
    let (tx, rx) = mpsc::channel(16);
    let mut grpc = client(addr).await;
    let sender = tokio::spawn(async move {
        for r in requests {
            if tx.send(r).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Keep the request stream open.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(tx);
    });
    let result = grpc
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await;
    let mut stream = match result {
        Ok(r) => r.into_inner(),
        Err(status) => return status,
    };
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => break tonic::Status::ok("closed"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the stream stayed open"),
        }
    };
    sender.abort();
    status
}

#[tokio::test]
async fn oversized_request_is_refused_with_resource_exhausted() {
    let s = server(ServerLimits::default()).await;
    let huge = DiscoveryRequest {
        node: node("proxy"),
        type_url: route_type(),
        resource_names: vec!["x".repeat(1000); 5 * 1024],
        ..Default::default()
    };
    let status = sotw_outcome(s.addr, vec![huge]).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("larger than"), "{status:?}");
    assert_eq!(s.hits.count("xds", "request_bytes"), 1);
    assert_eq!(s.registry.connected(), 0);
}

#[tokio::test]
async fn a_stream_that_sends_nothing_is_closed_after_the_deadline() {
    let s = server(ServerLimits {
        first_request: Duration::from_millis(300),
        ..ServerLimits::default()
    })
    .await;
    let started = Instant::now();
    let status = delta_outcome(s.addr, Vec::new()).await;
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(s.hits.count("xds", "first_request"), 1);
}

#[tokio::test]
async fn subscriptions_beyond_the_cap_are_refused() {
    let limits = ServerLimits {
        stream: StreamLimits {
            max_names_per_type: 100,
            max_unknown_names: 10,
            ..StreamLimits::default()
        },
        ..ServerLimits::default()
    };
    let s = server(limits).await;
    // Delta: names accumulate over requests; the known ones count too.
    let batch = |first: bool, from: usize| DeltaDiscoveryRequest {
        node: first.then(|| node("proxy")).flatten(),
        type_url: route_type(),
        resource_names_subscribe: (from..from + 40)
            .map(|i| {
                if i < 3 {
                    format!("route-{i}")
                } else {
                    format!("known-later-{i}")
                }
            })
            .collect(),
        ..Default::default()
    };
    let status = delta_outcome(
        s.addr,
        vec![batch(true, 0), batch(false, 40), batch(false, 80)],
    )
    .await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("not in this proxy's configuration"),
        "{status:?}"
    );
    assert_eq!(s.hits.count("xds", "unknown_names"), 1);

    // Only names the snapshot has, but too many of them in one SotW request.
    let many = DiscoveryRequest {
        node: node("proxy"),
        type_url: route_type(),
        resource_names: (0..101)
            .map(|i| format!("route-{}", i % 3))
            .chain((0..101).map(|i| format!("r{i}")))
            .collect(),
        ..Default::default()
    };
    let status = sotw_outcome(s.addr, vec![many]).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        s.hits.count("xds", "names_per_type") + s.hits.count("xds", "unknown_names"),
        2
    );

    // A name longer than the limit.
    let long = DiscoveryRequest {
        node: node("proxy"),
        type_url: route_type(),
        resource_names: vec!["n".repeat(2000)],
        ..Default::default()
    };
    let status = sotw_outcome(s.addr, vec![long]).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(s.hits.count("xds", "name_bytes"), 1);

    // Within the bounds, a stream works.
    let fine = DiscoveryRequest {
        node: node("proxy"),
        type_url: route_type(),
        resource_names: vec!["route-0".into(), "route-1".into()],
        ..Default::default()
    };
    let (tx, rx) = mpsc::channel(4);
    tx.send(fine).await.unwrap();
    let mut grpc = client(s.addr).await;
    let mut stream = grpc
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    assert_eq!(response.resources.len(), 2);
}

#[tokio::test]
async fn long_node_ids_are_refused_and_nack_texts_are_cut() {
    let s = server(ServerLimits::default()).await;
    let status = sotw_outcome(
        s.addr,
        vec![DiscoveryRequest {
            node: node(&"n".repeat(2048)),
            type_url: route_type(),
            resource_names: vec!["route-0".into()],
            ..Default::default()
        }],
    )
    .await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("node id of 2048 bytes"),
        "{status:?}"
    );
    assert_eq!(s.hits.count("xds", "node_bytes"), 1);

    // A NACK with a 100 KiB error text: recorded cut to about 1 KiB.
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: node("nacker"),
        type_url: route_type(),
        resource_names: vec!["route-0".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut grpc = client(s.addr).await;
    let mut stream = grpc
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    tx.send(DiscoveryRequest {
        type_url: route_type(),
        resource_names: vec!["route-0".into()],
        response_nonce: response.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 13,
            message: "x".repeat(100 * 1024),
            details: Vec::new(),
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let error = loop {
        let nack = s
            .registry
            .proxies()
            .into_iter()
            .flat_map(|p| p.types.into_values())
            .find_map(|t| t.nack);
        if let Some(nack) = nack {
            break nack.error;
        }
        assert!(Instant::now() < deadline, "no NACK recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(error.len() < 1100, "{} bytes", error.len());
    assert!(error.ends_with("bytes cut)"), "{error}");
}
