//! Upstreams as a client sees them: balancing over targets, health checks that take a
//! failing target out and bring it back when it recovers, and Kong's 502, 503 and 504
//! when the upstream fails, when no target is healthy, and when it is too slow.

mod common;

use std::time::{Duration, Instant};

use common::{GatewayProcess, Upstream, http_client};
use serde_json::Value;

fn upstream_config(upstream_block: &str, service_extra: &str) -> String {
    format!(
        r#"
_format_version: "3.0"
upstreams:
{upstream_block}
services:
- name: balanced
  host: pool
{service_extra}
  routes:
  - name: r
    paths: [/]
"#
    )
}

async fn who(gw: &GatewayProcess, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = http_client().get(gw.url("/"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let name = body["upstream"].as_str().map(str::to_string).unwrap_or_else(|| body["message"].to_string());
    (status, name)
}

#[tokio::test]
async fn round_robin_least_connections_and_consistent_hashing() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let block = |algorithm: &str, extra: &str| {
        format!(
            "- name: pool\n  algorithm: {algorithm}\n{extra}  targets:\n  - target: {}\n  - target: {}\n",
            a.addr, b.addr
        )
    };
    let rr = GatewayProcess::start(&upstream_config(&block("round-robin", ""), ""));
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(who(&rr, &[]).await.1);
    }
    assert_eq!(seen.iter().filter(|n| *n == "a").count(), 5, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] != w[1]), "round robin alternates: {seen:?}");

    let hashed = GatewayProcess::start(&upstream_config(
        &block("consistent-hashing", "  hash_on: header\n  hash_on_header: x-user\n"),
        "",
    ));
    let mut by_user = std::collections::HashMap::new();
    for round in 0..3 {
        for user in 0..12 {
            let (status, target) = who(&hashed, &[("x-user", &format!("user-{user}"))]).await;
            assert_eq!(status, 200);
            let first = by_user.entry(user).or_insert(target.clone());
            assert_eq!(*first, target, "user-{user} moved to another target in round {round}");
        }
    }
    let used: std::collections::HashSet<_> = by_user.values().collect();
    assert_eq!(used.len(), 2, "twelve users should spread over both targets: {by_user:?}");

    let least = GatewayProcess::start(&upstream_config(&block("least-connections", ""), ""));
    let slow = {
        let url = least.url("/");
        tokio::spawn(async move { http_client().get(url).header("x-echo-delay-ms", "1500").send().await.unwrap() })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.count() + b.count() < 10 + 36 + 1 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let busy = if a.count() > b.count() { "a" } else { "b" };
    // While one target holds a request, the others go to the idle one.
    for _ in 0..3 {
        let (_, target) = who(&least, &[]).await;
        assert_ne!(target, busy, "least-connections sent a request to the busy target");
    }
    assert_eq!(slow.await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_failed_target_is_ejected_and_comes_back_when_healthy() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let block = format!(
        r#"- name: pool
  healthchecks:
    passive:
      unhealthy: {{tcp_failures: 1, http_failures: 2, http_statuses: [500, 503]}}
  targets:
  - target: {}
  - target: {}
"#,
        a.addr, b.addr
    );
    let gw = GatewayProcess::start(&upstream_config(&block, ""));
    // Take b down: its connection failures eject it; clients never see them (retries).
    let b_port = b.stop();
    for _ in 0..10 {
        let (status, target) = who(&gw, &[]).await;
        assert_eq!((status, target.as_str()), (200, "a"));
    }
    // b comes back on the same port: it gets traffic again (Kong's would stay ejected).
    let b = Upstream::start_on("b", b_port).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.count() == 0 {
        assert!(Instant::now() < deadline, "the recovered target never got traffic again:\n{}", gw.log());
        let (status, _) = who(&gw, &[]).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // HTTP failures count too: two 500s in a row eject a target.
    let before = a.count();
    for _ in 0..2 {
        while who(&gw, &[("x-echo-status", "500")]).await.1 != "a" {}
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = Vec::new();
    while Instant::now() < deadline && after.len() < 6 {
        after.push(who(&gw, &[]).await.1);
    }
    assert!(after.iter().all(|t| t == "b"), "a should be out after two 500s: {after:?}");
    assert!(a.count() >= before + 2);
}

#[tokio::test]
async fn active_checks_take_targets_out_and_back() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let block = format!(
        r#"- name: pool
  healthchecks:
    active:
      http_path: /health
      timeout: 1
      healthy: {{interval: 0.2, successes: 1}}
      unhealthy: {{interval: 0.2, tcp_failures: 1}}
  targets:
  - target: {}
  - target: {}
"#,
        a.addr, b.addr
    );
    let gw = GatewayProcess::start(&upstream_config(&block, "  retries: 0"));
    let b_port = b.stop();
    // With no retries, a client would see b's failures: active probes must take it out first.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let results: Vec<(u16, String)> = futures_join(&gw, 6).await;
        if results.iter().all(|(s, t)| *s == 200 && t == "a") {
            break;
        }
        assert!(Instant::now() < deadline, "b was never taken out: {results:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = Upstream::start_on("b", b_port).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !futures_join(&gw, 6).await.iter().any(|(_, t)| t == "b") {
        assert!(Instant::now() < deadline, "b never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(b.count() > 0);
}

async fn futures_join(gw: &GatewayProcess, n: usize) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(who(gw, &[]).await);
    }
    out
}

#[tokio::test]
async fn kong_errors_when_the_upstream_fails() {
    let slow = Upstream::start("slow").await;
    // A listener that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = common::free_port();
    let config = format!(
        r#"
_format_version: "3.0"
upstreams:
- name: empty
  targets:
  - {{target: "127.0.0.1:{closed_port}", weight: 0}}
services:
- name: refused
  url: http://127.0.0.1:{closed_port}
  retries: 2
  routes: [{{name: refused, paths: [/refused]}}]
- name: slow
  url: {}
  read_timeout: 300
  routes: [{{name: slow, paths: [/slow]}}]
- name: silent
  url: http://{}
  read_timeout: 300
  routes: [{{name: silent, paths: [/silent]}}]
- name: nobody
  host: empty
  routes: [{{name: nobody, paths: [/nobody]}}]
"#,
        slow.url(),
        silent.local_addr().unwrap()
    );
    let gw = GatewayProcess::start(&config);
    let table = [
        ("/refused", &[][..], 502, "An invalid response was received from the upstream server"),
        ("/nobody", &[][..], 503, "failure to get a peer from the ring-balancer"),
        ("/slow", &[("x-echo-delay-ms", "3000")][..], 504, "The upstream server is timing out"),
        ("/silent", &[][..], 504, "The upstream server is timing out"),
    ];
    let client = http_client();
    for (path, headers, status, message) in table {
        let mut req = client.get(gw.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(r.json::<Value>().await.unwrap()["message"], message, "{path}");
    }
    // A fast answer from the same service is unaffected.
    assert_eq!(client.get(gw.url("/slow")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn error_bodies_name_no_upstream_address() {
    let closed_port = common::free_port();
    let config = format!(
        r#"
_format_version: "3.0"
upstreams:
- name: empty
  targets:
  - {{target: "127.0.0.1:{closed_port}", weight: 0}}
services:
- name: refused
  url: http://127.0.0.1:{closed_port}
  retries: 0
  routes: [{{name: refused, paths: [/refused]}}]
- name: nobody
  host: empty
  routes: [{{name: nobody, paths: [/nobody]}}]
"#
    );
    let gw = GatewayProcess::start(&config);
    let table = [
        ("/refused", 502, "An invalid response was received from the upstream server"),
        ("/nobody", 503, "failure to get a peer from the ring-balancer"),
    ];
    for (path, status, message) in table {
        let r = http_client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        let body = r.text().await.unwrap();
        assert_eq!(body, serde_json::json!({ "message": message }).to_string(), "{path}");
        for secret in [closed_port.to_string(), "127.0.0.1".to_string(), "refused".to_string(), "os error".to_string()]
        {
            assert!(!body.contains(&secret), "{path}: the body tells the caller '{secret}': {body}");
        }
    }
    // The operator still learns what happened, from the log.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(gw.log().contains(&format!("127.0.0.1:{closed_port}")) && gw.log().contains("upstream 'empty'")) {
        assert!(Instant::now() < deadline, "the log does not say which upstream failed:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
