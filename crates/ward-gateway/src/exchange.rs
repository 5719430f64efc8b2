//! A request in flight: what the plugins see and change before it is forwarded.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::compiled::Route;
use crate::consumers::Consumers;
use crate::listener::ConnInfo;
use crate::plugins::session::Pending;
use crate::plugins::{AccessState, Instance};
use crate::router::Captures;
use crate::upstream::Service;

/// Headers Kong sets upstream about the authenticated consumer. Whatever a client sends
/// under these names is removed before any plugin runs, so none of them can be forged.
pub(crate) mod consumer_headers {
    use http::HeaderName;

    pub const ID: HeaderName = HeaderName::from_static("x-consumer-id");
    pub const CUSTOM_ID: HeaderName = HeaderName::from_static("x-consumer-custom-id");
    pub const USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
    pub const CREDENTIAL: HeaderName = HeaderName::from_static("x-credential-identifier");
    pub const ANONYMOUS: HeaderName = HeaderName::from_static("x-anonymous-consumer");
    pub const GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");
    pub const AUTHENTICATED_GROUPS: HeaderName = HeaderName::from_static("x-authenticated-groups");

    /// All of them.
    pub const ALL: [HeaderName; 7] = [ID, CUSTOM_ID, USERNAME, CREDENTIAL, ANONYMOUS, GROUPS, AUTHENTICATED_GROUPS];
}

/// The request body: still streaming from the client, or read whole by a plugin.
#[derive(Debug)]
pub(crate) enum RequestBody {
    Stream(Incoming),
    Buffered(Bytes),
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// Longer than the limit.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The client went away or sent a malformed body.
    #[error("reading the request body: {0}")]
    Read(String),
}

/// A request being handled.
pub(crate) struct Exchange<'a> {
    pub method: Method,
    /// Request headers; plugins change them in place for the upstream.
    pub headers: HeaderMap,
    /// The normalised path.
    pub path: String,
    /// The raw query string, as it will be forwarded.
    pub query: Option<String>,
    /// The request target as the client sent it (path not normalised), for signatures over it.
    pub uri: http::Uri,
    /// The client's HTTP version.
    pub version: http::Version,
    pub body: RequestBody,
    /// The client's address (from X-Forwarded-For only when the peer is trusted).
    pub client_ip: IpAddr,
    pub conn: &'a ConnInfo,
    pub consumers: &'a Consumers,
    pub route: &'a Route,
    pub service: Option<&'a Service>,
    /// The authenticated (or anonymous) consumer.
    pub consumer: Option<usize>,
    /// The credential that authenticated the consumer; none for an anonymous one.
    pub credential: Option<String>,
    /// Headers to set on the response the client gets, whoever makes it.
    pub response_headers: HeaderMap,
    /// What the route's regex path captured (Kong's `uri_captures`).
    pub uri_captures: Captures,
    /// The path the upstream is asked for, when a plugin replaced it (the query is kept).
    pub upstream_path: Option<String>,
    /// The Host the upstream gets, when a plugin set it.
    pub upstream_host: Option<String>,
    /// Plugins with a response phase, as chosen for this request, in execution order.
    pub responders: Vec<Arc<Instance>>,
    /// What the session plugin leaves to its response phase.
    pub session: Pending,
}

impl Exchange<'_> {
    /// Every value of a query argument, decoded.
    pub fn query_values(&self, name: &str) -> Vec<Cow<'_, str>> {
        let Some(q) = &self.query else { return Vec::new() };
        form_urlencoded::parse(q.as_bytes()).filter(|(k, _)| k == name).map(|(_, v)| v).collect()
    }

    /// Removes a query argument from what is forwarded, leaving the others byte for byte.
    pub fn remove_query_arg(&mut self, name: &str) {
        self.query = self.query.as_deref().and_then(|q| without_query_arg(q, name));
    }

    /// The first value of a request header, as text.
    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Reads the whole body (at most `limit` bytes) so that a plugin can look into it.
    pub async fn body_bytes(&mut self, limit: usize) -> Result<Bytes, BodyError> {
        if let RequestBody::Buffered(b) = &self.body {
            return Ok(b.clone());
        }
        let RequestBody::Stream(stream) = std::mem::replace(&mut self.body, RequestBody::Buffered(Bytes::new())) else {
            unreachable!("checked above")
        };
        let collected = Limited::new(stream, limit).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                BodyError::TooLarge(limit)
            } else {
                BodyError::Read(e.to_string())
            }
        })?;
        let bytes = collected.to_bytes();
        self.body = RequestBody::Buffered(bytes.clone());
        Ok(bytes)
    }

    /// Replaces the body forwarded upstream (its length is set again when sent).
    pub fn set_body(&mut self, body: Bytes) {
        self.headers.remove(header::CONTENT_LENGTH);
        self.body = RequestBody::Buffered(body);
    }

    /// Marks `consumer` as authenticated by `credential` (none: anonymous), and tells the
    /// upstream as Kong does.
    pub fn authenticate(&mut self, consumer: usize, credential: Option<String>) {
        use consumer_headers as h;
        let c = &self.consumers.list[consumer];
        set_or_clear(&mut self.headers, h::ID, Some(&c.id));
        set_or_clear(&mut self.headers, h::CUSTOM_ID, c.custom_id.as_deref());
        set_or_clear(&mut self.headers, h::USERNAME, c.username.as_deref());
        set_or_clear(&mut self.headers, h::CREDENTIAL, credential.as_deref());
        set_or_clear(&mut self.headers, h::ANONYMOUS, credential.is_none().then_some("true"));
        self.consumer = Some(consumer);
        self.credential = credential;
    }
}

impl<'a> Exchange<'a> {
    /// What the response phase needs once the access phase is over (the session's part is
    /// taken out of the exchange).
    pub fn access_state(&mut self) -> AccessState<'a> {
        AccessState {
            consumers: self.consumers,
            consumer: self.consumer,
            credential: self.credential.clone(),
            session: std::mem::take(&mut self.session),
        }
    }
}

/// `query` without the arguments named `name` (compared decoded), the others untouched.
fn without_query_arg(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            form_urlencoded::parse(key.as_bytes()).next().is_none_or(|(k, _)| k != name)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// Sets a header to `value`, or removes it when there is none (or it is not a valid value).
pub(crate) fn set_or_clear(headers: &mut HeaderMap, name: HeaderName, value: Option<&str>) {
    match value.and_then(|v| HeaderValue::from_str(v).ok()) {
        Some(v) => {
            headers.insert(name, v);
        }
        None => {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_a_query_argument_keeps_the_others_as_sent() {
        let table = [
            ("apikey=k", None),
            ("a=1&apikey=k&b=%20x", Some("a=1&b=%20x")),
            ("api%6Bey=k&a=1", Some("a=1")),
            ("apikey&apikey=2&x", Some("x")),
            ("apikeys=1", Some("apikeys=1")),
        ];
        for (query, want) in table {
            assert_eq!(without_query_arg(query, "apikey").as_deref(), want, "{query}");
        }
    }
}
