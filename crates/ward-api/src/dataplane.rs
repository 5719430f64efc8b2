//! The `Dataplane` resource: one service instance, its inbounds and outbounds.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use serde::{Deserialize, Serialize};

use crate::{
    duration::KumaDuration,
    error::{Causes, Warnings},
    names::check_service,
};

/// Tag naming the service an inbound or outbound belongs to.
pub const SERVICE_TAG: &str = "kuma.io/service";
/// Tag naming the protocol of an inbound.
pub const PROTOCOL_TAG: &str = "kuma.io/protocol";

/// Tags: string keys to string values.
pub type Tags = BTreeMap<String, String>;

string_enum! {
    /// Protocol of an inbound, from its `protocol` field or `kuma.io/protocol` tag.
    pub enum Protocol {
        /// gRPC over HTTP/2.
        Grpc = "grpc",
        /// HTTP/1.1 (and upgrades).
        Http = "http",
        /// HTTP/2.
        Http2 = "http2",
        /// Kafka, which Ward carries as opaque TCP.
        Kafka = "kafka",
        /// Opaque TCP.
        Tcp = "tcp",
    }
}

impl Protocol {
    /// Whether Ward carries this protocol as a byte stream rather than as HTTP requests.
    pub fn is_opaque(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Kafka)
    }
}

/// A TCP port number, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        value
            .as_u64()
            .filter(|p| (1..=65535).contains(p))
            .map(|p| Port(p as u16))
            .ok_or_else(|| serde::de::Error::custom("must be a port number between 1 and 65535"))
    }
}

/// A dataplane: the proxy of one service instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Dataplane {
    /// Addresses and listeners.
    pub networking: DataplaneNetworking,
    /// Adjustments of the mesh's Prometheus endpoint for this dataplane (port, path, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsBackend>,
    /// Kuma's deprecated virtual probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Probes>,
}

/// `networking` of a dataplane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DataplaneNetworking {
    /// Address other proxies reach this one at, and inbounds listen on by default.
    pub address: String,
    /// Address other proxies reach this one at when `address` is not routable to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_address: Option<String>,
    /// Listeners for callers of this service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound: Vec<Inbound>,
    /// Local listeners for the services this one calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<Outbound>,
    /// Ports the iptables redirection sends traffic to, and what it may reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparent_proxying: Option<TransparentProxying>,
    /// Set on a gateway's dataplane: it calls services but serves none through the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Gateway>,
    /// The proxy's admin listener (`/ready`, `/metrics`, `/config`), on 127.0.0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
    /// Kuma's zone ingress and egress listeners, which Ward does not run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
}

string_enum! {
    /// Kinds of gateway dataplane.
    pub enum GatewayType {
        /// A gateway of its own (Ward's edge gateway, or Kong) that joins the mesh to reach services.
        Delegated = "DELEGATED",
        /// Kuma's gateway configured by MeshGateway resources, which Ward does not have.
        Builtin = "BUILTIN",
    }
}

/// `networking.gateway`: the dataplane of an edge gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// `DELEGATED` (default) or `BUILTIN`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<GatewayType>,
    /// Tags; `kuma.io/service` names the gateway's identity.
    #[serde(default)]
    pub tags: Tags,
}

string_enum! {
    /// Whether an inbound takes traffic.
    pub enum InboundState {
        /// Serves traffic (default).
        Ready = "Ready",
        /// Listens, but is not an endpoint for callers.
        NotReady = "NotReady",
        /// Neither listens nor is an endpoint.
        Ignored = "Ignored",
    }
}

/// One inbound listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Inbound {
    /// Port the proxy listens on for mTLS callers.
    pub port: Port,
    /// Port of the application (default: `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_port: Option<Port>,
    /// Address of the application (default 127.0.0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_address: Option<String>,
    /// Address the proxy listens on (default: `networking.address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Tags; `kuma.io/service` names the service and so the identity.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
    /// Readiness set by an outside health checker; `ready: false` takes it out of endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Kuma's active TCP probe of the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_probe: Option<ServiceProbe>,
    /// Ready (default), NotReady or Ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<InboundState>,
    /// Name of the inbound, which a `sectionName` may refer to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Protocol, as an alternative to the `kuma.io/protocol` tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// `inbound[].health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Whether the inbound is ready (absent means false, as in Kuma).
    #[serde(default)]
    pub ready: bool,
}

/// `inbound[].serviceProbe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceProbe {
    /// Time between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<KumaDuration>,
    /// Time a probe may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<KumaDuration>,
    /// Failures before the inbound is unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
    /// Successes before it is healthy again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
    /// Probe by opening a TCP connection (the only kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Empty>,
}

/// A message with no fields, such as `tcp: {}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// One outbound listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Outbound {
    /// Local address to listen on (default 127.0.0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Local port to listen on.
    pub port: Port,
    /// Tags of the destination; `kuma.io/service` names it.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
    /// The destination as a MeshService, MeshExternalService or MeshMultiZoneService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<BackendRef>,
}

/// `outbound[].backendRef`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendRef {
    /// MeshService, MeshExternalService or MeshMultiZoneService.
    #[serde(default)]
    pub kind: String,
    /// Name of the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port of the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Labels selecting the backend.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub labels: Tags,
}

/// Kinds a backend reference may name.
const BACKEND_KINDS: [&str; 3] = ["MeshExternalService", "MeshMultiZoneService", "MeshService"];

/// Kinds of backend reference Ward serves.
const SERVED_KINDS: [&str; 2] = ["MeshExternalService", "MeshService"];

string_enum! {
    /// IP families transparent proxying redirects.
    pub enum IpFamilyMode {
        /// Unset (old dataplanes).
        UnSpecified = "UnSpecified",
        /// IPv4 and IPv6.
        DualStack = "DualStack",
        /// IPv4 only.
        Ipv4 = "IPv4",
        /// IPv6 only.
        Ipv6 = "IPv6",
    }
}

/// `transparentProxying`: where redirected traffic arrives, and what it may reach.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TransparentProxying {
    /// Port for redirected inbound traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_port_inbound: Option<Port>,
    /// Port for redirected outbound traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_port_outbound: Option<Port>,
    /// Services reached directly by IP and port rather than through their virtual IP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub direct_access_services: Vec<String>,
    /// Services reachable, by `kuma.io/service` (default all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reachable_services: Vec<String>,
    /// IP families redirected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family_mode: Option<IpFamilyMode>,
    /// Backends reachable, by reference (default all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable_backends: Option<ReachableBackends>,
}

/// `transparentProxying.reachableBackends`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReachableBackends {
    /// The references.
    #[serde(default)]
    pub refs: Vec<ReachableBackendRef>,
}

/// One reachable backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReachableBackendRef {
    /// MeshService, MeshExternalService or MeshMultiZoneService.
    pub kind: String,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Labels selecting backends.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub labels: Tags,
}

/// `networking.admin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Port of the admin listener on 127.0.0.1.
    pub port: Port,
}

string_enum! {
    /// Role of a zone proxy listener.
    pub enum ListenerType {
        /// Unset, which Kuma refuses.
        Unspecified = "Unspecified",
        /// Zone ingress.
        ZoneIngress = "ZoneIngress",
        /// Zone egress.
        ZoneEgress = "ZoneEgress",
    }
}

string_enum! {
    /// Readiness of a zone proxy listener.
    pub enum ListenerState {
        /// Ready.
        Ready = "Ready",
        /// Not ready.
        NotReady = "NotReady",
    }
}

/// `networking.listeners[]`: a zone ingress or egress listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// ZoneIngress or ZoneEgress.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<ListenerType>,
    /// Address it listens on.
    #[serde(default)]
    pub address: String,
    /// Port it listens on.
    #[serde(default)]
    pub port: u32,
    /// Name a `sectionName` may refer to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Ready or NotReady.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ListenerState>,
}

/// `metrics` of a dataplane, or one backend of a mesh's `metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsBackend {
    /// Name, unique within a mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `prometheus`, the only type.
    #[serde(rename = "type", default)]
    pub ty: String,
    /// Prometheus settings, checked against [`PrometheusConf`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<serde_json::Value>,
}

/// `conf` of a Prometheus metrics backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusConf {
    /// Port metrics are served on.
    #[serde(default)]
    pub port: Option<u32>,
    /// Path metrics are served on.
    #[serde(default)]
    pub path: Option<String>,
    /// Extra tags.
    #[serde(default)]
    pub tags: Option<Tags>,
    /// Whether the endpoint skips mTLS.
    #[serde(default, rename = "skipMTLS")]
    pub skip_mtls: Option<bool>,
    /// Application metrics merged in.
    #[serde(default)]
    pub aggregate: Vec<AggregateMetrics>,
    /// Envoy stats filtering.
    #[serde(default)]
    pub envoy: Option<serde_json::Value>,
    /// TLS of the endpoint.
    #[serde(default)]
    pub tls: Option<PrometheusTls>,
}

/// One `aggregate[]` entry of a Prometheus backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateMetrics {
    /// Name, unique within the backend.
    #[serde(default)]
    pub name: String,
    /// Port of the application's metrics.
    #[serde(default)]
    pub port: Option<u32>,
    /// Path of the application's metrics.
    #[serde(default)]
    pub path: Option<String>,
    /// Whether it is merged.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Address of the application's metrics.
    #[serde(default)]
    pub address: Option<String>,
}

string_enum! {
    /// TLS of a Prometheus endpoint.
    pub enum PrometheusTlsMode {
        /// The mesh's mTLS.
        ActiveMtlsBackend = "activeMTLSBackend",
        /// A certificate given to the proxy.
        ProvidedTls = "providedTLS",
        /// Plaintext.
        Disabled = "disabled",
    }
}

/// `tls` of a Prometheus backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusTls {
    /// The mode (default activeMTLSBackend).
    #[serde(default)]
    pub mode: Option<PrometheusTlsMode>,
}

/// `probes`: Kuma's deprecated virtual probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Probes {
    /// Port the probe endpoints are served on.
    #[serde(default)]
    pub port: u32,
    /// The endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<ProbeEndpoint>,
}

/// One `probes.endpoints[]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProbeEndpoint {
    /// Port of the application.
    #[serde(default)]
    pub inbound_port: u32,
    /// Path on the application.
    #[serde(default)]
    pub inbound_path: String,
    /// Path on the probe port.
    #[serde(default)]
    pub path: String,
}

impl Inbound {
    /// The protocol from the `protocol` field, else the `kuma.io/protocol` tag. Valid after
    /// [`Dataplane::check`].
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol.as_deref().or(self.tags.get(PROTOCOL_TAG).map(String::as_str)).and_then(Protocol::parse)
    }

    /// The service it serves, from its `kuma.io/service` tag.
    pub fn service(&self) -> Option<&str> {
        self.tags.get(SERVICE_TAG).map(String::as_str)
    }

    /// Where the application listens: `serviceAddress` (default 127.0.0.1) and `servicePort`
    /// (default `port`). Valid after [`Dataplane::check`].
    pub fn service_socket(&self) -> std::net::SocketAddr {
        let ip = self.service_address.as_deref().and_then(|a| a.parse().ok());
        std::net::SocketAddr::new(
            ip.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            self.service_port.unwrap_or(self.port).0,
        )
    }

    /// Whether the proxy listens for it: not `Ignored`.
    pub fn listens(&self) -> bool {
        self.state != Some(InboundState::Ignored)
    }

    /// Whether callers are sent to it: `Ready` and not reported unhealthy.
    pub fn is_ready(&self) -> bool {
        self.state.is_none_or(|s| s == InboundState::Ready) && self.health.as_ref().is_none_or(|h| h.ready)
    }

    /// Whether `section` (a `sectionName`) names it: its name, or its port in decimal.
    pub fn is_section(&self, section: &str) -> bool {
        self.name.as_deref() == Some(section) || self.port.0.to_string() == section
    }
}

impl DataplaneNetworking {
    /// The address an inbound listens on: its own, else the dataplane's.
    pub fn listen_address<'a>(&'a self, inbound: &'a Inbound) -> &'a str {
        inbound.address.as_deref().unwrap_or(&self.address)
    }

    /// The address other proxies reach an inbound at: the advertised address, else where it
    /// listens.
    pub fn endpoint_address<'a>(&'a self, inbound: &'a Inbound) -> &'a str {
        self.advertised_address.as_deref().unwrap_or_else(|| self.listen_address(inbound))
    }
}

impl Dataplane {
    /// The service whose identity this dataplane calls others with (its gateway's, else its
    /// first inbound's); valid after [`Dataplane::check`].
    pub fn service(&self) -> &str {
        let tags = match &self.networking.gateway {
            Some(gateway) => Some(&gateway.tags),
            None => self.networking.inbound.first().map(|i| &i.tags),
        };
        tags.and_then(|t| t.get(SERVICE_TAG)).map_or("", String::as_str)
    }

    /// Every service it holds an identity for, each once: its outbound identity
    /// ([`Dataplane::service`]) first, then those of its other inbounds in order.
    pub fn services(&self) -> Vec<&str> {
        let mut services = vec![self.service()];
        for service in self.networking.inbound.iter().filter_map(Inbound::service) {
            if !services.contains(&service) {
                services.push(service);
            }
        }
        services
    }

    /// Whether any inbound carries every tag of `wanted` (value `*` matches any value).
    pub fn has_tags(&self, wanted: &Tags) -> bool {
        self.networking.inbound.iter().any(|inbound| tags_match(wanted, &inbound.tags))
    }

    /// Checks what serde cannot: Kuma's rules for every field, then what Ward cannot serve yet.
    pub fn check(&self, causes: &mut Causes) {
        let net = &self.networking;
        if let Err(e) = check_address(&net.address) {
            causes.add("networking.address", e);
        }
        if let Some(address) = &net.advertised_address
            && let Err(e) = check_address(address)
        {
            causes.add("networking.advertisedAddress", e);
        }
        if let Some(admin) = &net.admin {
            let loopback = |a: &str| a.parse::<IpAddr>().is_ok_and(|ip| ip == IpAddr::V4(Ipv4Addr::LOCALHOST));
            if net.inbound.iter().any(|i| i.port == admin.port && loopback(net.listen_address(i))) {
                causes.add("networking.admin.port", "must differ from the port of an inbound on 127.0.0.1");
            }
            if net
                .outbound
                .iter()
                .any(|o| o.port == admin.port && loopback(o.address.as_deref().unwrap_or("127.0.0.1")))
            {
                causes.add("networking.admin.port", "must differ from the port of an outbound on 127.0.0.1");
            }
        }
        match net.gateway.as_ref().map(|g| g.ty.unwrap_or(GatewayType::Delegated)) {
            Some(kind) => self.check_gateway(kind, causes),
            None => {
                self.check_inbounds(causes);
                self.check_listeners(causes);
                if let Some(metrics) = &self.metrics {
                    check_metrics_backend("metrics", metrics, causes);
                }
            }
        }
        if net.gateway.as_ref().is_none_or(|g| g.ty != Some(GatewayType::Builtin)) {
            self.check_probes(causes);
        }
        self.check_outbounds(causes);
        if let Some(tp) = &net.transparent_proxying {
            check_transparent_proxying(tp, causes);
        }
        self.check_supported(causes);
    }

    fn check_gateway(&self, kind: GatewayType, causes: &mut Causes) {
        let net = &self.networking;
        let word = match kind {
            GatewayType::Delegated => "delegated",
            GatewayType::Builtin => "builtin",
        };
        if !net.inbound.is_empty() {
            causes.add(
                "networking.inbound",
                format!("a {word} gateway has no inbounds: the gateway's own listeners face its clients"),
            );
        }
        if !net.listeners.is_empty() {
            causes.add("networking.listeners", format!("a {word} gateway has no zone proxy listeners"));
        }
        if kind == GatewayType::Builtin {
            if !net.outbound.is_empty() {
                causes.add("networking.outbound", "a builtin gateway has no outbounds");
            }
            if self.probes.is_some() {
                causes.add("probes", "a builtin gateway has no probes");
            }
        }
        let Some(gateway) = &net.gateway else { return };
        check_tags("networking.gateway.tags", &gateway.tags, causes);
        if !gateway.tags.is_empty() && !gateway.tags.contains_key(SERVICE_TAG) {
            causes.add("networking.gateway.tags", format!("tag {SERVICE_TAG:?} is required"));
        }
        if let Some(protocol) = gateway.tags.get(PROTOCOL_TAG)
            && protocol != "tcp"
        {
            causes.add(format!("networking.gateway.tags.{PROTOCOL_TAG}"), "must be tcp on a gateway");
        }
    }

    fn check_inbounds(&self, causes: &mut Causes) {
        let net = &self.networking;
        for (i, inbound) in net.inbound.iter().enumerate() {
            let at = format!("networking.inbound[{i}]");
            check_tags(&format!("{at}.tags"), &inbound.tags, causes);
            if !inbound.tags.is_empty() && !inbound.tags.contains_key(SERVICE_TAG) {
                causes.add(format!("{at}.tags"), format!("tag {SERVICE_TAG:?} is required"));
            }
            if let Some(protocol) = inbound.tags.get(PROTOCOL_TAG)
                && Protocol::parse(protocol).is_none()
            {
                causes.add(format!("{at}.tags.{PROTOCOL_TAG}"), Protocol::choices_message());
            }
            if let Some(protocol) = &inbound.protocol
                && Protocol::parse(protocol).is_none()
            {
                causes.add(format!("{at}.protocol"), Protocol::choices_message());
            }
            let same_port = inbound.service_port.is_none_or(|p| p == inbound.port);
            if let Some(address) = &inbound.service_address {
                if address.parse::<IpAddr>().is_err() {
                    causes.add(format!("{at}.serviceAddress"), "must be an IP address");
                } else if same_port && (address == &net.address || inbound.address.as_ref() == Some(address)) {
                    causes.add(
                        format!("{at}.serviceAddress"),
                        "serviceAddress:servicePort must differ from the address:port the proxy listens on",
                    );
                }
            }
            if let Some(address) = &inbound.address
                && address.parse::<IpAddr>().is_err()
            {
                causes.add(format!("{at}.address"), "must be an IP address");
            }
            if let Some(probe) = &inbound.service_probe {
                let probe_at = format!("{at}.serviceProbe");
                for (field, d) in [("interval", &probe.interval), ("timeout", &probe.timeout)] {
                    if d.as_ref().is_some_and(|d| d.get().is_zero()) {
                        causes.add(format!("{probe_at}.{field}"), "must be more than zero");
                    }
                }
                for (field, n) in
                    [("unhealthyThreshold", probe.unhealthy_threshold), ("healthyThreshold", probe.healthy_threshold)]
                {
                    if n == Some(0) {
                        causes.add(format!("{probe_at}.{field}"), "must be more than zero");
                    }
                }
            }
            let listen = net.listen_address(inbound);
            if net.inbound[..i].iter().any(|o| o.port == inbound.port && net.listen_address(o) == listen) {
                causes.add(format!("{at}.port"), format!("port {} is used by another inbound", inbound.port.0));
            }
        }
    }

    fn check_outbounds(&self, causes: &mut Causes) {
        let net = &self.networking;
        for (i, outbound) in net.outbound.iter().enumerate() {
            let at = format!("networking.outbound[{i}]");
            if let Some(address) = &outbound.address
                && address.parse::<IpAddr>().is_err()
            {
                causes.add(format!("{at}.address"), "must be an IP address");
            }
            match &outbound.backend_ref {
                Some(backend) => {
                    if !outbound.tags.is_empty() {
                        causes.add(format!("{at}.backendRef"), "cannot be set together with tags");
                    }
                    if !BACKEND_KINDS.contains(&backend.kind.as_str()) {
                        causes.add(
                            format!("{at}.backendRef.kind"),
                            format!("must be one of {}", BACKEND_KINDS.join(", ")),
                        );
                    }
                    if backend.name.as_deref().unwrap_or("").is_empty() && backend.labels.is_empty() {
                        causes.add(format!("{at}.backendRef"), "must have name or labels");
                    }
                    if backend.kind != "MeshExternalService" && !backend.port.is_some_and(|p| (1..=65535).contains(&p))
                    {
                        causes.add(format!("{at}.backendRef.port"), "must be a port number between 1 and 65535");
                    }
                }
                None => {
                    check_tags(&format!("{at}.tags"), &outbound.tags, causes);
                    if !outbound.tags.contains_key(SERVICE_TAG) {
                        causes.add(format!("{at}.tags"), format!("tag {SERVICE_TAG:?} is required"));
                    }
                }
            }
            let same_listener = |o: &Outbound| o.port == outbound.port && o.address == outbound.address;
            if net.outbound[..i].iter().any(same_listener) {
                causes.add(format!("{at}.port"), format!("port {} is used by another outbound", outbound.port.0));
            }
        }
    }

    fn check_listeners(&self, causes: &mut Causes) {
        let net = &self.networking;
        let mut names: Vec<&str> = net.inbound.iter().filter_map(|i| i.name.as_deref()).collect();
        for (i, listener) in net.listeners.iter().enumerate() {
            let at = format!("networking.listeners[{i}]");
            if listener.ty.is_none_or(|t| t == ListenerType::Unspecified) {
                causes.add(format!("{at}.type"), "must be ZoneIngress or ZoneEgress");
            }
            if let Err(e) = check_address(&listener.address) {
                causes.add(format!("{at}.address"), e);
            }
            if !(1..=65535).contains(&listener.port) {
                causes.add(format!("{at}.port"), "must be a port number between 1 and 65535");
            }
            if let Some(name) = listener.name.as_deref().filter(|n| !n.is_empty()) {
                if names.contains(&name) {
                    causes.add(format!("{at}.name"), format!("name {name:?} is used by another inbound or listener"));
                }
                names.push(name);
            }
            let same = |l: &Listener| l.address == listener.address && l.port == listener.port;
            if net.listeners[..i].iter().any(same) {
                causes.add(&at, format!("{}:{} is used by another listener", listener.address, listener.port));
            }
            let collides = net
                .inbound
                .iter()
                .any(|inb| u32::from(inb.port.0) == listener.port && net.listen_address(inb) == listener.address);
            if collides {
                causes.add(&at, format!("{}:{} is used by an inbound", listener.address, listener.port));
            }
        }
    }

    fn check_probes(&self, causes: &mut Causes) {
        let Some(probes) = &self.probes else { return };
        if !(1..=65535).contains(&probes.port) {
            causes.add("probes.port", "must be a port number between 1 and 65535");
        }
        for (i, endpoint) in probes.endpoints.iter().enumerate() {
            let at = format!("probes.endpoints[{i}]");
            if !(1..=65535).contains(&endpoint.inbound_port) {
                causes.add(format!("{at}.inboundPort"), "must be a port number between 1 and 65535");
            }
            for (field, path) in [("inboundPath", &endpoint.inbound_path), ("path", &endpoint.path)] {
                if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    causes.add(format!("{at}.{field}"), "must be a URL path starting with /");
                }
            }
        }
    }

    /// Valid Kuma that Ward refuses because it cannot serve it yet, said as such.
    fn check_supported(&self, causes: &mut Causes) {
        let net = &self.networking;
        if let Some(gateway) = &net.gateway {
            match gateway.tags.get(SERVICE_TAG) {
                None => causes.unsupported(
                    "networking.gateway.tags",
                    format!("a gateway without the {SERVICE_TAG} tag has no service to name in its identity"),
                ),
                Some(service) => {
                    if let Err(e) = check_service(service) {
                        causes.unsupported(format!("networking.gateway.tags.{SERVICE_TAG}"), service_name(&e));
                    }
                }
            }
            return;
        }
        if net.inbound.is_empty() {
            causes.unsupported(
                "networking.inbound",
                "a dataplane with neither an inbound nor a gateway has no service to name in its identity",
            );
        }
        for (i, inbound) in net.inbound.iter().enumerate() {
            let at = format!("networking.inbound[{i}].tags");
            match inbound.service() {
                None if inbound.tags.is_empty() => causes.unsupported(
                    at,
                    format!("an inbound without tags has no {SERVICE_TAG} to name the dataplane's identity"),
                ),
                None => {}
                Some(service) => {
                    if let Err(e) = check_service(service) {
                        causes.unsupported(format!("{at}.{SERVICE_TAG}"), service_name(&e));
                    }
                }
            }
        }
        for (i, outbound) in net.outbound.iter().enumerate() {
            if let Some(service) = outbound.tags.get(SERVICE_TAG)
                && let Err(e) = check_service(service)
            {
                causes.unsupported(format!("networking.outbound[{i}].tags.{SERVICE_TAG}"), service_name(&e));
            }
        }
    }

    /// Fields accepted that have no effect in Ward, and why.
    pub fn warnings(&self, warnings: &mut Warnings) {
        let net = &self.networking;
        if net.gateway.as_ref().is_some_and(|g| g.ty == Some(GatewayType::Builtin)) {
            warnings.add(
                "networking.gateway.type",
                "Ward has no builtin gateway (no MeshGateway resources): this dataplane runs as a delegated \
                 gateway, calling services with its identity and serving none through the mesh",
            );
        }
        for (i, inbound) in net.inbound.iter().enumerate() {
            if inbound.protocol().is_some_and(|p| p == Protocol::Kafka) {
                warnings.add(
                    format!("networking.inbound[{i}].protocol"),
                    "Ward carries kafka as opaque TCP: no Kafka-level metrics or policies",
                );
            }
        }
        for (i, outbound) in net.outbound.iter().enumerate() {
            match &outbound.backend_ref {
                Some(b) if !SERVED_KINDS.contains(&b.kind.as_str()) => warnings.add(
                    format!("networking.outbound[{i}].backendRef.kind"),
                    format!("Ward has no {} resources: this outbound is not served", b.kind),
                ),
                _ => {}
            }
        }
        if let Some(tp) = &net.transparent_proxying {
            let at = "networking.transparentProxying";
            if !tp.direct_access_services.is_empty() {
                warnings.add(
                    format!("{at}.directAccessServices"),
                    "Ward's proxy reaches services only through their virtual IPs",
                );
            }
            for (j, r) in tp.reachable_backends.iter().flat_map(|b| &b.refs).enumerate() {
                if !SERVED_KINDS.contains(&r.kind.as_str()) {
                    warnings.add(
                        format!("{at}.reachableBackends.refs[{j}].kind"),
                        format!("Ward has no {} resources: nothing is reached through this entry", r.kind),
                    );
                }
            }
            if tp.ip_family_mode.is_some() {
                warnings.add(
                    format!("{at}.ipFamilyMode"),
                    "Ward's proxy listens for both IP families; the redirection rules decide which arrive",
                );
            }
        }
        if !net.listeners.is_empty() {
            warnings.add("networking.listeners", "Ward runs no zone ingress or egress; these listeners are not served");
        }
        if self.probes.is_some() {
            warnings.add("probes", "virtual probes are deprecated in Kuma and not served by Ward");
        }
    }
}

fn service_name(error: &str) -> String {
    format!("Ward names the identity's SPIFFE ID after the service, whose name {error}")
}

fn check_transparent_proxying(tp: &TransparentProxying, causes: &mut Causes) {
    let at = "networking.transparentProxying";
    if let (Some(inbound), Some(outbound)) = (tp.redirect_port_inbound, tp.redirect_port_outbound)
        && inbound == outbound
    {
        causes.add(format!("{at}.redirectPortOutbound"), "must differ from redirectPortInbound");
    }
    let refs = tp.reachable_backends.iter().flat_map(|r| &r.refs);
    for (i, backend) in refs.enumerate() {
        let at = format!("{at}.reachableBackends.refs[{i}]");
        if !BACKEND_KINDS.contains(&backend.kind.as_str()) {
            causes.add(format!("{at}.kind"), format!("must be one of {}", BACKEND_KINDS.join(", ")));
        }
        let name = backend.name.as_deref().unwrap_or("");
        let namespace = backend.namespace.as_deref().unwrap_or("");
        if !name.is_empty() && !is_dns_subdomain(name) {
            causes.add(format!("{at}.name"), "must be lowercase letters, digits, '-' and '.'");
        }
        if name.is_empty() && namespace.is_empty() && backend.labels.is_empty() {
            causes.add(format!("{at}.name"), "name or labels are required");
        }
        if name.is_empty() && !namespace.is_empty() {
            causes.add(format!("{at}.name"), "is required when namespace is set");
        }
        if (!name.is_empty() || !namespace.is_empty()) && !backend.labels.is_empty() {
            causes.add(format!("{at}.labels"), "cannot be set together with name");
        }
    }
}

/// Checks a metrics backend of a dataplane or mesh at `at`.
pub fn check_metrics_backend(at: &str, backend: &MetricsBackend, causes: &mut Causes) {
    if backend.ty != "prometheus" {
        causes.add(format!("{at}.type"), "must be prometheus");
        return;
    }
    let Some(conf) = &backend.conf else { return };
    let conf = match crate::parse::typed::<PrometheusConf>(&format!("{at}.conf"), conf.clone()) {
        Ok(conf) => conf,
        Err(cause) => return causes.0.push(cause),
    };
    if let (Some(skip), Some(tls)) = (conf.skip_mtls, &conf.tls) {
        let mode = tls.mode.unwrap_or(PrometheusTlsMode::ActiveMtlsBackend);
        let same =
            (!skip && mode == PrometheusTlsMode::ActiveMtlsBackend) || (skip && mode == PrometheusTlsMode::Disabled);
        if !same {
            causes.add(format!("{at}.conf"), "skipMTLS and tls cannot both be set (unless they say the same)");
        }
    }
    if let Some(pattern) = conf.envoy.as_ref().and_then(|e| e["filterRegex"].as_str())
        && let Err(e) = regex::Regex::new(pattern)
    {
        causes.add(format!("{at}.conf.envoy.filterRegex"), format!("is not a regular expression: {e}"));
    }
    for (i, entry) in conf.aggregate.iter().enumerate() {
        if conf.aggregate[..i].iter().any(|e| e.name == entry.name) {
            causes.add(format!("{at}.conf.aggregate[{i}].name"), format!("{:?} is used by another entry", entry.name));
        }
    }
}

/// Whether `tags` carries every tag of `wanted`; a wanted value `*` matches any value.
pub fn tags_match(wanted: &Tags, have: &Tags) -> bool {
    wanted.iter().all(|(k, v)| have.get(k).is_some_and(|h| v == "*" || h == v))
}

/// Checks tags as Kuma does: names are letters, digits and `.-_:/`; values are non-empty
/// letters, digits and `.-_:`.
pub fn check_tags(at: &str, tags: &Tags, causes: &mut Causes) {
    check_tag_map(at, tags, false, causes);
}

/// Checks a tag selector: like [`check_tags`], but a value may also be `*` (any) or hold `/`.
pub fn check_selector(at: &str, tags: &Tags, causes: &mut Causes) {
    check_tag_map(at, tags, true, causes);
}

fn check_tag_map(at: &str, tags: &Tags, selector: bool, causes: &mut Causes) {
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/');
    let value_char =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':') || (selector && c == '/');
    for (key, value) in tags {
        if key.is_empty() {
            causes.add(at, "tag names must not be empty");
            continue;
        }
        let field = format!("{at}.{key}");
        if !key.chars().all(name_char) {
            causes.add(&field, "tag name must hold only letters, digits, '.', '-', '_', ':' and '/'");
        }
        if value.is_empty() {
            causes.add(&field, "must not be empty");
        } else if !(value.chars().all(value_char) || selector && value == "*") {
            let allowed = if selector {
                "letters, digits, '.', '-', '_', ':' and '/', or be \"*\""
            } else {
                "letters, digits, '.', '-', '_' and ':'"
            };
            causes.add(&field, format!("tag value must hold only {allowed}"));
        }
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn check_address(address: &str) -> Result<(), String> {
    if address.is_empty() {
        return Err("must not be empty".into());
    }
    if let Ok(ip) = address.parse::<IpAddr>() {
        return if ip.is_unspecified() { Err("must not be 0.0.0.0 or ::".into()) } else { Ok(()) };
    }
    let hostname_ok = address.len() <= 253
        && address.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if hostname_ok { Ok(()) } else { Err(format!("must be an IP address or a host name (got {address:?})")) }
}
