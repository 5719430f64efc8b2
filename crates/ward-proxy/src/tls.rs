//! Mutual TLS between proxies: every handshake presents the current certificate and checks the
//! peer against the mesh's current trust bundle, so a rotated certificate or bundle applies to
//! the next handshake while established connections carry on.

use std::{fmt, sync::Arc};

use chrono::DateTime;
use rustls::{
    CertificateError, ClientConfig, DistinguishedName, Error, OtherError, ServerConfig, SignatureScheme,
    client::{
        ResolvesClientCert,
        danger::{ServerCertVerified, ServerCertVerifier},
    },
    server::{
        ClientHello, ResolvesServerCert,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use ward_http::tls::{HandshakeSignatures, provider};
use ward_pki::{SpiffeId, VerifyError};

use crate::state::State;

/// ALPN of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// TLS 1.3 alone, the default.
static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The TLS versions the proxy speaks: 1.3 only, or 1.2 too.
pub fn versions(allow_tls12: bool) -> &'static [&'static rustls::SupportedProtocolVersion] {
    if allow_tls12 { rustls::ALL_VERSIONS } else { TLS13_ONLY }
}

/// The server side of inbound mTLS for an inbound of `service`, which presents that service's
/// certificate: a client certificate from the mesh is required.
pub fn server_config(state: Arc<State>, service: String, allow_tls12: bool) -> Arc<ServerConfig> {
    let provider = provider();
    let verifier =
        Arc::new(MeshClientVerifier { signatures: HandshakeSignatures::of(&provider), state: state.clone() });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(allow_tls12))
        .expect("the provider supports these versions")
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(ServiceSvid { state, service }));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    // A resumed session skips certificate verification: a revoked, expired or no longer trusted
    // caller would get back in with its old session. Every handshake is a full one.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

/// A plain TLS server (no client certificate) presenting the certificate and key of the PEM
/// texts `cert` and `key`: the metrics endpoint's `providedTLS`.
pub fn provided_server_config(cert: &str, key: &str) -> Result<Arc<ServerConfig>, String> {
    let chain = ward_http::tls::certificates(cert)?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| format!("no private key in PEM: {e}"))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .expect("the provider supports these versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// The client side of outbound mTLS to instances of the service whose identity is `expected`.
pub fn client_config(state: Arc<State>, expected: SpiffeId, allow_tls12: bool, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let provider = provider();
    let verifier =
        Arc::new(MeshServerVerifier { signatures: HandshakeSignatures::of(&provider), state: state.clone(), expected });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(allow_tls12))
        .expect("the provider supports these versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(CurrentSvid(state)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // As on the server side: no resumption, so every connection verifies the peer afresh.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// Presents the current certificate of one service the proxy serves, as a server.
struct ServiceSvid {
    state: Arc<State>,
    service: String,
}

impl fmt::Debug for ServiceSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceSvid({})", self.service)
    }
}

impl ResolvesServerCert for ServiceSvid {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.state.svid_for(&self.service).map(|s| s.certified.clone())
    }
}

/// Presents the proxy's current main certificate (the identity it calls others with), as a client.
struct CurrentSvid(Arc<State>);

impl fmt::Debug for CurrentSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentSvid")
    }
}

impl ResolvesClientCert for CurrentSvid {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.svid().map(|s| s.certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts a client certificate that chains to the mesh's trust bundle and names one of its workloads.
struct MeshClientVerifier {
    state: Arc<State>,
    signatures: HandshakeSignatures,
}

impl fmt::Debug for MeshClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MeshClientVerifier")
    }
}

impl ClientCertVerifier for MeshClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        verify_peer(&self.state, end_entity, now)?;
        Ok(ClientCertVerified::assertion())
    }

    ward_http::delegate_handshake_signatures!(signatures);
}

/// Accepts a server certificate that chains to the trust bundle and names exactly `expected`,
/// so an endpoint cannot pass itself off as another service.
struct MeshServerVerifier {
    state: Arc<State>,
    expected: SpiffeId,
    signatures: HandshakeSignatures,
}

impl fmt::Debug for MeshServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeshServerVerifier({})", self.expected)
    }
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let id = verify_peer(&self.state, end_entity, now)?;
        if id != self.expected {
            return Err(other(WrongIdentity { expected: self.expected.to_string(), got: id.to_string() }));
        }
        Ok(ServerCertVerified::assertion())
    }

    ward_http::delegate_handshake_signatures!(signatures);
}

/// A server proved another identity than the one the caller asked for.
#[derive(Debug, thiserror::Error)]
#[error("server presented {got}, expected {expected}")]
pub struct WrongIdentity {
    expected: String,
    got: String,
}

/// A peer presented a certificate whose dataplane token was revoked.
#[derive(Debug, thiserror::Error)]
#[error("certificate {serial} was revoked")]
pub struct Revoked {
    serial: String,
}

/// Checks a peer's certificate against the current trust bundle and revocations; its SPIFFE
/// ID when good.
fn verify_peer(state: &State, end_entity: &CertificateDer<'_>, now: UnixTime) -> Result<SpiffeId, Error> {
    let config = state.config().ok_or_else(|| Error::General("no configuration from the control plane yet".into()))?;
    let now = DateTime::from_timestamp(now.as_secs() as i64, 0).unwrap_or_default();
    let verified = config.bundle.verify_peer(end_entity, now).map_err(|e| match e {
        VerifyError::UnknownIssuer { .. } => Error::InvalidCertificate(CertificateError::UnknownIssuer),
        VerifyError::Expired { .. } => Error::InvalidCertificate(CertificateError::Expired),
        VerifyError::NotYetValid { .. } => Error::InvalidCertificate(CertificateError::NotValidYet),
        VerifyError::Malformed { .. } => Error::InvalidCertificate(CertificateError::BadEncoding),
        other_error => other(other_error),
    })?;
    if config.revoked_serials.contains(&verified.serial) {
        return Err(other(Revoked { serial: verified.serial }));
    }
    Ok(verified.spiffe_id)
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// A handshake failure in words, with the peer's identity problem spelled out.
pub fn describe(error: &std::io::Error) -> String {
    match error.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::Other(e))) => format!("invalid peer certificate: {}", e.0),
        _ => error.to_string(),
    }
}

/// A few words for why a handshake failed, as a metric label.
pub fn failure_reason(error: &std::io::Error) -> &'static str {
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return match error.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => "connection_closed",
            std::io::ErrorKind::TimedOut => "timeout",
            std::io::ErrorKind::InvalidData => "not_tls",
            _ => "io_error",
        };
    };
    match tls {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => "unknown_issuer",
        Error::InvalidCertificate(CertificateError::Expired) => "expired_certificate",
        Error::InvalidCertificate(CertificateError::NotValidYet) => "certificate_not_yet_valid",
        Error::InvalidCertificate(CertificateError::Other(e)) if e.0.is::<WrongIdentity>() => "wrong_identity",
        Error::InvalidCertificate(CertificateError::Other(e)) if e.0.is::<Revoked>() => "revoked",
        Error::InvalidCertificate(_) => "invalid_certificate",
        Error::NoCertificatesPresented => "no_client_certificate",
        Error::InvalidMessage(_) => "not_tls",
        Error::PeerIncompatible(_) => "incompatible_peer",
        Error::AlertReceived(_) => "alert_received",
        _ => "tls_error",
    }
}
