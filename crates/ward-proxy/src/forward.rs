//! Forwarding both directions share: driving a server connection to its end (idle timeout,
//! drain, lost permission), carrying an upgraded connection, copying TCP, timing requests.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use ward_http::{
    Body,
    body::{boxed, text},
};

use crate::{
    Proxy,
    authorization::Cut,
    io::Activity,
    metrics::{BytesLabels, DestinationLabels, RequestLabels},
};

/// Serves one HTTP connection until it ends, shutting it down gracefully when it is idle for
/// `idle` (never when `None`), when it is `max_age` old, or when the proxy drains. When `cut`
/// completes (the caller lost its permission or its certificate's trust) the connection is
/// dropped at once, with every request and response still in flight on it, and the reason
/// returned.
pub async fn drive<C>(
    proxy: &Proxy,
    connection: C,
    activity: &Activity,
    (idle, max_age): (Option<Duration>, Option<Duration>),
    cut: impl Future<Output = Cut>,
) -> Option<Cut>
where
    C: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + GracefulShutdown,
{
    tokio::pin!(connection);
    tokio::pin!(cut);
    let idle = until_idle(activity, idle);
    tokio::pin!(idle);
    let aged = async {
        match max_age {
            Some(age) => tokio::time::sleep(age).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(aged);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return None;
            }
            reason = cut.as_mut() => return Some(reason),
            () = idle.as_mut(), if !closing => {
                tracing::debug!("closing an idle connection");
                closing = true;
                connection.as_mut().shutdown();
            }
            () = aged.as_mut(), if !closing => {
                tracing::debug!("closing a connection at its maximum duration");
                closing = true;
                connection.as_mut().shutdown();
            }
            _ = proxy.draining.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().shutdown();
            }
        }
    }
}

/// Completes once nothing moved on `activity` for `idle`; never when `None`.
pub async fn until_idle(activity: &Activity, idle: Option<Duration>) {
    match idle {
        Some(limit) => activity.idle(limit).await,
        None => std::future::pending().await,
    }
}

/// A server connection that can stop taking requests and close once the current ones finish.
pub trait GracefulShutdown {
    /// Starts a graceful shutdown.
    fn shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E> GracefulShutdown for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: hyper::body::Body + Send + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Sends an upgrade request with `send`, which gives the response and a future that completes
/// when the upgraded connection must end (a caller or a peer no longer trusted); when the other
/// side switches protocols, joins the two upgraded connections until either closes or that
/// future completes.
pub async fn upgrade<B, F, Fut, S, E>(mut request: Request<B>, send: F) -> Result<Response<Body>, E>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
    B::Error: Into<ward_http::BoxError>,
    F: FnOnce(Request<Body>) -> Fut,
    Fut: Future<Output = Result<(Response<Incoming>, S), E>>,
    S: Future<Output = ()> + Send + 'static,
{
    let downstream = hyper::upgrade::on(&mut request);
    let (mut response, stop) = send(request.map(boxed)).await?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let joined = async {
                match tokio::try_join!(downstream, upstream) {
                    Ok((down, up)) => {
                        let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut TokioIo::new(up)).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            };
            tokio::select! {
                _ = joined => {}
                _ = stop => tracing::debug!("upgraded connection closed"),
            }
        });
    }
    Ok(response.map(boxed))
}

/// Copies a TCP connection both ways until either side closes, counting bytes.
pub async fn copy_tcp<A, B>(proxy: &Proxy, direction: &'static str, mut from: A, mut to: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional(&mut from, &mut to).await {
        Ok((received, sent)) => {
            proxy.state().metrics.bytes.get_or_create(&BytesLabels { direction, flow: "received" }).inc_by(received);
            proxy.state().metrics.bytes.get_or_create(&BytesLabels { direction, flow: "sent" }).inc_by(sent);
        }
        Err(e) => tracing::debug!(error = %e, "TCP connection ended with an error"),
    }
}

/// Records a finished request in the metrics.
pub fn record(
    proxy: &Proxy,
    direction: &'static str,
    source: &str,
    destination: &str,
    status: StatusCode,
    started: Instant,
) {
    let metrics = &proxy.state().metrics;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            direction,
            source: source.to_string(),
            destination: destination.to_string(),
            status: status.as_u16(),
        })
        .inc();
    metrics
        .request_duration
        .get_or_create(&DestinationLabels { direction, destination: destination.to_string() })
        .observe(started.elapsed().as_secs_f64());
}

/// The response for a request that could not be carried.
pub fn unavailable(status: StatusCode, why: impl std::fmt::Display) -> Response<Body> {
    text(status, format!("{why}\n"))
}

/// Counts an open connection until dropped.
pub struct OpenConnection(prometheus_client::metrics::gauge::Gauge);

impl OpenConnection {
    /// Counts one more open connection in `direction`.
    pub fn new(proxy: &Arc<Proxy>, direction: &'static str) -> Self {
        let gauge = proxy
            .state()
            .metrics
            .open_connections
            .get_or_create(&crate::metrics::DirectionLabels { direction })
            .clone();
        gauge.inc();
        OpenConnection(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
