//! The transparent proxy's DNS server on loopback (UDP and TCP): `<service>.mesh` resolves to
//! the service's virtual IP, so applications keep calling services by name; every other name is
//! forwarded as it is to the first resolver `/etc/resolv.conf` names.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{RData, Record, RecordType, rdata::A},
    serialize::binary::{BinDecodable, BinEncodable},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
};
use tokio_util::sync::CancellationToken;

use crate::{Proxy, config::Config};

/// The domain mesh services are named under.
pub const MESH_DOMAIN: &str = "mesh";

/// Time to live of the answers for mesh names: short, as a service's address can change.
const MESH_TTL: u32 = 30;

/// How long a forwarded query may wait for the upstream resolver.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the host's own resolver configuration lives.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Answers queries on `udp` and `tcp` until `stop`.
pub async fn serve(proxy: Arc<Proxy>, udp: UdpSocket, tcp: TcpListener, stop: CancellationToken) {
    let udp = Arc::new(udp);
    let mut buffer = vec![0u8; 4096];
    loop {
        tokio::select! {
            received = udp.recv_from(&mut buffer) => {
                let Ok((length, client)) = received else { continue };
                let (proxy, udp, query) = (proxy.clone(), udp.clone(), buffer[..length].to_vec());
                tokio::spawn(async move {
                    if let Some(reply) = answer(&proxy, &query, Transport::Udp).await {
                        let _ = udp.send_to(&reply, client).await;
                    }
                });
            }
            accepted = tcp.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_tcp(proxy.clone(), stream));
                }
            }
            _ = stop.cancelled() => return,
        }
    }
}

/// How a query reached the server, hence how it is forwarded.
#[derive(Debug, Clone, Copy)]
enum Transport {
    Udp,
    Tcp,
}

/// Length-prefixed queries on one TCP connection, until it closes or idles.
async fn serve_tcp(proxy: Arc<Proxy>, mut stream: TcpStream) {
    while let Ok(Some(query)) =
        tokio::time::timeout(UPSTREAM_TIMEOUT, read_framed(&mut stream)).await.unwrap_or(Ok(None))
    {
        let Some(reply) = answer(&proxy, &query, Transport::Tcp).await else { return };
        if write_framed(&mut stream, &reply).await.is_err() {
            return;
        }
    }
}

async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let length = match stream.read_u16().await {
        Ok(length) => usize::from(length),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut message = vec![0u8; length];
    stream.read_exact(&mut message).await?;
    Ok(Some(message))
}

async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let length = u16::try_from(message.len()).map_err(|_| std::io::Error::other("DNS message too long"))?;
    stream.write_all(&[&length.to_be_bytes()[..], message].concat()).await
}

/// The reply to one query: from the mesh's services, or from the upstream resolver; `None` for
/// what is not a DNS query at all.
async fn answer(proxy: &Proxy, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let request = Message::from_bytes(query).ok()?;
    if request.message_type() != MessageType::Query {
        return None;
    }
    let config = proxy.state().config();
    if let Some(reply) = config.as_deref().and_then(|c| answer_mesh_name(c, &request)) {
        return reply.to_bytes().ok();
    }
    match forward(query, transport, upstream_resolver()).await {
        Ok(reply) => Some(reply),
        Err(e) => {
            tracing::debug!(error = %e, "DNS query not forwarded");
            Message::error_msg(request.id(), request.op_code(), ResponseCode::ServFail).to_bytes().ok()
        }
    }
}

/// The answer for a query about `<service>.mesh`, a MeshService's `<name>.svc.mesh.local` or a
/// MeshExternalService's `<name>.extsvc.mesh.local`; `None` for other names.
pub fn answer_mesh_name(config: &Config, request: &Message) -> Option<Message> {
    let query = request.queries().first()?;
    let name = query.name().to_lowercase().to_ascii();
    let name = name.trim_end_matches('.');
    let virtual_ip = match config.virtual_ip_by_hostname.get(name) {
        Some(ip) => Some(*ip),
        None if [ward_api::mesh_service::HOSTNAME_SUFFIX, ward_api::mesh_external_service::HOSTNAME_SUFFIX]
            .iter()
            .any(|suffix| name.strip_suffix(suffix).is_some_and(|n| n.ends_with('.'))) =>
        {
            None
        }
        None => {
            let service = name.strip_suffix(MESH_DOMAIN)?.strip_suffix('.')?;
            config.services.get(service).and_then(|s| s.virtual_ip)
        }
    };
    let mut reply = Message::new();
    reply
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_authoritative(true)
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .add_query(query.clone());
    match virtual_ip {
        Some(IpAddr::V4(ip)) => {
            if query.query_type() == RecordType::A {
                reply.add_answer(Record::from_rdata(query.name().clone(), MESH_TTL, RData::A(A(ip))));
            }
        }
        // A name of the mesh domain that no service has (yet).
        _ => {
            reply.set_response_code(ResponseCode::NXDomain);
        }
    }
    Some(reply)
}

/// Sends `query` to the host's resolver the way it came in, and returns its reply.
async fn forward(
    query: &[u8],
    transport: Transport,
    upstream: std::io::Result<SocketAddr>,
) -> std::io::Result<Vec<u8>> {
    let upstream = upstream?;
    tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        match transport {
            Transport::Udp => {
                let any: IpAddr = if upstream.is_ipv4() { [0, 0, 0, 0].into() } else { [0u16; 8].into() };
                let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
                socket.connect(upstream).await?;
                socket.send(query).await?;
                let mut reply = vec![0u8; 65_535];
                loop {
                    let length = socket.recv(&mut reply).await?;
                    // Only the reply to this query (same ID) counts; anything else is dropped.
                    if length >= 2 && reply[..2] == query[..2] {
                        reply.truncate(length);
                        return Ok(reply);
                    }
                }
            }
            Transport::Tcp => {
                let mut stream = TcpStream::connect(upstream).await?;
                write_framed(&mut stream, query).await?;
                read_framed(&mut stream).await?.ok_or_else(|| std::io::Error::other("upstream closed the connection"))
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{upstream} did not answer")))?
}

/// The first `nameserver` of /etc/resolv.conf, read each time so that changes apply.
fn upstream_resolver() -> std::io::Result<SocketAddr> {
    let text = std::fs::read_to_string(RESOLV_CONF)?;
    first_nameserver(&text)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{RESOLV_CONF} names no nameserver")))
}

/// The first `nameserver` line's address, port 53.
fn first_nameserver(resolv_conf: &str) -> Option<SocketAddr> {
    resolv_conf
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()?.parse::<IpAddr>().ok()).flatten()
        })
        .map(|ip| SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::Name;
    use ward_proto::discovery::{ProxyConfig, Service};

    use super::*;

    #[test]
    fn service_names_and_mesh_service_hostnames_resolve_to_their_virtual_ips() {
        let dataplane = serde_json::json!({"type": "Dataplane", "mesh": "shop", "name": "web-1", "networking": {
            "address": "10.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}]}});
        let items = Service { name: "items".into(), virtual_ip: "240.0.0.2".into(), ..Default::default() };
        let db = Service {
            name: "meshservice/db:5432".into(),
            virtual_ip: "240.0.0.3".into(),
            virtual_port: 5432,
            hostnames: vec!["db.svc.mesh.local".into()],
            ..Default::default()
        };
        let proto = ProxyConfig {
            mesh: "shop".into(),
            dataplane_json: dataplane.to_string(),
            services: vec![items, db],
            external_services: vec![ward_proto::discovery::ExternalService {
                name: "pay".into(),
                port: 443,
                virtual_ip: "240.0.0.4".into(),
                hostnames: vec!["pay.extsvc.mesh.local".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let config = Config::from_proto(&proto).unwrap();
        let ask = |name: &str| {
            let mut request = Message::new();
            request.add_query(hickory_proto::op::Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
            answer_mesh_name(&config, &request).map(|reply| {
                let ips: Vec<String> = reply.answers().iter().map(|a| a.data().to_string()).collect();
                (reply.response_code(), ips)
            })
        };
        let found = |ip: &str| Some((ResponseCode::NoError, vec![ip.to_string()]));
        assert_eq!(ask("items.mesh."), found("240.0.0.2"));
        assert_eq!(ask("db.svc.mesh.local."), found("240.0.0.3"));
        assert_eq!(ask("DB.Svc.Mesh.Local"), found("240.0.0.3"), "names are case-insensitive");
        assert_eq!(ask("other.svc.mesh.local."), Some((ResponseCode::NXDomain, vec![])), "no such MeshService");
        assert_eq!(ask("pay.extsvc.mesh.local."), found("240.0.0.4"), "a MeshExternalService");
        assert_eq!(ask("other.extsvc.mesh.local."), Some((ResponseCode::NXDomain, vec![])));
        assert_eq!(ask("nothing.mesh."), Some((ResponseCode::NXDomain, vec![])));
        assert_eq!(ask("example.com."), None, "forwarded");
    }

    /// A resolver on loopback that answers one UDP and one TCP query with `reply` (its ID
    /// taken from the query), after a stray datagram with another ID.
    async fn fake_upstream(reply: &'static [u8]) -> SocketAddr {
        // One port for both transports, as a resolver has: retry while the other is taken.
        let (udp, tcp, address) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let address = udp.local_addr().unwrap();
            if let Ok(tcp) = TcpListener::bind(address).await {
                break (udp, tcp, address);
            }
        };
        tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            let (_, client) = udp.recv_from(&mut buffer).await.unwrap();
            udp.send_to(&[0xff, 0xff, 0], client).await.unwrap();
            udp.send_to(&[&buffer[..2], reply].concat(), client).await.unwrap();
            let (mut stream, _) = tcp.accept().await.unwrap();
            let query = read_framed(&mut stream).await.unwrap().unwrap();
            write_framed(&mut stream, &[&query[..2], reply].concat()).await.unwrap();
        });
        address
    }

    #[tokio::test]
    async fn other_names_are_forwarded_over_the_transport_they_came_by() {
        let upstream = fake_upstream(b"answer").await;
        let udp = forward(&[0x12, 0x34, 1], Transport::Udp, Ok(upstream)).await.unwrap();
        assert_eq!(udp, b"\x12\x34answer", "the reply with the query's ID, not the stray one");
        let tcp = forward(&[0x56, 0x78, 1], Transport::Tcp, Ok(upstream)).await.unwrap();
        assert_eq!(tcp, b"\x56\x78answer");
    }

    #[test]
    fn the_first_usable_nameserver_is_the_upstream() {
        let text = "# comment\nsearch example\nnameserver 10.1.2.3\nnameserver 10.9.9.9\n";
        assert_eq!(first_nameserver(text), Some("10.1.2.3:53".parse().unwrap()));
        assert_eq!(first_nameserver("nameserver fd00::1\n"), Some("[fd00::1]:53".parse().unwrap()));
        assert_eq!(first_nameserver("options ndots:5\n"), None);
    }
}
