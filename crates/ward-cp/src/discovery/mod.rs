//! The discovery server: one gRPC stream per proxy, over TLS, on port 5678.

pub mod builder;
mod external_services;
mod mesh_services;
pub mod online;
pub mod session;
pub mod snapshot;
pub mod tls;
pub mod workload_ids;

use std::time::Duration;

use anyhow::Context;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming, metadata::MetadataMap};
use ward_proto::discovery::{ControlMessage, ProxyMessage, discovery_server};

use crate::{identity::Identity, store::Store};
use builder::Snapshots;
use online::Online;
use session::Session;

/// Messages queued for one proxy before its stream applies backpressure.
const OUTBOX: usize = 16;

/// What every stream needs.
#[derive(Clone)]
pub struct Discovery {
    /// The resource store.
    pub store: Store,
    /// Mesh CAs and dataplane tokens.
    pub identity: Identity,
    /// The connected proxies.
    pub online: Online,
    /// The live snapshot of each mesh.
    pub snapshots: Snapshots,
}

impl Discovery {
    /// The discovery service over `store`, with its snapshot builder running; services get
    /// virtual IPs from `vip_range`.
    pub fn start(store: Store, identity: Identity, vip_range: ipnet::Ipv4Net) -> Self {
        let (online, online_changes) = Online::new();
        let snapshots = Snapshots::start(store.clone(), identity.clone(), online.clone(), online_changes, vip_range);
        Discovery { store, identity, online, snapshots }
    }

    /// Serves proxies on `listener` with `tls` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: tls::DiscoveryTls,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let address = listener.local_addr()?;
        let identity = tonic::transport::Identity::from_pem(&tls.server.chain_pem, &tls.server.key_pem);
        tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .context("discovery server TLS")?
            // Dead peers are noticed within half a minute, so their endpoints are withdrawn.
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(discovery_server::DiscoveryServer::new(self))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await
            .with_context(|| format!("--dp-server-address {address}: serving"))
    }
}

#[tonic::async_trait]
impl discovery_server::Discovery for Discovery {
    type StreamStream = ReceiverStream<Result<ControlMessage, Status>>;

    async fn stream(&self, request: Request<Streaming<ProxyMessage>>) -> Result<Response<Self::StreamStream>, Status> {
        let token = bearer_token(request.metadata())?;
        let remote = request.remote_addr();
        let mut incoming = request.into_inner();
        let (out, outbox) = mpsc::channel(OUTBOX);
        let session = Session::open(self.clone(), token, remote, &mut incoming, out).await?;
        tokio::spawn(session.run(incoming));
        Ok(Response::new(ReceiverStream::new(outbox)))
    }
}

/// The dataplane token of `authorization: Bearer <token>`.
fn bearer_token(metadata: &MetadataMap) -> Result<String, Status> {
    let header = metadata
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("missing dataplane token: send 'authorization: Bearer <token>'"))?;
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .ok_or_else(|| Status::unauthenticated("malformed authorization metadata: expected 'Bearer <token>'"))
}
