//! The listeners the Dataplane asks for: opened once the proxy can serve, closed when the
//! configuration no longer names them. Each runs the shared accept loop of `ward_http::accept`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::Proxy;

/// A listener the Dataplane asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// An inbound.
    Inbound(Arc<crate::inbound::InboundSpec>),
    /// An outbound.
    Outbound(Arc<crate::outbound::OutboundSpec>),
    /// The transparent proxy's inbound redirect port, serving every inbound.
    RedirectInbound(SocketAddr),
    /// The transparent proxy's outbound redirect port.
    RedirectOutbound(SocketAddr),
    /// The DNS server for `<service>.mesh` (UDP and TCP).
    Dns(SocketAddr),
    /// The Prometheus endpoint of the mesh's metrics.
    Metrics(Arc<crate::metrics_endpoint::EndpointSpec>),
}

impl Wanted {
    fn address(&self) -> SocketAddr {
        match self {
            Wanted::Inbound(spec) => spec.listen,
            Wanted::Outbound(spec) => spec.listen,
            Wanted::RedirectInbound(a) | Wanted::RedirectOutbound(a) | Wanted::Dns(a) => *a,
            Wanted::Metrics(spec) => spec.listen,
        }
    }
}

/// The listeners the configuration in force asks for. With transparent proxying the inbounds
/// are reached through the inbound redirect port only (their ports belong to the application),
/// and the proxy answers DNS on loopback.
pub fn wanted(config: &crate::config::Config) -> Vec<Wanted> {
    use ward_api::dataplane::SERVICE_TAG;
    let dp = config.dataplane_spec();
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut wanted = match &dp.networking.transparent_proxying {
        Some(tp) => {
            let mut wanted = Vec::new();
            if let Some(port) = tp.redirect_port_inbound {
                wanted.push(Wanted::RedirectInbound(SocketAddr::new(ANY_V6, port.0)));
            }
            if let Some(port) = tp.redirect_port_outbound {
                wanted.push(Wanted::RedirectOutbound(SocketAddr::new(ANY_V6, port.0)));
            }
            wanted.push(Wanted::Dns(SocketAddr::new(loopback, ward_net::redirect::DNS_PORT)));
            wanted
        }
        None => config.inbounds.iter().cloned().map(Wanted::Inbound).collect(),
    };
    // An outbound names a service by tags, or by backendRef (by name or labels) a MeshService's
    // port or a MeshExternalService; one by a backendRef Ward cannot resolve is not served, as
    // the warning at apply says (or, by labels, while no resource has them).
    wanted.extend(dp.networking.outbound.iter().enumerate().filter_map(|(i, o)| {
        let service = match &o.backend_ref {
            None => o.tags.get(SERVICE_TAG).cloned().unwrap_or_default(),
            // By labels: the destination the control plane resolved, if any.
            Some(b) if b.name.is_none() => config.outbound_destinations.get(&i)?.clone(),
            Some(b) if b.kind == "MeshService" => {
                ward_api::mesh_service::destination(b.name.as_deref()?, u16::try_from(b.port?).ok()?)
            }
            Some(b) if b.kind == "MeshExternalService" => {
                ward_api::mesh_external_service::destination(b.name.as_deref()?)
            }
            Some(_) => return None,
        };
        let ip = o.address.as_deref().and_then(|a| a.parse().ok()).unwrap_or(loopback);
        Some(Wanted::Outbound(Arc::new(crate::outbound::OutboundSpec {
            listen: SocketAddr::new(ip, o.port.0),
            service,
        })))
    }));
    wanted.extend(config.prometheus.clone().map(Wanted::Metrics));
    wanted
}

/// Every address, IPv6 and (as mapped addresses) IPv4.
const ANY_V6: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// A listening TCP socket; `[::]` falls back to `0.0.0.0` on a host without IPv6.
fn bind_tcp(address: SocketAddr) -> std::io::Result<TcpListener> {
    let bound = std::net::TcpListener::bind(address).or_else(|e| match address.ip() {
        ANY_V6 => std::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), address.port())),
        _ => Err(e),
    })?;
    bound.set_nonblocking(true)?;
    TcpListener::from_std(bound)
}

/// Opens the sockets of `w` and serves them until `token` is cancelled; the task ends (and
/// the sockets close) once it is.
async fn start(proxy: &Arc<Proxy>, w: &Wanted, token: CancellationToken) -> std::io::Result<JoinHandle<()>> {
    let proxy = proxy.clone();
    Ok(match w {
        Wanted::Inbound(spec) => {
            tokio::spawn(crate::inbound::serve(proxy, bind_tcp(spec.listen)?, spec.clone(), token))
        }
        Wanted::Outbound(spec) => {
            tokio::spawn(crate::outbound::serve(proxy, bind_tcp(spec.listen)?, spec.clone(), token))
        }
        Wanted::RedirectInbound(address) => {
            tokio::spawn(crate::transparent::serve_inbound(proxy, bind_tcp(*address)?, token))
        }
        Wanted::RedirectOutbound(address) => {
            tokio::spawn(crate::transparent::serve_outbound(proxy, bind_tcp(*address)?, token))
        }
        Wanted::Dns(address) => {
            let udp = tokio::net::UdpSocket::bind(address).await?;
            tokio::spawn(crate::dns::serve(proxy, udp, bind_tcp(*address)?, token))
        }
        Wanted::Metrics(spec) => {
            if let Some(reason) = crate::metrics_endpoint::unservable(&proxy, spec) {
                return Err(std::io::Error::other(reason));
            }
            tokio::spawn(crate::metrics_endpoint::serve(proxy, bind_tcp(spec.listen)?, spec.clone(), token))
        }
    })
}

/// Keeps the running listeners equal to those the configuration in force asks for. A
/// listener whose settings change is closed before its replacement opens on the same
/// address; one that cannot open is tried again every [`RETRY`] until it does.
pub async fn reconcile(proxy: Arc<Proxy>, stop: CancellationToken) {
    let mut running: Vec<(Wanted, CancellationToken, JoinHandle<()>)> = Vec::new();
    let mut changes = proxy.state().changes();
    loop {
        let mut failed = false;
        // Listen only once the proxy can serve: with a configuration and, under mTLS, a certificate.
        if let Some(config) = proxy.state().config().filter(|_| proxy.state().not_ready().is_none()) {
            let wanted = wanted(&config);
            let (kept, removed): (Vec<_>, Vec<_>) = running.drain(..).partition(|(w, _, _)| wanted.contains(w));
            running = kept;
            for (w, token, task) in removed {
                tracing::info!(address = %w.address(), "listener removed");
                token.cancel();
                // Its socket is closed once its task ends, and only then can a successor bind.
                let _ = tokio::time::timeout(RETRY, task).await;
            }
            for w in wanted {
                if running.iter().any(|(r, _, _)| *r == w) {
                    continue;
                }
                let token = stop.child_token();
                match start(&proxy, &w, token.clone()).await {
                    Ok(task) => {
                        proxy.listener_errors.lock().expect("listener errors lock").remove(&w.address());
                        tracing::info!(address = %w.address(), "listening");
                        running.push((w, token, task));
                    }
                    Err(e) => {
                        failed = true;
                        let mut errors = proxy.listener_errors.lock().expect("listener errors lock");
                        // Said once at error level; the retries every second repeat it quietly.
                        if errors.insert(w.address(), e.to_string()).as_deref() == Some(&e.to_string()) {
                            tracing::debug!(address = %w.address(), error = %e, "still cannot listen");
                        } else {
                            tracing::error!(address = %w.address(), error = %e, retry_every = ?RETRY, "cannot listen");
                        }
                    }
                }
            }
            proxy.listening.store(true, std::sync::atomic::Ordering::Release);
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RETRY), if failed => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// How long the reconciler waits for a closed listener's socket, and between attempts to
/// open one that failed.
const RETRY: std::time::Duration = std::time::Duration::from_secs(1);
