//! key-auth: an API key in a header, the query string or the body identifies the consumer.
//!
//! Keys are looked up by their SHA-256 digest, so the map never compares the secret itself
//! byte by byte (no timing signal about how much of a guess was right).

use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use serde::Deserialize;
use serde_json::Value;

use super::{BODY_LIMIT, Compile, Plugin, already_authenticated, conclude};
use crate::consumers::credentials;
use crate::exchange::{BodyError, Exchange};
use crate::reply::Reply;

fn apikey() -> Vec<String> {
    vec!["apikey".into()]
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "apikey")]
    key_names: Vec<String>,
    #[serde(default)]
    hide_credentials: bool,
    anonymous: Option<String>,
    #[serde(default = "yes")]
    key_in_header: bool,
    #[serde(default = "yes")]
    key_in_query: bool,
    #[serde(default)]
    key_in_body: bool,
    #[serde(default = "yes")]
    run_on_preflight: bool,
    realm: Option<String>,
}

/// A compiled key-auth configuration.
pub(crate) struct KeyAuth {
    key_names: Vec<(String, HeaderName)>,
    hide_credentials: bool,
    anonymous: Option<usize>,
    in_header: bool,
    in_query: bool,
    in_body: bool,
    run_on_preflight: bool,
    www_authenticate: HeaderValue,
}

pub(super) fn compile(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: Config = cx.config(value)?;
    let mut key_names = Vec::new();
    for (i, name) in c.key_names.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => key_names.push((name.clone(), h)),
            Err(_) => cx.error(&format!("key_names[{i}]"), format!("'{name}' is not a valid header name")),
        }
    }
    if c.key_names.is_empty() {
        cx.error("key_names", "must list at least one name");
    }
    let www = match &c.realm {
        Some(realm) => format!("Key realm=\"{realm}\""),
        None => "Key".to_string(),
    };
    let Ok(www_authenticate) = HeaderValue::from_str(&www) else {
        cx.error("realm", "must be printable text");
        return None;
    };
    let anonymous = cx.anonymous(c.anonymous.as_deref());
    Some(Plugin::KeyAuth(KeyAuth {
        key_names,
        hide_credentials: c.hide_credentials,
        anonymous,
        in_header: c.key_in_header,
        in_query: c.key_in_query,
        in_body: c.key_in_body,
        run_on_preflight: c.run_on_preflight,
        www_authenticate,
    }))
}

/// What a request holds under one key name.
enum Found {
    Nothing,
    One(String),
    Several,
}

impl Found {
    fn from_values<I: Iterator<Item = String>>(mut values: I) -> Found {
        match (values.next(), values.next()) {
            (None, _) => Found::Nothing,
            (Some(v), None) => Found::One(v),
            (Some(_), Some(_)) => Found::Several,
        }
    }
}

impl KeyAuth {
    pub(super) async fn access(&self, ex: &mut Exchange<'_>) -> Result<(), Reply> {
        if !self.run_on_preflight && ex.method == Method::OPTIONS {
            return Ok(());
        }
        if already_authenticated(ex, self.anonymous) {
            return Ok(());
        }
        let attempt = match self.identify(ex).await {
            // The body could not be read: no anonymous fallback can make up for that.
            Err(reply) if reply.status != StatusCode::UNAUTHORIZED => return Err(reply),
            attempt => attempt,
        };
        conclude(ex, self.anonymous, attempt)
    }

    fn unauthorized(&self, message: &str) -> Reply {
        Reply::error(StatusCode::UNAUTHORIZED, message).header(header::WWW_AUTHENTICATE, self.www_authenticate.clone())
    }

    async fn identify(&self, ex: &mut Exchange<'_>) -> Result<(usize, String), Reply> {
        let mut key = None;
        for (name, header) in &self.key_names {
            let mut found = Found::Nothing;
            if self.in_header {
                let values =
                    ex.headers.get_all(header).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                found = Found::from_values(values);
            }
            if matches!(found, Found::Nothing) && self.in_query {
                found = Found::from_values(ex.query_values(name).into_iter().map(|v| v.into_owned()));
            }
            if matches!(found, Found::Nothing) && self.in_body {
                found = body_key(ex, name).await?;
            }
            match found {
                Found::Nothing => continue,
                Found::Several => return Err(self.unauthorized("Duplicate API key found")),
                Found::One(v) => {
                    if self.hide_credentials {
                        ex.remove_query_arg(name);
                        ex.headers.remove(header);
                        if self.in_body {
                            remove_body_key(ex, name);
                        }
                    }
                    key = Some(v);
                    break;
                }
            }
        }
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return Err(self.unauthorized("No API key found in request"));
        };
        match ex.consumers.keys.get(&credentials::key_digest(&key)) {
            Some(c) => Ok((c.consumer, c.id.clone())),
            None => Err(self.unauthorized("Unauthorized")),
        }
    }
}

/// The body's media type, as far as key lookup cares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Form,
    Json,
}

fn body_kind(ex: &Exchange<'_>) -> Option<BodyKind> {
    let ct = ex.header(&header::CONTENT_TYPE)?.to_ascii_lowercase();
    if ct.starts_with("application/x-www-form-urlencoded") {
        Some(BodyKind::Form)
    } else if ct.starts_with("application/json") {
        Some(BodyKind::Json)
    } else {
        None
    }
}

async fn body_key(ex: &mut Exchange<'_>, name: &str) -> Result<Found, Reply> {
    let Some(kind) = body_kind(ex) else { return Ok(Found::Nothing) };
    let body = match ex.body_bytes(BODY_LIMIT).await {
        Ok(b) => b,
        Err(BodyError::TooLarge(_)) => return Err(Reply::status(StatusCode::PAYLOAD_TOO_LARGE)),
        Err(BodyError::Read(_)) => return Err(Reply::status(StatusCode::BAD_REQUEST)),
    };
    Ok(match kind {
        BodyKind::Form => {
            Found::from_values(form_urlencoded::parse(&body).filter(|(k, _)| k == name).map(|(_, v)| v.into_owned()))
        }
        BodyKind::Json => match serde_json::from_slice::<Value>(&body).ok().and_then(|v| v.get(name).cloned()) {
            Some(Value::String(s)) => Found::One(s),
            Some(Value::Array(_)) => Found::Several,
            _ => Found::Nothing,
        },
    })
}

fn remove_body_key(ex: &mut Exchange<'_>, name: &str) {
    let (Some(kind), crate::exchange::RequestBody::Buffered(body)) = (body_kind(ex), &ex.body) else { return };
    let new = match kind {
        BodyKind::Form => {
            let kept = form_urlencoded::parse(body).filter(|(k, _)| k != name);
            form_urlencoded::Serializer::new(String::new()).extend_pairs(kept).finish().into_bytes()
        }
        BodyKind::Json => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(mut map)) => {
                map.remove(name);
                Value::Object(map).to_string().into_bytes()
            }
            _ => return,
        },
    };
    ex.set_body(new.into());
}
