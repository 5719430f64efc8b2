//! The upstream call, in one place: pick a target, send the request within the service's
//! timeouts, report how the target did (passive health checks), and retry another target
//! while nothing reached the upstream and the body can be sent again.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::health::Observation;
use super::watchdog::{IdleTimeoutBody, Progress, TrackedBody, send_timed};
use super::{Service, UpstreamError};
use crate::reply::{Body, BoxError};

/// The body of a request for the upstream.
pub(crate) enum OutgoingBody {
    /// Read whole (or empty): it can be sent again, so another target may be retried.
    Replayable(Bytes),
    /// Still streaming from the client: it is sent once.
    Stream(Incoming),
}

/// A request ready for the upstream, but for its Host header, which depends on the target.
pub(crate) struct Outgoing {
    pub method: Method,
    pub path_and_query: String,
    /// Hop-by-hop headers already removed.
    pub headers: HeaderMap,
    pub body: OutgoingBody,
    /// The Host to send instead of the target's: the client's when the route preserves it,
    /// or the one a plugin set (request-transformer's `replace.headers` `host`).
    pub preserved_host: Option<String>,
}

/// Sends `request` to `service`, retrying other targets while nothing was sent; the
/// response body ends with an error if it stalls past the service's read timeout.
pub(crate) async fn call(
    service: &Service,
    request: Outgoing,
    hash: Option<u64>,
) -> Result<Response<Body>, UpstreamError> {
    let Outgoing { method, path_and_query, mut headers, body, preserved_host } = request;
    let (replayable, mut stream) = match body {
        OutgoingBody::Replayable(b) => (Some(b), None),
        OutgoingBody::Stream(s) => (None, Some(s)),
    };
    let mut tried = Vec::new();
    let mut attempt = 0;
    loop {
        let picked = match service.pick(hash, &tried) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(service = service.name.as_deref().unwrap_or(&service.id), "{}: {e}", service.upstream);
                return Err(e);
            }
        };
        // Only an attempt that may be followed by another needs its own copy.
        let last_attempt = attempt >= service.retries || replayable.is_none();
        let mut attempt_headers = if last_attempt { std::mem::take(&mut headers) } else { headers.clone() };
        // preserve_host keeps the client's Host (an HTTP/2 client's :authority).
        let host = preserved_host.clone().unwrap_or_else(|| service.host_header(&picked));
        if let Ok(v) = HeaderValue::from_str(&host) {
            attempt_headers.insert(header::HOST, v);
        }
        let body: Body = match (&replayable, stream.take()) {
            (Some(b), _) => Full::new(b.clone()).map_err(|never| match never {}).boxed(),
            (None, Some(s)) => s.map_err(|e| Box::new(e) as BoxError).boxed(),
            (None, None) => unreachable!("a streamed body is sent once"),
        };
        let progress = Arc::new(Progress::new());
        let mut request = Request::new(TrackedBody { inner: body, progress: progress.clone() }.boxed());
        *request.method_mut() = method.clone();
        *request.uri_mut() = path_and_query.parse().unwrap_or_else(|_| Uri::from_static("/"));
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = attempt_headers;
        match send_timed(service, &picked, request, &progress, service.timeouts).await {
            Ok(response) => {
                service.report(&picked, Observation::Status(response.status().as_u16()));
                let (parts, body) = response.into_parts();
                let body = IdleTimeoutBody::new(body, service.timeouts.read, picked.in_flight);
                return Ok(Response::from_parts(parts, body.boxed()));
            }
            Err(e) => {
                let observation = match e {
                    UpstreamError::ConnectTimeout | UpstreamError::WriteTimeout | UpstreamError::ReadTimeout => {
                        Observation::Timeout
                    }
                    _ => Observation::TcpFailure,
                };
                service.report(&picked, observation);
                tracing::warn!(
                    service = service.name.as_deref().unwrap_or(&service.id),
                    "upstream {}:{}: {e}",
                    picked.host,
                    picked.port
                );
                if !e.before_sending() || last_attempt {
                    return Err(e);
                }
                tried.extend(picked.target);
                attempt += 1;
            }
        }
    }
}
