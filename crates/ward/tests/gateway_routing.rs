//! Routing as a client sees it: Kong's ordering, hosts, strip_path, path_handling and
//! preserve_host, a service's url winning over the parts written beside it,
//! the path normalised before matching (traversal and encoded-path attempts against a
//! protected route), request smuggling refused, and the X-Forwarded-* headers.

mod common;

use common::{GatewayProcess, Upstream, http_client, raw_http};
use serde_json::Value;

fn config(upstream: &str) -> String {
    format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {upstream}/base
  routes:
  - name: admin
    paths: [/admin]
    plugins:
    - name: key-auth
  - name: public
    paths: [/public]
  - name: versioned
    paths: ["~/api/v(?<version>\\d+)/admin"]
    regex_priority: 10
  - name: api
    paths: [/api]
    strip_path: false
  - name: by-host
    hosts: ["*.example.test"]
    paths: [/api]
    preserve_host: true
  - name: secure
    paths: [/secure]
    protocols: [https]
  - name: redirect
    paths: [/moved]
    protocols: [https]
    https_redirect_status_code: 301
# url is Kong's shorthand for protocol, host, port and path: its parts win.
- name: by-url
  url: {upstream}/kong
  protocol: https
  host: elsewhere.invalid
  port: 1
  path: /written
  routes:
  - name: url-wins
    paths: [/url-wins]
  - name: v1-stripped
    paths: [/tv1/]
    path_handling: v1
  - name: v1-kept
    paths: [/fv1]
    path_handling: v1
    strip_path: false
consumers:
- username: alice
  keyauth_credentials: [{{key: k}}]
"#
    )
}

#[tokio::test]
async fn routing_and_forwarded_headers() {
    let upstream = Upstream::start("echo").await;
    let gw = GatewayProcess::start(&config(&upstream.url()));
    let client = http_client();
    // (host, path, status, upstream path)
    let table = [
        ("localhost", "/public/x?q=1", 200, Some("/base/x?q=1")),
        ("localhost", "/api/v2/admin/users", 200, Some("/base/users")),
        ("localhost", "/api/items", 200, Some("/base/api/items")),
        ("shop.example.test", "/api/items", 200, Some("/base/items")),
        ("localhost", "/elsewhere", 404, None),
        ("localhost", "/url-wins/x", 200, Some("/kong/x")),
        // Kong's path_handling v1: the service's path is a prefix, without a slash added.
        ("localhost", "/tv1/req?q=1", 200, Some("/kongreq?q=1")),
        ("localhost", "/fv1req", 200, Some("/kongfv1req")),
        ("localhost", "/fv1/req/", 200, Some("/kongfv1/req/")),
    ];
    for (host, path, status, upstream_path) in table {
        let r = client.get(gw.url(path)).header("host", host).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{host}{path}");
        let body: Value = r.json().await.unwrap();
        match upstream_path {
            Some(p) => assert_eq!(body["path"], p, "{host}{path}"),
            None => assert_eq!(body["message"], "no Route matched with those values"),
        }
    }
    // preserve_host keeps the client's Host; otherwise the upstream's own is sent.
    let r: Value =
        client.get(gw.url("/api/x")).header("host", "shop.example.test").send().await.unwrap().json().await.unwrap();
    assert_eq!(r["headers"]["host"], "shop.example.test");
    let r: Value = client.get(gw.url("/public")).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["headers"]["host"], upstream.addr.to_string());
    let h = &r["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-port"], gw.proxy.port().to_string());
    assert_eq!(h["x-forwarded-path"], "/public");
    assert_eq!(h["x-forwarded-prefix"], "/public");
    // Hop-by-hop headers stop at the gateway, and so do those named in Connection (a TE of
    // exactly `trailers` goes on, as through the proxies: gRPC needs it).
    let r: Value = client
        .get(gw.url("/public"))
        .header("connection", "x-private")
        .header("x-private", "1")
        .header("te", "gzip")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["headers"]["x-private"].is_null() && r["headers"]["te"].is_null(), "{r}");
    // An https-only route over plain HTTP: Kong's 426, or the configured redirect.
    let r = client.get(gw.url("/secure")).send().await.unwrap();
    assert_eq!(r.status(), 426);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "Please use HTTPS protocol");
    let no_redirects =
        reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirects.get(gw.url("/moved?a=1")).header("host", "shop.test:8000").send().await.unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "https://shop.test/moved?a=1");
}

#[tokio::test]
async fn traversal_and_encoded_paths_cannot_reach_a_protected_route() {
    let upstream = Upstream::start("echo").await;
    let gw = GatewayProcess::start(&config(&upstream.url()));
    // (request target, status): everything that means /admin needs the key.
    let table = [
        ("/admin", 401),
        ("/public/../admin", 401),
        ("/public/./../admin/", 401),
        ("/public/%2e%2e/admin", 401),
        ("/public/%2E%2E/%61dmin", 401),
        ("//admin", 401),
        ("/public//..//admin", 401),
        ("/../../admin", 401),
        ("/public%2F..%2Fadmin", 400),
        ("/public%2f..%2fadmin", 400),
        ("/public%5C..%5Cadmin", 400),
        ("/admin%00.json", 400),
        ("/public/%252e%252e/admin", 200),
    ];
    for (target, status) in table {
        let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let (got, response) = raw_http(gw.proxy, &request).await;
        assert_eq!(got, status, "{target}:\n{response}");
        if status == 200 {
            // Reached the public route, and the upstream got the same (still encoded) path.
            assert!(response.contains(r#""path":"/base/%252e%252e/admin""#), "{response}");
        }
    }
}

#[tokio::test]
async fn smuggling_attempts_are_refused() {
    let upstream = Upstream::start("echo").await;
    let gw = GatewayProcess::start(&config(&upstream.url()));
    let refused = [
        "POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\nConnection: close\r\n\r\nabcde",
        "GET /public HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n\r\n",
        "POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\nabcde",
    ];
    for attempt in refused {
        let (status, response) = raw_http(gw.proxy, attempt).await;
        assert_eq!(status, 400, "{attempt:?}:\n{response}");
    }
    assert_eq!(upstream.count(), 0, "nothing may reach the upstream");
    // Content-Length beside chunked: refused before any parser frames it, and the request
    // hidden behind the body is never read.
    let smuggler = "POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n\
                    0\r\n\r\nGET /public/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let (status, response) = raw_http(gw.proxy, smuggler).await;
    assert_eq!(status, 400, "{response}");
    assert_eq!(response.matches("HTTP/1.1").count(), 1, "one answer only:\n{response}");
    assert!(response.contains("both Content-Length and Transfer-Encoding"), "{response}");
    assert_eq!(upstream.count(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let upstream = Upstream::start("echo").await;
    let config = format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {}
  routes:
  - name: office
    paths: [/office]
    plugins:
    - name: ip-restriction
      config: {{allow: [192.0.2.0/24]}}
"#,
        upstream.url()
    );
    let trusting = GatewayProcess::start_with(&config, &["--trusted-ips", "127.0.0.1,::1"]);
    let plain = GatewayProcess::start(&config);
    let client = http_client();
    let get = |gw: &GatewayProcess, xff: &str| client.get(gw.url("/office")).header("x-forwarded-for", xff).send();
    let r = get(&trusting, "192.0.2.10").await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["headers"]["x-real-ip"], "192.0.2.10");
    assert_eq!(body["headers"]["x-forwarded-for"], "192.0.2.10, 127.0.0.1");
    // The client's own (untrusted) claims to the left of the real client do not count.
    let r = get(&trusting, "192.0.2.10, 198.51.100.1").await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "IP address not allowed: 198.51.100.1");
    let r = get(&plain, "192.0.2.10").await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "IP address not allowed: 127.0.0.1");
}
