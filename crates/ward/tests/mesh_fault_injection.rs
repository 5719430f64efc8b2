//! MeshFaultInjection through two real proxies: the callee's proxy aborts, delays or slows
//! the share of requests the policy says, and nothing at percentage 0.

mod common;

use std::time::{Duration, Instant};

use common::{ControlPlane, apps, free_port, mesh::Proxy};

const MESH: &str = "type: Mesh\nname: lab\nmtls:\n  enabledBackend: ca\n  backends:\n  - name: ca\n    type: builtin\n---\ntype: MeshTrafficPermission\nmesh: lab\nname: client-calls-web\nspec:\n  targetRef: {kind: Mesh}\n  from:\n  - targetRef: {kind: MeshService, name: client}\n    default: {action: Allow}\n";

/// A control plane, the `web` echo application behind its proxy, and a `client` proxy with an
/// outbound to web on the returned port.
struct Lab {
    _root: tempfile::TempDir,
    cp: ControlPlane,
    _app: apps::App,
    web: Proxy,
    _client: Proxy,
    outbound: u16,
}

impl Lab {
    async fn start() -> Lab {
        let root = tempfile::tempdir().unwrap();
        let cp = ControlPlane::start(root.path());
        cp.apply(MESH);
        let app = apps::http_echo(([127, 0, 0, 1], free_port()).into(), "web").await;
        let web_yaml = format!(
            "type: Dataplane\nmesh: lab\nname: web-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    \
             servicePort: {}\n    tags: {{kuma.io/service: web, kuma.io/protocol: http}}\n",
            free_port(),
            app.address.port()
        );
        let outbound = free_port();
        let client_yaml = format!(
            "type: Dataplane\nmesh: lab\nname: client-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    \
             tags: {{kuma.io/service: client}}\n  outbound:\n  - port: {outbound}\n    tags: {{kuma.io/service: web}}\n",
            free_port()
        );
        let web = cp.spawn_proxy(root.path(), "web-1", &web_yaml, &[]);
        let client = cp.spawn_proxy(root.path(), "client-1", &client_yaml, &[]);
        tokio::task::block_in_place(|| {
            web.wait_ready();
            client.wait_ready();
        });
        Lab { _root: root, cp, _app: app, web, _client: client, outbound }
    }

    /// Applies `policy` and waits until `proxy` runs with a configuration where `seen` holds.
    async fn apply(&self, policy: &str, proxy: &Proxy, seen: impl Fn(&serde_json::Value) -> bool) {
        self.cp.apply(policy);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let config = tokio::task::block_in_place(|| proxy.config());
            if seen(&config["config"]["rules"]) {
                return;
            }
            assert!(Instant::now() < deadline, "the proxy never received the policy: {}", config["config"]["rules"]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.outbound)
    }
}

/// Whether the first inbound's MeshFaultInjection mentions `text`.
fn inbound_has(rules: &serde_json::Value, text: &str) -> bool {
    rules["inbounds"][0]["policies"]["MeshFaultInjection"]["conf"].to_string().contains(text)
}

fn policy(fault: &str) -> String {
    format!(
        "type: MeshFaultInjection\nmesh: lab\nname: faults\nspec:\n  targetRef: {{kind: MeshService, name: web}}\n  \
         from:\n  - targetRef: {{kind: Mesh}}\n    default:\n      http:\n      - {fault}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abort_for_every_request_answers_its_status_and_percentage_0_answers_none() {
    let lab = Lab::start().await;
    let http = common::http_client();
    lab.apply(&policy("abort: {httpStatus: 503, percentage: 100}"), &lab.web, |r| inbound_has(r, "503")).await;
    for _ in 0..5 {
        let response = http.get(lab.url("/")).send().await.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.text().await.unwrap(), "fault filter abort");
    }
    let shown = lab.cp.ward(&["inspect", "dataplane", "web-1", "-m", "lab", "--rules"]).ok();
    assert!(shown.contains("MeshFaultInjection (from faults)"), "{shown}");

    // Half of them, as a decimal in a string.
    lab.apply(&policy("abort: {httpStatus: 500, percentage: '50.5'}"), &lab.web, |r| inbound_has(r, "50.5")).await;
    let mut aborted = 0;
    for _ in 0..100 {
        match http.get(lab.url("/")).send().await.unwrap().status().as_u16() {
            500 => aborted += 1,
            200 => {}
            other => panic!("answered {other}"),
        }
    }
    assert!((20..=80).contains(&aborted), "{aborted} of 100 aborted at 50.5%");

    let zero = "abort: {httpStatus: 503, percentage: 0}\n        delay: {value: 5s, percentage: 0}";
    lab.apply(&policy(zero), &lab.web, |r| inbound_has(r, "5s")).await;
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(http.get(lab.url("/")).send().await.unwrap().status(), 200);
    }
    assert!(started.elapsed() < Duration::from_secs(4), "no delay at 0%: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delay_holds_every_request_for_its_value() {
    let lab = Lab::start().await;
    lab.apply(&policy("delay: {value: 1s, percentage: 100}"), &lab.web, |r| inbound_has(r, "1s")).await;
    let http = common::http_client();
    for _ in 0..2 {
        let started = Instant::now();
        let response = http.get(lab.url("/")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(5), "answered after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_response_bandwidth_slows_a_large_body_to_its_limit() {
    let lab = Lab::start().await;
    let http = common::http_client();
    let started = Instant::now();
    let body = http.get(lab.url("/bytes?n=20480")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(body.len(), 20480);
    assert!(started.elapsed() < Duration::from_secs(1), "quick without the policy: {:?}", started.elapsed());

    // 10kbps is Envoy's 10 KiB a second: 20 KiB take two seconds.
    lab.apply(&policy("responseBandwidth: {limit: 10kbps, percentage: 100}"), &lab.web, |r| inbound_has(r, "10kbps"))
        .await;
    let started = Instant::now();
    let response = http.get(lab.url("/bytes?n=20480")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    let took = started.elapsed();
    assert_eq!(body.len(), 20480);
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(8), "took {took:?}");
}
