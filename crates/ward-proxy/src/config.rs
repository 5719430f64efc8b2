//! The proxy's configuration as the control plane sends it, checked and typed once, when it
//! arrives: the Dataplane, the mesh's trust bundle, the permissions and the services.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use ward_api::{
    Resource, ResourceType, Spec,
    dataplane::{Dataplane, Protocol, Tags},
    mesh_fault_injection::{Injected, faults},
    mesh_opa::InForce as OpaInForce,
    mesh_rate_limit::Limits as RateLimits,
    mesh_timeout::Timeouts,
    metrics::PrometheusEndpoint,
    parse,
    rules::DataplaneRules,
};
use ward_pki::{SpiffeId, TrustBundle};
use ward_proto::discovery::{MtlsMode, ProxyConfig};

use crate::{
    authorization::Authorizer,
    balancer::Strategy,
    circuit::Breaker,
    external::External,
    health,
    inbound::InboundSpec,
    metrics_endpoint::EndpointSpec,
    retry::RetryPolicy,
    routes::{HttpTable, Routes, tcp_table},
};

/// How the mesh treats plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Mode {
    /// mTLS off: plaintext, no identity, no authorization.
    Disabled,
    /// Mutual TLS only.
    Strict,
    /// Mutual TLS, and plaintext as an anonymous caller.
    Permissive,
}

/// One instance of a destination service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    /// Where its proxy's inbound listens.
    pub address: SocketAddr,
    /// Its Dataplane's name.
    pub dataplane: String,
    /// The identity its proxy must prove.
    #[serde(serialize_with = "spiffe_id")]
    pub identity: SpiffeId,
}

/// A service this proxy may call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Service {
    /// Its protocol, when its inbounds declare one.
    pub protocol: Option<Protocol>,
    /// Its virtual IP, for the transparent proxy.
    pub virtual_ip: Option<IpAddr>,
    /// The one port of the virtual IP that reaches it (a MeshService's port); `None`: every port.
    pub virtual_port: Option<u16>,
    /// Names the DNS server resolves to its virtual IP, besides `<name>.mesh`.
    pub hostnames: Vec<String>,
    /// Its connected instances.
    pub endpoints: Vec<Endpoint>,
    /// The tags of each instance, by address.
    #[serde(skip)]
    pub tags: HashMap<SocketAddr, Tags>,
}

impl Service {
    /// Its instances that have every tag of `subset` (all of them without one).
    pub fn endpoints_in(&self, subset: Option<&Tags>) -> Vec<Endpoint> {
        let Some(subset) = subset else { return self.endpoints.clone() };
        let has = |e: &&Endpoint| self.tags.get(&e.address).is_some_and(|t| ward_api::dataplane::tags_match(subset, t));
        self.endpoints.iter().filter(has).cloned().collect()
    }
}

/// A configuration the proxy can run with.
#[derive(Debug, serde::Serialize)]
pub struct Config {
    /// The control plane's version of it.
    pub version: u64,
    /// The mesh.
    pub mesh: String,
    /// This proxy's Dataplane, as the control plane stores it.
    #[serde(serialize_with = "resource_json")]
    pub dataplane: Resource,
    /// Its spec.
    #[serde(skip)]
    spec: Dataplane,
    /// mTLS mode.
    pub mode: Mode,
    /// The CAs whose certificates are trusted.
    #[serde(serialize_with = "bundle_pem")]
    pub bundle: TrustBundle,
    /// Lifetime of the certificates the mesh issues.
    pub certificate_lifetime: Duration,
    /// The one identity every certificate of this proxy carries when a MeshIdentity selects its
    /// dataplane; `None`: `spiffe://MESH/SERVICE` per service.
    #[serde(serialize_with = "optional_spiffe_id")]
    pub workload_id: Option<SpiffeId>,
    /// Decides callers of this dataplane.
    pub authorizer: Authorizer,
    /// The tags of callers' dataplanes by certificate serial, when the permissions look at tags.
    pub peer_tags: HashMap<String, Vec<Tags>>,
    /// Serials of certificates whose dataplane token was revoked.
    pub revoked_serials: HashSet<String>,
    /// Destination services by name.
    pub services: HashMap<String, Service>,
    /// Whether unknown destinations may be reached directly.
    pub passthrough: bool,
    /// The Dataplane's inbounds, as listeners serve them.
    #[serde(skip)]
    pub inbounds: Vec<Arc<InboundSpec>>,
    /// For the transparent proxy: the service each virtual IP and each instance address
    /// (`address:port`) names.
    #[serde(skip)]
    pub service_by_address: HashMap<SocketAddr, String>,
    /// The service each virtual IP names, whatever the port.
    #[serde(skip)]
    pub service_by_virtual_ip: HashMap<IpAddr, String>,
    /// The virtual IP each hostname of a service (other than `<name>.mesh`) resolves to.
    #[serde(skip)]
    pub virtual_ip_by_hostname: HashMap<String, IpAddr>,
    /// The Prometheus endpoint the mesh has this proxy serve, if any.
    pub prometheus: Option<Arc<EndpointSpec>>,
    /// The MeshExternalServices this proxy may be asked for, by destination key
    /// (`meshexternalservice/NAME`), each allowed or denied.
    #[serde(serialize_with = "external_json")]
    pub external: HashMap<String, Arc<External>>,
    /// The destination key of each outbound (by index) naming its backend by labels.
    pub outbound_destinations: HashMap<usize, String>,
    /// The merged policies of this dataplane, as the control plane computed them.
    pub rules: DataplaneRules,
    /// MeshTimeout at each inbound, by index.
    #[serde(skip)]
    pub inbound_timeouts: Vec<Timeouts>,
    /// MeshTimeout for each destination, by destination key; absent ones have none.
    #[serde(skip)]
    pub outbound_timeouts: HashMap<String, Timeouts>,
    /// MeshRetry for each destination, by destination key; absent ones are tried once.
    #[serde(skip)]
    pub outbound_retries: HashMap<String, Arc<RetryPolicy>>,
    /// MeshCircuitBreaker confs by destination key, each checked to make a breaker.
    #[serde(skip)]
    pub outbound_circuits: HashMap<String, Arc<serde_json::Value>>,
    /// MeshLoadBalancingStrategy for each destination, by destination key; absent: round robin.
    #[serde(skip)]
    pub outbound_balancers: HashMap<String, Arc<Strategy>>,
    /// MeshHealthCheck settings for each destination that has one, by destination key.
    #[serde(skip)]
    pub outbound_health_checks: HashMap<String, Arc<health::Settings>>,
    /// MeshRateLimit at each inbound, by index.
    #[serde(skip)]
    pub inbound_rate_limits: Vec<Option<Arc<RateLimits>>>,
    /// MeshFaultInjection at each inbound, by index (empty: none).
    #[serde(skip)]
    pub inbound_faults: Vec<Arc<[Injected]>>,
    /// MeshHTTPRoute and MeshTCPRoute by destination key.
    #[serde(skip)]
    pub routes: Routes,
    /// MeshOPA at each inbound, by index, compiled once with the configuration.
    #[serde(skip)]
    pub inbound_opa: Vec<Option<Arc<OpaInForce>>>,
    /// Whether a denial names the deciding policy in `x-ward-denied-by` (the mesh's setting).
    pub denied_by_header: bool,
}

/// Why a configuration from the control plane was not used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A resource in it does not parse.
    #[error("{0}")]
    Resource(String),
    /// The workload SPIFFE ID is not one.
    #[error("workload SPIFFE ID: {0}")]
    WorkloadId(String),
    /// The trust bundle is unusable.
    #[error("trust bundle: {0}")]
    Bundle(String),
    /// The Prometheus endpoint does not read.
    #[error("prometheus endpoint: {0}")]
    Prometheus(String),
    /// The merged policies do not read.
    #[error("rules: {0}")]
    Rules(String),
    /// An endpoint address is not an IP address.
    #[error("service {service}: endpoint {address:?} is not an IP address")]
    Endpoint {
        /// The service.
        service: String,
        /// The address.
        address: String,
    },
    /// An endpoint's identity is not a SPIFFE ID.
    #[error("service {service}: endpoint {address:?}: {reason}")]
    Identity {
        /// The service.
        service: String,
        /// The endpoint's address.
        address: String,
        /// Why its identity does not read.
        reason: String,
    },
}

impl Config {
    /// Checks and types what the control plane sent.
    pub fn from_proto(proto: &ProxyConfig) -> Result<Config, ConfigError> {
        let dataplane = read_resource(&proto.dataplane_json, "dataplane")?;
        let Spec::Dataplane(spec) = dataplane.spec.clone() else {
            return Err(ConfigError::Resource(format!("{} is not a Dataplane", dataplane.meta.key())));
        };
        let permissions = proto
            .permissions_json
            .iter()
            .enumerate()
            .map(|(i, json)| read_resource(json, &format!("permission {i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mode = match proto.mtls_mode() {
            MtlsMode::Disabled => Mode::Disabled,
            MtlsMode::Strict => Mode::Strict,
            MtlsMode::Permissive => Mode::Permissive,
        };
        let mut bundle = TrustBundle::new(&proto.mesh).map_err(|e| ConfigError::Bundle(e.to_string()))?;
        for domain in &proto.trust_domains {
            bundle
                .add_domain_pem(&domain.trust_domain, &domain.ca_pem)
                .map_err(|e| ConfigError::Bundle(format!("trust domain {}: {e}", domain.trust_domain)))?;
        }
        let workload_id = match proto.workload_spiffe_id.as_str() {
            "" => None,
            id => Some(id.parse().map_err(|e: ward_pki::SpiffeIdError| ConfigError::WorkloadId(e.to_string()))?),
        };
        if !proto.trust_bundle_pem.is_empty() {
            bundle.add_pem(&proto.trust_bundle_pem).map_err(|e| ConfigError::Bundle(e.to_string()))?;
        }
        let mut services = HashMap::new();
        for s in &proto.services {
            let endpoints = s
                .endpoints
                .iter()
                .map(|e| {
                    let ip: IpAddr = e
                        .address
                        .parse()
                        .map_err(|_| ConfigError::Endpoint { service: s.name.clone(), address: e.address.clone() })?;
                    let identity = match e.spiffe_id.as_str() {
                        "" => SpiffeId::for_service(&proto.mesh, &s.name),
                        id => id.parse(),
                    }
                    .map_err(|reason| ConfigError::Identity {
                        service: s.name.clone(),
                        address: e.address.clone(),
                        reason: reason.to_string(),
                    })?;
                    Ok(Endpoint {
                        address: SocketAddr::new(ip, e.port as u16),
                        dataplane: e.dataplane.clone(),
                        identity,
                    })
                })
                .collect::<Result<_, ConfigError>>()?;
            let tags = s
                .endpoints
                .iter()
                .filter_map(|e| {
                    Some((
                        SocketAddr::new(e.address.parse().ok()?, e.port as u16),
                        e.tags.clone().into_iter().collect(),
                    ))
                })
                .collect();
            let service = Service {
                tags,
                protocol: Protocol::parse(&s.protocol),
                virtual_ip: s.virtual_ip.parse().ok(),
                virtual_port: u16::try_from(s.virtual_port).ok().filter(|p| *p > 0),
                hostnames: s.hostnames.clone(),
                endpoints,
            };
            services.insert(s.name.clone(), service);
        }
        let service_by_virtual_ip = services
            .iter()
            .filter(|(_, s)| s.virtual_port.is_none())
            .filter_map(|(name, s)| Some((s.virtual_ip?, name.clone())))
            .collect();
        let virtual_ip_by_hostname: Vec<(String, IpAddr)> = services
            .values()
            .filter_map(|s| Some((s.virtual_ip?, &s.hostnames)))
            .flat_map(|(ip, names)| names.iter().map(move |n| (n.to_ascii_lowercase(), ip)))
            .collect();
        let prometheus: Option<PrometheusEndpoint> = match proto.prometheus_json.as_str() {
            "" => None,
            json => Some(serde_json::from_str(json).map_err(|e| ConfigError::Prometheus(e.to_string()))?),
        };
        // Under mTLS the endpoint is one more inbound for the permissions, after the Dataplane's.
        let destination = match &prometheus {
            Some(endpoint) => ward_api::metrics::with_endpoint_inbound(&dataplane, endpoint),
            None => dataplane.clone(),
        };
        let prometheus = prometheus.map(|endpoint| {
            let ip = spec.networking.address.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            Arc::new(EndpointSpec {
                listen: SocketAddr::new(ip, endpoint.port),
                endpoint,
                inbound: spec.networking.inbound.len(),
            })
        });
        let external = externals(&proto.external_services);
        let rules: DataplaneRules = match proto.rules_json.as_str() {
            "" => DataplaneRules::default(),
            json => serde_json::from_str(json).map_err(|e| ConfigError::Rules(e.to_string()))?,
        };
        let timeouts = |conf: Option<&serde_json::Value>| conf.map_or(Ok(Timeouts::default()), Timeouts::from_conf);
        let inbound_timeouts = (0..spec.networking.inbound.len())
            .map(|i| timeouts(rules.inbound(i, ResourceType::MeshTimeout)))
            .collect::<Result<_, _>>()
            .map_err(ConfigError::Rules)?;
        let outbound_timeouts = rules
            .outbounds
            .iter()
            .map(|o| {
                Ok((
                    o.destination.key.clone(),
                    timeouts(rules.outbound(&o.destination.key, ResourceType::MeshTimeout))?,
                ))
            })
            .collect::<Result<_, String>>()
            .map_err(ConfigError::Rules)?;
        let mut outbound_circuits = HashMap::new();
        for o in &rules.outbounds {
            let key = &o.destination.key;
            if let Some(conf) = rules.outbound(key, ResourceType::MeshCircuitBreaker) {
                Breaker::from_conf(conf).map_err(ConfigError::Rules)?;
                outbound_circuits.insert(key.clone(), Arc::new(conf.clone()));
            }
        }
        let mut outbound_balancers = HashMap::new();
        let mut outbound_health_checks = HashMap::new();
        for o in &rules.outbounds {
            let key = &o.destination.key;
            if let Some(conf) = rules.outbound(key, ResourceType::MeshLoadBalancingStrategy) {
                outbound_balancers
                    .insert(key.clone(), Arc::new(Strategy::from_conf(conf).map_err(ConfigError::Rules)?));
            }
            if let Some(conf) = rules.outbound(key, ResourceType::MeshHealthCheck) {
                let settings = health::Settings::from_conf(conf).map_err(ConfigError::Rules)?;
                outbound_health_checks.insert(key.clone(), Arc::new(settings));
            }
        }
        let inbound_rate_limits = (0..spec.networking.inbound.len())
            .map(|i| rules.inbound(i, ResourceType::MeshRateLimit).map(RateLimits::from_conf).transpose())
            .map(|l| l.map(|l| l.map(Arc::new)))
            .collect::<Result<_, _>>()
            .map_err(ConfigError::Rules)?;
        let inbound_faults = (0..spec.networking.inbound.len())
            .map(|i| rules.inbound(i, ResourceType::MeshFaultInjection).map_or(Ok(Vec::new()), faults))
            .map(|f| f.map(Arc::from))
            .collect::<Result<_, _>>()
            .map_err(ConfigError::Rules)?;
        let mut routes = Routes::default();
        for o in &rules.outbounds {
            let key = &o.destination.key;
            if let Some(conf) = rules.outbound(key, ResourceType::MeshHTTPRoute) {
                routes.http.insert(key.clone(), Arc::new(HttpTable::from_conf(conf).map_err(ConfigError::Rules)?));
            }
            if let Some(conf) = rules.outbound(key, ResourceType::MeshTCPRoute) {
                let backends = tcp_table(conf).map_err(ConfigError::Rules)?;
                if !backends.is_empty() {
                    routes.tcp.insert(key.clone(), Arc::new(backends));
                }
            }
        }
        let inbound_opa = (0..spec.networking.inbound.len())
            .map(|i| rules.inbound(i, ResourceType::MeshOPA).map(OpaInForce::from_conf).transpose())
            .map(|o| o.map(|o| o.map(Arc::new)))
            .collect::<Result<_, _>>()
            .map_err(ConfigError::Rules)?;
        let mut outbound_retries = HashMap::new();
        for o in &rules.outbounds {
            let key = &o.destination.key;
            let Some(conf) = rules.outbound(key, ResourceType::MeshRetry) else { continue };
            let grpc = services.get(key).is_some_and(|s| s.protocol == Some(Protocol::Grpc));
            if let Some(policy) = RetryPolicy::from_conf(conf, grpc).map_err(ConfigError::Rules)? {
                outbound_retries.insert(key.clone(), Arc::new(policy));
            }
        }
        // Instances by address, a MeshService's ports and a MeshExternalService's port on their
        // virtual IPs.
        let service_by_address = services
            .iter()
            .flat_map(|(name, s)| s.endpoints.iter().map(move |e| (e.address, name.clone())))
            .chain(
                services
                    .iter()
                    .filter_map(|(name, s)| Some((SocketAddr::new(s.virtual_ip?, s.virtual_port?), name.clone()))),
            )
            .chain(external.iter().filter_map(|(key, e)| Some((SocketAddr::new(e.virtual_ip?, e.port), key.clone()))))
            .collect();
        let virtual_ip_by_hostname = virtual_ip_by_hostname
            .into_iter()
            .chain(
                external
                    .values()
                    .filter_map(|e| Some((e.virtual_ip?, &e.hostnames)))
                    .flat_map(|(ip, names)| names.iter().map(move |n| (n.to_ascii_lowercase(), ip))),
            )
            .collect();
        Ok(Config {
            inbounds: inbound_specs(&spec),
            service_by_address,
            service_by_virtual_ip,
            virtual_ip_by_hostname,
            version: proto.version,
            mesh: proto.mesh.clone(),
            authorizer: Authorizer::new(permissions, destination),
            peer_tags: proto
                .peer_certificates
                .iter()
                .map(|p| (p.serial.clone(), p.tags.iter().map(|t| t.tags.clone().into_iter().collect()).collect()))
                .collect(),
            revoked_serials: proto.revoked_serials.iter().cloned().collect(),
            dataplane,
            spec,
            mode,
            bundle,
            certificate_lifetime: Duration::from_secs(proto.certificate_lifetime_seconds),
            workload_id,
            services,
            passthrough: proto.passthrough,
            prometheus,
            external,
            outbound_destinations: proto
                .outbound_destinations
                .iter()
                .map(|o| (o.outbound as usize, o.destination.clone()))
                .collect(),
            rules,
            inbound_timeouts,
            outbound_timeouts,
            outbound_retries,
            outbound_circuits,
            outbound_balancers,
            outbound_health_checks,
            inbound_rate_limits,
            inbound_faults,
            routes,
            inbound_opa,
            denied_by_header: proto.denied_by_header,
        })
    }

    /// The MeshTimeout of inbound `index` (Ward's defaults where none applies).
    pub fn inbound_timeouts(&self, index: usize) -> Timeouts {
        self.inbound_timeouts.get(index).copied().unwrap_or_default()
    }

    /// The MeshTimeout for the destination `key` (Ward's defaults where none applies).
    pub fn outbound_timeouts(&self, key: &str) -> Timeouts {
        self.outbound_timeouts.get(key).copied().unwrap_or_default()
    }

    /// The MeshRateLimit of inbound `index`, if one applies.
    pub fn inbound_rate_limits(&self, index: usize) -> Option<Arc<RateLimits>> {
        self.inbound_rate_limits.get(index).cloned().flatten()
    }

    /// The MeshFaultInjection faults of inbound `index`, in order.
    pub fn inbound_faults(&self, index: usize) -> Arc<[Injected]> {
        self.inbound_faults.get(index).cloned().unwrap_or_else(|| Arc::from(Vec::new()))
    }

    /// The MeshOPA of inbound `index`, if one applies.
    pub fn inbound_opa(&self, index: usize) -> Option<Arc<OpaInForce>> {
        self.inbound_opa.get(index).cloned().flatten()
    }

    /// The MeshRetry for the destination `key`, if one retries anything.
    pub fn outbound_retry(&self, key: &str) -> Option<Arc<RetryPolicy>> {
        self.outbound_retries.get(key).cloned()
    }

    /// The MeshLoadBalancingStrategy for the destination `key`, if one applies.
    pub fn outbound_balancer(&self, key: &str) -> Option<&Arc<Strategy>> {
        self.outbound_balancers.get(key)
    }

    /// The MeshHealthCheck settings for the destination `key`, if one applies.
    pub fn outbound_health_check(&self, key: &str) -> Option<&Arc<health::Settings>> {
        self.outbound_health_checks.get(key)
    }

    /// The MeshCircuitBreaker conf for the destination `key`, if one applies.
    pub fn outbound_circuit(&self, key: &str) -> Option<&Arc<serde_json::Value>> {
        self.outbound_circuits.get(key)
    }

    /// The Dataplane's spec.
    pub fn dataplane_spec(&self) -> &Dataplane {
        &self.spec
    }

    /// The index in `networking.inbound` of the inbound `spec` describes (same listening
    /// address, application, protocol and service), or `None` when this configuration no longer
    /// has it. A connection accepted under an earlier configuration is decided for the inbound
    /// it reached, never for whichever inbound holds that index now.
    pub fn inbound_index(&self, spec: &InboundSpec) -> Option<usize> {
        self.inbounds
            .iter()
            .find(|i| {
                i.listen == spec.listen && i.app == spec.app && i.protocol == spec.protocol && i.service == spec.service
            })
            .map(|i| i.index)
    }
}

/// The inbounds of `dp`: where callers connect, where the application listens.
fn inbound_specs(dp: &Dataplane) -> Vec<Arc<InboundSpec>> {
    let net = &dp.networking;
    net.inbound
        .iter()
        .enumerate()
        .filter(|(_, i)| i.listens())
        .map(|(index, i)| {
            let listen_ip: IpAddr = net.listen_address(i).parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            Arc::new(InboundSpec {
                listen: SocketAddr::new(listen_ip, i.port.0),
                app: i.service_socket(),
                protocol: i.protocol(),
                service: i.service().unwrap_or(dp.service()).to_string(),
                index,
            })
        })
        .collect()
}

/// The MeshExternalServices the control plane sent, by destination key. One whose endpoints or
/// TLS material do not read is kept denied, with the reason, so that connections to it fail
/// closed and say why; one whose address does not read either is left out.
fn externals(protos: &[ward_proto::discovery::ExternalService]) -> HashMap<String, Arc<External>> {
    protos
        .iter()
        .filter_map(|p| {
            let external = External::from_proto(p).or_else(|reason| {
                tracing::warn!(external = %p.name, %reason, "MeshExternalService unusable: connections to it are refused");
                let denied =
                    ward_proto::discovery::ExternalService { denied: reason, endpoints: Vec::new(), tls: None, ..p.clone() };
                External::from_proto(&denied)
            });
            Some((ward_api::mesh_external_service::destination(&p.name), Arc::new(external.ok()?)))
        })
        .collect()
}

fn external_json<S: serde::Serializer>(external: &HashMap<String, Arc<External>>, s: S) -> Result<S::Ok, S::Error> {
    let shown: std::collections::BTreeMap<&String, serde_json::Value> = external
        .iter()
        .map(|(key, e)| {
            (key, serde_json::json!({ "port": e.port, "virtualIp": e.virtual_ip, "tls": e.tls.is_some(), "denied": e.denied }))
        })
        .collect();
    serde::Serialize::serialize(&shown, s)
}

fn read_resource(json: &str, label: &str) -> Result<Resource, ConfigError> {
    let doc = serde_json::from_str(json).map_err(|e| ConfigError::Resource(format!("{label}: not JSON: {e}")))?;
    parse::resource(doc, label).map_err(|e| ConfigError::Resource(e.to_string()))
}

fn resource_json<S: serde::Serializer>(r: &Resource, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&r.to_json(), s)
}

fn spiffe_id<S: serde::Serializer>(id: &SpiffeId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(id.as_str())
}

fn optional_spiffe_id<S: serde::Serializer>(id: &Option<SpiffeId>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(id.as_ref().map_or("", |id| id.as_str()))
}

fn bundle_pem<S: serde::Serializer>(b: &TrustBundle, s: S) -> Result<S::Ok, S::Error> {
    let cas: Vec<_> = b.cas_by_domain().map(|(domain, c)| serde_json::json!({ "trustDomain": domain, "subject": c.subject, "fingerprintSha256": c.fingerprint_sha256, "notAfter": c.not_after })).collect();
    serde::Serialize::serialize(&cas, s)
}

#[cfg(test)]
mod tests {
    use ward_proto::discovery::{ExternalService, ExternalTls};

    use super::*;

    #[test]
    fn an_unusable_mesh_external_service_is_denied_with_its_reason_never_a_panic() {
        let dataplane = serde_json::json!({"type": "Dataplane", "mesh": "shop", "name": "web-1", "networking": {
            "address": "10.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}]}});
        let bad_ca = ExternalService {
            name: "pay".into(),
            port: 443,
            tls: Some(ExternalTls { ca_cert_pem: "not PEM".into(), ..Default::default() }),
            ..Default::default()
        };
        let bad_port = ExternalService { name: "broken".into(), port: 0, ..Default::default() };
        let proto = ProxyConfig {
            mesh: "shop".into(),
            dataplane_json: dataplane.to_string(),
            external_services: vec![bad_ca, bad_port],
            ..Default::default()
        };
        let config = Config::from_proto(&proto).unwrap();
        let pay = &config.external["meshexternalservice/pay"];
        assert!(pay.denied.as_deref().is_some_and(|r| r.contains("tls.ca_cert_pem")), "{:?}", pay.denied);
        assert!(pay.tls.is_none() && pay.endpoints.is_empty());
        assert!(
            !config.external.contains_key("meshexternalservice/broken"),
            "an address that does not read is left out"
        );
    }
}
