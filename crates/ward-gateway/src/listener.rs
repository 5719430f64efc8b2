//! The proxy listeners: HTTP, and HTTPS with SNI-selected certificates and HTTP/2 by ALPN,
//! each on the shared accept loop (connection caps, drain) and HTTP server (framing guard,
//! header screen) of `ward_http`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use ward_http::Limits;

use crate::runtime::Runtime;

/// What every listener of the gateway shares.
pub(crate) struct Listening {
    /// Limits of each listener and connection.
    pub limits: Limits,
    /// The HTTP server held to those limits.
    pub server: auto::Builder<TokioExecutor>,
    /// Every connection, so that shutdown can wait for them.
    pub connections: TaskTracker,
    /// Cancelled when the gateway starts draining: connections take no new request.
    pub draining: CancellationToken,
}

impl Listening {
    /// Listeners held to `limits`.
    pub fn new(limits: Limits) -> Self {
        Listening {
            server: ward_http::server::builder(&limits),
            limits,
            connections: TaskTracker::new(),
            draining: CancellationToken::new(),
        }
    }
}

/// What a request's connection tells about it.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    pub https: bool,
    /// The connection's serial number among those the gateway accepted (from 1).
    pub serial: u64,
    /// Requests received on the connection so far, the current one included.
    pub requests: AtomicU64,
    /// The server name the client asked for in its TLS hello.
    pub sni: Option<String>,
    /// The client's certificate chain, leaf first, when it sent one.
    pub client_chain: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// Counts a connection as active while alive.
struct Active(Arc<Runtime>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.stats.connections_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections until `stop`; `https` makes it the TLS listener.
pub(crate) async fn serve(
    listener: TcpListener,
    runtime: Arc<Runtime>,
    https: bool,
    listening: Arc<Listening>,
    stop: CancellationToken,
) {
    let listening_on = listener.local_addr().ok();
    let shared = listening.clone();
    ward_http::accept::serve(listener, &shared.limits, &shared.connections, stop, move |stream, peer| {
        let serial = runtime.stats.connections_accepted.fetch_add(1, Ordering::Relaxed) + 1;
        let local = stream.local_addr().ok().or(listening_on).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        runtime.stats.connections_active.fetch_add(1, Ordering::Relaxed);
        let active = Active(runtime.clone());
        let (runtime, listening) = (runtime.clone(), listening.clone());
        async move {
            let _active = active;
            let info =
                ConnInfo { peer, local, https, serial, requests: AtomicU64::new(0), sni: None, client_chain: None };
            if !https {
                return serve_connection(stream, runtime, info, &listening).await;
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(runtime.current().tls.clone());
            let timeout = listening.limits.header_read_timeout;
            let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!("TLS handshake with {peer}: {e}"),
                Err(_) => return tracing::debug!("TLS handshake with {peer} timed out"),
            };
            let session = tls.get_ref().1;
            let info = ConnInfo {
                sni: session.server_name().map(str::to_string),
                client_chain: session
                    .peer_certificates()
                    .map(|c| Arc::new(c.iter().map(|d| d.clone().into_owned()).collect())),
                ..info
            };
            serve_connection(tls, runtime, info, &listening).await
        }
    })
    .await
}

/// Serves one connection, HTTP/1.1 or HTTP/2 (by ALPN or preface), until it ends or drains.
async fn serve_connection<S>(stream: S, runtime: Arc<Runtime>, info: ConnInfo, listening: &Listening)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let info = Arc::new(info);
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let (runtime, info) = (runtime.clone(), info.clone());
        async move {
            runtime.stats.total_requests.fetch_add(1, Ordering::Relaxed);
            info.requests.fetch_add(1, Ordering::Relaxed);
            let response = crate::handler::handle(runtime.current(), &runtime.trusted_ips, &info, request).await;
            Ok::<_, Infallible>(response)
        }
    });
    ward_http::server::serve(&listening.server, stream, service, &listening.limits, &listening.draining).await;
}
