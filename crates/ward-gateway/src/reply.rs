//! Responses the gateway makes itself, in Kong's shape: `{"message": "..."}` as JSON.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
pub(crate) use ward_http::{Body, BoxError};

/// Kong's default messages (its `kong.response.error` and error handlers).
const MESSAGES: [(u16, &str); 44] = [
    (400, "Bad request"),
    (401, "Unauthorized"),
    (402, "Payment required"),
    (403, "Forbidden"),
    (404, "Not found"),
    (405, "Method not allowed"),
    (406, "Not acceptable"),
    (407, "Proxy authentication required"),
    (408, "Request timeout"),
    (409, "Conflict"),
    (410, "Gone"),
    (411, "Length required"),
    (412, "Precondition failed"),
    (413, "Payload too large"),
    (414, "URI too long"),
    (415, "Unsupported media type"),
    (416, "Range not satisfiable"),
    (417, "Expectation failed"),
    (418, "I'm a teapot"),
    (421, "Misdirected request"),
    (422, "Unprocessable entity"),
    (423, "Locked"),
    (424, "Failed dependency"),
    (425, "Too early"),
    (426, "Upgrade required"),
    (428, "Precondition required"),
    (429, "Too many requests"),
    (431, "Request header fields too large"),
    (451, "Unavailable for legal reasons"),
    (494, "Request header or cookie too large"),
    (500, "An unexpected error occurred"),
    (501, "Not implemented"),
    (502, "An invalid response was received from the upstream server"),
    (503, "The upstream server is currently unavailable"),
    (504, "The upstream server is timing out"),
    (505, "HTTP version not supported"),
    (506, "Variant also negotiates"),
    (507, "Insufficient storage"),
    (508, "Loop detected"),
    (510, "Not extended"),
    (511, "Network authentication required"),
    (200, "OK"),
    (201, "Created"),
    (204, "No content"),
];

/// Kong's message for `status`.
pub(crate) fn default_message(status: StatusCode) -> Cow<'static, str> {
    match MESSAGES.iter().find(|(code, _)| *code == status.as_u16()) {
        Some((_, message)) => Cow::Borrowed(message),
        None => Cow::Owned(format!("The upstream server responded with {}", status.as_u16())),
    }
}

/// A response the gateway makes: a rejection, a preflight answer, an error.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    /// Boxed: a plugin's `Result<(), Reply>` stays small on the path that passes.
    pub headers: Box<HeaderMap>,
    pub body: Bytes,
}

impl Reply {
    /// `{"message": message}` with `status`, as Kong's `kong.response.error`.
    pub fn error(status: StatusCode, message: impl AsRef<str>) -> Self {
        Self::json(status, &serde_json::json!({ "message": message.as_ref() }))
    }

    /// Kong's default message for `status`.
    pub fn status(status: StatusCode) -> Self {
        Self::error(status, default_message(status))
    }

    /// Any JSON value as the body.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        Reply { status, headers: Box::new(headers), body: Bytes::from(value.to_string()) }
    }

    /// A body of the given content type.
    pub fn raw(status: StatusCode, content_type: Option<HeaderValue>, body: Bytes) -> Self {
        let mut headers = HeaderMap::new();
        if let Some(ct) = content_type {
            headers.insert(header::CONTENT_TYPE, ct);
        }
        Reply { status, headers: Box::new(headers), body }
    }

    /// No body.
    pub fn empty(status: StatusCode) -> Self {
        Reply { status, headers: Box::default(), body: Bytes::new() }
    }

    /// Adds (or replaces) a header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response<Body> {
        let mut response = Response::new(ward_http::body::full(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = *self.headers;
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kong_messages() {
        let table = [
            (404, "Not found"),
            (429, "Too many requests"),
            (502, "An invalid response was received from the upstream server"),
            (503, "The upstream server is currently unavailable"),
            (504, "The upstream server is timing out"),
            (599, "The upstream server responded with 599"),
        ];
        for (code, message) in table {
            assert_eq!(default_message(StatusCode::from_u16(code).unwrap()), message);
        }
        let reply = Reply::error(StatusCode::UNAUTHORIZED, "No API key found in request");
        assert_eq!(&reply.body[..], br#"{"message":"No API key found in request"}"#);
    }
}
