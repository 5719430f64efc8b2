//! The MeshExternalServices of a mesh snapshot: each is a destination outside the mesh at its
//! own virtual IP and hostname, with the endpoints and the TLS its callers' proxies originate;
//! which dataplane may reach it is decided per dataplane by the mesh's MeshTrafficPermissions.

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
};

use base64::Engine;
use serde_json::{Value, json};
use ward_api::{
    Resource, Spec,
    mesh::DataSource,
    mesh_external_service::{self, MeshExternalService, VerificationMode},
};
use ward_proto::discovery::{ExternalEndpoint, ExternalService, ExternalTls, SanMatch};

/// One MeshExternalService as the snapshot sees it.
#[derive(Debug, Clone)]
pub struct ExternalServiceView {
    /// Its labels, matched by `reachableBackends` and label `backendRef` references.
    pub labels: BTreeMap<String, String>,
    /// When it was created (RFC 3339, sortable): of several a label reference matches, the
    /// oldest is taken.
    pub created: String,
    /// Its virtual IP, when the range had room for it.
    pub virtual_ip: Option<Ipv4Addr>,
    /// What an allowed caller's proxy is sent.
    pub destination: ExternalService,
}

/// Key of a MeshExternalService's virtual IP in the store: `meshexternalservice/NAME`, which no
/// `kuma.io/service` value can be.
pub fn vip_key(name: &str) -> String {
    mesh_external_service::destination(name)
}

/// The Secrets of a mesh that its MeshExternalServices name, by name, with their data.
pub type NamedSecrets = HashMap<String, Vec<u8>>;

/// The views of `resources` (MeshExternalServices), their data sources read from `secrets`.
/// Virtual IPs are filled in afterwards.
pub fn views(resources: &[Resource], secrets: &NamedSecrets) -> BTreeMap<String, ExternalServiceView> {
    let mut views = BTreeMap::new();
    for resource in resources {
        let Spec::MeshExternalService(spec) = &resource.spec else { continue };
        let name = &resource.meta.name;
        views.insert(
            name.clone(),
            ExternalServiceView {
                labels: resource.meta.labels.clone(),
                created: resource.meta.creation_time.clone().unwrap_or_default(),
                virtual_ip: None,
                destination: destination(name, spec, secrets),
            },
        );
    }
    views
}

/// What a proxy allowed to reach MeshExternalService `name` is sent. A data source that cannot
/// be read leaves the destination without endpoints, with the reason as its `denied`, so that
/// every caller fails closed and says why.
fn destination(name: &str, spec: &MeshExternalService, secrets: &NamedSecrets) -> ExternalService {
    let mut destination = ExternalService {
        name: name.to_string(),
        port: u32::from(spec.port()),
        protocol: spec.protocol().to_string(),
        hostnames: vec![mesh_external_service::hostname(name)],
        ..Default::default()
    };
    match tls(spec, secrets) {
        Ok(tls) => {
            destination.tls = tls;
            destination.endpoints = spec
                .endpoints()
                .iter()
                .map(|e| ExternalEndpoint {
                    address: e.address.clone(),
                    port: u32::from(e.port.0),
                    priority: e.priority(),
                })
                .collect();
        }
        Err(reason) => destination.denied = reason,
    }
    destination
}

/// The TLS a proxy originates, with every data source read; `None` when TLS is not enabled.
fn tls(spec: &MeshExternalService, secrets: &NamedSecrets) -> Result<Option<ExternalTls>, String> {
    let Some(tls) = spec.tls() else { return Ok(None) };
    let mut out = ExternalTls {
        min_version: tls.min_version().to_string(),
        max_version: tls.max_version().to_string(),
        mode: VerificationMode::Secured.to_string(),
        ..Default::default()
    };
    let Some(verification) = spec.verification() else { return Ok(Some(out)) };
    out.mode = verification.mode().to_string();
    out.server_name = verification.server_name.clone().unwrap_or_default();
    out.subject_alt_names = verification
        .subject_alt_names
        .iter()
        .flatten()
        .map(|s| SanMatch { r#type: s.ty.to_string(), value: s.value.clone() })
        .collect();
    let read = |field: &str, source: &Option<DataSource>| -> Result<String, String> {
        let Some(source) = source else { return Ok(String::new()) };
        let bytes = match source {
            DataSource::InlineString(text) => text.as_bytes().to_vec(),
            DataSource::Inline(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("tls.verification.{field}.inline: must be base64 ({e})"))?,
            DataSource::Secret(secret) => secrets
                .get(secret)
                .cloned()
                .ok_or_else(|| format!("tls.verification.{field}.secret: the mesh has no Secret {secret:?}"))?,
            DataSource::File(_) => {
                return Err(format!("tls.verification.{field}.file: not read for a MeshExternalService"));
            }
        };
        String::from_utf8(bytes).map_err(|_| format!("tls.verification.{field}: is not PEM text"))
    };
    out.ca_cert_pem = read("caCert", &verification.ca_cert)?;
    out.client_cert_pem = read("clientCert", &verification.client_cert)?;
    out.client_key_pem = read("clientKey", &verification.client_key)?;
    Ok(Some(out))
}

impl ExternalServiceView {
    /// Gives the view its virtual IP `ip`.
    pub fn set_virtual_ip(&mut self, ip: Ipv4Addr) {
        self.virtual_ip = Some(ip);
        self.destination.virtual_ip = ip.to_string();
    }

    /// The status the API shows, in Kuma's shape: the generated hostname and the virtual IP.
    pub fn status(&self, name: &str) -> Value {
        let mut status = json!({ "addresses": [{ "hostname": mesh_external_service::hostname(name) }] });
        if let Some(ip) = self.virtual_ip {
            status["vip"] = json!({ "ip": ip.to_string() });
        }
        status
    }
}
