use serde_json::{Value, json};

use super::*;
use crate::{Resource, ResourceType, Spec, parse};

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUYWJj\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEG\n-----END PRIVATE KEY-----\n";

fn doc(name: &str, spec: Value) -> Value {
    json!({"type": "MeshExternalService", "mesh": "m", "name": name, "spec": spec})
}

fn parsed(spec: Value) -> Result<Resource, crate::ValidationError> {
    parse::resource(doc("pay", spec), "test")
}

fn external(spec: Value) -> MeshExternalService {
    match parsed(spec).unwrap_or_else(|e| panic!("{e}")).spec {
        Spec::MeshExternalService(s) => s,
        other => panic!("{other:?}"),
    }
}

fn warnings_of(spec: Value) -> Vec<(String, String)> {
    let resource = parsed(spec).unwrap_or_else(|e| panic!("{e}"));
    resource.warnings().into_iter().map(|c| (c.field, c.message)).collect()
}

/// The fields of the causes of a refusal.
fn refused_at(spec: Value) -> Vec<String> {
    let err = parsed(spec).expect_err("must be refused");
    err.causes.into_iter().map(|c| c.field).collect()
}

fn minimal() -> Value {
    json!({"match": {"port": 443}, "endpoints": [{"address": "pay.example", "port": 443}]})
}

fn with_tls(tls: Value) -> Value {
    let mut spec = minimal();
    spec["tls"] = tls;
    spec
}

#[test]
fn the_type_is_registered_under_its_names() {
    for word in
        ["meshexternalservices", "meshexternalservice", "extsvc", "mesh-external-services", "MeshExternalService"]
    {
        assert_eq!(ResourceType::from_word(word), Some(ResourceType::MeshExternalService), "{word}");
    }
    let info = ResourceType::MeshExternalService.info();
    assert!(info.has_spec_field && ResourceType::MeshExternalService.is_mesh_scoped());
    assert_eq!(ResourceType::from_plural("meshexternalservices"), Some(ResourceType::MeshExternalService));
}

#[test]
fn defaults_and_typed_fields() {
    let mes = external(json!({
        "match": {"port": 8080, "protocol": "http2"},
        "endpoints": [
            {"address": "10.0.0.1", "port": 80},
            {"address": "backup.example", "port": 8443, "priority": 2},
        ],
    }));
    assert_eq!((mes.port(), mes.protocol()), (8080, Protocol::Http2));
    let endpoints = mes.endpoints();
    assert_eq!(endpoints[0].ip(), Some("10.0.0.1".parse().unwrap()));
    assert_eq!((endpoints[0].priority(), endpoints[1].priority()), (0, 2));
    assert_eq!(endpoints[1].ip(), None);
    assert!(mes.tls().is_none(), "no tls: plaintext");

    let mes = external(json!({"match": {"port": 80}, "endpoints": [{"address": "a.example", "port": 80}]}));
    assert_eq!(mes.protocol(), Protocol::Tcp);
    assert_eq!(mes.r#match.ty, None);

    let mes = external(with_tls(json!({"enabled": true, "verification": {"subjectAltNames": [{"value": "a"}]}})));
    let verification = mes.verification().unwrap();
    assert_eq!(verification.mode(), VerificationMode::Secured);
    assert_eq!(verification.subject_alt_names.as_ref().unwrap()[0].ty, SanMatchType::Exact);
    let tls = mes.tls().unwrap();
    assert_eq!((tls.min_version(), tls.max_version()), (TlsVersion::Tls12, TlsVersion::Tls13));
    let disabled = external(with_tls(json!({"verification": {"mode": "SkipAll"}})));
    assert!(disabled.tls().is_none() && disabled.verification().is_none());
}

#[test]
fn names_hostname_and_destination() {
    assert_eq!(hostname("pay"), "pay.extsvc.mesh.local");
    assert_eq!(destination("pay"), "meshexternalservice/pay");
    let long = "a".repeat(MAX_NAME_LEN + 1);
    let err = parse::resource(doc(&long, minimal()), "test").unwrap_err();
    assert_eq!(err.causes[0].field, "name", "{err}");
    assert!(parse::resource(doc(&"b".repeat(MAX_NAME_LEN), minimal()), "test").is_ok());
}

#[test]
fn status_is_ignored_on_input_and_output_reads_back() {
    let mut input = doc("pay", minimal());
    input["status"] = json!({"vip": {"ip": "240.0.0.1"}, "addresses": [{"hostname": "pay.extsvc.mesh.local"}]});
    let resource = parse::resource(input.clone(), "test").unwrap();
    assert_eq!(parse::resource(resource.to_json(), "again").unwrap(), resource);
    input["status"] = json!("up");
    let err = parse::resource(input, "test").unwrap_err();
    assert_eq!(err.causes[0].field, "status");

    let full = with_tls(json!({
        "enabled": true,
        "version": {"min": "TLS12", "max": "TLSAuto"},
        "verification": {"mode": "SkipSAN", "serverName": "pay.example", "subjectAltNames": [{"type": "Prefix", "value": "pay"}],
            "caCert": {"inlineString": CERT}, "clientCert": {"secret": "client"}, "clientKey": {"secret": "client-key"}},
    }));
    let resource = parsed(full).unwrap();
    assert_eq!(parse::resource(resource.to_json(), "again").unwrap(), resource);
}

#[test]
fn invalid_documents_are_refused_at_the_field() {
    let cases: Vec<(Value, &str)> = vec![
        (json!({"endpoints": []}), "spec.match"),
        (json!({"match": {}}), "spec.match.port"),
        (json!({"match": {"port": 0}}), "spec.match.port"),
        (json!({"match": {"port": 70000}}), "spec.match.port"),
        (json!({"match": {"port": 80, "type": "Other"}}), "spec.match.type"),
        (json!({"match": {"port": 80, "protocol": "kafka"}}), "spec.match.protocol"),
        (json!({"match": {"port": 80}, "endpoints": [{"address": "a.example"}]}), "spec.endpoints[0].port"),
        (json!({"match": {"port": 80}, "endpoints": [{"port": 80}]}), "spec.endpoints[0].address"),
        (json!({"match": {"port": 80}, "endpoints": [{"address": "", "port": 80}]}), "spec.endpoints[0].address"),
        (
            json!({"match": {"port": 80}, "endpoints": [{"address": "not[]valid", "port": 80}]}),
            "spec.endpoints[0].address",
        ),
        (
            json!({"match": {"port": 80}, "endpoints": [{"address": "a.example", "port": 80, "priority": 129}]}),
            "spec.endpoints[0].priority",
        ),
        (json!({"match": {"port": 80}, "extension": {"config": {"x": 1}}}), "spec.extension.type"),
        (with_tls(json!({"version": {"min": "TLS13", "max": "TLS12"}})), "spec.tls.version.min"),
        (with_tls(json!({"version": {"min": "TLS15"}})), "spec.tls.version.min"),
        (with_tls(json!({"verification": {"serverName": "not[]valid"}})), "spec.tls.verification.serverName"),
        (with_tls(json!({"verification": {"mode": "Unknown"}})), "spec.tls.verification.mode"),
        (
            with_tls(json!({"verification": {"subjectAltNames": [{"type": "Regex", "value": "x"}]}})),
            "spec.tls.verification.subjectAltNames[0].type",
        ),
        (
            with_tls(json!({"verification": {"subjectAltNames": [{"type": "Prefix", "value": ""}]}})),
            "spec.tls.verification.subjectAltNames[0].value",
        ),
        (with_tls(json!({"verification": {"clientCert": {"secret": "c"}}})), "spec.tls.verification.clientKey"),
        (with_tls(json!({"verification": {"clientKey": {"secret": "c"}}})), "spec.tls.verification.clientCert"),
        (with_tls(json!({"verification": {"caCert": {"inline": "%%%"}}})), "spec.tls.verification.caCert.inline"),
        (with_tls(json!({"verification": {"caCert": {"secret": "a/b"}}})), "spec.tls.verification.caCert.secret"),
        (
            with_tls(json!({"verification": {"caCert": {"secret": "a", "inline": "dGVzdA=="}}})),
            "spec.tls.verification.caCert",
        ),
        (with_tls(json!({"renegotiate": true})), "spec.tls.renegotiate"),
    ];
    for (spec, field) in cases {
        let fields = refused_at(spec.clone());
        assert!(fields.iter().any(|f| f == field), "{spec}: wanted {field}, got {fields:?}");
    }
    let err = parsed(with_tls(json!({"version": {"min": "TLS13", "max": "TLS12"}}))).unwrap_err();
    assert_eq!(err.causes[0].message, "min version must be lower than max");
    let err = parsed(with_tls(json!({"verification": {"clientCert": {"secret": "c"}}}))).unwrap_err();
    assert_eq!(err.causes[0].message, "must be defined when clientCert is defined");
}

#[test]
fn a_file_source_is_refused_with_its_reason() {
    for field in ["caCert", "clientCert", "clientKey"] {
        let mut verification = json!({"clientCert": {"inlineString": CERT}, "clientKey": {"inlineString": KEY}});
        verification[field] = json!({"file": "/etc/ssl/private/key.pem"});
        let err = parsed(with_tls(json!({"enabled": true, "verification": verification}))).unwrap_err();
        let cause = err.causes.iter().find(|c| c.field == format!("spec.tls.verification.{field}.file"));
        let cause = cause.unwrap_or_else(|| panic!("{err}"));
        assert!(cause.message.contains("filesystem"), "{}", cause.message);
    }
}

#[test]
fn what_ward_cannot_do_is_refused_as_valid_kuma_it_does_not_serve() {
    let mut spec = minimal();
    spec["extension"] = json!({"type": "Lambda", "config": {"arn": "x"}});
    let err = parsed(spec).unwrap_err();
    assert_eq!(err.causes.len(), 1, "{err}");
    assert_eq!(err.causes[0].field, "spec.extension.type");
    let message = &err.causes[0].message;
    assert!(message.starts_with(crate::error::UNSUPPORTED), "{message}");
    assert!(message.contains("no MeshExternalService extensions") && message.contains("endpoints"), "{message}");

    for max in ["TLS10", "TLS11"] {
        let err = parsed(with_tls(json!({"enabled": true, "version": {"max": max}}))).unwrap_err();
        assert_eq!((err.causes.len(), err.causes[0].field.as_str()), (1, "spec.tls.version.max"), "{err}");
        assert!(err.causes[0].message.starts_with(crate::error::UNSUPPORTED), "{err}");
        assert!(err.causes[0].message.contains("1.2 and 1.3"), "{err}");
    }
}

#[test]
fn warnings_name_what_has_no_effect() {
    assert!(warnings_of(minimal()).is_empty());
    assert!(warnings_of(with_tls(json!({"enabled": true, "version": {"min": "TLS12", "max": "TLS13"}}))).is_empty());
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"match": {"port": 80}}), "spec.endpoints", "carries no traffic"),
        (json!({"match": {"port": 80}, "endpoints": []}), "spec.endpoints", "carries no traffic"),
        (with_tls(json!({"enabled": true, "version": {"min": "TLS10"}})), "spec.tls.version.min", "TLS12"),
        (with_tls(json!({"enabled": true, "allowRenegotiation": true})), "spec.tls.allowRenegotiation", "never"),
        (with_tls(json!({"verification": {"mode": "SkipCA"}})), "spec.tls.verification", "no effect"),
        (with_tls(json!({"enabled": false, "version": {"min": "TLS13"}})), "spec.tls.version", "no effect"),
        (
            with_tls(json!({"enabled": true, "verification": {"caCert": {"inline": "dGVzdA=="}}})),
            "spec.tls.verification.caCert.inline",
            "refuse connections",
        ),
        (
            with_tls(json!({"enabled": true, "verification": {"caCert": {"inlineString": KEY}}})),
            "spec.tls.verification.caCert.inlineString",
            "PEM certificate",
        ),
        (
            with_tls(
                json!({"enabled": true, "verification": {"clientCert": {"inlineString": CERT}, "clientKey": {"inlineString": CERT}}}),
            ),
            "spec.tls.verification.clientKey.inlineString",
            "PEM private key",
        ),
    ];
    for (spec, field, part) in cases {
        let warnings = warnings_of(spec.clone());
        assert!(
            warnings.iter().any(|(f, m)| f == field && m.contains(part)),
            "{spec}: wanted {field} ({part}), got {warnings:?}"
        );
    }
    let pem = with_tls(json!({"enabled": true, "verification": {
        "caCert": {"inline": STANDARD.encode(CERT)},
        "clientCert": {"inlineString": CERT},
        "clientKey": {"inlineString": KEY},
    }}));
    assert!(warnings_of(pem).is_empty());
}

#[test]
fn named_secrets_are_listed_with_their_fields() {
    let mes = external(with_tls(json!({"enabled": true, "verification": {
        "caCert": {"secret": "ca"},
        "clientCert": {"inlineString": CERT},
        "clientKey": {"secret": "client-key"},
    }})));
    assert_eq!(
        mes.named_secrets(),
        [
            ("spec.tls.verification.caCert.secret".to_string(), "ca".to_string()),
            ("spec.tls.verification.clientKey.secret".to_string(), "client-key".to_string()),
        ]
    );
    // Named even while TLS is off, so a Secret it names cannot go missing before it is turned on.
    let off = external(with_tls(json!({"verification": {"caCert": {"secret": "ca"}}})));
    assert_eq!(off.named_secrets().len(), 1);
    assert!(external(minimal()).named_secrets().is_empty());
}

#[test]
fn dns_names_and_pem_are_recognised() {
    for good in ["example.com", "a", "my_host.example", "example.com.", "x-1.y"] {
        assert!(is_dns_name(good), "{good}");
    }
    for bad in ["", "not[]valid", "-a.example", "a..b", "1.2.3.4", "::1", &format!("{}.com", "a".repeat(64))] {
        assert!(!is_dns_name(bad), "{bad}");
    }
    assert!(holds_pem(CERT.as_bytes(), PemKind::Certificate));
    assert!(!holds_pem(CERT.as_bytes(), PemKind::PrivateKey));
    assert!(holds_pem(format!("{KEY}{CERT}").as_bytes(), PemKind::Certificate));
    assert!(holds_pem(KEY.as_bytes(), PemKind::PrivateKey));
    assert!(!holds_pem(b"test", PemKind::Certificate));
    assert!(!holds_pem(b"-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n", PemKind::Certificate));
    assert!(!holds_pem(&[0xff, 0xfe], PemKind::Certificate));
}

#[test]
fn the_meshs_switch_for_external_access_warns_only_when_it_would_open_access() {
    let warnings = |routing: Value| -> Vec<(String, String)> {
        let mesh = parse::resource(json!({"type": "Mesh", "name": "m", "routing": routing}), "test").unwrap();
        mesh.warnings().into_iter().map(|c| (c.field, c.message)).collect()
    };
    assert!(warnings(json!({"defaultForbidMeshExternalServiceAccess": true})).is_empty());
    let off = warnings(json!({"defaultForbidMeshExternalServiceAccess": false}));
    assert_eq!(off.len(), 1, "{off:?}");
    assert_eq!(off[0].0, "routing.defaultForbidMeshExternalServiceAccess");
    assert!(off[0].1.contains("MeshTrafficPermission targeting the MeshExternalService"), "{}", off[0].1);
    let zones = warnings(json!({"zoneEgress": false, "localityAwareLoadBalancing": true}));
    assert_eq!(
        zones,
        [(
            "routing.localityAwareLoadBalancing".to_string(),
            "Ward has no zones or zone egress; this has no effect".to_string()
        )]
    );
}
