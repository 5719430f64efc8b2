//! The `Dataplane` resource: one service instance, its inbounds and outbounds.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::{error::Causes, names::check_service};

/// Tag naming the service an inbound or outbound belongs to.
pub const SERVICE_TAG: &str = "kuma.io/service";
/// Tag naming the protocol of an inbound.
pub const PROTOCOL_TAG: &str = "kuma.io/protocol";

/// Tags: string keys to string values.
pub type Tags = BTreeMap<String, String>;

string_enum! {
    /// Protocol of an inbound, from its `kuma.io/protocol` tag.
    pub enum Protocol {
        /// HTTP/1.1 (and upgrades).
        Http = "http",
        /// HTTP/2.
        Http2 = "http2",
        /// gRPC over HTTP/2.
        Grpc = "grpc",
        /// Opaque TCP.
        Tcp = "tcp",
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
}

/// `networking` of a dataplane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DataplaneNetworking {
    /// Address other proxies reach this one at.
    pub address: String,
    /// Listeners for callers of this service.
    #[serde(default)]
    pub inbound: Vec<Inbound>,
    /// Local listeners for the services this one calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<Outbound>,
    /// Ports the iptables redirection sends traffic to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparent_proxying: Option<TransparentProxying>,
    /// Set on a gateway's dataplane: it calls services but serves none through the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Gateway>,
}

string_enum! {
    /// Kinds of gateway dataplane.
    pub enum GatewayType {
        /// A gateway of its own (Ward's edge gateway, or Kong) that joins the mesh to reach services.
        Delegated = "DELEGATED",
    }
}

/// `networking.gateway`: the dataplane of an edge gateway, as Kuma's delegated gateways.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// `DELEGATED`.
    #[serde(rename = "type")]
    pub ty: GatewayType,
    /// Tags; `kuma.io/service` is required: the gateway's identity.
    pub tags: Tags,
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
    /// Tags; `kuma.io/service` is required.
    pub tags: Tags,
}

/// One outbound listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Outbound {
    /// Local address to listen on (default 127.0.0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Local port to listen on.
    pub port: Port,
    /// Tags of the destination; `kuma.io/service` is required.
    pub tags: Tags,
}

/// `transparentProxying`: where redirected traffic arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TransparentProxying {
    /// Port for redirected inbound traffic.
    pub redirect_port_inbound: Port,
    /// Port for redirected outbound traffic.
    pub redirect_port_outbound: Port,
}

impl Dataplane {
    /// The one service this dataplane is (from its gateway tags or its first inbound); valid
    /// after [`Dataplane::check`].
    pub fn service(&self) -> &str {
        let tags = match &self.networking.gateway {
            Some(gateway) => Some(&gateway.tags),
            None => self.networking.inbound.first().map(|i| &i.tags),
        };
        tags.and_then(|t| t.get(SERVICE_TAG)).map_or("", String::as_str)
    }

    /// Whether any inbound carries every tag of `wanted` (value `*` matches any value).
    pub fn has_tags(&self, wanted: &Tags) -> bool {
        self.networking.inbound.iter().any(|inbound| tags_match(wanted, &inbound.tags))
    }

    /// Checks what serde cannot: required tags, one identity, addresses, duplicates.
    pub fn check(&self, causes: &mut Causes) {
        let net = &self.networking;
        if let Err(e) = check_address(&net.address) {
            causes.add("networking.address", e);
        }
        match (&net.gateway, net.inbound.is_empty()) {
            (None, true) => causes.add("networking.inbound", "must have at least one inbound (or be a gateway)"),
            (Some(_), false) => causes.add(
                "networking.inbound",
                "a gateway dataplane has no inbounds: the gateway's own listeners face its clients",
            ),
            _ => {}
        }
        if let Some(gateway) = &net.gateway {
            check_tags("networking.gateway.tags", &gateway.tags, causes);
            match gateway.tags.get(SERVICE_TAG) {
                None => causes.add("networking.gateway.tags", format!("tag {SERVICE_TAG:?} is required")),
                Some(service) => {
                    if let Err(e) = check_service(service) {
                        causes.add(format!("networking.gateway.tags.{SERVICE_TAG}"), e);
                    }
                }
            }
        }
        let first_service = net.inbound.first().and_then(|i| i.tags.get(SERVICE_TAG));
        for (i, inbound) in net.inbound.iter().enumerate() {
            let at = format!("networking.inbound[{i}]");
            check_tags(&format!("{at}.tags"), &inbound.tags, causes);
            match (inbound.tags.get(SERVICE_TAG), first_service) {
                (None, _) => causes.add(format!("{at}.tags"), format!("tag {SERVICE_TAG:?} is required")),
                (Some(service), Some(first)) if service != first => causes.add(
                    format!("{at}.tags.{SERVICE_TAG}"),
                    format!(
                        "a dataplane has one identity: every inbound must have the same {SERVICE_TAG} \
                         (inbound[0] has {first:?}, this one {service:?}); use one dataplane per service"
                    ),
                ),
                (Some(service), _) => {
                    if let Err(e) = check_service(service) {
                        causes.add(format!("{at}.tags.{SERVICE_TAG}"), e);
                    }
                }
            }
            if let Some(protocol) = inbound.tags.get(PROTOCOL_TAG)
                && Protocol::parse(protocol).is_none()
            {
                causes.add(format!("{at}.tags.{PROTOCOL_TAG}"), Protocol::choices_message());
            }
            if let Some(address) = &inbound.service_address
                && let Err(e) = check_address(address)
            {
                causes.add(format!("{at}.serviceAddress"), e);
            }
            if net.inbound[..i].iter().any(|other| other.port == inbound.port) {
                causes.add(format!("{at}.port"), format!("port {} is used by another inbound", inbound.port.0));
            }
        }
        for (i, outbound) in net.outbound.iter().enumerate() {
            let at = format!("networking.outbound[{i}]");
            check_tags(&format!("{at}.tags"), &outbound.tags, causes);
            match outbound.tags.get(SERVICE_TAG) {
                None => causes.add(format!("{at}.tags"), format!("tag {SERVICE_TAG:?} is required")),
                Some(service) => {
                    if let Err(e) = check_service(service) {
                        causes.add(format!("{at}.tags.{SERVICE_TAG}"), e);
                    }
                }
            }
            if let Some(address) = &outbound.address
                && address.parse::<IpAddr>().is_err()
            {
                causes.add(format!("{at}.address"), "must be an IP address");
            }
            let same_listener = |o: &Outbound| o.port == outbound.port && o.address == outbound.address;
            if net.outbound[..i].iter().any(same_listener) {
                causes.add(format!("{at}.port"), format!("port {} is used by another outbound", outbound.port.0));
            }
        }
        if let Some(tp) = &net.transparent_proxying
            && tp.redirect_port_inbound == tp.redirect_port_outbound
        {
            causes.add("networking.transparentProxying.redirectPortOutbound", "must differ from redirectPortInbound");
        }
    }
}

/// Whether `have` carries every tag of `wanted`; a wanted value `*` matches any value.
pub fn tags_match(wanted: &Tags, have: &Tags) -> bool {
    wanted.iter().all(|(k, v)| have.get(k).is_some_and(|h| v == "*" || h == v))
}

/// Checks that tag keys and values are non-empty.
pub fn check_tags(at: &str, tags: &Tags, causes: &mut Causes) {
    for (key, value) in tags {
        if key.is_empty() {
            causes.add(at, "tag names must not be empty");
        } else if value.is_empty() {
            causes.add(format!("{at}.{key}"), "must not be empty");
        }
    }
}

fn check_address(address: &str) -> Result<(), String> {
    if address.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let hostname_ok = !address.is_empty()
        && address.len() <= 253
        && address.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if hostname_ok { Ok(()) } else { Err(format!("must be an IP address or a host name (got {address:?})")) }
}
