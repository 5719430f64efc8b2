//! The CLI's client of the control plane's REST API.

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;

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
        let body = response.text().await.context("reading the API's answer")?;
        if status.is_success() {
            return Ok(Reply { status, body });
        }
        bail!("{}", explain(status, &body))
    }

    /// GETs `path` and parses the JSON answer.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let reply = self.send(Method::GET, path, None).await?;
        serde_json::from_str(&reply.body).context("the API answered something that is not JSON")
    }
}

/// The message for an error answer: the API's `details`, else the status and body.
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
