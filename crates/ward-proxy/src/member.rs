//! A mesh member: the state kept from the discovery stream and the way to call the mesh's
//! services over mutual TLS. Every proxy is one; the edge gateway joins a mesh as one too,
//! without listeners of its own.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::{Context, bail};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use ward_api::{Resource, mesh_timeout::Timeouts};

use ward_http::{Body, BoxError, body::boxed};

use crate::{
    balancer::{Balancer, Strategy},
    circuit::{Breaker, Outcome, choosable},
    discovery::{self, DiscoveryOptions},
    health::{self, Health},
    mesh_client::{MeshClient, MeshError},
    state::State,
};

/// Why a call to a mesh service was not carried.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The service has no connected instance.
    #[error("no healthy upstream: service {0} has no connected instance")]
    NoEndpoint(String),
    /// The chosen instance could not be reached, or proved another identity.
    #[error("upstream connect error: {0}")]
    Mesh(#[from] MeshError),
    /// The request's body could not be read to be buffered for retries.
    #[error("the request's body could not be read: {0}")]
    Request(BoxError),
    /// MeshRetry's per-try timeout passed on the last try.
    #[error("upstream per-try timeout")]
    PerTryTimeout,
}

/// How one try to a service is sent.
#[derive(Default, Clone, Copy)]
pub struct Try<'a> {
    /// MeshTimeout's connect timeout and connection age (the defaults for the gateway).
    pub timeouts: Timeouts,
    /// Instances not to choose while there is another (MeshRetry's OmitPreviousHosts).
    pub avoid: &'a [std::net::SocketAddr],
    /// The destination's circuit breaker: ejected instances are left out, outcomes recorded.
    pub breaker: Option<&'a Breaker>,
    /// Tags the instance must have (a MeshHTTPRoute's or MeshTCPRoute's subset backend).
    pub subset: Option<&'a ward_api::dataplane::Tags>,
}

impl SendError {
    /// The instance the failed try went to, when one was chosen.
    pub fn endpoint(&self) -> Option<std::net::SocketAddr> {
        match self {
            SendError::Mesh(MeshError::Connect { endpoint, .. } | MeshError::Http { endpoint, .. }) => Some(*endpoint),
            _ => None,
        }
    }
}

/// A destination's breaker, with the merged conf it was made from.
type KeptBreaker = (Arc<serde_json::Value>, Arc<Breaker>);

/// A destination's probes and what they found, with the settings they run with.
type KeptHealth = (Arc<health::Settings>, Arc<Health>);

/// A member of a mesh.
pub struct Member {
    /// Configuration, certificate, metrics.
    pub state: Arc<State>,
    /// Connections to other members.
    pub mesh: MeshClient,
    balancers: Mutex<HashMap<String, Arc<Balancer>>>,
    /// Circuit breakers by destination, with the conf each was made from: outlier state lives
    /// across configuration changes that leave a destination's MeshCircuitBreaker as it was.
    breakers: Mutex<HashMap<String, KeptBreaker>>,
    /// MeshHealthCheck probes by destination, kept while the destination's settings stay.
    health: Mutex<HashMap<String, KeptHealth>>,
}

impl Member {
    /// A member over `state`.
    pub fn new(state: Arc<State>, allow_tls12: bool) -> Self {
        Member {
            mesh: MeshClient::new(state.clone(), allow_tls12),
            state,
            balancers: Mutex::default(),
            breakers: Mutex::default(),
            health: Mutex::default(),
        }
    }

    /// The balancer of `service`'s endpoints, with the strategy its MeshLoadBalancingStrategy
    /// gives (round robin without one); it keeps its state while the strategy stays the same.
    pub fn balancer(&self, service: &str) -> Arc<Balancer> {
        let config = self.state.config();
        let wanted = config.as_ref().and_then(|c| c.outbound_balancer(service));
        let default = Strategy::default();
        let wanted = wanted.map_or(&default, |s| s.as_ref());
        let mut balancers = self.balancers.lock().expect("balancers lock");
        match balancers.get(service) {
            Some(balancer) if balancer.strategy() == wanted => balancer.clone(),
            _ => {
                let balancer = Arc::new(Balancer::new(wanted.clone()));
                balancers.insert(service.to_string(), balancer.clone());
                balancer
            }
        }
    }

    /// The MeshHealthCheck state of destination `key`, while it has one.
    pub fn health(&self, key: &str) -> Option<Arc<Health>> {
        self.health.lock().expect("health lock").get(key).map(|(_, h)| h.clone())
    }

    /// The instances of `service` a try may go to (health and outlier detection, see
    /// [`choosable`]), and how many it has in all.
    pub fn usable(
        &self,
        service: &str,
        subset: Option<&ward_api::dataplane::Tags>,
        breaker: Option<&Breaker>,
    ) -> (Vec<crate::config::Endpoint>, usize) {
        let all = self.endpoints(service, subset);
        (choosable(&all, breaker, self.health(service).as_deref()), all.len())
    }

    /// The circuit breaker of destination `key` for its merged MeshCircuitBreaker `conf`: the
    /// same one while the conf stays the same. Within one configuration the conf is the same
    /// allocation, so a request compares pointers; the values are compared once per new
    /// configuration, which then takes over the breaker.
    pub fn breaker(&self, key: &str, conf: Option<&Arc<serde_json::Value>>) -> Option<Arc<Breaker>> {
        let mut breakers = self.breakers.lock().expect("breakers lock");
        let Some(conf) = conf else {
            breakers.remove(key);
            return None;
        };
        if let Some((seen, breaker)) = breakers.get_mut(key) {
            if Arc::ptr_eq(seen, conf) {
                return Some(breaker.clone());
            }
            if **seen == **conf {
                *seen = conf.clone();
                return Some(breaker.clone());
            }
        }
        // The control plane's confs were read once already (Config::from_proto).
        let breaker = Arc::new(Breaker::from_conf(conf).ok()?);
        breakers.insert(key.to_string(), (conf.clone(), breaker.clone()));
        Some(breaker)
    }

    /// Sends an HTTP request to one instance of `service` over the shared HTTP/2 connection, as
    /// `how` says; says which instance answered.
    pub async fn send<B>(
        &self,
        service: &str,
        request: Request<B>,
        how: Try<'_>,
    ) -> Result<(Response<Incoming>, std::net::SocketAddr), SendError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut endpoints, total) = self.usable(service, how.subset, how.breaker);
        if endpoints.iter().any(|e| !how.avoid.contains(&e.address)) {
            endpoints.retain(|e| !how.avoid.contains(&e.address));
        }
        let balancer = self.balancer(service);
        let (endpoint, _in_flight) = balancer
            .pick_hashed(&endpoints, balancer.hash(&request))
            .ok_or_else(|| SendError::NoEndpoint(service.to_string()))?;
        let request = ward_http::headers::to_http2_form(request, service).map(boxed);
        let result = self.mesh.send(endpoint, request, &how.timeouts).await;
        if let Some(breaker) = how.breaker {
            let outcome = match &result {
                Ok(response) => Outcome::Answered(response.status().as_u16()),
                Err(_) => Outcome::Unreachable,
            };
            breaker.record(endpoint.address, outcome, total);
        }
        Ok((result?, endpoint.address))
    }

    /// Sends an upgrade request to one instance of `service`, on a connection of its own; also
    /// gives the future that ends the upgraded connection when that instance loses its trust.
    pub async fn send_upgrade(
        &self,
        service: &str,
        request: Request<Body>,
        timeouts: &Timeouts,
        subset: Option<&ward_api::dataplane::Tags>,
    ) -> Result<(Response<Incoming>, impl Future<Output = ()> + Send + 'static), SendError> {
        let (endpoints, _) = self.usable(service, subset, None);
        let balancer = self.balancer(service);
        let (endpoint, _in_flight) = balancer
            .pick_hashed(&endpoints, balancer.hash(&request))
            .ok_or_else(|| SendError::NoEndpoint(service.to_string()))?;
        Ok(self.mesh.send_upgrade(endpoint, request, timeouts.connect).await?)
    }

    fn endpoints(&self, service: &str, subset: Option<&ward_api::dataplane::Tags>) -> Vec<crate::config::Endpoint> {
        self.state.config().and_then(|c| c.services.get(service).map(|s| s.endpoints_in(subset))).unwrap_or_default()
    }
}

/// Keeps a MeshHealthCheck's probes running for each destination that has one, as the
/// configuration changes, until `stop`: new settings restart a destination's probes, and a
/// destination without a policy any more stops being probed.
pub async fn keep_health_checks(member: Arc<Member>, stop: CancellationToken) {
    let mut changes = member.state.changes();
    loop {
        if let Some(config) = member.state.config() {
            let mut kept = member.health.lock().expect("health lock");
            kept.retain(|key, (settings, _)| config.outbound_health_check(key).is_some_and(|s| **s == **settings));
            for (key, settings) in config.outbound_health_checks.iter() {
                if !kept.contains_key(key) {
                    let health = health::start(&member, key, (**settings).clone());
                    kept.insert(key.clone(), (settings.clone(), health));
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            changed = changes.changed() => if changed.is_err() { break },
        }
    }
    member.health.lock().expect("health lock").clear();
}

/// How a member without listeners (the edge gateway) joins a mesh.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// `https://host:port` of the control plane's discovery server.
    pub cp_address: String,
    /// The control plane's CA (PEM file).
    pub ca_cert: PathBuf,
    /// File holding the dataplane token.
    pub token_file: PathBuf,
    /// The Dataplane to register.
    pub dataplane: Resource,
}

/// Joins a mesh: keeps the discovery stream and the certificate up until `stop`.
pub fn join(options: JoinOptions, stop: CancellationToken) -> anyhow::Result<Arc<Member>> {
    let ca_cert_pem = read_ca_cert(&options.ca_cert)?;
    check_token_file(&options.token_file)?;
    let state = State::new();
    let member = Arc::new(Member::new(state.clone(), false));
    tokio::spawn(keep_health_checks(member.clone(), stop.clone()));
    let discovery_options = DiscoveryOptions {
        cp_address: options.cp_address,
        ca_cert_pem,
        token_file: options.token_file,
        dataplane: options.dataplane,
    };
    tokio::spawn({
        let (state, stop) = (state.clone(), stop.clone());
        async move {
            if let Err(e) = discovery::run(state, discovery_options, stop).await {
                tracing::error!(error = %format!("{e:#}"), "cannot join the mesh");
            }
        }
    });
    tokio::spawn(discovery::watch_expiry(state, stop));
    Ok(member)
}

/// The control plane's CA certificate from `path`, checked to be one.
pub fn read_ca_cert(path: &PathBuf) -> anyhow::Result<String> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("--ca-cert {}", path.display()))?;
    ward_pki::CaInfo::from_pem(&pem).with_context(|| format!("--ca-cert {}", path.display()))?;
    Ok(pem)
}

/// Fails unless `path` holds a token.
pub fn check_token_file(path: &PathBuf) -> anyhow::Result<()> {
    match std::fs::read_to_string(path) {
        Ok(token) if !token.trim().is_empty() => Ok(()),
        Ok(_) => bail!("--dataplane-token-file {}: is empty", path.display()),
        Err(e) => bail!("--dataplane-token-file {}: {e}", path.display()),
    }
}
