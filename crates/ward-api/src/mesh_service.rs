//! The `MeshService` resource (Kuma 2.9+): a destination of the mesh named as an object, with
//! the dataplanes it selects, the ports it offers on its virtual IP and the identities its
//! instances prove.

use serde::{Deserialize, Serialize};

use crate::{
    dataplane::{Dataplane, Inbound, Port, Protocol, SERVICE_TAG, Tags, check_tags},
    error::{Causes, Warnings},
    labels::check_labels,
    spiffe::SpiffeId,
};

/// Longest MeshService name (a DNS label: it is part of the service's hostname).
pub const MAX_NAME_LEN: usize = 63;

/// The domain a MeshService's hostname lies under: `<name>.svc.mesh.local`.
pub const HOSTNAME_SUFFIX: &str = "svc.mesh.local";

string_enum! {
    /// Whether a MeshService has healthy endpoints (computed by the control plane).
    pub enum State {
        /// At least one healthy endpoint.
        Available = "Available",
        /// None.
        Unavailable = "Unavailable",
    }
}

string_enum! {
    /// How an entry of `identities` names an identity.
    pub enum IdentityType {
        /// By `kuma.io/service` value: the SVID of that service.
        ServiceTag = "ServiceTag",
        /// By SPIFFE ID.
        SpiffeId = "SpiffeID",
    }
}

/// A MeshService's `spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshService {
    /// Written by Kuma's control plane; Ward computes it (see the status) and ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// The dataplanes that are its instances.
    #[serde(default)]
    pub selector: Selector,
    /// The ports it offers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// The identities its instances may prove (default: the service tag of each selected inbound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identities: Option<Vec<ServiceIdentity>>,
}

/// `spec.selector`: at most one of the three.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    /// Dataplanes with an inbound carrying all these tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_tags: Option<Tags>,
    /// One dataplane, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_ref: Option<DataplaneRef>,
    /// Dataplanes whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_labels: Option<LabelSelector>,
}

/// `selector.dataplaneRef`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneRef {
    /// The dataplane's name.
    #[serde(default)]
    pub name: String,
}

/// `selector.dataplaneLabels`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels a dataplane must all have, with these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<Tags>,
}

/// One port of `spec.ports`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    /// Its name, for references by `sectionName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port on the service's virtual IP.
    pub port: Port,
    /// The inbound it reaches: by port number, or by the inbound's `name` (default `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<TargetPort>,
    /// The protocol spoken (default `tcp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

/// `ports[].targetPort`: a number or a name, as Kubernetes' int-or-string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    /// An inbound's port.
    Number(u32),
    /// An inbound's name.
    Name(String),
}

/// One entry of `spec.identities`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceIdentity {
    /// How `value` names the identity.
    #[serde(rename = "type")]
    pub ty: IdentityType,
    /// A `kuma.io/service` value or a SPIFFE ID.
    pub value: String,
}

/// One instance of one port: the inbound of a selected dataplane it reaches.
#[derive(Debug, Clone, Copy)]
pub struct Instance<'a> {
    /// The inbound.
    pub inbound: &'a Inbound,
    /// The service whose SVID its proxy proves on that inbound.
    pub service: &'a str,
}

impl MeshService {
    /// Checks what serde cannot, each cause under `spec`.
    pub fn check(&self, causes: &mut Causes) {
        let selector = &self.selector;
        let set =
            [selector.dataplane_tags.is_some(), selector.dataplane_ref.is_some(), selector.dataplane_labels.is_some()];
        if set.iter().filter(|s| **s).count() > 1 {
            causes.add("spec.selector", "must specify only one of: dataplaneTags, dataplaneRef, or dataplaneLabels");
        }
        if let Some(tags) = &selector.dataplane_tags {
            check_tags("spec.selector.dataplaneTags", tags, causes);
        }
        if let Some(r) = &selector.dataplane_ref
            && r.name.is_empty()
        {
            causes.add("spec.selector.dataplaneRef.name", "must not be empty");
        }
        if let Some(labels) = selector.dataplane_labels.as_ref().and_then(|l| l.match_labels.as_ref()) {
            check_labels("spec.selector.dataplaneLabels.matchLabels", labels, false, causes);
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            let at = format!("spec.ports[{i}]");
            if !seen.insert(port.port.0) {
                causes.add(format!("{at}.port"), "must be unique among the ports");
            }
            match &port.target_port {
                Some(TargetPort::Number(n)) if !(1..=65535).contains(n) => {
                    causes.add(format!("{at}.targetPort"), "must be a port number between 1 and 65535");
                }
                Some(TargetPort::Name(name)) if name.is_empty() => {
                    causes.add(format!("{at}.targetPort"), "must not be empty");
                }
                _ => {}
            }
            if port.name.as_deref() == Some("") {
                causes.add(format!("{at}.name"), "must not be empty");
            }
        }
        for (i, identity) in self.identities.iter().flatten().enumerate() {
            let at = format!("spec.identities[{i}].value");
            match identity.ty {
                IdentityType::ServiceTag => {
                    let tags = Tags::from([(SERVICE_TAG.to_string(), identity.value.clone())]);
                    let mut tag_causes = Causes::default();
                    check_tags("", &tags, &mut tag_causes);
                    if !tag_causes.0.is_empty() {
                        causes.add(at, "must be a kuma.io/service value: letters, digits, '.', '-', '_' and ':'");
                    }
                }
                IdentityType::SpiffeId => {
                    if let Err(e) = identity.value.parse::<SpiffeId>() {
                        causes.add(at, format!("must be a SPIFFE ID ({e})"));
                    }
                }
            }
        }
    }

    /// Fields accepted that Ward computes itself or treats differently.
    pub fn warnings(&self, warnings: &mut Warnings) {
        if self.state.is_some() {
            warnings
                .add("spec.state", "is computed by the control plane from the health of the endpoints (see status)");
        }
        for (i, port) in self.ports.iter().enumerate() {
            if let Some(protocol) = port.app_protocol.as_deref()
                && !matches!(Protocol::parse(protocol), Some(p) if p != Protocol::Kafka)
            {
                warnings
                    .add(format!("spec.ports[{i}].appProtocol"), format!("Ward carries {protocol:?} as opaque TCP"));
            }
        }
    }

    /// Whether `dp` (named `name`, labelled `labels`) is selected. A selector with nothing set
    /// selects no dataplane.
    pub fn selects(&self, name: &str, labels: &std::collections::BTreeMap<String, String>, dp: &Dataplane) -> bool {
        let s = &self.selector;
        if let Some(tags) = &s.dataplane_tags {
            return dp.networking.inbound.iter().any(|i| tags.iter().all(|(k, v)| i.tags.get(k) == Some(v)));
        }
        if let Some(r) = &s.dataplane_ref {
            return r.name == name;
        }
        if let Some(selector) = &s.dataplane_labels {
            return selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
        }
        false
    }

    /// The inbound of `dp` (in `mesh`) that `port` reaches, with the service whose SVID that
    /// inbound proves; `None` when it has none, or when that identity is not one the
    /// MeshService allows.
    pub fn instance<'a>(&self, mesh: &str, port: &ServicePort, dp: &'a Dataplane) -> Option<Instance<'a>> {
        let inbound = dp.networking.inbound.iter().find(|inbound| match &port.target_port {
            None => inbound.port == port.port,
            Some(TargetPort::Number(n)) => u32::from(inbound.port.0) == *n,
            Some(TargetPort::Name(name)) => inbound.name.as_deref() == Some(name.as_str()),
        })?;
        let service = inbound.service().unwrap_or(dp.service());
        self.allows(mesh, service).then_some(Instance { inbound, service })
    }

    /// Whether the SVID of `service` in `mesh` is one its `identities` allow (any, when none
    /// are listed).
    fn allows(&self, mesh: &str, service: &str) -> bool {
        let Some(identities) = &self.identities else { return true };
        identities.iter().any(|identity| match identity.ty {
            IdentityType::ServiceTag => identity.value == service,
            IdentityType::SpiffeId => {
                identity.value.parse::<SpiffeId>().is_ok_and(|id| id.mesh() == mesh && id.service() == Some(service))
            }
        })
    }
}

impl ServicePort {
    /// The protocol calls on this port are carried with: `tcp` unless `appProtocol` names one
    /// Ward speaks.
    pub fn protocol(&self) -> Protocol {
        self.app_protocol.as_deref().and_then(Protocol::parse).unwrap_or(Protocol::Tcp)
    }
}

/// The name a port of MeshService `name` goes by among a proxy's destinations, in its metrics
/// and logs: `meshservice/NAME:PORT` (a `kuma.io/service` value cannot hold `/`, so it never
/// collides with one).
pub fn destination(name: &str, port: u16) -> String {
    format!("meshservice/{name}:{port}")
}

/// The hostname of MeshService `name`, resolved by the transparent proxy's DNS.
pub fn hostname(name: &str) -> String {
    format!("{name}.{HOSTNAME_SUFFIX}")
}

#[cfg(test)]
mod tests;
