//! How translation time grows with the number of routes: `cargo run --release -p
//! trellis-translate --example scale -- 1000`.

use std::time::Instant;
use trellis_model::InputSet;
use trellis_sources::{ParsedDocument, parse_documents};
use trellis_translate::{Options, translate};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let mut yaml = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: trellis}\nspec: {controllerName: trellis.dev/gateway-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: trellis\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n",
    );
    for i in 0..n {
        yaml.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r{i}, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [h{i}.example.com]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /api}}, headers: [{{name: x-v, type: RegularExpression, value: \"v[0-9]+\"}}]}}]\n    backendRefs: [{{name: s{i}, port: 80}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s{i}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: s{i}}}\naddressType: IPv4\nports: [{{name: http, port: 3000}}]\nendpoints: [{{addresses: [\"10.{}.{}.1\"]}}]\n",
            i / 256,
            i % 256
        ));
    }
    let mut input = InputSet::default();
    let t0 = Instant::now();
    let documents = parse_documents(&yaml);
    println!(
        "parse: {} documents, {} KB of YAML, {:?}",
        documents.len(),
        yaml.len() / 1024,
        t0.elapsed()
    );
    for doc in documents {
        if let ParsedDocument::Object { object, .. } = doc {
            input.insert(*object);
        }
    }
    let mut cache = trellis_translate::envoy::ResourceCache::default();
    let t0 = Instant::now();
    let translation = translate(&input, &Options::default());
    let t1 = Instant::now();
    trellis_translate::envoy::snapshots_cached(&translation.ir, &mut cache);
    println!(
        "first translation: translate {:?}, encode {:?}",
        t1 - t0,
        t1.elapsed()
    );
    // Change one route: it now also matches a header.
    let key = trellis_model::ObjectKey::new("default", "r7");
    let mut changed = (*input.http_routes[&key]).clone();
    changed.spec.hostnames.push("extra.example.com".into());
    input.http_routes.insert(key, std::sync::Arc::new(changed));
    let t0 = Instant::now();
    let translation = translate(&input, &Options::default());
    let t1 = Instant::now();
    trellis_translate::envoy::snapshots_cached(&translation.ir, &mut cache);
    println!(
        "one route changed: translate {:?}, encode (cached) {:?}",
        t1 - t0,
        t1.elapsed()
    );
    for round in 0..3 {
        let t0 = Instant::now();
        let translation = translate(&input, &Options::default());
        let t1 = Instant::now();
        let snapshots = trellis_translate::envoy::snapshots(&translation.ir);
        let t2 = Instant::now();
        let bytes: usize = snapshots
            .values()
            .flat_map(|s| {
                trellis_xds::ResourceType::ALL
                    .into_iter()
                    .map(move |t| s.resources(t))
            })
            .flat_map(|r| r.items().values())
            .map(|r| r.body.value.len())
            .sum();
        println!(
            "round {round}: {n} routes: translate {:?}, encode {:?}, {} KiB of resources",
            t1 - t0,
            t2 - t1,
            bytes / 1024
        );
    }
}
