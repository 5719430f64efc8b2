//! The resource envelope shared by every type: type, mesh, name, labels, version, times.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    dataplane::Dataplane, mesh::Mesh, mesh_circuit_breaker::MeshCircuitBreaker,
    mesh_external_service::MeshExternalService, mesh_fault_injection::MeshFaultInjection,
    mesh_health_check::MeshHealthCheck, mesh_http_route::MeshHttpRoute, mesh_identity::MeshIdentity,
    mesh_load_balancing_strategy::MeshLoadBalancingStrategy, mesh_opa::MeshOpa, mesh_rate_limit::MeshRateLimit,
    mesh_retry::MeshRetry, mesh_service::MeshService, mesh_tcp_route::MeshTcpRoute, mesh_timeout::MeshTimeout,
    mesh_trust::MeshTrust, permission::MeshTrafficPermission, rules::Entries, secret::Secret,
    traffic_permission::TrafficPermission,
};

/// The kinds of resource Ward stores, in the order `ward apply` applies them: a Mesh before
/// what lives in it, Secrets before what may name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceType {
    /// A mesh: a trust domain with its CA backends.
    Mesh,
    /// Opaque bytes of one mesh, such as a provided CA's key.
    Secret,
    /// Opaque bytes of no mesh.
    GlobalSecret,
    /// The identity of selected dataplanes: SPIFFE ID template and issuing CA.
    MeshIdentity,
    /// CA certificates a mesh trusts for a trust domain.
    MeshTrust,
    /// One service instance and its proxy.
    Dataplane,
    /// Which callers may reach which dataplanes (targetRef policy).
    MeshTrafficPermission,
    /// Legacy source/destination permission.
    TrafficPermission,
    /// A destination named as an object: selected dataplanes, ports, a virtual IP.
    MeshService,
    /// A destination outside the mesh: endpoints, a port, TLS origination, a virtual IP.
    MeshExternalService,
    /// Connection and HTTP timeouts of inbounds and outbounds (targetRef policy).
    MeshTimeout,
    /// Retries of outbound traffic (targetRef policy).
    MeshRetry,
    /// Request limits and outlier detection of outbound traffic (targetRef policy).
    MeshCircuitBreaker,
    /// Delays, aborts and slowed responses injected into inbound requests (targetRef policy).
    MeshFaultInjection,
    /// Local rate limits of inbound requests and connections (targetRef policy).
    MeshRateLimit,
    /// Active health probes of outbound destinations (targetRef policy).
    MeshHealthCheck,
    /// The choice of an instance of outbound destinations (targetRef policy).
    MeshLoadBalancingStrategy,
    /// HTTP routes of outbound traffic: matches, filters, weighted backends (targetRef policy).
    MeshHTTPRoute,
    /// TCP routes of outbound traffic: weighted backends (targetRef policy).
    MeshTCPRoute,
    /// Rego policies the callee's proxy evaluates per request (Kong Mesh's targetRef policy).
    MeshOPA,
}

/// Whether a type lives inside a mesh or is global.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Scope {
    /// Global: meshes themselves, and GlobalSecrets.
    Global,
    /// Inside one mesh.
    Mesh,
}

/// Names under which a type is known: API path, CLI aliases, display names.
#[derive(Debug)]
pub struct TypeInfo {
    /// The type.
    pub ty: ResourceType,
    /// `type:` value and singular display name, e.g. `MeshTrafficPermission`.
    pub name: &'static str,
    /// Plural used in API paths, e.g. `meshtrafficpermissions`.
    pub plural: &'static str,
    /// Other names the CLI accepts, e.g. `mtp`, `traffic-permissions`.
    pub aliases: &'static [&'static str],
    /// Global or per mesh.
    pub scope: Scope,
    /// Whether the fields sit in `spec:` (new policies) or inline (Kuma's older types).
    pub has_spec_field: bool,
}

/// Every type; Kuma's older kinds first, as `ward` lists them.
pub const TYPES: &[TypeInfo] = &[
    TypeInfo {
        ty: ResourceType::Mesh,
        name: "Mesh",
        plural: "meshes",
        aliases: &["mesh"],
        scope: Scope::Global,
        has_spec_field: false,
    },
    TypeInfo {
        ty: ResourceType::Dataplane,
        name: "Dataplane",
        plural: "dataplanes",
        aliases: &["dataplane", "dp"],
        scope: Scope::Mesh,
        has_spec_field: false,
    },
    TypeInfo {
        ty: ResourceType::MeshTrafficPermission,
        name: "MeshTrafficPermission",
        plural: "meshtrafficpermissions",
        aliases: &["meshtrafficpermission", "mtp", "mesh-traffic-permissions"],
        scope: Scope::Mesh,
        has_spec_field: true,
    },
    TypeInfo {
        ty: ResourceType::TrafficPermission,
        name: "TrafficPermission",
        plural: "traffic-permissions",
        aliases: &["trafficpermission", "trafficpermissions", "traffic-permission"],
        scope: Scope::Mesh,
        has_spec_field: false,
    },
    TypeInfo {
        ty: ResourceType::MeshService,
        name: "MeshService",
        plural: "meshservices",
        aliases: &["meshservice", "msvc", "mesh-services"],
        scope: Scope::Mesh,
        has_spec_field: true,
    },
    TypeInfo {
        ty: ResourceType::MeshExternalService,
        name: "MeshExternalService",
        plural: "meshexternalservices",
        aliases: &["meshexternalservice", "extsvc", "mesh-external-services"],
        scope: Scope::Mesh,
        has_spec_field: true,
    },
    TypeInfo {
        ty: ResourceType::MeshTimeout,
        name: "MeshTimeout",
        plural: "meshtimeouts",
        aliases: &["meshtimeout", "mt", "mesh-timeouts"],
        scope: Scope::Mesh,
        has_spec_field: true,
    },
    TypeInfo {
        ty: ResourceType::MeshRetry,
        name: "MeshRetry",
        plural: "meshretries",
        aliases: &["meshretry", "mr", "mesh-retries"],
        scope: Scope::Mesh,
        has_spec_field: true,
    },
    TypeInfo {
        ty: ResourceType::MeshCircuitBreaker,
        name: "MeshCircuitBreaker",
        plural: "meshcircuitbreakers",
        aliases: &["meshcircuitbreaker", "mcb", "mesh-circuit-breakers"],
        scope: Scope::Mesh,
        has_spec_field: true,
    },
    TypeInfo {
        ty: ResourceType::MeshFaultInjection,
        name: "MeshFaultInjection",
        plural: "meshfaultinjections",
        aliases: &["meshfaultinjection", "mfi", "mesh-fault-injections"],
        scope: Scope::Mesh,
        has_spec_field: true,
    },
    TypeInfo {
        ty: ResourceType::MeshRateLimit,
        name: "MeshRateLimit",
        plural: "meshratelimits",
        aliases: &["meshratelimit", "mrl", "mesh-rate-limits"],
        scope: Scope::Mesh,
        has_spec_field: true,
    },
    TypeInfo {
        ty: ResourceType::MeshIdentity,
        name: "MeshIdentity",
        plural: "meshidentities",
        aliases: &["meshidentity", "mid", "mesh-identities"],
        scope: Scope::Mesh,
        has_spec_field: true,
    },
    TypeInfo {
        ty: ResourceType::MeshTrust,
        name: "MeshTrust",
        plural: "meshtrusts",
        aliases: &["meshtrust", "mesh-trusts"],
        scope: Scope::Mesh,
        has_spec_field: true,
    },
    TypeInfo {
        ty: ResourceType::MeshHealthCheck,
        name: "MeshHealthCheck",
        plural: "meshhealthchecks",
        aliases: &["meshhealthcheck", "mhc", "mesh-health-checks"],
        scope: Scope::Mesh,
        has_spec_field: true,
    },
    TypeInfo {
        ty: ResourceType::MeshLoadBalancingStrategy,
        name: "MeshLoadBalancingStrategy",
        plural: "meshloadbalancingstrategies",
        aliases: &["meshloadbalancingstrategy", "mlbs", "mesh-load-balancing-strategies"],
        scope: Scope::Mesh,
        has_spec_field: true,
    },
    TypeInfo {
        ty: ResourceType::MeshHTTPRoute,
        name: "MeshHTTPRoute",
        plural: "meshhttproutes",
        aliases: &["meshhttproute", "mhr", "mesh-http-routes"],
        scope: Scope::Mesh,
        has_spec_field: true,
    },
    TypeInfo {
        ty: ResourceType::MeshTCPRoute,
        name: "MeshTCPRoute",
        plural: "meshtcproutes",
        aliases: &["meshtcproute", "mtr", "mesh-tcp-routes"],
        scope: Scope::Mesh,
        has_spec_field: true,
    },
    TypeInfo {
        ty: ResourceType::MeshOPA,
        name: "MeshOPA",
        plural: "meshopas",
        aliases: &["meshopa", "mopa", "mesh-opas"],
        scope: Scope::Mesh,
        has_spec_field: true,
    },
    TypeInfo {
        ty: ResourceType::Secret,
        name: "Secret",
        plural: "secrets",
        aliases: &["secret"],
        scope: Scope::Mesh,
        has_spec_field: false,
    },
    TypeInfo {
        ty: ResourceType::GlobalSecret,
        name: "GlobalSecret",
        plural: "global-secrets",
        aliases: &["globalsecret", "globalsecrets", "global-secret"],
        scope: Scope::Global,
        has_spec_field: false,
    },
];

impl ResourceType {
    /// Names and paths of this type.
    pub fn info(self) -> &'static TypeInfo {
        TYPES.iter().find(|t| t.ty == self).expect("every type is in TYPES")
    }

    /// The type whose `type:` value is `name` (exact, as Kuma requires).
    pub fn from_kind(name: &str) -> Option<Self> {
        TYPES.iter().find(|t| t.name == name).map(|t| t.ty)
    }

    /// The type for a CLI word or API path segment: plural, singular, kind or alias, any case.
    pub fn from_word(word: &str) -> Option<Self> {
        let word = word.to_ascii_lowercase();
        TYPES
            .iter()
            .find(|t| t.plural == word || t.name.to_ascii_lowercase() == word || t.aliases.contains(&word.as_str()))
            .map(|t| t.ty)
    }

    /// The type served under API path segment `plural`.
    pub fn from_plural(plural: &str) -> Option<Self> {
        TYPES.iter().find(|t| t.plural == plural).map(|t| t.ty)
    }

    /// Whether resources of this type live inside a mesh.
    pub fn is_mesh_scoped(self) -> bool {
        self.info().scope == Scope::Mesh
    }

    /// Whether resources of this type hold secret bytes, shown only to admins who ask.
    pub fn is_secret(self) -> bool {
        matches!(self, ResourceType::Secret | ResourceType::GlobalSecret)
    }
}

/// What every resource carries besides its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Its type.
    pub ty: ResourceType,
    /// The mesh it belongs to; for a Mesh, its own name; empty for a GlobalSecret.
    pub mesh: String,
    /// Its name, unique per type and mesh.
    pub name: String,
    /// Free-form labels, matched by `Dataplane` targetRefs.
    pub labels: BTreeMap<String, String>,
    /// Version the store gave it (0 when not stored yet); a write naming a stale version fails.
    pub version: u64,
    /// When it was created (RFC 3339), set by the store.
    pub creation_time: Option<String>,
    /// When it was last changed (RFC 3339), set by the store.
    pub modification_time: Option<String>,
}

impl Meta {
    /// `plural/name`, the way errors name a resource.
    pub fn key(&self) -> String {
        format!("{}/{}", self.ty.info().plural, self.name)
    }
}

/// The typed content of a resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    /// A mesh.
    Mesh(Mesh),
    /// A dataplane.
    Dataplane(Dataplane),
    /// A MeshTrafficPermission.
    MeshTrafficPermission(MeshTrafficPermission),
    /// A legacy TrafficPermission.
    TrafficPermission(TrafficPermission),
    /// A Secret or GlobalSecret.
    Secret(Secret),
    /// A MeshService.
    MeshService(MeshService),
    /// A MeshExternalService.
    MeshExternalService(MeshExternalService),
    /// A MeshTimeout.
    MeshTimeout(MeshTimeout),
    /// A MeshRetry.
    MeshRetry(MeshRetry),
    /// A MeshCircuitBreaker.
    MeshCircuitBreaker(MeshCircuitBreaker),
    /// A MeshFaultInjection.
    MeshFaultInjection(MeshFaultInjection),
    /// A MeshRateLimit.
    MeshRateLimit(MeshRateLimit),
    /// A MeshIdentity.
    MeshIdentity(MeshIdentity),
    /// A MeshTrust.
    MeshTrust(MeshTrust),
    /// A MeshHealthCheck.
    MeshHealthCheck(MeshHealthCheck),
    /// A MeshLoadBalancingStrategy.
    MeshLoadBalancingStrategy(MeshLoadBalancingStrategy),
    /// A MeshHTTPRoute.
    MeshHTTPRoute(MeshHttpRoute),
    /// A MeshTCPRoute.
    MeshTCPRoute(MeshTcpRoute),
    /// A MeshOPA.
    MeshOPA(MeshOpa),
}

impl Spec {
    /// The entries of a policy the rules engine merges ([`crate::rules`]); `None` for other kinds.
    pub fn targeted(&self) -> Option<Entries<'_>> {
        match self {
            Spec::MeshTimeout(p) => Some(p.entries()),
            Spec::MeshRetry(p) => Some(p.entries()),
            Spec::MeshCircuitBreaker(p) => Some(p.entries()),
            Spec::MeshFaultInjection(p) => Some(p.entries()),
            Spec::MeshRateLimit(p) => Some(p.entries()),
            Spec::MeshHealthCheck(p) => Some(p.entries()),
            Spec::MeshLoadBalancingStrategy(p) => Some(p.entries()),
            Spec::MeshHTTPRoute(p) => Some(p.entries()),
            Spec::MeshTCPRoute(p) => Some(p.entries()),
            Spec::MeshOPA(p) => Some(p.entries()),
            _ => None,
        }
    }
}

/// A validated resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Type, mesh, name, labels, version and times.
    pub meta: Meta,
    /// Typed content.
    pub spec: Spec,
}

impl Resource {
    /// The resource as Kuma's Universal JSON: envelope fields, then `spec` or inline fields.
    pub fn to_json(&self) -> serde_json::Value {
        let info = self.meta.ty.info();
        let mut out = serde_json::Map::new();
        out.insert("type".into(), info.name.into());
        if self.meta.ty.is_mesh_scoped() {
            out.insert("mesh".into(), self.meta.mesh.clone().into());
        }
        out.insert("name".into(), self.meta.name.clone().into());
        if !self.meta.labels.is_empty() {
            out.insert("labels".into(), serde_json::to_value(&self.meta.labels).expect("labels serialize"));
        }
        if self.meta.version > 0 {
            out.insert("version".into(), self.meta.version.into());
        }
        if let Some(t) = &self.meta.creation_time {
            out.insert("creationTime".into(), t.clone().into());
        }
        if let Some(t) = &self.meta.modification_time {
            out.insert("modificationTime".into(), t.clone().into());
        }
        let spec = match &self.spec {
            Spec::Secret(secret) => secret.shown_json(),
            _ => self.spec_json(),
        };
        if info.has_spec_field {
            out.insert("spec".into(), spec);
        } else if let serde_json::Value::Object(fields) = spec {
            out.extend(fields);
        }
        serde_json::Value::Object(out)
    }

    /// Fields accepted that have no effect in Ward, each with its path and the reason.
    pub fn warnings(&self) -> Vec<crate::error::Cause> {
        let mut warnings = crate::error::Warnings::default();
        match &self.spec {
            Spec::Mesh(s) => s.warnings(&mut warnings),
            Spec::Dataplane(s) => s.warnings(&mut warnings),
            Spec::MeshService(s) => s.warnings(&mut warnings),
            Spec::MeshExternalService(s) => s.warnings(&mut warnings),
            Spec::MeshTrust(s) => s.warnings(&mut warnings),
            Spec::MeshTrafficPermission(_)
            | Spec::TrafficPermission(_)
            | Spec::Secret(_)
            | Spec::MeshTimeout(_)
            | Spec::MeshRetry(_)
            | Spec::MeshCircuitBreaker(_) => {}
            Spec::MeshFaultInjection(_)
            | Spec::MeshRateLimit(_)
            | Spec::MeshIdentity(_)
            | Spec::MeshHealthCheck(_)
            | Spec::MeshLoadBalancingStrategy(_)
            | Spec::MeshHTTPRoute(_)
            | Spec::MeshTCPRoute(_)
            | Spec::MeshOPA(_) => {}
        }
        warnings.0
    }

    /// The typed content alone, as JSON (what the store keeps). A Secret's data that is not
    /// sealed yet has no stored form and reads as `null`, which the store refuses.
    pub fn spec_json(&self) -> serde_json::Value {
        let value = match &self.spec {
            Spec::Mesh(s) => serde_json::to_value(s),
            Spec::Dataplane(s) => serde_json::to_value(s),
            Spec::MeshTrafficPermission(s) => serde_json::to_value(s),
            Spec::TrafficPermission(s) => serde_json::to_value(s),
            Spec::MeshService(s) => serde_json::to_value(s),
            Spec::MeshExternalService(s) => serde_json::to_value(s),
            Spec::MeshTimeout(s) => serde_json::to_value(s),
            Spec::MeshRetry(s) => serde_json::to_value(s),
            Spec::MeshCircuitBreaker(s) => serde_json::to_value(s),
            Spec::MeshFaultInjection(s) => serde_json::to_value(s),
            Spec::MeshRateLimit(s) => serde_json::to_value(s),
            Spec::MeshIdentity(s) => serde_json::to_value(s),
            Spec::MeshTrust(s) => serde_json::to_value(s),
            Spec::MeshHealthCheck(s) => serde_json::to_value(s),
            Spec::MeshLoadBalancingStrategy(s) => serde_json::to_value(s),
            Spec::MeshHTTPRoute(s) => serde_json::to_value(s),
            Spec::MeshTCPRoute(s) => serde_json::to_value(s),
            Spec::MeshOPA(s) => serde_json::to_value(s),
            Spec::Secret(s) => Ok(s.stored_json().unwrap_or(serde_json::Value::Null)),
        };
        value.expect("specs always serialize")
    }
}
