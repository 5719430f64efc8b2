//! The HTTP server both the proxy and the gateway run on each connection: HTTP/1.1 and HTTP/2
//! (by ALPN or preface) held to the limits, behind the framing guard, with each request's
//! headers screened before the service sees them.

use std::{future::Future, pin::Pin};

use http::{Method, Request, Response, StatusCode};
use hyper::{body::Incoming, service::Service};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::{
    Limits,
    body::BoxError,
    framing::{FramingGuard, UpgradeSignal, offers_upgrade},
    headers::remove_underscored,
};

/// A server for HTTP/1.1 and HTTP/2 held to `limits`.
pub fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192) + 8192)
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Puts a connection behind the framing guard and its service behind the header screen;
/// serve the pair with a server from [`builder`].
pub fn guard<IO, S>(io: IO, service: S, limits: &Limits) -> (TokioIo<FramingGuard<IO>>, Screened<S>) {
    let (guarded, upgrades) = FramingGuard::new(io, limits);
    (
        TokioIo::new(guarded),
        Screened { inner: service, upgrades, allow_underscores: limits.allow_underscores_in_headers },
    )
}

/// A service that sees each request only after its headers were screened (names with `_`
/// dropped unless allowed), and that tells the framing guard how it answered an offer to
/// switch protocols.
#[derive(Debug, Clone)]
pub struct Screened<S> {
    inner: S,
    upgrades: UpgradeSignal,
    allow_underscores: bool,
}

/// Answers an upgrade offer when dropped, as declined unless the response switched, so that
/// the guard never waits for a request whose handling was abandoned.
struct Answer {
    upgrades: UpgradeSignal,
    connect: bool,
    switched: bool,
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.upgrades.answer(self.switched);
    }
}

impl Answer {
    fn for_status(mut self, status: StatusCode) {
        self.switched = status == StatusCode::SWITCHING_PROTOCOLS || (self.connect && status.is_success());
    }
}

impl<S, B> Service<Request<Incoming>> for Screened<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, S::Error>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let offered = offers_upgrade(
            request.method().as_str(),
            request.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
        );
        let answer = offered.then(|| Answer {
            upgrades: self.upgrades.clone(),
            connect: request.method() == Method::CONNECT,
            switched: false,
        });
        if !self.allow_underscores {
            let dropped = remove_underscored(request.headers_mut());
            if dropped > 0 {
                tracing::debug!(dropped, "request headers with '_' in their names dropped");
            }
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if let Some(answer) = answer {
                answer.for_status(response.status());
            }
            Ok(response)
        })
    }
}

/// Serves one connection with `server` until it ends; once `draining` is cancelled it takes no
/// new request and closes when the open ones are answered. No protocol upgrades.
pub async fn serve<IO, S, B>(
    server: &auto::Builder<TokioExecutor>,
    io: IO,
    service: S,
    limits: &Limits,
    draining: &CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (io, service) = guard(io, service, limits);
    let connection = server.serve_connection(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = draining.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
