//! HTTP pieces both directions share: the body type, canned responses, hop-by-hop headers,
//! and the server builder with the configured limits.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};

/// Any error a body may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the proxy sends or receives.
pub type Body = BoxBody<Bytes, BoxError>;

/// Header carrying the caller's SPIFFE ID to the application; removed from what callers send.
pub const PEER_IDENTITY: &str = "x-ward-peer-identity";

/// Limits every server connection is held to.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head, bytes.
    pub max_header_bytes: usize,
    /// Most request headers.
    pub max_headers: usize,
    /// Time a client has to send a request head (and a TLS handshake).
    pub header_read_timeout: Duration,
    /// A connection moving no byte for this long is closed.
    pub idle_timeout: Duration,
    /// Most connections open at once on one listener.
    pub max_connections: usize,
    /// Whether TLS 1.2 is allowed besides 1.3.
    pub allow_tls12: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: 10_000,
            allow_tls12: false,
        }
    }
}

/// Boxes any body whose error converts to [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(boxed(Full::new(Bytes::from(body.into())).map_err(|e| match e {})));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Whether the request asks to switch protocols (WebSocket and the like).
pub fn is_upgrade<B>(request: &Request<B>) -> bool {
    request.headers().contains_key(header::UPGRADE)
        && request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
}

/// Removes the headers that belong to one hop, including those `Connection` names; keeps the
/// upgrade pair when the message switches protocols, and `te: trailers` (gRPC needs it).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrading: bool) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !(t.is_empty() || upgrading && t == "upgrade"))
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    let trailers_only = headers.get(header::TE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in ["keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "transfer-encoding"] {
        headers.remove(name);
    }
    if !trailers_only {
        headers.remove(header::TE);
    }
    if !upgrading {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

/// A server for HTTP/1.1 and HTTP/2 (by ALPN or preface) held to `limits`.
pub fn server(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192) + 8192)
        .max_headers(limits.max_headers);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(limits.max_header_bytes as u32);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_end_to_end_ones_stay() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-app", "kept"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        let mut plain = h.clone();
        strip_hop_by_hop(&mut plain, false);
        let names: Vec<&str> = plain.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["te", "x-app"]);

        let mut upgrade = h;
        upgrade.insert("connection", HeaderValue::from_static("upgrade"));
        strip_hop_by_hop(&mut upgrade, true);
        assert_eq!(upgrade.get("upgrade").unwrap(), "websocket");
        assert_eq!(upgrade.get("connection").unwrap(), "upgrade");
    }
}
