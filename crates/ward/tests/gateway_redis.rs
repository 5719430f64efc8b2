//! rate-limiting with the redis policy: one limit across several gateway processes, and
//! what fault_tolerant does when Redis is gone.

mod common;

use common::{GatewayProcess, OwnRedis, Upstream, http_client, require_shared_redis, unique_uuid};
use serde_json::Value;

/// Counters are keyed by the plugin's route (and service) ids: fresh ones keep a run to itself.
fn config(upstream: &str, port: u16) -> String {
    let (minute_id, hour_id) = (unique_uuid(), unique_uuid());
    assert_ne!(minute_id, hour_id);
    format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {upstream}
  routes:
  - name: per-minute
    id: {minute_id}
    paths: [/minute]
    plugins:
    - name: rate-limiting
      config: {{minute: 6, policy: redis, limit_by: ip, redis: {{host: 127.0.0.1, port: {port}}}}}
  - name: per-hour
    id: {hour_id}
    paths: [/hour]
    plugins:
    - name: rate-limiting
      config: {{hour: 10, policy: redis, limit_by: ip, redis_host: 127.0.0.1, redis_port: {port}}}
"#
    )
}

#[tokio::test]
async fn the_limit_holds_across_two_gateways() {
    require_shared_redis();
    let upstream = Upstream::start("echo").await;
    let text = config(&upstream.url(), 6379);
    let (first, second) = (GatewayProcess::start(&text), GatewayProcess::start(&text));
    let client = http_client();
    common::avoid_minute_boundary().await;
    let mut seen = Vec::new();
    for i in 0..8 {
        let gw = if i % 2 == 0 { &first } else { &second };
        let r = client.get(gw.url("/minute")).send().await.unwrap();
        let remaining = r.headers().get("ratelimit-remaining").map(|v| v.to_str().unwrap().to_string());
        seen.push((r.status().as_u16(), remaining));
    }
    let want: Vec<(u16, Option<String>)> =
        [(200, "5"), (200, "4"), (200, "3"), (200, "2"), (200, "1"), (200, "0"), (429, "0"), (429, "0")]
            .iter()
            .map(|(s, r)| (*s, Some(r.to_string())))
            .collect();
    assert_eq!(seen, want, "six admitted in all, whichever gateway answered");
    // Forty requests at once, half to each gateway, against ten per hour: exactly ten pass.
    let requests: Vec<_> = (0..40)
        .map(|i| {
            let url = if i % 2 == 0 { first.url("/hour") } else { second.url("/hour") };
            let client = client.clone();
            tokio::spawn(async move { client.get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10, "{statuses:?}");
    assert_eq!(upstream.count(), 6 + 10);
}

#[tokio::test]
async fn fault_tolerant_decides_what_happens_without_redis() {
    let mut redis = OwnRedis::start();
    let upstream = Upstream::start("echo").await;
    let text = format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {}
  routes:
  - name: tolerant
    paths: [/tolerant]
    plugins:
    - name: rate-limiting
      config: {{minute: 100, policy: redis, redis: {{host: 127.0.0.1, port: {port}, timeout: 500}}}}
  - name: strict
    paths: [/strict]
    plugins:
    - name: rate-limiting
      config: {{minute: 100, policy: redis, fault_tolerant: false, redis: {{host: 127.0.0.1, port: {port}, timeout: 500}}}}
"#,
        upstream.url(),
        port = redis.port
    );
    let gw = GatewayProcess::start(&text);
    let client = http_client();
    for path in ["/tolerant", "/strict"] {
        let r = client.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} with Redis up");
        assert!(r.headers().contains_key("ratelimit-remaining"), "{path} counted in Redis");
    }
    redis.kill();
    assert!(!redis.answers());
    let r = client.get(gw.url("/tolerant")).send().await.unwrap();
    assert_eq!(r.status(), 200, "fault_tolerant lets traffic through");
    assert!(!r.headers().contains_key("ratelimit-remaining"), "nothing was counted");
    let r = client.get(gw.url("/strict")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "An unexpected error occurred");
}
