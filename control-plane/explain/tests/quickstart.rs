//! `trellis explain` on the quickstart's configuration (read from `deploy/quickstart` as
//! `trellis serve --config-dir` reads it): a request forwarded, a 404 with its closest routes,
//! a 500 with the status condition that explains it, a request into the mesh over its mutual
//! TLS, and a request from a pod of the mesh.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use trellis_explain::{Entry, Explanation, Request, explain, render_text};
use trellis_model::ObjectKey;

fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/quickstart")
}

fn run(dir: &Path, entry: Entry, host: &str, path: &str, headers: &[(&str, &str)]) -> Explanation {
    let offline = trellis_vet::Offline::read(dir);
    let request = Request {
        host: host.into(),
        path: path.into(),
        method: "GET".into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        port: None,
    };
    let e = explain(
        &offline.translation.ir,
        &offline.translation.status,
        &entry,
        &request,
    )
    .unwrap();
    println!("{}", render_text(&e));
    e
}

fn gateway() -> Entry {
    Entry::Gateway(ObjectKey::new("demo", "web"))
}

#[test]
fn a_canary_request_is_forwarded_to_v2_and_the_chaos_policy_is_named() {
    let e = run(
        &quickstart(),
        gateway(),
        "store.example.com",
        "/",
        &[("X-Canary", "true")],
    );
    assert_eq!(e.outcome.status, None, "forwarded");
    let text = render_text(&e);
    assert!(
        text.contains("HTTPRoute demo/store rule 0 match 0"),
        "{text}"
    );
    assert!(
        text.contains("service/demo/store-v2/80: 1 ready endpoint"),
        "{text}"
    );
    assert!(text.contains("store-chaos: does not apply"), "{text}");
    let tagged = run(
        &quickstart(),
        gateway(),
        "store.example.com",
        "/",
        &[("x-chaos", "abort")],
    );
    assert!(render_text(&tagged).contains("store-chaos: applies"));
}

#[test]
fn a_request_into_the_mesh_goes_over_its_mutual_tls() {
    let e = run(&quickstart(), gateway(), "shop.example.com", "/", &[]);
    let text = render_text(&e);
    assert!(
        text.contains("service/shop/frontend/80: 1 ready endpoint, over the mesh's mutual TLS"),
        "{text}"
    );
    // Outside the mesh, plaintext: nothing said.
    let e = run(
        &quickstart(),
        gateway(),
        "catalog.example.com",
        "/v1/items",
        &[],
    );
    assert!(!render_text(&e).contains("mutual TLS"));
}

#[test]
fn a_404_names_the_closest_routes_and_the_condition_each_failed() {
    let e = run(
        &quickstart(),
        gateway(),
        "catalog.example.com",
        "/v2/items",
        &[],
    );
    assert_eq!(e.outcome.status, Some(404));
    assert!(
        e.candidates
            .iter()
            .any(|c| c.failed == "path /v2/items is not under /v1/items"),
        "{e:?}"
    );
    let unknown = run(
        &quickstart(),
        gateway(),
        "nothing.example.com:8080",
        "/",
        &[],
    );
    assert_eq!(unknown.outcome.status, Some(404));
    assert!(
        unknown.outcome.summary.contains("store.example.com"),
        "{:?}",
        unknown.outcome
    );
}

#[test]
fn a_500_says_which_backend_does_not_resolve() {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(quickstart()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.path().join("50-broken.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: reports, namespace: demo}\n\
         spec:\n  parentRefs: [{name: web}]\n  hostnames: [reports.example.com]\n  rules:\n  \
         - backendRefs: [{name: reports, port: 80}]\n",
    )
    .unwrap();
    let e = run(dir.path(), gateway(), "reports.example.com", "/", &[]);
    assert_eq!(e.outcome.status, Some(500));
    assert!(
        e.outcome.summary.contains("BackendNotFound"),
        "{:?}",
        e.outcome
    );
    assert!(
        e.outcome.summary.contains("demo/reports"),
        "{:?}",
        e.outcome
    );
}

#[test]
fn from_a_pod_the_mesh_route_of_the_service_decides() {
    let pod = Entry::Pod(ObjectKey::new("shop", "frontend-5d8c7b9f4-k2m7x"));
    let e = run(&quickstart(), pod.clone(), "orders.shop", "/v2", &[]);
    let text = render_text(&e);
    assert!(
        text.contains("HTTPRoute shop/orders rule 0 match 1"),
        "{text}"
    );
    assert!(text.contains("orders-v2"), "{text}");
    let other = run(&quickstart(), pod, "example.org", "/", &[]);
    assert_eq!(other.outcome.status, None);
    assert!(
        other.outcome.summary.contains("unknown destination"),
        "{:?}",
        other.outcome
    );
}
