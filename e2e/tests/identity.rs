//! Workload identity through the real binary: `trellis serve --ca-dir` serves the certificate
//! service on its xDS port; a token from `trellis token` gets a certificate naming the pod's
//! identity (never what the CSR asks for); once the pod is gone, the same token is refused.

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
