//! mTLS clients and certificates made outside the control plane, for tests that knock on a
//! proxy's inbound directly.

use std::{sync::Arc, time::Duration};

use rustls_pki_types::pem::PemObject;

/// A CA made by the test, outside any control plane.
pub struct TestCa {
    /// Its certificate and key, PEM.
    pub material: ward_pki::CaMaterial,
    /// It, loaded to sign.
    pub ca: ward_pki::Ca,
}

impl TestCa {
    /// A fresh CA of `trust_domain`, valid for a day.
    pub fn new(trust_domain: &str) -> TestCa {
        let options = ward_pki::BuiltinCaOptions { rsa_bits: None, lifetime: Duration::from_secs(86_400) };
        let (material, _) = ward_pki::generate_builtin(trust_domain, &options, chrono::Utc::now()).unwrap();
        TestCa { ca: ward_pki::Ca::load(&material).unwrap(), material }
    }

    /// A key and a certificate for `spiffe_id` signed by this CA.
    pub fn issue(&self, spiffe_id: &str) -> (ward_pki::WorkloadKey, String) {
        let id = ward_pki::SpiffeId::parse(spiffe_id).unwrap();
        let (key, csr) = ward_pki::generate_key_and_csr(&id).unwrap();
        let svid = self.ca.sign_svid(&csr, &id, Duration::from_secs(3600), chrono::Utc::now()).unwrap();
        (key, svid.chain_pem)
    }
}

/// Accepts any server certificate: these clients test the server's checks of theirs.
#[derive(Debug)]
pub struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// GET / over TLS to `port` with the client certificate `cert`: the status line, or why there is none.
pub async fn mtls_get(port: u16, identity: Option<(ward_pki::WorkloadKey, String)>) -> Result<String, String> {
    mtls_get_with(port, identity.map(|(key, chain)| (key.private_key_der(), chain))).await
}

/// Like [`mtls_get`], with the key as DER.
pub async fn mtls_get_with(
    port: u16,
    identity: Option<(rustls_pki_types::PrivateKeyDer<'static>, String)>,
) -> Result<String, String> {
    mtls_get_versions(port, identity, rustls::DEFAULT_VERSIONS).await
}

/// Like [`mtls_get_with`], offering only `versions` of TLS.
pub async fn mtls_get_versions(
    port: u16,
    identity: Option<(rustls_pki_types::PrivateKeyDer<'static>, String)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let config = match identity {
        Some((key, chain)) => {
            let certs = rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut tls =
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| e.to_string())?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").await.map_err(|e| e.to_string())?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await.map_err(|e| e.to_string())?;
    response.lines().next().map(String::from).filter(|l| !l.is_empty()).ok_or_else(|| "connection closed".to_string())
}
