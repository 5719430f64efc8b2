//! Upstreams: where a service's requests go, and the one place that connects to a
//! chosen target and sends it a request.
//!
//! A service's upstream is one of a small set of kinds: a plain host (the service's
//! `url` or `host`), an `upstreams` entity whose targets a balancer chooses among, or a
//! mesh service (`host: <name>.mesh`), reached over mutual TLS with the gateway's own mesh
//! identity and subject to the permissions of that service's proxies.

pub(crate) mod balancer;
pub(crate) mod health;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::{Entity, schema};
use crate::error::ConfigErrors;
use crate::reply::{Body, Reply};
use crate::tls::CaStore;
use balancer::Balancer;

/// How long a service waits for its upstream (Kong's timeouts, in milliseconds in the file).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    pub write: Duration,
    pub read: Duration,
}

/// Where a service's requests go.
pub(crate) enum Upstream {
    /// One host and port, resolved by DNS when connecting.
    Host { host: String, port: u16 },
    /// An `upstreams` entity: a balancer over targets, with health checks.
    Balanced(Arc<Balancer>),
    /// A service of the mesh the gateway joined.
    Mesh { service: String, host: String, member: Arc<ward_proxy::member::Member> },
}

/// A compiled service.
pub(crate) struct Service {
    pub id: String,
    pub name: Option<String>,
    pub https: bool,
    /// The service's path, prepended to what the route forwards.
    pub path: Option<String>,
    pub upstream: Upstream,
    pub retries: u32,
    pub timeouts: Timeouts,
    client: Client<Connector, Body>,
}

/// The target a request is sent to.
pub(crate) struct Picked {
    pub host: String,
    pub port: u16,
    /// The balancer's target index, for health reports and retries.
    pub target: Option<usize>,
    /// Counts the request as in flight (least-connections) until dropped.
    pub in_flight: Option<balancer::InFlight>,
}

/// Why a request could not be forwarded, each with Kong's status and message.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("no target is healthy")]
    NoHealthyTarget,
    #[error("name resolution failed")]
    NameResolution,
    #[error("connecting failed: {0}")]
    Connect(String),
    #[error("connecting timed out")]
    ConnectTimeout,
    #[error("the upstream did not take the request in time")]
    WriteTimeout,
    #[error("the upstream did not answer in time")]
    ReadTimeout,
    #[error("invalid response: {0}")]
    BadResponse(String),
}

impl UpstreamError {
    /// What the client gets.
    pub fn reply(&self) -> Reply {
        match self {
            UpstreamError::NoHealthyTarget => {
                Reply::error(StatusCode::SERVICE_UNAVAILABLE, "failure to get a peer from the ring-balancer")
            }
            UpstreamError::NameResolution => Reply::error(StatusCode::SERVICE_UNAVAILABLE, "name resolution failed"),
            UpstreamError::Connect(_) | UpstreamError::BadResponse(_) => Reply::status(StatusCode::BAD_GATEWAY),
            UpstreamError::ConnectTimeout | UpstreamError::WriteTimeout | UpstreamError::ReadTimeout => {
                Reply::status(StatusCode::GATEWAY_TIMEOUT)
            }
        }
    }

    /// Whether nothing reached the upstream, so another target may be tried.
    pub fn before_sending(&self) -> bool {
        matches!(self, UpstreamError::NameResolution | UpstreamError::Connect(_) | UpstreamError::ConnectTimeout)
    }
}

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
    async fn open_as(self, host: String, port: u16, server_name: String) -> Result<Conn, ConnectError> {
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
fn client_tls(roots: Option<rustls::RootCertStore>) -> tokio_rustls::TlsConnector {
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

/// Largest timeout Kong accepts (ms).
const MAX_TIMEOUT_MS: u64 = 2_147_483_646;

impl Service {
    /// Compiles a service entity; `balancers` are the upstreams by name, `mesh` the mesh the
    /// gateway joined.
    pub fn compile(
        e: &Entity<schema::Service>,
        balancers: &HashMap<String, Arc<Balancer>>,
        ca: &CaStore,
        mesh: Option<&Arc<ward_proxy::member::Member>>,
        errors: &mut ConfigErrors,
    ) -> Option<Service> {
        let s = &e.item;
        let at = |field: &str| format!("{}.{field}", e.path);
        let before = errors.0.len();
        let (protocol, host, port, path) = match &s.url {
            Some(url) => {
                if s.protocol.is_some() || s.host.is_some() || s.port.is_some() || s.path.is_some() {
                    errors.add(at("url"), "cannot be combined with protocol, host, port or path");
                }
                match url.parse::<Uri>() {
                    Ok(uri) if uri.scheme().is_some() && uri.host().is_some() => (
                        uri.scheme_str().unwrap_or_default().to_string(),
                        Some(uri.host().unwrap_or_default().to_string()),
                        uri.port_u16().map(u32::from),
                        uri.path_and_query().map(|p| p.path().to_string()).filter(|p| p != "/" || url.ends_with('/')),
                    ),
                    _ => {
                        errors.add(at("url"), format!("'{url}' is not an absolute URL"));
                        return None;
                    }
                }
            }
            None => (s.protocol.clone().unwrap_or_else(|| "http".into()), s.host.clone(), s.port, s.path.clone()),
        };
        let https = match protocol.as_str() {
            "http" => false,
            "https" => true,
            other => {
                errors.add(at("protocol"), format!("'{other}' is not supported (http, https)"));
                false
            }
        };
        let Some(host) = host.filter(|h| !h.is_empty()) else {
            errors.add(at("host"), "is required");
            return None;
        };
        let mesh_service = host.strip_suffix(".mesh").map(str::to_string);
        match (&mesh_service, mesh) {
            (Some(_), None) => errors.add(
                at("host"),
                format!("'{host}': a mesh service; the gateway must join the mesh (ward gateway run --mesh MESH ...)"),
            ),
            (Some(_), Some(_)) if https => {
                errors.add(at("protocol"), "a mesh service is reached over mTLS by the mesh: use http")
            }
            _ => {}
        }
        let port = match port {
            None => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(p) if (1..=65535).contains(&p) => p as u16,
            Some(_) => {
                errors.add(at("port"), "must be between 1 and 65535");
                0
            }
        };
        if let Some(p) = &path
            && !p.starts_with('/')
        {
            errors.add(at("path"), "must start with /");
        }
        let mut timeout = |field: &str, ms: u64| {
            if !(1..=MAX_TIMEOUT_MS).contains(&ms) {
                errors.add(at(field), format!("must be between 1 and {MAX_TIMEOUT_MS} (milliseconds)"));
            }
            Duration::from_millis(ms)
        };
        let timeouts = Timeouts {
            connect: timeout("connect_timeout", s.connect_timeout),
            write: timeout("write_timeout", s.write_timeout),
            read: timeout("read_timeout", s.read_timeout),
        };
        if s.retries > 32_767 {
            errors.add(at("retries"), "must be between 0 and 32767");
        }
        let roots = if s.tls_verify == Some(true) {
            if s.ca_certificates.is_empty() {
                errors.add(at("tls_verify"), "needs ca_certificates: Ward does not read the system's trust store");
            }
            let mut roots = rustls::RootCertStore::empty();
            for (i, id) in s.ca_certificates.iter().enumerate() {
                match ca.get(id) {
                    Some(anchor) => roots.roots.push(anchor.clone()),
                    None => {
                        errors.add(at(&format!("ca_certificates[{i}]")), format!("no ca_certificate has the id '{id}'"))
                    }
                }
            }
            Some(roots)
        } else {
            None
        };
        if errors.0.len() > before {
            return None;
        }
        let upstream = match (mesh_service, mesh, balancers.get(&host)) {
            (Some(service), Some(member), _) => Upstream::Mesh { service, host, member: member.clone() },
            (_, _, Some(b)) => Upstream::Balanced(b.clone()),
            _ => Upstream::Host { host, port },
        };
        let tls = https.then(|| client_tls(roots));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector(tls, timeouts.connect));
        Some(Service {
            id: e.id.clone(),
            name: s.name.clone(),
            https,
            path,
            upstream,
            retries: s.retries,
            timeouts,
            client,
        })
    }

    /// Chooses where the next attempt goes, avoiding targets already `tried` when possible.
    pub fn pick(&self, hash: Option<u64>, tried: &[usize]) -> Result<Picked, UpstreamError> {
        match &self.upstream {
            Upstream::Host { host, port } => {
                Ok(Picked { host: host.clone(), port: *port, target: None, in_flight: None })
            }
            Upstream::Balanced(b) => b.pick(hash, tried).ok_or(UpstreamError::NoHealthyTarget),
            Upstream::Mesh { host, .. } => Ok(Picked { host: host.clone(), port: 80, target: None, in_flight: None }),
        }
    }

    /// The Host header the upstream gets when the route does not preserve the client's.
    pub fn host_header(&self, picked: &Picked) -> String {
        let default_port = if self.https { 443 } else { 80 };
        if let Upstream::Balanced(b) = &self.upstream
            && let Some(h) = &b.host_header
        {
            return h.clone();
        }
        if picked.port == default_port { picked.host.clone() } else { format!("{}:{}", picked.host, picked.port) }
    }

    /// Sends `request` (whose URI holds only the path and query) to `picked`.
    pub async fn send(&self, picked: &Picked, mut request: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        if let Upstream::Mesh { service, member, .. } = &self.upstream {
            return member.send(service, request).await.map_err(|e| match e {
                ward_proxy::member::SendError::NoEndpoint(_) => UpstreamError::NoHealthyTarget,
                other => UpstreamError::Connect(other.to_string()),
            });
        }
        let scheme = if self.https { "https" } else { "http" };
        let host = if picked.host.contains(':') { format!("[{}]", picked.host) } else { picked.host.clone() };
        let path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let uri = format!("{scheme}://{host}:{}{path}", picked.port)
            .parse::<Uri>()
            .map_err(|e| UpstreamError::Connect(format!("invalid target address: {e}")))?;
        *request.uri_mut() = uri;
        self.client.request(request).await.map_err(|e| classify(&e))
    }

    /// Tells the balancer how a target did (passive health checks).
    pub fn report(&self, picked: &Picked, observation: health::Observation) {
        if let (Upstream::Balanced(b), Some(target)) = (&self.upstream, picked.target) {
            b.report_passive(target, observation);
        }
    }
}

/// Kong's view of a client error: before or after the request reached the upstream.
fn classify(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            return match c {
                ConnectError::NameResolution(_) => UpstreamError::NameResolution,
                ConnectError::Timeout => UpstreamError::ConnectTimeout,
                other => UpstreamError::Connect(other.to_string()),
            };
        }
        source = s.source();
    }
    if e.is_connect() { UpstreamError::Connect(e.to_string()) } else { UpstreamError::BadResponse(e.to_string()) }
}
