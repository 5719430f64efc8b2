//! MeshRetry through real proxies: a failing instance is hidden by retries on another one, a
//! body is sent again whole when it was buffered and never when it streamed, and a per-try
//! timeout bounds each try.

mod common;

use std::time::{Duration, Instant};

use common::{ControlPlane, apps, free_port, mesh::Proxy};

const MESH: &str = "type: Mesh\nname: lab\nmtls:\n  enabledBackend: ca\n  backends:\n  - name: ca\n    type: builtin\n---\ntype: MeshTrafficPermission\nmesh: lab\nname: client-calls-web\nspec:\n  targetRef: {kind: Mesh}\n  from:\n  - targetRef: {kind: MeshService, name: client}\n    default: {action: Allow}\n";

fn web_dataplane(name: &str, app_port: u16) -> String {
    format!(
        "type: Dataplane\nmesh: lab\nname: {name}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    \
         servicePort: {app_port}\n    tags: {{kuma.io/service: web, kuma.io/protocol: http}}\n",
        free_port()
    )
}

/// Waits until `proxy` runs with a MeshRetry for some destination.
async fn wait_for_retry(proxy: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let config = tokio::task::block_in_place(|| proxy.config());
        let outbounds = config["config"]["rules"]["outbounds"].to_string();
        if outbounds.contains("MeshRetry") {
            return;
        }
        assert!(Instant::now() < deadline, "the proxy never received the MeshRetry: {outbounds}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_hide_a_broken_instance_and_resend_only_buffered_bodies() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.apply(MESH);
    let app = apps::http_echo(([127, 0, 0, 1], free_port()).into(), "web").await;
    // web-2's application is gone: its proxy answers every request with 502.
    let web1 = cp.spawn_proxy(root.path(), "web-1", &web_dataplane("web-1", app.address.port()), &[]);
    let web2 = cp.spawn_proxy(root.path(), "web-2", &web_dataplane("web-2", free_port()), &[]);
    let outbound = free_port();
    let client_yaml = format!(
        "type: Dataplane\nmesh: lab\nname: client-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    \
         tags: {{kuma.io/service: client}}\n  outbound:\n  - port: {outbound}\n    tags: {{kuma.io/service: web}}\n",
        free_port()
    );
    let client = cp.spawn_proxy(root.path(), "client-1", &client_yaml, &[]);
    tokio::task::block_in_place(|| {
        for p in [&web1, &web2, &client] {
            p.wait_ready();
        }
    });
    let http = common::http_client();
    let url = format!("http://127.0.0.1:{outbound}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    // Both instances take requests: without a retry policy, some fail.
    let mut statuses = Vec::new();
    while !(statuses.contains(&502) && statuses.contains(&200)) {
        assert!(Instant::now() < deadline, "both instances answer: {statuses:?}");
        statuses.push(http.get(&url).send().await.unwrap().status().as_u16());
    }

    cp.apply(
        "type: MeshRetry\nmesh: lab\nname: web-retries\nspec:\n  targetRef: {kind: MeshService, name: client}\n  to:\n  \
         - targetRef: {kind: MeshService, name: web}\n    default:\n      http:\n        numRetries: 3\n        \
         retryOn: [GatewayError]\n        backOff: {baseInterval: 10ms, maxInterval: 50ms}\n        \
         hostSelection: [{predicate: OmitPreviousHosts}]\n",
    );
    wait_for_retry(&client).await;
    for i in 0..20 {
        let response = http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "request {i} was retried on the working instance");
    }
    // A body of known length is buffered, so every try carries it whole.
    for i in 0..6 {
        let response = http.post(&url).body(vec![b'x'; 4000]).send().await.unwrap();
        assert_eq!(response.status(), 200, "POST {i}");
        let echoed: serde_json::Value = response.json().await.unwrap();
        assert_eq!(echoed["bodyBytes"], 4000, "the retried try carried the whole body");
    }
    // A streamed body is never buffered, so it is never retried: one of two goes to web-2.
    let mut streamed = Vec::new();
    for _ in 0..4 {
        let chunks =
            (0..3).map(|_| Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(vec![b'y'; 100]))));
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        let response = http.post(&url).body(reqwest::Body::wrap(body)).send().await.unwrap();
        streamed.push(response.status().as_u16());
    }
    assert!(streamed.contains(&502), "a streamed request is tried once: {streamed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_per_try_timeout_bounds_each_try() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.apply(MESH);
    let app = apps::http_echo(([127, 0, 0, 1], free_port()).into(), "web").await;
    let web = cp.spawn_proxy(root.path(), "web-1", &web_dataplane("web-1", app.address.port()), &[]);
    let outbound = free_port();
    let client_yaml = format!(
        "type: Dataplane\nmesh: lab\nname: client-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    \
         tags: {{kuma.io/service: client}}\n  outbound:\n  - port: {outbound}\n    tags: {{kuma.io/service: web}}\n",
        free_port()
    );
    let client = cp.spawn_proxy(root.path(), "client-1", &client_yaml, &[]);
    tokio::task::block_in_place(|| {
        web.wait_ready();
        client.wait_ready();
    });
    cp.apply(
        "type: MeshRetry\nmesh: lab\nname: quick-tries\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    default:\n      \
         http: {numRetries: 2, perTryTimeout: 300ms, retryOn: [Reset], backOff: {baseInterval: 10ms}}\n",
    );
    wait_for_retry(&client).await;
    let http = common::http_client();
    let started = Instant::now();
    let response = http.get(format!("http://127.0.0.1:{outbound}/slow?ms=5000")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(response.status(), 504);
    assert!(took >= Duration::from_millis(850) && took < Duration::from_secs(4), "three tries of 300ms: {took:?}");
    let quick = http.get(format!("http://127.0.0.1:{outbound}/slow?ms=20")).send().await.unwrap();
    assert_eq!(quick.status(), 200);
}
