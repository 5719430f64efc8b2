//! The openid-connect plugin against a real OpenID provider: `oidc-provider` on Node.js
//! (tests/oidc/provider.mjs, installed with `npm ci --prefix crates/ward/tests/oidc`).
//!
//! A browser's sign-in (authorization code with PKCE, the provider's own login and consent
//! forms), its session, refresh and logout; bearer tokens the provider signed, and tokens
//! it did not; keys rotated at the provider, and the provider gone.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{GatewayProcess, Upstream, free_port};
use serde_json::{Value, json};

/// Where the provider's script and its npm package are.
fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Fails loudly, saying how to install them, unless Node.js and oidc-provider are there.
fn require_provider() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "these tests run an OpenID provider on Node.js (20 or later), and `node` does not run: {node:?}"
    );
    let package = provider_dir().join("node_modules/oidc-provider/package.json");
    assert!(
        package.exists(),
        "{} is missing: install the test provider with `npm ci --prefix crates/ward/tests/oidc`",
        package.display()
    );
}

/// An oidc-provider process; killed on drop.
struct OpenIdProvider {
    child: Child,
    issuer: String,
    log: PathBuf,
}

impl OpenIdProvider {
    /// Starts the provider on `port` signing with the first of `keys` (kept in `keys_dir`),
    /// and waits until its discovery document answers.
    async fn start(port: u16, keys_dir: &Path, keys: &str, redirect_uri: &str, after_logout: &str) -> Self {
        Self::start_with(port, keys_dir, keys, redirect_uri, after_logout, &[]).await
    }

    /// As `start`, with more arguments for provider.mjs.
    async fn start_with(
        port: u16,
        keys_dir: &Path,
        keys: &str,
        redirect_uri: &str,
        after_logout: &str,
        extra: &[&str],
    ) -> Self {
        require_provider();
        let https = extra.contains(&"--tls-cert");
        let issuer = format!("{}://127.0.0.1:{port}", if https { "https" } else { "http" });
        let log = keys_dir.join(format!("provider-{port}-{keys}.log"));
        let child = Command::new("node")
            .arg(provider_dir().join("provider.mjs"))
            .args(["--port", &port.to_string(), "--issuer", &issuer, "--keys", keys])
            .arg("--keys-dir")
            .arg(keys_dir)
            .args(["--redirect-uri", redirect_uri, "--post-logout-redirect-uri", after_logout])
            .args(extra)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(std::fs::File::options().append(true).open(&log).unwrap()))
            .spawn()
            .expect("spawn node provider.mjs");
        let mut provider = OpenIdProvider { child, issuer, log };
        let url = format!("{}/.well-known/openid-configuration", provider.issuer);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = provider.child.try_wait().unwrap() {
                panic!("the provider exited with {status}:\n{}", provider.log());
            }
            if let Ok(r) = client().get(&url).send().await
                && r.status() == 200
            {
                return provider;
            }
            assert!(Instant::now() < deadline, "no discovery document at {url} after 30s:\n{}", provider.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A JWT access token of client ward-gateway, for `resource` with `scope`.
    async fn token(&self, resource: &str, scope: &str) -> String {
        self.token_of(("ward-gateway", "ward-secret"), resource, scope).await
    }

    /// A JWT access token from the client credentials grant of `(id, secret)`.
    async fn token_of(&self, (id, secret): (&str, &str), resource: &str, scope: &str) -> String {
        let r = client()
            .post(format!("{}/token", self.issuer))
            .basic_auth(id, Some(secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("grant_type", "client_credentials"), ("resource", resource), ("scope", scope)]))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{body}\n{}", self.log());
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Stops the provider and waits for it to be gone.
    fn stop(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for OpenIdProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pairs` as an application/x-www-form-urlencoded body.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://form.invalid/").unwrap();
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_string()
}

/// An HTTP client that follows no redirect and uses no proxy (and takes the HTTPS
/// provider's test certificate as it is).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

/// What a response showed.
#[derive(Debug)]
struct Seen {
    status: u16,
    url: String,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A browser: cookies per host and port, redirects followed, forms posted.
#[derive(Default)]
struct Browser {
    cookies: HashMap<String, HashMap<String, String>>,
    /// Every URL requested, in order.
    visited: Vec<String>,
}

impl Browser {
    async fn send(&mut self, method: reqwest::Method, url: &str, form: Option<&[(&str, &str)]>) -> Seen {
        let parsed = reqwest::Url::parse(url).unwrap();
        let origin = format!("{}:{}", parsed.host_str().unwrap(), parsed.port_or_known_default().unwrap());
        let jar = self.cookies.entry(origin).or_default();
        let mut request = client().request(method, url);
        if !jar.is_empty() {
            let cookie: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            request = request.header("cookie", cookie.join("; "));
        }
        if let Some(form) = form {
            request = request.header("content-type", "application/x-www-form-urlencoded").body(self::form(form));
        }
        self.visited.push(url.to_string());
        let r = request.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        for set in r.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let expired = attributes.to_ascii_lowercase().contains("max-age=0") || value.is_empty();
            if expired {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_string(), value.to_string());
            }
        }
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap();
        Seen { status, url: url.to_string(), headers, body }
    }

    /// Requests `url` and follows redirects to the page at the end.
    async fn open(&mut self, method: reqwest::Method, url: &str, form: Option<&[(&str, &str)]>) -> Seen {
        let mut seen = self.send(method, url, form).await;
        for _ in 0..20 {
            if !(300..400).contains(&seen.status) {
                return seen;
            }
            let location = seen.header("location").unwrap_or_else(|| panic!("{seen:?}")).to_string();
            let next = reqwest::Url::parse(&seen.url).unwrap().join(&location).unwrap();
            seen = self.send(reqwest::Method::GET, next.as_str(), None).await;
        }
        panic!("more than 20 redirects: {:?}", self.visited)
    }

    /// Submits the page's form (its action, its hidden `prompt`, and `fields`).
    async fn submit(&mut self, page: &Seen, fields: &[(&str, &str)]) -> Seen {
        let action = between(&page.body, "action=\"", "\"").unwrap_or_else(|| panic!("no form in {}", page.body));
        let action = action.replace("&amp;", "&");
        let prompt = between(&page.body, "name=\"prompt\" value=\"", "\"").unwrap_or_else(|| panic!("{}", page.body));
        let url = reqwest::Url::parse(&page.url).unwrap().join(&action).unwrap();
        let mut form = vec![("prompt", prompt.as_str())];
        form.extend_from_slice(fields);
        self.open(reqwest::Method::POST, url.as_str(), Some(&form)).await
    }

    /// Signs in as `login` at the provider's page and consents; the page at the end.
    async fn sign_in(&mut self, login_page: Seen, login: &str) -> Seen {
        assert!(login_page.body.contains("name=\"login\""), "not the login page: {}", login_page.body);
        let consent = self.submit(&login_page, &[("login", login), ("password", "any")]).await;
        assert!(consent.body.contains("value=\"consent\""), "not the consent page: {}", consent.body);
        self.submit(&consent, &[]).await
    }

    fn cookie(&self, origin: &str, name: &str) -> Option<&String> {
        self.cookies.get(origin).and_then(|jar| jar.get(name))
    }
}

fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(text[from..from + len].to_string())
}

/// The query arguments of a URL.
fn query(url: &str) -> HashMap<String, String> {
    reqwest::Url::parse(url).unwrap().query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// A GET with a bearer token; the status and body.
async fn bearer(url: &str, token: &str) -> Seen {
    let r = client().get(url).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    Seen { status, url: url.to_string(), headers, body: r.text().await.unwrap() }
}

/// Asks until `check` holds for the answer to a bearer request, for up to `limit`.
async fn eventually(url: &str, token: &str, limit: Duration, check: impl Fn(&Seen) -> bool) -> Seen {
    let deadline = Instant::now() + limit;
    loop {
        let seen = bearer(url, token).await;
        if check(&seen) || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A token with its payload changed and its signature kept.
fn tampered(token: &str, change: impl Fn(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    change(&mut claims);
    format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2])
}

/// A token with another header and an empty or made-up signature.
fn with_header(token: &str, header: Value, signature: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{signature}", URL_SAFE_NO_PAD.encode(header.to_string()), parts[1])
}

fn config(upstream: &str, issuer: &str, gateway: &str, extra_api: &str) -> String {
    format!(
        r#"
_format_version: "3.0"
services:
- name: app
  url: {upstream}
  routes:
  - name: browser
    paths: [/app]
    plugins:
    - name: openid-connect
      config:
        issuer: {issuer}
        client_id: ward-gateway
        client_secret: [ward-secret]
        redirect_uri: [{gateway}/app/callback]
        scopes: [openid, email, profile]
        logout_uri_suffix: /logout
        logout_methods: [POST]
        logout_redirect_uri: [{gateway}/app/bye]
        upstream_headers_claims: [sub, email]
        upstream_headers_names: [x-user, x-email]
        session_secret: a secret of the tests, long enough
        session_cookie_secure: false
        display_errors: true
  - name: admin
    paths: [/admin]
    plugins:
    - name: openid-connect
      config:
        issuer: {issuer}
        client_id: ward-gateway
        client_secret: ward-secret
        auth_methods: [session]
        scopes_required: [openid admin, openid email]
        session_secret: a secret of the tests, long enough
        display_errors: true
  - name: root
    paths: [/root]
    plugins:
    - name: openid-connect
      config:
        issuer: {issuer}
        client_id: ward-gateway
        client_secret: ward-secret
        auth_methods: [session]
        scopes_required: [admin]
        session_secret: a secret of the tests, long enough
        display_errors: true
  - name: api
    paths: [/api]
    plugins:
    - name: openid-connect
      config:
        issuer: {issuer}
        client_id: [ward-gateway]
        client_secret: [ward-secret]
        auth_methods: [bearer]
        audience_required: [urn:ward:api]
        scopes_required: [read]
        upstream_headers_claims: [client_id, scope]
        upstream_headers_names: [x-client, x-scope]
        display_errors: true
{extra_api}
  - name: partners
    paths: [/partners]
    plugins:
    - name: openid-connect
      config:
        issuer: {issuer}
        client_id: [ward-gateway, stranger]
        auth_methods: [bearer]
        audience_required: [urn:ward:api]
        consumer_claim: [client_id]
        consumer_by: [custom_id, username]
        display_errors: true
  - name: machines
    paths: [/machines]
    plugins:
    - name: openid-connect
      config:
        issuer: {issuer}
        client_id: ward-gateway
        auth_methods: [client_credentials]
        display_errors: true
consumers:
- username: gateway-itself
  custom_id: ward-gateway
"#
    )
}

/// A gateway whose configuration names its own address (in redirect URIs) and the provider.
async fn gateway(upstream: &Upstream, issuer: &str, extra_api: &str) -> GatewayProcess {
    // The gateway knows its address once started: start it with a placeholder, then load
    // the real configuration through the admin API, in force once it answers 201.
    let gw = GatewayProcess::start(&config(&upstream.url(), issuer, "http://127.0.0.1:1", extra_api));
    let gateway = format!("http://{}", gw.proxy);
    let r = client()
        .post(gw.admin_url("/config"))
        .body(config(&upstream.url(), issuer, &gateway, extra_api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}\n{}", r.text().await.unwrap(), gw.log());
    gw
}

#[tokio::test]
async fn a_browser_signs_in_with_pkce_keeps_a_session_refreshes_it_and_logs_out() {
    require_provider();
    let keys = tempfile::tempdir().unwrap();
    let upstream = Upstream::start("app").await;
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let gw = gateway(&upstream, &issuer, "").await;
    let gateway = format!("http://{}", gw.proxy);
    let provider = OpenIdProvider::start(
        port,
        keys.path(),
        "k1",
        &format!("{gateway}/app/callback"),
        &format!("{gateway}/app/bye"),
    )
    .await;
    let gw_origin = gw.proxy.to_string();

    // Unauthenticated: to the provider, with state, nonce and a PKCE S256 challenge.
    let mut browser = Browser::default();
    let first = browser.send(reqwest::Method::GET, &gw.url("/app/hello?x=1"), None).await;
    assert_eq!(first.status, 302, "{first:?}\n{}", gw.log());
    let location = first.header("location").unwrap().to_string();
    assert!(location.starts_with(&format!("{issuer}/auth?")), "{location}");
    let args = query(&location);
    assert_eq!(args["response_type"], "code");
    assert_eq!(args["client_id"], "ward-gateway");
    assert_eq!(args["redirect_uri"], format!("{gateway}/app/callback"));
    assert_eq!(args["scope"], "openid email profile");
    assert_eq!(args["code_challenge_method"], "S256");
    assert_eq!(args["code_challenge"].len(), 43, "base64url of SHA-256");
    assert!(args["state"].len() >= 32 && args["nonce"].len() >= 32, "{args:?}");
    assert!(browser.cookie(&gw_origin, "authorization").is_some(), "the sign-in's state is kept in a cookie");

    // Sign in and consent at the provider; back through the callback to the first URL.
    let login = browser.open(reqwest::Method::GET, &location, None).await;
    let landed = browser.sign_in(login, "alice").await;
    assert_eq!(landed.status, 200, "{landed:?}\nvisited {:?}\n{}\n{}", browser.visited, gw.log(), provider.log());
    assert_eq!(landed.url, gw.url("/app/hello?x=1"), "back where the browser first asked to go");
    let callback = browser.visited.iter().find(|u| u.starts_with(&format!("{gateway}/app/callback?"))).unwrap();
    assert!(query(callback).contains_key("code"), "{callback}");
    assert!(browser.cookie(&gw_origin, "authorization").is_none(), "the sign-in's cookie is gone");
    assert!(browser.cookie(&gw_origin, "session").is_some(), "a session cookie");
    let seen = landed.json();
    assert_eq!(seen["path"], "/hello?x=1", "the route strips its path");
    assert_eq!(seen["headers"]["x-user"], "alice");
    assert_eq!(seen["headers"]["x-email"], "alice@example.test");
    let access = seen["headers"]["authorization"].as_str().unwrap().strip_prefix("Bearer ").unwrap().to_string();

    // scopes_required on a session: the scopes the token endpoint granted.
    let admin = browser.send(reqwest::Method::GET, &gw.url("/admin/panel"), None).await;
    assert_eq!(admin.status, 200, "'openid email' were granted: {admin:?}");
    let root = browser.send(reqwest::Method::GET, &gw.url("/root/panel"), None).await;
    assert_eq!((root.status, root.json()), (403, json!({"message": "Forbidden (invalid scopes)"})));

    // A client cannot send the claim headers itself.
    let forged = client().get(gw.url("/app/hello")).header("x-user", "mallory").send().await.unwrap();
    assert_eq!(forged.status(), 302, "no session: to the provider");

    // The access token lives 4 seconds: the gateway refreshes it with the refresh token.
    let deadline = Instant::now() + Duration::from_secs(20);
    let refreshed = loop {
        let page = browser.send(reqwest::Method::GET, &gw.url("/app/hello"), None).await;
        assert_eq!(page.status, 200, "{page:?}\n{}", gw.log());
        assert_eq!(page.json()["headers"]["x-user"], "alice");
        let now = page.json()["headers"]["authorization"].as_str().unwrap().to_string();
        if now != format!("Bearer {access}") {
            assert!(page.headers.get("set-cookie").is_some(), "the refreshed session is saved");
            break now;
        }
        assert!(Instant::now() < deadline, "the access token was never refreshed\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let again = browser.send(reqwest::Method::GET, &gw.url("/app/hello"), None).await;
    assert_eq!(again.json()["headers"]["authorization"].as_str(), Some(refreshed.as_str()), "kept in the cookie");

    // The session's access token is opaque: as a bearer token, it is introspected (the
    // session's current one: an expired token is rightly inactive, so ask again then).
    let deadline = Instant::now() + Duration::from_secs(20);
    let introspected = loop {
        let page = browser.send(reqwest::Method::GET, &gw.url("/app/hello"), None).await;
        let current = page.json()["headers"]["authorization"].as_str().unwrap().to_string();
        let seen = bearer(&gw.url("/app/by-token"), current.strip_prefix("Bearer ").unwrap()).await;
        if seen.status == 200 || Instant::now() > deadline {
            break seen;
        }
    };
    assert_eq!(introspected.status, 200, "{introspected:?}\n{}", gw.log());
    assert_eq!(introspected.json()["headers"]["x-user"], "alice");
    let unknown = bearer(&gw.url("/app/by-token"), "not-a-token-of-the-provider").await;
    assert_eq!((unknown.status, unknown.json()), (401, json!({"message": "Unauthorized (inactive token)"})));

    // Logout: the cookie goes, and the browser is sent to the provider's end of session.
    let out = browser.send(reqwest::Method::POST, &gw.url("/app/logout"), None).await;
    assert_eq!(out.status, 302, "{out:?}\n{}", gw.log());
    let location = out.header("location").unwrap();
    assert!(location.starts_with(&format!("{issuer}/session/end?")), "{location}");
    let args = query(location);
    assert_eq!(args["post_logout_redirect_uri"], format!("{gateway}/app/bye"));
    assert!(args["id_token_hint"].split('.').count() == 3, "{args:?}");
    assert!(browser.cookie(&gw_origin, "session").is_none(), "the session cookie expired");
    let after = browser.send(reqwest::Method::GET, &gw.url("/app/hello"), None).await;
    assert_eq!(after.status, 302, "signed out: to the provider again");

    // A callback without the sign-in's cookie, or with another state, gets nowhere.
    let stray = client().get(gw.url("/app/callback?code=abc&state=xyz")).send().await.unwrap();
    assert_eq!(stray.status(), 302, "no sign-in in progress: a new one starts");
    let mut other = Browser::default();
    other.send(reqwest::Method::GET, &gw.url("/app/hello"), None).await;
    let wrong = other.send(reqwest::Method::GET, &gw.url("/app/callback?code=abc&state=xyz"), None).await;
    assert_eq!((wrong.status, wrong.json()), (401, json!({"message": "Unauthorized (invalid state)"})));
    drop(provider);
}

#[tokio::test]
async fn bearer_tokens_are_verified_against_the_providers_keys() {
    require_provider();
    let keys = tempfile::tempdir().unwrap();
    let upstream = Upstream::start("app").await;
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let gw = gateway(&upstream, &issuer, "").await;
    let gateway = format!("http://{}", gw.proxy);
    let (callback, bye) = (format!("{gateway}/app/callback"), format!("{gateway}/app/bye"));
    let provider = OpenIdProvider::start(port, keys.path(), "k1", &callback, &bye).await;
    let api = gw.url("/api/orders");
    let unauthorized = |reason: &str| json!({"message": format!("Unauthorized ({reason})")});

    let valid = provider.token("urn:ward:api", "read").await;
    let seen = bearer(&api, &valid).await;
    assert_eq!(seen.status, 200, "{seen:?}\n{}", gw.log());
    assert_eq!(seen.json()["headers"]["x-client"], "ward-gateway");
    assert_eq!(seen.json()["headers"]["x-scope"], "read");

    // The claim headers come from the token only, whatever the client sends in any spelling.
    let r = client()
        .get(&api)
        .bearer_auth(&valid)
        .header("x-scope", "admin")
        .header("X_Scope", "admin")
        .header("x-client", "forged")
        .send()
        .await
        .unwrap();
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["headers"]["x-scope"], "read", "{seen}");
    assert_eq!(seen["headers"]["x-client"], "ward-gateway", "{seen}");
    assert_eq!(seen["headers"]["x_scope"], Value::Null, "{seen}");

    let none = client().get(&api).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    assert_eq!(none.json::<Value>().await.unwrap(), json!({"message": "Unauthorized"}));

    let seen = bearer(&api, &provider.token("urn:ward:other", "read").await).await;
    assert_eq!((seen.status, seen.json()), (403, json!({"message": "Forbidden (invalid audience)"})));
    let seen = bearer(&api, &provider.token("urn:ward:api", "write").await).await;
    assert_eq!((seen.status, seen.json()), (403, json!({"message": "Forbidden (invalid scopes)"})));

    let seen = bearer(&api, &tampered(&valid, |c| c["scope"] = json!("read write"))).await;
    assert_eq!((seen.status, seen.json()), (401, unauthorized("invalid signature")));
    assert_eq!(seen.header("www-authenticate"), Some("Bearer error=\"invalid_token\""));

    let seen = bearer(&api, &with_header(&valid, json!({"alg": "none", "kid": "k1"}), "")).await;
    assert_eq!((seen.status, seen.json()), (401, unauthorized("algorithm not allowed")));
    // HS256 with the provider's public key as the secret: the classic confusion.
    let jwks = client().get(format!("{issuer}/jwks")).send().await.unwrap().text().await.unwrap();
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(valid.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".into());
    let hmac =
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(jwks.as_bytes())).unwrap();
    let seen = bearer(&api, &hmac).await;
    assert_eq!((seen.status, seen.json()), (401, unauthorized("algorithm not allowed")));

    let seen = bearer(&api, "opaque").await;
    assert_eq!((seen.status, seen.json()), (401, unauthorized("not a JWT")));

    // consumer_claim: the token's client_id names a consumer by custom_id; an unknown one is refused.
    let partners = gw.url("/partners/list");
    let seen = bearer(&partners, &valid).await;
    assert_eq!(seen.status, 200, "{seen:?}\n{}", gw.log());
    assert_eq!(seen.json()["headers"]["x-consumer-username"], "gateway-itself");
    assert_eq!(seen.json()["headers"]["x-consumer-custom-id"], "ward-gateway");
    let stranger = provider.token_of(("stranger", "stranger-secret"), "urn:ward:api", "read").await;
    let seen = bearer(&partners, &stranger).await;
    assert_eq!((seen.status, seen.json()), (403, json!({"message": "Forbidden (consumer not found)"})));

    // Another issuer signing with the very same key.
    let other_port = free_port();
    let other = OpenIdProvider::start(other_port, keys.path(), "k1", &callback, &bye).await;
    let seen = bearer(&api, &other.token("urn:ward:api", "read").await).await;
    assert_eq!((seen.status, seen.json()), (401, unauthorized("invalid issuer")));
    other.stop();

    // A token of 2 seconds (no leeway): accepted, then expired.
    let short = provider.token("urn:ward:short", "read").await;
    let seen = eventually(&api, &short, Duration::from_secs(15), |s| s.status == 401).await;
    assert_eq!((seen.status, seen.json()), (401, unauthorized("token expired")));

    // Client credentials in Basic: exchanged at the token endpoint, a bearer token upstream.
    let machines = gw.url("/machines/jobs");
    let r = client().get(&machines).basic_auth("ward-gateway", Some("ward-secret")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", gw.log());
    let seen: Value = r.json().await.unwrap();
    assert!(seen["headers"]["authorization"].as_str().unwrap().starts_with("Bearer "), "{seen}");
    let r = client().get(&machines).basic_auth("ward-gateway", Some("wrong")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let message = r.json::<Value>().await.unwrap()["message"].as_str().unwrap().to_string();
    assert!(message.starts_with("Unauthorized (the provider answered 401"), "{message}");
    assert!(message.contains("invalid_client"), "{message}");
    drop(provider);
}

#[tokio::test]
async fn rotated_keys_are_fetched_and_cached_keys_outlive_the_provider() {
    require_provider();
    let keys = tempfile::tempdir().unwrap();
    let upstream = Upstream::start("app").await;
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    // Unknown keys are fetched again at most once a second here (Kong's default: 30).
    let gw = gateway(&upstream, &issuer, "        rediscovery_lifetime: 1\n").await;
    let gateway = format!("http://{}", gw.proxy);
    let (callback, bye) = (format!("{gateway}/app/callback"), format!("{gateway}/app/bye"));
    let api = gw.url("/api/orders");
    let limit = Duration::from_secs(15);

    let provider = OpenIdProvider::start(port, keys.path(), "k1", &callback, &bye).await;
    let t1 = provider.token("urn:ward:api", "read").await;
    assert_eq!(bearer(&api, &t1).await.status, 200, "{}", gw.log());
    provider.stop();

    // The provider now signs with k2 and still publishes k1.
    let provider = OpenIdProvider::start(port, keys.path(), "k2,k1", &callback, &bye).await;
    let t2 = provider.token("urn:ward:api", "read").await;
    assert!(t2 != t1);
    let seen = eventually(&api, &t2, limit, |s| s.status == 200).await;
    assert_eq!(seen.status, 200, "the new key is fetched: {seen:?}\n{}", gw.log());
    assert_eq!(bearer(&api, &t1).await.status, 200);
    provider.stop();

    // k3 replaces both, and the provider goes away before the gateway saw k3.
    let provider = OpenIdProvider::start(port, keys.path(), "k3", &callback, &bye).await;
    let t3 = provider.token("urn:ward:api", "read").await;
    provider.stop();
    for (name, token) in [("k1", &t1), ("k2", &t2)] {
        let seen = bearer(&api, token).await;
        assert_eq!(seen.status, 200, "{name}: a cached key needs no provider: {seen:?}\n{}", gw.log());
    }
    let seen = eventually(&api, &t3, limit, |s| s.status == 503).await;
    assert_eq!(
        (seen.status, seen.json()),
        (503, json!({"message": "The identity provider is unavailable"})),
        "{}",
        gw.log()
    );
    // Within rediscovery_lifetime, an unknown key is not asked for again.
    let seen = bearer(&api, &t3).await;
    assert!(
        seen.json() == json!({"message": "Unauthorized (no key of the provider has that kid)"}) || seen.status == 503,
        "{seen:?}"
    );
    assert_eq!(bearer(&api, &t1).await.status, 200, "still, while the provider is down");
}

#[test]
fn configurations_it_cannot_honour_are_refused_by_field() {
    let config = |fields: &str| {
        format!(
            "_format_version: \"3.0\"\nplugins:\n- name: openid-connect\n  config:\n    issuer: http://idp.test\n{fields}"
        )
    };
    let table = [
        (
            "    client_id: a\n    client_secret: s\n    auth_methods: [password]\n",
            "plugins[0].config.auth_methods[0]: 'password' is not supported by Ward",
        ),
        (
            "    client_id: a\n    client_auth: [private_key_jwt]\n",
            "plugins[0].config.client_jwk: required by private_key_jwt",
        ),
        (
            "    client_id: a\n    client_auth: [tls_client_auth]\n",
            "plugins[0].config.client_auth[0]: 'tls_client_auth' is not supported (client_secret_basic, client_secret_post, private_key_jwt)",
        ),
        (
            "    client_id: a\n    client_auth: [private_key_jwt]\n    client_jwk: [{kty: EC}]\n",
            "plugins[0].config.client_jwk[0]: only RSA keys (kty: RSA) are supported",
        ),
        (
            "    client_id: a\n    client_secret: s\n    bearer_token_param_type: [query]\n",
            "plugins[0].config.bearer_token_param_type: unknown field",
        ),
        ("    client_secret: s\n", "plugins[0].config.client_id: required"),
        (
            "    client_id: a\n",
            "plugins[0].config.client_secret: required by authorization_code, introspection and session",
        ),
        (
            "    client_id: a\n    client_secret: s\n    upstream_headers_claims: [sub]\n",
            "plugins[0].config.upstream_headers_names: must have one name per claim",
        ),
        (
            "    client_id: a\n    client_secret: s\n    scopes: [email]\n",
            "plugins[0].config.scopes: must contain 'openid'",
        ),
    ];
    for (fields, want) in table {
        let run = common::ward_with_config(&config(fields), &["gateway", "check", "--config", "{config}"]);
        let stderr = run.fails();
        assert!(stderr.contains(want), "{fields}: wanted {want:?} in:\n{stderr}");
    }
    let bad_issuer = config("    client_id: a\n    client_secret: s\n").replace("http://idp.test", "idp.test");
    let run = common::ward_with_config(&bad_issuer, &["gateway", "check", "--config", "{config}"]);
    assert!(run.fails().contains("plugins[0].config.issuer: 'idp.test' is not an http or https URL"));
}

/// Routes whose gateway signs in as client ward-pkjwt with a private JWK: `jwk` (its own
/// key), and on /pkwrong another key the provider does not know for it.
fn private_key_jwt_routes(issuer: &str, gateway: &str, jwk: &str, wrong: &str) -> String {
    let route = |name: &str, key: &str| {
        format!(
            r#"  - name: {name}
    paths: [/{name}]
    plugins:
    - name: openid-connect
      config:
        issuer: {issuer}
        client_id: ward-pkjwt
        client_auth: [private_key_jwt]
        client_jwk: [{key}]
        redirect_uri: [{gateway}/{name}/callback]
        upstream_headers_claims: [sub]
        upstream_headers_names: [x-user]
        session_cookie_name: {name}_session
        authorization_cookie_name: {name}_authorization
        session_cookie_secure: false
        display_errors: true
"#
        )
    };
    format!("{}{}", route("pk", jwk), route("pkwrong", wrong))
}

#[tokio::test]
async fn private_key_jwt_authenticates_the_gateway_at_the_token_endpoint() {
    require_provider();
    let keys = tempfile::tempdir().unwrap();
    let upstream = Upstream::start("app").await;
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let gw = gateway(&upstream, &issuer, "").await;
    let gateway = format!("http://{}", gw.proxy);
    let redirects = format!("{gateway}/pk/callback,{gateway}/pkwrong/callback");
    let (callback, bye) = (format!("{gateway}/app/callback"), format!("{gateway}/app/bye"));
    let extra = ["--private-key-jwt-redirect-uris", redirects.as_str()];
    let _provider = OpenIdProvider::start_with(port, keys.path(), "k1", &callback, &bye, &extra).await;
    // The client's key, made by the provider's script; and the provider's own signing key,
    // which is no key of that client.
    let jwk = std::fs::read_to_string(keys.path().join("client-ward-pkjwt.json")).unwrap();
    let wrong = std::fs::read_to_string(keys.path().join("k1.json")).unwrap();
    let routes = private_key_jwt_routes(&issuer, &gateway, &jwk, &wrong);
    let r = client()
        .post(gw.admin_url("/config"))
        .body(config(&upstream.url(), &issuer, &gateway, &routes))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    let mut browser = Browser::default();
    let login = browser.open(reqwest::Method::GET, &gw.url("/pk/hello"), None).await;
    let landed = browser.sign_in(login, "bob").await;
    assert_eq!(landed.status, 200, "{landed:?}\nvisited {:?}\n{}", browser.visited, gw.log());
    assert_eq!(landed.json()["headers"]["x-user"], "bob");

    let mut browser = Browser::default();
    let login = browser.open(reqwest::Method::GET, &gw.url("/pkwrong/hello"), None).await;
    let refused = browser.sign_in(login, "bob").await;
    assert_eq!(refused.status, 401, "{refused:?}");
    let message = refused.json()["message"].as_str().unwrap().to_string();
    assert!(message.starts_with("Unauthorized (the provider answered 401"), "{message}");
    assert!(message.contains("invalid_client"), "{message}");
}

#[tokio::test]
async fn a_provider_over_https_is_verified_only_with_ssl_verify() {
    require_provider();
    let keys = tempfile::tempdir().unwrap();
    let pki = common::TestPki::new("Test OpenID CA");
    let leaf = pki.server(&["127.0.0.1", "localhost"]);
    let (cert, key) = (keys.path().join("tls.crt"), keys.path().join("tls.key"));
    std::fs::write(&cert, &leaf.cert).unwrap();
    std::fs::write(&key, &leaf.key).unwrap();
    let upstream = Upstream::start("app").await;
    let port = free_port();
    let issuer = format!("https://127.0.0.1:{port}");
    // The same route again, verifying the provider's certificate against the system's trust
    // store, where the test CA is not.
    let verified = format!(
        "  - name: verified\n    paths: [/verified]\n    plugins:\n    - name: openid-connect\n      config: \
         {{issuer: \"{issuer}\", client_id: ward-gateway, auth_methods: [bearer], ssl_verify: true}}\n"
    );
    let gw = gateway(&upstream, &issuer, &verified).await;
    let gateway = format!("http://{}", gw.proxy);
    let (callback, bye) = (format!("{gateway}/app/callback"), format!("{gateway}/app/bye"));
    let tls = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let provider = OpenIdProvider::start_with(port, keys.path(), "k1", &callback, &bye, &tls).await;
    assert!(provider.issuer.starts_with("https://"));

    let token = provider.token("urn:ward:api", "read").await;
    let seen = bearer(&gw.url("/api/orders"), &token).await;
    assert_eq!(seen.status, 200, "ssl_verify: false (Kong's default) accepts the test CA: {seen:?}\n{}", gw.log());
    // The keys cannot be fetched: the provider is unavailable to this route.
    let seen = bearer(&gw.url("/verified/orders"), &token).await;
    assert_eq!(
        (seen.status, seen.json()),
        (503, json!({"message": "The identity provider is unavailable"})),
        "ssl_verify: true refuses a certificate the system does not trust\n{}",
        gw.log()
    );
    assert!(gw.log().contains("certificate"), "the log says why:\n{}", gw.log());
}
