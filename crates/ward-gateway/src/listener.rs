//! The proxy listeners: HTTP, and HTTPS with SNI-selected certificates and HTTP/2 by ALPN.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use ward_proxy::smuggling::Guarded;

use crate::gateway::Runtime;

/// Longest a TLS handshake or a request head may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request head accepted (431 beyond).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most request headers accepted (431 beyond).
const MAX_HEADERS: usize = 100;

/// What a request's connection tells about it.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub local_port: u16,
    pub https: bool,
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
pub(crate) async fn serve(listener: TcpListener, runtime: Arc<Runtime>, https: bool, stop: CancellationToken) {
    let local_port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        runtime.stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
        runtime.stats.connections_active.fetch_add(1, Ordering::Relaxed);
        let active = Active(runtime.clone());
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let _active = active;
            let info = ConnInfo { peer, local_port, https, sni: None, client_chain: None };
            if !https {
                return serve_connection(stream, runtime, info, false).await;
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(runtime.current().tls.clone());
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
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
            let h2 = session.alpn_protocol() == Some(b"h2");
            serve_connection(tls, runtime, info, h2).await
        });
    }
}

async fn serve_connection<S>(stream: S, runtime: Arc<Runtime>, info: ConnInfo, h2: bool)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let info = Arc::new(info);
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let (runtime, info) = (runtime.clone(), info.clone());
        async move {
            runtime.stats.total_requests.fetch_add(1, Ordering::Relaxed);
            let response = crate::proxy::handle(runtime.current(), &runtime.trusted_ips, &info, request).await;
            Ok::<_, Infallible>(response)
        }
    });
    let io = TokioIo::new(stream);
    let result = if h2 {
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, service)
            .await
    } else {
        // The head of every request passes the proxy's guard first: whatever two parsers could
        // frame differently (Content-Length with Transfer-Encoding and the like) gets a 400.
        let guarded = Guarded::new(io.into_inner(), MAX_HEAD_BYTES, MAX_HEADERS, HEADER_READ_TIMEOUT);
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_headers(MAX_HEADERS)
            .serve_connection(TokioIo::new(guarded), service)
            .await
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}
