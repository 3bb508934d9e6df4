//! Unit tests of the coverage rules behind TRL0130, TRL0109, TRL0167 and TRL0138.

use crate::policy::rule_covers;
use crate::routes::covers;
use trellis_model::policy::AuthorizationRule;
use trellis_translate::ir::{MatchIr, Method, PathMatchIr, StringMatchIr, ValueMatchIr};

fn prefix(p: &str) -> MatchIr {
    MatchIr {
        path: PathMatchIr::Prefix(p.to_string()),
        headers: Vec::new(),
        query_params: Vec::new(),
        method: None,
    }
}

fn header(name: &str, value: &str) -> StringMatchIr {
    StringMatchIr {
        name: name.to_string(),
        value: ValueMatchIr::Exact(value.to_string()),
    }
}

#[test]
fn a_prefix_covers_paths_below_it_at_element_boundaries_only() {
    assert!(covers(&prefix("/"), &prefix("/anything")));
    assert!(covers(&prefix("/api"), &prefix("/api/v2")));
    assert!(covers(&prefix("/api/"), &prefix("/api")));
    assert!(!covers(&prefix("/api"), &prefix("/apiary")));
    assert!(!covers(&prefix("/api/v2"), &prefix("/api")));
    let exact = MatchIr {
        path: PathMatchIr::Exact("/api/x".to_string()),
        ..prefix("/")
    };
    assert!(covers(&prefix("/api"), &exact));
    assert!(!covers(&exact, &prefix("/api/x")));
}

#[test]
fn conditions_the_earlier_match_adds_must_all_be_in_the_later_one() {
    let get = MatchIr {
        method: Some(Method::Get),
        ..prefix("/")
    };
    let get_tagged = MatchIr {
        headers: vec![header("x-tag", "a")],
        ..get.clone()
    };
    assert!(covers(&get, &get_tagged), "fewer conditions cover more");
    assert!(!covers(&get_tagged, &get), "a header narrows");
    assert!(!covers(&get, &prefix("/")), "a method narrows");
    let other_value = MatchIr {
        headers: vec![header("x-tag", "b")],
        ..get.clone()
    };
    assert!(!covers(&get_tagged, &other_value));
    let regex = MatchIr {
        path: PathMatchIr::Regex("/a.*".to_string()),
        ..prefix("/")
    };
    assert!(covers(&regex, &regex.clone()));
    assert!(
        !covers(&regex, &prefix("/a")),
        "expressions are compared only as equal"
    );
}

fn rule(json: serde_json::Value) -> AuthorizationRule {
    serde_json::from_value(json).unwrap()
}

#[test]
fn a_policy_rule_is_dead_only_when_an_earlier_rule_matches_all_it_would() {
    let admin = rule(serde_json::json!({
        "name": "a", "action": "Deny", "paths": [{"type": "Prefix", "value": "/admin"}]
    }));
    let admin_ops = rule(serde_json::json!({
        "name": "b", "action": "Allow", "paths": [{"type": "Prefix", "value": "/admin/x"}],
        "headers": [{"name": "X-Team", "values": ["ops"]}]
    }));
    assert!(rule_covers(&admin, &admin_ops));
    assert!(!rule_covers(&admin_ops, &admin));
    let ops_or_dev = rule(serde_json::json!({
        "name": "c", "action": "Allow", "headers": [{"name": "x-team", "values": ["ops", "dev"]}]
    }));
    let ops = rule(serde_json::json!({
        "name": "d", "action": "Allow", "headers": [{"name": "x-team", "values": ["ops"]}]
    }));
    assert!(rule_covers(&ops_or_dev, &ops));
    assert!(!rule_covers(&ops, &ops_or_dev));
    let any_team = rule(serde_json::json!({
        "name": "e", "action": "Allow", "principals": ["spiffe://cluster.local/ns/team/*"]
    }));
    let one = rule(serde_json::json!({
        "name": "f", "action": "Deny", "principals": ["spiffe://cluster.local/ns/team/sa/x"]
    }));
    assert!(rule_covers(&any_team, &one));
    assert!(!rule_covers(&one, &any_team));
    let get = rule(serde_json::json!({"name": "g", "action": "Deny", "methods": ["get"]}));
    let get_post =
        rule(serde_json::json!({"name": "h", "action": "Deny", "methods": ["GET", "POST"]}));
    assert!(rule_covers(&get_post, &get));
    assert!(!rule_covers(&get, &get_post));
}

#[test]
fn proxies_on_another_envoy_release_or_silent_about_it_are_reported() {
    let found = crate::proxy_builds(&[
        (
            "gateway/a/web".to_string(),
            Some("envoy/1.40.2".to_string()),
        ),
        ("pod/a/old".to_string(), Some("envoy/1.38.0".to_string())),
        ("pod/a/quiet".to_string(), None),
        ("pod/a/other".to_string(), Some("envoy/1.400.0".to_string())),
    ]);
    let names: Vec<&str> = found.iter().map(|f| f.object.name.as_str()).collect();
    assert_eq!(names, ["pod/a/old", "pod/a/other", "pod/a/quiet"]);
    assert!(
        found[0].message.contains("envoy/1.38.0"),
        "{}",
        found[0].message
    );
}

#[test]
fn a_certificate_name_covers_a_hostname_as_tls_clients_judge_it() {
    use crate::tls::certificate_covers;
    assert!(certificate_covers("app.example.test", "app.example.test"));
    assert!(certificate_covers("*.example.test", "app.example.test"));
    assert!(certificate_covers("*.example.test", "*.example.test"));
    assert!(
        !certificate_covers("*.example.test", "a.b.example.test"),
        "one label only"
    );
    assert!(!certificate_covers("*.example.test", "example.test"));
    assert!(!certificate_covers("app.example.test", "*.example.test"));
    assert!(!certificate_covers("*.other.test", "app.example.test"));
}
