//! MeshExternalService, the proxy's side: a checked copy of what the control plane sends, and
//! connections to its endpoints, lowest priority first, originating TLS verified the way
//! Kuma's modes say (Secured, SkipSAN, SkipCA, SkipAll).

use std::{
    collections::BTreeMap,
    fmt, io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use rand::seq::SliceRandom;
use rustls::{
    CertificateError, ClientConfig, Error, OtherError, RootCertStore, SupportedProtocolVersion,
    client::{
        danger::{ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor, verify_server_name,
    },
    crypto::WebPkiSupportedAlgorithms,
    server::ParsedCertificate,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use ward_api::mesh_external_service::{Protocol, SanMatch, SanMatchType, TlsVersion, VerificationMode};
use ward_http::tls::{HandshakeSignatures, certificates, provider};
use ward_proto::discovery::{ExternalService, ExternalTls};
use x509_parser::extensions::GeneralName;

use crate::tls::{ALPN_H2, ALPN_HTTP1};

#[cfg(test)]
mod tests;

/// A MeshExternalService as the proxy reaches it, checked.
#[derive(Debug, Clone)]
pub struct External {
    /// The MeshExternalService's name.
    pub name: String,
    /// `match.port`: where the application connects on the virtual IP.
    pub port: u16,
    /// `match.protocol`.
    pub protocol: Protocol,
    /// The virtual IP, when it has one.
    pub virtual_ip: Option<IpAddr>,
    /// Names resolving to the virtual IP.
    pub hostnames: Vec<String>,
    /// Where connections go; empty when denied.
    pub endpoints: Vec<Endpoint>,
    /// TLS originated to the endpoints; `None`: connections are carried as they are.
    pub tls: Option<Arc<OriginTls>>,
    /// Why this dataplane may not reach it, when it may not.
    pub denied: Option<String>,
}

/// The ALPN protocol offered when originating TLS for `protocol`.
fn alpn(protocol: Protocol) -> Option<&'static [u8]> {
    match protocol {
        Protocol::Tcp => None,
        Protocol::Http => Some(ALPN_HTTP1),
        Protocol::Http2 | Protocol::Grpc => Some(ALPN_H2),
    }
}

/// One endpoint of a MeshExternalService.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// An IP address or a DNS name.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Lower is preferred.
    pub priority: u32,
}

impl Endpoint {
    /// The address, when `host` is an IP.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// `host:port`, with brackets around an IPv6 address.
    fn target(&self) -> String {
        match self.ip() {
            Some(ip) => SocketAddr::new(ip, self.port).to_string(),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// How a `subjectAltNames` entry shows in an error.
fn san_text(san: &SanMatch) -> String {
    format!("{} {}", san.ty, san.value)
}

/// TLS originated to a MeshExternalService's endpoints, built once per configuration.
pub struct OriginTls {
    /// How the server's certificate is verified.
    pub mode: VerificationMode,
    /// SNI and the name checked; `None`: the endpoint's address.
    pub server_name: Option<ServerName<'static>>,
    /// The client configuration every connection uses.
    pub config: Arc<ClientConfig>,
}

impl fmt::Debug for OriginTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginTls").field("mode", &self.mode).field("server_name", &self.server_name).finish()
    }
}

impl OriginTls {
    /// The name sent as SNI and checked against the certificate when connecting to `endpoint`:
    /// `server_name`, else the endpoint's address (an IP address sends no SNI).
    pub fn server_name_for(&self, endpoint: &Endpoint) -> Result<ServerName<'static>, String> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => ServerName::try_from(endpoint.host.clone()).map_err(|e| e.to_string()),
        }
    }
}

impl External {
    /// Checks what the control plane sent and builds the TLS configuration; errors name the
    /// field and why.
    pub fn from_proto(p: &ExternalService) -> Result<External, String> {
        let err = |field: &str, why: String| format!("external service {}: {field}: {why}", p.name);
        let port = to_port(p.port).map_err(|e| err("port", e))?;
        let protocol = match p.protocol.as_str() {
            "" => Protocol::Tcp,
            given => Protocol::parse(given)
                .ok_or_else(|| err("protocol", format!("'{given}': {}", Protocol::choices_message())))?,
        };
        let virtual_ip = match p.virtual_ip.as_str() {
            "" => None,
            ip => Some(ip.parse().map_err(|_| err("virtual_ip", format!("'{ip}' is not an IP address")))?),
        };
        let mut endpoints = Vec::with_capacity(p.endpoints.len());
        for (i, e) in p.endpoints.iter().enumerate() {
            let field = format!("endpoints[{i}]");
            if e.address.parse::<IpAddr>().is_err() && ServerName::try_from(e.address.as_str()).is_err() {
                return Err(err(&field, format!("'{}' is neither an IP address nor a DNS name", e.address)));
            }
            let port = to_port(e.port).map_err(|why| err(&format!("{field}.port"), why))?;
            endpoints.push(Endpoint { host: e.address.clone(), port, priority: e.priority });
        }
        let denied = (!p.denied.is_empty()).then(|| p.denied.clone());
        let tls = match &p.tls {
            Some(tls) if denied.is_none() => Some(Arc::new(origin_tls(tls, protocol).map_err(|(f, why)| err(f, why))?)),
            _ => None,
        };
        Ok(External {
            name: p.name.clone(),
            port,
            protocol,
            virtual_ip,
            hostnames: p.hostnames.clone(),
            endpoints,
            tls,
            denied,
        })
    }
}

fn to_port(p: u32) -> Result<u16, String> {
    match u16::try_from(p) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!("{p} is not a port")),
    }
}

static TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
static TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
static TLS12_13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A TLS version the control plane sent (empty: `TLSAuto`).
fn version(given: &str, field: &'static str) -> Result<TlsVersion, (&'static str, String)> {
    match given {
        "" => Ok(TlsVersion::Auto),
        given => {
            TlsVersion::parse(given).ok_or_else(|| (field, format!("'{given}': {}", TlsVersion::choices_message())))
        }
    }
}

/// The TLS versions between `min` and `max`; TLS 1.0 and 1.1 as a minimum mean 1.2, and as a
/// maximum are refused (Ward speaks neither).
fn versions(min: &str, max: &str) -> Result<&'static [&'static SupportedProtocolVersion], (&'static str, String)> {
    let min13 = version(min, "tls.min_version")? == TlsVersion::Tls13;
    let max13 = match version(max, "tls.max_version")? {
        TlsVersion::Auto | TlsVersion::Tls13 => true,
        TlsVersion::Tls12 => false,
        TlsVersion::Tls10 | TlsVersion::Tls11 => {
            return Err(("tls.max_version", format!("'{max}': Ward speaks TLS 1.2 and 1.3 only")));
        }
    };
    match (min13, max13) {
        (true, false) => Err(("tls.max_version", format!("TLS12 is below min_version {min}"))),
        (true, true) => Ok(TLS13),
        (false, false) => Ok(TLS12),
        (false, true) => Ok(TLS12_13),
    }
}

/// The client TLS configuration of a MeshExternalService; on error, the field and why.
fn origin_tls(tls: &ExternalTls, protocol: Protocol) -> Result<OriginTls, (&'static str, String)> {
    let mode = match tls.mode.as_str() {
        "" => VerificationMode::Secured,
        given => VerificationMode::parse(given)
            .ok_or_else(|| ("tls.mode", format!("'{given}': {}", VerificationMode::choices_message())))?,
    };
    let versions = versions(&tls.min_version, &tls.max_version)?;
    let server_name = match tls.server_name.as_str() {
        "" => None,
        name => {
            Some(ServerName::try_from(name.to_string()).map_err(|e| ("tls.server_name", format!("'{name}': {e}")))?)
        }
    };
    let mut sans = Vec::with_capacity(tls.subject_alt_names.len());
    for san in &tls.subject_alt_names {
        if san.value.is_empty() {
            return Err(("tls.subject_alt_names", "an entry has no value".into()));
        }
        let ty = match san.r#type.as_str() {
            "" => SanMatchType::Exact,
            given => SanMatchType::parse(given).ok_or_else(|| {
                ("tls.subject_alt_names", format!("type '{given}': {}", SanMatchType::choices_message()))
            })?,
        };
        sans.push(SanMatch { ty, value: san.value.clone() });
    }
    // A CA given is read whatever the mode, so that garbage is reported, not ignored.
    let given_roots = match tls.ca_cert_pem.as_str() {
        "" => None,
        pem => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(pem).map_err(|e| ("tls.ca_cert_pem", e))? {
                roots.add(cert).map_err(|e| {
                    let why = match e {
                        Error::InvalidCertificate(e) => format!("{e:?}"),
                        e => e.to_string(),
                    };
                    ("tls.ca_cert_pem", format!("not usable as a trusted root: {why}"))
                })?;
            }
            Some(roots)
        }
    };
    let roots = match (mode.verifies_chain(), given_roots) {
        (false, _) => None,
        (true, Some(roots)) => Some(Arc::new(roots)),
        (true, None) => Some(Arc::new(host_roots(rustls_native_certs::load_native_certs())?)),
    };
    let provider = provider();
    let verifier = Arc::new(ExternalVerifier {
        mode,
        roots,
        sans,
        algorithms: provider.signature_verification_algorithms,
        signatures: HandshakeSignatures::of(&provider),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| ("tls.min_version", e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (tls.client_cert_pem.as_str(), tls.client_key_pem.as_str()) {
        ("", "") => builder.with_no_client_auth(),
        (_, "") => return Err(("tls.client_key_pem", "missing while client_cert_pem is given".into())),
        ("", _) => return Err(("tls.client_cert_pem", "missing while client_key_pem is given".into())),
        (cert, key) => {
            let chain = certificates(cert).map_err(|e| ("tls.client_cert_pem", e))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| ("tls.client_key_pem", format!("no private key in PEM: {e}")))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| ("tls.client_key_pem", e.to_string()))?
        }
    };
    config.alpn_protocols = alpn(protocol).into_iter().map(<[u8]>::to_vec).collect();
    Ok(OriginTls { mode, server_name, config: Arc::new(config) })
}

/// The host's trusted roots, from what `rustls-native-certs` found; none is an error.
fn host_roots(found: rustls_native_certs::CertificateResult) -> Result<RootCertStore, (&'static str, String)> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        let why = if errors.is_empty() { String::new() } else { format!(" ({})", errors.join("; ")) };
        return Err(("tls.ca_cert_pem", format!("empty, and the host has no trusted root certificates{why}")));
    }
    Ok(roots)
}

/// Verifies a MeshExternalService's certificate as its mode says.
struct ExternalVerifier {
    mode: VerificationMode,
    /// `None` when the chain is not checked.
    roots: Option<Arc<RootCertStore>>,
    sans: Vec<SanMatch>,
    algorithms: WebPkiSupportedAlgorithms,
    signatures: HandshakeSignatures,
}

impl fmt::Debug for ExternalVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExternalVerifier({:?})", self.mode)
    }
}

impl ServerCertVerifier for ExternalVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if self.mode == VerificationMode::SkipAll {
            return Ok(ServerCertVerified::assertion());
        }
        let cert = ParsedCertificate::try_from(end_entity)?;
        if let Some(roots) = &self.roots {
            verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, self.algorithms.all)?;
        }
        if self.mode.verifies_names() {
            if self.sans.is_empty() {
                verify_server_name(&cert, server_name)?;
            } else {
                match_sans(end_entity, &self.sans)?;
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    ward_http::delegate_handshake_signatures!(signatures);
}

/// The certificate's DNS and URI SANs, one of which must match one of `wanted`.
fn match_sans(der: &[u8], wanted: &[SanMatch]) -> Result<(), Error> {
    let bad = || Error::InvalidCertificate(CertificateError::BadEncoding);
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| bad())?;
    let san = cert.subject_alternative_name().map_err(|_| bad())?;
    let presented: Vec<&str> = san
        .iter()
        .flat_map(|san| &san.value.general_names)
        .filter_map(|name| match name {
            GeneralName::DNSName(n) | GeneralName::URI(n) => Some(*n),
            _ => None,
        })
        .collect();
    if presented.iter().any(|san| wanted.iter().any(|w| w.matches(san))) {
        return Ok(());
    }
    let mismatch = SanMismatch {
        presented: presented.join(", "),
        wanted: wanted.iter().map(san_text).collect::<Vec<_>>().join(", "),
    };
    Err(Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(mismatch)))))
}

/// No SAN of a certificate matched the `subjectAltNames` asked for.
#[derive(Debug, thiserror::Error)]
#[error("no SAN of the certificate ({presented}) matches subjectAltNames ({wanted})")]
pub struct SanMismatch {
    presented: String,
    wanted: String,
}

/// Why no connection to a MeshExternalService was made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// This dataplane may not reach the service.
    #[error("external service {service}: denied: {reason}")]
    Denied {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// The service has no endpoints.
    #[error("external service {service}: no endpoints")]
    NoEndpoints {
        /// The service.
        service: String,
    },
    /// Every endpoint failed.
    #[error("external service {service}: no endpoint could be reached: {}", .failures.join("; "))]
    Unreachable {
        /// The service.
        service: String,
        /// What each attempt ran into, in order.
        failures: Vec<String>,
    },
}

/// A connection to an endpoint of a MeshExternalService.
pub enum ExternalStream {
    /// Carried as it is.
    Plain(TcpStream),
    /// With TLS the proxy originated.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl ExternalStream {
    /// The ALPN protocol the server chose, with TLS.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            ExternalStream::Plain(_) => None,
            ExternalStream::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            ExternalStream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            ExternalStream::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for ExternalStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        both!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for ExternalStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        both!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        both!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        both!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        both!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ExternalStream::Plain(s) => s.is_write_vectored(),
            ExternalStream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Connects to an endpoint of `external`: priorities lowest first, the endpoints of one in a
/// random order, every address of a DNS name; each lookup, TCP connect and TLS handshake within
/// `timeout`. Returns the connection and the address it reached.
pub async fn connect(external: &External, timeout: Duration) -> Result<(ExternalStream, SocketAddr), ConnectError> {
    if let Some(reason) = &external.denied {
        return Err(ConnectError::Denied { service: external.name.clone(), reason: reason.clone() });
    }
    if external.endpoints.is_empty() {
        return Err(ConnectError::NoEndpoints { service: external.name.clone() });
    }
    let mut failures = Vec::new();
    for endpoint in in_order(&external.endpoints) {
        if let Some(connected) = connect_endpoint(external, endpoint, timeout, &mut failures).await {
            return Ok(connected);
        }
    }
    Err(ConnectError::Unreachable { service: external.name.clone(), failures })
}

/// The endpoints by priority, lowest first, shuffled within each.
fn in_order(endpoints: &[Endpoint]) -> Vec<&Endpoint> {
    let mut by_priority: BTreeMap<u32, Vec<&Endpoint>> = BTreeMap::new();
    for e in endpoints {
        by_priority.entry(e.priority).or_default().push(e);
    }
    let mut rng = rand::rng();
    by_priority
        .into_values()
        .flat_map(|mut group| {
            group.shuffle(&mut rng);
            group
        })
        .collect()
}

/// Tries every address of `endpoint`; what went wrong goes to `failures`.
async fn connect_endpoint(
    external: &External,
    endpoint: &Endpoint,
    timeout: Duration,
    failures: &mut Vec<String>,
) -> Option<(ExternalStream, SocketAddr)> {
    let target = endpoint.target();
    let timed_out = || format!("timed out after {timeout:?}");
    let addresses: Vec<SocketAddr> = match endpoint.ip() {
        Some(ip) => vec![SocketAddr::new(ip, endpoint.port)],
        None => match tokio::time::timeout(timeout, tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)))
            .await
        {
            Ok(Ok(found)) => found.collect(),
            Ok(Err(e)) => {
                failures.push(format!("resolving {target}: {e}"));
                return None;
            }
            Err(_) => {
                failures.push(format!("resolving {target}: {}", timed_out()));
                return None;
            }
        },
    };
    if addresses.is_empty() {
        failures.push(format!("resolving {target}: no address"));
    }
    for address in addresses {
        let shown = if endpoint.ip().is_some() { target.clone() } else { format!("{target} ({address})") };
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                failures.push(format!("tcp to {shown}: {e}"));
                continue;
            }
            Err(_) => {
                failures.push(format!("tcp to {shown}: {}", timed_out()));
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &external.tls else { return Some((ExternalStream::Plain(tcp), address)) };
        let name = match tls.server_name_for(endpoint) {
            Ok(name) => name,
            Err(e) => {
                failures.push(format!("tls to {shown}: {e}"));
                return None;
            }
        };
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
            Ok(Ok(stream)) => return Some((ExternalStream::Tls(Box::new(stream)), address)),
            Ok(Err(e)) => failures.push(format!("tls to {shown}: {}", crate::tls::describe(&e))),
            Err(_) => failures.push(format!("tls to {shown}: {}", timed_out())),
        }
    }
    None
}
