//! Each plugin's documented behaviour, as a client of `ward gateway run` sees it, with an
//! echo upstream reporting what reached it.

mod common;

use common::{GatewayProcess, Upstream, http_client};
use serde_json::Value;

/// One request and what the client must see.
struct Case<'a> {
    method: &'static str,
    path: &'static str,
    headers: &'a [(&'a str, &'a str)],
    body: Option<(&'static str, &'static str)>,
    status: u16,
    /// The JSON message of a gateway rejection, or None for a proxied answer.
    message: Option<&'static str>,
    /// Headers the response must carry.
    response_headers: &'static [(&'static str, &'static str)],
    /// Headers the upstream must (Some) or must not (None) have received.
    upstream_headers: &'static [(&'static str, Option<&'static str>)],
}

const GET: Case<'static> = Case {
    method: "GET",
    path: "/",
    headers: &[],
    body: None,
    status: 200,
    message: None,
    response_headers: &[],
    upstream_headers: &[],
};

async fn check(gw: &GatewayProcess, cases: &[Case<'_>]) {
    let client = http_client();
    for (i, c) in cases.iter().enumerate() {
        let mut req = client.request(c.method.parse().unwrap(), gw.url(c.path));
        for (k, v) in c.headers {
            req = req.header(*k, *v);
        }
        if let Some((content_type, body)) = c.body {
            req = req.header("content-type", content_type).body(body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let what = format!("case {i}: {} {} {:?} -> {status} {text}", c.method, c.path, c.headers);
        assert_eq!(status, c.status, "{what}");
        for (k, v) in c.response_headers {
            assert_eq!(headers.get(*k).and_then(|h| h.to_str().ok()), Some(*v), "{what}: response header {k}");
        }
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match c.message {
            Some(m) => assert_eq!(json["message"], m, "{what}"),
            None => {
                assert_eq!(json["upstream"], "echo", "{what}: the request should have been proxied");
                for (k, v) in c.upstream_headers {
                    assert_eq!(json["headers"][*k].as_str(), *v, "{what}: upstream header {k}");
                }
            }
        }
    }
}

const ALICE_ID: &str = "6a0bf2a8-4d2b-4c64-9c3f-1b2f3c4d5e01";
const ALICE_KEY_ID: &str = "6a0bf2a8-4d2b-4c64-9c3f-1b2f3c4d5e02";

fn key_auth_config(upstream: &str) -> String {
    format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {upstream}
  routes:
  - name: keyed
    paths: [/keyed]
    plugins:
    - name: key-auth
      config: {{hide_credentials: true}}
  - name: body
    paths: [/body]
    plugins:
    - name: key-auth
      config: {{key_in_body: true, key_names: [apikey, x-key], realm: ward}}
  - name: anon
    paths: [/anon]
    plugins:
    - name: key-auth
      config: {{anonymous: guest}}
  - name: open
    paths: [/open]
consumers:
- username: alice
  id: {ALICE_ID}
  custom_id: A-1
  keyauth_credentials:
  - key: alice-key
    id: {ALICE_KEY_ID}
- username: guest
"#
    )
}

#[tokio::test]
async fn key_auth() {
    let upstream = Upstream::start("echo").await;
    let gw = GatewayProcess::start(&key_auth_config(&upstream.url()));
    check(
        &gw,
        &[
            Case {
                path: "/keyed",
                status: 401,
                message: Some("No API key found in request"),
                response_headers: &[("www-authenticate", "Key")],
                ..GET
            },
            Case { path: "/keyed", headers: &[("apikey", "wrong")], status: 401, message: Some("Unauthorized"), ..GET },
            Case {
                path: "/keyed",
                headers: &[("apikey", "")],
                status: 401,
                message: Some("No API key found in request"),
                ..GET
            },
            Case {
                path: "/keyed",
                headers: &[("apikey", "alice-key"), ("apikey", "other")],
                status: 401,
                message: Some("Duplicate API key found"),
                ..GET
            },
            Case { path: "/keyed?apikey=a&apikey=b", status: 401, message: Some("Duplicate API key found"), ..GET },
            Case {
                path: "/keyed",
                headers: &[("apikey", "alice-key"), ("x-consumer-username", "mallory")],
                upstream_headers: &[
                    ("x-consumer-username", Some("alice")),
                    ("x-consumer-id", Some(ALICE_ID)),
                    ("x-consumer-custom-id", Some("A-1")),
                    ("x-credential-identifier", Some(ALICE_KEY_ID)),
                    ("x-anonymous-consumer", None),
                    ("apikey", None),
                ],
                ..GET
            },
            Case {
                path: "/keyed?apikey=alice-key",
                upstream_headers: &[("x-consumer-username", Some("alice"))],
                ..GET
            },
            Case {
                path: "/open",
                headers: &[("x-consumer-username", "mallory"), ("x-anonymous-consumer", "false")],
                upstream_headers: &[("x-consumer-username", None), ("x-anonymous-consumer", None)],
                ..GET
            },
            Case {
                method: "POST",
                path: "/body",
                body: Some(("application/x-www-form-urlencoded", "apikey=alice-key&x=1")),
                upstream_headers: &[("x-consumer-username", Some("alice"))],
                ..GET
            },
            Case {
                method: "POST",
                path: "/body",
                body: Some(("application/json", r#"{"x-key":"alice-key"}"#)),
                upstream_headers: &[("x-consumer-username", Some("alice"))],
                ..GET
            },
            Case {
                path: "/body",
                status: 401,
                message: Some("No API key found in request"),
                response_headers: &[("www-authenticate", "Key realm=\"ward\"")],
                ..GET
            },
            Case {
                path: "/anon",
                upstream_headers: &[("x-anonymous-consumer", Some("true")), ("x-consumer-username", Some("guest"))],
                ..GET
            },
            Case {
                path: "/anon",
                headers: &[("apikey", "alice-key")],
                upstream_headers: &[("x-anonymous-consumer", None), ("x-consumer-username", Some("alice"))],
                ..GET
            },
        ],
    )
    .await;
    // hide_credentials: the key is gone from the query the upstream gets, other arguments stay.
    let r: Value =
        http_client().get(gw.url("/keyed?x=1&apikey=alice-key&y=2")).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["path"], "/?x=1&y=2");
}

#[tokio::test]
async fn kongs_precedence_decides_between_consumer_and_route_configurations() {
    let upstream = Upstream::start("echo").await;
    let config = format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {}
  routes:
  - {{name: shared, paths: [/shared]}}
  - {{name: personal, paths: [/personal]}}
  - {{name: plain, paths: [/plain]}}
consumers:
- username: alice
  keyauth_credentials: [{{key: alice-key}}]
- username: bob
  keyauth_credentials: [{{key: bob-key}}]
plugins:
- name: key-auth
- name: request-termination
  route: shared
  service: echo
  config: {{status_code: 403, message: route and service}}
- name: request-termination
  route: personal
  service: echo
  config: {{status_code: 403, message: route and service}}
- name: request-termination
  consumer: alice
  config: {{status_code: 418, message: alice anywhere}}
- name: request-termination
  consumer: alice
  route: personal
  config: {{status_code: 418, message: alice on this route}}
"#,
        upstream.url()
    );
    let gw = GatewayProcess::start(&config);
    let (alice, bob) = (&[("apikey", "alice-key")][..], &[("apikey", "bob-key")][..]);
    check(
        &gw,
        &[
            // route+service beats a configuration on the consumer alone ...
            Case { path: "/shared", headers: alice, status: 403, message: Some("route and service"), ..GET },
            // ... but not one on the consumer and the route.
            Case { path: "/personal", headers: alice, status: 418, message: Some("alice on this route"), ..GET },
            // Where no route or service configuration exists, the consumer's applies.
            Case { path: "/plain", headers: alice, status: 418, message: Some("alice anywhere"), ..GET },
            Case { path: "/plain", headers: bob, status: 200, ..GET },
            Case { path: "/shared", headers: bob, status: 403, message: Some("route and service"), ..GET },
        ],
    )
    .await;
}

#[tokio::test]
async fn basic_auth_acl_and_consumer_scoped_plugins() {
    let upstream = Upstream::start("echo").await;
    let config = format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {}
  routes:
  - name: admins
    paths: [/admins]
    plugins:
    - name: basic-auth
      config: {{hide_credentials: true}}
    - name: acl
      config: {{allow: [admin]}}
  - name: not-banned
    paths: [/not-banned]
    plugins:
    - name: basic-auth
    - name: acl
      config: {{deny: [banned], hide_groups_header: true}}
  - name: acl-only
    paths: [/acl-only]
    plugins:
    - name: acl
      config: {{allow: [admin]}}
consumers:
- username: alice
  basicauth_credentials:
  - {{username: alice, password: "open sesame"}}
  acls:
  - {{group: admin}}
  - {{group: ops}}
  plugins:
  - name: request-termination
    config: {{status_code: 418, message: alice is on holiday}}
    route: not-banned
- username: bob
  basicauth_credentials:
  - {{username: bob, password: hunter2}}
  acls:
  - {{group: banned}}
"#,
        upstream.url()
    );
    let gw = GatewayProcess::start(&config);
    let basic = |user: &str, pass: &str| {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
    };
    let (alice, bob, wrong) = (basic("alice", "open sesame"), basic("bob", "hunter2"), basic("alice", "guess"));
    let (alice, bob, wrong) = (alice.as_str(), bob.as_str(), wrong.as_str());
    check(
        &gw,
        &[
            Case {
                path: "/admins",
                status: 401,
                message: Some("Unauthorized"),
                response_headers: &[("www-authenticate", "Basic realm=\"service\"")],
                ..GET
            },
            Case {
                path: "/admins",
                headers: &[("authorization", wrong)],
                status: 401,
                message: Some("Unauthorized"),
                ..GET
            },
            Case {
                path: "/admins",
                headers: &[("authorization", alice)],
                upstream_headers: &[
                    ("x-consumer-username", Some("alice")),
                    ("x-credential-identifier", Some("alice")),
                    ("x-consumer-groups", Some("admin, ops")),
                    ("authorization", None),
                ],
                ..GET
            },
            Case {
                path: "/admins",
                headers: &[("proxy-authorization", alice)],
                upstream_headers: &[("x-consumer-username", Some("alice"))],
                ..GET
            },
            Case {
                path: "/admins",
                headers: &[("authorization", bob)],
                status: 403,
                message: Some("You cannot consume this service"),
                ..GET
            },
            Case {
                path: "/not-banned",
                headers: &[("authorization", bob)],
                status: 403,
                message: Some("You cannot consume this service"),
                ..GET
            },
            // A plugin scoped to alice and this route applies once basic-auth knows her.
            Case {
                path: "/not-banned",
                headers: &[("authorization", alice)],
                status: 418,
                message: Some("alice is on holiday"),
                ..GET
            },
            Case { path: "/acl-only", status: 401, message: Some("Unauthorized"), ..GET },
        ],
    )
    .await;
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn jwt() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let upstream = Upstream::start("echo").await;
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let block = |pem: &str| common::yaml_block(pem, 6);
    let config = format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {}
  routes:
  - name: signed
    paths: [/signed]
    plugins:
    - name: jwt
      config: {{claims_to_verify: [exp, nbf], maximum_expiration: 3600}}
  - name: lenient
    paths: [/lenient]
    plugins:
    - name: jwt
consumers:
- username: alice
  jwt_secrets:
  - {{key: alice-iss, secret: alice-secret, algorithm: HS256}}
  - {{key: alice-384, secret: alice-secret-384, algorithm: HS384}}
  - key: alice-es
    algorithm: ES256
    rsa_public_key: |
{}
  - key: alice-ed
    algorithm: EdDSA
    rsa_public_key: |
{}
"#,
        upstream.url(),
        block(&ec.public_key_pem()),
        block(&ed.public_key_pem()),
    );
    let gw = GatewayProcess::start(&config);
    let now = unix_now();
    let claims = |iss: &str, exp: u64| serde_json::json!({ "iss": iss, "exp": exp, "nbf": now - 10 });
    let hs = |alg: Algorithm, secret: &str, c: Value| {
        encode(&Header::new(alg), &c, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    };
    let good = hs(Algorithm::HS256, "alice-secret", claims("alice-iss", now + 600));
    let es = encode(
        &Header::new(Algorithm::ES256),
        &claims("alice-es", now + 600),
        &EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let eddsa = encode(
        &Header::new(Algorithm::EdDSA),
        &claims("alice-ed", now + 600),
        &EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    // Algorithm confusion: an HS256 token keyed with the ES256 secret's public key.
    let confused = hs(Algorithm::HS256, &ec.public_key_pem(), claims("alice-es", now + 600));
    let expired = hs(Algorithm::HS256, "alice-secret", claims("alice-iss", now - 5));
    let too_long = hs(Algorithm::HS256, "alice-secret", claims("alice-iss", now + 7200));
    let forged = hs(Algorithm::HS256, "not-the-secret", claims("alice-iss", now + 600));
    let unknown = hs(Algorithm::HS256, "x", claims("nobody", now + 600));
    let hs384 = hs(Algorithm::HS384, "alice-secret-384", claims("alice-384", now + 600));
    let unsigned = {
        use base64::Engine;
        let b = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", b(serde_json::json!({"alg": "none"})), b(claims("alice-iss", now + 600)))
    };
    let bearer = |t: &str| format!("Bearer {t}");
    let (good_b, es_b, eddsa_b, hs384_b, confused_b, unsigned_b, forged_b, unknown_b) = (
        bearer(&good),
        bearer(&es),
        bearer(&eddsa),
        bearer(&hs384),
        bearer(&confused),
        bearer(&unsigned),
        bearer(&forged),
        bearer(&unknown),
    );
    let cases = [
        Case {
            path: "/signed",
            status: 401,
            message: Some("Unauthorized"),
            response_headers: &[("www-authenticate", "Bearer")],
            ..GET
        },
        Case {
            path: "/signed",
            headers: &[("authorization", good_b.as_str())],
            upstream_headers: &[("x-consumer-username", Some("alice")), ("x-credential-identifier", Some("alice-iss"))],
            ..GET
        },
        Case {
            path: "/signed",
            headers: &[("authorization", es_b.as_str())],
            upstream_headers: &[("x-credential-identifier", Some("alice-es"))],
            ..GET
        },
        Case {
            path: "/signed",
            headers: &[("authorization", eddsa_b.as_str())],
            upstream_headers: &[("x-credential-identifier", Some("alice-ed"))],
            ..GET
        },
        Case { path: "/signed", headers: &[("authorization", hs384_b.as_str())], ..GET },
        Case {
            path: "/signed",
            headers: &[("authorization", confused_b.as_str())],
            status: 401,
            message: Some("Invalid algorithm"),
            ..GET
        },
        Case {
            path: "/signed",
            headers: &[("authorization", unsigned_b.as_str())],
            status: 401,
            message: Some("Bad token; invalid alg"),
            ..GET
        },
        Case {
            path: "/signed",
            headers: &[("authorization", forged_b.as_str())],
            status: 401,
            message: Some("Invalid signature"),
            ..GET
        },
        Case {
            path: "/signed",
            headers: &[("authorization", unknown_b.as_str())],
            status: 401,
            message: Some("No credentials found for given 'iss'"),
            response_headers: &[("www-authenticate", "Bearer error=\"invalid_token\"")],
            ..GET
        },
        Case {
            path: "/signed",
            headers: &[("authorization", "Bearer not-a-token")],
            status: 401,
            message: Some("Bad token; invalid JSON"),
            ..GET
        },
    ];
    check(&gw, &cases).await;
    // Claim errors come as Kong writes them: {"exp": "..."}.
    let client = http_client();
    for (token, path, claim, message) in [
        (&expired, "/signed", "exp", "token expired"),
        (&too_long, "/signed", "exp", "exceeds maximum allowed expiration"),
    ] {
        let r = client.get(gw.url(path)).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body[claim], message, "{path}");
    }
    // Without claims_to_verify Kong does not look at exp; two different tokens are refused.
    let r = client.get(gw.url("/lenient")).bearer_auth(&expired).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client.get(gw.url(&format!("/lenient?jwt={good}"))).bearer_auth(&expired).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "Multiple tokens provided");
}

#[tokio::test]
async fn ip_restriction_bot_detection_and_sizes() {
    let upstream = Upstream::start("echo").await;
    let config = format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {}
  routes:
  - name: denied
    paths: [/denied]
    plugins:
    - name: ip-restriction
      config: {{deny: [127.0.0.0/8, "::1"]}}
  - name: allowed
    paths: [/allowed]
    plugins:
    - name: ip-restriction
      config: {{allow: [127.0.0.1/32, "2001:db8::/32"], deny: [10.0.0.0/8]}}
  - name: custom
    paths: [/custom]
    plugins:
    - name: ip-restriction
      config: {{allow: [192.0.2.0/24], status: 401, message: go away}}
  - name: bots
    paths: [/bots]
    plugins:
    - name: bot-detection
      config: {{deny: ["(?i)evil"], allow: ["^FriendlyBot"]}}
  - name: small
    paths: [/small]
    plugins:
    - name: request-size-limiting
      config: {{allowed_payload_size: 10, size_unit: bytes}}
  - name: sized
    paths: [/sized]
    plugins:
    - name: request-size-limiting
      config: {{allowed_payload_size: 1, size_unit: kilobytes, require_content_length: true}}
"#,
        upstream.url()
    );
    let gw = GatewayProcess::start(&config);
    check(
        &gw,
        &[
            Case { path: "/denied", status: 403, message: Some("IP address not allowed: 127.0.0.1"), ..GET },
            Case { path: "/allowed", ..GET },
            Case { path: "/custom", status: 401, message: Some("go away"), ..GET },
            // X-Forwarded-For from an untrusted peer changes nothing.
            Case {
                path: "/denied",
                headers: &[("x-forwarded-for", "192.0.2.7")],
                status: 403,
                message: Some("IP address not allowed: 127.0.0.1"),
                ..GET
            },
            Case { path: "/bots", headers: &[("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0")], ..GET },
            Case {
                path: "/bots",
                headers: &[("user-agent", "Mozilla/5.0 (compatible; Googlebot/2.1)")],
                status: 403,
                message: Some("Forbidden"),
                ..GET
            },
            Case {
                path: "/bots",
                headers: &[("user-agent", "my EVIL scraper")],
                status: 403,
                message: Some("Forbidden"),
                ..GET
            },
            Case { path: "/bots", headers: &[("user-agent", "FriendlyBot/1.0")], ..GET },
            Case { method: "POST", path: "/small", body: Some(("text/plain", "0123456789")), ..GET },
            Case {
                method: "POST",
                path: "/small",
                body: Some(("text/plain", "0123456789A")),
                status: 413,
                message: Some("Request size limit exceeded"),
                ..GET
            },
            Case { path: "/sized", status: 411, message: Some("A valid Content-Length header is required"), ..GET },
            Case { method: "POST", path: "/sized", body: Some(("text/plain", "small")), ..GET },
        ],
    )
    .await;
    // A chunked body (no Content-Length) over the limit, and one announced with Expect: 100-continue.
    let chunked = "POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
    let (status, text) = common::raw_http(gw.proxy, chunked).await;
    assert_eq!(status, 413, "{text}");
    let expect =
        "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n";
    let (status, text) = common::raw_http(gw.proxy, expect).await;
    assert_eq!(status, 417, "{text}");
}

#[tokio::test]
async fn cors_and_request_termination() {
    let upstream = Upstream::start("echo").await;
    let config = format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {}
  routes:
  - name: cors
    paths: [/cors]
    plugins:
    - name: cors
      config:
        origins: ["https://app.example.com", "https://.*\\.trusted\\.test"]
        methods: [GET, POST]
        headers: [x-token]
        exposed_headers: [x-upstream]
        credentials: true
        max_age: 600
    - name: key-auth
  - name: down
    paths: [/down]
    plugins:
    - name: request-termination
  - name: teapot
    paths: [/teapot]
    plugins:
    - name: request-termination
      config: {{status_code: 418, body: "<short and stout/>", content_type: application/xml, trigger: x-brew}}
"#,
        upstream.url()
    );
    let gw = GatewayProcess::start(&config);
    let client = http_client();
    // Preflight: answered by the gateway, before key-auth.
    let r = client
        .request(reqwest::Method::OPTIONS, gw.url("/cors"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-allow-methods"], "GET,POST");
    assert_eq!(h["access-control-allow-headers"], "x-token");
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["vary"], "Origin");
    // A refused request still carries the CORS headers, so a browser can read the 401.
    let r = client.get(gw.url("/cors")).header("origin", "https://a.trusted.test").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://a.trusted.test");
    assert_eq!(r.headers()["access-control-expose-headers"], "x-upstream");
    let r = client.get(gw.url("/cors")).header("origin", "https://evil.test").send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert_eq!(r.headers()["vary"], "Origin");
    check(
        &gw,
        &[
            Case { path: "/down", status: 503, message: Some("The upstream server is currently unavailable"), ..GET },
            Case { path: "/teapot", ..GET },
        ],
    )
    .await;
    let r = client.get(gw.url("/teapot")).header("x-brew", "1").send().await.unwrap();
    assert_eq!(r.status(), 418);
    assert_eq!(r.headers()["content-type"], "application/xml");
    assert_eq!(r.text().await.unwrap(), "<short and stout/>");
}

#[tokio::test]
async fn rate_limiting_local() {
    let upstream = Upstream::start("echo").await;
    let config = format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {}
  routes:
  - name: limited
    paths: [/limited]
    plugins:
    - name: rate-limiting
      config: {{minute: 6, policy: local, limit_by: ip}}
  - name: by-header
    paths: [/by-header]
    plugins:
    - name: rate-limiting
      config: {{hour: 20, limit_by: header, header_name: x-tenant}}
"#,
        upstream.url()
    );
    let gw = GatewayProcess::start(&config);
    let client = http_client();
    common::avoid_minute_boundary().await;
    let mut seen = Vec::new();
    for _ in 0..7 {
        let r = client.get(gw.url("/limited")).send().await.unwrap();
        let h = r.headers().clone();
        let get = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        seen.push((r.status().as_u16(), get("ratelimit-remaining"), get("x-ratelimit-remaining-minute")));
        if r.status() == 429 {
            assert_eq!(get("ratelimit-limit"), "6");
            assert!(get("retry-after").parse::<u64>().is_ok_and(|s| (1..=60).contains(&s)), "{h:?}");
            assert_eq!(r.json::<Value>().await.unwrap()["message"], "API rate limit exceeded");
        }
    }
    let want: Vec<(u16, String, String)> =
        [(200, "5"), (200, "4"), (200, "3"), (200, "2"), (200, "1"), (200, "0"), (429, "0")]
            .iter()
            .map(|(s, r)| (*s, r.to_string(), r.to_string()))
            .collect();
    assert_eq!(seen, want, "seven requests against minute: 6");
    // Exact under concurrency: 50 requests at once against 20 per hour admit exactly 20.
    let requests = (0..50).map(|_| {
        let client = client.clone();
        let url = gw.url("/by-header");
        tokio::spawn(async move { client.get(url).header("x-tenant", "t1").send().await.unwrap().status().as_u16() })
    });
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 20, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 30);
    // Another tenant has its own count.
    let r = client.get(gw.url("/by-header")).header("x-tenant", "t2").send().await.unwrap();
    assert_eq!(r.headers()["ratelimit-remaining"], "19");
}

/// Kong's UUID, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in lowercase hex.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
}

#[tokio::test]
async fn correlation_id() {
    let upstream = Upstream::start("echo").await;
    let config = format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {}
  routes:
  - name: counter
    paths: [/counter]
    plugins:
    - name: correlation-id
  - name: custom
    paths: [/custom]
    plugins:
    - name: correlation-id
      config: {{header_name: Foo-Bar-Id}}
  - name: echoed
    paths: [/echoed]
    plugins:
    - name: correlation-id
      config: {{generator: uuid, echo_downstream: true}}
  - name: tracker
    paths: [/tracker]
    plugins:
    - name: correlation-id
      config: {{generator: tracker}}
  - name: teapot
    paths: [/teapot]
    plugins:
    - name: correlation-id
      config: {{generator: uuid, echo_downstream: true}}
    - name: request-termination
      config: {{status_code: 418, message: "I'm a teapot"}}
- name: down
  url: http://127.0.0.1:1
  routes:
  - name: down
    paths: [/down]
    plugins:
    - name: correlation-id
      config: {{generator: uuid, echo_downstream: true}}
"#,
        upstream.url()
    );
    let gw = GatewayProcess::start(&config);
    let client = http_client();
    let get = async |path: &str, headers: &[(&str, &str)]| {
        let mut request = client.get(gw.url(path));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null);
        (status, headers, body)
    };
    let upstream_id = |body: &Value, name: &str| body["headers"][name].as_str().unwrap_or_default().to_string();

    // uuid#counter: one UUID for the process, and a counter from 1.
    let (_, _, first) = get("/counter", &[]).await;
    let (_, _, second) = get("/counter", &[]).await;
    let (first, second) = (upstream_id(&first, "kong-request-id"), upstream_id(&second, "kong-request-id"));
    let (uuid_1, counter_1) = first.split_once('#').unwrap_or_default();
    let (uuid_2, counter_2) = second.split_once('#').unwrap_or_default();
    assert!(is_uuid(uuid_1) && uuid_1 == uuid_2, "{first} {second}");
    assert_eq!((counter_1, counter_2), ("1", "2"));

    // uuid: a new one each time; echoed to the client, the same the upstream got.
    let (status, headers, body) = get("/echoed", &[]).await;
    assert_eq!(status, 200);
    let id = upstream_id(&body, "kong-request-id");
    assert!(is_uuid(&id), "{id}");
    assert_eq!(headers["kong-request-id"], id.as_str());
    let (_, _, again) = get("/echoed", &[]).await;
    assert_ne!(upstream_id(&again, "kong-request-id"), id);

    // tracker: address-port-pid-connection-requests-time.
    let (_, _, body) = get("/tracker", &[]).await;
    let tracker = upstream_id(&body, "kong-request-id");
    let parts: Vec<&str> = tracker.split('-').collect();
    assert_eq!(parts.len(), 6, "{tracker}");
    assert_eq!(parts[0], gw.proxy.ip().to_string(), "{tracker}");
    assert_eq!(parts[1], gw.proxy.port().to_string(), "{tracker}");
    assert!(parts[2..5].iter().all(|p| p.parse::<u64>().is_ok()), "{tracker}");
    let (seconds, millis) = parts[5].split_once('.').unwrap_or_default();
    assert!(seconds.len() == 10 && millis.len() == 3 && seconds.parse::<u64>().is_ok(), "{tracker}");

    // A custom header; not echoed unless asked; a client's own ID is kept, a blank one is not.
    let (_, headers, body) = get("/custom", &[]).await;
    assert!(upstream_id(&body, "foo-bar-id").contains('#'), "{body}");
    assert!(headers.get("foo-bar-id").is_none() && headers.get("kong-request-id").is_none());
    let (_, _, body) = get("/custom", &[("Foo-Bar-Id", "foobar")]).await;
    assert_eq!(upstream_id(&body, "foo-bar-id"), "foobar");
    let (_, _, body) = get("/custom", &[("Foo-Bar-Id", " ")]).await;
    assert_ne!(upstream_id(&body, "foo-bar-id").trim(), "", "{body}");

    // Echoed on answers the upstream did not give: another plugin's, and an unreachable upstream's.
    let (status, headers, _) = get("/teapot", &[]).await;
    assert_eq!(status, 418);
    assert!(is_uuid(headers["kong-request-id"].to_str().unwrap()), "{headers:?}");
    let (status, headers, _) = get("/teapot", &[("kong-request-id", "my very personal id")]).await;
    assert_eq!(status, 418);
    assert_eq!(headers["kong-request-id"], "my very personal id");
    let (status, headers, _) = get("/down", &[]).await;
    assert_eq!(status, 502);
    assert!(is_uuid(headers["kong-request-id"].to_str().unwrap()), "{headers:?}");
}

/// An `Authorization: hmac ...` value: `lines` (the signing string) signed with `secret`.
fn hmac_authorization(user: &str, algorithm: &str, headers: &str, secret: &str, lines: &str) -> String {
    use base64::Engine;
    let hash = match algorithm {
        "hmac-sha1" => aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        "hmac-sha256" => aws_lc_rs::hmac::HMAC_SHA256,
        _ => aws_lc_rs::hmac::HMAC_SHA512,
    };
    let tag = aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(hash, secret.as_bytes()), lines.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    format!(r#"hmac username="{user}", algorithm="{algorithm}", headers="{headers}", signature="{signature}""#)
}

fn http_date(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

#[tokio::test]
async fn hmac_auth() {
    let upstream = Upstream::start("echo").await;
    let config = format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {}
  routes:
  - name: signed
    paths: [/signed]
    plugins:
    - name: hmac-auth
      config: {{hide_credentials: true, algorithms: [hmac-sha256, hmac-sha512], realm: orders}}
  - name: strict
    paths: [/strict]
    plugins:
    - name: hmac-auth
      config: {{enforce_headers: [date, request-line], validate_request_body: true}}
consumers:
- username: alice
  hmacauth_credentials:
  - username: alice-hmac
    secret: s3cret
"#,
        upstream.url()
    );
    let gw = GatewayProcess::start(&config);
    let client = http_client();
    let now = http_date(chrono::Utc::now());
    let stale = http_date(chrono::Utc::now() - chrono::TimeDelta::minutes(10));
    let sign = |algorithm: &str, headers: &str, lines: &str| {
        hmac_authorization("alice-hmac", algorithm, headers, "s3cret", lines)
    };
    let get_line = |path: &str| format!("date: {now}\nGET {path} HTTP/1.1");
    let good = sign("hmac-sha256", "date request-line", &get_line("/signed?x=1"));
    let unverifiable = Some("HMAC signature cannot be verified");
    let mismatch = Some("HMAC signature does not match");
    let no_date =
        Some("HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication");
    let digest = |body: &str| {
        use base64::Engine;
        let sha = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body.as_bytes());
        ("digest", format!("SHA-256={}", base64::engine::general_purpose::STANDARD.encode(sha.as_ref())))
    };
    let strict_line = |method: &str| format!("date: {now}\n{method} /strict HTTP/1.1");
    // A current Date and this Authorization.
    let dated = |authorization: String| vec![("date", now.clone()), ("authorization", authorization)];
    let unknown = hmac_authorization("bob", "hmac-sha256", "date", "s3cret", &format!("date: {now}"));
    let wrong_secret = hmac_authorization("alice-hmac", "hmac-sha256", "date", "guess", &format!("date: {now}"));
    let strict_post = sign("hmac-sha1", "date request-line", &strict_line("POST"));
    // (method, path, request headers, body, status, message of a refusal)
    type Try = (&'static str, &'static str, Vec<(&'static str, String)>, &'static str, u16, Option<&'static str>);
    let tries: Vec<Try> = vec![
        ("GET", "/signed", vec![], "", 401, Some("Unauthorized")),
        ("GET", "/signed?x=1", vec![("authorization", good.clone())], "", 401, no_date),
        ("GET", "/signed?x=1", vec![("date", stale), ("authorization", good.clone())], "", 401, no_date),
        ("GET", "/signed", dated("hmac username".into()), "", 401, unverifiable),
        ("GET", "/signed?x=1", dated(unknown), "", 401, unverifiable),
        // hmac-sha1 is not among this route's algorithms.
        (
            "GET",
            "/signed?x=1",
            dated(sign("hmac-sha1", "date request-line", &get_line("/signed?x=1"))),
            "",
            401,
            unverifiable,
        ),
        // Signed for another target, or with another secret.
        ("GET", "/signed?x=2", dated(good.clone()), "", 401, mismatch),
        ("GET", "/signed?x=1", dated(wrong_secret), "", 401, mismatch),
        ("GET", "/signed?x=1", dated(good.clone()), "", 200, None),
        // Proxy-Authorization, X-Date and @request-target; SHA-512.
        (
            "GET",
            "/signed",
            vec![
                ("x-date", now.clone()),
                (
                    "proxy-authorization",
                    sign(
                        "hmac-sha512",
                        "x-date @request-target",
                        &format!("x-date: {now}\n@request-target: get /signed"),
                    ),
                ),
            ],
            "",
            200,
            None,
        ),
        // enforce_headers: a signature that leaves out request-line is refused.
        ("GET", "/strict", dated(sign("hmac-sha1", "date", &format!("date: {now}"))), "", 401, unverifiable),
        // validate_request_body: the Digest must match the body, and a body needs one.
        ("POST", "/strict", [dated(strict_post.clone()), vec![digest("amount=10")]].concat(), "amount=10", 200, None),
        (
            "POST",
            "/strict",
            [dated(strict_post.clone()), vec![digest("amount=10")]].concat(),
            "amount=1000",
            401,
            mismatch,
        ),
        ("POST", "/strict", dated(strict_post), "amount=10", 401, mismatch),
        ("GET", "/strict", dated(sign("hmac-sha1", "date request-line", &strict_line("GET"))), "", 200, None),
    ];
    for (i, (method, path, headers, body, want, message)) in tries.iter().enumerate() {
        let mut request = client.request(method.parse().unwrap(), gw.url(path));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if !body.is_empty() {
            request = request.header("content-type", "application/x-www-form-urlencoded").body(*body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let json: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null);
        let what = format!("try {i}: {method} {path} -> {status} {json}");
        assert_eq!(status, *want, "{what}");
        match *message {
            Some(message) => {
                assert_eq!(json["message"], message, "{what}");
                let realm = if path.starts_with("/signed") { r#"hmac realm="orders""# } else { "hmac" };
                assert_eq!(headers["www-authenticate"], realm, "{what}");
            }
            None => {
                assert_eq!(json["headers"]["x-consumer-username"], "alice", "{what}");
                assert_eq!(json["headers"]["x-credential-identifier"], "alice-hmac", "{what}");
                if path.starts_with("/signed") {
                    assert!(json["headers"]["authorization"].is_null(), "hidden: {what}");
                    assert!(json["headers"]["proxy-authorization"].is_null(), "hidden: {what}");
                }
            }
        }
    }
}
