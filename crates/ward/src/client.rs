//! The CLI's client of the control plane's REST API.

use anyhow::{Context, bail};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use ward_api::names::check_name;

use crate::settings::Connection;

/// An API client bound to one control plane and token.
pub struct Client {
    http: reqwest::Client,
    connection: Connection,
}

/// A response with a 2xx status.
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its body as text.
    pub body: String,
    /// The texts of its `Warning` headers: fields accepted that have no effect.
    pub warnings: Vec<String>,
}

impl Client {
    /// A client for `connection`.
    pub fn new(connection: Connection) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().no_proxy().build().context("building the HTTP client")?;
        Ok(Client { http, connection })
    }

    /// Sends a request; a non-2xx answer becomes an error carrying the API's explanation.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.connection.address);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = &self.connection.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| {
            format!("cannot reach the control plane at {} (is `ward cp run` running?)", self.connection.address)
        })?;
        let status = response.status();
        let warnings = response
            .headers()
            .get_all(reqwest::header::WARNING)
            .iter()
            .filter_map(|v| warning_text(v.to_str().ok()?))
            .collect();
        let body = response.text().await.context("reading the API's answer")?;
        if status.is_success() {
            return Ok(Reply { status, body, warnings });
        }
        bail!("{}", explain(status, &body))
    }

    /// GETs `path` and parses the JSON answer.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let reply = self.send(Method::GET, path, None).await?;
        serde_json::from_str(&reply.body).context("the API answered something that is not JSON")
    }
}

/// What is left as it is in a path segment or query value: RFC 3986's unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// One segment of an API path.
#[derive(Debug, Clone, Copy)]
pub enum Segment<'a> {
    /// A fixed word of the API, such as `meshes`.
    Fixed(&'a str),
    /// A mesh or resource name the user gave; `what` says where it came from (e.g. `--mesh`).
    Name {
        /// The argument or field the name came from, for the error.
        what: &'static str,
        /// The name.
        value: &'a str,
    },
}

/// A name that cannot be a mesh or resource name, refused before any request is sent.
#[derive(Debug, thiserror::Error)]
#[error("{what} {value:?}: {reason}")]
pub struct BadName {
    /// The argument or field the name came from.
    pub what: &'static str,
    /// The name.
    pub value: String,
    /// Why it is not a valid name.
    pub reason: String,
}

/// The API path `/seg/seg/...`: every name is checked as a resource name, so `..` or `/` can
/// never move the request elsewhere, and every segment is percent-encoded.
pub fn api_path(segments: &[Segment<'_>]) -> Result<String, BadName> {
    let mut path = String::new();
    for segment in segments {
        let text = match *segment {
            Segment::Fixed(word) => word,
            Segment::Name { what, value } => {
                check_name(value).map_err(|reason| BadName { what, value: value.to_string(), reason })?;
                value
            }
        };
        path.push('/');
        path.extend(utf8_percent_encode(text, UNRESERVED));
    }
    Ok(path)
}

/// `text` percent-encoded for a query value.
pub fn query_value(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

/// The message for an error answer: the API's `details`, else the status and body.
/// The text of a `Warning` header value `CODE AGENT "TEXT" [DATE]`, unescaped.
fn warning_text(value: &str) -> Option<String> {
    let quoted = value.split_once('"')?.1;
    let mut text = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => text.push(chars.next()?),
            '"' => return Some(text),
            _ => text.push(c),
        }
    }
    None
}

fn explain(status: StatusCode, body: &str) -> String {
    match serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("details").and_then(Value::as_str).map(String::from))
    {
        Some(details) if status == StatusCode::UNAUTHORIZED => {
            format!("{details} (401); pass --api-token, set WARD_API_TOKEN or run `ward config set-cp`")
        }
        Some(details) => format!("{details} ({})", status.as_u16()),
        None => format!("the API answered {status}: {}", body.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::{Segment::*, *};

    #[test]
    fn names_are_checked_and_every_segment_is_encoded() {
        let path = api_path(&[Fixed("meshes"), Name { what: "mesh", value: "a.b_c-1" }, Fixed("_cas")]);
        assert_eq!(path.unwrap(), "/meshes/a.b_c-1/_cas");
        let err = api_path(&[Fixed("meshes"), Name { what: "name", value: "../../victim" }]).unwrap_err();
        assert_eq!(err.to_string(), "name \"../../victim\": must start and end with a letter or digit");
        assert_eq!(api_path(&[Fixed("a b/.."), Fixed("~x")]).unwrap(), "/a%20b%2F../~x");
        assert_eq!(query_value("spiffe://m/web?x"), "spiffe%3A%2F%2Fm%2Fweb%3Fx");
    }
}
