//! The webhook's decisions, and the injected pods read back as Kubernetes types.

use super::*;
use k8s_openapi::api::core::v1::Pod;

const ROOT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn config() -> Config {
    Config::new(
        "ghcr.io/trellis/sidecar:dev",
        "trellis.trellis-system.svc:18000",
        "trellis-system",
        ROOT,
    )
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "generateName": "reviews-", "namespace": "shop" },
        "spec": {
            "serviceAccountName": "reviews",
            "containers": [{ "name": "app", "image": "reviews:1", "ports": [{ "containerPort": 8080 }] }],
        },
    })
}

fn admission(pod: Value, namespace: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": namespace,
            "operation": "CREATE",
            "object": pod,
        },
    }))
    .unwrap()
}

/// The pod after the response's patch, as the API server would store it.
fn patched(pod: &Value, response: &Value) -> Value {
    let patch = response["response"]["patch"].as_str().expect("a patch");
    assert_eq!(response["response"]["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    out
}

fn meshed(ns: &str) -> Option<bool> {
    match ns {
        "shop" => Some(true),
        "plain" => Some(false),
        _ => None,
    }
}

#[test]
fn a_pod_in_a_labelled_namespace_gets_the_capture_init_container_and_a_native_sidecar() {
    let pod = pod();
    let (response, decision) = review(&admission(pod.clone(), "shop"), meshed, &config()).unwrap();
    assert!(matches!(decision, Decision::Inject { .. }));
    assert_eq!(response["response"]["allowed"], true);
    assert_eq!(
        response["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    let injected = patched(&pod, &response);
    println!(
        "the injected pod:\n{}",
        serde_json::to_string_pretty(&injected).unwrap()
    );
    // Read back as the Kubernetes type: k8s-openapi refuses unknown or mistyped fields.
    let typed: Pod = serde_json::from_value(injected.clone()).unwrap();
    let spec = typed.spec.unwrap();
    let init = spec.init_containers.unwrap();
    let names: Vec<&str> = init.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, [CAPTURE_CONTAINER, PROXY_CONTAINER]);

    let capture = &init[0];
    let caps = capture
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    assert_eq!(
        caps.add.as_deref().unwrap(),
        ["NET_ADMIN".to_string(), "NET_RAW".to_string()]
    );
    assert_eq!(capture.restart_policy, None, "runs once, to completion");
    let args = capture.args.as_ref().unwrap();
    assert_eq!(args[0], "capture");
    assert!(args.contains(&"15020,15021,15090".to_string()), "{args:?}");

    let proxy = &init[1];
    assert_eq!(
        proxy.restart_policy.as_deref(),
        Some("Always"),
        "native sidecar"
    );
    let security = proxy.security_context.as_ref().unwrap();
    assert_eq!(security.run_as_user, Some(1337));
    assert_eq!(security.run_as_group, Some(1337));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let startup = proxy
        .startup_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(startup.path.as_deref(), Some("/ready"));
    assert_eq!(
        startup.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15020)
    );
    let env: BTreeMap<String, String> = proxy
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| {
            let from = e
                .value_from
                .as_ref()
                .and_then(|f| f.field_ref.as_ref())
                .map(|f| f.field_path.clone());
            (e.name.clone(), from.or(e.value.clone()).unwrap_or_default())
        })
        .collect();
    assert_eq!(env["POD_NAME"], "metadata.name");
    assert_eq!(env["POD_NAMESPACE"], "metadata.namespace");
    assert_eq!(env["POD_IP"], "status.podIP");
    assert_eq!(env["TRELLIS_ROOT_CERT_PEM"], ROOT);
    let args = proxy.args.as_ref().unwrap();
    assert_eq!(args[0], "agent");
    let after = |flag: &str| {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1].clone()
    };
    assert_eq!(after("--pod"), "$(POD_NAMESPACE)/$(POD_NAME)");
    assert_eq!(
        after("--token-file"),
        "/var/run/secrets/trellis/tokens/token"
    );
    assert_eq!(after("--ca-address"), "trellis.trellis-system.svc:18000");
    let resources = proxy.resources.as_ref().unwrap();
    assert_eq!(resources.requests.as_ref().unwrap()["cpu"].0, "100m");
    assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "1Gi");

    let volumes = spec.volumes.unwrap();
    let run = volumes.iter().find(|v| v.name == "trellis-run").unwrap();
    assert_eq!(
        run.empty_dir.as_ref().unwrap().medium.as_deref(),
        Some("Memory")
    );
    let token = volumes.iter().find(|v| v.name == "trellis-token").unwrap();
    let projected = token.projected.as_ref().unwrap().sources.as_ref().unwrap();
    let sa_token = projected[0].service_account_token.as_ref().unwrap();
    assert_eq!(sa_token.audience.as_deref(), Some(TOKEN_AUDIENCE));
    assert_eq!(
        typed.metadata.labels.unwrap()[INJECTED_LABEL],
        "true".to_string()
    );
    // The app's own container is untouched.
    assert_eq!(spec.containers.len(), 1);
    assert_eq!(spec.containers[0].name, "app");

    // Idempotent: the webhook invoked again on the injected pod changes nothing.
    let (again, decision) = review(&admission(injected, "shop"), meshed, &config()).unwrap();
    assert!(again["response"].get("patch").is_none());
    assert_eq!(
        decision,
        Decision::Skip("the pod already has Trellis's sidecar".into())
    );
}

#[test]
fn the_pods_own_init_containers_volumes_and_labels_are_kept_and_run_after_capture() {
    let mut pod = pod();
    pod["metadata"]["labels"] = json!({ "app": "reviews" });
    pod["spec"]["initContainers"] = json!([{ "name": "migrate", "image": "migrate:1" }]);
    pod["spec"]["volumes"] = json!([{ "name": "data", "emptyDir": {} }]);
    let (response, _) = review(&admission(pod.clone(), "shop"), meshed, &config()).unwrap();
    let injected = patched(&pod, &response);
    let typed: Pod = serde_json::from_value(injected).unwrap();
    let spec = typed.spec.unwrap();
    let names: Vec<String> = spec
        .init_containers
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, [CAPTURE_CONTAINER, PROXY_CONTAINER, "migrate"]);
    let volumes: Vec<String> = spec.volumes.unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(volumes, ["data", "trellis-run", "trellis-token"]);
    let labels = typed.metadata.labels.unwrap();
    assert_eq!(labels["app"], "reviews");
    assert_eq!(labels[INJECTED_LABEL], "true");
}

#[test]
fn pods_that_must_not_be_injected_are_allowed_unchanged_with_the_reason() {
    let mut opted_out = pod();
    opted_out["metadata"]["annotations"] = json!({ "trellis.dev/sidecar": "false" });
    let mut host = pod();
    host["spec"]["hostNetwork"] = json!(true);
    let cases = [
        (opted_out, "shop", "opts out"),
        (pod(), "trellis-system", "never injected"),
        (pod(), "kube-system", "never injected"),
        (pod(), "plain", "not in the mesh"),
        (host, "shop", "host's network"),
    ];
    for (pod, namespace, why) in cases {
        let (response, decision) = review(&admission(pod, namespace), meshed, &config()).unwrap();
        let Decision::Skip(reason) = decision else {
            panic!("{namespace}: injected")
        };
        println!("{namespace}: {reason}");
        assert!(reason.contains(why), "{reason}");
        assert_eq!(response["response"]["allowed"], true);
        assert!(response["response"].get("patch").is_none());
        assert_eq!(response["response"]["status"]["message"], reason);
    }
    // A namespace the control plane has not seen yet: the webhook's namespaceSelector sent it.
    let (_, decision) = review(&admission(pod(), "new-team"), meshed, &config()).unwrap();
    assert!(matches!(decision, Decision::Inject { .. }));
    // Not a Pod creation.
    let mut update: Value = serde_json::from_slice(&admission(pod(), "shop")).unwrap();
    update["request"]["operation"] = json!("UPDATE");
    let (_, decision) = review(&serde_json::to_vec(&update).unwrap(), meshed, &config()).unwrap();
    assert!(matches!(decision, Decision::Skip(r) if r.contains("only Pod creations")));
}

#[test]
fn malformed_requests_are_errors_not_panics() {
    let no_uid = {
        let mut r: Value = serde_json::from_slice(&admission(pod(), "shop")).unwrap();
        r["request"]["uid"] = json!("");
        serde_json::to_vec(&r).unwrap()
    };
    let object_not_a_pod = {
        let mut r: Value = serde_json::from_slice(&admission(pod(), "shop")).unwrap();
        r["request"]["object"] = json!("pod");
        serde_json::to_vec(&r).unwrap()
    };
    let cases: [(&[u8], &str); 5] = [
        (b"{not json", "key must be a string"),
        (br#"{"apiVersion":"v1","kind":"Pod"}"#, "AdmissionReview"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            "no request",
        ),
        (&no_uid, "uid"),
        (&object_not_a_pod, "not a Pod"),
    ];
    for (body, says) in cases {
        let e = review(body, meshed, &config()).unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }
    let huge = vec![b' '; MAX_REVIEW_BYTES + 1];
    assert_eq!(
        review(&huge, meshed, &config()).unwrap_err(),
        InjectError::TooLarge
    );
}

#[test]
fn annotations_size_the_sidecar_and_a_bad_one_is_a_warning() {
    let mut pod = pod();
    pod["metadata"]["annotations"] = json!({
        "trellis.dev/proxy-cpu": "250m",
        "trellis.dev/proxy-memory-limit": "512Mi",
        "trellis.dev/proxy-memory": "lots",
    });
    let (response, _) = review(&admission(pod.clone(), "shop"), meshed, &config()).unwrap();
    let warnings = response["response"]["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].as_str().unwrap().contains("proxy-memory"));
    let typed: Pod = serde_json::from_value(patched(&pod, &response)).unwrap();
    let proxy = typed.spec.unwrap().init_containers.unwrap()[1].clone();
    let resources = proxy.resources.unwrap();
    let requests = resources.requests.unwrap();
    assert_eq!(requests["cpu"].0, "250m");
    assert_eq!(requests["memory"].0, "128Mi", "the bad value is ignored");
    assert_eq!(resources.limits.unwrap()["memory"].0, "512Mi");
}

#[test]
fn quantities() {
    for q in ["100m", "0.5", "128Mi", "1G", "2", "1e3", "1.5Gi"] {
        assert!(is_quantity(q), "{q}");
    }
    for q in ["", "lots", "1.2.3", "-1", "Mi", "1 Gi", "1e", "12XB"] {
        assert!(!is_quantity(q), "{q}");
    }
}
