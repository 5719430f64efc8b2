//! MeshServices with real proxies: a client reaches a MeshService's port through an outbound
//! `backendRef`, on the inbounds the MeshService selects (by tags, and by the inbound's name as
//! its `targetPort`), only from instances proving an identity it lists; the API shows its
//! virtual IP, hostname and proxies; its YAML applies again.

mod common;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use common::{ControlPlane, apps, free_port, mesh::Proxy};
use serde_json::Value;

const MESH: &str = "type: Mesh\nname: lab\nmtls:\n  enabledBackend: ca\n  backends:\n  - name: ca\n    type: builtin\n---\ntype: MeshTrafficPermission\nmesh: lab\nname: client-calls-all\nspec:\n  targetRef: {kind: Mesh}\n  from:\n  - targetRef: {kind: MeshService, name: client}\n    default: {action: Allow}\n";

/// The MeshService `db`: port 7000 reaches the inbound named `main` of every dataplane tagged
/// `app: db`, served with the SVID of `identity`.
fn mesh_service(identity: &str) -> String {
    format!(
        "type: MeshService\nmesh: lab\nname: db\nspec:\n  selector:\n    dataplaneTags: {{app: db}}\n  ports:\n  - port: 7000\n    targetPort: main\n    appProtocol: http\n  identities:\n  - type: ServiceTag\n    value: {identity}\n"
    )
}

/// A Dataplane `name` of `service` tagged `app: db`, its inbound named `main` in front of `app`.
fn server(name: &str, service: &str, app: u16) -> String {
    format!(
        "type: Dataplane\nmesh: lab\nname: {name}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    name: main\n    servicePort: {app}\n    tags: {{kuma.io/service: {service}, app: db, kuma.io/protocol: http}}\n",
        free_port()
    )
}

/// Waits (up to 30 s) until the client's destination for `db:7000` has `n` endpoints.
fn wait_endpoints(client: &Proxy, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let config = client.config();
        let endpoints = config["config"]["services"]["meshservice/db:7000"]["endpoints"].as_array().map_or(0, Vec::len);
        if endpoints == n {
            return;
        }
        assert!(Instant::now() < deadline, "db:7000 has {endpoints} endpoints, not {n}, after 30s: {config}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The applications that answered 20 calls through the outbound on `port`.
async fn answered_by(port: u16) -> BTreeSet<String> {
    let client = common::http_client();
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        let response = client.get(format!("http://127.0.0.1:{port}/")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        seen.insert(body["service"].as_str().unwrap().to_string());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mesh_service_port_reaches_the_selected_inbounds_that_prove_its_identity() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.apply(MESH);
    cp.apply(&mesh_service("db"));
    let a = apps::http_echo(([127, 0, 0, 1], 0).into(), "db-a").await;
    let b = apps::http_echo(([127, 0, 0, 1], 0).into(), "db-b").await;
    let c = apps::http_echo(([127, 0, 0, 1], 0).into(), "intruder").await;
    let port = free_port();
    let client_yaml = format!(
        "type: Dataplane\nmesh: lab\nname: client-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    tags: {{kuma.io/service: client}}\n  outbound:\n  - port: {port}\n    backendRef: {{kind: MeshService, name: db, port: 7000}}\n",
        free_port()
    );
    let proxies = [
        cp.spawn_proxy(root.path(), "db-1", &server("db-1", "db", a.address.port()), &[]),
        cp.spawn_proxy(root.path(), "db-2", &server("db-2", "db", b.address.port()), &[]),
        cp.spawn_proxy(root.path(), "intruder-1", &server("intruder-1", "intruder", c.address.port()), &[]),
        cp.spawn_proxy(root.path(), "client-1", &client_yaml, &[]),
    ];
    let client = &proxies[3];
    tokio::task::block_in_place(|| {
        proxies.iter().for_each(Proxy::wait_ready);
        // The intruder is selected by its tags but proves another identity: never an endpoint.
        wait_endpoints(client, 2);
    });
    assert_eq!(answered_by(port).await, BTreeSet::from(["db-a".to_string(), "db-b".to_string()]));

    let shown: Value =
        serde_json::from_str(&cp.ward(&["get", "meshservice", "db", "-m", "lab", "-o", "json"]).ok()).unwrap();
    let status = &shown["status"];
    assert_eq!(status["state"], "Available", "{shown}");
    assert_eq!(status["addresses"][0]["hostname"], "db.svc.mesh.local");
    assert!(status["vips"][0]["ip"].as_str().is_some_and(|ip| ip.starts_with("240.")), "{shown}");
    assert_eq!(status["dataplaneProxies"], serde_json::json!({"total": 3, "connected": 3, "healthy": 3}));
    let table = cp.ward(&["get", "meshservices", "-m", "lab"]).ok();
    assert!(table.lines().any(|l| l.contains("db") && l.contains("7000/http") && l.contains("3/3")), "{table}");
    // What `ward get -o yaml` prints (status included) applies again.
    let yaml = cp.ward(&["get", "meshservice", "db", "-m", "lab", "-o", "yaml"]).ok();
    cp.ward_stdin(&["apply", "-f", "-"], &yaml).ok();

    // Listing the other identity moves the traffic to the instance that proves it.
    cp.apply(&mesh_service("intruder"));
    tokio::task::block_in_place(|| wait_endpoints(client, 1));
    assert_eq!(answered_by(port).await, BTreeSet::from(["intruder".to_string()]));
}

/// The MeshServices of mesh `lab` as `ward get` lists them: name and whether generated.
fn listed(cp: &ControlPlane) -> Vec<(String, bool)> {
    let list: Value = serde_json::from_str(&cp.ward(&["get", "meshservices", "-m", "lab", "-o", "json"]).ok()).unwrap();
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let generated = |item: &Value| item["labels"]["kuma.io/managed-by"] == "meshservice-generator";
    items.iter().map(|i| (i["name"].as_str().unwrap_or_default().to_string(), generated(i))).collect()
}

/// Waits (up to 30 s) until `ward get meshservices` lists `want`.
fn wait_listed(cp: &ControlPlane, want: &[(&str, bool)]) {
    let want: Vec<(String, bool)> = want.iter().map(|(n, g)| (n.to_string(), *g)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = listed(cp);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "MeshServices {got:?}, not {want:?}, after 30s\n{}", cp.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_mesh_services_mode_has_the_control_plane_generate_one_per_service_tag() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.apply("type: Mesh\nname: lab\nmeshServices:\n  mode: Everywhere\n");
    cp.apply(&server("db-1", "db", free_port()));
    wait_listed(&cp, &[("db", true)]);
    let shown: Value =
        serde_json::from_str(&cp.ward(&["get", "meshservice", "db", "-m", "lab", "-o", "json"]).ok()).unwrap();
    assert_eq!(shown["spec"]["selector"]["dataplaneTags"]["kuma.io/service"], "db", "{shown}");
    assert_eq!(shown["spec"]["ports"][0]["name"], "main", "named after the inbound: {shown}");
    assert_eq!(shown["spec"]["ports"][0]["appProtocol"], "http", "{shown}");

    cp.ward(&["delete", "dataplane", "db-1", "-m", "lab"]).ok();
    wait_listed(&cp, &[]);
    cp.apply(&server("db-1", "db", free_port()));
    wait_listed(&cp, &[("db", true)]);
    cp.apply("type: Mesh\nname: lab\nmeshServices:\n  mode: Disabled\n");
    wait_listed(&cp, &[]);
}
