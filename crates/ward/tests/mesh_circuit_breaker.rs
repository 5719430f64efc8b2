//! MeshCircuitBreaker through real proxies: an instance that keeps failing is ejected so that
//! callers stop reaching it, and requests beyond maxRequests are refused at once.

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

fn client_dataplane(outbound: u16) -> String {
    format!(
        "type: Dataplane\nmesh: lab\nname: client-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    \
         tags: {{kuma.io/service: client}}\n  outbound:\n  - port: {outbound}\n    tags: {{kuma.io/service: web}}\n",
        free_port()
    )
}

/// Waits until `proxy` runs with a MeshCircuitBreaker for some destination.
async fn wait_for_breaker(proxy: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let config = tokio::task::block_in_place(|| proxy.config());
        let outbounds = config["config"]["rules"]["outbounds"].to_string();
        if outbounds.contains("MeshCircuitBreaker") {
            return;
        }
        assert!(Instant::now() < deadline, "the proxy never received the MeshCircuitBreaker: {outbounds}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_instance_is_ejected_and_callers_stop_reaching_it() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.apply(MESH);
    cp.apply(
        "type: MeshCircuitBreaker\nmesh: lab\nname: eject-failing\nspec:\n  to:\n  - targetRef: {kind: MeshService, name: web}\n    \
         default:\n      outlierDetection:\n        baseEjectionTime: 1m\n        maxEjectionPercent: 50\n        \
         healthyPanicThreshold: 0\n        detectors:\n          gatewayFailures: {consecutive: 2}\n",
    );
    let app = apps::http_echo(([127, 0, 0, 1], free_port()).into(), "web").await;
    // web-2's application is gone: its proxy answers every request with 502.
    let web1 = cp.spawn_proxy(root.path(), "web-1", &web_dataplane("web-1", app.address.port()), &[]);
    let web2 = cp.spawn_proxy(root.path(), "web-2", &web_dataplane("web-2", free_port()), &[]);
    let outbound = free_port();
    let client = cp.spawn_proxy(root.path(), "client-1", &client_dataplane(outbound), &[]);
    tokio::task::block_in_place(|| {
        for p in [&web1, &web2, &client] {
            p.wait_ready();
        }
    });
    wait_for_breaker(&client).await;
    let http = common::http_client();
    let url = format!("http://127.0.0.1:{outbound}/");
    // Wait until both instances are endpoints (the first 502 proves web-2 is reached), then the
    // second consecutive 502 ejects it: at most two failures reach the caller.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut failures = 0;
    let mut in_a_row = 0;
    while in_a_row < 20 {
        assert!(Instant::now() < deadline, "web-2 is never ejected: {failures} failures");
        match http.get(&url).send().await.unwrap().status().as_u16() {
            200 => in_a_row += 1,
            502 => {
                failures += 1;
                in_a_row = 0;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!((1..=2).contains(&failures), "web-2 was ejected after two gateway failures: saw {failures}");
    let log = tokio::task::block_in_place(|| client.log());
    assert!(log.contains("instance ejected by outlier detection"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_beyond_max_requests_are_refused_at_once() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.apply(MESH);
    let app = apps::http_echo(([127, 0, 0, 1], free_port()).into(), "web").await;
    let web = cp.spawn_proxy(root.path(), "web-1", &web_dataplane("web-1", app.address.port()), &[]);
    let outbound = free_port();
    let client = cp.spawn_proxy(root.path(), "client-1", &client_dataplane(outbound), &[]);
    tokio::task::block_in_place(|| {
        web.wait_ready();
        client.wait_ready();
    });
    cp.apply(
        "type: MeshCircuitBreaker\nmesh: lab\nname: one-at-a-time\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    \
         default:\n      connectionLimits: {maxRequests: 1}\n",
    );
    wait_for_breaker(&client).await;
    let http = common::http_client();
    // Two slow requests at once: one runs, the other is refused without waiting.
    let call = |http: reqwest::Client| async move {
        let started = Instant::now();
        let response = http.get(format!("http://127.0.0.1:{outbound}/slow?ms=2000")).send().await.unwrap();
        let overloaded = response.headers().get("x-envoy-overloaded").cloned();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        (status, started.elapsed(), overloaded, body)
    };
    let (a, b) = tokio::join!(call(http.clone()), call(http.clone()));
    let (ran, refused) = if a.0 == 200 { (a, b) } else { (b, a) };
    assert_eq!(ran.0, 200, "one request runs: {ran:?}");
    assert!(ran.1 >= Duration::from_millis(1900), "{ran:?}");
    assert_eq!(refused.0, 503, "the other is refused: {refused:?}");
    assert!(refused.1 < Duration::from_millis(1500), "refused at once: {refused:?}");
    assert_eq!(refused.2.as_ref().map(|v| v.to_str().unwrap()), Some("true"));
    assert_eq!(refused.3, "upstream overflow\n");
    // Its slot is given back once the proxy is done with its answer.
    let deadline = Instant::now() + Duration::from_secs(5);
    while http.get(format!("http://127.0.0.1:{outbound}/")).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "the slot is free again once the answer is done");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
