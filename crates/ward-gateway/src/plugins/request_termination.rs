//! request-termination: answers the request itself with a fixed status and body.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Compile, Plugin};
use crate::exchange::Exchange;
use crate::reply::{Reply, default_message};

/// Largest body echoed back.
const ECHO_LIMIT: usize = 1 << 20;

fn service_unavailable() -> u16 {
    503
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "service_unavailable")]
    status_code: u16,
    message: Option<String>,
    content_type: Option<String>,
    body: Option<String>,
    #[serde(default)]
    echo: bool,
    trigger: Option<String>,
}

/// What the plugin answers.
enum Answer {
    Message(String),
    Body(Option<HeaderValue>, Bytes),
    Echo(Option<String>),
}

/// A compiled request-termination configuration.
pub(crate) struct RequestTermination {
    status: StatusCode,
    answer: Answer,
    trigger: Option<(String, HeaderName)>,
}

pub(super) fn compile(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: Config = cx.config(value)?;
    let status = match StatusCode::from_u16(c.status_code) {
        Ok(s) if (100..=599).contains(&c.status_code) => s,
        _ => {
            cx.error("status_code", "must be between 100 and 599");
            return None;
        }
    };
    if c.message.is_some() && (c.body.is_some() || c.content_type.is_some()) {
        cx.error("message", "message cannot be used with content_type or body");
    }
    if c.content_type.is_some() && c.body.is_none() {
        cx.error("content_type", "content_type requires a body");
    }
    let content_type = match c.content_type.as_deref().map(HeaderValue::from_str) {
        Some(Err(_)) => {
            cx.error("content_type", "must be a valid header value");
            None
        }
        other => other.and_then(Result::ok),
    };
    let answer = match (c.echo, c.body) {
        (true, _) => Answer::Echo(c.message),
        (false, Some(body)) => Answer::Body(content_type, Bytes::from(body)),
        (false, None) => Answer::Message(c.message.unwrap_or_else(|| default_message(status).into_owned())),
    };
    let trigger = match c.trigger {
        None => None,
        Some(t) => match HeaderName::from_bytes(t.as_bytes()) {
            Ok(h) => Some((t, h)),
            Err(_) => {
                cx.error("trigger", "must be a valid header name");
                None
            }
        },
    };
    Some(Plugin::RequestTermination(RequestTermination { status, answer, trigger }))
}

impl RequestTermination {
    pub(super) async fn access(&self, ex: &mut Exchange<'_>) -> Result<(), Reply> {
        if let Some((name, header)) = &self.trigger
            && !ex.headers.contains_key(header)
            && ex.query_values(name).is_empty()
        {
            return Ok(());
        }
        Err(match &self.answer {
            Answer::Message(m) => Reply::error(self.status, m),
            Answer::Body(ct, body) => Reply::raw(self.status, ct.clone(), body.clone()),
            Answer::Echo(message) => {
                let message = message.clone().unwrap_or_else(|| default_message(self.status).into_owned());
                let echoed = echo(ex).await;
                Reply::json(self.status, &json!({ "message": message, "request": echoed }))
            }
        })
    }
}

/// The request as the client sent it, for `echo`.
async fn echo(ex: &mut Exchange<'_>) -> Value {
    let mut headers = Map::new();
    for (name, value) in &ex.headers {
        headers.insert(name.as_str().into(), String::from_utf8_lossy(value.as_bytes()).into());
    }
    let mut query = Map::new();
    if let Some(q) = &ex.query {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            query.insert(k.into_owned(), v.into_owned().into());
        }
    }
    let raw_body =
        ex.body_bytes(ECHO_LIMIT).await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    json!({
        "scheme": if ex.conn.https { "https" } else { "http" },
        "port": ex.conn.local.port(),
        "method": ex.method.as_str(),
        "path": ex.path,
        "headers": headers,
        "query": query,
        "raw_body": raw_body,
        "matched_route": { "id": ex.route.id, "name": ex.route.name },
    })
}
