//! The MeshServices of a mesh snapshot: each port is a destination at the service's virtual IP,
//! whose endpoints are the inbounds of the selected dataplanes, each with the identity it must
//! prove; and the status the API shows.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::Ipv4Addr,
};

use serde_json::{Value, json};
use ward_api::{
    Resource, Spec, SpiffeId,
    mesh_service::{self, MeshService},
};
use ward_proto::discovery::{Endpoint, Service};

/// One MeshService as the snapshot sees it.
#[derive(Debug, Clone)]
pub struct MeshServiceView {
    /// Its spec.
    pub spec: MeshService,
    /// Its labels, matched by `reachableBackends` and label `backendRef` references.
    pub labels: BTreeMap<String, String>,
    /// When it was created (RFC 3339, sortable): of several a label reference matches, the
    /// oldest is taken.
    pub created: String,
    /// Its virtual IP, when the range had room for it.
    pub virtual_ip: Option<Ipv4Addr>,
    /// One destination per port, by port.
    pub destinations: BTreeMap<u16, Service>,
    /// Dataplanes it selects.
    pub total: usize,
    /// Of those, the connected ones.
    pub connected: usize,
    /// Of those, the ones whose every selected inbound is ready.
    pub healthy: usize,
}

/// Key of a MeshService's virtual IP in the store: `meshservice/NAME`, which no
/// `kuma.io/service` value can be.
pub fn vip_key(name: &str) -> String {
    format!("meshservice/{name}")
}

/// The views of `mesh`'s MeshServices over its member `dataplanes` (by name), `online` naming
/// the connected ones. Virtual IPs are filled in afterwards.
pub fn views(
    mesh: &str,
    mesh_services: &[Resource],
    dataplanes: &HashMap<String, Resource>,
    non_members: &HashMap<String, String>,
    online: &HashSet<String>,
) -> BTreeMap<String, MeshServiceView> {
    let mut views = BTreeMap::new();
    for resource in mesh_services {
        let Spec::MeshService(spec) = &resource.spec else { continue };
        let name = &resource.meta.name;
        let selected: Vec<(&String, &ward_api::dataplane::Dataplane)> = dataplanes
            .iter()
            .filter(|(dp_name, _)| !non_members.contains_key(*dp_name))
            .filter_map(|(dp_name, r)| match &r.spec {
                Spec::Dataplane(dp) if spec.selects(dp_name, &r.meta.labels, dp) => Some((dp_name, dp)),
                _ => None,
            })
            .collect();
        let mut destinations = BTreeMap::new();
        let mut unhealthy = BTreeSet::new();
        for port in &spec.ports {
            let mut endpoints = Vec::new();
            for (dp_name, dp) in &selected {
                let Some(instance) = spec.instance(mesh, port, dp) else { continue };
                let ready = instance.inbound.listens() && instance.inbound.is_ready();
                if !ready {
                    unhealthy.insert(dp_name.as_str());
                }
                let Ok(id) = SpiffeId::for_service(mesh, instance.service) else { continue };
                if online.contains(*dp_name) && ready {
                    endpoints.push(Endpoint {
                        address: dp.networking.endpoint_address(instance.inbound).to_string(),
                        port: u32::from(instance.inbound.port.0),
                        dataplane: dp_name.to_string(),
                        tags: instance.inbound.tags.clone().into_iter().collect(),
                        spiffe_id: id.to_string(),
                    });
                }
            }
            endpoints.sort_by(|a, b| a.dataplane.cmp(&b.dataplane));
            let destination = Service {
                name: mesh_service::destination(name, port.port.0),
                protocol: port.protocol().to_string(),
                endpoints,
                virtual_port: u32::from(port.port.0),
                hostnames: vec![mesh_service::hostname(name)],
                ..Default::default()
            };
            destinations.insert(port.port.0, destination);
        }
        let connected: Vec<&str> = selected.iter().map(|(n, _)| n.as_str()).filter(|n| online.contains(*n)).collect();
        views.insert(
            name.clone(),
            MeshServiceView {
                spec: spec.clone(),
                labels: resource.meta.labels.clone(),
                created: resource.meta.creation_time.clone().unwrap_or_default(),
                virtual_ip: None,
                destinations,
                total: selected.len(),
                connected: connected.len(),
                healthy: connected.iter().filter(|n| !unhealthy.contains(*n)).count(),
            },
        );
    }
    views
}

impl MeshServiceView {
    /// Gives the view, and each of its destinations, the virtual IP `ip`.
    pub fn set_virtual_ip(&mut self, ip: Ipv4Addr) {
        self.virtual_ip = Some(ip);
        for destination in self.destinations.values_mut() {
            destination.virtual_ip = ip.to_string();
        }
    }

    /// The status the API shows, in Kuma's shape (with `state` computed here rather than
    /// written into the spec): addresses, virtual IPs, counts of dataplane proxies.
    pub fn status(&self, name: &str) -> Value {
        let available = self.destinations.values().any(|d| !d.endpoints.is_empty());
        json!({
            "state": if available { "Available" } else { "Unavailable" },
            "addresses": [{ "hostname": mesh_service::hostname(name) }],
            "vips": self.virtual_ip.map(|ip| json!([{ "ip": ip.to_string() }])).unwrap_or(json!([])),
            "dataplaneProxies": { "total": self.total, "connected": self.connected, "healthy": self.healthy },
        })
    }
}
