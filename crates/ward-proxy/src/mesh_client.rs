//! Connections to other proxies: mutual TLS that insists on the destination service's exact
//! identity; one multiplexed HTTP/2 connection per endpoint, shared by every request to it;
//! a fresh HTTP/1.1 connection for each protocol upgrade; raw TLS for TCP.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Request, Response};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};
use ward_api::mesh_timeout::{Timeouts, enabled};
use ward_http::{
    Body,
    client::{Http2ConnectError, Http2Connections},
};
use ward_pki::SpiffeId;

use crate::{
    authorization::Peer,
    config::Endpoint,
    state::State,
    tls::{self, ALPN_H2, ALPN_HTTP1},
};

/// How long connecting to another proxy may take, TLS included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request could not be carried to an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// TCP or TLS failed (including an endpoint proving the wrong identity).
    #[error("cannot connect to {endpoint}: {}", tls::describe(source))]
    Connect {
        /// The endpoint.
        endpoint: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The HTTP exchange failed.
    #[error("request to {endpoint} failed: {source}")]
    Http {
        /// The endpoint.
        endpoint: SocketAddr,
        /// Why.
        source: hyper::Error,
    },
}

/// How long before the peer's certificate expires a connection stops taking new requests, at
/// most: by then the peer has renewed, and a new connection proves its new certificate.
const RETIRE_BEFORE_EXPIRY: Duration = Duration::from_secs(30);

/// Whether a connection to `peer` may take new requests: while this proxy's certificate is
/// the one it was opened with, the peer's comes from the CA that signs ours (after a CA
/// rotation both sides move to the new one), and the peer's is not about to expire. So when a
/// certificate is renewed, or a CA is about to be removed, requests move to a new connection
/// and the old one is idle by the time its certificates expire or lose their trust.
/// With `max_age` (MeshTimeout's `http.maxConnectionDuration`), a connection also stops taking
/// requests once that old.
fn fresh(state: &Arc<State>, peer: &Peer, max_age: Option<Duration>) -> ward_http::client::Fresh {
    let own = state.svid();
    let (own_serial, own_issuer) = own.map_or((String::new(), String::new()), |s| (s.serial.clone(), s.issuer.clone()));
    let remaining = (peer.not_after - chrono::Utc::now()).to_std().unwrap_or_default();
    let retire_at =
        peer.not_after - chrono::TimeDelta::from_std((remaining / 4).min(RETIRE_BEFORE_EXPIRY)).unwrap_or_default();
    let (state, peer_issuer) = (state.clone(), peer.issuer.clone());
    let retire_at = match max_age.and_then(|age| chrono::TimeDelta::from_std(age).ok()) {
        Some(age) => retire_at.min(chrono::Utc::now() + age),
        None => retire_at,
    };
    Box::new(move || {
        chrono::Utc::now() < retire_at
            && peer_issuer == own_issuer
            && state.svid().is_some_and(|s| s.serial == own_serial)
    })
}

/// The error for a peer whose certificate passed the handshake but is no longer trusted.
fn distrusted(endpoint: SocketAddr) -> MeshError {
    MeshError::Connect { endpoint, source: io::Error::other("the peer's certificate is no longer trusted") }
}

/// Client TLS configurations by the identity the server must prove and ALPN protocol.
type TlsConfigs = HashMap<(SpiffeId, &'static [u8]), Arc<ClientConfig>>;

/// Carries traffic to other proxies of the mesh.
pub struct MeshClient {
    state: Arc<State>,
    allow_tls12: bool,
    tls: Mutex<TlsConfigs>,
    h2: Http2Connections<(SpiffeId, SocketAddr)>,
}

impl MeshClient {
    /// A client presenting the proxy's current certificate.
    pub fn new(state: Arc<State>, allow_tls12: bool) -> Self {
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new()).keep_alive_interval(Duration::from_secs(30));
        MeshClient { state, allow_tls12, tls: Mutex::default(), h2: Http2Connections::new(h2) }
    }

    /// A TLS connection to `to`, which must prove its identity, offering `alpn`, made within
    /// `within` (MeshTimeout's `connectionTimeout`, or Ward's default).
    pub async fn connect(
        &self,
        to: &Endpoint,
        alpn: &'static [u8],
        within: Option<Duration>,
    ) -> Result<TlsStream<TcpStream>, MeshError> {
        let endpoint = to.address;
        let fail = |source: io::Error| MeshError::Connect { endpoint, source };
        let config = self.client_config(&to.identity, alpn);
        let connect = async {
            let tcp = TcpStream::connect(endpoint).await?;
            tcp.set_nodelay(true)?;
            TlsConnector::from(config).connect(ServerName::IpAddress(endpoint.ip().into()), tcp).await
        };
        let result = tokio::time::timeout(within.unwrap_or(CONNECT_TIMEOUT), connect)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")));
        if let Err(e) = &result {
            let reason = tls::failure_reason(e);
            self.state
                .metrics
                .tls_handshake_failures
                .get_or_create(&crate::metrics::ReasonLabels { direction: crate::metrics::OUTBOUND, reason })
                .inc();
        }
        result.map_err(fail)
    }

    /// Sends `request` over the shared HTTP/2 connection to `to`, opening it when needed within
    /// `timeouts.connect`; a connection opened here stops taking requests once
    /// `timeouts.max_connection` old.
    pub async fn send(
        &self,
        to: &Endpoint,
        request: Request<Body>,
        timeouts: &Timeouts,
    ) -> Result<Response<Incoming>, MeshError> {
        let endpoint = to.address;
        let connect = || async {
            let tls = self.connect(to, ALPN_H2, timeouts.connect).await?;
            let peer = Peer::of(&self.state, tls.get_ref().1).ok_or_else(|| distrusted(endpoint))?;
            let fresh = fresh(&self.state, &peer, enabled(timeouts.max_connection));
            // A peer that stops being trusted loses the connection and its streams at once.
            Ok((tls, peer.watched(self.state.clone(), endpoint), fresh))
        };
        let mut sender = self.h2.sender_until((to.identity.clone(), endpoint), connect).await.map_err(|e| match e {
            Http2ConnectError::Connect(e) => e,
            Http2ConnectError::Handshake(source) => MeshError::Http { endpoint, source },
        })?;
        sender.ready().await.map_err(|source| MeshError::Http { endpoint, source })?;
        sender.send_request(request).await.map_err(|source| MeshError::Http { endpoint, source })
    }

    /// Sends an upgrade request over a new HTTP/1.1 connection, which the upgrade then takes
    /// over; also gives a future that completes (logged and counted) when the peer that
    /// connection proves is no longer trusted, which ends the upgraded connection.
    pub async fn send_upgrade(
        &self,
        to: &Endpoint,
        request: Request<Body>,
        within: Option<Duration>,
    ) -> Result<(Response<Incoming>, impl Future<Output = ()> + Send + 'static + use<>), MeshError> {
        let endpoint = to.address;
        let tls = self.connect(to, ALPN_HTTP1, within).await?;
        let peer = Peer::of(&self.state, tls.get_ref().1).ok_or_else(|| distrusted(endpoint))?;
        let (mut sender, connection) =
            http1::handshake(TokioIo::new(tls)).await.map_err(|source| MeshError::Http { endpoint, source })?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(%endpoint, error = %e, "upgraded connection to a peer ended");
            }
        });
        let response = sender.send_request(request).await.map_err(|source| MeshError::Http { endpoint, source })?;
        Ok((response, peer.watched(self.state.clone(), endpoint)))
    }

    fn client_config(&self, expected: &SpiffeId, alpn: &'static [u8]) -> Arc<ClientConfig> {
        let key = (expected.clone(), alpn);
        let mut configs = self.tls.lock().expect("client TLS configs lock");
        if let Some(config) = configs.get(&key) {
            return config.clone();
        }
        let alpns: &[&[u8]] = if alpn.is_empty() { &[] } else { std::slice::from_ref(&alpn) };
        let config = tls::client_config(self.state.clone(), expected.clone(), self.allow_tls12, alpns);
        configs.insert(key, config.clone());
        config
    }
}
