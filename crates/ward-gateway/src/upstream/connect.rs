//! Connections to targets: DNS, TCP and, for https services, TLS (verifying against the
//! service's CA certificates, or accepting any certificate as Kong does by default), all
//! within the service's connect timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("the target has no host")]
    NoHost,
    #[error("resolving the target's name: {0}")]
    NameResolution(io::Error),
    #[error("{0}")]
    Io(io::Error),
    #[error("timed out")]
    Timeout,
}

/// Anything a connection can be.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An open connection to a target, plain or TLS.
pub(crate) struct Conn(TokioIo<Box<dyn Io>>);

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Opens connections to targets: DNS, TCP and (for https services) TLS, all within the
/// service's connect timeout.
#[derive(Clone)]
pub(crate) struct Connector {
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
}

impl Connector {
    async fn open(self, host: String, port: u16) -> Result<Conn, ConnectError> {
        let name = host.clone();
        self.open_as(host, port, name).await
    }

    /// Connects to `host:port`, naming `server_name` in the TLS hello.
    pub async fn open_as(self, host: String, port: u16, server_name: String) -> Result<Conn, ConnectError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let lookup = tokio::time::timeout_at(deadline, tokio::net::lookup_host((host.as_str(), port)));
        let addrs: Vec<_> =
            lookup.await.map_err(|_| ConnectError::Timeout)?.map_err(ConnectError::NameResolution)?.collect();
        let mut last = ConnectError::NameResolution(io::Error::new(io::ErrorKind::NotFound, "no address"));
        let mut tcp = None;
        for addr in addrs {
            match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => last = ConnectError::Io(e),
                Err(_) => return Err(ConnectError::Timeout),
            }
        }
        let tcp = tcp.ok_or(last)?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = self.tls else { return Ok(Conn(TokioIo::new(Box::new(tcp)))) };
        let name = ServerName::try_from(server_name)
            .map_err(|e| ConnectError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let stream =
            tokio::time::timeout_at(deadline, tls.connect(name, tcp)).await.map_err(|_| ConnectError::Timeout)?;
        Ok(Conn(TokioIo::new(Box::new(stream.map_err(ConnectError::Io)?))))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host =
                uri.host().ok_or(ConnectError::NoHost)?.trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
            this.open(host, port).await
        })
    }
}

/// Accepts any upstream certificate: Kong's default (`tls_verify` unset or false).
#[derive(Debug)]
struct AnyServerCertificate {
    signatures: ward_http::tls::HandshakeSignatures,
}

impl rustls::client::danger::ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    ward_http::delegate_handshake_signatures!(signatures);
}

/// The TLS client side for an https service: verifying against `roots`, or (Kong's
/// default) accepting any certificate.
pub(crate) fn client_tls(roots: Option<rustls::RootCertStore>) -> tokio_rustls::TlsConnector {
    let provider = crate::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("TLS 1.2 and 1.3 are supported");
    let mut config = match roots {
        Some(roots) => builder.with_root_certificates(roots).with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate {
                signatures: ward_http::tls::HandshakeSignatures::of(&provider),
            }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A connector with the given TLS side and connect timeout.
pub(crate) fn connector(tls: Option<tokio_rustls::TlsConnector>, timeout: Duration) -> Connector {
    Connector { tls, timeout }
}
