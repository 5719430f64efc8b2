//! The local application, as the inbound side reaches it: pooled keep-alive HTTP/1.1
//! connections, or one HTTP/2 connection without TLS (h2c) per application for `http2` and
//! `grpc` services, whose requests name the caller's host once, as `:authority`.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::Duration,
};

use http::{Request, Response, Uri};
use hyper::{body::Incoming, client::conn::http2};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tokio::net::{TcpSocket, TcpStream};
use ward_http::{
    Body,
    client::{Http2ConnectError, Http2Connections},
};
use ward_net::redirect::INBOUND_PASSTHROUGH_V4;

/// Why the application could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The pooled client failed.
    #[error("application at {app}: {source}")]
    Client {
        /// Its address.
        app: SocketAddr,
        /// Why.
        source: hyper_util::client::legacy::Error,
    },
    /// Connecting for an upgrade failed.
    #[error("application at {app}: {source}")]
    Io {
        /// Its address.
        app: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP/2 connection could not be opened.
    #[error("application at {app}: {source}")]
    Http2 {
        /// Its address.
        app: SocketAddr,
        /// Why.
        source: Http2ConnectError<std::io::Error>,
    },
    /// The exchange failed.
    #[error("application at {app}: {source}")]
    Http {
        /// Its address.
        app: SocketAddr,
        /// Why.
        source: hyper::Error,
    },
}

/// Clients for the local application.
pub struct AppClient {
    /// HTTP/1.1 clients by connect timeout and source: to an application on loopback (no
    /// source), or at one of the host's other addresses, from 127.0.0.6, which the transparent
    /// proxy's rules let through instead of capturing them.
    http1: Mutex<HashMap<(Duration, Option<IpAddr>), Http1Client>>,
    /// HTTP/2 to each application, from the same source addresses (see [`connect`]).
    h2c: Http2Connections<SocketAddr>,
}

/// A pooled HTTP/1.1 client.
type Http1Client = Client<HttpConnector, Body>;

/// An HTTP/1.1 client with a keep-alive pool, connecting from `source` within `connect_timeout`.
fn http1_client(source: Option<IpAddr>, connect_timeout: Duration) -> Http1Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_local_address(source);
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_timer(TokioTimer::new()).pool_idle_timeout(Duration::from_secs(90));
    builder.build(connector)
}

/// How long connecting to the application may take, unless a MeshTimeout says otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for AppClient {
    fn default() -> Self {
        Self::new()
    }
}

impl AppClient {
    /// Clients with keep-alive pools.
    pub fn new() -> Self {
        let mut h2c = http2::Builder::new(TokioExecutor::new());
        h2c.timer(TokioTimer::new());
        AppClient { http1: Mutex::default(), h2c: Http2Connections::new(h2c) }
    }

    /// Sends `request` (its URI path and query, its Host) to the application at `app`, over
    /// HTTP/2 when `h2c`, connecting within `connect_timeout` when a connection is needed.
    pub async fn send(
        &self,
        app: SocketAddr,
        h2c: bool,
        connect_timeout: Duration,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, AppError> {
        if h2c {
            let request = ward_http::headers::to_http2_form(request, &app.to_string());
            let connect = || tokio::time::timeout(connect_timeout, connect(app));
            let mut sender = self
                .h2c
                .sender(app, || async { connect().await.unwrap_or_else(|e| Err(std::io::Error::other(e))) })
                .await
                .map_err(|source| AppError::Http2 { app, source })?;
            sender.ready().await.map_err(|source| AppError::Http { app, source })?;
            return sender.send_request(request).await.map_err(|source| AppError::Http { app, source });
        }
        *request.uri_mut() = app_uri(app, request.uri());
        *request.version_mut() = http::Version::HTTP_11;
        let source = (app.is_ipv4() && !app.ip().is_loopback()).then_some(IpAddr::from(INBOUND_PASSTHROUGH_V4));
        let client = {
            let mut clients = self.http1.lock().expect("application clients lock");
            clients.entry((connect_timeout, source)).or_insert_with(|| http1_client(source, connect_timeout)).clone()
        };
        client.request(request).await.map_err(|source| AppError::Client { app, source })
    }

    /// Sends an upgrade request over a new HTTP/1.1 connection to the application.
    pub async fn send_upgrade(
        &self,
        app: SocketAddr,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, AppError> {
        *request.uri_mut() =
            request.uri().path_and_query().map_or_else(|| Uri::from_static("/"), |p| Uri::from(p.clone()));
        *request.version_mut() = http::Version::HTTP_11;
        let tcp = connect(app).await.map_err(|source| AppError::Io { app, source })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|source| AppError::Http { app, source })?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        sender.send_request(request).await.map_err(|source| AppError::Http { app, source })
    }
}

/// A TCP connection to the application, from 127.0.0.6 when it is not on loopback (see
/// [`AppClient`]).
pub async fn connect(app: SocketAddr) -> std::io::Result<TcpStream> {
    if !app.is_ipv4() || app.ip().is_loopback() {
        return TcpStream::connect(app).await;
    }
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(INBOUND_PASSTHROUGH_V4.into(), 0))?;
    socket.connect(app).await
}

/// `http://APP/path?query` of a request's URI.
fn app_uri(app: SocketAddr, uri: &Uri) -> Uri {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("http://{app}{path}").parse().unwrap_or_else(|_| Uri::from_static("/"))
}
