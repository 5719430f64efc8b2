//! The `MeshExternalService` resource (Kuma 2.9+): a destination outside the mesh, named as an
//! object, with the port and protocol callers use, the endpoints it is served at and how the
//! proxy originates TLS to them.
//!
//! Ward reaches it from the calling proxy (it has no zone egress), and only for callers a
//! MeshTrafficPermission whose top-level `targetRef` names it allows (see
//! [`crate::policy::decide_external`]).

use std::net::IpAddr;

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};

use crate::{
    dataplane::Port,
    error::{Causes, Warnings},
    mesh::DataSource,
    names::check_name,
};

/// Longest MeshExternalService name (a DNS label: it is part of the hostname).
pub const MAX_NAME_LEN: usize = 63;

/// The domain a MeshExternalService's hostname lies under: `<name>.extsvc.mesh.local`.
pub const HOSTNAME_SUFFIX: &str = "extsvc.mesh.local";

/// Highest endpoint priority Kuma accepts.
pub const MAX_PRIORITY: u32 = 128;

string_enum! {
    /// How callers address a MeshExternalService.
    pub enum MatchType {
        /// At the hostnames generated for it (and its virtual IP), at `match.port`.
        HostnameGenerator = "HostnameGenerator",
    }
}

string_enum! {
    /// The protocol callers speak to a MeshExternalService.
    pub enum Protocol {
        /// Opaque TCP (the default).
        Tcp = "tcp",
        /// gRPC over HTTP/2.
        Grpc = "grpc",
        /// HTTP/1.1.
        Http = "http",
        /// HTTP/2.
        Http2 = "http2",
    }
}

string_enum! {
    /// A TLS protocol version bound.
    pub enum TlsVersion {
        /// No bound: whatever the TLS library chooses.
        Auto = "TLSAuto",
        /// TLS 1.0, which Ward's TLS does not speak.
        Tls10 = "TLS10",
        /// TLS 1.1, which Ward's TLS does not speak.
        Tls11 = "TLS11",
        /// TLS 1.2.
        Tls12 = "TLS12",
        /// TLS 1.3.
        Tls13 = "TLS13",
    }
}

impl TlsVersion {
    /// Whether Ward's TLS (rustls) speaks this version; `Auto` is no version and counts as spoken.
    pub fn is_spoken(self) -> bool {
        !matches!(self, TlsVersion::Tls10 | TlsVersion::Tls11)
    }
}

string_enum! {
    /// What the proxy verifies of the external server's certificate.
    pub enum VerificationMode {
        /// The chain (against `caCert`, or the host's trusted roots) and the names (the default).
        Secured = "Secured",
        /// The chain, not the names.
        SkipSan = "SkipSAN",
        /// The names, not the chain.
        SkipCa = "SkipCA",
        /// Nothing.
        SkipAll = "SkipAll",
    }
}

impl VerificationMode {
    /// Whether the server's chain is verified.
    pub fn verifies_chain(self) -> bool {
        matches!(self, VerificationMode::Secured | VerificationMode::SkipSan)
    }

    /// Whether the server's names (serverName, subjectAltNames) are verified.
    pub fn verifies_names(self) -> bool {
        matches!(self, VerificationMode::Secured | VerificationMode::SkipCa)
    }
}

string_enum! {
    /// How a `subjectAltNames` entry compares.
    #[derive(Default)]
    pub enum SanMatchType {
        /// The whole name (the default).
        #[default]
        Exact = "Exact",
        /// A prefix of the name.
        Prefix = "Prefix",
    }
}

/// A MeshExternalService's `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshExternalService {
    /// How callers address it: the port and protocol.
    pub r#match: Match,
    /// A plugin that would supply the endpoints and TLS; Ward has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<Extension>,
    /// Where it is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<Endpoint>>,
    /// TLS originated by the proxy towards the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

/// `spec.match`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Only `HostnameGenerator` (the default).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<MatchType>,
    /// The port callers connect to on its virtual IP and hostname.
    pub port: Port,
    /// The protocol callers speak (default `tcp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

impl Match {
    /// The protocol callers speak (default tcp).
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or(Protocol::Tcp)
    }
}

/// `spec.extension`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// The plugin's name.
    #[serde(rename = "type", default)]
    pub ty: String,
    /// The plugin's settings, any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
}

/// One entry of `spec.endpoints`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// An IP address or a DNS name.
    pub address: String,
    /// The port.
    pub port: Port,
    /// Failover level: the lowest in use first (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
}

impl Endpoint {
    /// The failover level (default 0; lower first).
    pub fn priority(&self) -> u32 {
        self.priority.unwrap_or(0)
    }

    /// The address as an IP address, when it is one (otherwise it is a DNS name).
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }
}

/// `spec.tls`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tls {
    /// Whether the proxy originates TLS (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enabled: bool,
    /// Bounds of the TLS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// Kuma's switch to let the server renegotiate (default false); Ward never renegotiates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_renegotiation: bool,
    /// What is verified of the server, and the client's own certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

/// `spec.tls.version`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Version {
    /// The lowest version (default `TLSAuto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<TlsVersion>,
    /// The highest version (default `TLSAuto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<TlsVersion>,
}

/// `spec.tls.verification`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Verification {
    /// What is verified (default `Secured`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<VerificationMode>,
    /// The server name sent (SNI) and verified, instead of the endpoint's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Names the server's certificate must hold one of, instead of the server name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alt_names: Option<Vec<SanMatch>>,
    /// The CA certificate(s) the server's chain must lead to (default: the host's trusted roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<DataSource>,
    /// The client certificate the proxy presents (with `clientKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<DataSource>,
    /// The private key of `clientCert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<DataSource>,
}

/// One entry of `verification.subjectAltNames`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SanMatch {
    /// Exact (the default) or Prefix.
    #[serde(rename = "type", default)]
    pub ty: SanMatchType,
    /// The name or prefix.
    pub value: String,
}

impl SanMatch {
    /// Whether a name of the server's certificate matches this entry.
    pub fn matches(&self, name: &str) -> bool {
        match self.ty {
            SanMatchType::Exact => name == self.value,
            SanMatchType::Prefix => name.starts_with(&self.value),
        }
    }
}

/// What a PEM document of a data source must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemKind {
    /// One or more certificates (`caCert`, `clientCert`).
    Certificate,
    /// A private key (`clientKey`).
    PrivateKey,
}

impl Verification {
    /// The data sources given, each with its field name under `verification` and what it holds.
    pub fn sources(&self) -> Vec<(&'static str, PemKind, &DataSource)> {
        [
            ("caCert", PemKind::Certificate, &self.ca_cert),
            ("clientCert", PemKind::Certificate, &self.client_cert),
            ("clientKey", PemKind::PrivateKey, &self.client_key),
        ]
        .into_iter()
        .filter_map(|(field, kind, source)| Some((field, kind, source.as_ref()?)))
        .collect()
    }

    /// What is verified (default Secured).
    pub fn mode(&self) -> VerificationMode {
        self.mode.unwrap_or(VerificationMode::Secured)
    }
}

impl Tls {
    /// The lowest TLS version to offer, as Ward speaks them: TLS 1.2 unless TLS 1.3 is asked for.
    pub fn min_version(&self) -> TlsVersion {
        match self.version.as_ref().and_then(|v| v.min) {
            Some(TlsVersion::Tls13) => TlsVersion::Tls13,
            _ => TlsVersion::Tls12,
        }
    }

    /// The highest TLS version to offer: TLS 1.3 unless TLS 1.2 is asked for.
    pub fn max_version(&self) -> TlsVersion {
        match self.version.as_ref().and_then(|v| v.max) {
            Some(TlsVersion::Tls12) => TlsVersion::Tls12,
            _ => TlsVersion::Tls13,
        }
    }
}

impl MeshExternalService {
    /// The port callers connect to (`match.port`).
    pub fn port(&self) -> u16 {
        self.r#match.port.0
    }

    /// The protocol callers speak (`match.protocol`, default tcp).
    pub fn protocol(&self) -> Protocol {
        self.r#match.protocol()
    }

    /// The endpoints (none when not given).
    pub fn endpoints(&self) -> &[Endpoint] {
        self.endpoints.as_deref().unwrap_or_default()
    }

    /// The TLS settings when the proxy originates TLS; `None` for plaintext.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref().filter(|t| t.enabled)
    }

    /// The verification settings of enabled TLS, when given.
    pub fn verification(&self) -> Option<&Verification> {
        self.tls()?.verification.as_ref()
    }

    /// The Secrets of the mesh this resource names, each with the field naming it (e.g.
    /// `spec.tls.verification.caCert.secret`), so the control plane can check they exist.
    pub fn named_secrets(&self) -> Vec<(String, String)> {
        let Some(verification) = self.tls.as_ref().and_then(|t| t.verification.as_ref()) else {
            return Vec::new();
        };
        verification
            .sources()
            .into_iter()
            .filter_map(|(field, _, source)| match source {
                DataSource::Secret(name) if check_name(name).is_ok() => {
                    Some((format!("spec.tls.verification.{field}.secret"), name.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Checks what serde cannot, each cause under `spec`.
    pub fn check(&self, causes: &mut Causes) {
        if let Some(extension) = &self.extension {
            if extension.ty.is_empty() {
                causes.add("spec.extension.type", "must not be empty");
            } else {
                causes.unsupported(
                    "spec.extension.type",
                    format!(
                        "Ward has no MeshExternalService extensions ({:?} is unknown; Kong Mesh's are enterprise \
                         plugins): give the endpoints (and tls) instead",
                        extension.ty
                    ),
                );
            }
        }
        for (i, endpoint) in self.endpoints().iter().enumerate() {
            let at = format!("spec.endpoints[{i}]");
            if endpoint.address.is_empty() {
                causes.add(format!("{at}.address"), "must not be empty");
            } else if endpoint.ip().is_none() && !is_dns_name(&endpoint.address) {
                causes.add(format!("{at}.address"), "must be an IP address or a DNS name");
            }
            if endpoint.priority.is_some_and(|p| p > MAX_PRIORITY) {
                causes.add(format!("{at}.priority"), format!("must be between 0 and {MAX_PRIORITY}"));
            }
        }
        if let Some(tls) = &self.tls {
            check_tls(tls, causes);
        }
    }

    /// Fields accepted that have no effect in Ward, or that leave it unable to carry traffic.
    pub fn warnings(&self, warnings: &mut Warnings) {
        if self.extension.is_none() && self.endpoints().is_empty() {
            warnings.add(
                "spec.endpoints",
                "is empty: this MeshExternalService carries no traffic until endpoints are given (Ward has no \
                 extensions to supply them)",
            );
        }
        let Some(tls) = &self.tls else { return };
        if tls.allow_renegotiation {
            warnings.add(
                "spec.tls.allowRenegotiation",
                "Ward's TLS never renegotiates: it declines a server's request to, and the server may then close the \
                 connection",
            );
        }
        if !tls.enabled {
            for (field, set) in [("version", tls.version.is_some()), ("verification", tls.verification.is_some())] {
                if set {
                    warnings.add(format!("spec.tls.{field}"), "has no effect: tls.enabled is not true");
                }
            }
            return;
        }
        if let Some(min) = tls.version.as_ref().and_then(|v| v.min).filter(|v| !v.is_spoken()) {
            warnings.add(
                "spec.tls.version.min",
                format!("Ward's TLS speaks TLS 1.2 and 1.3 only: the minimum in effect is TLS12, not {min}"),
            );
        }
        for (field, kind, source) in tls.verification.iter().flat_map(Verification::sources) {
            let (at, content) = match source {
                DataSource::Inline(text) => ("inline", STANDARD.decode(text.trim()).ok()),
                DataSource::InlineString(text) => ("inlineString", Some(text.as_bytes().to_vec())),
                DataSource::Secret(_) | DataSource::File(_) => continue,
            };
            if content.is_some_and(|bytes| !holds_pem(&bytes, kind)) {
                let what = match kind {
                    PemKind::Certificate => "a PEM certificate",
                    PemKind::PrivateKey => "a PEM private key",
                };
                warnings.add(
                    format!("spec.tls.verification.{field}.{at}"),
                    format!("is not {what}: proxies refuse connections to this MeshExternalService until it is one"),
                );
            }
        }
    }
}

fn check_tls(tls: &Tls, causes: &mut Causes) {
    if let Some(version) = &tls.version {
        let specific = |v: Option<TlsVersion>| v.filter(|v| *v != TlsVersion::Auto);
        if let (Some(min), Some(max)) = (specific(version.min), specific(version.max))
            && min > max
        {
            causes.add("spec.tls.version.min", "min version must be lower than max");
        }
        if let Some(max) = version.max.filter(|v| !v.is_spoken()) {
            causes.unsupported(
                "spec.tls.version.max",
                format!("Ward's TLS (rustls) speaks TLS 1.2 and 1.3 only, so a maximum of {max} cannot be honoured"),
            );
        }
    }
    let Some(verification) = &tls.verification else { return };
    let at = "spec.tls.verification";
    if let Some(name) = &verification.server_name
        && !is_dns_name(name)
    {
        causes.add(format!("{at}.serverName"), "must be a valid DNS name");
    }
    for (i, san) in verification.subject_alt_names.iter().flatten().enumerate() {
        if san.value.is_empty() {
            causes.add(format!("{at}.subjectAltNames[{i}].value"), "must not be empty");
        }
    }
    match (&verification.client_cert, &verification.client_key) {
        (Some(_), None) => causes.add(format!("{at}.clientKey"), "must be defined when clientCert is defined"),
        (None, Some(_)) => causes.add(format!("{at}.clientCert"), "must be defined when clientKey is defined"),
        _ => {}
    }
    for (field, _, source) in verification.sources() {
        let at = format!("{at}.{field}");
        match source {
            DataSource::File(_) => causes.add(
                format!("{at}.file"),
                "is not accepted for a MeshExternalService: the control plane would read its own filesystem on the \
                 resource author's behalf; use secret, inline or inlineString",
            ),
            DataSource::Inline(text) => {
                if STANDARD.decode(text.trim()).is_err() {
                    causes.add(format!("{at}.inline"), "must be base64");
                }
            }
            DataSource::Secret(name) => {
                if let Err(e) = check_name(name) {
                    causes.add(format!("{at}.secret"), format!("must name a Secret of the mesh: {e}"));
                }
            }
            DataSource::InlineString(_) => {}
        }
    }
}

/// Whether `name` is a DNS name as Kuma checks it: dot-separated labels of at most 63
/// letters, digits, `-` and `_` (not starting with `-`), an optional final dot, not an IP
/// address.
pub fn is_dns_name(name: &str) -> bool {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    !trimmed.is_empty()
        && trimmed.len() <= 255
        && trimmed.parse::<IpAddr>().is_err()
        && trimmed.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Whether `bytes` hold at least one PEM block of `kind` whose body is base64.
pub fn holds_pem(bytes: &[u8], kind: PemKind) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else { return false };
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(label_end) = after.find("-----") else { return false };
        let label = &after[..label_end];
        let body_and_more = &after[label_end + "-----".len()..];
        let end_marker = format!("-----END {label}-----");
        let Some(body_end) = body_and_more.find(&end_marker) else { return false };
        let body: String = body_and_more[..body_end].chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let fits = match kind {
            PemKind::Certificate => label == "CERTIFICATE",
            PemKind::PrivateKey => matches!(label, "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY"),
        };
        if fits && !body.is_empty() && STANDARD.decode(&body).is_ok() {
            return true;
        }
        rest = &body_and_more[body_end + end_marker.len()..];
    }
    false
}

/// The name MeshExternalService `name` goes by among a proxy's destinations, in its metrics and
/// logs, and as the key of its virtual IP: `meshexternalservice/NAME`.
pub fn destination(name: &str) -> String {
    format!("meshexternalservice/{name}")
}

/// The hostname of MeshExternalService `name`, resolved by the transparent proxy's DNS (Kuma's
/// default in Universal mode).
pub fn hostname(name: &str) -> String {
    format!("{name}.{HOSTNAME_SUFFIX}")
}

#[cfg(test)]
mod tests;
