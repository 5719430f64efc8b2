//! The local application, as the inbound side reaches it: pooled keep-alive HTTP/1.1
//! connections, or HTTP/2 without TLS (h2c) for `http2` and `grpc` services.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tokio::net::{TcpSocket, TcpStream};
use ward_net::redirect::INBOUND_PASSTHROUGH_V4;

use crate::http::Body;

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
    /// The upgrade exchange failed.
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
    /// For an application on loopback.
    loopback: Clients,
    /// For an application at one of the host's other addresses: connections come from
    /// 127.0.0.6, which the transparent proxy's rules let through instead of capturing them.
    host: Clients,
}

/// An HTTP/1.1 and an h2c client sharing one connector.
struct Clients {
    http1: Client<HttpConnector, Body>,
    h2c: Client<HttpConnector, Body>,
}

impl Clients {
    fn new(source: Option<IpAddr>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_local_address(source);
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_timer(TokioTimer::new()).pool_idle_timeout(Duration::from_secs(90));
        let http1 = builder.build(connector.clone());
        let h2c = builder.http2_only(true).timer(TokioTimer::new()).build(connector);
        Clients { http1, h2c }
    }
}

impl Default for AppClient {
    fn default() -> Self {
        Self::new()
    }
}

impl AppClient {
    /// Clients with keep-alive pools.
    pub fn new() -> Self {
        AppClient { loopback: Clients::new(None), host: Clients::new(Some(INBOUND_PASSTHROUGH_V4.into())) }
    }

    fn clients(&self, app: SocketAddr) -> &Clients {
        if app.is_ipv4() && !app.ip().is_loopback() { &self.host } else { &self.loopback }
    }

    /// Sends `request` (its URI path and query) to the application at `app`.
    pub async fn send(
        &self,
        app: SocketAddr,
        h2c: bool,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, AppError> {
        *request.uri_mut() = app_uri(app, request.uri());
        *request.version_mut() = if h2c { http::Version::HTTP_2 } else { http::Version::HTTP_11 };
        let clients = self.clients(app);
        let client = if h2c { &clients.h2c } else { &clients.http1 };
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
