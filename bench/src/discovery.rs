//! The discovery stream as a proxy opens it: TLS to the control plane with its CA, the
//! dataplane token as bearer, Register first. Used to simulate many proxies from one process
//! and to obtain SVIDs for the peers (HAProxy) and the handshake benchmark.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use ward_proto::discovery::{
    CertificateRequest, ControlMessage, ProxyMessage, Register, control_message, discovery_client::DiscoveryClient,
    proxy_message,
};

use crate::control_plane::ControlPlane;

/// One HTTP/2 connection to the discovery server; many streams can share it.
pub async fn connect(cp: &ControlPlane) -> anyhow::Result<Channel> {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(cp.ca_pem()?)).domain_name("localhost");
    Endpoint::from_shared(cp.dp_address())?
        .tls_config(tls)?
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect()
        .await
        .context("connecting to the discovery server")
}

/// An open discovery stream.
pub struct Stream {
    /// Messages to the control plane.
    pub outbox: tokio::sync::mpsc::Sender<ProxyMessage>,
    /// Messages from the control plane.
    pub inbox: tonic::Streaming<ControlMessage>,
}

/// Opens a stream on `channel` with `token`, registering `dataplane` (Universal JSON).
pub async fn open(channel: Channel, token: &str, dataplane: &serde_json::Value) -> anyhow::Result<Stream> {
    let (outbox, outgoing) = tokio::sync::mpsc::channel(4);
    let register = Register { dataplane_json: dataplane.to_string(), proxy_version: "ward-bench".into() };
    outbox.send(ProxyMessage { message: Some(proxy_message::Message::Register(register)) }).await?;
    let mut request = tonic::Request::new(ReceiverStream::new(outgoing));
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
    let inbox = DiscoveryClient::new(channel).stream(request).await?.into_inner();
    Ok(Stream { outbox, inbox })
}

/// An X.509-SVID with its key and the mesh's trust bundle, all PEM.
pub struct Svid {
    /// Leaf then intermediates.
    pub chain_pem: String,
    /// The private key, PKCS#8.
    pub key_pem: String,
    /// The mesh's CAs.
    pub bundle_pem: String,
}

/// Registers the Dataplane `name` of `service` (inbound on an unused port), asks for its SVID
/// and closes the stream again, so that the Dataplane goes offline and takes no traffic.
pub async fn fetch_svid(cp: &ControlPlane, mesh: &str, name: &str, service: &str) -> anyhow::Result<Svid> {
    let token = cp.dataplane_token(mesh, name, service).await?;
    let port = crate::free_port()?;
    let dataplane = crate::control_plane::dataplane(mesh, name, service, "127.0.0.1", port, port, &[]);
    let mut stream = open(connect(cp).await?, &token, &dataplane).await?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(format!("spiffe://{mesh}/{service}").try_into()?)];
    let csr = params.serialize_request(&key)?.pem()?;
    let request = CertificateRequest { csr_pem: csr, service: String::new() };
    stream.outbox.send(ProxyMessage { message: Some(proxy_message::Message::CertificateRequest(request)) }).await?;
    let (mut chain_pem, mut bundle_pem) = (None, None);
    while chain_pem.is_none() || bundle_pem.is_none() {
        let message = tokio::time::timeout(Duration::from_secs(20), stream.inbox.message())
            .await
            .context("no answer from the control plane within 20s")??
            .context("the stream ended")?;
        match message.message {
            Some(control_message::Message::Config(config)) => bundle_pem = Some(config.trust_bundle_pem),
            Some(control_message::Message::Certificate(c)) => chain_pem = Some(c.chain_pem),
            Some(control_message::Message::CertificateRefused(r)) => bail!("certificate refused: {}", r.reason),
            None => {}
        }
    }
    Ok(Svid {
        chain_pem: chain_pem.unwrap_or_default(),
        key_pem: key.serialize_pem(),
        bundle_pem: bundle_pem.unwrap_or_default(),
    })
}
