//! Workload identity through the real binary: `trellis serve --ca-dir` serves the certificate
//! service on its xDS port; a token from `trellis token` gets a certificate naming the pod's
//! identity (never what the CSR asks for); `trellis agent` with that token serves its
//! certificate over SDS on a Unix socket; once the pod is gone, the same token is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use trellis_harness::{ControlPlane, trellis_bin};
use trellis_proto::ca::v1::CreateCertificateRequest;
use trellis_proto::ca::v1::certificate_service_client::CertificateServiceClient;

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: orders-1, namespace: shop}\nspec:\n  serviceAccountName: orders\n  containers: [{name: app}]\n";

fn csr(san: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(san.try_into().unwrap())];
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn request(csr: String, token: &str) -> tonic::Request<CreateCertificateRequest> {
    let mut r = tonic::Request::new(CreateCertificateRequest {
        csr,
        validity_duration: 3600,
    });
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_token_buys_a_certificate_of_its_own_identity_until_the_pod_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    let ca_dir = tmp.path().join("ca");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("pod.yaml"), POD).unwrap();
    let ca = ca_dir.display().to_string();
    let cp = ControlPlane::start(
        &config,
        tmp.path(),
        &["--ca-dir", &ca, "--debounce-ms", "50"],
    )
    .unwrap();
    cp.wait_ready().unwrap();

    let token = token("--pod", "shop/orders-1", &config, &ca_dir);

    // The xDS port takes TLS: the client verifies the control plane against the mesh's root.
    let root = std::fs::read_to_string(ca_dir.join("root-cert.pem")).unwrap();
    let mut client = CertificateServiceClient::new(tls_channel(cp.xds, &root, None).await);
    // The CSR asks for another identity; the certificate names the pod's.
    let chain = client
        .create_certificate(request(
            csr("spiffe://cluster.local/ns/kube-system/sa/admin"),
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(chain.len(), 2);
    use x509_parser::prelude::*;
    let (_, pem) = parse_x509_pem(chain[0].as_bytes()).unwrap();
    let (_, leaf) = X509Certificate::from_der(&pem.contents).unwrap();
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    println!(
        "issued: {sans:?}, valid {} s",
        leaf.validity()
            .time_to_expiration()
            .map_or(0, |d| d.whole_seconds())
    );
    assert_eq!(sans, ["URI(spiffe://cluster.local/ns/shop/sa/orders)"]);

    // `trellis agent` with the same token: a key of its own, a certificate for it, served over
    // SDS on a Unix socket.
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let socket = tmp.path().join("sds.sock");
    let mut agent = std::process::Command::new(trellis_bin().unwrap())
        .args(["agent", "--ca-address", &cp.xds.to_string(), "--token-file"])
        .arg(&token_file)
        .arg("--root-cert")
        .arg(ca_dir.join("root-cert.pem"))
        .arg("--sds-socket")
        .arg(&socket)
        .spawn()
        .unwrap();
    let secrets = fetch_secrets(&socket).await;
    let _ = agent.kill();
    let _ = agent.wait();
    println!(
        "agent served over SDS: {:?}",
        secrets.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert_eq!(
        secrets.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["default", "ROOTCA"]
    );

    // The CA's series: the root's expiry and what was issued.
    let metrics = cp.metrics().unwrap();
    let issued = cp.metric("trellis_ca_certificates_issued_total").unwrap();
    println!("trellis_ca_certificates_issued_total {issued}");
    assert!(issued >= 2.0, "the test's and the agent's");
    assert!(metrics.contains("trellis_ca_root_expiry_timestamp_seconds "));

    // The pod is deleted: its token no longer buys anything.
    std::fs::remove_file(config.join("pod.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match client
            .create_certificate(request(csr("spiffe://x/ns/a/sa/b"), &token))
            .await
        {
            Err(status) => break status,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(_) => panic!("a deleted pod's token was still honoured after 10 s"),
        }
    };
    println!(
        "after the pod was deleted: {:?} {}",
        status.code(),
        status.message()
    );
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("does not exist"));
}

/// A channel to the control plane's xDS port over TLS, verifying it against `root` (as
/// `trellis.trellis-system.svc`), with a client certificate when given (chain, key PEM).
async fn tls_channel(
    addr: std::net::SocketAddr,
    root: &str,
    identity: Option<(&str, &str)>,
) -> tonic::transport::Channel {
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(root))
        .domain_name("trellis.trellis-system.svc");
    if let Some((chain, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(chain, key));
    }
    tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Asks the agent's SDS socket for `default` and `ROOTCA` until it has them (10 s at most).
async fn fetch_secrets(
    socket: &std::path::Path,
) -> Vec<envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret> {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
    use prost::Message;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let path = socket.to_path_buf();
        let channel = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await;
        if let Ok(channel) = channel {
            let response = SecretDiscoveryServiceClient::new(channel)
                .fetch_secrets(DiscoveryRequest {
                    resource_names: vec!["default".into(), "ROOTCA".into()],
                    ..Default::default()
                })
                .await;
            if let Ok(r) = response {
                return r
                    .into_inner()
                    .resources
                    .iter()
                    .map(|a| {
                        envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret::decode(
                            a.value.as_slice(),
                        )
                        .unwrap()
                    })
                    .collect();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the agent served no secrets within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_sidecar_bootstrap_with_the_agents_sds_socket_is_accepted_by_envoy() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(trellis_bin().unwrap())
        .args([
            "bootstrap",
            "--pod",
            "shop/web-1",
            "--xds-address",
            "127.0.0.1:18000",
            "--sds-socket",
        ])
        .arg(tmp.path().join("sds.sock"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bootstrap = tmp.path().join("bootstrap.yaml");
    std::fs::write(&bootstrap, &out.stdout).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("name: trellis-sds"));
    let validate = std::process::Command::new(trellis_harness::envoy_bin().unwrap())
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "error",
            "-c",
        ])
        .arg(&bootstrap)
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "{}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );
}

/// Pods a and b, and Gateway edge/web whose HTTPS listener's key is served over SDS.
fn mesh_and_gateway_yaml(cert: &str, key: &str) -> String {
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {{trellis.dev/mesh: enabled}}}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: shop}}\nspec:\n  serviceAccountName: a\n  containers: [{{name: app}}]\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: b, namespace: shop}}\nspec:\n  serviceAccountName: b\n  containers: [{{name: app}}]\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: trellis}}\nspec: {{controllerName: trellis.dev/gateway-controller}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: web, namespace: edge}}\nspec:\n  gatewayClassName: trellis\n  listeners:\n  - {{name: https, port: 8443, protocol: HTTPS, tls: {{certificateRefs: [{{name: web-cert}}]}}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: web-cert, namespace: edge}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert),
        indent(key)
    )
}

/// A token from `trellis token` (`--pod NS/NAME` or `--gateway NS/NAME`).
fn token(flag: &str, who: &str, config: &std::path::Path, ca_dir: &std::path::Path) -> String {
    let out = std::process::Command::new(trellis_bin().unwrap())
        .args(["token", flag, who, "--config-dir"])
        .arg(config)
        .arg("--ca-dir")
        .arg(ca_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A certificate for `token`'s identity (chain and key, PEM), over TLS without one.
async fn certificate(addr: std::net::SocketAddr, root: &str, token: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let mut client = CertificateServiceClient::new(tls_channel(addr, root, None).await);
    let chain = client
        .create_certificate(request(csr, token))
        .await
        .unwrap()
        .into_inner()
        .cert_chain
        .concat();
    (chain, key.serialize_pem())
}

/// Opens an ADS stream as `node_metadata` (`trellis.dev/pod` or `trellis.dev/gateway` =
/// `value`), asks for `names` of `type_url`, and returns the first response (`None` when none
/// comes within 3 s) or the status the stream ended with.
async fn ads_first(
    channel: tonic::transport::Channel,
    metadata_key: &str,
    value: &str,
    type_url: &str,
    names: &[&str],
) -> Result<Option<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse>, tonic::Status>
{
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    let node = Node {
        id: format!("test-{value}"),
        cluster: value.to_string(),
        metadata: Some(Struct {
            fields: [(
                metadata_key.to_string(),
                Value {
                    kind: Some(Kind::StringValue(value.to_string())),
                },
            )]
            .into(),
        }),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(node),
        type_url: type_url.to_string(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut stream = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(3), stream.message()).await;
    drop(tx);
    match first {
        Err(_) => Ok(None),
        Ok(message) => message,
    }
}

const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/// With `--ca-dir` the xDS port takes mutual TLS: an ADS stream must present the certificate of
/// the proxy it claims to be, and gets only that proxy's resources (a Gateway's keys go to the
/// Gateway's proxies alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_streams_must_present_the_certificate_of_the_proxy_they_claim() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    let ca_dir = tmp.path().join("ca");
    std::fs::create_dir_all(&config).unwrap();
    let site = rcgen::generate_simple_self_signed(vec!["web.example.test".to_string()]).unwrap();
    std::fs::write(
        config.join("objects.yaml"),
        mesh_and_gateway_yaml(&site.cert.pem(), &site.signing_key.serialize_pem()),
    )
    .unwrap();
    let ca = ca_dir.display().to_string();
    let cp = ControlPlane::start(&config, tmp.path(), &["--ca-dir", &ca]).unwrap();
    let root = std::fs::read_to_string(ca_dir.join("root-cert.pem")).unwrap();
    let a = certificate(cp.xds, &root, &token("--pod", "shop/a", &config, &ca_dir)).await;
    let gateway = certificate(
        cp.xds,
        &root,
        &token("--gateway", "edge/web", &config, &ca_dir),
    )
    .await;
    let as_a = tls_channel(cp.xds, &root, Some((&a.0, &a.1))).await;
    let as_gateway = tls_channel(cp.xds, &root, Some((&gateway.0, &gateway.1))).await;
    let anonymous = tls_channel(cp.xds, &root, None).await;
    let pod = "trellis.dev/pod";
    let gw = "trellis.dev/gateway";

    // Its own pod: served.
    let own = ads_first(as_a.clone(), pod, "shop/a", CLUSTER, &[]).await;
    println!(
        "a's certificate as pod shop/a: {:?}",
        own.as_ref().map(|r| r.is_some())
    );
    assert!(matches!(own, Ok(Some(_))), "{own:?}");
    // Another pod, a Gateway, or no certificate at all: refused.
    for (what, channel, key, value) in [
        ("a's certificate as pod shop/b", as_a.clone(), pod, "shop/b"),
        (
            "a's certificate as Gateway edge/web",
            as_a.clone(),
            gw,
            "edge/web",
        ),
        (
            "no certificate as pod shop/a",
            anonymous.clone(),
            pod,
            "shop/a",
        ),
    ] {
        let refused = ads_first(channel, key, value, CLUSTER, &[]).await;
        let status = refused.expect_err(what);
        println!("{what}: {:?} {}", status.code(), status.message());
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{what}");
    }
    // As itself, a's stream asks for the Gateway's key: nothing comes.
    let secret = "secret/edge/web-cert";
    let theirs = ads_first(as_a.clone(), pod, "shop/a", SECRET, &[secret]).await;
    let served = theirs.unwrap().map_or(0, |r| r.resources.len());
    println!("a's stream subscribing to {secret}: {served} resources");
    assert_eq!(served, 0);
    // The Gateway's own proxies get it.
    let own = ads_first(as_gateway, gw, "edge/web", SECRET, &[secret])
        .await
        .unwrap()
        .expect("the gateway proxy's secret");
    println!(
        "the Gateway's certificate subscribing to {secret}: {} resources",
        own.resources.len()
    );
    assert_eq!(own.resources.len(), 1);
    let refused = cp.metrics().unwrap();
    let line = refused
        .lines()
        .find(|l| l.contains("unauthorized"))
        .unwrap_or("(no series)");
    println!("{line}");
}
