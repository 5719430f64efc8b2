//! session: keeps a consumer authenticated by an encrypted cookie, as Kong's `session`
//! plugin does (PRIORITY 1900, so before the authentication plugins).
//!
//! Access phase: a valid session cookie of the plugin's audience authenticates its consumer
//! and credential (an authentication plugin with `anonymous` then lets the request through,
//! as in Kong), after the logout check (`logout_methods` with `logout_query_arg`, or
//! `logout_post_arg` in the body) and Kong's renewals: past 3/4 of `rolling_timeout` the
//! session is saved again with a new id, past a minute of idling it is touched. A session
//! whose consumer or credential left the configuration is destroyed.
//!
//! Response phase: when a credential authenticated the request and the session did not
//! already say so, a session is saved and its cookie set, on whatever answer the client
//! gets, as Kong's header filter does.
//!
//! The cookie is Ward's own (see [`seal`]); with `storage: cookie`, the only storage a
//! database-less gateway has, a session lives in it whole, so it cannot be revoked before it
//! expires, in Kong as in Ward.

pub(crate) mod seal;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use cookie::time::{Duration, OffsetDateTime};
use cookie::{Cookie, SameSite};
use http::{HeaderName, HeaderValue, Method, Response, StatusCode, header};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::transformer::multipart::{self, Multipart};
use super::transformer::{Pairs, truthy};
use super::{AccessState, BODY_LIMIT, Compile, Plugin};
use crate::exchange::{BodyError, Exchange};
use crate::reply::{Body, Reply};
use seal::{Contents, Entry, Kind, RequestCookies, Sealer};

/// The longest a persistent cookie may be kept (400 days, as browsers cap it and Kong too).
const MAX_TTL: i64 = 34_560_000;
/// The largest idling offset Kong's session library stores (3 bytes).
const MAX_IDLING_OFFSET: i64 = (1 << 24) - 1;
/// Seconds of idling after which a session is touched, as Kong's session library does.
const TOUCH_THRESHOLD: i64 = 60;
/// The methods whose body Kong reads for `logout_post_arg`.
const READ_BODY_METHODS: [Method; 4] = [Method::DELETE, Method::PATCH, Method::POST, Method::PUT];

/// Where sessions read the time: the system's clock, or one a test sets.
#[derive(Clone, Default)]
pub(crate) struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    /// A clock that says what `now` holds (seconds since the epoch).
    #[cfg(test)]
    pub fn manual(now: Arc<AtomicI64>) -> Self {
        Clock(Some(now))
    }

    /// Seconds since the epoch.
    pub(super) fn now(&self) -> i64 {
        match &self.0 {
            Some(now) => now.load(Ordering::SeqCst),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default(),
        }
    }
}

/// What session plugins share across configurations: the secret of those without one
/// (random, as Kong draws its default once per process) and the clock.
pub(crate) struct Defaults {
    /// The secret of session plugins without `secret`.
    pub secret: [u8; 32],
    /// The time sessions are measured by.
    pub clock: Clock,
}

impl Default for Defaults {
    fn default() -> Self {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).expect("the system's random generator works");
        Defaults { secret, clock: Clock::default() }
    }
}

/// What sessions can tell in a header (Kong's names), and the header it goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Property {
    Id,
    Audience,
    Subject,
    Timeout,
    IdlingTimeout,
    RollingTimeout,
    AbsoluteTimeout,
}

const PROPERTIES: [(&str, Property, &str); 7] = [
    ("id", Property::Id, "session-id"),
    ("audience", Property::Audience, "session-audience"),
    ("subject", Property::Subject, "session-subject"),
    ("timeout", Property::Timeout, "session-timeout"),
    ("idling-timeout", Property::IdlingTimeout, "session-idling-timeout"),
    ("rolling-timeout", Property::RollingTimeout, "session-rolling-timeout"),
    ("absolute-timeout", Property::AbsoluteTimeout, "session-absolute-timeout"),
];

impl Property {
    fn header(self) -> HeaderName {
        let (_, _, name) = PROPERTIES.iter().find(|(_, p, _)| *p == self).expect("every property is listed");
        HeaderName::from_static(name)
    }
}

/// Reads a field that may be `null` (then `Some(Value::Null)`), unlike `Option`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Kong 3.x's fields, and the Kong 2.x names it still reads. `null` means the default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    secret: Option<String>,
    storage: Option<String>,
    audience: Option<String>,
    idling_timeout: Option<f64>,
    rolling_timeout: Option<f64>,
    absolute_timeout: Option<f64>,
    stale_ttl: Option<f64>,
    cookie_name: Option<String>,
    cookie_path: Option<String>,
    cookie_domain: Option<String>,
    cookie_same_site: Option<String>,
    cookie_http_only: Option<bool>,
    cookie_secure: Option<bool>,
    remember: Option<bool>,
    remember_cookie_name: Option<String>,
    remember_rolling_timeout: Option<f64>,
    remember_absolute_timeout: Option<f64>,
    response_headers: Option<Vec<String>>,
    request_headers: Option<Vec<String>>,
    read_body_for_logout: Option<bool>,
    logout_methods: Option<Vec<String>>,
    logout_query_arg: Option<String>,
    logout_post_arg: Option<String>,
    hash_subject: Option<bool>,
    store_metadata: Option<bool>,
    cookie_lifetime: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    cookie_idletime: Option<Value>,
    cookie_renew: Option<f64>,
    cookie_discard: Option<f64>,
    cookie_samesite: Option<String>,
    cookie_httponly: Option<bool>,
    cookie_persistent: Option<bool>,
}

impl Config {
    /// Kong 3 still reads Kong 2's names; given with the new name, Kong 2's wins, as in Kong.
    fn apply_kong2_names(&mut self, cx: &mut Compile<'_>) {
        if let Some(v) = self.cookie_lifetime.take() {
            self.rolling_timeout = Some(v);
        }
        match self.cookie_idletime.take() {
            None => {}
            Some(Value::Null) => self.idling_timeout = Some(0.0),
            Some(v) => match v.as_f64() {
                Some(n) => self.idling_timeout = Some(n),
                None => cx.error("cookie_idletime", "expected a number"),
            },
        }
        // Kong reads `cookie_renew` and drops it: its session library decides renewals itself.
        let _ = self.cookie_renew.take();
        if let Some(v) = self.cookie_discard.take() {
            self.stale_ttl = Some(v);
        }
        if let Some(v) = self.cookie_samesite.take() {
            self.cookie_same_site = Some(if v == "off" { "Lax".into() } else { v });
        }
        if let Some(v) = self.cookie_httponly.take() {
            self.cookie_http_only = Some(v);
        }
        if let Some(v) = self.cookie_persistent.take() {
            self.remember = Some(v);
        }
    }
}

/// The attributes of every cookie a plugin sets.
pub(crate) struct Attributes {
    pub path: String,
    pub domain: Option<String>,
    /// None for Kong's `Default`: browsers read an unknown SameSite as none given.
    pub same_site: Option<SameSite>,
    pub secure: bool,
    pub http_only: bool,
}

impl Attributes {
    /// A `Set-Cookie` value; a persistent cookie has `Max-Age` and `Expires` (Unix time).
    pub fn set_cookie(&self, name: &str, value: String, persistent: Option<(i64, i64)>) -> String {
        let mut cookie = Cookie::build((name.to_string(), value))
            .path(self.path.clone())
            .secure(self.secure)
            .http_only(self.http_only);
        if let Some(domain) = &self.domain {
            cookie = cookie.domain(domain.clone());
        }
        if let Some(same_site) = self.same_site {
            cookie = cookie.same_site(same_site);
        }
        if let Some((max_age, expires)) = persistent {
            cookie = cookie.max_age(Duration::seconds(max_age));
            if let Ok(at) = OffsetDateTime::from_unix_timestamp(expires) {
                cookie = cookie.expires(at);
            }
        }
        cookie.build().to_string()
    }
}

/// A compiled session configuration.
pub(crate) struct Session {
    sealer: Sealer,
    audience: String,
    idling: f64,
    rolling: f64,
    absolute: f64,
    cookie_name: String,
    attributes: Attributes,
    remember: bool,
    remember_name: String,
    remember_rolling: f64,
    remember_absolute: f64,
    request_headers: Vec<Property>,
    response_headers: Vec<Property>,
    read_body_for_logout: bool,
    logout_methods: Vec<Method>,
    logout_query_arg: String,
    logout_post_arg: String,
    clock: Clock,
}

/// A string field: its default when absent, refused when empty (Kong's strings are never).
pub(super) fn text(cx: &mut Compile<'_>, field: &str, value: Option<String>, default: &str) -> String {
    match value {
        None => default.to_string(),
        Some(v) if v.is_empty() => {
            cx.error(field, "length must be at least 1");
            default.to_string()
        }
        Some(v) => v,
    }
}

/// A number of seconds: its default when absent, refused when not finite.
pub(super) fn seconds(cx: &mut Compile<'_>, field: &str, value: Option<f64>, default: f64) -> f64 {
    match value {
        None => default,
        Some(v) if !v.is_finite() => {
            cx.error(field, "must be a finite number");
            default
        }
        Some(v) => v,
    }
}

/// RFC 6265's token: what a cookie name may be made of.
pub(super) fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What a cookie attribute's value may hold (RFC 6265: no controls, no `;`).
pub(super) fn is_attribute_value(value: &str) -> bool {
    value.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b';')
}

/// A set of Kong's: each element one of `allowed`, duplicates dropped.
pub(super) fn set_of<T: Clone + PartialEq>(
    cx: &mut Compile<'_>,
    field: &str,
    list: Vec<String>,
    allowed: &[(&str, T)],
) -> Vec<T> {
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        match allowed.iter().find(|(name, _)| name == item) {
            Some((_, v)) if out.contains(v) => {}
            Some((_, v)) => out.push(v.clone()),
            None => {
                let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
                cx.error(&format!("{field}[{i}]"), format!("expected one of: {}", names.join(", ")));
            }
        }
    }
    out
}

pub(super) fn compile(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let mut c: Config = cx.config(value)?;
    let before = cx.errors.0.len();
    c.apply_kong2_names(cx);
    match c.storage.as_deref().unwrap_or("cookie") {
        "cookie" => {}
        "kong" => cx.error(
            "storage",
            "'kong' keeps sessions in Kong's database: Ward's gateway is database-less, so sessions \
             live in the cookie (storage: cookie)",
        ),
        _ => cx.error("storage", "expected one of: cookie, kong"),
    }
    let secret = match c.secret {
        None => cx.shared.sessions.secret.to_vec(),
        Some(s) if s.is_empty() => {
            cx.error("secret", "length must be at least 1");
            Vec::new()
        }
        Some(s) if s.starts_with("{vault://") => {
            cx.error("secret", "vault references are not supported: write the secret itself");
            Vec::new()
        }
        Some(s) => s.into_bytes(),
    };
    let audience = text(cx, "audience", c.audience, "default");
    let idling = seconds(cx, "idling_timeout", c.idling_timeout, 900.0);
    let rolling = seconds(cx, "rolling_timeout", c.rolling_timeout, 3600.0);
    let absolute = seconds(cx, "absolute_timeout", c.absolute_timeout, 86400.0);
    // Only Kong's database storage keeps stale sessions; with the cookie it does nothing, in Kong too.
    seconds(cx, "stale_ttl", c.stale_ttl, 10.0);
    let remember_rolling = seconds(cx, "remember_rolling_timeout", c.remember_rolling_timeout, 604_800.0);
    if remember_rolling.fract() != 0.0 {
        cx.error(
            "remember_rolling_timeout",
            "must be a whole number of seconds: it is the persistent cookie's Max-Age (Kong fails to write it otherwise)",
        );
    }
    let remember_absolute = seconds(cx, "remember_absolute_timeout", c.remember_absolute_timeout, 2_592_000.0);
    let cookie_name = |cx: &mut Compile<'_>, field: &str, value: Option<String>, default: &str| {
        let name = text(cx, field, value, default);
        if !is_token(&name) {
            cx.error(field, format!("'{name}' is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~)"));
        }
        name
    };
    let name = cookie_name(cx, "cookie_name", c.cookie_name, "session");
    let remember_name = cookie_name(cx, "remember_cookie_name", c.remember_cookie_name, "remember");
    let path = text(cx, "cookie_path", c.cookie_path, "/");
    if !is_attribute_value(&path) {
        cx.error("cookie_path", "must be printable text without ';'");
    }
    let domain = match c.cookie_domain {
        Some(d) if d.is_empty() => {
            cx.error("cookie_domain", "length must be at least 1");
            None
        }
        Some(d) if !is_attribute_value(&d) => {
            cx.error("cookie_domain", "must be printable text without ';'");
            None
        }
        // As Kong's session library: a cookie for localhost gets no Domain.
        Some(d) if d == "localhost" => None,
        d => d,
    };
    let same_site = match c.cookie_same_site.as_deref().unwrap_or("Strict") {
        "Strict" => Some(SameSite::Strict),
        "Lax" => Some(SameSite::Lax),
        "None" => Some(SameSite::None),
        "Default" => None,
        _ => {
            cx.error("cookie_same_site", "expected one of: Strict, Lax, None, Default");
            None
        }
    };
    let properties: Vec<(&str, Property)> = PROPERTIES.iter().map(|(n, p, _)| (*n, *p)).collect();
    let request_headers = set_of(cx, "request_headers", c.request_headers.unwrap_or_default(), &properties);
    let response_headers = set_of(cx, "response_headers", c.response_headers.unwrap_or_default(), &properties);
    let methods = [("GET", Method::GET), ("POST", Method::POST), ("DELETE", Method::DELETE)];
    let logout_methods = c.logout_methods.unwrap_or_else(|| vec!["POST".into(), "DELETE".into()]);
    let logout_methods = set_of(cx, "logout_methods", logout_methods, &methods);
    let logout_query_arg = text(cx, "logout_query_arg", c.logout_query_arg, "session_logout");
    let logout_post_arg = text(cx, "logout_post_arg", c.logout_post_arg, "session_logout");
    // Both describe what Kong's database storage records about sessions; with the cookie
    // they do nothing, in Kong too.
    let _ = (c.hash_subject, c.store_metadata);
    if cx.errors.0.len() > before {
        return None;
    }
    Some(Plugin::Session(Session {
        sealer: Sealer::new(&secret),
        audience,
        idling,
        rolling,
        absolute,
        cookie_name: name,
        attributes: Attributes {
            path,
            domain,
            // As Kong's session library: SameSite=None cookies are always Secure.
            secure: c.cookie_secure.unwrap_or(true) || same_site == Some(SameSite::None),
            same_site,
            http_only: c.cookie_http_only.unwrap_or(true),
        },
        remember: c.remember.unwrap_or(false),
        remember_name,
        remember_rolling,
        remember_absolute,
        request_headers,
        response_headers,
        read_body_for_logout: c.read_body_for_logout.unwrap_or(false),
        logout_methods,
        logout_query_arg,
        logout_post_arg,
        clock: cx.shared.sessions.clock.clone(),
    }))
}

/// What the session plugin leaves to the response phase of one request.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// The session cookie the client holds (as read, or as renewed by the access phase),
    /// and how many cookies carry it.
    current: Option<(Contents, usize)>,
    /// The client's valid persistent cookie (`remember`), and how many cookies carry it.
    remembered: Option<(Contents, usize)>,
    /// Whether the session authenticated the request (Kong's `authenticated_session`).
    authenticated: bool,
    /// `Set-Cookie` values by cookie name; a later one for a name replaces the earlier.
    cookies: Vec<(String, String)>,
}

impl Pending {
    fn set_cookie(&mut self, name: &str, value: String) {
        match self.cookies.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.cookies.push((name.to_string(), value)),
        }
    }
}

/// Where in the body a logout argument may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Form,
    Json,
    Multipart,
}

/// The kind of body Kong's `kong.request.get_body` reads, by Content-Type.
fn body_kind(content_type: Option<&str>) -> Option<BodyKind> {
    let ct = content_type?.to_ascii_lowercase();
    let ct = ct.split(';').next().unwrap_or_default();
    if ct.starts_with("application/x-www-form-urlencoded") {
        Some(BodyKind::Form)
    } else if ct.starts_with("application/json") {
        Some(BodyKind::Json)
    } else if ct.starts_with("multipart/form-data") {
        Some(BodyKind::Multipart)
    } else {
        None
    }
}

/// Whether `body` carries the argument `name` with a value Lua finds true.
fn body_has_argument(content_type: Option<&str>, body: &[u8], name: &str) -> bool {
    match body_kind(content_type) {
        None => false,
        Some(BodyKind::Form) => Pairs::parse(&String::from_utf8_lossy(body)).has(name),
        Some(BodyKind::Json) => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => truthy(map.get(name)),
            _ => false,
        },
        Some(BodyKind::Multipart) => content_type
            .and_then(multipart::boundary)
            .and_then(|b| Multipart::parse(body, &b))
            .is_some_and(|form| form.has(name)),
    }
}

/// A number as Lua prints it for the usual values: no `.0` on whole numbers.
fn number(value: f64) -> String {
    format!("{value}")
}

impl Session {
    fn name(&self, kind: Kind) -> &str {
        match kind {
            Kind::Session => &self.cookie_name,
            Kind::Remember => &self.remember_name,
        }
    }

    /// Whether `c` is still alive at `now`, by Kong's rules: the absolute timeout since it
    /// was created, the rolling timeout since it was last renewed, the idling timeout since
    /// it was last used (a persistent cookie never idles). 0 disables a timeout.
    fn alive(&self, kind: Kind, c: &Contents, now: i64) -> bool {
        let (absolute, rolling) = match kind {
            Kind::Session => (self.absolute, self.rolling),
            Kind::Remember => (self.remember_absolute, self.remember_rolling),
        };
        if c.created < 0 || c.rolled < 0 || c.idled < 0 {
            return false;
        }
        let elapsed = now - c.created;
        if absolute != 0.0 && elapsed as f64 > absolute {
            return false;
        }
        let since_renewal = elapsed - c.rolled;
        if rolling != 0.0 && since_renewal as f64 > rolling {
            return false;
        }
        match kind {
            Kind::Remember => c.idled == 0,
            Kind::Session => self.idling == 0.0 || (since_renewal - c.idled) as f64 <= self.idling,
        }
    }

    /// The cookie of `kind` the request brought, if this plugin sealed it and it is alive;
    /// tampered, expired and foreign cookies are no session.
    fn read(&self, kind: Kind, cookies: &RequestCookies, now: i64) -> Option<(Contents, usize)> {
        let (sealed, count) = cookies.gather(self.name(kind))?;
        let contents = self.sealer.open(kind.tag(), &sealed)?;
        self.alive(kind, &contents, now).then_some((contents, count))
    }

    /// Expires `name` and the chunks up to `count`.
    fn expire(&self, p: &mut Pending, kind: Kind, from: usize, count: usize) {
        let name = self.name(kind);
        for i in from..=count {
            let n = if i == 1 { name.to_string() } else { format!("{name}{i}") };
            p.set_cookie(&n, self.attributes.set_cookie(&n, String::new(), Some((0, 1))));
        }
    }

    /// Sets the cookies that carry `contents`, expiring chunks a longer value had before.
    /// How many it took, or None when it does not fit (the session is not saved, as in Kong).
    fn write(&self, p: &mut Pending, kind: Kind, contents: &Contents, old_count: usize) -> Option<usize> {
        let name = self.name(kind);
        let sealed = self.sealer.seal(kind.tag(), contents);
        let Some(cookies) = seal::chunks(name, &sealed) else {
            tracing::warn!(cookie = name, "session: too large for 9 cookies of 4 KiB; not saved");
            return None;
        };
        let persistent = (kind == Kind::Remember).then(|| {
            let max_age = self.remember_rolling as i64;
            let max_age = if max_age == 0 || max_age > MAX_TTL { MAX_TTL } else { max_age };
            (max_age, contents.created + max_age)
        });
        let count = cookies.len();
        for (n, v) in cookies {
            p.set_cookie(&n, self.attributes.set_cookie(&n, v, persistent));
        }
        self.expire(p, kind, count + 1, old_count);
        Some(count)
    }

    /// Saves the session with `entries` and a new id, keeping its creation time.
    fn save(&self, p: &mut Pending, entries: Vec<Entry>, now: i64) -> bool {
        let (created, old_count) = match &p.current {
            Some((c, n)) => (c.created, *n),
            None => (now, 0),
        };
        let contents = Contents { id: Contents::new_id(), created, rolled: now - created, idled: 0, entries };
        match self.write(p, Kind::Session, &contents, old_count) {
            Some(n) => {
                p.current = Some((contents, n));
                true
            }
            None => false,
        }
    }

    /// Saves the persistent cookie with `entries`, keeping its creation time.
    fn save_remembered(&self, p: &mut Pending, entries: Vec<Entry>, now: i64) {
        let (created, old_count) = match &p.remembered {
            Some((c, n)) => (c.created, *n),
            None => (now, 0),
        };
        let contents = Contents { id: Contents::new_id(), created, rolled: now - created, idled: 0, entries };
        if let Some(n) = self.write(p, Kind::Remember, &contents, old_count) {
            p.remembered = Some((contents, n));
        }
    }

    /// Records that the session was used now (Kong's touch: same id, new idling offset).
    fn touch(&self, p: &mut Pending, now: i64) {
        let Some((mut c, count)) = p.current.clone() else { return };
        c.idled = (now - c.created - c.rolled).min(MAX_IDLING_OFFSET);
        if let Some(n) = self.write(p, Kind::Session, &c, count) {
            p.current = Some((c, n));
        }
    }

    /// Kong's refresh: renewed past 3/4 of the rolling timeout, else touched past a minute
    /// of idling.
    fn refresh(&self, p: &mut Pending, now: i64) {
        let Some((c, _)) = &p.current else { return };
        if self.rolling == 0.0 && self.idling == 0.0 {
            return;
        }
        let since_renewal = now - c.created - c.rolled;
        if self.rolling > 0.0 && since_renewal as f64 > (self.rolling * 0.75).ceil() {
            let entries = c.entries.clone();
            self.save(p, entries, now);
        } else if self.idling > 0.0 && since_renewal - c.idled > TOUCH_THRESHOLD {
            self.touch(p, now);
        }
    }

    /// Kong's logout: the session's cookies expire; when other audiences share the
    /// session, only this audience's entry leaves it.
    fn logout(&self, p: &mut Pending, now: i64) {
        let Some((current, count)) = p.current.clone() else { return };
        let others: Vec<Entry> = current.entries.iter().filter(|e| e.audience != self.audience).cloned().collect();
        if others.is_empty() {
            self.expire(p, Kind::Session, 1, count);
            if let (true, Some((_, n))) = (self.remember, p.remembered.clone()) {
                self.expire(p, Kind::Remember, 1, n);
            }
            return;
        }
        let remembered = p.remembered.clone();
        self.save(p, others.clone(), now);
        if self.remember {
            self.save_remembered(p, others, now);
        }
        // A credential authenticating the request afterwards starts again from the cookie
        // the request brought, as Kong opens the session again in its header filter.
        p.current = Some((current, count));
        p.remembered = remembered;
    }

    /// A session opened from the persistent cookie, when the session cookie is missing or
    /// expired: both are saved again, the session cookie as a new session.
    fn restore(&self, p: &mut Pending, now: i64) -> bool {
        let Some((remembered, _)) = p.remembered.clone() else { return false };
        if remembered.entry(&self.audience).is_none() {
            return false;
        }
        self.save_remembered(p, remembered.entries.clone(), now);
        p.current = None;
        self.save(p, remembered.entries, now)
    }

    /// A property of the session `c` at `now`, as Kong's session library computes it.
    fn property(&self, property: Property, c: &Contents, now: i64) -> Option<String> {
        let since_renewal = (now - c.created - c.rolled) as f64;
        let idling = self.idling - (since_renewal - c.idled as f64);
        let rolling = self.rolling - since_renewal;
        let absolute = self.absolute - (now - c.created) as f64;
        match property {
            Property::Id => Some(c.id.clone()),
            Property::Audience => Some(self.audience.clone()),
            Property::Subject => c.entry(&self.audience).and_then(|e| e.subject.clone()),
            Property::Timeout => [(self.idling, idling), (self.rolling, rolling), (self.absolute, absolute)]
                .into_iter()
                .filter(|(timeout, _)| *timeout > 0.0)
                .map(|(_, left)| left)
                .reduce(f64::min)
                .map(number),
            Property::IdlingTimeout => (self.idling != 0.0).then(|| number(idling)),
            Property::RollingTimeout => (self.rolling != 0.0).then(|| number(rolling)),
            Property::AbsoluteTimeout => (self.absolute != 0.0).then(|| number(absolute)),
        }
    }

    /// The properties `list` names of the current session, as headers.
    fn headers(&self, list: &[Property], p: &Pending, now: i64) -> Vec<(HeaderName, HeaderValue)> {
        let Some((c, _)) = &p.current else { return Vec::new() };
        list.iter()
            .filter_map(|&property| {
                let value = HeaderValue::from_str(&self.property(property, c, now)?).ok()?;
                Some((property.header(), value))
            })
            .collect()
    }

    /// Whether the request asks to log out, as Kong decides: one of `logout_methods` with
    /// `logout_query_arg` in the query string, or, with `read_body_for_logout`,
    /// `logout_post_arg` in a form, JSON or multipart body.
    async fn logs_out(&self, ex: &mut Exchange<'_>) -> Result<bool, Reply> {
        if !self.logout_methods.contains(&ex.method) {
            return Ok(false);
        }
        if ex.query.as_deref().is_some_and(|q| Pairs::parse(q).has(&self.logout_query_arg)) {
            return Ok(true);
        }
        if !self.read_body_for_logout || !READ_BODY_METHODS.contains(&ex.method) {
            return Ok(false);
        }
        let content_type = ex.header(&header::CONTENT_TYPE).map(str::to_string);
        if body_kind(content_type.as_deref()).is_none() {
            return Ok(false);
        }
        let body = match ex.body_bytes(BODY_LIMIT).await {
            Ok(b) => b,
            Err(BodyError::TooLarge(_)) => return Err(Reply::status(StatusCode::PAYLOAD_TOO_LARGE)),
            Err(BodyError::Read(_)) => return Err(Reply::status(StatusCode::BAD_REQUEST)),
        };
        Ok(body_has_argument(content_type.as_deref(), &body, &self.logout_post_arg))
    }

    pub(super) async fn access(&self, ex: &mut Exchange<'_>) -> Result<(), Reply> {
        let now = self.clock.now();
        let cookies = RequestCookies::of(&ex.headers);
        let mut p = Pending { current: self.read(Kind::Session, &cookies, now), ..Pending::default() };
        if self.remember {
            p.remembered = self.read(Kind::Remember, &cookies, now);
        }
        let mut exists = p.current.as_ref().is_some_and(|(c, _)| c.entry(&self.audience).is_some());
        if !exists && p.current.is_none() && self.remember {
            exists = self.restore(&mut p, now);
        }
        let outcome = if exists { self.resume(ex, &mut p, now).await } else { Ok(()) };
        ex.session = p;
        outcome
    }

    /// The request has a session of this audience: logout, or its consumer authenticated.
    async fn resume(&self, ex: &mut Exchange<'_>, p: &mut Pending, now: i64) -> Result<(), Reply> {
        if self.logs_out(ex).await? {
            self.logout(p, now);
            return Err(Reply::empty(StatusCode::OK));
        }
        let Some(entry) = p.current.as_ref().and_then(|(c, _)| c.entry(&self.audience)).cloned() else {
            return Ok(());
        };
        let consumers = ex.consumers;
        let consumer = consumers.by_id(&entry.consumer).filter(|&c| consumers.holds(c, &entry.credential));
        let Some(consumer) = consumer else {
            tracing::debug!(consumer = %entry.consumer, "session: its consumer or credential is gone; destroyed");
            self.logout(p, now);
            return Ok(());
        };
        self.refresh(p, now);
        for (name, value) in self.headers(&self.request_headers, p, now) {
            ex.headers.insert(name, value);
        }
        for (name, value) in self.headers(&self.response_headers, p, now) {
            ex.response_headers.insert(name, value);
        }
        p.authenticated = true;
        ex.authenticate(consumer, Some(entry.credential));
        Ok(())
    }

    /// Kong's header filter: a session for a credential that authenticated the request, if
    /// the session did not already hold it; then every cookie the plugin set, replacing
    /// any of the same name in the response.
    pub(super) fn respond(&self, mut response: Response<Body>, state: &mut AccessState<'_>) -> Response<Body> {
        let mut p = std::mem::take(&mut state.session);
        if let (Some(consumer), Some(credential)) = (state.consumer, state.credential.as_deref()) {
            let c = &state.consumers.list[consumer];
            let held = p.authenticated
                && p.current
                    .as_ref()
                    .and_then(|(s, _)| s.entry(&self.audience))
                    .is_some_and(|e| e.consumer == c.id && e.credential == credential);
            if !held {
                let now = self.clock.now();
                let subject = c.username.clone().or_else(|| c.custom_id.clone()).unwrap_or_else(|| c.id.clone());
                let entry = Entry {
                    audience: self.audience.clone(),
                    subject: Some(subject),
                    consumer: c.id.clone(),
                    credential: credential.to_string(),
                };
                let mut entries = p.current.as_ref().map(|(s, _)| s.entries.clone()).unwrap_or_default();
                match entries.iter_mut().find(|e| e.audience == self.audience) {
                    Some(slot) => *slot = entry,
                    None => entries.push(entry),
                }
                if self.save(&mut p, entries.clone(), now) {
                    if self.remember {
                        self.save_remembered(&mut p, entries, now);
                    }
                    for (name, value) in self.headers(&self.response_headers, &p, now) {
                        response.headers_mut().insert(name, value);
                    }
                }
            }
        }
        if !p.cookies.is_empty() {
            let headers = response.headers_mut();
            let ours = |v: &HeaderValue| {
                p.cookies.iter().any(|(name, _)| {
                    let b = v.as_bytes();
                    b.len() > name.len() && b.starts_with(name.as_bytes()) && b[name.len()] == b'='
                })
            };
            let kept: Vec<HeaderValue> =
                headers.get_all(header::SET_COOKIE).iter().filter(|v| !ours(v)).cloned().collect();
            headers.remove(header::SET_COOKIE);
            for value in kept {
                headers.append(header::SET_COOKIE, value);
            }
            for (_, value) in &p.cookies {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.append(header::SET_COOKIE, value);
                }
            }
        }
        response
    }
}
