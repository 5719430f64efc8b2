//! The transparent proxy's two listeners, which the nat rules of `ward install transparent-proxy`
//! send traffic to. Each connection's original destination decides where it goes: on the
//! inbound side its port selects the Dataplane's inbound; on the outbound side its address names
//! a mesh service (by virtual IP, or as the address of one of the service's instances), and any
//! other destination is reached directly only when the mesh allows passthrough.

use std::{net::SocketAddr, sync::Arc};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::{Proxy, config::Config, forward, inbound, metrics::OUTBOUND, outbound};

/// Where a redirected outbound connection goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Destination {
    /// To a mesh service, over mTLS.
    Service(String),
    /// Straight to the original destination (passthrough).
    Direct(SocketAddr),
    /// Nowhere: the connection is closed.
    Refused(&'static str),
}

/// Maps the original destination of an outbound connection to where it goes; `listen` is the
/// redirect listener's own address, which a connection that was not redirected still names.
pub fn outbound_destination(config: &Config, original: SocketAddr, listen: SocketAddr) -> Destination {
    let ip = original.ip().to_canonical();
    let service = config
        .service_by_virtual_ip
        .get(&ip)
        .or_else(|| config.service_by_address.get(&SocketAddr::new(ip, original.port())));
    if let Some(service) = service {
        return Destination::Service(service.clone());
    }
    if original.port() == listen.port() && (ip.is_loopback() || ip.is_unspecified() || listen.ip() == ip) {
        return Destination::Refused("connected to the redirect listener itself");
    }
    if config.passthrough {
        Destination::Direct(SocketAddr::new(ip, original.port()))
    } else {
        Destination::Refused("not a mesh service, and the mesh does not allow passthrough")
    }
}

/// Accepts redirected inbound connections until `stop`; each goes to the inbound whose `port`
/// it was addressed to.
pub async fn serve_inbound(proxy: Arc<Proxy>, listener: TcpListener, stop: CancellationToken) {
    let shared = proxy.clone();
    ward_http::accept::serve(listener, &shared.limits, &shared.connections, stop, move |tcp, peer| {
        let proxy = proxy.clone();
        async move {
            let Some(port) = original_port(&tcp) else { return };
            let Some(config) = proxy.state().config() else { return };
            let spec = config.inbounds.iter().find(|s| s.listen.port() == port).cloned();
            match spec {
                Some(spec) => inbound::handle(proxy, spec, tcp).await,
                None => tracing::info!(%peer, port, "redirected to a port no inbound declares: connection closed"),
            }
        }
    })
    .await
}

/// Accepts the applications' redirected outbound connections until `stop`.
pub async fn serve_outbound(proxy: Arc<Proxy>, listener: TcpListener, stop: CancellationToken) {
    let Ok(listen) = listener.local_addr() else { return };
    let shared = proxy.clone();
    ward_http::accept::serve(listener, &shared.limits, &shared.connections, stop, move |tcp, peer| {
        let proxy = proxy.clone();
        async move {
            let Ok(original) = ward_net::original_dst(&tcp) else { return };
            let Some(config) = proxy.state().config() else { return };
            match outbound_destination(&config, original, listen) {
                Destination::Service(service) => outbound::handle(proxy, service, tcp).await,
                Destination::Direct(address) => passthrough(&proxy, tcp, address).await,
                Destination::Refused(reason) => tracing::info!(%peer, %original, reason, "outbound connection refused"),
            }
        }
    })
    .await
}

/// Carries a connection to a destination outside the mesh as it is.
async fn passthrough(proxy: &Proxy, tcp: TcpStream, address: SocketAddr) {
    match TcpStream::connect(address).await {
        Ok(upstream) => {
            let _ = upstream.set_nodelay(true);
            forward::copy_tcp(proxy, OUTBOUND, tcp, upstream).await;
        }
        Err(e) => tracing::debug!(%address, error = %e, "passthrough destination unreachable"),
    }
}

fn original_port(tcp: &TcpStream) -> Option<u16> {
    match ward_net::original_dst(tcp) {
        Ok(address) => Some(address.port()),
        Err(e) => {
            tracing::warn!(error = %e, "no original destination (is connection tracking running?)");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use ward_proto::discovery::{Endpoint, ExternalEndpoint, ExternalService, ProxyConfig, Service};

    use super::*;

    fn config(passthrough: bool) -> Config {
        let dataplane = serde_json::json!({"type": "Dataplane", "mesh": "shop", "name": "web-1", "networking": {
            "address": "10.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}],
            "transparentProxying": {"redirectPortInbound": 15006, "redirectPortOutbound": 15001}}});
        let items = Service {
            name: "items".into(),
            virtual_ip: "240.0.0.2".into(),
            endpoints: vec![Endpoint { address: "10.0.0.2".into(), port: 8080, ..Default::default() }],
            ..Default::default()
        };
        let redis = Service {
            name: "meshservice/redis:6379".into(),
            virtual_ip: "240.0.0.3".into(),
            virtual_port: 6379,
            ..Default::default()
        };
        let proto = ProxyConfig {
            mesh: "shop".into(),
            dataplane_json: dataplane.to_string(),
            services: vec![items, redis],
            passthrough,
            external_services: vec![ExternalService {
                name: "pay".into(),
                port: 443,
                virtual_ip: "240.0.0.4".into(),
                endpoints: vec![ExternalEndpoint { address: "203.0.113.7".into(), port: 8443, priority: 0 }],
                ..Default::default()
            }],
            ..Default::default()
        };
        Config::from_proto(&proto).unwrap()
    }

    #[test]
    fn original_destinations_map_to_services_or_passthrough() {
        let listen: SocketAddr = "[::]:15001".parse().unwrap();
        let at = |text: &str| text.parse::<SocketAddr>().unwrap();
        let open = config(true);
        let items = Destination::Service("items".into());
        assert_eq!(outbound_destination(&open, at("240.0.0.2:80"), listen), items, "virtual IP, any port");
        assert_eq!(outbound_destination(&open, at("[::ffff:240.0.0.2]:80"), listen), items, "IPv4-mapped");
        assert_eq!(outbound_destination(&open, at("10.0.0.2:8080"), listen), items, "an instance's address");
        assert_eq!(outbound_destination(&open, at("10.0.0.2:22"), listen), Destination::Direct(at("10.0.0.2:22")));
        assert!(matches!(outbound_destination(&open, at("127.0.0.1:15001"), listen), Destination::Refused(_)));
        let redis = Destination::Service("meshservice/redis:6379".into());
        assert_eq!(outbound_destination(&open, at("240.0.0.3:6379"), listen), redis, "a MeshService's port");
        assert_eq!(
            outbound_destination(&open, at("240.0.0.3:80"), listen),
            Destination::Direct(at("240.0.0.3:80")),
            "a port the MeshService does not offer is no mesh destination"
        );
        let closed = config(false);
        assert_eq!(outbound_destination(&closed, at("240.0.0.2:443"), listen), items);
        assert!(matches!(outbound_destination(&closed, at("192.0.2.9:443"), listen), Destination::Refused(_)));
        let pay = Destination::Service("meshexternalservice/pay".into());
        assert_eq!(outbound_destination(&closed, at("240.0.0.4:443"), listen), pay, "a MeshExternalService's port");
        assert!(
            matches!(outbound_destination(&closed, at("203.0.113.7:8443"), listen), Destination::Refused(_)),
            "its endpoints are reached through it, never directly"
        );
        assert!(matches!(outbound_destination(&closed, at("240.0.0.4:80"), listen), Destination::Refused(_)));
    }
}
