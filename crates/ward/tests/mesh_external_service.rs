//! MeshExternalServices with a real proxy, in a mesh without passthrough: an application reaches
//! an HTTPS server outside the mesh through an outbound naming the MeshExternalService (by name
//! or by its labels), the proxy originating TLS with the CA and server name the resource gives;
//! only while a MeshTrafficPermission lets its service through; never to a server its CA does not
//! vouch for.

mod common;

use std::time::{Duration, Instant};

use common::{ControlPlane, TestPki, apps, free_port, mesh::Proxy, yaml_block};
use serde_json::Value;

const MESH: &str = "type: Mesh\nname: lab\nmtls:\n  enabledBackend: ca\n  backends:\n  - name: ca\n    type: builtin\nnetworking:\n  outbound:\n    passthrough: false\n";

/// The MeshExternalService `pay` (labelled `team: payments`): HTTP at `port`, TLS to
/// `pay.example` vouched for by `ca_pem`.
fn pay(port: u16, ca_pem: &str) -> String {
    format!(
        "type: MeshExternalService\nmesh: lab\nname: pay\nlabels: {{team: payments}}\nspec:\n  match:\n    port: 443\n    protocol: http\n  endpoints:\n  - address: 127.0.0.1\n    port: {port}\n  tls:\n    enabled: true\n    verification:\n      serverName: pay.example\n      caCert:\n        inlineString: |\n{}",
        yaml_block(ca_pem, 10)
    )
}

/// A MeshTrafficPermission letting `service` reach `pay`.
fn permission(service: &str) -> String {
    format!(
        "type: MeshTrafficPermission\nmesh: lab\nname: to-pay\nspec:\n  targetRef: {{kind: MeshExternalService, name: pay}}\n  from:\n  - targetRef: {{kind: MeshService, name: {service}}}\n    default: {{action: Allow}}\n"
    )
}

/// Waits (up to 30 s) until the proxy's configuration of `pay` is denied (`Some(reason part)`)
/// or allowed (`None`).
fn wait_decision(proxy: &Proxy, denied: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let config = proxy.config();
        let pay = &config["config"]["external"]["meshexternalservice/pay"];
        let reason = pay["denied"].as_str();
        let done = match denied {
            Some(part) => reason.is_some_and(|r| r.contains(part)),
            None => !pay.is_null() && reason.is_none(),
        };
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "pay is not {denied:?} after 30s: {config}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A GET through the outbound on `port`: the echoed request, or the error.
async fn call(port: u16) -> Result<Value, String> {
    let response = common::http_client()
        .get(format!("http://127.0.0.1:{port}/invoices"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()));
    }
    response.json().await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mesh_external_service_is_reached_over_verified_tls_only_when_a_permission_allows_it() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    let pki = TestPki::new("pay-ca");
    let server = apps::https_echo(([127, 0, 0, 1], 0).into(), "pay", &pki.server(&["pay.example"])).await;
    cp.apply(MESH);
    cp.apply(&pay(server.address.port(), &pki.ca_pem));
    let (outbound, by_labels) = (free_port(), free_port());
    let web = format!(
        "type: Dataplane\nmesh: lab\nname: web-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    tags: {{kuma.io/service: web}}\n  outbound:\n  - port: {outbound}\n    backendRef: {{kind: MeshExternalService, name: pay}}\n  - port: {by_labels}\n    backendRef: {{kind: MeshExternalService, labels: {{team: payments}}}}\n",
        free_port()
    );
    let proxy = cp.spawn_proxy(root.path(), "web-1", &web, &[]);
    tokio::task::block_in_place(|| {
        proxy.wait_ready();
        wait_decision(&proxy, Some("no MeshTrafficPermission"));
    });
    let refused = call(outbound).await;
    assert!(refused.is_err(), "no permission, no way out: {refused:?}");
    let explain = ["explain", "pay", "--external", "--caller", "web", "-m", "lab"];
    assert_eq!(cp.ward(&explain).ok().trim(), "Deny (no permission matches)");

    cp.apply(&permission("web"));
    assert_eq!(cp.ward(&explain).ok().trim(), "Allow by MeshTrafficPermission/to-pay");
    let missing = cp.ward(&["explain", "gone", "--external", "--caller", "web", "-m", "lab"]).fails();
    assert!(missing.contains("meshexternalservices/gone not found"), "{missing}");
    tokio::task::block_in_place(|| wait_decision(&proxy, None));
    let echoed = call(outbound).await.unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert_eq!(echoed["service"], "pay");
    assert_eq!(echoed["path"], "/invoices");
    assert_eq!(echoed["headers"]["x-test-sni"], "pay.example", "the resource's server name is sent: {echoed}");
    let echoed = call(by_labels).await.unwrap_or_else(|e| panic!("the outbound by labels: {e}\n{}", proxy.log()));
    assert_eq!(echoed["service"], "pay");

    let shown: Value =
        serde_json::from_str(&cp.ward(&["get", "meshexternalservice", "pay", "-m", "lab", "-o", "json"]).ok()).unwrap();
    assert_eq!(shown["status"]["addresses"][0]["hostname"], "pay.extsvc.mesh.local", "{shown}");
    assert!(shown["status"]["vip"]["ip"].as_str().is_some_and(|ip| ip.starts_with("240.")), "{shown}");
    let table = cp.ward(&["get", "meshexternalservices", "-m", "lab"]).ok();
    assert!(table.lines().any(|l| l.contains("pay") && l.contains("443/http")), "{table}");
    // What `ward get -o yaml` prints (status included) applies again.
    let yaml = cp.ward(&["get", "meshexternalservice", "pay", "-m", "lab", "-o", "yaml"]).ok();
    cp.ward_stdin(&["apply", "-f", "-"], &yaml).ok();

    // A permission for another service closes the way again.
    cp.apply(&permission("billing"));
    tokio::task::block_in_place(|| wait_decision(&proxy, Some("no MeshTrafficPermission")));
    assert!(call(outbound).await.is_err(), "web is no longer let through");

    // A server the given CA does not vouch for is refused.
    cp.apply(&permission("web"));
    cp.apply(&pay(server.address.port(), &TestPki::new("other-ca").ca_pem));
    tokio::task::block_in_place(|| wait_decision(&proxy, None));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let result = call(outbound).await;
        if result.is_err() && proxy.log().contains("invalid peer certificate: UnknownIssuer") {
            break;
        }
        assert!(Instant::now() < deadline, "a server of another CA still answers: {result:?}\n{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
