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

    let out = std::process::Command::new(trellis_bin().unwrap())
        .args(["token", "--pod", "shop/orders-1", "--config-dir"])
        .arg(&config)
        .arg("--ca-dir")
        .arg(&ca_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let mut client = CertificateServiceClient::connect(format!("http://{}", cp.xds))
        .await
        .unwrap();
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
