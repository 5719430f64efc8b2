//! The `MeshTrust` kind (Kuma 2.12+): CA certificates a mesh's proxies trust for a trust
//! domain, such as another mesh's or zone's CA. Ward checks the bundles' shape here; the
//! control plane parses the certificates when the resource is applied.

use serde::{Deserialize, Serialize};

use crate::{
    error::{Causes, Warnings},
    mesh_identity::check_trust_domain,
};

/// Longest trust domain Kuma accepts in a MeshTrust.
pub const MAX_TRUST_DOMAIN_LEN: usize = 253;

/// A MeshTrust's spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshTrust {
    /// The resource it was made from (deprecated in Kuma; no effect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// The trust domain whose workloads these CAs vouch for.
    #[serde(default)]
    pub trust_domain: String,
    /// The CA certificates.
    #[serde(default)]
    pub ca_bundles: Vec<CaBundle>,
}

/// `spec.origin`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// Kuma's resource identifier of the MeshIdentity it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kri: Option<String>,
}

string_enum! {
    /// `caBundles[].type`.
    pub enum BundleType {
        /// PEM text.
        Pem = "Pem",
    }
}

/// One of `spec.caBundles`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaBundle {
    /// Always `Pem`.
    #[serde(rename = "type")]
    pub ty: BundleType,
    /// The certificates, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<Pem>,
}

/// `caBundles[].pem`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pem {
    /// One or more PEM certificates.
    #[serde(default)]
    pub value: String,
}

impl MeshTrust {
    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The PEM text of each bundle.
    pub fn pems(&self) -> impl Iterator<Item = &str> {
        self.ca_bundles.iter().filter_map(|b| b.pem.as_ref()).map(|p| p.value.as_str())
    }

    /// Checks what serde cannot.
    pub fn check(&self, causes: &mut Causes) {
        const AT: &str = "spec.trustDomain";
        if self.trust_domain.is_empty() {
            causes.add(AT, "trustDomain needs to be defined");
        } else if self.trust_domain.len() > MAX_TRUST_DOMAIN_LEN {
            causes.add(AT, format!("must not be longer than {MAX_TRUST_DOMAIN_LEN} characters"));
        } else if let Err(e) = check_trust_domain(&self.trust_domain) {
            causes.add(AT, e);
        }
        if self.ca_bundles.is_empty() {
            causes.add("spec.caBundles", "must not be empty");
        }
        for (i, bundle) in self.ca_bundles.iter().enumerate() {
            let at = format!("spec.caBundles[{i}].pem");
            match &bundle.pem {
                None => causes.add(at, "must be defined"),
                Some(pem) if !is_pem_certificates(&pem.value) => causes.add(
                    format!("{at}.value"),
                    "must be one or more PEM certificates (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)",
                ),
                Some(_) => {}
            }
        }
    }

    /// Fields accepted that have no effect.
    pub fn warnings(&self, warnings: &mut Warnings) {
        if self.origin.is_some() {
            warnings.add(
                "spec.origin",
                "is deprecated in Kuma and has no effect: it only records where the resource came from",
            );
        }
    }
}

/// Whether `text` holds at least one PEM block, every one a certificate, with nothing but
/// whitespace between them.
fn is_pem_certificates(text: &str) -> bool {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut rest = text.trim();
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let Some(body) = rest.strip_prefix(BEGIN) else { return false };
        let Some(end) = body.find(END) else { return false };
        let base64 = &body[..end];
        if base64.trim().is_empty() || base64.contains("-----") {
            return false;
        }
        rest = body[end + END.len()..].trim_start();
    }
    true
}
