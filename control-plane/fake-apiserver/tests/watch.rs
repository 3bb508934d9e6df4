//! kube-runtime's `watcher` and `reflector` against the in-process server: convergence,
//! resuming dropped watches, 410 and relist after compaction, bookmarks, selector transitions,
//! streaming lists and metadata watches.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, Patch, PatchParams, PostParams, ResourceExt, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use trellis_fake_apiserver::{FakeApiServer, Subresource};

/// Runs a reflector over ConfigMaps in `ns`; returns its reader.
fn reflect(server: &FakeApiServer, ns: &str) -> reflector::Store<ConfigMap> {
    let api: Api<ConfigMap> = Api::namespaced(server.client(), ns);
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .boxed();
    tokio::spawn(stream.for_each(|_| async {}));
    reader
}

/// The reflector's contents as name → data.value.
fn contents(reader: &reflector::Store<ConfigMap>) -> BTreeMap<String, String> {
    reader
        .state()
        .iter()
        .map(|c| {
            let value = c
                .data
                .as_ref()
                .and_then(|d| d.get("value"))
                .cloned()
                .unwrap_or_default();
            (c.name_any(), value)
        })
        .collect()
}

/// The store's contents as name → data.value.
fn truth(server: &FakeApiServer, ns: &str) -> BTreeMap<String, String> {
    let kind = server.kind("v1", "ConfigMap").unwrap();
    let list = server
        .store()
        .list(&kind, Some(ns), &Default::default())
        .unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap().to_string(),
                o["data"]["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn upsert(server: &FakeApiServer, ns: &str, name: &str, value: &str) {
    let kind = server.kind("v1", "ConfigMap").unwrap();
    server
        .store()
        .upsert(
            &kind,
            json!({ "metadata": { "name": name, "namespace": ns }, "data": { "value": value } }),
        )
        .unwrap();
}

fn remove(server: &FakeApiServer, ns: &str, name: &str) {
    let kind = server.kind("v1", "ConfigMap").unwrap();
    server
        .store()
        .delete(&kind, ns, name, &Default::default(), false)
        .unwrap();
}

#[tokio::test]
async fn a_reflector_converges_on_the_store_through_creates_updates_and_deletes() {
    let server = server();
    create_config_maps(&server.client(), "demo", &["a", "b", "c"]).await;
    create_config_maps(&server.client(), "elsewhere", &["x"]).await;
    let reader = reflect(&server, "demo");
    reader.wait_until_ready().await.unwrap();
    assert_eq!(contents(&reader), truth(&server, "demo"));

    let api: Api<ConfigMap> = Api::namespaced(server.client(), "demo");
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "value": "a2" } })),
    )
    .await
    .unwrap();
    api.delete("b", &DeleteParams::default()).await.unwrap();
    api.create(&PostParams::default(), &config_map("d", &[], "d1"))
        .await
        .unwrap();
    let expected: BTreeMap<String, String> = [("a", "a2"), ("c", "v"), ("d", "d1")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    eventually("the reflector has the new state", || {
        let ok = contents(&reader) == expected;
        async move { ok }
    })
    .await;
    assert_eq!(truth(&server, "demo"), expected);
}

#[tokio::test]
async fn a_watcher_lists_in_pages_before_it_watches() {
    let server = server();
    let names: Vec<String> = (0..7).map(|i| format!("cm-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    create_config_maps(&server.client(), "demo", &refs).await;
    server.clear_requests();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "demo");
    let mut rx = record(api, watcher::Config::default().page_size(3));
    let seen = collect_until(&mut rx, |s| s.contains(&Seen::InitDone)).await;
    let applied: Vec<&Seen> = seen
        .iter()
        .filter(|s| matches!(s, Seen::InitApply(_)))
        .collect();
    assert_eq!(applied.len(), 7);
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.is_list_of("configmaps"))
        .count();
    assert_eq!(lists, 3, "7 objects in pages of 3");
}

#[tokio::test]
async fn a_dropped_watch_is_resumed_without_missing_events_or_relisting() {
    let server = server();
    create_config_maps(&server.client(), "demo", &["a"]).await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "demo");
    let mut rx = record(api, watcher::Config::default());
    collect_until(&mut rx, |s| s.contains(&Seen::InitDone)).await;
    server.clear_requests();

    // Drop the watch between writes, repeatedly; every write must still arrive.
    let faults = server.faults();
    let watches =
        |server: &FakeApiServer| server.requests().iter().filter(|r| r.is_watch()).count();
    for i in 0..5 {
        let before = watches(&server);
        faults.drop_watches();
        upsert(&server, "demo", &format!("n{i}"), "v");
        eventually("the watcher has watched again", || {
            let again = watches(&server) > before;
            async move { again }
        })
        .await;
    }
    let seen = collect_until(&mut rx, |s| {
        (0..5).all(|i| s.contains(&Seen::Apply(format!("n{i}"))))
    })
    .await;
    assert!(!seen.contains(&Seen::Init), "no relist: {seen:?}");
    assert!(
        !seen.iter().any(|s| matches!(s, Seen::Error(_))),
        "{seen:?}"
    );
    let requests = server.requests();
    assert!(
        requests.iter().all(|r| !r.is_list_of("configmaps")),
        "no LIST after the drops"
    );
    assert_eq!(watches(&server), 5, "one resumed watch per drop");
}

#[tokio::test]
async fn after_compaction_the_watcher_gets_410_relists_and_the_reflector_keeps_live_objects() {
    let server = server();
    create_config_maps(&server.client(), "demo", &["a", "b", "c"]).await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "demo");
    let mut rx = record(api, watcher::Config::default());
    collect_until(&mut rx, |s| s.contains(&Seen::InitDone)).await;
    let reader = reflect(&server, "demo");
    reader.wait_until_ready().await.unwrap();

    // While the server is down, things change and the history is compacted past the
    // watchers' resourceVersion.
    let faults = server.faults();
    faults.refuse_for(Duration::from_millis(300));
    eventually("the open watches are closed", || {
        let closed = faults.open_watches() == 0;
        async move { closed }
    })
    .await;
    upsert(&server, "demo", "b", "b2");
    remove(&server, "demo", "c");
    upsert(&server, "demo", "d", "d1");
    faults.compact();

    let seen = collect_until(&mut rx, |s| s.contains(&Seen::InitDone)).await;
    let gone = seen.iter().position(|s| *s == Seen::Error(Some(410)));
    let init = seen.iter().position(|s| *s == Seen::Init);
    assert!(
        gone.is_some(),
        "the watcher was told 410 inside the stream: {seen:?}"
    );
    assert!(init > gone, "and relisted after it: {seen:?}");
    let relisted: Vec<&Seen> = seen[init.unwrap()..]
        .iter()
        .filter(|s| matches!(s, Seen::InitApply(_)))
        .collect();
    assert_eq!(
        relisted,
        [
            &Seen::InitApply("a".into()),
            &Seen::InitApply("b".into()),
            &Seen::InitApply("d".into())
        ]
    );
    // Objects that still exist are never reported deleted; the relist replaces the set.
    assert!(
        !seen.iter().any(|s| matches!(s, Seen::Delete(_))),
        "{seen:?}"
    );

    let expected: BTreeMap<String, String> = [("a", "v"), ("b", "b2"), ("d", "d1")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    eventually("the reflector relisted", || {
        let ok = contents(&reader) == expected;
        async move { ok }
    })
    .await;

    // And it keeps watching from the new list.
    upsert(&server, "demo", "e", "e1");
    collect_until(&mut rx, |s| s.contains(&Seen::Apply("e".into()))).await;
}

#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_gets_410_inside_a_200_stream() {
    let server = server();
    let client = server.client();
    create_config_maps(&client, "demo", &["a"]).await;
    let old = server.store().resource_version();
    create_config_maps(&client, "demo", &["b"]).await;
    server.faults().compact();
    let request = hyper::Request::get(format!(
        "/api/v1/namespaces/demo/configmaps?watch=true&resourceVersion={old}&allowWatchBookmarks=true&timeoutSeconds=5"
    ))
    .body(Vec::new())
    .unwrap();
    let body = client.request_text(request).await.unwrap();
    let event: serde_json::Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["kind"], "Status");
    assert_eq!(event["object"]["apiVersion"], "v1");
    assert_eq!(event["object"]["status"], "Failure");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
    assert_eq!(body.lines().count(), 1, "the stream ends after the error");
}

#[tokio::test]
async fn watches_send_bookmarks_with_the_current_resource_version() {
    let server = server();
    let client = server.client();
    create_config_maps(&client, "demo", &["a"]).await;
    create_config_maps(&client, "other", &["b"]).await;
    let current = server.store().resource_version();
    let api: Api<ConfigMap> = Api::namespaced(client, "demo");
    let wp = WatchParams::default().timeout(2);
    let mut stream = api.watch(&wp, "0").await.unwrap().boxed();
    let first = stream.next().await.unwrap().unwrap();
    assert!(matches!(first, WatchEvent::Added(ref c) if c.name_any() == "a"));
    let mut bookmark = None;
    while let Some(event) = stream.next().await {
        if let WatchEvent::Bookmark(b) = event.unwrap() {
            bookmark = Some(b);
            break;
        }
    }
    let bookmark = bookmark.expect("a bookmark before the timeout");
    assert_eq!(bookmark.types.api_version, "v1");
    assert_eq!(bookmark.types.kind, "ConfigMap");
    assert_eq!(bookmark.metadata.resource_version, current.to_string());
}

#[tokio::test]
async fn a_watch_ends_at_its_timeout() {
    let server = server();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "demo");
    let started = std::time::Instant::now();
    let wp = WatchParams::default().timeout(1);
    let events: Vec<_> = api.watch(&wp, "1").await.unwrap().collect().await;
    assert!(events.iter().all(Result::is_ok));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn objects_entering_and_leaving_a_label_selection_are_added_and_deleted() {
    let server = server();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "demo");
    api.create(
        &PostParams::default(),
        &config_map("web", &[("app", "web")], "v"),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &config_map("db", &[("app", "db")], "v"),
    )
    .await
    .unwrap();
    let mut rx = record(api.clone(), watcher::Config::default().labels("app=web"));
    let seen = collect_until(&mut rx, |s| s.contains(&Seen::InitDone)).await;
    assert_eq!(
        seen,
        [Seen::Init, Seen::InitApply("web".into()), Seen::InitDone]
    );

    let relabel = |app: &str| Patch::Merge(json!({ "metadata": { "labels": { "app": app } } }));
    api.patch("web", &PatchParams::default(), &relabel("old"))
        .await
        .unwrap();
    api.patch("db", &PatchParams::default(), &relabel("web"))
        .await
        .unwrap();
    api.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "value": "2" } })),
    )
    .await
    .unwrap();
    let seen = collect_until(&mut rx, |s| s.len() == 3).await;
    assert_eq!(
        seen,
        [
            Seen::Delete("web".into()),
            Seen::Apply("db".into()),
            Seen::Apply("db".into())
        ]
    );
}

#[tokio::test]
async fn a_streaming_list_watcher_gets_initial_events_and_the_end_bookmark() {
    let server = server();
    create_config_maps(&server.client(), "demo", &["a", "b"]).await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "demo");
    let mut rx = record(api, watcher::Config::default().streaming_lists());
    let seen = collect_until(&mut rx, |s| s.contains(&Seen::InitDone)).await;
    // kube's streaming-list watcher emits no Init: it goes straight to the initial events.
    assert_eq!(
        seen,
        [
            Seen::InitApply("a".into()),
            Seen::InitApply("b".into()),
            Seen::InitDone
        ]
    );
    upsert(&server, "demo", "c", "v");
    collect_until(&mut rx, |s| s.contains(&Seen::Apply("c".into()))).await;
}

#[tokio::test]
async fn a_metadata_watcher_sees_partial_objects() {
    let server = server();
    create_config_maps(&server.client(), "demo", &["a"]).await;
    let api: Api<kube::core::PartialObjectMeta<ConfigMap>> =
        Api::namespaced(server.client(), "demo");
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    let mut names = Vec::new();
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            watcher::Event::InitApply(m) => names.push(m.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(names, ["a"]);
    upsert(&server, "demo", "b", "v");
    loop {
        if let watcher::Event::Apply(m) = stream.next().await.unwrap().unwrap() {
            assert_eq!(m.name_any(), "b");
            assert_eq!(m.types.unwrap().kind, "PartialObjectMetadata");
            break;
        }
    }
}

#[tokio::test]
async fn status_writes_reach_watchers_as_modifications() {
    let server = server();
    let client = server.client();
    let api = gateway_api(&server, &client, "Gateway", "infra");
    let gw: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": { "name": "web" },
        "spec": { "gatewayClassName": "trellis", "listeners": [] },
    }))
    .unwrap();
    api.create(&PostParams::default(), &gw).await.unwrap();
    let mut rx = record(api.clone(), watcher::Config::default());
    collect_until(&mut rx, |s| s.contains(&Seen::InitDone)).await;
    let kind = server
        .kind("gateway.networking.k8s.io/v1", "Gateway")
        .unwrap();
    server
        .store()
        .patch(
            &kind,
            "infra",
            "web",
            trellis_fake_apiserver::Patch::Merge(json!({ "status": { "addresses": [] } })),
            Subresource::Status,
            false,
        )
        .unwrap();
    collect_until(&mut rx, |s| s.contains(&Seen::Apply("web".into()))).await;
}

#[tokio::test]
async fn a_watcher_over_all_namespaces_sees_every_namespace_and_collection_deletes() {
    let server = server();
    create_config_maps(&server.client(), "one", &["a"]).await;
    create_config_maps(&server.client(), "two", &["b"]).await;
    let all: Api<ConfigMap> = Api::all(server.client());
    let mut rx = record(all, watcher::Config::default());
    let seen = collect_until(&mut rx, |s| s.contains(&Seen::InitDone)).await;
    assert_eq!(
        seen,
        [
            Seen::Init,
            Seen::InitApply("a".into()),
            Seen::InitApply("b".into()),
            Seen::InitDone
        ]
    );
    upsert(&server, "three", "c", "v");
    let two: Api<ConfigMap> = Api::namespaced(server.client(), "two");
    let deleted = two
        .delete_collection(&DeleteParams::default(), &kube::api::ListParams::default())
        .await
        .unwrap();
    assert_eq!(deleted.left().unwrap().items.len(), 1);
    let seen = collect_until(&mut rx, |s| s.len() == 2).await;
    assert_eq!(seen, [Seen::Apply("c".into()), Seen::Delete("b".into())]);
}
