//! The gateway's configuration as an operator meets it: bad files refused with every
//! error named, reloads by SIGHUP and by the admin API that keep the old configuration
//! when the new one is broken, and no failed request while a reload happens.

mod common;

use std::time::{Duration, Instant};

use common::{GatewayProcess, Upstream, http_client, ward_with_config};
use serde_json::Value;

fn config(upstream: &str, path: &str) -> String {
    format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {upstream}
  routes:
  - name: r
    paths: [{path}]
"#
    )
}

#[test]
fn bad_files_and_flags_are_refused_with_every_error() {
    let table: &[(&str, &[&str])] = &[
        (
            r#"
_format_version: "3.0"
services:
- name: a
  url: http://127.0.0.1:1
  retry: 3
  routes:
  - paths: ["~/broken("]
  - paths: [/ok]
    plugins:
    - name: key-auth
      config: {key_names: [apikey], hide_credential: true}
plugins:
- name: oauth2
"#,
            &[
                "services[0].retry: unknown field",
                "services[0].routes[0].paths[0]: invalid regex",
                "services[0].routes[1].plugins[0].config.hide_credential: unknown field",
                "plugins[0].name: plugin 'oauth2' is not supported",
            ],
        ),
        (
            "_format_version: \"3.0\"\nservices:\n- name: items\n  host: items.mesh\n",
            &[
                "services[0].host: 'items.mesh': a mesh service; the gateway must join the mesh (ward gateway run --mesh MESH ...)",
            ],
        ),
        (
            "_format_version: \"3.0\"\nplugins:\n- name: rate-limiting\n  config: {minute: 10, hour: 5, policy: cluster}\n",
            &[
                "plugins[0].config.hour: The limit for hour(5.0) cannot be lower than the limit for minute(10.0)",
                "plugins[0].config.policy: cluster needs Kong's database",
            ],
        ),
        (
            r#"
_format_version: "3.0"
consumers:
- username: alice
plugins:
- name: correlation-id
  config: {generator: uuid4}
- name: correlation-id
  route: r
  config: {header_name: "bad header"}
- name: correlation-id
  service: s
  config: {header_name: Content-Length}
- name: correlation-id
  consumer: alice
services:
- name: s
  url: http://127.0.0.1:1
  routes:
  - name: r
    paths: [/r]
"#,
            &[
                "plugins[0].config.generator: must be one of uuid, uuid#counter, tracker",
                "plugins[1].config.header_name: 'bad header' is not a valid header name",
                "plugins[2].config.header_name: 'Content-Length' is a header the gateway or the upstream relies on",
                "plugins[3].consumer: the correlation-id plugin cannot be scoped to a consumer",
            ],
        ),
        (
            r#"
_format_version: "3.0"
consumers:
- username: alice
  hmacauth_credentials:
  - {username: alice-hmac, secret: a}
- username: bob
  hmacauth_credentials:
  - {username: alice-hmac, secret: b}
plugins:
- name: hmac-auth
  config: {algorithms: [hmac-sha256, hmac-md5], clock_skew: 0}
- name: hmac-auth
  consumer: alice
  config: {clock_skew: 1e300}
"#,
            &[
                "plugins[0].config.algorithms[1]: expected one of: hmac-sha1, hmac-sha256, hmac-sha384, hmac-sha512",
                "plugins[0].config.clock_skew: value must be greater than 0",
                "plugins[1].consumer: the hmac-auth plugin cannot be scoped to a consumer",
                "plugins[1].config.clock_skew: must be a number of seconds greater than 0",
                "consumers[1].hmacauth_credentials[0].username: is the username of another credential",
            ],
        ),
        ("not: [valid", &["is not valid YAML or JSON"]),
    ];
    for (text, expected) in table {
        let run = ward_with_config(text, &["gateway", "run", "--config", "{config}", "--proxy-listen", "127.0.0.1:0"]);
        let err = run.fails();
        for want in *expected {
            assert!(err.contains(want), "missing '{want}' in:\n{err}");
        }
    }
    let run = ward_with_config("", &["gateway", "run", "--config", "{config}", "--proxy-listen", "not-an-address"]);
    assert!(run.fails().contains("--proxy-listen"), "{}", run.stderr());
    let run = ward_with_config("", &["gateway", "run", "--config", "{config}", "--trusted-ips", "10.0.0.0/33"]);
    assert!(run.fails().contains("'10.0.0.0/33' is not an IP address or CIDR block"), "{}", run.stderr());
    let run = common::Run(
        std::process::Command::new(common::WARD)
            .args(["gateway", "run", "--config", "/nonexistent/kong.yml"])
            .output()
            .unwrap(),
    );
    assert!(run.fails().contains("reading /nonexistent/kong.yml"), "{}", run.stderr());
}

async fn status_of(url: &str) -> u16 {
    http_client().get(url).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn reload_by_sighup_and_admin_api_keeps_the_old_configuration_when_broken() {
    let upstream = Upstream::start("echo").await;
    let gw = GatewayProcess::start(&config(&upstream.url(), "/v1"));
    let client = http_client();
    let status: Value = client.get(gw.admin_url("/status")).send().await.unwrap().json().await.unwrap();
    let first_hash = status["configuration_hash"].as_str().unwrap().to_string();
    assert_eq!(status_of(&gw.url("/v1")).await, 200);

    // A broken file on SIGHUP: the old configuration keeps serving.
    gw.reload_file("_format_version: \"3.0\"\nservices:\n- name: x\n  host: y\n  bogus: 1\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains("kept the configuration in force") {
        assert!(Instant::now() < deadline, "no reload attempt logged:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gw.log().contains("services[0].bogus: unknown field"), "{}", gw.log());
    assert_eq!(status_of(&gw.url("/v1")).await, 200);

    // A good file on SIGHUP: the new routes serve.
    gw.reload_file(&config(&upstream.url(), "/v2"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of(&gw.url("/v2")).await != 200 {
        assert!(Instant::now() < deadline, "SIGHUP did not load the new file:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status_of(&gw.url("/v1")).await, 404);

    // POST /config with a broken configuration: 400 with every error, nothing changes.
    let broken = "_format_version: \"3.0\"\nservices:\n- name: a\n  host: b\n  routes:\n  - paths: [\"~(\"]\n  - methods: [get]\n";
    let r = client.post(gw.admin_url("/config")).body(broken).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    let errors: Vec<String> =
        body["errors"].as_array().unwrap().iter().map(|e| format!("{}: {}", e["path"], e["message"])).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("services[0].routes[0].paths[0]") && errors[1].contains("services[0].routes[1].methods[0]"),
        "{errors:?}"
    );
    assert_eq!(status_of(&gw.url("/v2")).await, 200);

    // POST /config with a good one (JSON this time): swapped in, and GET /config shows it.
    let json = serde_json::json!({
        "_format_version": "3.0",
        "services": [{"name": "echo", "url": upstream.url(), "routes": [{"name": "r3", "paths": ["/v3"]}]}]
    })
    .to_string();
    let r = client
        .post(gw.admin_url("/config"))
        .header("content-type", "application/json")
        .body(json.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(status_of(&gw.url("/v3")).await, 200);
    assert_eq!(status_of(&gw.url("/v2")).await, 404);
    let shown: Value = client.get(gw.admin_url("/config")).send().await.unwrap().json().await.unwrap();
    assert_eq!(shown["config"], json);
    let status: Value = client.get(gw.admin_url("/status")).send().await.unwrap().json().await.unwrap();
    assert_ne!(status["configuration_hash"], first_hash);
    assert!(status["server"]["total_requests"].as_u64().unwrap() >= 6);
}

#[tokio::test]
async fn no_request_fails_while_configurations_are_swapped() {
    let upstream = Upstream::start("echo").await;
    let gw = GatewayProcess::start(&config(&upstream.url(), "/steady"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop) = (gw.url("/steady"), stop.clone());
            tokio::spawn(async move {
                let client = http_client();
                let mut statuses = Vec::new();
                // Slow answers keep requests in flight while the swap happens.
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = client.get(&url).header("x-echo-delay-ms", "20").send().await;
                    statuses.push(r.map(|r| r.status().as_u16()).unwrap_or(0));
                }
                statuses
            })
        })
        .collect();
    let admin = gw.admin_url("/config");
    for i in 0..20 {
        // Each configuration differs (an extra route) but all serve /steady.
        let text = format!("{}  - name: extra{i}\n    paths: [/extra{i}]\n", config(&upstream.url(), "/steady"));
        let r = http_client().post(&admin).body(text).send().await.unwrap();
        assert_eq!(r.status(), 201);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let statuses = c.await.unwrap();
        total += statuses.len();
        assert!(statuses.iter().all(|s| *s == 200), "a request failed during reloads: {statuses:?}");
    }
    assert!(total > 20, "only {total} requests were made during the reloads");
}

#[test]
fn kong_files_load_unchanged() {
    // The README's example, and a file as Kong's own tools export it: every default
    // spelled out, nulls included.
    let example = include_str!("../../../examples/kong.yml");
    let exported = r#"
_format_version: "3.0"
_transform: true
services:
- connect_timeout: 60000
  enabled: true
  host: 127.0.0.1
  name: items
  path: /
  port: 9000
  protocol: http
  read_timeout: 60000
  retries: 5
  write_timeout: 60000
  tags: [team-a]
  routes:
  - https_redirect_status_code: 426
    name: items
    path_handling: v0
    paths: [/items]
    preserve_host: false
    protocols: [http, https]
    regex_priority: 0
    request_buffering: true
    response_buffering: true
    strip_path: true
    tags: null
    plugins:
    - name: key-auth
      enabled: true
      protocols: [grpc, grpcs, http, https]
      config:
        anonymous: null
        hide_credentials: false
        key_in_body: false
        key_in_header: true
        key_in_query: true
        key_names: [apikey]
        realm: null
        run_on_preflight: true
    - name: rate-limiting
      enabled: true
      protocols: [grpc, grpcs, http, https]
      config:
        day: null
        error_code: 429
        error_message: API rate limit exceeded
        fault_tolerant: true
        header_name: null
        hide_client_headers: false
        hour: null
        limit_by: consumer
        minute: 60
        month: null
        path: null
        policy: local
        redis:
          connect_timeout: 2000
          database: 0
          host: null
          keepalive_backlog: null
          keepalive_pool_size: 256
          password: null
          port: 6379
          read_timeout: 2000
          send_timeout: 2000
          server_name: null
          ssl: false
          ssl_verify: false
          timeout: 2000
          username: null
        second: null
        sync_rate: -1
        year: null
consumers:
- username: alice
  custom_id: null
  keyauth_credentials:
  - key: alice-key
  acls:
  - group: admin
plugins:
- name: cors
  config:
    credentials: false
    exposed_headers: null
    headers: null
    max_age: null
    methods: [GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS, TRACE, CONNECT]
    origins: null
    preflight_continue: false
    private_network: false
upstreams:
- name: pool
  algorithm: round-robin
  hash_fallback: none
  hash_on: none
  hash_on_cookie_path: /
  slots: 10000
  healthchecks:
    threshold: 0
    active:
      concurrency: 10
      healthy: {http_statuses: [200, 302], interval: 0, successes: 0}
      http_path: /
      https_verify_certificate: true
      timeout: 1
      type: http
      unhealthy: {http_failures: 0, http_statuses: [429, 404, 500, 501, 502, 503, 504, 505], interval: 0, tcp_failures: 0, timeouts: 0}
    passive:
      healthy: {http_statuses: [200, 201, 202], successes: 0}
      type: http
      unhealthy: {http_failures: 0, http_statuses: [429, 500, 503], tcp_failures: 0, timeouts: 0}
  targets:
  - target: 127.0.0.1:9001
    weight: 100
"#;
    for text in [example, exported] {
        let out = ward_with_config(text, &["gateway", "check", "--config", "{config}"]).ok();
        assert!(out.ends_with("is valid\n"), "{out}");
    }
}

/// Consumers the loader once crashed on (an unknown field beside nested credentials):
/// each is refused with every error and its entity path, and nothing else changes.
const BROKEN_CONSUMERS: [(&str, &[&str]); 2] = [
    (
        // Kong's oauth2 credentials, which Ward does not have, beside nested acls.
        r#"
_format_version: "3.0"
consumers:
- username: alice
  oauth2_credentials:
  - {name: app, client_id: alice-app, client_secret: s3cret, redirect_uris: ["https://app.test/cb"]}
  acls:
  - group: admins
"#,
        &["consumers[0].oauth2_credentials: unknown field"],
    ),
    (
        // A typo, with every kind of nested credential, one of them broken too.
        r#"
_format_version: "3.0"
consumers:
- usrname: bob
  acls: [{group: admins}]
  keyauth_credentials: [{key: bob-key, colour: red}]
  basicauth_credentials: [{username: bob, password: pw}]
  jwt_secrets: [{key: bob-iss}]
"#,
        &["consumers[0].usrname: unknown field", "consumers[0].keyauth_credentials[0].colour: unknown field"],
    ),
];

#[tokio::test]
async fn broken_consumers_are_refused_by_check_run_and_the_admin_api() {
    for (text, expected) in BROKEN_CONSUMERS {
        let check = ward_with_config(text, &["gateway", "check", "--config", "{config}"]);
        assert_eq!(check.0.status.code(), Some(1), "ward gateway check:\n{}", check.stderr());
        let run = ward_with_config(text, &["gateway", "run", "--config", "{config}", "--proxy-listen", "127.0.0.1:0"]);
        assert_eq!(run.0.status.code(), Some(1), "ward gateway run:\n{}", run.stderr());
        for want in expected {
            assert!(check.stderr().contains(want), "check misses '{want}':\n{}", check.stderr());
            assert!(run.stderr().contains(want), "run misses '{want}':\n{}", run.stderr());
        }
    }

    let upstream = Upstream::start("echo").await;
    let gw = GatewayProcess::start(&config(&upstream.url(), "/kept"));
    let client = http_client();
    for (text, expected) in BROKEN_CONSUMERS {
        let r =
            client.post(gw.admin_url("/config")).body(text).send().await.expect("an answer, not a dropped connection");
        assert_eq!(r.status(), 400);
        let body: Value = r.json().await.unwrap();
        let errors: Vec<String> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{}: {}", e["path"].as_str().unwrap(), e["message"].as_str().unwrap()))
            .collect();
        for want in expected {
            assert!(errors.iter().any(|e| e.starts_with(want)), "POST /config misses '{want}': {errors:?}");
        }
        assert_eq!(status_of(&gw.url("/kept")).await, 200, "the configuration in force stopped serving");
    }
    // The reload task survives a broken file on SIGHUP too, and still loads a good one after.
    gw.reload_file(BROKEN_CONSUMERS[0].0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains("oauth2_credentials: unknown field") {
        assert!(Instant::now() < deadline, "no refusal logged for the SIGHUP reload:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.reload_file(&config(&upstream.url(), "/after"));
    while status_of(&gw.url("/after")).await != 200 {
        assert!(Instant::now() < deadline, "SIGHUP no longer reloads after a broken file:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
