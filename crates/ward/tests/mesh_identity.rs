//! MeshIdentity and MeshTrust through real proxies: workloads get the SPIFFE IDs the templates
//! render, signed by the MeshIdentity's CA; peers check them and permissions match them; a
//! MeshTrust admits callers of another trust domain by their own CA, for their domain only; and
//! a mesh never issues identities both ways.

mod common;

use std::time::{Duration, Instant};

use common::{
    mtls::{TestCa, mtls_get},
    policy_lab::{Extras, Lab},
};

/// Mesh `lab` without `mtls`, one MeshIdentity for every dataplane with a generated CA, and
/// `client` allowed by its SPIFFE ID.
const IDENTITY_MESH: &str = "type: Mesh\nname: lab\n---\ntype: MeshIdentity\nmesh: lab\nname: everyone\nspec:\n  \
     selector:\n    dataplane:\n      matchLabels: {}\n  provider:\n    type: Bundled\n    bundled:\n      \
     autogenerate: {enabled: true}\n      insecureAllowSelfSigned: true\n---\ntype: MeshTrafficPermission\nmesh: lab\nname: client-calls-web\nspec:\n  \
     targetRef: {kind: Mesh}\n  rules:\n  - default:\n      allow:\n      - spiffeID: {type: Exact, value: \
     'spiffe://lab.default.mesh.local/workload/client'}\n";

const CLIENT_ID: &str = "spiffe://lab.default.mesh.local/workload/client";

/// Waits until `seen` holds of what `proxy` shows at /config.
#[track_caller]
fn wait_config(proxy: &common::mesh::Proxy, what: &str, seen: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let config = proxy.config();
        if seen(&config) {
            return;
        }
        assert!(Instant::now() < deadline, "{} never had {what}: {config}", proxy.name);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The port of the first inbound of the proxy's Dataplane.
fn inbound_port(proxy: &common::mesh::Proxy) -> u16 {
    let config = proxy.config();
    config["config"]["dataplane"]["networking"]["inbound"][0]["port"].as_u64().expect("an inbound port") as u16
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workloads_carry_the_rendered_ids_and_permissions_match_them() {
    let lab = Lab::start_with(Extras { mesh: Some(IDENTITY_MESH), ..Extras::default() }).await;
    tokio::task::block_in_place(|| {
        wait_config(&lab.client, "its workload certificate", |c| c["certificate"]["spiffeId"] == CLIENT_ID);
        wait_config(&lab.web, "its workload certificate", |c| {
            c["certificate"]["spiffeId"] == "spiffe://lab.default.mesh.local/workload/web"
        });
    });
    let config = tokio::task::block_in_place(|| lab.client.config());
    assert_eq!(config["certificate"]["backend"], "meshidentity/everyone", "{config}");
    assert_eq!(config["config"]["mode"], "Strict", "a MeshIdentity means mutual TLS: {config}");

    let http = common::http_client();
    let answer = http.get(lab.url("/hello")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let seen: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(seen["headers"]["x-ward-peer-identity"], CLIENT_ID, "{seen}");

    // The permission names the client by its new ID; denying that ID denies it.
    let deny = "type: MeshTrafficPermission\nmesh: lab\nname: client-calls-web\nspec:\n  targetRef: {kind: Mesh}\n  \
                rules:\n  - default:\n      deny:\n      - spiffeID: {type: Prefix, value: \
                'spiffe://lab.default.mesh.local/workload/'}\n";
    lab.cp.apply(deny);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = http.get(lab.url("/hello")).send().await.unwrap().status();
        if status == 403 {
            break;
        }
        assert!(Instant::now() < deadline, "still {status} after the deny");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = lab.cp.ward(&["get", "meshidentities", "-m", "lab"]).ok();
    assert!(listed.contains("everyone"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mesh_trust_admits_another_domain_by_its_own_ca_and_for_its_own_ids_only() {
    let lab = Lab::start_with(Extras { mesh: Some(IDENTITY_MESH), ..Extras::default() }).await;
    let inbound = tokio::task::block_in_place(|| inbound_port(&lab.web));
    let partner_ca = TestCa::new("partner.example");
    let partner = || partner_ca.issue("spiffe://partner.example/workload/billing");
    let before = mtls_get(inbound, Some(partner())).await;
    assert!(before.is_err(), "web's proxy does not know the partner's CA yet: {before:?}");

    let pem = partner_ca.material.cert_pem.replace('\n', "\n          ");
    let trust = format!(
        "type: MeshTrust\nmesh: lab\nname: partner\nspec:\n  trustDomain: partner.example\n  caBundles:\n  - type: Pem\n    \
         pem:\n      value: |\n          {pem}\n---\ntype: MeshTrafficPermission\nmesh: lab\nname: partner-calls-web\n\
         spec:\n  targetRef: {{kind: Mesh}}\n  rules:\n  - default:\n      allow:\n      - spiffeID: {{type: Exact, \
         value: 'spiffe://partner.example/workload/billing'}}\n"
    );
    lab.cp.apply(&trust);
    tokio::task::block_in_place(|| {
        wait_config(&lab.web, "the partner's trust domain", |c| {
            c["config"]["bundle"].to_string().contains("partner.example")
        })
    });
    assert_eq!(mtls_get(inbound, Some(partner())).await.as_deref(), Ok("HTTP/1.1 200 OK"));
    // The partner's CA vouches for its own domain only, never for one of this mesh's workloads.
    let forged = mtls_get(inbound, Some(partner_ca.issue(CLIENT_ID))).await;
    assert!(forged.is_err(), "a foreign CA naming our client is refused: {forged:?}");

    // A MeshTrust whose bundle is not a CA certificate is refused at apply, naming the field.
    let bad = "type: MeshTrust\nmesh: lab\nname: broken\nspec:\n  trustDomain: other.example\n  caBundles:\n  - type: Pem\n    \
               pem: {value: not a certificate}\n";
    let refused = lab.cp.ward_stdin(&["apply", "-f", "-"], bad).fails();
    assert!(refused.contains("spec.caBundles[0].pem.value"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mesh_uses_either_mtls_backends_or_mesh_identities() {
    let lab = Lab::start_with(Extras { mesh: Some(IDENTITY_MESH), ..Extras::default() }).await;
    let with_mtls =
        "type: Mesh\nname: lab\nmtls:\n  enabledBackend: ca\n  backends:\n  - name: ca\n    type: builtin\n";
    let refused = lab.cp.ward_stdin(&["apply", "-f", "-"], with_mtls).fails();
    assert!(refused.contains("mtls.enabledBackend") && refused.contains("MeshIdentity"), "{refused}");

    let root = tempfile::tempdir().unwrap();
    let other = common::ControlPlane::start(root.path());
    other.apply(with_mtls);
    let identity = "type: MeshIdentity\nmesh: lab\nname: everyone\nspec:\n  selector:\n    dataplane:\n      \
                    matchLabels: {}\n  provider:\n    type: Bundled\n    bundled:\n      autogenerate: {enabled: true}\n      \
                    insecureAllowSelfSigned: true\n";
    let refused = other.ward_stdin(&["apply", "-f", "-"], identity).fails();
    assert!(refused.contains("mtls.enabledBackend first"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workload_label_the_token_does_not_vouch_for_gets_no_certificate() {
    let lab = Lab::start_with(Extras { mesh: Some(IDENTITY_MESH), ..Extras::default() }).await;
    let root = tempfile::tempdir().unwrap();
    // A dataplane of service `web` whose label claims to be the client's workload.
    let yaml = format!(
        "type: Dataplane\nmesh: lab\nname: sneaky-1\nlabels: {{kuma.io/workload: client}}\nnetworking:\n  \
         address: 127.0.0.1\n  inbound:\n  - port: {}\n    servicePort: {}\n    tags: {{kuma.io/service: web}}\n",
        common::free_port(),
        common::free_port()
    );
    let sneaky = lab.cp.spawn_proxy(root.path(), "sneaky-1", &yaml, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = tokio::task::block_in_place(|| sneaky.log());
        if log.contains("is not a service the dataplane token is for") {
            break;
        }
        assert!(Instant::now() < deadline, "no refusal logged:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let config = tokio::task::block_in_place(|| sneaky.config());
    assert!(config["certificate"].is_null(), "no certificate was installed: {config}");
}

#[test]
fn a_provided_ca_given_inline_is_sealed_and_a_self_signed_one_needs_consent() {
    let root = tempfile::tempdir().unwrap();
    let cp = common::ControlPlane::start(root.path());
    cp.apply("type: Mesh\nname: lab\n");
    let ca = TestCa::new("lab.default.mesh.local");
    let indent = |pem: &str| pem.replace('\n', "\n              ");
    let identity = |consent: &str| {
        format!(
            "type: MeshIdentity\nmesh: lab\nname: ours\nspec:\n  selector:\n    dataplane:\n      matchLabels: {{}}\n  \
             provider:\n    type: Bundled\n    bundled:\n{consent}      ca:\n        certificate:\n          \
             type: InsecureInline\n          insecureInline:\n            value: |\n              {}\n        \
             privateKey:\n          type: InsecureInline\n          insecureInline:\n            value: |\n              {}\n",
            indent(&ca.material.cert_pem),
            indent(&ca.material.key_pem)
        )
    };
    let refused = cp.ward_stdin(&["apply", "-f", "-"], &identity("")).fails();
    assert!(refused.contains("spec.provider.bundled.insecureAllowSelfSigned"), "{refused}");
    cp.ward_stdin(&["apply", "-f", "-"], &identity("      insecureAllowSelfSigned: true\n")).ok();
    let stored = cp.ward(&["get", "meshidentity", "ours", "-m", "lab", "-o", "yaml"]).ok();
    assert!(!stored.contains("PRIVATE KEY"), "the key is never shown: {stored}");
    assert!(stored.contains("mesh-ca/lab/meshidentity/ours"), "{stored}");
    // What `ward get` shows applies again unchanged, and the sealed key stays usable.
    cp.ward_stdin(&["apply", "-f", "-"], &stored).ok();
}
