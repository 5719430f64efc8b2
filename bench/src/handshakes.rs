//! New mTLS connections per second against an inbound: each connection a full TLS 1.3
//! handshake with a client SVID, one HTTP/1.1 request with `Connection: close`, and the
//! whole answer read.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::discovery::Svid;

/// Accepts the server's certificate without checking its chain or name (SVIDs carry no DNS
/// name), but checks the handshake signature: the benchmark measures the server's cost.
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS 1.3 client presenting `svid`, offering HTTP/1.1 by ALPN, without session resumption.
pub fn client_config(svid: &Svid) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(svid.chain_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(svid.key_pem.as_bytes()).context("SVID key")?;
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// What the loop achieved.
pub struct Handshakes {
    /// Connections that completed a handshake and a 200.
    pub ok: u64,
    /// Connections that failed.
    pub errors: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// `concurrency` workers opening one connection after another to `address` for `duration`.
pub async fn handshake_loop(
    address: SocketAddr,
    config: Arc<ClientConfig>,
    concurrency: usize,
    duration: Duration,
) -> Handshakes {
    let (ok, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (config, ok, errors) = (config.clone(), ok.clone(), errors.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let counter = if one_connection(address, config.clone()).await.is_ok() { &ok } else { &errors };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    Handshakes {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
    }
}

async fn one_connection(address: SocketAddr, config: Arc<ClientConfig>) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    tcp.set_nodelay(true)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = connector.connect(ServerName::try_from("inbound.mesh")?, tcp).await?;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: inbound\r\nConnection: close\r\n\r\n").await?;
    let mut answer = Vec::with_capacity(2048);
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await?;
    anyhow::ensure!(
        answer.starts_with(b"HTTP/1.1 200"),
        "answer: {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(80)])
    );
    Ok(())
}
