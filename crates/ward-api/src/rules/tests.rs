use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::{Resource, parse};

fn load(yaml: &str) -> Vec<Resource> {
    parse::documents(yaml)
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, d)| parse::resource(d, &format!("document {}", i + 1)).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

const DATAPLANE: &str = "type: Dataplane\nmesh: m\nname: web-1\nlabels: {team: shop}\nnetworking:\n  address: 10.0.0.1\n  \
    inbound:\n  - port: 8080\n    name: main\n    tags: {kuma.io/service: web}\n  - port: 9090\n    name: admin\n    \
    tags: {kuma.io/service: web-admin}\n";

fn timeout(name: &str, spec: &str) -> String {
    format!("---\ntype: MeshTimeout\nmesh: m\nname: {name}\nspec:\n{spec}")
}

fn service(name: &str) -> Destination {
    Destination {
        key: name.into(),
        kind: SERVICE.into(),
        name: name.into(),
        sections: Vec::new(),
        labels: BTreeMap::new(),
    }
}

fn rules_of(policies: &str, destinations: &[Destination]) -> DataplaneRules {
    let dp = load(DATAPLANE).remove(0);
    compute(&load(policies), &dp, destinations)
}

fn outbound<'a>(rules: &'a DataplaneRules, key: &str) -> &'a Merged {
    let found = rules.outbounds.iter().find(|o| o.destination.key == key);
    &found.unwrap_or_else(|| panic!("no rules for {key}: {rules:?}")).policies["MeshTimeout"]
}

#[test]
fn a_more_specific_top_level_kind_applies_later_and_overrides_only_what_it_sets() {
    let policies = timeout(
        "mesh-wide",
        "  targetRef: {kind: Mesh}\n  to:\n  - targetRef: {kind: Mesh}\n    default: {idleTimeout: 1h, http: {requestTimeout: 10s}}\n",
    ) + &timeout(
        "for-web",
        "  targetRef: {kind: MeshService, name: web}\n  to:\n  - targetRef: {kind: Mesh}\n    default: {http: {requestTimeout: 2s}}\n",
    );
    let rules = rules_of(&policies, &[service("backend")]);
    let merged = outbound(&rules, "backend");
    assert_eq!(merged.conf, json!({"idleTimeout": "1h", "http": {"requestTimeout": "2s"}}));
    assert_eq!(merged.origins, ["mesh-wide", "for-web"]);
}

#[test]
fn at_equal_kind_the_name_that_sorts_first_wins() {
    let policies = timeout("b", "  to:\n  - targetRef: {kind: Mesh}\n    default: {idleTimeout: 2m}\n")
        + &timeout("a", "  to:\n  - targetRef: {kind: Mesh}\n    default: {idleTimeout: 1m}\n");
    let rules = rules_of(&policies, &[service("backend")]);
    assert_eq!(outbound(&rules, "backend").conf, json!({"idleTimeout": "1m"}));
    assert_eq!(outbound(&rules, "backend").origins, ["b", "a"]);
}

#[test]
fn a_to_entry_naming_the_destination_beats_a_mesh_wide_one() {
    let policies = timeout(
        "t",
        "  to:\n  - targetRef: {kind: MeshService, name: backend}\n    default: {connectionTimeout: 2s}\n  \
         - targetRef: {kind: Mesh}\n    default: {connectionTimeout: 9s}\n",
    );
    let rules = rules_of(&policies, &[service("backend"), service("other")]);
    assert_eq!(outbound(&rules, "backend").conf, json!({"connectionTimeout": "2s"}));
    assert_eq!(outbound(&rules, "other").conf, json!({"connectionTimeout": "9s"}));
}

#[test]
fn a_mesh_service_port_is_named_by_section() {
    let policies = timeout(
        "t",
        "  to:\n  - targetRef: {kind: MeshService, name: backend, sectionName: http}\n    default: {connectionTimeout: 2s}\n  \
         - targetRef: {kind: MeshService, name: backend}\n    default: {connectionTimeout: 3s, idleTimeout: 5m}\n",
    );
    let port = |key: &str, section: &str| Destination {
        key: key.into(),
        kind: "MeshService".into(),
        name: "backend".into(),
        sections: vec![section.into()],
        labels: BTreeMap::new(),
    };
    let rules = rules_of(&policies, &[port("backend-http", "http"), port("backend-grpc", "grpc")]);
    assert_eq!(outbound(&rules, "backend-http").conf, json!({"connectionTimeout": "2s", "idleTimeout": "5m"}));
    assert_eq!(outbound(&rules, "backend-grpc").conf, json!({"connectionTimeout": "3s", "idleTimeout": "5m"}));
}

#[test]
fn a_policy_for_another_service_or_mesh_is_not_applied() {
    let policies = timeout(
        "t",
        "  targetRef: {kind: MeshService, name: billing}\n  to:\n  - targetRef: {kind: Mesh}\n    default: {idleTimeout: 1m}\n",
    ) + "---\ntype: MeshTimeout\nmesh: other\nname: o\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    default: {idleTimeout: 1m}\n";
    let rules = rules_of(&policies, &[service("backend")]);
    assert!(rules.outbounds.is_empty(), "{rules:?}");
}

#[test]
fn inbound_rules_follow_the_section_a_dataplane_reference_names() {
    let policies = timeout("all", "  rules:\n  - default: {idleTimeout: 1h, http: {requestTimeout: 15s}}\n")
        + &timeout(
            "admin",
            "  targetRef: {kind: Dataplane, labels: {team: shop}, sectionName: admin}\n  rules:\n  - default: {http: {requestTimeout: 1s}}\n",
        );
    let rules = rules_of(&policies, &[]);
    let conf = |i: usize| rules.inbound(i, ResourceType::MeshTimeout).cloned();
    assert_eq!(conf(0), Some(json!({"idleTimeout": "1h", "http": {"requestTimeout": "15s"}})));
    assert_eq!(conf(1), Some(json!({"idleTimeout": "1h", "http": {"requestTimeout": "1s"}})));
    assert_eq!(rules.inbounds[1].policies["MeshTimeout"].origins, ["all", "admin"]);
}

#[test]
fn from_entries_for_the_whole_mesh_configure_every_inbound() {
    let rules = rules_of(&timeout("f", "  from:\n  - targetRef: {kind: Mesh}\n    default: {idleTimeout: 30s}\n"), &[]);
    assert_eq!(rules.inbound(0, ResourceType::MeshTimeout), Some(&json!({"idleTimeout": "30s"})));
    assert_eq!(rules.inbound(1, ResourceType::MeshTimeout), Some(&json!({"idleTimeout": "30s"})));
}

#[test]
fn merge_patches_objects_field_by_field_and_replaces_lists() {
    let mut conf = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x"});
    merge_patch(&mut conf, &json!({"a": {"c": [3], "e": true}, "d": null}));
    assert_eq!(conf, json!({"a": {"b": 1, "c": [3], "e": true}}));
}

#[test]
fn kuma_validator_rules_and_the_kinds_ward_cannot_serve() {
    let cases = [
        (
            "  to:\n  - targetRef: {kind: Mesh}\n    default: {}\n",
            "spec.to[0].default: at least one timeout should be configured",
        ),
        ("  targetRef: {kind: Mesh}\n", "spec: at least one of 'from', 'to' or 'rules' has to be defined"),
        (
            "  rules:\n  - default: {idleTimeout: 1s}\n  to:\n  - targetRef: {kind: Mesh}\n    default: {idleTimeout: 1s}\n",
            "spec: fields 'to' and 'from' must be empty when 'rules' is defined",
        ),
        (
            "  to:\n  - targetRef: {kind: Mesh}\n    default: {connectionTimeout: 0s}\n",
            "spec.to[0].default.connectionTimeout: must be greater than zero",
        ),
        (
            "  to:\n  - targetRef: {kind: Mesh}\n    default: {http: {}}\n",
            "spec.to[0].default.http: at least one timeout",
        ),
        (
            "  from:\n  - targetRef: {kind: MeshService, name: a}\n    default: {idleTimeout: 1s}\n",
            "spec.from[0].targetRef.kind: must be one of Mesh",
        ),
        (
            "  to:\n  - targetRef: {kind: MeshHTTPRoute, name: r}\n    default: {idleTimeout: 1s}\n",
            "spec.to[0].targetRef.kind: is valid Kuma but not supported",
        ),
        (
            "  targetRef: {kind: MeshGateway, name: g}\n  to:\n  - targetRef: {kind: Mesh}\n    default: {idleTimeout: 1s}\n",
            "spec.targetRef.kind: is valid Kuma but not supported",
        ),
        (
            "  to:\n  - targetRef: {kind: Mesh}\n    default: {http: {requestHeadersTimeout: 1s}}\n",
            "spec.to[0].default.http.requestHeadersTimeout: is valid Kuma but not supported",
        ),
        (
            "  rules:\n  - matches: [{spiffeID: {type: Exact, value: 'spiffe://m/a'}}]\n    default: {http: {requestTimeout: 1s}}\n",
            "spec.rules[0].matches: is valid Kuma but not supported",
        ),
        ("  to:\n  - targetRef: {kind: Mesh}\n    default: {idleTimeout: -1s}\n", "spec.to[0].default.idleTimeout"),
    ];
    for (spec, want) in cases {
        let doc = parse::documents(&timeout("t", spec)).unwrap().remove(0);
        let err = parse::resource(doc, "document 1").expect_err(spec).to_string();
        assert!(err.contains(want), "{spec}\nwant {want}\ngot {err}");
    }
}

fn http_route(name: &str, top: &str, rules: &str) -> String {
    format!(
        "---\ntype: MeshHTTPRoute\nmesh: m\nname: {name}\nspec:\n  targetRef: {top}\n  to:\n  \
         - targetRef: {{kind: MeshService, name: backend}}\n    rules:\n{rules}"
    )
}

#[test]
fn routes_merge_by_matches_and_order_the_most_specific_match_first() {
    let policies = http_route(
        "mesh-wide",
        "{kind: Mesh}",
        "    - matches: [{path: {type: PathPrefix, value: /}}]\n      default: {backendRefs: [{kind: MeshService, name: backend}]}\n\
         \x20   - matches: [{path: {type: PathPrefix, value: /api}}]\n      default:\n        \
         filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: mesh}]}}]\n        \
         backendRefs: [{kind: MeshService, name: backend}]\n",
    ) + &http_route(
        "for-web",
        "{kind: MeshService, name: web}",
        "    - matches: [{path: {type: PathPrefix, value: /api}}]\n      default: {backendRefs: [{kind: MeshService, name: other, weight: 3}]}\n\
         \x20   - matches: [{path: {type: Exact, value: /api}}, {method: GET}]\n      default: {}\n",
    );
    let rules = rules_of(&policies, &[service("backend"), service("other")]);
    let found = rules.outbounds.iter().find(|o| o.destination.key == "backend").unwrap();
    let merged = &found.policies["MeshHTTPRoute"];
    assert_eq!(merged.origins, ["mesh-wide", "for-web"]);
    let table: routes::HttpRoutes = serde_json::from_value(merged.conf.clone()).unwrap();
    let summary: Vec<(String, String, String)> = table
        .routes
        .iter()
        .map(|r| (serde_json::to_string(&r.matches).unwrap(), r.backends[0].key.clone(), r.origin.clone()))
        .collect();
    let m = |s: &str| s.to_string();
    assert_eq!(
        summary,
        [
            (m(r#"{"path":{"type":"Exact","value":"/api"}}"#), m("backend"), m("for-web")),
            (m(r#"{"path":{"type":"PathPrefix","value":"/api"}}"#), m("other"), m("for-web")),
            (m(r#"{"path":{"type":"PathPrefix","value":"/"}}"#), m("backend"), m("mesh-wide")),
            (m(r#"{"method":"GET"}"#), m("backend"), m("for-web")),
        ]
    );
    // Equal matches merged: the more specific policy's backends, the other's filters.
    assert_eq!(table.routes[1].backends[0].weight, 3);
    assert_eq!(table.routes[1].filters.len(), 1);
}

#[test]
fn a_route_with_a_backend_nobody_knows_is_reported_and_not_applied() {
    let policies = http_route(
        "half",
        "{kind: Mesh}",
        "    - matches: [{path: {type: PathPrefix, value: /}}]\n      default:\n        \
         backendRefs: [{kind: MeshService, name: backend}, {kind: MeshService, name: nowhere}]\n",
    );
    let rules = rules_of(&policies, &[service("backend")]);
    let found = rules.outbounds.iter().find(|o| o.destination.key == "backend").unwrap();
    let table: routes::HttpRoutes = serde_json::from_value(found.policies["MeshHTTPRoute"].conf.clone()).unwrap();
    assert!(table.routes.is_empty());
    assert_eq!(
        table.unresolved,
        ["half: not applied: backendRef MeshService/nowhere: no such service reachable from this dataplane"]
    );
}

#[test]
fn mesh_opa_policies_append_their_modules_each_with_its_origin() {
    let opa = |name: &str, top: &str, package: &str, status: u16| {
        format!(
            "---\ntype: MeshOPA\nmesh: m\nname: {name}\nspec:\n  targetRef: {top}\n  default:\n    \
             authConfig: {{statusOnError: {status}}}\n    appendPolicies:\n    - rego:\n        \
             inlineString: \"package {package}\\ndefault allow = true\\n\"\n"
        )
    };
    let policies = opa("narrow", "{kind: Dataplane, name: web-1}", "b", 503) + &opa("wide", "{kind: Mesh}", "a", 401);
    let conf = rules_of(&policies, &[]).inbound(0, ResourceType::MeshOPA).cloned().unwrap();
    let origins: Vec<&str> =
        conf["appendPolicies"].as_array().unwrap().iter().map(|p| p["origin"].as_str().unwrap()).collect();
    assert_eq!(origins, ["wide", "narrow"], "{conf}");
    assert_eq!(conf["authConfig"]["statusOnError"], 503, "the more specific policy's field wins");
}
