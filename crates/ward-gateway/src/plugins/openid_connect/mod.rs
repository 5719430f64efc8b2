//! openid-connect: Kong's plugin of that name (PRIORITY 1050), against any OpenID provider
//! found by discovery.
//!
//! A request is authenticated by the first of these that applies, in this order:
//! - the provider redirecting back (`state` in the query, and the authorization cookie):
//!   the code is exchanged at the token endpoint with the PKCE verifier, the ID token is
//!   verified (nonce included), a session cookie is set and the browser is sent back to the
//!   URL it first asked for;
//! - a bearer token: a JWT verified against the provider's keys (`bearer`), or any other
//!   token asked about at the introspection endpoint (`introspection`);
//! - HTTP Basic credentials of a client, exchanged at the token endpoint (`client_credentials`);
//! - the session cookie (`session`): its access token is refreshed with the refresh token
//!   once it expired, and a logout request ends it;
//! - otherwise, a redirect to the provider's authorization endpoint (`authorization_code`),
//!   with state, nonce and a PKCE S256 challenge kept in a short-lived sealed cookie.
//!
//! Both cookies are sealed as the session plugin seals its own ([`super::session::seal`]).

mod client_key;
mod provider;
mod token;

use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use cookie::SameSite;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::session::seal::{self, RequestCookies, Sealer, tag};
use super::session::{Attributes, Clock, is_attribute_value, is_token, seconds, set_of, text};
use super::{Compile, Plugin};
use crate::exchange::Exchange;
use crate::reply::Reply;
use client_key::ClientKey;
use provider::{Client, KeyError, Provider};
use token::{Claims, Expect, Rejected};

/// A string or a list of strings (Kong's arrays accept one string as well).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(Option::<OneOrMany>::deserialize(d)?.map(|v| match v {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    }))
}

/// The fields Ward implements, under Kong's names; any other is refused by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    issuer: String,
    #[serde(default, deserialize_with = "list")]
    client_id: Option<Vec<String>>,
    #[serde(default, deserialize_with = "list")]
    client_secret: Option<Vec<String>>,
    #[serde(default, deserialize_with = "list")]
    client_auth: Option<Vec<String>>,
    client_jwk: Option<Vec<Value>>,
    auth_methods: Option<Vec<String>>,
    #[serde(default, deserialize_with = "list")]
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "list")]
    redirect_uri: Option<Vec<String>>,
    logout_uri_suffix: Option<String>,
    logout_query_arg: Option<String>,
    logout_methods: Option<Vec<String>>,
    #[serde(default, deserialize_with = "list")]
    logout_redirect_uri: Option<Vec<String>>,
    audience_required: Option<Vec<String>>,
    scopes_required: Option<Vec<String>>,
    #[serde(default, deserialize_with = "list")]
    consumer_claim: Option<Vec<String>>,
    consumer_by: Option<Vec<String>>,
    consumer_optional: Option<bool>,
    upstream_headers_claims: Option<Vec<String>>,
    upstream_headers_names: Option<Vec<String>>,
    refresh_tokens: Option<bool>,
    ssl_verify: Option<bool>,
    timeout: Option<f64>,
    leeway: Option<f64>,
    rediscovery_lifetime: Option<f64>,
    display_errors: Option<bool>,
    session_secret: Option<String>,
    session_cookie_name: Option<String>,
    session_cookie_path: Option<String>,
    session_cookie_domain: Option<String>,
    session_cookie_same_site: Option<String>,
    session_cookie_http_only: Option<bool>,
    session_cookie_secure: Option<bool>,
    session_rolling_timeout: Option<f64>,
    session_absolute_timeout: Option<f64>,
    authorization_cookie_name: Option<String>,
    authorization_rolling_timeout: Option<f64>,
}

/// Which of Kong's `auth_methods` are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthMethod {
    AuthorizationCode,
    Bearer,
    Introspection,
    ClientCredentials,
    Session,
}

const AUTH_METHODS: [(&str, AuthMethod); 5] = [
    ("authorization_code", AuthMethod::AuthorizationCode),
    ("bearer", AuthMethod::Bearer),
    ("introspection", AuthMethod::Introspection),
    ("client_credentials", AuthMethod::ClientCredentials),
    ("session", AuthMethod::Session),
];

/// Kong's auth methods Ward does not have, refused by name rather than ignored.
const UNSUPPORTED_AUTH_METHODS: [&str; 4] = ["password", "userinfo", "kong_oauth2", "refresh_token"];

/// How the gateway authenticates itself at the token and introspection endpoints.
#[derive(Debug)]
enum ClientAuth {
    /// `client_secret_basic`.
    Basic,
    /// `client_secret_post`.
    Post,
    /// `private_key_jwt`, with the first key of `client_jwk`.
    PrivateKeyJwt(ClientKey),
}

/// The `client_auth` names Ward has.
const CLIENT_AUTHS: [&str; 3] = ["client_secret_basic", "client_secret_post", "private_key_jwt"];

/// Where a claim names the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConsumerBy {
    Id,
    Username,
    CustomId,
}

/// A compiled openid-connect configuration.
pub(crate) struct OpenidConnect {
    provider: Provider,
    client_ids: Vec<String>,
    client_secret: Option<String>,
    client_auth: ClientAuth,
    methods: Vec<AuthMethod>,
    scopes: String,
    redirect_uri: Option<String>,
    logout_uri_suffix: Option<String>,
    logout_query_arg: Option<String>,
    logout_methods: Vec<Method>,
    logout_redirect_uri: Option<String>,
    audience_required: Vec<String>,
    /// Each entry: scopes that must all be granted; any entry satisfied is enough.
    scopes_required: Vec<Vec<String>>,
    consumer_claim: Vec<String>,
    consumer_by: Vec<ConsumerBy>,
    consumer_optional: bool,
    upstream_headers: Vec<(String, HeaderName)>,
    /// The names of `upstream_headers`.
    claim_header_names: Vec<HeaderName>,
    refresh_tokens: bool,
    leeway: u64,
    display_errors: bool,
    sealer: Sealer,
    session_cookie: String,
    session_rolling: f64,
    session_absolute: f64,
    authorization_cookie: String,
    authorization_rolling: f64,
    attributes: Attributes,
    clock: Clock,
}

/// What the session cookie holds: the tokens, and the claims of the verified ID token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tokens {
    /// When the session began (seconds since the epoch).
    #[serde(rename = "c")]
    created: i64,
    /// When the cookie was last written.
    #[serde(rename = "w")]
    written: i64,
    #[serde(rename = "a")]
    access_token: String,
    /// When the access token expires, if the provider said.
    #[serde(rename = "x", default)]
    expires: Option<i64>,
    #[serde(rename = "r", default)]
    refresh_token: Option<String>,
    #[serde(rename = "i", default)]
    id_token: Option<String>,
    /// The scopes the token endpoint granted.
    #[serde(rename = "s", default)]
    scope: Option<String>,
    #[serde(rename = "k")]
    claims: Claims,
}

/// What the authorization cookie holds while the browser signs in at the provider.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    #[serde(rename = "c")]
    created: i64,
    #[serde(rename = "s")]
    state: String,
    #[serde(rename = "n")]
    nonce: String,
    /// The PKCE code verifier.
    #[serde(rename = "v")]
    verifier: String,
    /// The redirect_uri sent to the authorization endpoint.
    #[serde(rename = "r")]
    redirect_uri: String,
    /// The path and query the browser first asked for.
    #[serde(rename = "u")]
    original: String,
}

/// 32 random bytes, base64url.
fn random() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system's random generator works");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// PKCE's S256 challenge of `verifier`.
fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()))
}

/// `url` with `pairs` added to its query.
fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{}", query.finish())
}

/// A claim's value as an upstream header: strings as they are, lists joined with ", ".
fn claim_header(value: &Value) -> Option<HeaderValue> {
    let text = match value {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        Value::Array(list) => list
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    };
    HeaderValue::from_str(&text).ok()
}

/// A non-negative number of seconds.
fn non_negative(cx: &mut Compile<'_>, field: &str, value: Option<f64>, default: f64) -> f64 {
    let v = seconds(cx, field, value, default);
    if v < 0.0 {
        cx.error(field, "must be at least 0");
    }
    v
}

pub(super) fn compile(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: Config = cx.config(value)?;
    let before = cx.errors.0.len();
    match http::Uri::try_from(c.issuer.as_str()) {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
        _ => cx.error("issuer", format!("'{}' is not an http or https URL", c.issuer)),
    }
    let client_ids = c.client_id.unwrap_or_default();
    if client_ids.is_empty() || client_ids.iter().any(String::is_empty) {
        cx.error("client_id", "required: the client the gateway is at the provider");
    }
    let client_secret = c.client_secret.unwrap_or_default();
    if client_secret.len() > 1 {
        cx.error("client_secret", "one secret: Ward signs in as the first client_id only");
    }
    let client_auths = c.client_auth.unwrap_or_default();
    for (i, name) in client_auths.iter().enumerate() {
        if !CLIENT_AUTHS.contains(&name.as_str()) {
            cx.error(&format!("client_auth[{i}]"), format!("'{name}' is not supported ({})", CLIENT_AUTHS.join(", ")));
        }
    }
    // The first one is used, as Kong does with the first client.
    let client_auth = match client_auths.first().map(String::as_str) {
        Some("private_key_jwt") => match c.client_jwk.as_deref().unwrap_or_default().first() {
            None => {
                cx.error("client_jwk", "required by private_key_jwt: the client's private RSA key, as a JWK");
                None
            }
            Some(jwk) => match ClientKey::from_jwk(jwk) {
                Ok(key) => Some(ClientAuth::PrivateKeyJwt(key)),
                Err(e) => {
                    cx.error("client_jwk[0]", e);
                    None
                }
            },
        },
        Some("client_secret_post") => Some(ClientAuth::Post),
        _ => Some(ClientAuth::Basic),
    };
    if c.client_jwk.is_some() && !matches!(client_auth, Some(ClientAuth::PrivateKeyJwt(_)) | None) {
        cx.error("client_jwk", "only used by client_auth private_key_jwt");
    }
    let methods = match c.auth_methods {
        None => AUTH_METHODS.iter().map(|(_, m)| *m).collect(),
        Some(list) => {
            for (i, m) in list.iter().enumerate() {
                if UNSUPPORTED_AUTH_METHODS.contains(&m.as_str()) {
                    cx.error(&format!("auth_methods[{i}]"), format!("'{m}' is not supported by Ward"));
                }
            }
            let known: Vec<String> =
                list.into_iter().filter(|m| !UNSUPPORTED_AUTH_METHODS.contains(&m.as_str())).collect();
            set_of(cx, "auth_methods", known, &AUTH_METHODS)
        }
    };
    let needs_secret = methods
        .iter()
        .any(|m| matches!(m, AuthMethod::AuthorizationCode | AuthMethod::Introspection | AuthMethod::Session));
    if needs_secret && client_secret.is_empty() && !matches!(client_auth, Some(ClientAuth::PrivateKeyJwt(_))) {
        cx.error("client_secret", "required by authorization_code, introspection and session");
    }
    let scopes = c.scopes.unwrap_or_else(|| vec!["openid".into()]);
    if !scopes.iter().any(|s| s == "openid") && methods.contains(&AuthMethod::AuthorizationCode) {
        cx.error("scopes", "must contain 'openid': the authorization code flow needs an ID token");
    }
    let redirect_uri = match c.redirect_uri.unwrap_or_default().into_iter().next() {
        Some(u) if http::Uri::try_from(u.as_str()).is_ok_and(|u| u.host().is_some()) => Some(u),
        Some(u) => {
            cx.error("redirect_uri", format!("'{u}' is not an absolute URL"));
            None
        }
        None => None,
    };
    let methods_allowed = [("GET", Method::GET), ("POST", Method::POST), ("DELETE", Method::DELETE)];
    let logout_methods = c.logout_methods.unwrap_or_else(|| vec!["POST".into(), "DELETE".into()]);
    let logout_methods = set_of(cx, "logout_methods", logout_methods, &methods_allowed);
    let logout_uri_suffix = c.logout_uri_suffix.filter(|s| !s.is_empty());
    let logout_query_arg = c.logout_query_arg.filter(|s| !s.is_empty());
    let logout_redirect_uri = c.logout_redirect_uri.unwrap_or_default().into_iter().next();
    let scopes_required: Vec<Vec<String>> = c
        .scopes_required
        .unwrap_or_default()
        .iter()
        .map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let by = [("id", ConsumerBy::Id), ("username", ConsumerBy::Username), ("custom_id", ConsumerBy::CustomId)];
    let consumer_by = c.consumer_by.unwrap_or_else(|| vec!["username".into(), "custom_id".into()]);
    let consumer_by = set_of(cx, "consumer_by", consumer_by, &by);
    let claims = c.upstream_headers_claims.unwrap_or_default();
    let names = c.upstream_headers_names.unwrap_or_default();
    if claims.len() != names.len() {
        cx.error("upstream_headers_names", "must have one name per claim of upstream_headers_claims");
    }
    let mut upstream_headers = Vec::new();
    for (i, (claim, name)) in claims.iter().zip(&names).enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => upstream_headers.push((claim.clone(), h)),
            Err(_) => cx.error(&format!("upstream_headers_names[{i}]"), format!("'{name}' is not a header name")),
        }
    }
    let timeout = seconds(cx, "timeout", c.timeout, 10_000.0);
    if !(1.0..=2_147_483_646.0).contains(&timeout) {
        cx.error("timeout", "must be between 1 and 2147483646 milliseconds");
    }
    let leeway = non_negative(cx, "leeway", c.leeway, 0.0);
    if leeway > 31_536_000.0 {
        cx.error("leeway", "must be at most 31536000 seconds");
    }
    let rediscovery = non_negative(cx, "rediscovery_lifetime", c.rediscovery_lifetime, 30.0);
    let roots = if c.ssl_verify.unwrap_or(false) {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            cx.error("ssl_verify", "the system's trust store has no usable certificate");
        }
        Some(roots)
    } else {
        None
    };
    let secret = match c.session_secret {
        None => cx.shared.sessions.secret.to_vec(),
        Some(s) if s.is_empty() => {
            cx.error("session_secret", "length must be at least 1");
            Vec::new()
        }
        Some(s) => s.into_bytes(),
    };
    let cookie_name = |cx: &mut Compile<'_>, field: &str, value: Option<String>, default: &str| {
        let name = text(cx, field, value, default);
        if !is_token(&name) {
            cx.error(field, format!("'{name}' is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~)"));
        }
        name
    };
    let session_cookie = cookie_name(cx, "session_cookie_name", c.session_cookie_name, "session");
    let authorization_cookie =
        cookie_name(cx, "authorization_cookie_name", c.authorization_cookie_name, "authorization");
    if session_cookie == authorization_cookie {
        cx.error("authorization_cookie_name", "must differ from session_cookie_name");
    }
    let path = text(cx, "session_cookie_path", c.session_cookie_path, "/");
    if !is_attribute_value(&path) {
        cx.error("session_cookie_path", "must be printable text without ';'");
    }
    let domain = match c.session_cookie_domain {
        Some(d) if d.is_empty() || !is_attribute_value(&d) => {
            cx.error("session_cookie_domain", "must be printable text without ';'");
            None
        }
        d => d,
    };
    // Lax by default, as Kong: the provider's redirect back is a cross-site navigation.
    let same_site = match c.session_cookie_same_site.as_deref().unwrap_or("Lax") {
        "Strict" => Some(SameSite::Strict),
        "Lax" => Some(SameSite::Lax),
        "None" => Some(SameSite::None),
        "Default" => None,
        _ => {
            cx.error("session_cookie_same_site", "expected one of: Strict, Lax, None, Default");
            None
        }
    };
    let session_rolling = non_negative(cx, "session_rolling_timeout", c.session_rolling_timeout, 3600.0);
    let session_absolute = non_negative(cx, "session_absolute_timeout", c.session_absolute_timeout, 86400.0);
    let authorization_rolling =
        non_negative(cx, "authorization_rolling_timeout", c.authorization_rolling_timeout, 600.0);
    let client_auth = client_auth?;
    if cx.errors.0.len() > before {
        return None;
    }
    let client = Client::new(roots, Duration::from_secs_f64(timeout / 1000.0));
    Some(Plugin::OpenidConnect(Box::new(OpenidConnect {
        provider: Provider::new(&c.issuer, client, Duration::try_from_secs_f64(rediscovery).unwrap_or(Duration::MAX)),
        client_ids,
        client_secret: client_secret.into_iter().next(),
        client_auth,
        methods,
        scopes: scopes.join(" "),
        redirect_uri,
        logout_uri_suffix,
        logout_query_arg,
        logout_methods,
        logout_redirect_uri,
        audience_required: c.audience_required.unwrap_or_default(),
        scopes_required,
        consumer_claim: c.consumer_claim.unwrap_or_default(),
        consumer_by,
        consumer_optional: c.consumer_optional.unwrap_or(false),
        claim_header_names: upstream_headers.iter().map(|(_, n)| n.clone()).collect(),
        upstream_headers,
        refresh_tokens: c.refresh_tokens.unwrap_or(true),
        leeway: leeway as u64,
        display_errors: c.display_errors.unwrap_or(false),
        sealer: Sealer::new(&secret),
        session_cookie,
        session_rolling,
        session_absolute,
        authorization_cookie,
        authorization_rolling,
        attributes: Attributes {
            path,
            domain,
            secure: c.session_cookie_secure.unwrap_or(true) || same_site == Some(SameSite::None),
            same_site,
            http_only: c.session_cookie_http_only.unwrap_or(true),
        },
        clock: cx.shared.sessions.clock.clone(),
    })))
}

/// A failed authentication, as the client is told.
enum Failure {
    /// 401: no credential, or one that is not valid.
    Unauthorized(String),
    /// 403: a valid credential without the audience, scopes or consumer required.
    Forbidden(String),
    /// 503: the provider is needed and cannot be reached.
    Unavailable(String),
}

impl From<Rejected> for Failure {
    fn from(r: Rejected) -> Self {
        match r {
            Rejected::Key(KeyError::Unavailable(e)) => Failure::Unavailable(e),
            other => Failure::Unauthorized(other.to_string()),
        }
    }
}

impl From<KeyError> for Failure {
    fn from(e: KeyError) -> Self {
        Failure::from(Rejected::Key(e))
    }
}

/// Where a request's token came from, for what is checked and kept.
struct Granted {
    claims: Claims,
    /// The scopes granted, when the token endpoint said rather than a claim.
    scope: Option<String>,
    /// The credential the consumer is authenticated with (`sub`).
    subject: Option<String>,
}

impl OpenidConnect {
    fn has(&self, method: AuthMethod) -> bool {
        self.methods.contains(&method)
    }

    /// The client's response: Kong's JSON message, with the reason when `display_errors`.
    fn reply(&self, failure: Failure, token_sent: bool) -> Reply {
        let (status, base, reason) = match failure {
            Failure::Unauthorized(r) => (StatusCode::UNAUTHORIZED, "Unauthorized", r),
            Failure::Forbidden(r) => (StatusCode::FORBIDDEN, "Forbidden", r),
            Failure::Unavailable(r) => {
                tracing::warn!("openid-connect: {r}");
                return Reply::error(StatusCode::SERVICE_UNAVAILABLE, "The identity provider is unavailable");
            }
        };
        let message =
            if self.display_errors && !reason.is_empty() { format!("{base} ({reason})") } else { base.into() };
        let mut reply = Reply::error(status, message);
        if status == StatusCode::UNAUTHORIZED {
            let challenge = if token_sent { "Bearer error=\"invalid_token\"" } else { "Bearer" };
            reply = reply.header(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        reply
    }

    pub(super) async fn access(&self, ex: &mut Exchange<'_>) -> Result<(), Reply> {
        // Whatever the client sent under those names, in any spelling, is not a claim.
        ward_http::headers::remove_every_spelling(&mut ex.headers, &self.claim_header_names);
        let now = self.clock.now();
        let cookies = RequestCookies::of(&ex.headers);
        if self.has(AuthMethod::AuthorizationCode)
            && !ex.query_values("state").is_empty()
            && let Some(pending) = self.pending(&cookies, now)
        {
            return Err(self.callback(ex, pending, now).await);
        }
        let authorization = ex.header(&header::AUTHORIZATION).map(str::to_string);
        if let Some(auth) = &authorization {
            let (scheme, credential) = auth.trim().split_once(' ').unwrap_or((auth.trim(), ""));
            let credential = credential.trim();
            if scheme.eq_ignore_ascii_case("bearer")
                && (self.has(AuthMethod::Bearer) || self.has(AuthMethod::Introspection))
            {
                let granted = self.bearer(credential).await.map_err(|f| self.reply(f, true))?;
                return self.admit(ex, granted, None).map_err(|f| self.reply(f, true));
            }
            if scheme.eq_ignore_ascii_case("basic") && self.has(AuthMethod::ClientCredentials) {
                let (granted, access) = self.client_credentials(credential).await.map_err(|f| self.reply(f, true))?;
                return self.admit(ex, granted, Some(&access)).map_err(|f| self.reply(f, true));
            }
        }
        if self.has(AuthMethod::Session)
            && let Some((tokens, count)) = self.session(&cookies, now)
        {
            if self.logs_out(ex) {
                return Err(self.logout(&tokens, count).await);
            }
            match self.resume(ex, tokens, count, now).await {
                Ok(None) => return Ok(()),
                Ok(Some(failure)) => return Err(self.reply(failure, false)),
                // The session could not be refreshed: it is over, the browser signs in again.
                Err(expired) => ex.response_headers.extend(expired),
            }
        }
        if self.has(AuthMethod::AuthorizationCode) {
            return Err(self.start(ex, now).await);
        }
        Err(self.reply(Failure::Unauthorized(String::new()), false))
    }

    /// Checks what the token grants against the configuration, then lets the request
    /// through with the consumer and the claim headers; `access` replaces the token sent.
    fn admit(&self, ex: &mut Exchange<'_>, g: Granted, access: Option<&str>) -> Result<(), Failure> {
        if !self.audience_required.is_empty() && !token::has_any(&g.claims, "aud", &self.audience_required) {
            return Err(Failure::Forbidden("invalid audience".into()));
        }
        if !self.scopes_required.is_empty() {
            let granted: Vec<&str> = match &g.scope {
                Some(s) => s.split_whitespace().collect(),
                None => token::values(&g.claims, "scope", true),
            };
            if !self.scopes_required.iter().any(|all| all.iter().all(|s| granted.contains(&s.as_str()))) {
                return Err(Failure::Forbidden("invalid scopes".into()));
            }
        }
        if !self.consumer_claim.is_empty() {
            let named = self.consumer_claim.iter().find_map(|c| g.claims.get(c).and_then(Value::as_str));
            let found = named.and_then(|name| {
                self.consumer_by.iter().find_map(|by| match by {
                    ConsumerBy::Id => ex.consumers.by_id(name),
                    ConsumerBy::Username => ex.consumers.by_username(name),
                    ConsumerBy::CustomId => ex.consumers.by_custom_id(name),
                })
            });
            match found {
                Some(consumer) => ex.authenticate(consumer, g.subject.clone().or(named.map(str::to_string))),
                None if self.consumer_optional => {}
                None => return Err(Failure::Forbidden("consumer not found".into())),
            }
        }
        for (claim, name) in &self.upstream_headers {
            if let Some(value) = g.claims.get(claim).and_then(claim_header) {
                ex.headers.insert(name.clone(), value);
            }
        }
        if let Some(access) = access
            && let Ok(value) = HeaderValue::from_str(&format!("Bearer {access}"))
        {
            ex.headers.insert(header::AUTHORIZATION, value);
        }
        Ok(())
    }

    fn audiences(&self) -> Option<&[String]> {
        // With audience_required, `admit` checks the audience; otherwise it is the client's.
        self.audience_required.is_empty().then_some(self.client_ids.as_slice())
    }

    /// A bearer token: verified as a JWT, or introspected.
    async fn bearer(&self, token: &str) -> Result<Granted, Failure> {
        if token.is_empty() {
            return Err(Failure::Unauthorized("no token".into()));
        }
        if token::looks_like_jwt(token) && self.has(AuthMethod::Bearer) {
            let endpoints = self.provider.endpoints().await?;
            let expect =
                Expect { issuer: &endpoints.issuer, audiences: self.audiences(), leeway: self.leeway, nonce: None };
            let claims = token::verify(&self.provider, token, &expect).await?;
            let subject = claims.get("sub").and_then(Value::as_str).map(str::to_string);
            return Ok(Granted { claims, scope: None, subject });
        }
        if !self.has(AuthMethod::Introspection) {
            return Err(Failure::Unauthorized(Rejected::Malformed.to_string()));
        }
        let endpoints = self.provider.endpoints().await?;
        let Some(url) = &endpoints.introspection_endpoint else {
            return Err(Failure::Unauthorized("the provider has no introspection endpoint".into()));
        };
        let form = vec![("token", token.to_string()), ("token_type_hint", "access_token".to_string())];
        let (status, answer) = self.call_with_client(url, &endpoints.issuer, form).await?;
        let Value::Object(claims) = answer else {
            return Err(Failure::Unavailable(format!("introspection answered {status} without a JSON object")));
        };
        if status != StatusCode::OK {
            return Err(Failure::Unavailable(format!("introspection answered {status}")));
        }
        if claims.get("active") != Some(&Value::Bool(true)) {
            return Err(Failure::Unauthorized("inactive token".into()));
        }
        let subject = claims.get("sub").and_then(Value::as_str).map(str::to_string);
        Ok(Granted { claims, scope: None, subject })
    }

    /// HTTP Basic credentials of a client, exchanged for a token at the token endpoint.
    async fn client_credentials(&self, basic: &str) -> Result<(Granted, String), Failure> {
        let unauthorized = || Failure::Unauthorized("invalid client credentials".into());
        let decoded = STANDARD.decode(basic).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(unauthorized)?;
        let (id, secret) = decoded.split_once(':').ok_or_else(unauthorized)?;
        let endpoints = self.provider.endpoints().await?;
        let url =
            endpoints.token_endpoint.as_deref().ok_or_else(|| Failure::Unavailable("no token endpoint".into()))?;
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        let scopes: Vec<&str> = self.scopes.split(' ').filter(|s| *s != "openid").collect();
        if !scopes.is_empty() {
            form.push(("scope", scopes.join(" ")));
        }
        let (status, answer) = self
            .provider
            .client
            .post_form(url, encode(&form), Some((id, secret)))
            .await
            .map_err(Failure::Unavailable)?;
        let access = answer.get("access_token").and_then(Value::as_str).filter(|_| status == StatusCode::OK);
        let Some(access) = access else {
            return Err(Failure::Unauthorized(provider_error(&answer, status)));
        };
        let claims = if token::looks_like_jwt(access) {
            let expect = Expect { issuer: &endpoints.issuer, audiences: None, leeway: self.leeway, nonce: None };
            token::verify(&self.provider, access, &expect).await?
        } else {
            Claims::new()
        };
        let scope = answer.get("scope").and_then(Value::as_str).map(str::to_string);
        Ok((Granted { claims, scope, subject: Some(id.to_string()) }, access.to_string()))
    }

    /// POSTs `form` to `url` as this client: its secret in Basic or in the form, or a
    /// client assertion for the provider `issuer`.
    async fn call_with_client(
        &self,
        url: &str,
        issuer: &str,
        mut form: Vec<(&str, String)>,
    ) -> Result<(StatusCode, Value), Failure> {
        let id = self.client_ids.first().map(String::as_str).unwrap_or_default();
        let secret = self.client_secret.as_deref().unwrap_or_default();
        let basic = match &self.client_auth {
            ClientAuth::Basic => Some((id, secret)),
            ClientAuth::Post => {
                form.push(("client_id", id.to_string()));
                form.push(("client_secret", secret.to_string()));
                None
            }
            ClientAuth::PrivateKeyJwt(key) => {
                let assertion = key.assertion(id, issuer, self.clock.now()).map_err(Failure::Unavailable)?;
                form.push(("client_id", id.to_string()));
                form.push(("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()));
                form.push(("client_assertion", assertion));
                None
            }
        };
        self.provider.client.post_form(url, encode(&form), basic).await.map_err(Failure::Unavailable)
    }

    /// The sign-in in progress the authorization cookie holds, if it is still fresh.
    fn pending(&self, cookies: &RequestCookies, now: i64) -> Option<Pending> {
        let sealed = cookies.get(&self.authorization_cookie)?;
        let pending: Pending = self.sealer.open(tag::OIDC_AUTHORIZATION, sealed)?;
        let age = (now - pending.created) as f64;
        (age >= 0.0 && (self.authorization_rolling == 0.0 || age <= self.authorization_rolling)).then_some(pending)
    }

    /// The session the cookie holds, if alive, and how many cookies carry it.
    fn session(&self, cookies: &RequestCookies, now: i64) -> Option<(Tokens, usize)> {
        let (sealed, count) = cookies.gather(&self.session_cookie)?;
        let tokens: Tokens = self.sealer.open(tag::OIDC_SESSION, &sealed)?;
        let absolute_ok = self.session_absolute == 0.0 || (now - tokens.created) as f64 <= self.session_absolute;
        let rolling_ok = self.session_rolling == 0.0 || (now - tokens.written) as f64 <= self.session_rolling;
        (absolute_ok && rolling_ok && now >= tokens.created).then_some((tokens, count))
    }

    /// `Set-Cookie` headers that store `tokens` (replacing `old_count` cookies); none when
    /// even 9 cookies cannot hold them.
    fn write_session(&self, tokens: &Tokens, old_count: usize) -> Option<Vec<HeaderValue>> {
        let sealed = self.sealer.seal(tag::OIDC_SESSION, tokens);
        let Some(chunks) = seal::chunks(&self.session_cookie, &sealed) else {
            tracing::warn!(cookie = %self.session_cookie, "openid-connect: the session does not fit 9 cookies");
            return None;
        };
        let count = chunks.len();
        let mut out: Vec<String> = chunks.into_iter().map(|(n, v)| self.attributes.set_cookie(&n, v, None)).collect();
        out.extend(self.expire_session(count + 1, old_count));
        Some(out.iter().filter_map(|v| HeaderValue::from_str(v).ok()).collect())
    }

    /// `Set-Cookie` values that remove the session's cookies `from..=to`.
    fn expire_session(&self, from: usize, to: usize) -> Vec<String> {
        (from..=to)
            .map(|i| {
                let n = if i == 1 { self.session_cookie.clone() } else { format!("{}{i}", self.session_cookie) };
                self.attributes.set_cookie(&n, String::new(), Some((0, 1)))
            })
            .collect()
    }

    /// The URL the provider sends the browser back to.
    fn redirect_uri(&self, ex: &Exchange<'_>) -> String {
        if let Some(u) = &self.redirect_uri {
            return u.clone();
        }
        let scheme = if ex.conn.https { "https" } else { "http" };
        let host = ex.header(&header::HOST).unwrap_or("localhost");
        format!("{scheme}://{host}{}", ex.uri.path())
    }

    /// Sends the browser to the provider's authorization endpoint.
    async fn start(&self, ex: &Exchange<'_>, now: i64) -> Reply {
        let endpoints = match self.provider.endpoints().await {
            Ok(e) => e,
            Err(e) => return self.reply(e.into(), false),
        };
        let Some(endpoint) = &endpoints.authorization_endpoint else {
            return self.reply(Failure::Unavailable("the provider has no authorization endpoint".into()), false);
        };
        // Only a path of this gateway: `//host` or `/\\host` would send the browser elsewhere.
        let original = ex
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| p.starts_with('/') && !p.starts_with("//") && !p.starts_with("/\\"))
            .unwrap_or_else(|| "/".to_string());
        let pending = Pending {
            created: now,
            state: random(),
            nonce: random(),
            verifier: random(),
            redirect_uri: self.redirect_uri(ex),
            original,
        };
        let client_id = self.client_ids.first().map(String::as_str).unwrap_or_default();
        let location = with_query(
            endpoint,
            &[
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", &pending.redirect_uri),
                ("scope", &self.scopes),
                ("state", &pending.state),
                ("nonce", &pending.nonce),
                ("code_challenge", &challenge(&pending.verifier)),
                ("code_challenge_method", "S256"),
            ],
        );
        let sealed = self.sealer.seal(tag::OIDC_AUTHORIZATION, &pending);
        let cookie = self.attributes.set_cookie(&self.authorization_cookie, sealed, None);
        redirect(&location, [cookie])
    }

    /// The provider sent the browser back: the code is exchanged, the ID token verified,
    /// the session saved, and the browser sent where it first asked to go.
    async fn callback(&self, ex: &Exchange<'_>, pending: Pending, now: i64) -> Reply {
        let done = self.attributes.set_cookie(&self.authorization_cookie, String::new(), Some((0, 1)));
        let fail = |failure: Failure| {
            let mut reply = self.reply(failure, false);
            if let Ok(v) = HeaderValue::from_str(&done) {
                reply.headers.append(header::SET_COOKIE, v);
            }
            reply
        };
        let first = |name: &str| ex.query_values(name).into_iter().next().map(|v| v.into_owned());
        if first("state").as_deref() != Some(pending.state.as_str()) {
            return fail(Failure::Unauthorized("invalid state".into()));
        }
        if let Some(error) = first("error") {
            return fail(Failure::Unauthorized(format!("the provider answered {error}")));
        }
        let Some(code) = first("code") else { return fail(Failure::Unauthorized("no code".into())) };
        let endpoints = match self.provider.endpoints().await {
            Ok(e) => e,
            Err(e) => return fail(e.into()),
        };
        let Some(url) = &endpoints.token_endpoint else {
            return fail(Failure::Unavailable("the provider has no token endpoint".into()));
        };
        let form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code),
            ("redirect_uri", pending.redirect_uri.clone()),
            ("code_verifier", pending.verifier.clone()),
        ];
        let answer = match self.call_with_client(url, &endpoints.issuer, form).await {
            Ok((StatusCode::OK, answer)) => answer,
            Ok((status, answer)) => return fail(Failure::Unauthorized(provider_error(&answer, status))),
            Err(f) => return fail(f),
        };
        let tokens = match self.tokens(&answer, None, &endpoints.issuer, Some(&pending.nonce), now, now).await {
            Ok(t) => t,
            Err(f) => return fail(f),
        };
        let Some(mut cookies) = self.write_session(&tokens, 0) else {
            return fail(Failure::Unauthorized("the session is too large for cookies".into()));
        };
        if let Ok(v) = HeaderValue::from_str(&done) {
            cookies.push(v);
        }
        let mut reply = Reply::empty(StatusCode::FOUND);
        if let Ok(location) = HeaderValue::from_str(&pending.original) {
            reply.headers.insert(header::LOCATION, location);
        }
        for c in cookies {
            reply.headers.append(header::SET_COOKIE, c);
        }
        reply
    }

    /// The session from a token endpoint's answer: the ID token (required unless `previous`
    /// has one) is verified with `nonce`; `previous` gives what a refresh does not repeat.
    async fn tokens(
        &self,
        answer: &Value,
        previous: Option<&Tokens>,
        issuer: &str,
        nonce: Option<&str>,
        created: i64,
        now: i64,
    ) -> Result<Tokens, Failure> {
        let field = |name: &str| answer.get(name).and_then(Value::as_str).map(str::to_string);
        let access_token =
            field("access_token").ok_or_else(|| Failure::Unauthorized("no access token from the provider".into()))?;
        let (id_token, claims) = match (field("id_token"), previous) {
            (Some(id), _) => {
                let expect = Expect { issuer, audiences: Some(&self.client_ids), leeway: self.leeway, nonce };
                let claims = token::verify(&self.provider, &id, &expect).await?;
                (Some(id), claims)
            }
            (None, Some(p)) => (p.id_token.clone(), p.claims.clone()),
            (None, None) => return Err(Failure::Unauthorized("no ID token from the provider".into())),
        };
        let expires = answer.get("expires_in").and_then(Value::as_f64).map(|s| now.saturating_add(s as i64));
        Ok(Tokens {
            created,
            written: now,
            access_token,
            expires,
            refresh_token: field("refresh_token").or_else(|| previous.and_then(|p| p.refresh_token.clone())),
            id_token,
            scope: field("scope").or_else(|| previous.and_then(|p| p.scope.clone())),
            claims,
        })
    }

    /// A request with a live session: its access token refreshed when expired, the cookie
    /// written again when a quarter of the rolling timeout is left. `Ok(Some)`: refused;
    /// `Err`: the session is over, with the headers that remove it.
    async fn resume(
        &self,
        ex: &mut Exchange<'_>,
        mut tokens: Tokens,
        count: usize,
        now: i64,
    ) -> Result<Option<Failure>, Vec<(HeaderName, HeaderValue)>> {
        let over = || {
            self.expire_session(1, count)
                .iter()
                .filter_map(|v| HeaderValue::from_str(v).ok())
                .map(|v| (header::SET_COOKIE, v))
                .collect::<Vec<_>>()
        };
        let mut write =
            self.session_rolling > 0.0 && (now - tokens.written) as f64 > (self.session_rolling * 0.75).ceil();
        if tokens.expires.is_some_and(|e| e <= now.saturating_add(self.leeway as i64)) {
            let refreshed = match (&tokens.refresh_token, self.refresh_tokens) {
                (Some(refresh), true) => self.refresh(&tokens, refresh, now).await,
                _ => Err(Failure::Unauthorized("the access token expired".into())),
            };
            match refreshed {
                Ok(t) => {
                    tokens = t;
                    write = true;
                }
                Err(Failure::Unavailable(e)) => return Ok(Some(Failure::Unavailable(e))),
                Err(f) => {
                    if let Failure::Unauthorized(reason) | Failure::Forbidden(reason) = &f {
                        tracing::debug!("openid-connect: session ended: {reason}");
                    }
                    return Err(over());
                }
            }
        }
        if write {
            tokens.written = now;
            for value in self.write_session(&tokens, count).unwrap_or_default() {
                ex.response_headers.append(header::SET_COOKIE, value);
            }
        }
        let subject = tokens.claims.get("sub").and_then(Value::as_str).map(str::to_string);
        let granted = Granted { claims: tokens.claims.clone(), scope: tokens.scope.clone(), subject };
        match self.admit(ex, granted, Some(&tokens.access_token)) {
            Ok(()) => Ok(None),
            Err(f) => Ok(Some(f)),
        }
    }

    /// New tokens from the refresh token.
    async fn refresh(&self, tokens: &Tokens, refresh: &str, now: i64) -> Result<Tokens, Failure> {
        let endpoints = self.provider.endpoints().await?;
        let url =
            endpoints.token_endpoint.as_deref().ok_or_else(|| Failure::Unavailable("no token endpoint".into()))?;
        let form = vec![("grant_type", "refresh_token".to_string()), ("refresh_token", refresh.to_string())];
        let (status, answer) = self.call_with_client(url, &endpoints.issuer, form).await?;
        if status != StatusCode::OK {
            return Err(Failure::Unauthorized(provider_error(&answer, status)));
        }
        self.tokens(&answer, Some(tokens), &endpoints.issuer, None, tokens.created, now).await
    }

    /// Whether the request asks to end the session: one of `logout_methods`, to a path
    /// ending in `logout_uri_suffix` or with `logout_query_arg` in the query.
    fn logs_out(&self, ex: &Exchange<'_>) -> bool {
        self.logout_methods.contains(&ex.method)
            && (self.logout_uri_suffix.as_deref().is_some_and(|s| ex.path.ends_with(s))
                || self.logout_query_arg.as_deref().is_some_and(|a| {
                    ex.query.as_deref().is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == a))
                }))
    }

    /// Ends the session: its cookies expire, and the browser goes to the provider's
    /// end_session_endpoint (with `logout_redirect_uri`), or to `logout_redirect_uri`.
    async fn logout(&self, tokens: &Tokens, count: usize) -> Reply {
        let expired = self.expire_session(1, count);
        let end_session = self.provider.endpoints().await.ok().and_then(|e| e.end_session_endpoint.clone());
        let client_id = self.client_ids.first().map(String::as_str).unwrap_or_default();
        let location = match (end_session, &self.logout_redirect_uri) {
            (Some(end), after) => {
                let mut pairs = vec![("client_id", client_id)];
                if let Some(id) = &tokens.id_token {
                    pairs.push(("id_token_hint", id));
                }
                if let Some(after) = after {
                    pairs.push(("post_logout_redirect_uri", after));
                }
                Some(with_query(&end, &pairs))
            }
            (None, Some(after)) => Some(after.clone()),
            (None, None) => None,
        };
        match location {
            Some(location) => redirect(&location, expired),
            None => {
                let mut reply = Reply::empty(StatusCode::OK);
                for v in expired.iter().filter_map(|v| HeaderValue::from_str(v).ok()) {
                    reply.headers.append(header::SET_COOKIE, v);
                }
                reply
            }
        }
    }
}

/// A form body.
fn encode(form: &[(&str, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form {
        s.append_pair(k, v);
    }
    s.finish()
}

/// What a provider's error answer says (OAuth's `error` and `error_description`).
fn provider_error(answer: &Value, status: StatusCode) -> String {
    let text = |n: &str| answer.get(n).and_then(Value::as_str).map(str::to_string);
    match (text("error"), text("error_description")) {
        (Some(e), Some(d)) => format!("the provider answered {status}: {e}: {d}"),
        (Some(e), None) => format!("the provider answered {status}: {e}"),
        _ => format!("the provider answered {status}"),
    }
}

/// A 302 to `location` setting `cookies`.
fn redirect(location: &str, cookies: impl IntoIterator<Item = String>) -> Reply {
    let mut reply = Reply::empty(StatusCode::FOUND);
    match HeaderValue::from_str(location) {
        Ok(v) => {
            reply.headers.insert(header::LOCATION, v);
        }
        Err(_) => return Reply::status(StatusCode::INTERNAL_SERVER_ERROR),
    }
    for v in cookies.into_iter().filter_map(|c| HeaderValue::from_str(&c).ok()) {
        reply.headers.append(header::SET_COOKIE, v);
    }
    reply
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::consumers::Consumers;
    use crate::error::ConfigErrors;
    use crate::plugins::Scope;
    use crate::runtime::Shared;
    use crate::tls::CaStore;

    /// The plugin `config` compiles to.
    fn plugin(config: Value) -> Box<OpenidConnect> {
        let (shared, consumers, ca) = (Shared::default(), Consumers::default(), CaStore::default());
        let mut errors = ConfigErrors::default();
        let mut cx = Compile {
            path: "config".into(),
            errors: &mut errors,
            consumers: &consumers,
            ca_certificates: &ca,
            shared: &shared,
            scope: Scope::default(),
        };
        match compile(&mut cx, config) {
            Some(Plugin::OpenidConnect(p)) => p,
            _ => panic!("{errors}"),
        }
    }

    /// The cookies a browser sends back after `set_cookies`.
    fn cookies(set_cookies: &[HeaderValue]) -> RequestCookies {
        let pairs: Vec<&str> = set_cookies.iter().map(|v| v.to_str().unwrap().split(';').next().unwrap()).collect();
        let mut headers = http::HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(&pairs.join("; ")).unwrap());
        RequestCookies::of(&headers)
    }

    fn tokens(created: i64, written: i64, claims: Claims) -> Tokens {
        Tokens {
            created,
            written,
            access_token: "at".into(),
            expires: Some(created + 60),
            refresh_token: Some("rt".into()),
            id_token: None,
            scope: Some("openid".into()),
            claims,
        }
    }

    #[test]
    fn sessions_end_at_their_absolute_and_rolling_timeouts() {
        let p = plugin(json!({
            "issuer": "http://idp.test", "client_id": "c", "client_secret": "s",
            "session_absolute_timeout": 100, "session_rolling_timeout": 30,
        }));
        let jar = cookies(&p.write_session(&tokens(1000, 1000, Claims::new()), 0).unwrap());
        assert_eq!(p.session(&jar, 1000).map(|(t, n)| (t.access_token, n)), Some(("at".into(), 1)));
        assert!(p.session(&jar, 1030).is_some());
        assert!(p.session(&jar, 1031).is_none(), "30 s since it was written");
        assert!(p.session(&jar, 999).is_none(), "from the future");
        let jar = cookies(&p.write_session(&tokens(1000, 1090, Claims::new()), 0).unwrap());
        assert!(p.session(&jar, 1100).is_some());
        assert!(p.session(&jar, 1101).is_none(), "100 s since it began");
    }

    #[test]
    fn a_large_session_is_split_and_a_foreign_or_changed_cookie_is_none() {
        let p = plugin(json!({"issuer": "http://idp.test", "client_id": "c", "client_secret": "s"}));
        let mut claims = Claims::new();
        claims.insert("groups".into(), json!(vec!["a-rather-long-group-name"; 400]));
        let set = p.write_session(&tokens(1000, 1000, claims.clone()), 0).unwrap();
        assert!(set.len() > 2, "{} cookies", set.len());
        let (back, count) = p.session(&cookies(&set), 1000).unwrap();
        assert_eq!((back.claims, count), (claims, set.len()));
        // Written again smaller: the chunks it no longer needs expire.
        let smaller = p.write_session(&tokens(1000, 1000, Claims::new()), set.len()).unwrap();
        let expired = smaller.iter().filter(|v| v.to_str().unwrap().contains("Max-Age=0")).count();
        assert_eq!(expired, set.len() - 1);

        let other = plugin(
            json!({"issuer": "http://idp.test", "client_id": "c", "client_secret": "s", "session_secret": "another"}),
        );
        let small = p.write_session(&tokens(1000, 1000, Claims::new()), 0).unwrap();
        assert!(other.session(&cookies(&small), 1000).is_none(), "another secret");
        let mut value = small[0].to_str().unwrap().split(';').next().unwrap().to_string();
        let last = value.pop().unwrap();
        value.push(if last == 'A' { 'B' } else { 'A' });
        let changed = cookies(&[HeaderValue::from_str(&value).unwrap()]);
        assert!(p.session(&changed, 1000).is_none(), "a changed cookie");
        // A value sealed as a sign-in in progress is no session, under the session's name.
        let pending = Pending {
            created: 1000,
            state: "s".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            redirect_uri: "http://gw/cb".into(),
            original: "/".into(),
        };
        let sealed = p.sealer.seal(tag::OIDC_AUTHORIZATION, &pending);
        let foreign = cookies(&[HeaderValue::from_str(&format!("session=1{sealed}")).unwrap()]);
        assert!(p.session(&foreign, 1000).is_none());
        let as_pending = cookies(&[HeaderValue::from_str(&format!("authorization={sealed}")).unwrap()]);
        assert!(p.pending(&as_pending, 1600).is_some());
        assert!(p.pending(&as_pending, 1601).is_none(), "authorization_rolling_timeout: 600");
    }

    #[test]
    fn pkce_s256_challenge_is_base64url_of_sha256() {
        // `printf %s VERIFIER | openssl dgst -sha256 -binary | base64`, made URL-safe.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWjOEjXk"),
            "VYFANLqdx_HDV6BqEhluZJ63rtrIPROSSFdB3P6G83I"
        );
    }

    #[test]
    fn queries_are_appended() {
        assert_eq!(with_query("http://idp/auth", &[("a", "1 2"), ("b", "&")]), "http://idp/auth?a=1+2&b=%26");
        assert_eq!(with_query("http://idp/auth?x=1", &[("a", "b")]), "http://idp/auth?x=1&a=b");
    }

    #[test]
    fn claims_as_headers() {
        let table = [
            (json!("alice"), Some("alice")),
            (json!(42), Some("42")),
            (json!(true), Some("true")),
            (json!(["a", "b", 3]), Some("a, b, 3")),
            (json!({"k": "v"}), Some(r#"{"k":"v"}"#)),
            (json!(null), None),
            (json!("line\nbreak"), None),
        ];
        for (value, want) in table {
            let got = claim_header(&value);
            assert_eq!(got.as_ref().map(|v| v.to_str().unwrap()), want, "{value}");
        }
    }

    #[test]
    fn provider_errors_say_what_the_provider_said() {
        let status = StatusCode::BAD_REQUEST;
        assert_eq!(
            provider_error(&json!({"error": "invalid_grant", "error_description": "grant request is invalid"}), status),
            "the provider answered 400 Bad Request: invalid_grant: grant request is invalid"
        );
        assert_eq!(provider_error(&json!([]), status), "the provider answered 400 Bad Request");
    }
}
