//! kube's `Api` against the in-process server: CRUD, patches, apply, status, generation,
//! paging, selectors, Leases, errors and discovery.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, ResourceExt,
};
use kube::core::GroupVersionKind;
use kube::{CustomResourceExt, Discovery, discovery};
use serde_json::json;

fn route(name: &str, hostnames: &[&str]) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": { "name": name },
        "spec": { "hostnames": hostnames, "parentRefs": [{ "name": "web" }] },
        "status": { "parents": [] },
    }))
    .unwrap()
}

#[tokio::test]
async fn typed_services_are_created_read_listed_and_deleted() {
    let server = server();
    let api: Api<Service> = Api::namespaced(server.client(), "demo");
    let svc: Service = serde_json::from_value(json!({
        "metadata": { "name": "echo", "labels": { "app": "echo" } },
        "spec": { "ports": [{ "port": 80 }], "selector": { "app": "echo" } },
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &svc).await.unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("demo"));
    assert_eq!(meta.generation, Some(1));
    assert_eq!(meta.uid.as_ref().map(String::len), Some(36));
    assert!(meta.creation_timestamp.is_some());
    let rv: u64 = meta.resource_version.as_ref().unwrap().parse().unwrap();
    assert!(rv > 1);

    let got = api.get("echo").await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    assert_eq!(got.spec.unwrap().ports.unwrap()[0].port, 80);

    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert!(list_rv >= rv);
    let everywhere: Api<Service> = Api::all(server.client());
    assert_eq!(
        everywhere
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    let deleted = api.delete("echo", &DeleteParams::default()).await.unwrap();
    assert_eq!(deleted.left().unwrap().name_any(), "echo");
    assert_eq!(api_code(&api.get("echo").await.unwrap_err()), 404);
    assert_eq!(
        api_code(
            &api.delete("echo", &DeleteParams::default())
                .await
                .unwrap_err()
        ),
        404
    );
}

#[tokio::test]
async fn errors_come_back_as_kubernetes_status_objects() {
    let server = server();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let err = api.get("missing").await.unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(status.code, 404);
    assert_eq!(status.reason, "NotFound");
    assert_eq!(status.message, "configmaps \"missing\" not found");
    assert!(status.is_not_found());

    api.create(&PostParams::default(), &config_map("one", &[], "1"))
        .await
        .unwrap();
    let err = api
        .create(&PostParams::default(), &config_map("one", &[], "1"))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );

    let bad_name = api
        .create(&PostParams::default(), &config_map("Not_Valid", &[], "1"))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = bad_name else {
        panic!("{bad_name:?}")
    };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));

    let bad_selector = api
        .list(&ListParams::default().labels("app in web"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&bad_selector), 400);

    let unknown = kube::api::ApiResource {
        group: "nothing.example".into(),
        version: "v1".into(),
        api_version: "nothing.example/v1".into(),
        kind: "Nothing".into(),
        plural: "nothings".into(),
    };
    let nothing: Api<DynamicObject> = Api::namespaced_with(server.client(), "default", &unknown);
    assert_eq!(
        api_code(&nothing.list(&ListParams::default()).await.unwrap_err()),
        404
    );
}

#[tokio::test]
async fn merge_json_and_strategic_patches_change_the_object_and_its_resource_version() {
    let server = server();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let created = api
        .create(
            &PostParams::default(),
            &config_map("cfg", &[("app", "web")], "1"),
        )
        .await
        .unwrap();

    let merged = api
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "data": { "extra": "x" }, "metadata": { "labels": { "app": null } } }),
            ),
        )
        .await
        .unwrap();
    let data = merged.data.clone().unwrap();
    assert_eq!(data["value"], "1");
    assert_eq!(data["extra"], "x");
    assert!(merged.labels().get("app").is_none());
    assert_ne!(merged.resource_version(), created.resource_version());

    let ops: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": "/data/value", "value": "1" },
        { "op": "replace", "path": "/data/value", "value": "2" },
        { "op": "remove", "path": "/data/extra" },
    ]))
    .unwrap();
    let patched = api
        .patch("cfg", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(
        patched.data.clone().unwrap(),
        [("value".to_string(), "2".to_string())].into()
    );

    let failing: json_patch::Patch =
        serde_json::from_value(json!([{ "op": "test", "path": "/data/value", "value": "1" }]))
            .unwrap();
    let err = api
        .patch("cfg", &PatchParams::default(), &Patch::<()>::Json(failing))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 422);

    let strategic = api
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Strategic(json!({ "data": { "s": "y" } })),
        )
        .await
        .unwrap();
    assert_eq!(strategic.data.unwrap()["s"], "y");

    // A merge patch carrying a stale resourceVersion is an optimistic-lock failure.
    let stale = api
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "resourceVersion": created.resource_version() }, "data": { "z": "1" } })),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&stale), 409);
}

#[tokio::test]
async fn an_update_that_changes_nothing_keeps_the_resource_version() {
    let server = server();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let created = api
        .create(&PostParams::default(), &config_map("same", &[], "1"))
        .await
        .unwrap();
    let again = api
        .patch(
            "same",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "value": "1" } })),
        )
        .await
        .unwrap();
    assert_eq!(again.resource_version(), created.resource_version());
}

#[tokio::test]
async fn replace_with_a_stale_resource_version_is_a_conflict() {
    let server = server();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let v1 = api
        .create(&PostParams::default(), &config_map("cfg", &[], "1"))
        .await
        .unwrap();
    let mut v2 = v1.clone();
    v2.data = Some([("value".to_string(), "2".to_string())].into());
    let v2 = api
        .replace("cfg", &PostParams::default(), &v2)
        .await
        .unwrap();
    assert_ne!(v2.resource_version(), v1.resource_version());

    let mut stale = v1.clone();
    stale.data = Some([("value".to_string(), "3".to_string())].into());
    let err = api
        .replace("cfg", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(status.message.contains("the object has been modified"));
    assert_eq!(api.get("cfg").await.unwrap().data.unwrap()["value"], "2");
}

#[tokio::test]
async fn server_side_apply_creates_merges_forgets_dropped_fields_and_detects_conflicts() {
    let server = server();
    let api = gateway_api(&server, &server.client(), "Gateway", "infra");
    let gw = |listeners: serde_json::Value, extra: serde_json::Value| {
        let mut v = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": { "name": "web" },
            "spec": { "gatewayClassName": "trellis", "listeners": listeners },
        });
        json_patch::merge(&mut v, &extra);
        v
    };
    let http = json!([{ "name": "http", "port": 80, "protocol": "HTTP" }]);
    let created = api
        .patch(
            "web",
            &PatchParams::apply("trellis-test"),
            &Patch::Apply(gw(
                http.clone(),
                json!({ "metadata": { "labels": { "owner": "a" } } }),
            )),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let managed = created.metadata.managed_fields.clone().unwrap();
    assert_eq!(managed.len(), 1);
    assert_eq!(managed[0].manager.as_deref(), Some("trellis-test"));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));

    // Re-applying without the label removes it (the manager owned it); the spec is unchanged.
    let reapplied = api
        .patch(
            "web",
            &PatchParams::apply("trellis-test"),
            &Patch::Apply(gw(http.clone(), json!({}))),
        )
        .await
        .unwrap();
    assert!(reapplied.labels().get("owner").is_none());
    assert_eq!(reapplied.metadata.generation, Some(1));

    // Another manager adds a field the first did not set: both survive.
    let other = api
        .patch(
            "web",
            &PatchParams::apply("other"),
            &Patch::Apply(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": { "name": "web", "annotations": { "note": "hi" } },
            })),
        )
        .await
        .unwrap();
    assert_eq!(other.annotations()["note"], "hi");
    assert_eq!(other.data["spec"]["gatewayClassName"], "trellis");

    // The other manager changing a field the first owns conflicts, unless forced.
    let takeover = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": { "name": "web" },
        "spec": { "gatewayClassName": "other" },
    });
    let err = api
        .patch(
            "web",
            &PatchParams::apply("other"),
            &Patch::Apply(takeover.clone()),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(status.code, 409);
    assert!(
        status.message.contains("conflict with \"trellis-test\""),
        "{}",
        status.message
    );
    let forced = api
        .patch(
            "web",
            &PatchParams::apply("other").force(),
            &Patch::Apply(takeover),
        )
        .await
        .unwrap();
    assert_eq!(forced.data["spec"]["gatewayClassName"], "other");
    assert_eq!(forced.metadata.generation, Some(2));
    // The listeners stay: "other" applied only the class name and never owned them.
    assert_eq!(forced.data["spec"]["listeners"], http);
}

#[tokio::test]
async fn the_status_subresource_changes_only_status_and_spec_changes_bump_the_generation() {
    let server = server();
    let api = gateway_api(&server, &server.client(), "HTTPRoute", "demo");

    // Status is dropped on create, as the real server does for kinds with a status subresource.
    let created = api
        .create(&PostParams::default(), &route("r", &["a.example"]))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.data.get("status").is_none());

    let status = json!({ "status": { "parents": [{ "controllerName": "trellis.dev/gateway-controller" }] } });
    let with_status = api
        .patch_status("r", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(with_status.metadata.generation, Some(1));
    assert_ne!(with_status.resource_version(), created.resource_version());
    assert_eq!(with_status.data["status"], status["status"]);

    // A status patch that also touches the spec changes only the status.
    let sneaky = api
        .patch_status(
            "r",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "spec": { "hostnames": ["evil.example"] }, "status": { "parents": [] } }),
            ),
        )
        .await
        .unwrap();
    assert_eq!(sneaky.data["spec"]["hostnames"], json!(["a.example"]));
    assert_eq!(sneaky.data["status"]["parents"], json!([]));

    // Writes to the main resource ignore status and bump the generation for spec changes.
    let mut changed = api.get("r").await.unwrap();
    changed.data["spec"]["hostnames"] = json!(["b.example"]);
    changed.data["status"] = json!({ "parents": [{ "controllerName": "someone-else" }] });
    let replaced = api
        .replace("r", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(replaced.data["status"]["parents"], json!([]));

    // Label changes are metadata: no generation bump.
    let labelled = api
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "x": "y" } } })),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));

    // replace_status with a stale resourceVersion conflicts; with the current one it writes.
    let mut stale = created.clone();
    stale.data["status"] = json!({ "parents": [] });
    assert_eq!(
        api_code(
            &api.replace_status("r", &PostParams::default(), &stale)
                .await
                .unwrap_err()
        ),
        409
    );
    let mut current = api.get_status("r").await.unwrap();
    current.data["status"] =
        json!({ "parents": [{ "controllerName": "trellis.dev/gateway-controller" }] });
    current.data["spec"]["hostnames"] = json!(["ignored.example"]);
    let replaced = api
        .replace_status("r", &PostParams::default(), &current)
        .await
        .unwrap();
    assert_eq!(replaced.data["spec"]["hostnames"], json!(["b.example"]));
    assert_eq!(replaced.metadata.generation, Some(2));

    // Server-side apply of status through the subresource, as the provider's status writer will.
    let applied = api
        .patch_status(
            "r",
            &PatchParams::apply("trellis-status").force(),
            &Patch::Apply(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": { "name": "r" },
                "status": { "parents": [{ "controllerName": "trellis.dev/gateway-controller", "conditions": [{ "type": "Accepted", "status": "True" }] }] },
            })),
        )
        .await
        .unwrap();
    assert_eq!(
        applied.data["status"]["parents"][0]["conditions"][0]["type"],
        "Accepted"
    );
    assert_eq!(applied.metadata.generation, Some(2));
    let entry = applied
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("trellis-status"))
        .unwrap();
    assert_eq!(entry.subresource.as_deref(), Some("status"));
}

#[tokio::test]
async fn custom_resources_work_typed_and_kinds_can_come_from_a_created_crd() {
    let server = trellis_fake_apiserver::FakeApiServer::new();
    let client = server.client();
    // Not registered yet: 404 from the API, as before a CRD is installed.
    let policies: Api<RetryPolicy> = Api::namespaced(client.clone(), "demo");
    assert_eq!(
        api_code(&policies.list(&ListParams::default()).await.unwrap_err()),
        404
    );

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &RetryPolicy::crd())
        .await
        .unwrap();

    let p = RetryPolicy::new(
        "retry",
        RetryPolicySpec {
            attempts: 3,
            per_try_timeout: None,
        },
    );
    let created = policies.create(&PostParams::default(), &p).await.unwrap();
    assert_eq!(created.spec.attempts, 3);
    let accepted = policies
        .patch_status(
            "retry",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "accepted": true } })),
        )
        .await
        .unwrap();
    assert_eq!(accepted.status, Some(RetryPolicyStatus { accepted: true }));
    assert_eq!(accepted.metadata.generation, Some(1));
}

#[tokio::test]
async fn cluster_scoped_kinds_live_outside_namespaces() {
    let server = server();
    let client = server.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": "demo" } })).unwrap();
    let created = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    assert_eq!(created.metadata.namespace, None);
    let ar = api_resource(&server, "gateway.networking.k8s.io/v1", "GatewayClass");
    let classes: Api<DynamicObject> = Api::all_with(client, &ar);
    let class: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": { "name": "trellis" },
        "spec": { "controllerName": "trellis.dev/gateway-controller" },
    }))
    .unwrap();
    classes
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    assert_eq!(
        classes.get("trellis").await.unwrap().metadata.namespace,
        None
    );
}

#[tokio::test]
async fn lists_page_with_limit_and_continue() {
    let server = server();
    let client = server.client();
    let names = ["a", "b", "c", "d", "e", "f", "g"];
    create_config_maps(&client, "demo", &names).await;
    create_config_maps(&client, "other", &["z"]).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "demo");

    let mut seen = Vec::new();
    let mut params = ListParams::default().limit(3);
    let mut pages = 0;
    let mut first_rv = None;
    loop {
        let page = api.list(&params).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 3);
        let rv = page.metadata.resource_version.clone().unwrap();
        assert_eq!(
            first_rv.get_or_insert(rv.clone()),
            &rv,
            "every page has the list's resourceVersion"
        );
        seen.extend(page.items.iter().map(|c| c.name_any()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => {
                assert!(page.metadata.remaining_item_count.unwrap() > 0);
                params = params.continue_token(&token);
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, names);
}

#[tokio::test]
async fn a_continue_token_older_than_the_history_is_gone() {
    let server = server();
    let client = server.client();
    create_config_maps(&client, "demo", &["a", "b", "c"]).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "demo");
    let page = api.list(&ListParams::default().limit(1)).await.unwrap();
    let token = page.metadata.continue_.unwrap();
    create_config_maps(&client, "demo", &["d"]).await;
    server.faults().compact();
    let err = api
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let server = server();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "demo");
    for (name, labels) in [
        ("web", vec![("app", "web"), ("tier", "front")]),
        ("api", vec![("app", "api"), ("tier", "back")]),
        ("db", vec![("app", "db")]),
    ] {
        api.create(&PostParams::default(), &config_map(name, &labels, "v"))
            .await
            .unwrap();
    }
    let names = |selector: &str| {
        let api = api.clone();
        let lp = ListParams::default().labels(selector);
        async move {
            let mut n: Vec<String> = api
                .list(&lp)
                .await
                .unwrap()
                .items
                .iter()
                .map(|c| c.name_any())
                .collect();
            n.sort();
            n
        }
    };
    assert_eq!(names("app=web").await, ["web"]);
    assert_eq!(names("app!=web").await, ["api", "db"]);
    assert_eq!(names("app in (web,api)").await, ["api", "web"]);
    assert_eq!(names("app notin (web,api)").await, ["db"]);
    assert_eq!(names("tier").await, ["api", "web"]);
    assert_eq!(names("!tier").await, ["db"]);
    assert_eq!(names("tier,app!=api").await, ["web"]);

    let by_name = api
        .list(&ListParams::default().fields("metadata.name=api"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let all: Api<ConfigMap> = Api::all(server.client());
    let by_ns = all
        .list(&ListParams::default().fields("metadata.namespace!=demo"))
        .await
        .unwrap();
    assert!(by_ns.items.is_empty());
    assert_eq!(
        api_code(
            &api.list(&ListParams::default().fields("spec.x=1"))
                .await
                .unwrap_err()
        ),
        400
    );
}

#[tokio::test]
async fn leases_are_created_once_and_updated_with_optimistic_concurrency() {
    let server = server();
    let api: Api<Lease> = Api::namespaced(server.client(), "trellis-system");
    let lease = |holder: &str| -> Lease {
        serde_json::from_value(json!({
            "metadata": { "name": "trellis-leader" },
            "spec": { "holderIdentity": holder, "leaseDurationSeconds": 15 },
        }))
        .unwrap()
    };
    let mine = api
        .create(&PostParams::default(), &lease("a"))
        .await
        .unwrap();
    let taken = api
        .create(&PostParams::default(), &lease("b"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&taken), 409);

    // Renew with the resourceVersion we hold.
    let mut renew = mine.clone();
    renew.spec.as_mut().unwrap().renew_time =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        ));
    let renewed = api
        .replace("trellis-leader", &PostParams::default(), &renew)
        .await
        .unwrap();

    // A competitor holding the old version loses.
    let mut steal = mine.clone();
    steal.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let err = api
        .replace("trellis-leader", &PostParams::default(), &steal)
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 409);

    // The JSON-patch style of acquisition: test the resourceVersion, then replace the holder.
    let acquire = |rv: String| -> json_patch::Patch {
        serde_json::from_value(json!([
            { "op": "test", "path": "/metadata/resourceVersion", "value": rv },
            { "op": "replace", "path": "/spec/holderIdentity", "value": "b" },
        ]))
        .unwrap()
    };
    let err = api
        .patch(
            "trellis-leader",
            &PatchParams::default(),
            &Patch::<()>::Json(acquire(mine.resource_version().unwrap())),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 422);
    let acquired = api
        .patch(
            "trellis-leader",
            &PatchParams::default(),
            &Patch::<()>::Json(acquire(renewed.resource_version().unwrap())),
        )
        .await
        .unwrap();
    assert_eq!(
        acquired.spec.clone().unwrap().holder_identity.as_deref(),
        Some("b")
    );
    // Leases have no status subresource; generation still counts spec changes.
    assert_eq!(acquired.metadata.generation, Some(3));

    // Server-side apply with a resourceVersion (as lease managers do) is an optimistic lock too.
    let apply = |rv: String, holder: &str| {
        Patch::Apply(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": { "name": "trellis-leader", "resourceVersion": rv },
            "spec": { "holderIdentity": holder },
        }))
    };
    let pp = PatchParams::apply("lease-manager").force();
    let err = api
        .patch(
            "trellis-leader",
            &pp,
            &apply(renewed.resource_version().unwrap(), "c"),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 409);
    let applied = api
        .patch(
            "trellis-leader",
            &pp,
            &apply(acquired.resource_version().unwrap(), "c"),
        )
        .await
        .unwrap();
    assert_eq!(applied.spec.unwrap().holder_identity.as_deref(), Some("c"));
}

#[tokio::test]
async fn finalizers_hold_a_deleted_object_until_they_are_removed() {
    let server = server();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let mut cm = config_map("held", &[], "v");
    cm.metadata.finalizers = Some(vec!["trellis.dev/cleanup".into()]);
    api.create(&PostParams::default(), &cm).await.unwrap();
    let deleting = api
        .delete("held", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert!(api.get("held").await.is_ok());
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
    )
    .await
    .unwrap();
    assert_eq!(api_code(&api.get("held").await.unwrap_err()), 404);
}

#[tokio::test]
async fn delete_preconditions_and_generate_name_behave_like_the_real_server() {
    let server = server();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let mut cm = config_map("", &[], "v");
    cm.metadata.name = None;
    cm.metadata.generate_name = Some("gen-".into());
    let created = api.create(&PostParams::default(), &cm).await.unwrap();
    let name = created.name_any();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    let wrong = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    assert_eq!(api_code(&api.delete(&name, &wrong).await.unwrap_err()), 409);
    let right = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: created.metadata.uid.clone(),
            resource_version: created.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    api.delete(&name, &right).await.unwrap();
}

#[tokio::test]
async fn dry_run_writes_answer_without_storing() {
    let server = server();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let rv = server.store().resource_version();
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let answered = api.create(&pp, &config_map("dry", &[], "v")).await.unwrap();
    assert_eq!(answered.name_any(), "dry");
    assert_eq!(api_code(&api.get("dry").await.unwrap_err()), 404);
    assert_eq!(server.store().resource_version(), rv);
}

#[tokio::test]
async fn discovery_finds_builtin_gateway_and_registered_kinds() {
    let server = server();
    let client = server.client();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "34")
    );

    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let gateway = discovery.get("gateway.networking.k8s.io").unwrap();
    assert_eq!(gateway.preferred_version_or_latest(), "v1");
    let kinds: Vec<String> = gateway
        .recommended_resources()
        .into_iter()
        .map(|(ar, _)| ar.kind)
        .collect();
    for k in ["Gateway", "GatewayClass", "HTTPRoute"] {
        assert!(kinds.contains(&k.to_string()), "{kinds:?}");
    }
    assert!(discovery.get("policy.trellis.dev").is_some());
    assert!(discovery.get("coordination.k8s.io").is_some());

    let (ar, caps) = discovery::pinned_kind(
        &client,
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1beta1", "ReferenceGrant"),
    )
    .await
    .unwrap();
    assert_eq!(ar.plural, "referencegrants");
    assert_eq!(caps.scope, discovery::Scope::Namespaced);
}

#[tokio::test]
async fn one_object_is_served_under_every_version_of_its_group() {
    let server = server();
    let client = server.client();
    let v1 = gateway_api(&server, &client, "HTTPRoute", "demo");
    v1.create(&PostParams::default(), &route("r", &["a.example"]))
        .await
        .unwrap();
    let ar = api_resource(&server, "gateway.networking.k8s.io/v1beta1", "HTTPRoute");
    let beta: Api<DynamicObject> = Api::namespaced_with(client, "demo", &ar);
    let got = beta.get("r").await.unwrap();
    assert_eq!(
        got.types.unwrap().api_version,
        "gateway.networking.k8s.io/v1beta1"
    );
}

#[tokio::test]
async fn objects_seeded_from_yaml_keep_their_status() {
    let server = server();
    let n = server
        .load_yaml(
            "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: web, namespace: infra }
spec: { gatewayClassName: trellis, listeners: [] }
status: { addresses: [ { value: 127.0.0.1 } ] }
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: { name: a }
",
        )
        .unwrap();
    assert_eq!(n, 2);
    let gw = gateway_api(&server, &server.client(), "Gateway", "infra")
        .get("web")
        .await
        .unwrap();
    assert_eq!(gw.data["status"]["addresses"][0]["value"], "127.0.0.1");
    let cm: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    assert!(cm.get("a").await.is_ok());
}

#[tokio::test]
async fn token_reviews_accept_a_bound_token_while_its_pod_lives() {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    use k8s_openapi::api::core::v1::Pod;
    let server = server();
    let pods: Api<Pod> = Api::namespaced(server.client(), "shop");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "orders-1" },
        "spec": { "serviceAccountName": "orders", "containers": [{ "name": "app" }] },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let token = server
        .issue_token(
            "shop",
            "orders-1",
            "trellis-ca",
            std::time::Duration::from_secs(600),
        )
        .unwrap();
    let reviews: Api<TokenReview> = Api::all(server.client());
    let review = |token: &str, audience: &str| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: Some(vec![audience.to_string()]),
        },
        ..Default::default()
    };
    let answer = reviews
        .create(&PostParams::default(), &review(&token, "trellis-ca"))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(answer.authenticated, Some(true), "{answer:?}");
    let user = answer.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:shop:orders")
    );
    assert_eq!(
        user.extra.unwrap()[trellis_fake_apiserver::POD_NAME_EXTRA],
        ["orders-1".to_string()]
    );

    // Another audience, an unknown token: not authenticated, with the reason.
    for (token, audience) in [(token.as_str(), "api"), ("forged", "trellis-ca")] {
        let answer = reviews
            .create(&PostParams::default(), &review(token, audience))
            .await
            .unwrap()
            .status
            .unwrap();
        assert_eq!(answer.authenticated, Some(false));
        assert!(answer.error.unwrap().contains("invalid bearer token"));
    }

    // The pod is deleted: its token stops authenticating.
    pods.delete("orders-1", &DeleteParams::default())
        .await
        .unwrap();
    let answer = reviews
        .create(&PostParams::default(), &review(&token, "trellis-ca"))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(answer.authenticated, Some(false));
    assert!(answer.error.unwrap().contains("not found"), "pod gone");
}
