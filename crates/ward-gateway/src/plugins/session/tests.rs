//! The session plugin's tables: Kong's schema (what is accepted, what is refused and where),
//! Kong's logout spec, and behaviour through a whole configuration (key-auth with
//! `anonymous`, acl, request-termination) on a clock the tests move.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::seal::{self, Contents, Entry, Kind, RequestCookies, Sealer};
use super::*;
use crate::compiled::{Gateway, compile as compile_gateway};
use crate::plugins::transformer::testing;
use crate::runtime::Shared;

const START: i64 = 1_700_000_000;
const SECRET: [u8; 32] = [7; 32];

// ---------------------------------------------------------------------------------------
// Schema

/// Kong's schema.lua, field by field: (config, "" when accepted, else the refusal's start).
#[test]
fn kongs_schema() {
    let table: Vec<(Value, &str)> = vec![
        (json!({}), ""),
        (json!({"secret": "ultra top secret session", "audience": "my-app"}), ""),
        (json!({"storage": "cookie"}), ""),
        (
            json!({"storage": "kong"}),
            "plugins[3].config.storage: 'kong' keeps sessions in Kong's database: Ward's gateway is database-less",
        ),
        (json!({"storage": "redis"}), "plugins[3].config.storage: expected one of: cookie, kong"),
        (json!({"secret": ""}), "plugins[3].config.secret: length must be at least 1"),
        (json!({"secret": "{vault://env/s}"}), "plugins[3].config.secret: vault references are not supported"),
        (json!({"audience": ""}), "plugins[3].config.audience: length must be at least 1"),
        (json!({"idling_timeout": 0, "rolling_timeout": 0, "absolute_timeout": 0}), ""),
        (json!({"idling_timeout": 1.5, "stale_ttl": 0}), ""),
        (json!({"idling_timeout": "900"}), "plugins[3].config.idling_timeout: invalid type"),
        (json!({"rolling_timeout": true}), "plugins[3].config.rolling_timeout: invalid type"),
        (json!({"cookie_name": "da_cookie", "cookie_same_site": "Lax", "cookie_http_only": false}), ""),
        (json!({"cookie_name": ""}), "plugins[3].config.cookie_name: length must be at least 1"),
        (json!({"cookie_name": "a b"}), "plugins[3].config.cookie_name: 'a b' is not a valid cookie name"),
        (json!({"cookie_name": "a;b"}), "plugins[3].config.cookie_name: 'a;b' is not a valid cookie name"),
        (json!({"remember_cookie_name": "r=1"}), "plugins[3].config.remember_cookie_name: 'r=1' is not a valid"),
        (json!({"cookie_path": "/app", "cookie_domain": "example.com"}), ""),
        (json!({"cookie_path": "/a;b"}), "plugins[3].config.cookie_path: must be printable text without ';'"),
        (json!({"cookie_domain": ""}), "plugins[3].config.cookie_domain: length must be at least 1"),
        (json!({"cookie_same_site": "Default"}), ""),
        (json!({"cookie_same_site": "None"}), ""),
        (
            json!({"cookie_same_site": "strict"}),
            "plugins[3].config.cookie_same_site: expected one of: Strict, Lax, None, Default",
        ),
        (json!({"cookie_secure": "yes"}), "plugins[3].config.cookie_secure: invalid type"),
        (json!({"remember": true, "remember_rolling_timeout": 3600, "remember_absolute_timeout": 0}), ""),
        (
            json!({"remember_rolling_timeout": 1.5}),
            "plugins[3].config.remember_rolling_timeout: must be a whole number of seconds",
        ),
        (json!({"response_headers": ["id", "timeout", "audience", "subject"]}), ""),
        (json!({"request_headers": ["idling-timeout", "rolling-timeout", "absolute-timeout", "id", "id"]}), ""),
        (json!({"request_headers": ["idling_timeout"]}), "plugins[3].config.request_headers[0]: expected one of: id,"),
        (json!({"response_headers": ["id", "expires"]}), "plugins[3].config.response_headers[1]: expected one of"),
        (json!({"logout_methods": ["GET", "POST", "DELETE"], "read_body_for_logout": true}), ""),
        (json!({"logout_methods": []}), ""),
        (json!({"logout_methods": ["PUT"]}), "plugins[3].config.logout_methods[0]: expected one of: GET, POST, DELETE"),
        (json!({"logout_methods": ["get"]}), "plugins[3].config.logout_methods[0]: expected one of"),
        (json!({"logout_query_arg": ""}), "plugins[3].config.logout_query_arg: length must be at least 1"),
        (json!({"logout_post_arg": ""}), "plugins[3].config.logout_post_arg: length must be at least 1"),
        (json!({"hash_subject": true, "store_metadata": true}), ""),
        (json!({"bind": ["ip"]}), "plugins[3].config.bind: unknown field"),
        (json!({"cookie_samesite": "off", "cookie_lifetime": 60, "cookie_idletime": null, "cookie_renew": 600}), ""),
        (json!({"cookie_discard": 5, "cookie_httponly": false, "cookie_persistent": true}), ""),
        (json!({"cookie_idletime": "x"}), "plugins[3].config.cookie_idletime: expected a number"),
        (json!({"cookie_samesite": "sometimes"}), "plugins[3].config.cookie_same_site: expected one of"),
        (json!({"nope": 1}), "plugins[3].config.nope: unknown field"),
    ];
    let mut missed = Vec::new();
    for (config, want) in table {
        let got = match testing::compiled(compile, config.clone()) {
            Ok(_) => String::new(),
            Err(e) => e,
        };
        let ok = if want.is_empty() { got.is_empty() } else { got.starts_with(want) };
        if !ok {
            missed.push(format!("{config}: wanted {want:?}, got {got:?}"));
        }
    }
    assert!(missed.is_empty(), "\n{}", missed.join("\n"));
}

/// The defaults are Kong's, and Kong 2's names land on Kong 3's fields.
#[test]
fn defaults_and_kong2_names() {
    let Ok(Plugin::Session(s)) = testing::compiled(compile, json!({})) else { panic!("compiles") };
    assert_eq!((s.idling, s.rolling, s.absolute), (900.0, 3600.0, 86400.0));
    assert_eq!((s.remember, s.remember_rolling, s.remember_absolute), (false, 604_800.0, 2_592_000.0));
    assert_eq!(
        (s.cookie_name.as_str(), s.remember_name.as_str(), s.audience.as_str()),
        ("session", "remember", "default")
    );
    let a = &s.attributes;
    assert_eq!((a.path.as_str(), a.domain.as_deref(), a.same_site), ("/", None, Some(SameSite::Strict)));
    assert_eq!((a.secure, a.http_only, s.read_body_for_logout), (true, true, false));
    assert_eq!(s.logout_methods, vec![Method::POST, Method::DELETE]);
    assert_eq!((s.logout_query_arg.as_str(), s.logout_post_arg.as_str()), ("session_logout", "session_logout"));
    assert!(s.request_headers.is_empty() && s.response_headers.is_empty());

    let config = json!({"cookie_lifetime": 60, "cookie_idletime": null, "cookie_samesite": "off",
        "cookie_httponly": false, "cookie_persistent": true, "rolling_timeout": 10, "cookie_domain": "localhost"});
    let Ok(Plugin::Session(s)) = testing::compiled(compile, config) else { panic!("compiles") };
    assert_eq!((s.rolling, s.idling, s.remember), (60.0, 0.0, true));
    assert_eq!(
        (s.attributes.same_site, s.attributes.http_only, s.attributes.domain.as_deref()),
        (Some(SameSite::Lax), false, None)
    );

    let Ok(Plugin::Session(s)) =
        testing::compiled(compile, json!({"cookie_same_site": "None", "cookie_secure": false}))
    else {
        panic!("compiles")
    };
    assert!(s.attributes.secure, "SameSite=None cookies are always Secure");
}

// ---------------------------------------------------------------------------------------
// The cookie format

fn contents(audience: &str) -> Contents {
    Contents {
        id: Contents::new_id(),
        created: START,
        rolled: 0,
        idled: 0,
        entries: vec![Entry {
            audience: audience.into(),
            subject: Some("coop".into()),
            consumer: "c".into(),
            credential: "k".into(),
        }],
    }
}

#[test]
fn sealed_values_open_only_unchanged_with_their_secret_and_kind() {
    let sealer = Sealer::new(b"secret");
    let c = contents("default");
    let sealed = sealer.seal(Kind::Session.tag(), &c);
    assert_eq!(sealer.open(Kind::Session.tag(), &sealed), Some(c.clone()));
    assert_ne!(sealer.seal(Kind::Session.tag(), &c), sealed, "each value has its own salt");
    assert_eq!(
        sealer.open::<Contents>(Kind::Remember.tag(), &sealed),
        None,
        "a session cookie is no persistent cookie"
    );
    assert_eq!(Sealer::new(b"other").open::<Contents>(Kind::Session.tag(), &sealed), None, "another secret");
    let mut tampered = sealed.clone().into_bytes();
    for i in [0, 5, tampered.len() / 2, tampered.len() - 1] {
        let before = tampered[i];
        tampered[i] = if before == b'A' { b'B' } else { b'A' };
        assert_eq!(
            sealer.open::<Contents>(Kind::Session.tag(), std::str::from_utf8(&tampered).unwrap()),
            None,
            "byte {i}"
        );
        tampered[i] = before;
    }
    for garbage in ["", "x", "AAAA", "!!!!", &sealed[..sealed.len() - 4]] {
        assert_eq!(sealer.open::<Contents>(Kind::Session.tag(), garbage), None, "{garbage:?}");
    }
}

#[test]
fn large_values_are_split_into_cookies_of_4_kib() {
    for len in [10, 4000, 4094, 4095, 10_000, 36_000] {
        let sealed: String = "x".repeat(len);
        let chunks = seal::chunks("session", &sealed).expect("fits");
        assert!(chunks.iter().all(|(n, v)| n.len() + 1 + v.len() <= seal::MAX_COOKIE), "{len}");
        let header: String = chunks.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ");
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(&header).unwrap());
        assert_eq!(RequestCookies::of(&headers).gather("session"), Some((sealed, chunks.len())), "{len}");
    }
    assert_eq!(seal::chunks("session", "x").unwrap().len(), 1);
    assert_eq!(seal::chunks("session", &"x".repeat(5000)).unwrap().len(), 2);
    assert!(seal::chunks("session", &"x".repeat(9 * 4096)).is_none(), "more than 9 cookies");
    // A chunk missing, or a count that is not a digit: no session.
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, HeaderValue::from_static("session=2abc"));
    assert_eq!(RequestCookies::of(&headers).gather("session"), None);
    headers.insert(header::COOKIE, HeaderValue::from_static("session=xabc"));
    assert_eq!(RequestCookies::of(&headers).gather("session"), None);
}

#[test]
fn logout_arguments_in_bodies() {
    let form = Some("application/x-www-form-urlencoded");
    let json = Some("application/json; charset=utf-8");
    let multipart = Some("multipart/form-data; boundary=XX");
    let part = "--XX\r\nContent-Disposition: form-data; name=\"session_logout\"\r\n\r\n1\r\n--XX--\r\n";
    let table: [(Option<&str>, &str, bool); 10] = [
        (form, "session_logout=true", true),
        (form, "a=1&session_logout", true),
        (form, "session_logout=", true),
        (form, "session_logouts=1", false),
        (json, r#"{"session_logout": true}"#, true),
        (json, r#"{"session_logout": null}"#, true),
        (json, r#"{"session_logout": false}"#, false),
        (json, r#"["session_logout"]"#, false),
        (multipart, part, true),
        (Some("text/plain"), "session_logout=1", false),
    ];
    for (content_type, body, want) in table {
        assert_eq!(body_has_argument(content_type, body.as_bytes(), "session_logout"), want, "{content_type:?} {body}");
    }
}

// ---------------------------------------------------------------------------------------
// Behaviour, through a whole configuration

const CREDENTIAL: &str = "6f2a3f4e-1d8c-4a6e-9a51-3b1f0e2c7d10";

/// Kong's access spec: key-auth with `anonymous`, and the anonymous consumer terminated;
/// `{session}` is the session plugin's config on route `r` (and `/acl`, which has acl too).
fn config(session: &str) -> String {
    config_with(session, "  keyauth_credentials: [{id: 6f2a3f4e-1d8c-4a6e-9a51-3b1f0e2c7d10, key: kong}]\n")
}

fn config_with(session: &str, coop: &str) -> String {
    format!(
        r#"_format_version: "3.0"
services:
- name: s
  url: http://127.0.0.1:9
  routes:
  - name: r
    paths: [/r]
    plugins:
    - name: session
      config: {session}
    - name: key-auth
      config: {{anonymous: anon}}
  - name: acl
    paths: [/acl]
    plugins:
    - name: session
      config: {session}
    - name: key-auth
      config: {{anonymous: anon}}
    - name: acl
      config: {{allow: [staff]}}
consumers:
- username: coop
{coop}  acls: [{{group: staff}}]
- username: bob
  keyauth_credentials: [{{id: 0b7e9f0c-5d3a-4e21-8f6b-2a9c1d4e5f60, key: bobs}}]
- username: anon
  plugins:
  - name: request-termination
    config: {{status_code: 403, message: So it goes.}}
"#
    )
}

/// What a request got.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The response's headers.
    headers: HeaderMap,
    body: String,
    /// The request's headers as forwarded, when it was.
    upstream: Option<HeaderMap>,
}

impl Answer {
    fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect()
    }

    fn sent(&self, name: &str) -> Option<&str> {
        self.upstream.as_ref()?.get(name).map(|v| v.to_str().unwrap())
    }
}

/// A compiled configuration served on a clock the test moves.
struct Harness {
    shared: Shared,
    now: Arc<AtomicI64>,
    gw: Gateway,
}

impl Harness {
    fn new(config: &str) -> Self {
        Self::with_secret(config, SECRET)
    }

    fn with_secret(config: &str, secret: [u8; 32]) -> Self {
        let now = Arc::new(AtomicI64::new(START));
        let sessions = Defaults { secret, clock: Clock::manual(now.clone()) };
        let shared = Shared { sessions, ..Shared::default() };
        let gw = compile_gateway(config, &shared).unwrap_or_else(|e| panic!("{e}"));
        Harness { shared, now, gw }
    }

    /// Replaces the configuration, keeping the clock and the default secret (a reload).
    fn reload(&mut self, config: &str) {
        self.gw = compile_gateway(config, &self.shared).unwrap_or_else(|e| panic!("{e}"));
    }

    fn advance(&self, seconds: i64) {
        self.now.fetch_add(seconds, Ordering::SeqCst);
    }

    /// Sends a request on route `route`, with `cookie` as the Cookie header when not empty;
    /// a request that passes every plugin gets 200 from the "upstream".
    async fn send(&self, route: &str, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let route = self.gw.routes.iter().find(|r| r.name.as_deref() == Some(route)).expect("a route of that name");
        let conn = testing::conn();
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let body = Bytes::copy_from_slice(body.as_bytes());
        let mut ex = testing::exchange(&conn, &self.gw.consumers, route, method, target, map, body);
        let outcome = route.chain.run(&mut ex).await;
        let extra = std::mem::take(&mut ex.response_headers);
        let responders = std::mem::take(&mut ex.responders);
        let mut state = ex.access_state();
        let (response, upstream) = match outcome {
            Ok(()) => (Response::new(ward_http::body::full(Bytes::new())), Some(ex.headers.clone())),
            Err(reply) => (reply.into_response(), None),
        };
        let response = crate::handler::with_headers(response, extra);
        let response = crate::plugins::respond(&responders, response, false, &mut state).await;
        let (parts, body) = response.into_parts();
        let body = String::from_utf8_lossy(&body.collect().await.unwrap().to_bytes()).into_owned();
        Answer { status: parts.status.as_u16(), headers: parts.headers, body, upstream }
    }

    async fn get(&self, route: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(route, "GET", &format!("/{route}"), headers, "").await
    }
}

/// The cookies a browser keeps.
#[derive(Debug, Default, Clone)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    /// Keeps what `answer` set; an expired cookie is dropped.
    fn take(&mut self, answer: &Answer) {
        for text in answer.set_cookies() {
            let c = cookie::Cookie::parse(text).unwrap();
            if c.max_age() == Some(Duration::ZERO) {
                self.0.remove(c.name());
            } else {
                self.0.insert(c.name().to_string(), c.value().to_string());
            }
        }
    }

    fn header(&self) -> String {
        self.0.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ")
    }
}

/// Logs in on `route` with the key `kong`; the cookies it got.
async fn login(h: &Harness, route: &str) -> Jar {
    let answer = h.get(route, &[("apikey", "kong")]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let mut jar = Jar::default();
    jar.take(&answer);
    assert!(!jar.0.is_empty(), "no cookie: {answer:?}");
    jar
}

/// The attributes of a Set-Cookie value, after its name and value.
fn attributes(set_cookie: &str) -> Vec<&str> {
    set_cookie.split("; ").skip(1).collect()
}

#[tokio::test]
async fn kongs_access_spec() {
    let h = Harness::new(&config("{}"));
    // The anonymous consumer cannot get in.
    let answer = h.get("r", &[]).await;
    assert_eq!((answer.status, answer.body.as_str()), (403, r#"{"message":"So it goes."}"#));
    assert!(answer.set_cookies().is_empty(), "no session for an anonymous consumer");

    // With the key: a session cookie, with Kong's default attributes.
    let answer = h.get("r", &[("apikey", "kong")]).await;
    assert_eq!(answer.status, 200);
    let set = answer.set_cookies();
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(set[0].starts_with("session="), "{set:?}");
    let mut attrs = attributes(&set[0]);
    attrs.sort();
    assert_eq!(attrs, ["HttpOnly", "Path=/", "SameSite=Strict", "Secure"]);
    let mut jar = Jar::default();
    jar.take(&answer);

    // The cookie alone authenticates, with the consumer's headers upstream.
    let answer = h.get("r", &[("cookie", &jar.header())]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let coop = h.gw.consumers.find("coop").unwrap();
    assert_eq!(answer.sent("x-consumer-id"), Some(h.gw.consumers.list[coop].id.as_str()));
    assert_eq!(answer.sent("x-consumer-username"), Some("coop"));
    assert_eq!(answer.sent("x-credential-identifier"), Some(CREDENTIAL));
    assert_eq!(answer.sent("x-anonymous-consumer"), None);
    assert_eq!(answer.sent("x-consumer-custom-id"), None);
    assert_eq!(answer.sent("x-authenticated-groups"), None);
    assert!(answer.set_cookies().is_empty(), "nothing to renew yet: {:?}", answer.set_cookies());

    // acl sees the consumer's groups.
    let answer = h.get("acl", &[("cookie", &jar.header())]).await;
    assert_eq!((answer.status, answer.sent("x-consumer-groups")), (200, Some("staff")), "{answer:?}");
    let answer = h.get("acl", &[]).await;
    assert_eq!(answer.status, 403, "{answer:?}");

    // A key sent along is not looked at: key-auth with `anonymous` skips a request that a
    // credential already authenticated, as in Kong, and the session gave one.
    let answer = h.get("r", &[("cookie", &jar.header()), ("apikey", "bobs")]).await;
    assert_eq!(answer.sent("x-consumer-username"), Some("coop"));
}

#[tokio::test]
async fn cookie_attributes_follow_the_configuration() {
    let h = Harness::new(&config(
        r#"{cookie_name: da_cookie, cookie_same_site: Lax, cookie_http_only: false, cookie_secure: false, cookie_path: /r, cookie_domain: example.com}"#,
    ));
    let answer = h.get("r", &[("apikey", "kong")]).await;
    let set = answer.set_cookies();
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(set[0].starts_with("da_cookie="), "{set:?}");
    let mut attrs = attributes(&set[0]);
    attrs.sort();
    assert_eq!(attrs, ["Domain=example.com", "Path=/r", "SameSite=Lax"]);
    let mut jar = Jar::default();
    jar.take(&answer);
    assert_eq!(h.get("r", &[("cookie", &jar.header())]).await.status, 200);

    let h = Harness::new(&config("{cookie_same_site: Default}"));
    let set = h.get("r", &[("apikey", "kong")]).await.set_cookies();
    let mut attrs = attributes(&set[0]);
    attrs.sort();
    assert_eq!(attrs, ["HttpOnly", "Path=/", "Secure"], "no SameSite: what browsers make of Kong's `Default`");
}

#[tokio::test]
async fn remember_sets_a_persistent_cookie_that_restores_the_session() {
    let h = Harness::new(&config("{remember: true, remember_rolling_timeout: 3600}"));
    let answer = h.get("r", &[("apikey", "kong")]).await;
    let set = answer.set_cookies();
    assert_eq!(set.len(), 2, "{set:?}");
    assert!(set[0].starts_with("session=") && !set[0].contains("Max-Age"), "{set:?}");
    assert!(set[1].starts_with("remember="), "{set:?}");
    let attrs = attributes(&set[1]);
    assert!(attrs.contains(&"Max-Age=3600"), "{attrs:?}");
    assert!(attrs.contains(&"Expires=Tue, 14 Nov 2023 23:13:20 GMT"), "created + Max-Age: {attrs:?}");
    let mut jar = Jar::default();
    jar.take(&answer);

    // The browser closed: only the persistent cookie is left; it opens a new session.
    let mut remembered = jar.clone();
    remembered.0.remove("session");
    h.advance(1000);
    let answer = h.get("r", &[("cookie", &remembered.header())]).await;
    assert_eq!((answer.status, answer.sent("x-consumer-username")), (200, Some("coop")), "{answer:?}");
    let names: Vec<String> = answer.set_cookies().iter().map(|c| c.split('=').next().unwrap().to_string()).collect();
    assert_eq!(names, ["remember", "session"], "both saved again");
    remembered.take(&answer);

    // Past the persistent cookie's rolling timeout without use: nothing is left.
    let mut only_remember = remembered.clone();
    only_remember.0.remove("session");
    h.advance(3601);
    assert_eq!(h.get("r", &[("cookie", &only_remember.header())]).await.status, 403);

    // A persistent cookie sent as the session cookie is no session.
    let mut swapped = Jar::default();
    swapped.0.insert("session".into(), remembered.0["remember"].clone());
    let h2 = Harness::new(&config("{}"));
    assert_eq!(h2.get("r", &[("cookie", &swapped.header())]).await.status, 403);
}

/// One step of a timeout case: seconds to wait, then the status a request with the cookie
/// gets, and whether its answer renews the cookie (a new session id) or touches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Authenticated, the cookie unchanged.
    Kept,
    /// Authenticated, and a new cookie with the same session id (idling offset moved).
    Touched,
    /// Authenticated, and a new cookie with a new session id.
    Renewed,
    /// Not authenticated (403 from the anonymous consumer's request-termination).
    Expired,
}

/// A timeout case: what it shows, the session's config, and its steps (seconds, then what).
type TimeoutCase = (&'static str, &'static str, Vec<(i64, Then)>);

#[tokio::test]
async fn timeouts_expire_renew_and_touch_sessions() {
    use Then::*;
    let cases: Vec<TimeoutCase> = vec![
        ("idle past idling_timeout", "{}", vec![(901, Expired)]),
        ("touched after a minute of idling", "{}", vec![(60, Kept), (1, Touched), (900, Touched), (901, Expired)]),
        ("a request within the minute is no use", "{}", vec![(61, Touched), (30, Kept), (871, Expired)]),
        (
            "used every 10 minutes, renewed at 3/4 of the hour",
            "{}",
            vec![(600, Touched), (600, Touched), (600, Touched), (600, Touched), (600, Renewed)],
        ),
        (
            "renewed past 3/4 of the rolling timeout",
            "{idling_timeout: 0}",
            vec![(2700, Kept), (1, Renewed), (2700, Kept), (901, Expired)],
        ),
        ("not renewed: expired", "{idling_timeout: 0}", vec![(3601, Expired)]),
        (
            "renewals stop at the absolute timeout",
            "{idling_timeout: 0, rolling_timeout: 100, absolute_timeout: 250}",
            vec![(80, Renewed), (80, Renewed), (80, Renewed), (10, Kept), (1, Expired)],
        ),
        (
            "no timeouts at all",
            "{idling_timeout: 0, rolling_timeout: 0, absolute_timeout: 0}",
            vec![(10_000_000, Kept)],
        ),
        ("a negative timeout expires at once, as in Kong", "{idling_timeout: -1}", vec![(0, Expired)]),
    ];
    let mut missed = Vec::new();
    for (what, session, steps) in cases {
        let h = Harness::new(&config(session));
        let mut jar = login(&h, "r").await;
        let sealer = Sealer::new(&SECRET);
        let session_id = |jar: &Jar| {
            let (sealed, _) = cookies_of(jar).gather("session").unwrap();
            sealer.open::<Contents>(Kind::Session.tag(), &sealed).unwrap().id
        };
        let mut before = session_id(&jar);
        for (i, (wait, want)) in steps.iter().enumerate() {
            h.advance(*wait);
            let answer = h.get("r", &[("cookie", &jar.header())]).await;
            let got = match (answer.status, answer.set_cookies().is_empty()) {
                (200, true) => Kept,
                (200, false) => {
                    jar.take(&answer);
                    let after = session_id(&jar);
                    let same = after == before;
                    before = after;
                    if same { Touched } else { Renewed }
                }
                (403, true) => Expired,
                _ => {
                    missed.push(format!("{what}: step {i}: {answer:?}"));
                    break;
                }
            };
            if got != *want {
                missed.push(format!("{what}: step {i} (+{wait}s): wanted {want:?}, got {got:?}"));
                break;
            }
        }
    }
    assert!(missed.is_empty(), "\n{}", missed.join("\n"));
}

fn cookies_of(jar: &Jar) -> RequestCookies {
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, HeaderValue::from_str(&jar.header()).unwrap());
    RequestCookies::of(&headers)
}

#[tokio::test]
async fn session_headers_tell_kongs_properties() {
    let all = "[id, audience, subject, timeout, idling-timeout, rolling-timeout, absolute-timeout]";
    let h = Harness::new(&config(&format!("{{request_headers: {all}, response_headers: {all}}}")));
    let answer = h.get("r", &[("apikey", "kong")]).await;
    let mut jar = Jar::default();
    jar.take(&answer);
    let header = |a: &Answer, n: &str| a.headers.get(n).map(|v| v.to_str().unwrap().to_string());
    let (sealed, _) = cookies_of(&jar).gather("session").unwrap();
    let id = Sealer::new(&SECRET).open::<Contents>(Kind::Session.tag(), &sealed).unwrap().id;
    let want = [
        ("session-id", id.as_str()),
        ("session-audience", "default"),
        ("session-subject", "coop"),
        ("session-timeout", "900"),
        ("session-idling-timeout", "900"),
        ("session-rolling-timeout", "3600"),
        ("session-absolute-timeout", "86400"),
    ];
    for (name, value) in want {
        assert_eq!(header(&answer, name).as_deref(), Some(value), "{name} on the login's answer");
        assert_eq!(answer.sent(name), None, "{name}: nothing upstream before a session exists");
    }
    h.advance(30);
    let answer = h.get("r", &[("cookie", &jar.header())]).await;
    let want = [
        ("session-id", id.as_str()),
        ("session-subject", "coop"),
        ("session-timeout", "870"),
        ("session-idling-timeout", "870"),
        ("session-rolling-timeout", "3570"),
        ("session-absolute-timeout", "86370"),
    ];
    for (name, value) in want {
        assert_eq!(header(&answer, name).as_deref(), Some(value), "{name} on the answer");
        assert_eq!(answer.sent(name), Some(value), "{name} upstream");
    }
}

#[tokio::test]
async fn logout_destroys_the_session_as_kong_answers() {
    let h = Harness::new(&config("{}"));
    let jar = login(&h, "r").await;
    let cookie = jar.header();

    // GET is not a logout method by default: an ordinary request.
    let answer = h.send("r", "GET", "/r?session_logout=true", &[("cookie", &cookie)], "").await;
    assert_eq!((answer.status, answer.upstream.is_some()), (200, true));

    let answer = h.send("r", "DELETE", "/r?session_logout", &[("cookie", &cookie)], "").await;
    assert_eq!((answer.status, answer.body.as_str(), answer.upstream.is_some()), (200, "", false), "{answer:?}");
    let set = answer.set_cookies();
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(set[0].starts_with("session=;"), "{set:?}");
    assert!(set[0].contains("Max-Age=0") && set[0].contains("Expires=Thu, 01 Jan 1970 00:00:01 GMT"), "{set:?}");
    let mut after = jar.clone();
    after.take(&answer);
    assert!(after.0.is_empty());
    assert_eq!(h.get("r", &[("cookie", &after.header())]).await.status, 403);

    // Without a session, the logout argument is nothing special.
    let answer = h.send("r", "DELETE", "/r?session_logout", &[("apikey", "kong")], "").await;
    assert_eq!((answer.status, answer.upstream.is_some()), (200, true));
}

/// Kong's spec/03-plugins/30-session/03-session_spec.lua, through whole requests: (config,
/// method, query argument given, body argument given, logged out).
#[tokio::test]
async fn kongs_logout_spec() {
    let table: [(&str, &str, bool, bool, bool); 10] = [
        ("{logout_methods: [GET, POST]}", "GET", true, false, true),
        ("{logout_methods: [POST], read_body_for_logout: true}", "POST", false, true, true),
        ("{logout_methods: [POST]}", "POST", false, true, false),
        ("{logout_methods: [POST], read_body_for_logout: false}", "POST", false, true, false),
        ("{logout_methods: [DELETE], read_body_for_logout: true}", "DELETE", false, true, true),
        ("{logout_methods: [DELETE]}", "DELETE", false, true, false),
        ("{logout_methods: [DELETE], read_body_for_logout: false}", "DELETE", false, true, false),
        ("{logout_methods: [DELETE]}", "DELETE", true, false, true),
        ("{logout_methods: [DELETE]}", "GET", true, false, false),
        ("{logout_methods: [DELETE]}", "POST", false, true, false),
    ];
    let mut missed = Vec::new();
    for (session, method, in_query, in_body, want) in table {
        let h = Harness::new(&config(session));
        let jar = login(&h, "r").await;
        let target = if in_query { "/r?session_logout=true" } else { "/r" };
        let body = if in_body { "session_logout=true" } else { "" };
        let headers = [("cookie", jar.header()), ("content-type", "application/x-www-form-urlencoded".into())];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let answer = h.send("r", method, target, &headers, body).await;
        let logged_out = answer.upstream.is_none() && answer.status == 200;
        if logged_out != want {
            missed.push(format!("{session} {method} query={in_query} body={in_body}: {answer:?}"));
        }
    }
    assert!(missed.is_empty(), "\n{}", missed.join("\n"));
}

#[tokio::test]
async fn tampered_foreign_and_garbage_cookies_are_no_session() {
    let h = Harness::new(&config("{}"));
    let jar = login(&h, "r").await;
    let value = jar.0["session"].clone();
    let other = Harness::with_secret(&config("{}"), [9; 32]);
    let foreign = login(&other, "r").await.0["session"].clone();
    let mut flipped = value.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for (what, cookie) in [
        ("tampered", format!("session={flipped}")),
        ("another secret", format!("session={foreign}")),
        ("truncated", format!("session={}", &value[..value.len() / 2])),
        ("garbage", "session=1bm90IGEgc2Vzc2lvbg".to_string()),
        ("empty", "session=".to_string()),
        ("under another name", format!("other={value}")),
    ] {
        let answer = h.get("r", &[("cookie", &cookie)]).await;
        assert_eq!(answer.status, 403, "{what}: {answer:?}");
        assert!(answer.set_cookies().is_empty(), "{what}: {answer:?}");
    }
    // The real one among other cookies still works.
    let answer = h.get("r", &[("cookie", &format!("a=1; session={value}; b=2"))]).await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn a_session_ends_with_its_consumer_or_credential() {
    let mut h = Harness::new(&config("{}"));
    let jar = login(&h, "r").await;
    // A reload that changes nothing else keeps the session (the default secret outlives it).
    h.reload(&config("{}"));
    assert_eq!(h.get("r", &[("cookie", &jar.header())]).await.status, 200);

    // The credential is gone (coop has another): the session is destroyed.
    h.reload(&config_with("{}", "  keyauth_credentials: [{id: 9c1f6a2b-3e4d-4f5a-8b6c-7d8e9f0a1b2c, key: new}]\n"));
    let answer = h.get("r", &[("cookie", &jar.header())]).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    let set = answer.set_cookies();
    assert!(set.len() == 1 && set[0].starts_with("session=;") && set[0].contains("Max-Age=0"), "{set:?}");

    // The consumer is gone.
    let mut h = Harness::new(&config("{}"));
    let jar = login(&h, "r").await;
    let without_coop = config("{}").replace("- username: coop\n  keyauth_credentials: [{id: 6f2a3f4e-1d8c-4a6e-9a51-3b1f0e2c7d10, key: kong}]\n  acls: [{group: staff}]\n", "");
    assert!(!without_coop.contains("coop"));
    h.reload(&without_coop);
    let answer = h.get("r", &[("cookie", &jar.header())]).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(answer.set_cookies().iter().any(|c| c.contains("Max-Age=0")), "{answer:?}");

    // A destroyed session and a key in the same request: the key's session replaces it.
    let mut h = Harness::new(&config("{}"));
    let jar = login(&h, "r").await;
    h.reload(&config_with("{}", "  keyauth_credentials: [{id: 9c1f6a2b-3e4d-4f5a-8b6c-7d8e9f0a1b2c, key: new}]\n"));
    let answer = h.get("r", &[("cookie", &jar.header()), ("apikey", "new")]).await;
    assert_eq!(answer.status, 200);
    let set = answer.set_cookies();
    assert!(set.len() == 1 && !set[0].contains("Max-Age=0"), "{set:?}");
    let mut jar = jar;
    jar.take(&answer);
    let answer = h.get("r", &[("cookie", &jar.header())]).await;
    assert_eq!(answer.sent("x-credential-identifier"), Some("9c1f6a2b-3e4d-4f5a-8b6c-7d8e9f0a1b2c"));
}

#[tokio::test]
async fn audiences_share_one_cookie() {
    let config = config("{}").replace(
        "  - name: acl\n    paths: [/acl]\n    plugins:\n    - name: session\n      config: {}\n",
        "  - name: acl\n    paths: [/acl]\n    plugins:\n    - name: session\n      config: {audience: other}\n",
    );
    assert!(config.contains("audience: other"));
    let h = Harness::new(&config);
    let mut jar = login(&h, "r").await;
    // Another audience's session is none for this one.
    let answer = h.get("acl", &[("cookie", &jar.header())]).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    // Logging in there adds this audience to the same cookie.
    let answer = h.get("acl", &[("cookie", &jar.header()), ("apikey", "kong")]).await;
    assert_eq!(answer.status, 200);
    jar.take(&answer);
    assert_eq!(jar.0.len(), 1);
    assert_eq!(h.get("acl", &[("cookie", &jar.header())]).await.status, 200);
    assert_eq!(h.get("r", &[("cookie", &jar.header())]).await.status, 200);
    // Logging out of one audience leaves the other.
    let answer = h.send("acl", "POST", "/acl?session_logout", &[("cookie", &jar.header())], "").await;
    assert_eq!((answer.status, answer.upstream.is_none()), (200, true));
    jar.take(&answer);
    assert_eq!(jar.0.len(), 1, "a new cookie without that audience, not an expired one");
    assert_eq!(h.get("acl", &[("cookie", &jar.header())]).await.status, 403);
    assert_eq!(h.get("r", &[("cookie", &jar.header())]).await.status, 200);
}

#[tokio::test]
async fn a_large_session_is_split_and_read_back() {
    let name = "c".repeat(5000);
    let config = config("{}").replace("- username: coop\n", &format!("- username: {name}\n"));
    let h = Harness::new(&config);
    let answer = h.get("r", &[("apikey", "kong")]).await;
    let set = answer.set_cookies();
    assert_eq!(set.len(), 2, "two cookies: {set:?}");
    assert!(set.iter().all(|c| c.split(';').next().unwrap().len() <= 4096), "{set:?}");
    let mut jar = Jar::default();
    jar.take(&answer);
    assert_eq!(jar.0.keys().collect::<Vec<_>>(), ["session", "session2"]);
    let answer = h.get("r", &[("cookie", &jar.header())]).await;
    assert_eq!((answer.status, answer.sent("x-consumer-username")), (200, Some(name.as_str())));
    // Logout expires both.
    let answer = h.send("r", "DELETE", "/r?session_logout", &[("cookie", &jar.header())], "").await;
    jar.take(&answer);
    assert!(jar.0.is_empty(), "{:?}", answer.set_cookies());
}

#[tokio::test]
async fn the_session_cookie_replaces_one_the_upstream_set_of_the_same_name() {
    let Ok(Plugin::Session(plugin)) = testing::compiled(compile, json!({})) else { panic!("compiles") };
    let mut pending = Pending::default();
    pending.set_cookie("session", "session=ours".into());
    let consumers = crate::consumers::Consumers::default();
    let mut state = AccessState { consumers: &consumers, consumer: None, credential: None, session: pending };
    let mut response = Response::new(ward_http::body::full(Bytes::new()));
    for value in ["session=theirs; Path=/", "sessionx=kept", "other=kept"] {
        response.headers_mut().append(header::SET_COOKIE, HeaderValue::from_static(value));
    }
    let response = plugin.respond(response, &mut state);
    let got: Vec<&str> = response.headers().get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(got, ["sessionx=kept", "other=kept", "session=ours"]);
}
