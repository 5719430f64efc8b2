//! The `Mesh` resource: mTLS backends (certificate authorities) and networking.

use serde::{Deserialize, Serialize};

use crate::{
    dataplane::{MetricsBackend, Tags, check_metrics_backend, check_selector},
    duration::KumaDuration,
    error::{Causes, Warnings},
    names::check_name,
};

/// Shortest certificate lifetime a mesh accepts.
pub const MIN_CERT_LIFETIME_SECS: u64 = 10;

/// A mesh: its CA backends and outbound networking.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mesh {
    /// Mutual TLS settings; absent means mTLS is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<Mtls>,
    /// Networking settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<Networking>,
    /// Kuma's tracing backends; Ward's proxy does not trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Tracing>,
    /// Kuma's access log backends; Ward's proxy logs to its own output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Prometheus backends: the enabled one has every proxy of the mesh serve its metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// Kuma's routing switches, for zones and locality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
    /// Which dataplanes may join the mesh, by their tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Constraints>,
    /// Default policies Kuma would not create for this mesh; Ward creates none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_creating_initial_policies: Option<Vec<String>>,
    /// Kuma's MeshService generation mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_services: Option<MeshServices>,
    /// Ward's own settings, kept apart from Kuma's fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ward: Option<WardSettings>,
}

/// `ward`: settings of a mesh that Kuma does not have.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WardSettings {
    /// Whether the answer to a refused request names the deciding policy in `x-ward-denied-by`
    /// (default false: policy names are internal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_by_header: Option<bool>,
}

/// `tracing` of a mesh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tracing {
    /// Name of the backend used by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<String>,
    /// The backends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<TracingBackend>,
}

/// One tracing backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingBackend {
    /// Name, unique within the mesh.
    #[serde(default)]
    pub name: String,
    /// Percentage of requests traced, 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<f64>,
    /// `zipkin` or `datadog`.
    #[serde(rename = "type", default)]
    pub ty: String,
    /// Type-specific settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<serde_json::Value>,
}

/// `conf` of a zipkin tracing backend.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ZipkinConf {
    #[serde(default)]
    url: String,
    #[serde(default, rename = "traceId128bit")]
    _trace_id_128bit: Option<bool>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default, rename = "sharedSpanContext")]
    _shared_span_context: Option<bool>,
}

/// `conf` of a datadog tracing backend.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DatadogConf {
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u32,
    #[serde(default, rename = "splitService")]
    _split_service: Option<bool>,
}

/// `logging` of a mesh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Logging {
    /// Name of the backend used by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<String>,
    /// The backends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<LoggingBackend>,
}

/// One access log backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingBackend {
    /// Name, unique within the mesh.
    #[serde(default)]
    pub name: String,
    /// Format of each line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `file` or `tcp`.
    #[serde(rename = "type", default)]
    pub ty: String,
    /// Type-specific settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<serde_json::Value>,
}

/// `conf` of a file or tcp logging backend.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoggingConf {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    address: Option<String>,
}

/// `metrics` of a mesh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metrics {
    /// Name of the backend in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_backend: Option<String>,
    /// The backends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<MetricsBackend>,
}

/// `routing` of a mesh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Routing {
    /// Prefer endpoints in the caller's locality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_aware_load_balancing: Option<bool>,
    /// Send cross-zone and external traffic through zone egress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_egress: Option<bool>,
    /// Forbid MeshExternalService access unless a permission allows it (Ward always does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_forbid_mesh_external_service_access: Option<bool>,
}

/// `constraints` of a mesh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Constraints {
    /// Rules on the tags of dataplanes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_proxy: Option<DataplaneProxyConstraints>,
}

/// `constraints.dataplaneProxy`: a dataplane must match a requirement (when there are any)
/// and no restriction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneProxyConstraints {
    /// Tag selectors of which a dataplane must match at least one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requirements: Vec<TagRule>,
    /// Tag selectors of which a dataplane must match none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restrictions: Vec<TagRule>,
}

/// One constraint: a tag selector (`*` matches any value).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagRule {
    /// The tags.
    #[serde(default)]
    pub tags: Tags,
}

string_enum! {
    /// Kuma's MeshService generation modes.
    pub enum MeshServicesMode {
        /// None generated; those defined are used.
        Disabled = "Disabled",
        /// Generated and used everywhere.
        Everywhere = "Everywhere",
        /// Transparent proxies reach those their `reachableBackends` list, and no other.
        ReachableBackends = "ReachableBackends",
        /// Transparent proxies reach MeshServices, not `kuma.io/service` virtual IPs.
        Exclusive = "Exclusive",
    }
}

/// `meshServices` of a mesh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshServices {
    /// The mode (default Disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MeshServicesMode>,
}

/// `mtls`: the CA backends and which one issues new certificates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mtls {
    /// Name of the backend that issues certificates; absent means mTLS is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_backend: Option<String>,
    /// Every backend; all of them are trusted.
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// Kuma's switch to skip checking a provided CA; Ward always checks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_validation: Option<bool>,
}

string_enum! {
    /// Where a backend's CA comes from.
    pub enum BackendType {
        /// Generated by the control plane.
        Builtin = "builtin",
        /// Given by the user as PEM.
        Provided = "provided",
        /// HashiCorp Vault, which Ward does not talk to.
        Vault = "vault",
        /// AWS Private CA, which Ward does not talk to.
        AcmPca = "acmpca",
        /// cert-manager on Kubernetes, which Ward does not talk to.
        CertManager = "certmanager",
    }
}

string_enum! {
    /// Whether plaintext is still accepted.
    pub enum MtlsMode {
        /// Only mTLS.
        Strict = "STRICT",
        /// mTLS and, as an anonymous caller, plaintext.
        Permissive = "PERMISSIVE",
    }
}

/// One certificate authority of a mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Backend {
    /// Name, unique within the mesh.
    pub name: String,
    /// `builtin` or `provided`.
    #[serde(rename = "type")]
    pub ty: BackendType,
    /// `STRICT` (default) or `PERMISSIVE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
    /// Lifetime of the certificates it issues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp_cert: Option<DpCert>,
    /// Type-specific settings, checked against [`BuiltinConf`] or [`ProvidedConf`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<serde_json::Value>,
    /// Kuma's timeout for fetching the root chain from an external CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_chain: Option<RootChain>,
}

/// `rootChain` of a backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RootChain {
    /// Time allowed for the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<KumaDuration>,
}

/// `dpCert`: settings of dataplane certificates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DpCert {
    /// `rotation.expiration`: certificate lifetime.
    pub rotation: Rotation,
    /// Kuma's timeout for requesting a certificate from an external CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<KumaDuration>,
}

/// `dpCert.rotation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rotation {
    /// Lifetime of each certificate (default 24h).
    pub expiration: KumaDuration,
}

/// `conf` of a builtin backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BuiltinConf {
    /// The generated root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<CaCertConf>,
}

/// `conf.caCert` of a builtin backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaCertConf {
    /// RSA key size; absent means ECDSA P-256.
    #[serde(rename = "RSAbits", default, skip_serializing_if = "Option::is_none")]
    pub rsa_bits: Option<u32>,
    /// Lifetime of the root (default 10y).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<KumaDuration>,
}

/// `conf` of a provided backend: the CA certificate and key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidedConf {
    /// The CA certificate (PEM).
    pub cert: DataSource,
    /// The CA private key (PEM).
    pub key: DataSource,
}

/// Where a PEM document comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum DataSource {
    /// A file on the control plane's host, read when the mesh is applied.
    File(String),
    /// Base64 of the PEM.
    Inline(String),
    /// The PEM text itself.
    InlineString(String),
    /// A Secret of the mesh, by name; or `mesh-ca/<mesh>/<backend>` (no Secret's name), the
    /// sealed copy of a key given inline, which is what such a key becomes once applied, so
    /// the stored Mesh never holds a private key.
    Secret(String),
}

/// `networking` of a mesh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Networking {
    /// Outbound settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<OutboundNetworking>,
}

/// `networking.outbound` of a mesh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutboundNetworking {
    /// Whether traffic to destinations outside the mesh may pass (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough: Option<bool>,
}

impl Mesh {
    /// The backend that issues certificates, when mTLS is enabled.
    pub fn enabled_backend(&self) -> Option<&Backend> {
        let mtls = self.mtls.as_ref()?;
        let name = mtls.enabled_backend.as_deref()?;
        mtls.backends.iter().find(|b| b.name == name)
    }

    /// How MeshServices are used (`meshServices.mode`, default Disabled).
    pub fn mesh_services_mode(&self) -> MeshServicesMode {
        self.mesh_services.as_ref().and_then(|m| m.mode).unwrap_or(MeshServicesMode::Disabled)
    }

    /// Whether refusals name the deciding policy in `x-ward-denied-by`.
    pub fn denied_by_header(&self) -> bool {
        self.ward.as_ref().and_then(|w| w.denied_by_header).unwrap_or(false)
    }

    /// Whether traffic to unknown destinations may leave directly.
    pub fn passthrough(&self) -> bool {
        self.networking.as_ref().and_then(|n| n.outbound.as_ref()).and_then(|o| o.passthrough).unwrap_or(true)
    }

    /// The Secrets of this mesh that its provided backends name, each with the field naming it
    /// (e.g. `mtls.backends[0].conf.key.secret`). The sealed copy of a key given inline is not
    /// a Secret: its reference is no resource name.
    pub fn named_secrets(&self) -> Vec<(String, String)> {
        let backends = self.mtls.iter().flat_map(|m| m.backends.iter().enumerate());
        let provided = backends.filter(|(_, b)| b.ty == BackendType::Provided);
        let confs = provided.filter_map(|(i, b)| Some((i, b.provided_conf().ok()?)));
        confs
            .flat_map(|(i, conf)| [(i, "cert", conf.cert), (i, "key", conf.key)])
            .filter_map(|(i, part, source)| match source {
                DataSource::Secret(name) if check_name(&name).is_ok() => {
                    Some((format!("mtls.backends[{i}].conf.{part}.secret"), name))
                }
                _ => None,
            })
            .collect()
    }

    /// Checks what serde cannot: names, references between fields, bounds.
    pub fn check(&self, causes: &mut Causes) {
        self.check_observability(causes);
        if let Some(rules) = self.constraints.as_ref().and_then(|c| c.dataplane_proxy.as_ref()) {
            for (field, list) in [("requirements", &rules.requirements), ("restrictions", &rules.restrictions)] {
                for (i, rule) in list.iter().enumerate() {
                    let at = format!("constraints.dataplaneProxy.{field}[{i}].tags");
                    if rule.tags.is_empty() {
                        causes.add(&at, "must have at least one tag");
                    }
                    check_selector(&at, &rule.tags, causes);
                }
            }
        }
        if self.routing.as_ref().and_then(|r| r.zone_egress) == Some(true)
            && self.mtls.as_ref().and_then(|m| m.enabled_backend.as_ref()).is_none()
        {
            causes.add("mtls", "must be enabled when routing.zoneEgress is true");
        }
        let Some(mtls) = &self.mtls else { return };
        for (i, backend) in mtls.backends.iter().enumerate() {
            let at = format!("mtls.backends[{i}]");
            if let Err(e) = check_name(&backend.name) {
                causes.add(format!("{at}.name"), e);
            }
            if mtls.backends[..i].iter().any(|b| b.name == backend.name) {
                causes.add(format!("{at}.name"), format!("backend {:?} is defined more than once", backend.name));
            }
            if let Some(dp) = &backend.dp_cert
                && dp.rotation.expiration.get().as_secs() < MIN_CERT_LIFETIME_SECS
            {
                causes.add(
                    format!("{at}.dpCert.rotation.expiration"),
                    format!("must be at least {MIN_CERT_LIFETIME_SECS}s"),
                );
            }
            if matches!(backend.ty, BackendType::Vault | BackendType::AcmPca | BackendType::CertManager) {
                causes.unsupported(
                    format!("{at}.type"),
                    format!("Ward issues certificates only from builtin and provided CAs, not {}", backend.ty),
                );
            } else {
                backend.check_conf(&format!("{at}.conf"), causes);
            }
        }
        if let Some(enabled) = &mtls.enabled_backend
            && !mtls.backends.iter().any(|b| &b.name == enabled)
        {
            let names: Vec<&str> = mtls.backends.iter().map(|b| b.name.as_str()).collect();
            let message = if names.is_empty() {
                format!("names backend {enabled:?} but no backends are defined")
            } else {
                format!("names backend {enabled:?}, which is not one of the backends ({})", names.join(", "))
            };
            causes.add("mtls.enabledBackend", message);
        }
    }
}

impl Mesh {
    fn check_observability(&self, causes: &mut Causes) {
        if let Some(tracing) = &self.tracing {
            let names: Vec<&str> = tracing.backends.iter().map(|b| b.name.as_str()).collect();
            check_backend_names("tracing", &names, tracing.default_backend.as_deref(), "defaultBackend", causes);
            for (i, backend) in tracing.backends.iter().enumerate() {
                let at = format!("tracing.backends[{i}]");
                if backend.sampling.is_some_and(|s| !(0.0..=100.0).contains(&s)) {
                    causes.add(format!("{at}.sampling"), "must be between 0 and 100");
                }
                let conf = backend.conf.clone().unwrap_or(serde_json::Value::Object(Default::default()));
                let conf_at = format!("{at}.conf");
                match backend.ty.as_str() {
                    "zipkin" => match crate::parse::typed::<ZipkinConf>(&conf_at, conf) {
                        Ok(c) => {
                            if c.api_version
                                .as_deref()
                                .is_some_and(|v| !["httpJsonV1", "httpJson", "httpProto"].contains(&v))
                            {
                                causes.add(
                                    format!("{conf_at}.apiVersion"),
                                    "must be one of httpJsonV1, httpJson, httpProto",
                                );
                            }
                            if let Err(e) = check_url_with_port(&c.url) {
                                causes.add(format!("{conf_at}.url"), e);
                            }
                        }
                        Err(cause) => causes.0.push(cause),
                    },
                    "datadog" => match crate::parse::typed::<DatadogConf>(&conf_at, conf) {
                        Ok(c) => {
                            if c.address.is_empty() {
                                causes.add(format!("{conf_at}.address"), "must not be empty");
                            }
                            if !(1..=65535).contains(&c.port) {
                                causes.add(format!("{conf_at}.port"), "must be a port number between 1 and 65535");
                            }
                        }
                        Err(cause) => causes.0.push(cause),
                    },
                    _ => causes.add(format!("{at}.type"), "must be one of zipkin, datadog"),
                }
            }
        }
        if let Some(logging) = &self.logging {
            let names: Vec<&str> = logging.backends.iter().map(|b| b.name.as_str()).collect();
            check_backend_names("logging", &names, logging.default_backend.as_deref(), "defaultBackend", causes);
            for (i, backend) in logging.backends.iter().enumerate() {
                let at = format!("logging.backends[{i}]");
                let conf = backend.conf.clone().unwrap_or(serde_json::Value::Object(Default::default()));
                let conf_at = format!("{at}.conf");
                let conf = match crate::parse::typed::<LoggingConf>(&conf_at, conf) {
                    Ok(c) => c,
                    Err(cause) => {
                        causes.0.push(cause);
                        continue;
                    }
                };
                match backend.ty.as_str() {
                    "file" => {
                        if conf.path.as_deref().unwrap_or("").is_empty() {
                            causes.add(format!("{conf_at}.path"), "must not be empty");
                        }
                    }
                    "tcp" => match conf.address.as_deref().unwrap_or("") {
                        "" => causes.add(format!("{conf_at}.address"), "must not be empty"),
                        address => {
                            let ok = split_host_port(address).is_some();
                            if !ok {
                                causes.add(format!("{conf_at}.address"), "must be HOST:PORT");
                            }
                        }
                    },
                    _ => causes.add(format!("{at}.type"), "must be one of file, tcp"),
                }
            }
        }
        if let Some(metrics) = &self.metrics {
            let names: Vec<&str> = metrics.backends.iter().map(|b| b.name.as_deref().unwrap_or("")).collect();
            check_backend_names("metrics", &names, metrics.enabled_backend.as_deref(), "enabledBackend", causes);
            for (i, backend) in metrics.backends.iter().enumerate() {
                check_metrics_backend(&format!("metrics.backends[{i}]"), backend, causes);
            }
        }
    }

    /// Fields accepted that have no effect in Ward, and why.
    pub fn warnings(&self, warnings: &mut Warnings) {
        if self.tracing.is_some() {
            warnings.add("tracing", "Ward's proxy does not send traces");
        }
        if self.logging.is_some() {
            warnings.add("logging", "Ward's proxy writes its access log to its own output, not to these backends");
        }
        if let Some(routing) = &self.routing {
            for (field, on) in [
                ("localityAwareLoadBalancing", routing.locality_aware_load_balancing),
                ("zoneEgress", routing.zone_egress),
            ] {
                if on == Some(true) {
                    warnings.add(format!("routing.{field}"), "Ward has no zones or zone egress; this has no effect");
                }
            }
            if routing.default_forbid_mesh_external_service_access == Some(false) {
                warnings.add(
                    "routing.defaultForbidMeshExternalServiceAccess",
                    "Ward always forbids MeshExternalService access (with mTLS on) unless a MeshTrafficPermission \
                     targeting the MeshExternalService allows the caller; false has no effect",
                );
            }
        }
        if self.skip_creating_initial_policies.as_ref().is_some_and(|l| !l.is_empty()) {
            warnings
                .add("skipCreatingInitialPolicies", "Ward creates no default policies for a mesh, so none are skipped");
        }
        let Some(mtls) = &self.mtls else { return };
        if mtls.skip_validation == Some(true) {
            warnings.add("mtls.skipValidation", "Ward always checks a provided CA");
        }
        for (i, backend) in mtls.backends.iter().enumerate() {
            if backend.dp_cert.as_ref().is_some_and(|d| d.request_timeout.is_some()) {
                warnings.add(
                    format!("mtls.backends[{i}].dpCert.requestTimeout"),
                    "Ward signs certificates itself: there is no request to an outside CA to time out",
                );
            }
            if backend.root_chain.is_some() {
                warnings.add(
                    format!("mtls.backends[{i}].rootChain"),
                    "Ward signs certificates itself: there is no request to an outside CA to time out",
                );
            }
        }
    }
}

/// Checks backend names are set and unique, and that `default` (at `default_field`) names one.
fn check_backend_names(at: &str, names: &[&str], default: Option<&str>, default_field: &str, causes: &mut Causes) {
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            causes.add(format!("{at}.backends[{i}].name"), "must not be empty");
        } else if names[..i].contains(name) {
            causes.add(format!("{at}.backends[{i}].name"), format!("backend {name:?} is defined more than once"));
        }
    }
    if let Some(default) = default.filter(|d| !d.is_empty())
        && !names.contains(&default)
    {
        causes.add(
            format!("{at}.{default_field}"),
            format!("names backend {default:?}, which is not one of the backends"),
        );
    }
}

/// `HOST:PORT` split as Go's net.SplitHostPort does: an IPv6 host is bracketed, and
/// neither part is empty.
fn split_host_port(address: &str) -> Option<(&str, &str)> {
    let (host, port) = match address.strip_prefix('[') {
        Some(rest) => {
            let (host, rest) = rest.split_once(']')?;
            (host, rest.strip_prefix(':')?)
        }
        None => address.split_once(':').filter(|(_, port)| !port.contains(':'))?,
    };
    (!host.is_empty() && !port.is_empty()).then_some((host, port))
}

/// Checks a URL of the form `scheme://host:port/...` with an explicit port.
fn check_url_with_port(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err("must not be empty".into());
    }
    let Some((_, rest)) = url.split_once("://") else { return Err(format!("must be a URL (got {url:?})")) };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let port = authority.rsplit_once(':').map(|(_, p)| p).filter(|p| !p.contains(']'));
    match port.and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0) {
        Some(_) => Ok(()),
        None => Err(format!("must name its port explicitly (got {url:?})")),
    }
}

impl Backend {
    /// Lifetime of certificates this backend issues (default 24h).
    pub fn cert_lifetime(&self) -> std::time::Duration {
        self.dp_cert.as_ref().map_or(std::time::Duration::from_secs(86_400), |d| d.rotation.expiration.get())
    }

    /// Whether plaintext is also accepted.
    pub fn is_permissive(&self) -> bool {
        self.mode == Some(MtlsMode::Permissive)
    }

    /// The builtin settings; defaults when `conf` is absent. Valid after [`Mesh::check`].
    pub fn builtin_conf(&self) -> Result<BuiltinConf, String> {
        match &self.conf {
            None => Ok(BuiltinConf::default()),
            Some(v) => BuiltinConf::deserialize(v).map_err(|e| e.to_string()),
        }
    }

    /// The provided settings. Valid after [`Mesh::check`].
    pub fn provided_conf(&self) -> Result<ProvidedConf, String> {
        match &self.conf {
            None => Err("is required for a provided backend (cert and key)".into()),
            Some(v) => ProvidedConf::deserialize(v).map_err(|e| e.to_string()),
        }
    }

    fn check_conf(&self, at: &str, causes: &mut Causes) {
        let conf = self.conf.clone().unwrap_or(serde_json::Value::Null);
        match self.ty {
            BackendType::Builtin => {
                if self.conf.is_none() {
                    return;
                }
                match crate::parse::typed::<BuiltinConf>(at, conf) {
                    Ok(c) => {
                        let ca = c.ca_cert.unwrap_or_default();
                        if let Some(bits) = ca.rsa_bits
                            && ![2048, 3072, 4096].contains(&bits)
                        {
                            causes.add(format!("{at}.caCert.RSAbits"), "must be one of 2048, 3072, 4096");
                        }
                        if let Some(exp) = ca.expiration
                            && exp.get().as_secs() < 3600
                        {
                            causes.add(format!("{at}.caCert.expiration"), "must be at least 1h");
                        }
                    }
                    Err(cause) => causes.0.push(cause),
                }
            }
            BackendType::Provided => {
                if self.conf.is_none() {
                    causes.add(at, "is required for a provided backend (cert and key)");
                    return;
                }
                if let Err(cause) = crate::parse::typed::<ProvidedConf>(at, conf) {
                    causes.0.push(cause);
                }
            }
            BackendType::Vault | BackendType::AcmPca | BackendType::CertManager => {}
        }
    }
}
