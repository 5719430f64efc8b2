//! request-transformer and response-transformer, as a client of `ward gateway run` sees them,
//! with an echo upstream reporting what reached it (method, path and query, headers, body).

mod common;

use common::{GatewayProcess, Upstream, http_client};
use serde_json::{Value, json};

fn config(upstream: &str) -> String {
    format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {upstream}
  routes:
  - name: users
    paths: ['~/users/(?<user>\w+)$']
    strip_path: false
    plugins:
    - name: request-transformer
      config:
        http_method: POST
        remove: {{headers: [x-secret], querystring: [debug], body: [password]}}
        rename: {{headers: ["x-old:x-new"], querystring: ["q:query"], body: ["name:username"]}}
        replace:
          headers: ["x-tier:gold", "host:users.internal"]
          querystring: ["page:1"]
          body: ["role:member"]
          uri: /v2/users/$(uri_captures.user)
        add:
          headers: ["x-user:$(uri_captures.user)", "x-from-query:$(query_params.q)"]
          querystring: ["source:ward"]
          body: ["created_by:$(headers.x_caller or 'anonymous')"]
        append: {{headers: ["x-tags:a", "x-tags:b"], querystring: ["tag:one"], body: ["tags:new"]}}
    - name: response-transformer
      config:
        remove: {{headers: [x-upstream], json: [upstream]}}
        rename: {{json: ["path:upstream_path"]}}
        replace: {{json: ["method:changed"]}}
        add:
          headers: ["x-transformed:yes"]
          json: ["version:2", "stable:true"]
          json_types: [number, boolean]
        append: {{headers: ["x-tags:c"]}}
  - name: locked
    paths: [/locked]
    plugins:
    - name: basic-auth
    - name: response-transformer
      config:
        add: {{json: ["hint:ask for an account"]}}
  - name: https-only
    paths: [/https-only]
    plugins:
    - name: response-transformer
      protocols: [https]
      config:
        add: {{headers: ["x-https:yes"]}}
consumers:
- username: alice
  basicauth_credentials:
  - {{username: alice, password: "open sesame"}}
  plugins:
  - name: request-transformer
    config:
      add: {{headers: ["x-plan:pro"]}}
"#
    )
}

/// A response's status, headers and JSON body.
async fn send(request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value, String) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, headers, json, text)
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn requests_and_responses_are_transformed_as_configured() {
    let upstream = Upstream::start("echo").await;
    let gw = GatewayProcess::start(&config(&upstream.url()));
    let client = http_client();

    let body = json!({"name": "Ann", "password": "pw", "role": "admin", "tags": "old"});
    let (status, headers, echoed, text) = send(
        client
            .put(gw.url("/users/ann?debug=1&q=hello&page=7"))
            .header("x-secret", "s3cret")
            .header("x-old", "v")
            .header("x-tier", "silver")
            .header("x-caller", "tester")
            .json(&body),
    )
    .await;
    assert_eq!(status, 200, "{text}\n{}", gw.log());

    // The request, as the upstream got it (the response's `path` was renamed `upstream_path`).
    assert_eq!(echoed["upstream_path"], "/v2/users/ann?query=hello&page=1&source=ward&tag=one", "{text}");
    let got = &echoed["headers"];
    assert_eq!(got["x-secret"], Value::Null, "{text}");
    assert_eq!(got["x-old"], Value::Null, "{text}");
    assert_eq!(got["x-new"], "v", "{text}");
    assert_eq!(got["x-tier"], "gold", "{text}");
    assert_eq!(got["host"], "users.internal", "{text}");
    assert_eq!(got["x-user"], "ann", "{text}");
    assert_eq!(got["x-from-query"], "hello", "{text}");
    assert_eq!(got["x-tags"], "a, b", "{text}");
    let sent: Value = serde_json::from_str(echoed["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent,
        json!({"username": "Ann", "role": "member", "tags": ["old", "new"], "created_by": "tester"}),
        "{text}"
    );
    assert_eq!(got["content-length"], echoed["body"].as_str().unwrap().len().to_string(), "{text}");

    // The response, as the client got it.
    assert_eq!(echoed["method"], "changed", "{text}");
    assert_eq!(echoed["upstream"], Value::Null, "{text}");
    assert_eq!(echoed["version"], 2, "{text}");
    assert_eq!(echoed["stable"], true, "{text}");
    assert_eq!(header(&headers, "x-upstream"), None);
    assert_eq!(header(&headers, "x-transformed"), Some("yes"));
    assert_eq!(header(&headers, "x-tags"), Some("c"));
    assert_eq!(header(&headers, "content-length"), Some(text.len().to_string().as_str()));

    // Without the template's header, its default.
    let (status, _, echoed, text) = send(client.post(gw.url("/users/bob")).json(&json!({}))).await;
    assert_eq!(status, 200, "{text}");
    let sent: Value = serde_json::from_str(echoed["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent, json!({"created_by": "anonymous", "tags": ["new"]}), "{text}");

    // A refusal by another plugin is transformed too; a consumer's own configuration applies.
    let (status, headers, answer, text) = send(client.get(gw.url("/locked"))).await;
    assert_eq!(status, 401, "{text}");
    assert_eq!(answer, json!({"message": "Unauthorized", "hint": "ask for an account"}), "{text}");
    assert!(header(&headers, "www-authenticate").is_some());
    let (status, _, echoed, text) = send(client.get(gw.url("/locked")).basic_auth("alice", Some("open sesame"))).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(echoed["headers"]["x-plan"], "pro", "{text}");
    assert_eq!(echoed["hint"], "ask for an account", "{text}");
    let (status, _, echoed, text) = send(client.get(gw.url("/users/carol"))).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(echoed["headers"]["x-plan"], Value::Null, "only alice's requests: {text}");

    // Limited to https, the plugin leaves plain HTTP alone.
    let (status, headers, _, text) = send(client.get(gw.url("/https-only"))).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(header(&headers, "x-https"), None);
}

#[test]
fn configurations_ward_cannot_serve_are_refused_with_their_path() {
    let text = r#"
_format_version: "3.0"
plugins:
- name: request-transformer
  config:
    add:
      headers: ["x-ok:1", "x-user-agent:$(type(headers['user-agent']))"]
- name: response-transformer
  config:
    add:
      json: ["n:abc"]
      json_types: [number]
"#;
    let run = common::ward_with_config(text, &["gateway", "check", "--config", "{config}"]);
    let stderr = run.fails();
    for want in [
        "plugins[0].config.add.headers[1]: $(type(headers['user-agent'])): '(': Ward evaluates only",
        "plugins[1].config.add.json[0]: 'abc' is not a number",
    ] {
        assert!(stderr.contains(want), "missing {want} in\n{stderr}");
    }
}
