//! What MeshHTTPRoute and MeshTCPRoute share: the checks of their targetRefs, and the
//! `backendRef` that names where routed traffic goes.

use serde::{Deserialize, Serialize};

use crate::{
    dataplane::Tags,
    error::Causes,
    permission::{ProxyType, TargetKind, TargetRef},
};

/// Where routed traffic goes: a service (a `kuma.io/service` or a MeshService, one port of it
/// by `port` or `sectionName`), or the instances of one with some tags, and its weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendRef {
    /// `MeshService` or `MeshServiceSubset`.
    pub kind: TargetKind,
    /// The service's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The instances' tags (`MeshServiceSubset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// Labels of MeshServices; refused as not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Tags>,
    /// Another mesh; refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<String>,
    /// A Kubernetes namespace; refused as not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A MeshService port's name or number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// The share of traffic, against the other backends' weights (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// A MeshService's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

impl BackendRef {
    /// Its weight (default 1).
    pub fn weight(&self) -> u32 {
        self.weight.unwrap_or(1)
    }

    /// How it reads in reports: `MeshService/NAME[:PORT][{tags}]`.
    pub fn describe(&self) -> String {
        let mut out = format!("{}/{}", self.kind, self.name.as_deref().unwrap_or_default());
        if let Some(port) = self.port.map(|p| p.to_string()).or_else(|| self.section_name.clone()) {
            out.push_str(&format!(":{port}"));
        }
        if let Some(tags) = self.tags.as_ref().filter(|t| !t.is_empty()) {
            let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("{{{}}}", tags.join(",")));
        }
        out
    }

    fn target(&self) -> TargetRef {
        TargetRef {
            kind: self.kind,
            name: self.name.clone(),
            tags: self.tags.clone(),
            labels: self.labels.clone(),
            mesh: self.mesh.clone(),
            namespace: self.namespace.clone(),
            section_name: None,
            proxy_types: None,
        }
    }

    /// Checks a route's `backendRefs[]` entry at `at`.
    pub fn check(&self, at: &str, causes: &mut Causes) {
        self.check_kinds(at, true, causes);
    }

    /// Checks a `requestMirror.backendRef` at `at`: a MeshService or MeshServiceSubset.
    pub fn check_mirror(&self, at: &str, causes: &mut Causes) {
        self.check_kinds(at, false, causes);
    }

    fn check_kinds(&self, at: &str, others: bool, causes: &mut Causes) {
        use TargetKind::*;
        match self.kind {
            MeshService | MeshServiceSubset => {
                self.target().check(at, &[MeshService, MeshServiceSubset], false, causes);
            }
            MeshExternalService | MeshMultiZoneService if others => {
                self.target().check(at, &[self.kind], false, causes);
                if self.kind == MeshMultiZoneService && self.port.is_none() {
                    causes.add(format!("{at}.port"), "must be defined with kind MeshMultiZoneService");
                }
                let why = if self.kind == MeshExternalService {
                    "routes lead to mesh services only; reach a MeshExternalService by its own outbound"
                } else {
                    "Ward runs one zone and has no MeshMultiZoneService"
                };
                causes.unsupported(format!("{at}.kind"), format!("kind {}: {why}", self.kind));
                return;
            }
            _ => {
                let kinds: &[TargetKind] = if others {
                    &[MeshService, MeshServiceSubset, MeshExternalService, MeshMultiZoneService]
                } else {
                    &[MeshService, MeshServiceSubset]
                };
                return self.target().check(at, kinds, false, causes);
            }
        }
        if self.labels.as_ref().is_some_and(|l| !l.is_empty()) {
            causes
                .unsupported(format!("{at}.labels"), "a backend is named by name; Ward does not choose one by labels");
        }
        if self.namespace.as_deref().is_some_and(|n| !n.is_empty()) {
            causes.unsupported(format!("{at}.namespace"), "Ward has no Kubernetes namespaces; name the MeshService");
        }
        if self.port.is_some() && self.section_name.is_some() {
            causes.add(format!("{at}.port"), "cannot be set together with sectionName");
        }
        if self.port.is_some_and(|p| !(1..=65535).contains(&p)) {
            causes.add(format!("{at}.port"), "must be between 1 and 65535");
        }
    }
}

/// Checks a route's top-level targetRef: the callers whose proxies route.
pub fn check_top(target: Option<&TargetRef>, kind: &str, causes: &mut Causes) {
    use TargetKind::*;
    let Some(target) = target else { return };
    let at = "spec.targetRef";
    if target.kind == MeshGateway {
        target.check(at, &[MeshGateway], true, causes);
        causes.unsupported(
            format!("{at}.kind"),
            format!(
                "kind MeshGateway: Ward has no MeshGateway; its edge gateway routes with Kong's routes, not {kind}"
            ),
        );
        return;
    }
    target.check(at, &[Mesh, MeshSubset, MeshService, MeshServiceSubset, Dataplane], true, causes);
    if target.proxy_types.as_ref().is_some_and(|t| t.contains(&ProxyType::Gateway)) {
        causes.unsupported(
            format!("{at}.proxyTypes"),
            format!("Ward has no MeshGateway; its edge gateway routes with Kong's routes, not {kind}"),
        );
    }
    if target.section_name.as_deref().is_some_and(|s| !s.is_empty()) {
        causes.add(format!("{at}.sectionName"), "can only be used with inbound policies (no 'to')");
    }
}

/// Whether a route's top-level targetRef is a MeshGateway (refused as not supported, but its
/// entries are still checked as Kuma checks them).
pub fn on_gateway(target: Option<&TargetRef>) -> bool {
    target.is_some_and(|t| t.kind == TargetKind::MeshGateway)
}

/// Checks a route's `to[].targetRef`: the destination whose traffic is routed (`Mesh` only
/// under a MeshGateway).
pub fn check_to_ref(target: &TargetRef, at: &str, gateway: bool, causes: &mut Causes) {
    use TargetKind::*;
    if gateway {
        return target.check(at, &[Mesh], false, causes);
    }
    match target.kind {
        MeshExternalService | MeshMultiZoneService => {
            target.check(at, &[target.kind], false, causes);
            let why = if target.kind == MeshExternalService {
                "Ward routes traffic toward mesh services only"
            } else {
                "Ward runs one zone and has no MeshMultiZoneService"
            };
            causes.unsupported(format!("{at}.kind"), format!("kind {}: {why}", target.kind));
        }
        _ => target.check(at, &[MeshService, MeshExternalService, MeshMultiZoneService], false, causes),
    }
}
