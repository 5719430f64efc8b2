//! The prometheus plugin as a scraper sees it: `ward gateway run` with the plugin on one
//! service, requests answered by the upstream and by key-auth, then the admin `/metrics`
//! read by the Python `prometheus_client` text parser.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{GatewayProcess, Upstream, http_client};
use serde_json::Value;

/// Parses an exposition with `prometheus_client.parser`; prints `[name, labels, value]` per sample.
const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;

fn config(upstream: &Upstream) -> String {
    let url = upstream.url();
    let target = url.trim_start_matches("http://");
    format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {url}
  plugins:
  - name: prometheus
    config:
      per_consumer: true
      status_code_metrics: true
      latency_metrics: true
      upstream_health_metrics: true
  routes:
  - name: keyed
    paths: [/keyed]
    plugins:
    - name: key-auth
  - name: open
    paths: [/open]
- name: balanced
  host: echo-up
  routes:
  - name: unmeasured
    paths: [/unmeasured]
upstreams:
- name: echo-up
  targets:
  - target: {target}
consumers:
- username: alice
  keyauth_credentials:
  - key: alice-key
"#
    )
}

/// The samples of `/metrics`, as the Python parser reads them.
fn parse(text: &str) -> Vec<(String, serde_json::Map<String, Value>, f64)> {
    let mut child = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (with the prometheus_client package) is needed");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser refused /metrics: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    let samples: Vec<(String, serde_json::Map<String, Value>, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    samples
}

/// The value of the sample `name` whose labels include `labels`, if exactly one matches.
fn value(
    samples: &[(String, serde_json::Map<String, Value>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let found: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).and_then(Value::as_str) == Some(*v)))
        .map(|(_, _, v)| *v)
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches {} samples", found.len());
    found.first().copied()
}

#[tokio::test]
async fn requests_are_counted_under_kongs_names_and_labels() {
    let upstream = Upstream::start("echo").await;
    let gw = GatewayProcess::start(&config(&upstream));
    let client = http_client();
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut req = client.get(gw.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/open", &[]).await, 200);
    assert_eq!(get("/open", &[]).await, 200);
    assert_eq!(get("/open", &[("x-echo-status", "503")]).await, 503);
    assert_eq!(get("/keyed", &[("apikey", "alice-key")]).await, 200);
    assert_eq!(get("/keyed", &[]).await, 401);
    assert_eq!(get("/keyed", &[("apikey", "wrong")]).await, 401);
    assert_eq!(get("/unmeasured", &[]).await, 200);
    assert_eq!(get("/nowhere", &[]).await, 404);

    // Recorded before the response leaves the gateway: no waiting needed.
    let resp = client.get(gw.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = resp.text().await.unwrap();
    let samples = parse(&text);

    let requests = |route: &str, code: &str, source: &str, consumer: &str| {
        value(
            &samples,
            "kong_http_requests_total",
            &[
                ("service", "echo"),
                ("route", route),
                ("code", code),
                ("source", source),
                ("workspace", "default"),
                ("consumer", consumer),
            ],
        )
    };
    assert_eq!(requests("open", "200", "service", ""), Some(2.0), "{text}");
    assert_eq!(requests("open", "503", "service", ""), Some(1.0), "{text}");
    assert_eq!(requests("keyed", "200", "service", "alice"), Some(1.0), "{text}");
    assert_eq!(requests("keyed", "401", "kong", ""), Some(2.0), "{text}");
    let counted: f64 = samples.iter().filter(|(n, _, _)| n == "kong_http_requests_total").map(|(_, _, v)| v).sum();
    assert_eq!(counted, 6.0, "only the echo service's requests are counted, not /unmeasured nor the 404:\n{text}");

    let latency = |name: &str, route: &str| {
        value(&samples, name, &[("service", "echo"), ("route", route), ("workspace", "default")])
    };
    assert_eq!(latency("kong_request_latency_ms_count", "open"), Some(3.0), "{text}");
    assert_eq!(latency("kong_kong_latency_ms_count", "keyed"), Some(3.0), "{text}");
    // key-auth's rejections never reached the upstream.
    assert_eq!(latency("kong_upstream_latency_ms_count", "keyed"), Some(1.0), "{text}");
    let inf = value(
        &samples,
        "kong_upstream_latency_ms_bucket",
        &[("service", "echo"), ("route", "open"), ("workspace", "default"), ("le", "+Inf")],
    );
    assert_eq!(inf, Some(3.0), "{text}");
    assert!(
        value(&samples, "kong_upstream_latency_ms_bucket", &[("route", "open"), ("le", "25.0")]).is_some(),
        "{text}"
    );
    assert!(value(&samples, "kong_kong_latency_ms_bucket", &[("route", "open"), ("le", "7.0")]).is_some(), "{text}");

    assert_eq!(value(&samples, "kong_datastore_reachable", &[]), Some(1.0), "{text}");
    let connections =
        |state: &str| value(&samples, "kong_nginx_connections_total", &[("subsystem", "http"), ("state", state)]);
    assert!(connections("accepted").is_some_and(|v| v >= 1.0), "{text}");
    assert_eq!(connections("total"), Some(8.0), "{text}");
    assert!(connections("active").is_some(), "{text}");
    assert!(connections("waiting").is_none(), "Ward does not tell waiting connections apart:\n{text}");

    let target = upstream.url().trim_start_matches("http://").to_string();
    let health = |state: &str| {
        value(
            &samples,
            "kong_upstream_target_health",
            &[
                ("upstream", "echo-up"),
                ("target", &target),
                ("address", &target),
                ("state", state),
                ("subsystem", "http"),
            ],
        )
    };
    assert_eq!(health("healthchecks_off"), Some(1.0), "{text}");
    assert_eq!(health("healthy"), Some(0.0), "{text}");
    assert_eq!(health("unhealthy"), Some(0.0), "{text}");
    assert_eq!(health("dns_error"), Some(0.0), "{text}");
    assert!(!text.contains("kong_bandwidth_bytes"), "{text}");
}

#[tokio::test]
async fn without_the_plugin_only_the_node_is_exported() {
    let upstream = Upstream::start("echo").await;
    let config = format!(
        "_format_version: \"3.0\"\nservices:\n- name: echo\n  url: {}\n  routes:\n  - paths: [/]\n",
        upstream.url()
    );
    let gw = GatewayProcess::start(&config);
    let client = http_client();
    assert_eq!(client.get(gw.url("/")).send().await.unwrap().status().as_u16(), 200);
    let text = client.get(gw.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    let samples = parse(&text);
    assert_eq!(value(&samples, "kong_datastore_reachable", &[]), Some(1.0), "{text}");
    assert!(samples.iter().all(|(n, _, _)| !n.starts_with("kong_http_requests")), "{text}");
    assert!(samples.iter().all(|(n, _, _)| !n.starts_with("kong_upstream_target_health")), "{text}");
    // A scraper that accepts OpenMetrics is told the text is OpenMetrics.
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let resp = client.get(gw.admin_url("/metrics")).header("accept", accept).send().await.unwrap();
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
}

#[tokio::test]
async fn metrics_kong_ward_cannot_collect_are_refused() {
    for field in ["ai_metrics", "bandwidth_metrics", "wasm_metrics"] {
        let config = format!("_format_version: \"3.0\"\nplugins:\n- name: prometheus\n  config: {{{field}: true}}\n");
        let run = common::ward_with_config(&config, &["gateway", "check", "--config", "{config}"]);
        let err = run.fails();
        assert!(err.contains(&format!("plugins[0].config.{field}")), "{field}: {err}");
    }
}
