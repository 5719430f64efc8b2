//! The session plugin, as a client of `ward gateway run` sees it: key-auth with an anonymous
//! consumer that acl refuses, and a session cookie that stands in for the key until logout,
//! or until the consumer leaves the configuration.

mod common;

use common::{GatewayProcess, Upstream, http_client};
use serde_json::Value;

const CREDENTIAL: &str = "5d0b6b2e-8f1c-4c3a-9e7d-2a4b6c8d0e1f";

fn config(upstream: &str, with_alice: bool) -> String {
    let alice = if with_alice {
        format!(
            "- username: alice\n  keyauth_credentials: [{{id: {CREDENTIAL}, key: alice-key}}]\n  acls: [{{group: staff}}]\n"
        )
    } else {
        String::new()
    };
    format!(
        r#"
_format_version: "3.0"
services:
- name: app
  url: {upstream}
  routes:
  - name: app
    paths: [/app]
    plugins:
    - name: session
      config:
        secret: correct horse battery staple
        response_headers: [subject]
    - name: key-auth
      config: {{anonymous: anonymous}}
    - name: acl
      config: {{allow: [staff]}}
consumers:
{alice}- username: anonymous
"#
    )
}

/// What the gateway answered: status, Set-Cookie values, Session-Subject, JSON body (the
/// echo upstream's report of the request it got, when it got one).
struct Answer {
    status: u16,
    set_cookies: Vec<String>,
    subject: Option<String>,
    json: Value,
    text: String,
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let set_cookies =
        response.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    let subject = response.headers().get("session-subject").map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, set_cookies, subject, json, text }
}

#[tokio::test]
async fn a_session_cookie_stands_in_for_the_key_until_logout() {
    let upstream = Upstream::start("app").await;
    let gw = GatewayProcess::start(&config(&upstream.url(), true));
    let client = http_client();
    let url = gw.url("/app");

    // Without a key: the anonymous consumer, whom acl refuses. No session for it.
    let a = send(client.get(&url)).await;
    assert_eq!((a.status, a.json["message"].as_str()), (403, Some("You cannot consume this service")), "{}", a.text);
    assert!(a.set_cookies.is_empty(), "{:?}", a.set_cookies);

    // With the key: through, and a session cookie with Kong's default attributes.
    let a = send(client.get(&url).header("apikey", "alice-key")).await;
    assert_eq!(a.status, 200, "{}\n{}", a.text, gw.log());
    assert_eq!(a.subject.as_deref(), Some("alice"));
    assert_eq!(a.set_cookies.len(), 1, "{:?}", a.set_cookies);
    let set = &a.set_cookies[0];
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(set.split("; ").any(|p| p == attribute), "{attribute} missing in {set}");
    }
    assert!(!set.contains("Max-Age"), "a session cookie, not a persistent one: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("session=") && cookie.len() > 100, "{cookie}");

    // With only the cookie: through as alice; the upstream sees her headers and groups.
    let hits = upstream.count();
    let a = send(client.get(&url).header("cookie", &cookie)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let headers = &a.json["headers"];
    assert_eq!(headers["x-consumer-username"], "alice", "{}", a.text);
    assert_eq!(headers["x-credential-identifier"], CREDENTIAL, "{}", a.text);
    assert_eq!(headers["x-consumer-groups"], "staff", "{}", a.text);
    assert_eq!(headers["x-anonymous-consumer"], Value::Null, "{}", a.text);
    assert!(headers["x-consumer-id"].is_string(), "{}", a.text);
    assert!(a.set_cookies.is_empty(), "nothing to renew yet: {:?}", a.set_cookies);
    assert_eq!(upstream.count(), hits + 1);

    // A changed cookie is no session.
    let mut tampered = cookie.clone().into_bytes();
    let at = tampered.len() - 3;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let a = send(client.get(&url).header("cookie", String::from_utf8(tampered).unwrap())).await;
    assert_eq!(a.status, 403, "{}", a.text);

    // Logout: Kong's empty 200, the cookie expired, nothing forwarded.
    let hits = upstream.count();
    let a = send(client.delete(format!("{url}?session_logout")).header("cookie", &cookie)).await;
    assert_eq!((a.status, a.text.as_str()), (200, ""), "{:?}", a.set_cookies);
    assert_eq!(a.set_cookies.len(), 1, "{:?}", a.set_cookies);
    assert!(a.set_cookies[0].starts_with("session=;") && a.set_cookies[0].contains("Max-Age=0"), "{:?}", a.set_cookies);
    assert_eq!(upstream.count(), hits, "a logout is answered by the gateway");

    // The browser dropped the cookie: refused again.
    let a = send(client.get(&url)).await;
    assert_eq!(a.status, 403, "{}", a.text);
    // The cookie lives in the client (storage: cookie): a copy kept past logout still works
    // until it expires, in Kong as in Ward.
    assert_eq!(send(client.get(&url).header("cookie", &cookie)).await.status, 200);

    // The consumer leaves the configuration: the session is destroyed with it.
    let reload = client.post(gw.admin_url("/config")).body(config(&upstream.url(), false)).send().await.unwrap();
    assert_eq!(reload.status(), 201, "{}", reload.text().await.unwrap());
    let a = send(client.get(&url).header("cookie", &cookie)).await;
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(a.set_cookies.iter().any(|c| c.starts_with("session=;") && c.contains("Max-Age=0")), "{:?}", a.set_cookies);
}

#[test]
fn kongs_database_storage_is_refused_at_load() {
    let config = config("http://127.0.0.1:9", true).replace("response_headers: [subject]", "storage: kong");
    let run = common::ward_with_config(&config, &["gateway", "check", "--config", "{config}"]);
    let stderr = run.fails();
    assert!(
        stderr.contains("services[0].routes[0].plugins[0].config.storage: 'kong' keeps sessions in Kong's database"),
        "{stderr}"
    );
}
