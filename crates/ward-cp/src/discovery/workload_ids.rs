//! Identities of a mesh configured by MeshIdentity: which one applies to each dataplane, the
//! SPIFFE ID it renders for it and the CA that signs it, and the trust domains proxies trust.

use std::{collections::HashMap, sync::Arc};

use ward_api::{
    Resource, Spec, SpiffeId,
    mesh_identity::{self, MeshIdentity},
};
use ward_pki::Ca;
use ward_proto::discovery::{Service, TrustDomain};

use crate::{identity::BackendCa, store::identity_backend};

/// The label naming a dataplane's workload, which MeshIdentity path templates render.
pub const WORKLOAD_LABEL: &str = "kuma.io/workload";

/// One MeshIdentity of the mesh, ready to issue.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// The MeshIdentity's name.
    pub name: String,
    /// Its spec.
    pub spec: MeshIdentity,
    /// Its rendered trust domain.
    pub trust_domain: String,
    /// Its CA; `None` when the store holds none (it signs nothing then).
    pub ca: Option<Arc<Ca>>,
}

impl Issuer {
    /// The backend name certificates it signs carry.
    pub fn backend(&self) -> String {
        identity_backend(&self.name)
    }
}

/// A dataplane's identity under MeshIdentity.
#[derive(Debug, Clone)]
pub struct WorkloadId {
    /// Its SPIFFE ID.
    pub id: SpiffeId,
    /// Index of the issuing MeshIdentity in [`Issuers::issuers`].
    pub issuer: usize,
}

/// The MeshIdentities of one mesh and what they give each dataplane.
#[derive(Debug, Clone, Default)]
pub struct Issuers {
    /// Every MeshIdentity of the mesh whose trust domain renders, by name.
    pub issuers: Vec<Issuer>,
    /// The identity of each dataplane a MeshIdentity selects, by dataplane name.
    pub workloads: HashMap<String, WorkloadId>,
    /// Why a dataplane a MeshIdentity selects has no identity, by dataplane name.
    pub failures: HashMap<String, String>,
    /// CAs of the trust domains proxies trust besides the mesh's own: each MeshIdentity's that
    /// creates trust, and each MeshTrust's.
    pub trust_domains: Vec<TrustDomain>,
}

impl Issuers {
    /// Reads the mesh's MeshIdentities and MeshTrusts, with the identity CAs of `cas`, and
    /// renders the identity of each of `dataplanes`.
    pub fn new(
        mesh: &str,
        identities: &[Resource],
        trusts: &[Resource],
        cas: &[BackendCa],
        dataplanes: &HashMap<String, Resource>,
    ) -> Self {
        let mut out = Issuers::default();
        for r in identities {
            let Spec::MeshIdentity(spec) = &r.spec else { continue };
            let trust_domain = match spec.trust_domain(mesh, &r.meta.labels) {
                Ok(domain) => domain,
                Err(reason) => {
                    tracing::warn!(%mesh, identity = %r.meta.name, %reason, "MeshIdentity's trust domain does not render");
                    continue;
                }
            };
            let backend = identity_backend(&r.meta.name);
            let ca = cas.iter().find(|c| c.backend == backend).map(|c| Arc::clone(&c.ca));
            if let Some(ca) = ca.as_ref().filter(|_| spec.creates_trust()) {
                add_domain(&mut out.trust_domains, &trust_domain, ca.cert_pem());
            }
            out.issuers.push(Issuer { name: r.meta.name.clone(), spec: spec.clone(), trust_domain, ca });
        }
        for r in trusts {
            let Spec::MeshTrust(trust) = &r.spec else { continue };
            for pem in trust.pems() {
                add_domain(&mut out.trust_domains, trust.trust_domain(), pem);
            }
        }
        for (name, r) in dataplanes {
            let Spec::Dataplane(dp) = &r.spec else { continue };
            let candidates = out.issuers.iter().map(|i| (i.name.as_str(), &i.spec));
            let Some((chosen, spec)) = mesh_identity::best_match(candidates, &r.meta.labels) else { continue };
            let issuer = out.issuers.iter().position(|i| i.name == chosen).expect("chosen among them");
            let workload = r.meta.labels.get(WORKLOAD_LABEL).map_or(dp.service(), String::as_str);
            match spec.spiffe_id(&out.issuers[issuer].trust_domain, workload) {
                Ok(id) => {
                    out.workloads.insert(name.clone(), WorkloadId { id, issuer });
                }
                Err(reason) => {
                    out.failures.insert(name.clone(), format!("MeshIdentity {chosen}: {reason}"));
                }
            }
        }
        out
    }

    /// Whether the mesh's identities come from MeshIdentities.
    pub fn in_use(&self) -> bool {
        !self.issuers.is_empty()
    }

    /// The identity and issuer of dataplane `name`, or why it has none.
    pub fn of(&self, name: &str) -> Result<(&SpiffeId, &Issuer), String> {
        match self.workloads.get(name) {
            Some(w) => Ok((&w.id, &self.issuers[w.issuer])),
            None => Err(self.failures.get(name).cloned().unwrap_or_else(|| {
                format!("no MeshIdentity selects dataplane {name}: it has no identity in this mesh")
            })),
        }
    }

    /// Makes the endpoints of `services` expect the identity their dataplane has.
    pub fn name_endpoints<'a>(&self, services: impl IntoIterator<Item = &'a mut Service>) {
        for service in services {
            for endpoint in &mut service.endpoints {
                if let Some(w) = self.workloads.get(&endpoint.dataplane) {
                    endpoint.spiffe_id = w.id.to_string();
                }
            }
        }
    }
}

/// Adds `pem` to the CAs of `domain`.
fn add_domain(domains: &mut Vec<TrustDomain>, domain: &str, pem: &str) {
    let index = match domains.iter().position(|d| d.trust_domain == domain) {
        Some(i) => i,
        None => {
            domains.push(TrustDomain { trust_domain: domain.to_string(), ca_pem: String::new() });
            domains.len() - 1
        }
    };
    let ca_pem = &mut domains[index].ca_pem;
    ca_pem.push_str(pem.trim_end());
    ca_pem.push('\n');
}
