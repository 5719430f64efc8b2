use serde_json::{Value, json};

use super::*;
use crate::{Spec, parse};

fn mesh_service(spec: Value) -> MeshService {
    let doc = json!({"type": "MeshService", "mesh": "m", "name": "db", "spec": spec});
    match parse::resource(doc, "test").unwrap().spec {
        Spec::MeshService(s) => s,
        other => panic!("{other:?}"),
    }
}

fn dataplane(inbounds: Value) -> Dataplane {
    let doc = json!({"type": "Dataplane", "mesh": "m", "name": "db-1",
        "networking": {"address": "10.0.0.1", "inbound": inbounds}});
    match parse::resource(doc, "test").unwrap().spec {
        Spec::Dataplane(d) => d,
        other => panic!("{other:?}"),
    }
}

#[test]
fn selectors_pick_dataplanes_by_inbound_tags_name_or_labels() {
    let dp = dataplane(json!([
        {"port": 7000, "tags": {"kuma.io/service": "db", "app": "db"}},
        {"port": 7001, "tags": {"kuma.io/service": "db-admin", "tier": "admin"}},
    ]));
    let labels = [("team".to_string(), "data".to_string())].into();
    let cases = [
        (json!({"dataplaneTags": {"app": "db"}}), true),
        (json!({"dataplaneTags": {"tier": "admin"}}), true),
        (json!({"dataplaneTags": {"app": "db", "tier": "admin"}}), false),
        (json!({"dataplaneRef": {"name": "db-1"}}), true),
        (json!({"dataplaneRef": {"name": "db-2"}}), false),
        (json!({"dataplaneLabels": {"matchLabels": {"team": "data"}}}), true),
        (json!({"dataplaneLabels": {"matchLabels": {"team": "web"}}}), false),
        (json!({}), false),
    ];
    for (selector, want) in cases {
        let ms = mesh_service(json!({ "selector": selector }));
        assert_eq!(ms.selects("db-1", &labels, &dp), want, "{selector}");
    }
}

#[test]
fn a_port_reaches_the_inbound_its_target_port_names_with_an_allowed_identity() {
    let dp = dataplane(json!([
        {"port": 7000, "name": "main", "tags": {"kuma.io/service": "db"}},
        {"port": 7001, "name": "admin", "tags": {"kuma.io/service": "db-admin"}},
    ]));
    /// A port, the MeshService's identities, and the inbound port and service it reaches.
    type Case = (Value, Value, Option<(u16, &'static str)>);
    let cases: &[Case] = &[
        (json!({"port": 7000}), Value::Null, Some((7000, "db"))),
        (json!({"port": 80, "targetPort": 7001}), Value::Null, Some((7001, "db-admin"))),
        (json!({"port": 80, "targetPort": "main"}), Value::Null, Some((7000, "db"))),
        (json!({"port": 80, "targetPort": "nothing"}), Value::Null, None),
        (json!({"port": 80}), Value::Null, None),
        (json!({"port": 7000}), json!([{"type": "ServiceTag", "value": "db"}]), Some((7000, "db"))),
        (json!({"port": 7001}), json!([{"type": "ServiceTag", "value": "db"}]), None),
        (json!({"port": 7000}), json!([{"type": "SpiffeID", "value": "spiffe://m/db"}]), Some((7000, "db"))),
        (json!({"port": 7000}), json!([{"type": "SpiffeID", "value": "spiffe://other/db"}]), None),
    ];
    for (port, identities, want) in cases {
        let mut spec = json!({"selector": {"dataplaneRef": {"name": "db-1"}}, "ports": [port]});
        if !identities.is_null() {
            spec["identities"] = identities.clone();
        }
        let ms = mesh_service(spec);
        let got = ms.instance("m", &ms.ports[0], &dp).map(|i| (i.inbound.port.0, i.service));
        assert_eq!(got, *want, "{port} {identities}");
    }
}

#[test]
fn fields_ward_computes_or_carries_as_tcp_are_warned() {
    let doc = json!({"type": "MeshService", "mesh": "m", "name": "db", "spec": {"state": "Available",
        "ports": [{"port": 1, "appProtocol": "http"}, {"port": 2, "appProtocol": "kafka"}, {"port": 3, "appProtocol": "mysql"}]}});
    let warned: Vec<String> = parse::resource(doc, "test").unwrap().warnings().into_iter().map(|c| c.field).collect();
    assert_eq!(warned, ["spec.state", "spec.ports[1].appProtocol", "spec.ports[2].appProtocol"]);
}

#[test]
fn bad_fields_are_refused_where_they_are() {
    let cases = [
        (json!({"ports": [{"port": 1}, {"port": 1}]}), "spec.ports[1].port"),
        (json!({"ports": [{"port": 0}]}), "spec.ports[0].port"),
        (json!({"ports": [{"port": 1, "targetPort": 70000}]}), "spec.ports[0].targetPort"),
        (json!({"ports": [{"port": 1, "targetPort": ""}]}), "spec.ports[0].targetPort"),
        (json!({"selector": {"dataplaneRef": {"name": ""}}}), "spec.selector.dataplaneRef.name"),
        (json!({"selector": {"dataplaneTags": {"app": "a b"}}}), "spec.selector.dataplaneTags.app"),
        (json!({"identities": [{"type": "SpiffeID", "value": "db"}]}), "spec.identities[0].value"),
        (json!({"identities": [{"type": "ServiceTag", "value": "a/b"}]}), "spec.identities[0].value"),
        (json!({"selector": {"tags": {"app": "db"}}}), "spec.selector.tags"),
    ];
    for (spec, field) in cases {
        let doc = json!({"type": "MeshService", "mesh": "m", "name": "db", "spec": spec});
        let err = parse::resource(doc, "test").unwrap_err();
        assert!(err.causes.iter().any(|c| c.field == field), "{spec}: {err}");
    }
    let status = json!({"type": "MeshService", "mesh": "m", "name": "db", "spec": {}, "status": "up"});
    assert_eq!(parse::resource(status, "test").unwrap_err().causes[0].field, "status");
}
