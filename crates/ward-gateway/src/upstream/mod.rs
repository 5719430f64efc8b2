//! Upstreams: where a service's requests go, and the one place that calls them: pick a
//! target (`balancer`), connect (`connect`), send within the timeouts (`watchdog`), report
//! (`health`) and retry (`call`).
//!
//! A service's upstream is one of a small set of kinds: a plain host (the service's
//! `url` or `host`), an `upstreams` entity whose targets a balancer chooses among, or a
//! mesh service (`host: <name>.mesh`), reached over mutual TLS with the gateway's own mesh
//! identity and subject to the permissions of that service's proxies.

pub(crate) mod balancer;
pub(crate) mod call;
pub(crate) mod connect;
pub(crate) mod health;
mod watchdog;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{Entity, schema};
use crate::error::ConfigErrors;
use crate::reply::{Body, Reply};
use crate::tls::CaStore;
use balancer::Balancer;
use connect::{ConnectError, Connector, client_tls, connector};

/// How long a service waits for its upstream (Kong's timeouts, in milliseconds in the file).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    pub write: Duration,
    pub read: Duration,
}

/// Where a service's requests go.
pub(crate) enum Upstream {
    /// One host and port, resolved by DNS when connecting.
    Host { host: String, port: u16 },
    /// An `upstreams` entity: a balancer over targets, with health checks.
    Balanced(Arc<Balancer>),
    /// A service of the mesh the gateway joined.
    Mesh { service: String, host: String, member: Arc<ward_proxy::member::Member> },
}

impl std::fmt::Display for Upstream {
    /// What the logs call it (never what a client is told).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Host { host, port } => write!(f, "upstream {host}:{port}"),
            Upstream::Balanced(b) => write!(f, "upstream '{}'", b.name),
            Upstream::Mesh { service, .. } => write!(f, "mesh service '{service}'"),
        }
    }
}

/// A compiled service.
pub(crate) struct Service {
    pub id: String,
    pub name: Option<String>,
    pub https: bool,
    /// The service's path, prepended to what the route forwards.
    pub path: Option<String>,
    pub upstream: Upstream,
    pub retries: u32,
    pub timeouts: Timeouts,
    client: Client<Connector, Body>,
}

/// The target a request is sent to.
pub(crate) struct Picked {
    pub host: String,
    pub port: u16,
    /// The balancer's target index, for health reports and retries.
    pub target: Option<usize>,
    /// Counts the request as in flight (least-connections) until dropped.
    pub in_flight: Option<balancer::InFlight>,
}

/// Why a request could not be forwarded, each with Kong's status and message.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("no target is healthy")]
    NoHealthyTarget,
    #[error("name resolution failed")]
    NameResolution,
    #[error("connecting failed: {0}")]
    Connect(String),
    #[error("connecting timed out")]
    ConnectTimeout,
    #[error("the upstream did not take the request in time")]
    WriteTimeout,
    #[error("the upstream did not answer in time")]
    ReadTimeout,
    #[error("invalid response: {0}")]
    BadResponse(String),
}

impl UpstreamError {
    /// What the client gets.
    pub fn reply(&self) -> Reply {
        match self {
            UpstreamError::NoHealthyTarget => {
                Reply::error(StatusCode::SERVICE_UNAVAILABLE, "failure to get a peer from the ring-balancer")
            }
            UpstreamError::NameResolution => Reply::error(StatusCode::SERVICE_UNAVAILABLE, "name resolution failed"),
            UpstreamError::Connect(_) | UpstreamError::BadResponse(_) => Reply::status(StatusCode::BAD_GATEWAY),
            UpstreamError::ConnectTimeout | UpstreamError::WriteTimeout | UpstreamError::ReadTimeout => {
                Reply::status(StatusCode::GATEWAY_TIMEOUT)
            }
        }
    }

    /// Whether nothing reached the upstream, so another target may be tried.
    pub fn before_sending(&self) -> bool {
        matches!(self, UpstreamError::NameResolution | UpstreamError::Connect(_) | UpstreamError::ConnectTimeout)
    }
}

/// The port an authority (`host:port`, `[v6]:port`) spells out: none when it has none, an
/// error when it is not 1 to 65535 (which the URI parser lets through as "no port").
fn written_port(authority: &str) -> Result<Option<u16>, ()> {
    let host_and_port = authority.rsplit_once('@').map_or(authority, |(_, rest)| rest);
    let after_host = host_and_port.rsplit_once(']').map_or(host_and_port, |(_, rest)| rest);
    match after_host.rsplit_once(':') {
        None => Ok(None),
        Some((_, port)) => port.parse::<u16>().ok().filter(|p| *p > 0).map(Some).ok_or(()),
    }
}

/// Whether `host` names a host and nothing else (no port, user, path): a name or an IPv4
/// address, or an IPv6 address with or without brackets.
fn is_host(host: &str) -> bool {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if bare.parse::<std::net::Ipv6Addr>().is_ok() {
        return true;
    }
    host.parse::<Authority>().is_ok_and(|a| a.host() == host && a.port().is_none())
}

/// Largest timeout Kong accepts (ms).
const MAX_TIMEOUT_MS: u64 = 2_147_483_646;

impl Service {
    /// Compiles a service entity; `balancers` are the upstreams by name, `mesh` the mesh the
    /// gateway joined.
    pub fn compile(
        e: &Entity<schema::Service>,
        balancers: &HashMap<String, Arc<Balancer>>,
        ca: &CaStore,
        mesh: Option<&Arc<ward_proxy::member::Member>>,
        errors: &mut ConfigErrors,
    ) -> Option<Service> {
        let s = &e.item;
        let at = |field: &str| format!("{}.{field}", e.path);
        let before = errors.0.len();
        // `url` is Kong's shorthand for all four parts: what it has replaces what is written
        // beside it, and what it lacks is the default (no path; port 80 or 443), never the
        // written value, which is therefore not checked either.
        let (protocol, host, port, path) = match &s.url {
            Some(url) => match url.parse::<Uri>() {
                Ok(uri) if uri.scheme().is_some() && uri.host().is_some() => {
                    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
                    if authority.contains('@') {
                        errors.add(at("url"), "must not carry a user name or password");
                    }
                    let port = match written_port(authority) {
                        Ok(port) => port.map(u32::from),
                        Err(()) => {
                            errors.add(at("url"), "the port must be between 1 and 65535");
                            None
                        }
                    };
                    (
                        uri.scheme_str().unwrap_or_default().to_string(),
                        Some(uri.host().unwrap_or_default().to_string()),
                        port,
                        uri.path_and_query().map(|p| p.path().to_string()).filter(|p| p != "/" || url.ends_with('/')),
                    )
                }
                _ => {
                    errors.add(at("url"), format!("'{url}' is not an absolute URL"));
                    return None;
                }
            },
            None => (s.protocol.clone().unwrap_or_else(|| "http".into()), s.host.clone(), s.port, s.path.clone()),
        };
        let https = match protocol.as_str() {
            "http" => false,
            "https" => true,
            other => {
                errors.add(at("protocol"), format!("'{other}' is not supported (http, https)"));
                false
            }
        };
        let Some(host) = host.filter(|h| !h.is_empty()) else {
            errors.add(at("host"), "is required");
            return None;
        };
        if !is_host(&host) {
            errors.add(at("host"), format!("'{host}' is not a host name or IP address"));
        }
        let mesh_service = host.strip_suffix(".mesh").map(str::to_string);
        match (&mesh_service, mesh) {
            (Some(_), None) => errors.add(
                at("host"),
                format!("'{host}': a mesh service; the gateway must join the mesh (ward gateway run --mesh MESH ...)"),
            ),
            (Some(_), Some(_)) if https => {
                errors.add(at("protocol"), "a mesh service is reached over mTLS by the mesh: use http")
            }
            _ => {}
        }
        let port = match port {
            None => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(p) if (1..=65535).contains(&p) => p as u16,
            Some(_) => {
                errors.add(at("port"), "must be between 1 and 65535");
                0
            }
        };
        if let Some(p) = &path
            && !(p.starts_with('/') && p.parse::<PathAndQuery>().is_ok_and(|pq| pq.query().is_none()))
        {
            errors.add(at("path"), "must be a path starting with / (URI characters only, no query)");
        }
        let mut timeout = |field: &str, ms: u64| {
            if !(1..=MAX_TIMEOUT_MS).contains(&ms) {
                errors.add(at(field), format!("must be between 1 and {MAX_TIMEOUT_MS} (milliseconds)"));
            }
            Duration::from_millis(ms)
        };
        let timeouts = Timeouts {
            connect: timeout("connect_timeout", s.connect_timeout),
            write: timeout("write_timeout", s.write_timeout),
            read: timeout("read_timeout", s.read_timeout),
        };
        if s.retries > 32_767 {
            errors.add(at("retries"), "must be between 0 and 32767");
        }
        let roots = if s.tls_verify == Some(true) {
            if s.ca_certificates.is_empty() {
                errors.add(at("tls_verify"), "needs ca_certificates: Ward does not read the system's trust store");
            }
            let mut roots = rustls::RootCertStore::empty();
            for (i, id) in s.ca_certificates.iter().enumerate() {
                match ca.get(id) {
                    Some(anchor) => roots.roots.push(anchor.clone()),
                    None => {
                        errors.add(at(&format!("ca_certificates[{i}]")), format!("no ca_certificate has the id '{id}'"))
                    }
                }
            }
            Some(roots)
        } else {
            None
        };
        if errors.0.len() > before {
            return None;
        }
        let upstream = match (mesh_service, mesh, balancers.get(&host)) {
            (Some(service), Some(member), _) => Upstream::Mesh { service, host, member: member.clone() },
            (_, _, Some(b)) => Upstream::Balanced(b.clone()),
            _ => Upstream::Host { host, port },
        };
        let tls = https.then(|| client_tls(roots));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector(tls, timeouts.connect));
        Some(Service {
            id: e.id.clone(),
            name: s.name.clone(),
            https,
            path,
            upstream,
            retries: s.retries,
            timeouts,
            client,
        })
    }

    /// Chooses where the next attempt goes, avoiding targets already `tried` when possible.
    pub fn pick(&self, hash: Option<u64>, tried: &[usize]) -> Result<Picked, UpstreamError> {
        match &self.upstream {
            Upstream::Host { host, port } => {
                Ok(Picked { host: host.clone(), port: *port, target: None, in_flight: None })
            }
            Upstream::Balanced(b) => b.pick(hash, tried).ok_or(UpstreamError::NoHealthyTarget),
            Upstream::Mesh { host, .. } => Ok(Picked { host: host.clone(), port: 80, target: None, in_flight: None }),
        }
    }

    /// The Host header the upstream gets when the route does not preserve the client's.
    pub fn host_header(&self, picked: &Picked) -> String {
        let default_port = if self.https { 443 } else { 80 };
        if let Upstream::Balanced(b) = &self.upstream
            && let Some(h) = &b.host_header
        {
            return h.clone();
        }
        if picked.port == default_port { picked.host.clone() } else { format!("{}:{}", picked.host, picked.port) }
    }

    /// Sends `request` (whose URI holds only the path and query) to `picked`.
    pub async fn send(&self, picked: &Picked, mut request: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        if let Upstream::Mesh { service, member, .. } = &self.upstream {
            return member.send(service, request, Default::default()).await.map(|(r, _)| r).map_err(|e| match e {
                ward_proxy::member::SendError::NoEndpoint(_) => UpstreamError::NoHealthyTarget,
                other => UpstreamError::Connect(other.to_string()),
            });
        }
        let scheme = if self.https { "https" } else { "http" };
        let host = if picked.host.contains(':') { format!("[{}]", picked.host) } else { picked.host.clone() };
        let path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let uri = format!("{scheme}://{host}:{}{path}", picked.port)
            .parse::<Uri>()
            .map_err(|e| UpstreamError::Connect(format!("invalid target address: {e}")))?;
        *request.uri_mut() = uri;
        self.client.request(request).await.map_err(|e| classify(&e))
    }

    /// Tells the balancer how a target did (passive health checks).
    pub fn report(&self, picked: &Picked, observation: health::Observation) {
        if let (Upstream::Balanced(b), Some(target)) = (&self.upstream, picked.target) {
            b.report_passive(target, observation);
        }
    }
}

/// Kong's view of a client error: before or after the request reached the upstream.
fn classify(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            return match c {
                ConnectError::NameResolution(_) => UpstreamError::NameResolution,
                ConnectError::Timeout => UpstreamError::ConnectTimeout,
                other => UpstreamError::Connect(other.to_string()),
            };
        }
        source = s.source();
    }
    if e.is_connect() { UpstreamError::Connect(e.to_string()) } else { UpstreamError::BadResponse(e.to_string()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_hosts_as_written() {
        let ports: &[(&str, Result<Option<u16>, ()>)] = &[
            ("h", Ok(None)),
            ("h:9000", Ok(Some(9000))),
            ("[::1]", Ok(None)),
            ("[::1]:81", Ok(Some(81))),
            ("u:p@h", Ok(None)),
            ("u:p@h:82", Ok(Some(82))),
            ("h:99999", Err(())),
            ("h:0", Err(())),
            ("h:", Err(())),
        ];
        for (authority, want) in ports {
            assert_eq!(written_port(authority), *want, "{authority}");
        }
        let hosts = [
            ("items.internal", true),
            ("127.0.0.1", true),
            ("::1", true),
            ("[::1]", true),
            ("pool_1", true),
            ("a@evil.test", false),
            ("a b", false),
            ("h:80", false),
            ("h/x", false),
        ];
        for (host, want) in hosts {
            assert_eq!(is_host(host), want, "{host}");
        }
    }
}
