//! What the control plane knows of one mesh, rebuilt on every change and shared by the
//! streams of its proxies, each of which derives its own configuration from it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::Utc;
use ipnet::Ipv4Net;
use ward_api::{
    Resource, ResourceType, Spec, SpiffeId,
    dataplane::{BackendRef, Dataplane, SERVICE_TAG, Tags},
    membership,
    mesh::{Mesh, MeshServicesMode},
    mesh_external_service, mesh_service, metrics, policy,
    rules::{self, DataplaneRules, Destination},
};
use ward_proto::discovery::{
    Endpoint, ExternalService, MtlsMode, OutboundDestination, PeerCertificate, ProxyConfig, Service, TagSet,
};

use super::{
    external_services::{self, ExternalServiceView},
    mesh_services::{self, MeshServiceView},
    workload_ids::Issuers,
};
use crate::{
    identity::{BackendCa, Identity, IdentityError},
    store::{IssuedCert, Store, is_identity_backend},
};

/// One mesh at one moment.
#[derive(Debug, Default)]
pub struct MeshSnapshot {
    /// Grows with every snapshot of any mesh.
    pub version: u64,
    /// The Mesh; `None` when it does not exist.
    pub mesh: Option<Mesh>,
    /// The CA of the enabled backend, which signs certificates.
    pub signer: Option<BackendCa>,
    /// Every backend's CA certificate, PEM.
    pub trust_bundle_pem: String,
    /// The mesh's MeshIdentities, the identity each gives its dataplanes, and the trust
    /// domains proxies trust (unused when the mesh's identities come from its mtls backends).
    pub issuers: Issuers,
    /// MeshTrafficPermissions and TrafficPermissions.
    pub permissions: Vec<Resource>,
    /// The policies the rules engine merges (MeshTimeout, ...).
    pub policies: Vec<Resource>,
    /// Every Dataplane, by name.
    pub dataplanes: HashMap<String, Resource>,
    /// Every service with a dataplane, with the endpoints of its connected ones.
    pub services: BTreeMap<String, Service>,
    /// Every MeshService, by name, with a destination per port.
    pub mesh_services: BTreeMap<String, MeshServiceView>,
    /// Every MeshExternalService, by name.
    pub external_services: BTreeMap<String, ExternalServiceView>,
    /// Certificates issued in the mesh and still valid, whose token is not revoked.
    pub issued: Vec<IssuedCert>,
    /// Serials of certificates still valid whose token was revoked, or whose dataplane the
    /// mesh's constraints no longer admit.
    pub revoked_serials: Vec<String>,
    /// Dataplanes the mesh's constraints do not admit, with the reason: no endpoints, no
    /// certificates, and their streams end.
    pub non_members: HashMap<String, String>,
}

impl MeshSnapshot {
    /// Reads mesh `name` from the store; `online` names its connected dataplanes.
    pub async fn build(
        store: &Store,
        identity: &Identity,
        name: &str,
        online: &HashSet<String>,
        vip_range: Ipv4Net,
        version: u64,
    ) -> Result<Self, IdentityError> {
        let Some(resource) = store.get(ResourceType::Mesh, name, name).await? else {
            return Ok(MeshSnapshot { version, ..Default::default() });
        };
        let Spec::Mesh(mesh) = resource.spec else { return Ok(MeshSnapshot { version, ..Default::default() }) };
        // A MeshIdentity's CA vouches for its own trust domain only, never for the mesh's.
        let (identity_cas, cas): (Vec<BackendCa>, Vec<BackendCa>) =
            identity.signing_cas(name).await?.into_iter().partition(|c| is_identity_backend(&c.backend));
        let enabled = mesh.enabled_backend().map(|b| b.name.clone());
        let signer = cas.iter().find(|c| Some(&c.backend) == enabled.as_ref()).cloned();
        let trust_bundle_pem = cas.iter().map(|c| c.ca.cert_pem()).collect();
        let mut identity_resources = Vec::new();
        let mut trust_resources = Vec::new();

        let mut permissions = Vec::new();
        let mut policies = Vec::new();
        let mut dataplanes = HashMap::new();
        let mut non_members = HashMap::new();
        let mut services: BTreeMap<String, Service> = BTreeMap::new();
        let mut mesh_service_resources = Vec::new();
        let mut external_resources = Vec::new();
        for r in store.mesh_resources(name).await? {
            match &r.spec {
                Spec::Dataplane(dp) => {
                    if let Err(refusal) = membership::check(name, &mesh, dp) {
                        non_members.insert(r.meta.name.clone(), refusal.to_string());
                        dataplanes.insert(r.meta.name.clone(), r);
                        continue;
                    }
                    // A gateway serves none; every other dataplane is an endpoint of each inbound's service.
                    services
                        .entry(dp.service().to_string())
                        .or_insert_with(|| Service { name: dp.service().to_string(), ..Default::default() });
                    for inbound in &dp.networking.inbound {
                        let name = inbound.service().unwrap_or(dp.service());
                        let service = services
                            .entry(name.to_string())
                            .or_insert_with(|| Service { name: name.to_string(), ..Default::default() });
                        if service.protocol.is_empty()
                            && let Some(protocol) = inbound.protocol()
                        {
                            service.protocol = protocol.to_string();
                        }
                        // Callers reach ready inbounds, at the advertised or listening address.
                        if online.contains(&r.meta.name) && inbound.listens() && inbound.is_ready() {
                            service.endpoints.push(Endpoint {
                                address: dp.networking.endpoint_address(inbound).to_string(),
                                port: u32::from(inbound.port.0),
                                dataplane: r.meta.name.clone(),
                                tags: inbound.tags.clone().into_iter().collect(),
                                spiffe_id: String::new(),
                            });
                        }
                    }
                    dataplanes.insert(r.meta.name.clone(), r);
                }
                Spec::MeshTrafficPermission(_) | Spec::TrafficPermission(_) => permissions.push(r),
                Spec::MeshTimeout(_)
                | Spec::MeshRetry(_)
                | Spec::MeshCircuitBreaker(_)
                | Spec::MeshFaultInjection(_)
                | Spec::MeshRateLimit(_)
                | Spec::MeshHealthCheck(_)
                | Spec::MeshLoadBalancingStrategy(_)
                | Spec::MeshHTTPRoute(_)
                | Spec::MeshTCPRoute(_)
                | Spec::MeshOPA(_) => policies.push(r),
                Spec::MeshIdentity(_) => identity_resources.push(r),
                Spec::MeshTrust(_) => trust_resources.push(r),
                Spec::MeshService(_) => mesh_service_resources.push(r),
                Spec::MeshExternalService(_) => external_resources.push(r),
                Spec::Mesh(_) | Spec::Secret(_) => {}
            }
        }
        let issuers = Issuers::new(name, &identity_resources, &trust_resources, &identity_cas, &dataplanes);
        issuers.name_endpoints(services.values_mut());
        let mut mesh_services = mesh_services::views(name, &mesh_service_resources, &dataplanes, &non_members, online);
        issuers.name_endpoints(mesh_services.values_mut().flat_map(|v| v.destinations.values_mut()));
        let mut named_secrets = external_services::NamedSecrets::new();
        for r in &external_resources {
            let Spec::MeshExternalService(spec) = &r.spec else { continue };
            for (_, secret) in spec.named_secrets() {
                if let Some(data) = identity.secrets().data(name, &secret).await? {
                    named_secrets.insert(secret, data);
                }
            }
        }
        let mut external_services = external_services::views(&external_resources, &named_secrets);
        let vip_keys: Vec<String> = mesh_services
            .keys()
            .map(|n| mesh_services::vip_key(n))
            .chain(external_services.keys().map(|n| external_services::vip_key(n)))
            .collect();
        let names: Vec<&str> = services.keys().map(String::as_str).chain(vip_keys.iter().map(String::as_str)).collect();
        for (key, ip) in store.virtual_ips(name, &names, vip_range).await? {
            if let Some(s) = services.get_mut(&key) {
                s.virtual_ip = ip.to_string();
            } else if let Some(view) = key.strip_prefix("meshservice/").and_then(|n| mesh_services.get_mut(n)) {
                view.set_virtual_ip(ip);
            } else if let Some(view) =
                key.strip_prefix("meshexternalservice/").and_then(|n| external_services.get_mut(n))
            {
                view.set_virtual_ip(ip);
            }
        }
        let (revoked, issued): (Vec<IssuedCert>, Vec<IssuedCert>) = store
            .issued_certs(name, Utc::now())
            .await?
            .into_iter()
            .partition(|c| identity.is_revoked(&c.token_id) || non_members.contains_key(&c.dataplane));
        let revoked_serials = revoked.into_iter().map(|c| c.serial).collect();
        Ok(MeshSnapshot {
            version,
            mesh: Some(mesh),
            signer,
            trust_bundle_pem,
            issuers,
            permissions,
            policies,
            dataplanes,
            services,
            mesh_services,
            external_services,
            issued,
            revoked_serials,
            non_members,
        })
    }

    /// The configuration of dataplane `name`; `None` when it is not in the mesh (any more).
    pub fn proxy_config(&self, name: &str) -> Option<ProxyConfig> {
        let mesh = self.mesh.as_ref()?;
        let resource = self.dataplanes.get(name)?;
        let Spec::Dataplane(dp) = &resource.spec else { return None };
        let backend = mesh.enabled_backend();
        let workload = self.issuers.of(name).ok();
        let mtls_mode = match backend {
            // A dataplane no MeshIdentity selects has no identity, so no mTLS.
            _ if self.issuers.in_use() => {
                if workload.is_some() {
                    MtlsMode::Strict
                } else {
                    MtlsMode::Disabled
                }
            }
            None => MtlsMode::Disabled,
            Some(b) if b.is_permissive() => MtlsMode::Permissive,
            Some(_) => MtlsMode::Strict,
        };
        let prometheus = metrics::endpoint(mesh, dp, mtls_mode != MtlsMode::Disabled);
        // Under mTLS the metrics endpoint is one more inbound, which permissions may select.
        let with_endpoint = prometheus.as_ref().map(|endpoint| metrics::with_endpoint_inbound(resource, endpoint));
        let seen = with_endpoint.as_ref().unwrap_or(resource);
        let permissions: Vec<Resource> =
            self.permissions.iter().filter(|p| policy::applies_to(p, seen)).cloned().collect();
        let permissions_json = permissions.iter().map(|p| p.to_json().to_string()).collect();
        let mut services = self.reachable_services(mesh, resource, dp);
        services.extend(self.reachable_mesh_services(mesh, dp));
        let external_services = self.reachable_external_services(mesh, resource, dp);
        let rules = self.rules_for(resource, &services, &external_services);
        Some(ProxyConfig {
            version: self.version,
            mesh: resource.meta.mesh.clone(),
            dataplane_json: resource.to_json().to_string(),
            mtls_mode: mtls_mode.into(),
            trust_bundle_pem: self.trust_bundle_pem.clone(),
            certificate_lifetime_seconds: match workload {
                Some((_, issuer)) => issuer.spec.cert_lifetime(),
                None => backend.map_or(Duration::ZERO, |b| b.cert_lifetime()),
            }
            .as_secs(),
            permissions_json,
            services,
            passthrough: mesh.passthrough(),
            enabled_backend: match workload {
                Some((_, issuer)) => issuer.backend(),
                None => backend.map(|b| b.name.clone()).unwrap_or_default(),
            },
            peer_certificates: self.peer_certificates(&permissions),
            revoked_serials: self.revoked_serials.clone(),
            prometheus_json: prometheus
                .map(|p| serde_json::to_string(&p).expect("an endpoint serializes"))
                .unwrap_or_default(),
            external_services,
            outbound_destinations: self.outbound_destinations(dp),
            rules_json: if self.policies.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&rules).expect("rules serialize")
            },
            workload_spiffe_id: workload.map(|(id, _)| id.to_string()).unwrap_or_default(),
            trust_domains: if workload.is_some() { self.issuers.trust_domains.clone() } else { Vec::new() },
            denied_by_header: mesh.denied_by_header(),
        })
    }

    /// The merged policies of dataplane `name` ([`rules::compute`]) for its inbounds and for
    /// every destination its proxy is sent; `None` when it is not in the mesh.
    pub fn rules(&self, name: &str) -> Option<DataplaneRules> {
        let mesh = self.mesh.as_ref()?;
        let resource = self.dataplanes.get(name)?;
        let Spec::Dataplane(dp) = &resource.spec else { return None };
        let mut services = self.reachable_services(mesh, resource, dp);
        services.extend(self.reachable_mesh_services(mesh, dp));
        Some(self.rules_for(resource, &services, &self.reachable_external_services(mesh, resource, dp)))
    }

    /// The rules of the Dataplane `resource` for `services` (by `kuma.io/service` or MeshService
    /// port) and `external` destinations.
    fn rules_for(&self, resource: &Resource, services: &[Service], external: &[ExternalService]) -> DataplaneRules {
        if self.policies.is_empty() {
            return DataplaneRules::default();
        }
        let display = |name: &str, labels: &BTreeMap<String, String>| {
            let mut labels = labels.clone();
            labels.entry("kuma.io/display-name".to_string()).or_insert_with(|| name.to_string());
            labels
        };
        let mut destinations = Vec::new();
        for service in services {
            let port = self.mesh_services.iter().find_map(|(name, view)| {
                let (number, _) = view.destinations.iter().find(|(_, d)| d.name == service.name)?;
                Some((name, view, *number))
            });
            destinations.push(match port {
                Some((name, view, number)) => {
                    let port_name = view.spec.ports.iter().find(|p| p.port.0 == number).and_then(|p| p.name.clone());
                    Destination {
                        key: service.name.clone(),
                        kind: "MeshService".into(),
                        name: name.clone(),
                        sections: port_name.into_iter().chain([number.to_string()]).collect(),
                        labels: display(name, &view.labels),
                    }
                }
                None => Destination {
                    key: service.name.clone(),
                    kind: rules::SERVICE.into(),
                    name: service.name.clone(),
                    sections: Vec::new(),
                    labels: BTreeMap::new(),
                },
            });
        }
        for e in external {
            let labels = self.external_services.get(&e.name).map(|v| display(&e.name, &v.labels)).unwrap_or_default();
            destinations.push(Destination {
                key: mesh_external_service::destination(&e.name),
                kind: "MeshExternalService".into(),
                name: e.name.clone(),
                sections: Vec::new(),
                labels,
            });
        }
        rules::compute(&self.policies, resource, &destinations)
    }

    /// The MeshExternalServices `dp` (the Dataplane `resource`) may be asked for, each with the
    /// decision of the mesh's MeshTrafficPermissions on it as the caller: a denied one keeps its
    /// address (so the proxy can say why it refuses) but not its endpoints or TLS material.
    /// Reached as MeshServices are: by `backendRef`, and by a gateway or a transparent proxy
    /// (narrowed by `reachableBackends`, none under `meshServices.mode: ReachableBackends`
    /// without that list).
    fn reachable_external_services(&self, mesh: &Mesh, resource: &Resource, dp: &Dataplane) -> Vec<ExternalService> {
        let kind = "MeshExternalService";
        let named: BTreeSet<&str> = dp
            .networking
            .outbound
            .iter()
            .filter_map(|o| o.backend_ref.as_ref())
            .filter(|b| b.kind == kind)
            .filter_map(|b| self.backend_name(b))
            .collect();
        let refs = match (&dp.networking.transparent_proxying, &dp.networking.gateway) {
            (_, Some(_)) => None,
            (Some(tp), None) => match &tp.reachable_backends {
                Some(reachable) => Some(reachable.refs.iter().filter(|r| r.kind == kind).collect()),
                None if mesh.mesh_services_mode() == MeshServicesMode::ReachableBackends => Some(Vec::new()),
                None => None,
            },
            (None, None) => Some(Vec::new()),
        };
        let service = dp.service();
        let id = match self.issuers.of(&resource.meta.name) {
            Ok((id, _)) => Ok(id.clone()),
            Err(_) => SpiffeId::for_service(&resource.meta.mesh, service),
        };
        let caller = match id {
            Ok(id) => policy::Caller::Workload { id, tags: Some(policy::caller_tags(dp, service)) },
            Err(_) => policy::Caller::Anonymous,
        };
        self.external_services
            .iter()
            .filter(|(name, view)| {
                named.contains(name.as_str())
                    || refs.as_ref().is_none_or(|refs: &Vec<_>| {
                        refs.iter().any(|r| {
                            r.name.as_ref().is_none_or(|n| n == *name)
                                && r.labels.iter().all(|(k, v)| view.labels.get(k) == Some(v))
                        })
                    })
            })
            .map(|(name, view)| {
                let mut destination = view.destination.clone();
                // Without mTLS no permission is enforced, for inbounds as for these.
                if !destination.denied.is_empty() || (mesh.enabled_backend().is_none() && !self.issuers.in_use()) {
                    return destination;
                }
                let decision = policy::decide_external(&self.permissions, &caller, &resource.meta.mesh, name);
                if !decision.allows() {
                    destination.denied = match &decision.policy {
                        Some(policy) => format!("{policy} denies {service}"),
                        None => format!("no MeshTrafficPermission lets {service} reach it"),
                    };
                    destination.endpoints.clear();
                    destination.tls = None;
                }
                destination
            })
            .collect()
    }

    /// The services (by `kuma.io/service`) `dp` may reach. A gateway, or a transparent proxy
    /// without a `reachableServices` list, may be asked for any (but under the mesh's
    /// `meshServices.mode: Exclusive` a transparent proxy reaches MeshServices only); otherwise
    /// only its outbounds and the services it lists. Services its MeshHTTPRoutes and
    /// MeshTCPRoutes send traffic to are reachable too, when they exist.
    fn reachable_services(&self, mesh: &Mesh, resource: &Resource, dp: &Dataplane) -> Vec<Service> {
        let outbounds = dp.networking.outbound.iter().filter_map(|o| o.tags.get(SERVICE_TAG)).map(String::as_str);
        let exclusive = mesh.mesh_services_mode() == MeshServicesMode::Exclusive;
        let wanted: BTreeSet<&str> = match (&dp.networking.transparent_proxying, &dp.networking.gateway) {
            (Some(_), None) if exclusive => outbounds.collect(),
            (Some(tp), None) if !tp.reachable_services.is_empty() => {
                tp.reachable_services.iter().map(String::as_str).chain(outbounds).collect()
            }
            (Some(_), _) | (_, Some(_)) => self.services.keys().map(String::as_str).collect(),
            (None, None) => outbounds.collect(),
        };
        let routed = rules::routes::backend_names(&self.policies, resource);
        wanted
            .into_iter()
            .chain(routed.iter().map(String::as_str).filter(|s| self.services.contains_key(*s)))
            .collect::<BTreeSet<&str>>()
            .into_iter()
            .map(|s| {
                self.services.get(s).cloned().unwrap_or_else(|| Service { name: s.to_string(), ..Default::default() })
            })
            .collect()
    }

    /// The MeshService ports `dp` may reach: those its outbounds name by `backendRef`, and for
    /// a gateway every one; for a transparent proxy those its `reachableBackends` lists, or
    /// every one when it lists none (none under `meshServices.mode: ReachableBackends`).
    fn reachable_mesh_services(&self, mesh: &Mesh, dp: &Dataplane) -> Vec<Service> {
        let mut wanted: BTreeMap<String, Service> = BTreeMap::new();
        let mut add = |view: &MeshServiceView, port: Option<u32>| {
            for (number, destination) in &view.destinations {
                if port.is_none_or(|p| p == u32::from(*number)) {
                    wanted.insert(destination.name.clone(), destination.clone());
                }
            }
        };
        for backend in dp.networking.outbound.iter().filter_map(|o| o.backend_ref.as_ref()) {
            if backend.kind == "MeshService"
                && let Some(view) = self.backend_name(backend).and_then(|n| self.mesh_services.get(n))
            {
                add(view, backend.port);
            }
        }
        let every = match (&dp.networking.transparent_proxying, &dp.networking.gateway) {
            (_, Some(_)) => true,
            (Some(tp), None) => match &tp.reachable_backends {
                Some(reachable) => {
                    for r in reachable.refs.iter().filter(|r| r.kind == "MeshService") {
                        for (name, view) in &self.mesh_services {
                            let named = r.name.as_ref().is_none_or(|n| n == name);
                            let labelled = r.labels.iter().all(|(k, v)| view.labels.get(k) == Some(v));
                            if named && labelled {
                                add(view, r.port);
                            }
                        }
                    }
                    false
                }
                None => mesh.mesh_services_mode() != MeshServicesMode::ReachableBackends,
            },
            (None, None) => false,
        };
        if every {
            for view in self.mesh_services.values() {
                add(view, None);
            }
        }
        wanted.into_values().collect()
    }

    /// The name of the MeshService or MeshExternalService `backend` references: by name, or the
    /// oldest of those with its labels (at equal age, the first by name), as Kuma resolves it.
    fn backend_name<'a>(&'a self, backend: &'a BackendRef) -> Option<&'a str> {
        if let Some(name) = &backend.name {
            return Some(name);
        }
        if backend.labels.is_empty() {
            return None;
        }
        let labelled = |labels: &Tags| backend.labels.iter().all(|(k, v)| labels.get(k) == Some(v));
        // (creation time, name) of each resource of the kind with those labels.
        let candidates: Vec<(&str, &str)> = match backend.kind.as_str() {
            "MeshService" => self
                .mesh_services
                .iter()
                .filter(|(_, v)| labelled(&v.labels))
                .map(|(n, v)| (v.created.as_str(), n.as_str()))
                .collect(),
            "MeshExternalService" => self
                .external_services
                .iter()
                .filter(|(_, v)| labelled(&v.labels))
                .map(|(n, v)| (v.created.as_str(), n.as_str()))
                .collect(),
            _ => Vec::new(),
        };
        candidates.into_iter().min().map(|(_, name)| name)
    }

    /// The destination of each outbound of `dp` naming its backend by labels, by the outbound's
    /// index; outbounds no resource matches are left out.
    fn outbound_destinations(&self, dp: &Dataplane) -> Vec<OutboundDestination> {
        let by_labels = dp.networking.outbound.iter().enumerate().filter_map(|(i, o)| {
            let backend = o.backend_ref.as_ref().filter(|b| b.name.is_none())?;
            let name = self.backend_name(backend)?;
            let destination = match backend.kind.as_str() {
                "MeshService" => mesh_service::destination(name, u16::try_from(backend.port?).ok()?),
                _ => mesh_external_service::destination(name),
            };
            Some(OutboundDestination { outbound: i as u32, destination })
        });
        by_labels.collect()
    }

    /// The certificates whose holders' tags `permissions` may look at: none when they look at
    /// no tag beyond the service; else those of the services their tag selectors name (or all,
    /// when a selector names no service).
    fn peer_certificates(&self, permissions: &[Resource]) -> Vec<PeerCertificate> {
        let selectors = policy::tag_selectors(permissions);
        if selectors.is_empty() {
            return Vec::new();
        }
        let services: Option<HashSet<&str>> =
            selectors.iter().map(|t| t.get(SERVICE_TAG).filter(|s| *s != "*").map(String::as_str)).collect();
        self.issued
            .iter()
            .filter_map(|cert| {
                let Spec::Dataplane(dp) = &self.dataplanes.get(&cert.dataplane)?.spec else { return None };
                let service = if cert.service.is_empty() { dp.service() } else { cert.service.as_str() };
                if services.as_ref().is_some_and(|s| !s.contains(service)) {
                    return None;
                }
                let tags = policy::caller_tags(dp, service)
                    .into_iter()
                    .map(|t| TagSet { tags: t.into_iter().collect() })
                    .collect();
                Some(PeerCertificate { serial: cert.serial.clone(), dataplane: cert.dataplane.clone(), tags })
            })
            .collect()
    }
}

/// A shared, replaceable snapshot.
pub type SharedSnapshot = Arc<MeshSnapshot>;

#[cfg(test)]
mod tests {
    use serde_json::json;
    use ward_api::parse;

    use super::*;

    /// A snapshot of mesh `m` with services `a`, `b` and `c` and the Dataplane `web-1` whose
    /// networking is `networking`.
    fn snapshot(networking: serde_json::Value) -> MeshSnapshot {
        let mesh = parse::resource(json!({"type": "Mesh", "name": "m"}), "mesh").unwrap();
        let Spec::Mesh(mesh) = mesh.spec else { unreachable!() };
        let dp = json!({"type": "Dataplane", "mesh": "m", "name": "web-1", "networking": networking});
        let dp = parse::resource(dp, "dataplane").unwrap();
        let services = ["a", "b", "c"].map(|s| (s.to_string(), Service { name: s.to_string(), ..Default::default() }));
        MeshSnapshot {
            mesh: Some(mesh),
            dataplanes: [("web-1".to_string(), dp)].into(),
            services: services.into(),
            ..Default::default()
        }
    }

    /// The same in a mesh whose `meshServices.mode` is `mode`, with the MeshServices `x` (ports
    /// 80 and 81, labelled `team: data`) and `y` (port 80).
    fn with_mesh_services(mode: &str, networking: serde_json::Value) -> MeshSnapshot {
        let mut snapshot = snapshot(networking);
        let mesh = json!({"type": "Mesh", "name": "m", "meshServices": {"mode": mode}});
        let Spec::Mesh(mesh) = parse::resource(mesh, "mesh").unwrap().spec else { unreachable!() };
        snapshot.mesh = Some(mesh);
        let x = json!({"type": "MeshService", "mesh": "m", "name": "x", "labels": {"team": "data"},
            "spec": {"ports": [{"port": 80}, {"port": 81}]}});
        let y = json!({"type": "MeshService", "mesh": "m", "name": "y", "spec": {"ports": [{"port": 80}]}});
        let resources = [x, y].map(|r| parse::resource(r, "mesh service").unwrap());
        snapshot.mesh_services =
            mesh_services::views("m", &resources, &snapshot.dataplanes, &HashMap::new(), &HashSet::new());
        snapshot
    }

    /// The services `web-1` is configured to reach.
    fn reached(snapshot: &MeshSnapshot) -> Vec<String> {
        snapshot.proxy_config("web-1").unwrap().services.into_iter().map(|s| s.name).collect()
    }

    #[test]
    fn a_transparent_proxy_reaches_its_reachable_services_and_outbounds_only() {
        let inbound = json!([{"port": 9000, "tags": {"kuma.io/service": "web"}}]);
        let tp = json!({"redirectPortInbound": 15006, "redirectPortOutbound": 15001});
        let every = snapshot(json!({"address": "10.0.0.1", "inbound": inbound, "transparentProxying": tp}));
        assert_eq!(reached(&every), ["a", "b", "c"], "without a list, every service of the mesh");

        let mut listed = tp.clone();
        listed["reachableServices"] = json!(["b"]);
        let outbound = json!([{"port": 7000, "tags": {"kuma.io/service": "c"}}]);
        let narrowed = snapshot(
            json!({"address": "10.0.0.1", "inbound": inbound, "outbound": outbound, "transparentProxying": listed}),
        );
        assert_eq!(reached(&narrowed), ["b", "c"], "the listed service and the explicit outbound");

        let explicit = snapshot(json!({"address": "10.0.0.1", "inbound": inbound, "outbound": outbound}));
        assert_eq!(reached(&explicit), ["c"], "without transparent proxying, the outbounds alone");
    }

    #[test]
    fn mesh_services_are_reached_by_backend_ref_reachable_backends_and_the_mesh_mode() {
        let inbound = json!([{"port": 9000, "tags": {"kuma.io/service": "web"}}]);
        let tp = json!({"redirectPortInbound": 15006, "redirectPortOutbound": 15001});
        let transparent = json!({"address": "10.0.0.1", "inbound": inbound, "transparentProxying": tp});
        let every = ["a", "b", "c", "meshservice/x:80", "meshservice/x:81", "meshservice/y:80"];
        assert_eq!(reached(&with_mesh_services("Disabled", transparent.clone())), every);
        assert_eq!(reached(&with_mesh_services("Everywhere", transparent.clone())), every);
        assert_eq!(
            reached(&with_mesh_services("ReachableBackends", transparent.clone())),
            ["a", "b", "c"],
            "no reachableBackends: no MeshService under ReachableBackends"
        );
        assert_eq!(
            reached(&with_mesh_services("Exclusive", transparent)),
            ["meshservice/x:80", "meshservice/x:81", "meshservice/y:80"],
            "no kuma.io/service virtual IPs under Exclusive"
        );

        let listing = |refs: serde_json::Value| {
            let mut listed = tp.clone();
            listed["reachableBackends"] = json!({"refs": refs});
            with_mesh_services(
                "ReachableBackends",
                json!({"address": "10.0.0.1", "inbound": inbound, "transparentProxying": listed}),
            )
        };
        let cases = [
            (json!([{"kind": "MeshService", "name": "x", "port": 81}]), vec!["meshservice/x:81"]),
            (json!([{"kind": "MeshService", "name": "y"}]), vec!["meshservice/y:80"]),
            (
                json!([{"kind": "MeshService", "labels": {"team": "data"}}]),
                vec!["meshservice/x:80", "meshservice/x:81"],
            ),
            (json!([{"kind": "MeshExternalService", "name": "x"}]), vec![]),
        ];
        for (refs, want) in cases {
            let got: Vec<String> = reached(&listing(refs.clone())).into_iter().filter(|s| s.contains('/')).collect();
            assert_eq!(got, want, "{refs}");
        }

        let outbound = json!([{"port": 7000, "backendRef": {"kind": "MeshService", "name": "x", "port": 80}},
            {"port": 7001, "backendRef": {"kind": "MeshService", "name": "gone", "port": 80}}]);
        let explicit =
            with_mesh_services("Disabled", json!({"address": "10.0.0.1", "inbound": inbound, "outbound": outbound}));
        assert_eq!(reached(&explicit), ["meshservice/x:80"], "without transparent proxying, the backendRefs alone");
    }

    #[test]
    fn a_backend_ref_by_labels_leads_to_the_oldest_resource_with_them() {
        let inbound = json!([{"port": 9000, "tags": {"kuma.io/service": "web"}}]);
        let outbound = json!([
            {"port": 7000, "backendRef": {"kind": "MeshService", "labels": {"team": "data"}, "port": 81}},
            {"port": 7001, "backendRef": {"kind": "MeshService", "labels": {"team": "nobody"}, "port": 80}},
            {"port": 7002, "backendRef": {"kind": "MeshService", "name": "y", "port": 80}},
        ]);
        let mut snapshot =
            with_mesh_services("Disabled", json!({"address": "10.0.0.1", "inbound": inbound, "outbound": outbound}));
        let destinations = |snapshot: &MeshSnapshot| -> Vec<(u32, String)> {
            let config = snapshot.proxy_config("web-1").unwrap();
            config.outbound_destinations.into_iter().map(|o| (o.outbound, o.destination)).collect()
        };
        assert_eq!(reached(&snapshot), ["meshservice/x:81", "meshservice/y:80"]);
        assert_eq!(destinations(&snapshot), [(0, "meshservice/x:81".to_string())], "no MeshService has team: nobody");

        // When y gets the labels too and is older, it is the one.
        let y = snapshot.mesh_services.get_mut("y").unwrap();
        y.labels.insert("team".into(), "data".into());
        y.created = "2026-01-01T00:00:00.000Z".into();
        snapshot.mesh_services.get_mut("x").unwrap().created = "2026-06-01T00:00:00.000Z".into();
        assert_eq!(
            destinations(&snapshot),
            [(0, "meshservice/y:81".to_string())],
            "as Kuma: the oldest, by labels alone"
        );
    }
}
