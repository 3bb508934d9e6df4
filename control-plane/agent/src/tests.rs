//! The agent against a real certificate service (over TCP) and a real SDS client (over a Unix
//! socket).

use super::*;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use prost::Message;
use tonic::transport::{Endpoint, Server};
use trellis_ca::service::{Certificates, FileTokens, PodLookup};
use trellis_ca::{Ca, SpiffeId, TokenKey};

struct Bed {
    _tmp: tempfile::TempDir,
    channel: Channel,
    token: String,
    socket: std::path::PathBuf,
}

async fn bed() -> Bed {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let ca = Arc::new(Ca::load_or_create(&dir, "cluster.local", SystemTime::now()).unwrap());
    let tokens = Arc::new(TokenKey::load_or_create(&dir).unwrap());
    let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders").unwrap();
    let token = tokens
        .issue(
            &id,
            "shop/orders-1",
            Duration::from_secs(600),
            SystemTime::now(),
        )
        .unwrap();
    let pods: PodLookup = Arc::new(|w| {
        (w == trellis_ca::token::Workload::Pod {
            namespace: "shop",
            name: "orders-1",
        })
        .then(|| "orders".to_string())
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(
                Certificates::new(ca, Arc::new(FileTokens::new(tokens, pods)), None).into_server(),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Bed {
        socket: tmp.path().join("sds.sock"),
        _tmp: tmp,
        channel,
        token,
    }
}

async fn sds_client(path: std::path::PathBuf) -> SecretDiscoveryServiceClient<Channel> {
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap();
    SecretDiscoveryServiceClient::new(channel)
}

fn names(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|a| Secret::decode(a.value.as_slice()).unwrap().name)
        .collect()
}

#[tokio::test]
async fn the_agent_obtains_a_certificate_and_serves_it_to_envoy_over_sds() {
    let b = bed().await;
    let credentials = obtain(b.channel.clone(), &b.token, Duration::from_secs(120))
        .await
        .unwrap();
    let lifetime = credentials
        .not_after
        .duration_since(credentials.not_before)
        .unwrap();
    // 120 s asked for, plus the CA's 5 minutes of backdating.
    assert_eq!(lifetime.as_secs(), 120 + 300);
    assert!(credentials.key_pem.contains("PRIVATE KEY"));

    let (tx, rx) = watch::channel(Some(Arc::new(credentials.clone())));
    let sds = Sds::new(rx);
    let mut acked = sds.acked();
    assert!(acked.borrow().is_none(), "nothing ACKed yet");
    let listener = tokio::net::UnixListener::bind(&b.socket).unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(sds.clone().into_server())
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let mut client = sds_client(b.socket.clone()).await;
    let (requests, outbound) = mpsc::channel(4);
    let mut responses = client
        .stream_secrets(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    requests
        .send(DiscoveryRequest {
            type_url: SECRET_TYPE.into(),
            resource_names: vec![DEFAULT_SECRET.into(), ROOT_SECRET.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let first = responses.next().await.unwrap().unwrap();
    assert_eq!(names(&first), [DEFAULT_SECRET, ROOT_SECRET]);
    assert_eq!(first.version_info, credentials.version);
    // ACK; then a rotation is pushed as a new version without being asked.
    requests
        .send(DiscoveryRequest {
            type_url: SECRET_TYPE.into(),
            version_info: first.version_info.clone(),
            response_nonce: first.nonce.clone(),
            resource_names: vec![DEFAULT_SECRET.into(), ROOT_SECRET.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), acked.wait_for(|v| v.is_some()))
        .await
        .expect("the ACK is seen")
        .unwrap();
    assert_eq!(acked.borrow().as_deref(), Some(first.version_info.as_str()));
    let renewed = Credentials {
        version: "renewed".into(),
        ..obtain(b.channel.clone(), &b.token, Duration::from_secs(120))
            .await
            .unwrap()
    };
    tx.send(Some(Arc::new(renewed.clone()))).unwrap();
    let pushed = tokio::time::timeout(Duration::from_secs(5), responses.next())
        .await
        .expect("the rotation is pushed")
        .unwrap()
        .unwrap();
    assert_eq!(pushed.version_info, "renewed");
    let Some(secret::Type::TlsCertificate(tls)) =
        Secret::decode(pushed.resources[0].value.as_slice())
            .unwrap()
            .r#type
    else {
        panic!("default is a TLS certificate");
    };
    let chain = tls.certificate_chain.unwrap().specifier.unwrap();
    assert_eq!(
        chain,
        data_source::Specifier::InlineBytes(renewed.chain_pem.into_bytes())
    );
}

#[tokio::test]
async fn a_refused_token_gets_no_certificate() {
    let b = bed().await;
    let err = obtain(b.channel.clone(), "forged.token", Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("refused"), "{err:#}");
}

#[tokio::test]
async fn certificates_are_renewed_at_half_life() {
    let b = bed().await;
    let (tx, mut rx) = watch::channel(None);
    let started = std::time::Instant::now();
    // The token is read from its file for each request (the kubelet rotates it in place).
    let token_path = b.socket.with_file_name("token");
    std::fs::write(&token_path, &b.token).unwrap();
    let task = tokio::spawn(rotate(
        b.channel.clone(),
        crate::token_file(token_path),
        Duration::from_secs(4),
        tx,
    ));
    let mut versions = Vec::new();
    while versions.len() < 3 {
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("a renewal within 10 s")
            .unwrap();
        let c = rx.borrow().clone().unwrap();
        versions.push((started.elapsed(), c.version.clone()));
    }
    task.abort();
    // Obtained at once, then at half of what is left (certificate times are whole seconds,
    // so 1.5–2 s for 4 s), each a new version; never in a tight loop.
    let (first, _) = versions[0];
    let (third, _) = versions[2];
    assert!(first < Duration::from_secs(1), "{versions:?}");
    let between = third - first;
    assert!(
        between > Duration::from_millis(2500) && between < Duration::from_millis(5000),
        "{versions:?}"
    );
    assert!(versions[0].1 != versions[1].1 && versions[1].1 != versions[2].1);
}

#[test]
fn a_certificate_that_cannot_be_renewed_is_warned_about_in_its_last_quarter() {
    use std::time::UNIX_EPOCH;
    let from = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let to = from + Duration::from_secs(400);
    assert_eq!(
        crate::expiry_warning(from, to, from + Duration::from_secs(200)),
        None
    );
    let late = crate::expiry_warning(from, to, from + Duration::from_secs(350)).unwrap();
    assert!(late.contains("expires in 50 s"), "{late}");
    let gone = crate::expiry_warning(from, to, to + Duration::from_secs(1)).unwrap();
    assert!(gone.contains("has expired"), "{gone}");
}
