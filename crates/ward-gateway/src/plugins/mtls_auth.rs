//! mtls-auth: the client certificate, verified against the configured CA certificates,
//! identifies the consumer by a subject alternative name, then by the common name.

use http::StatusCode;
use rustls_pki_types::TrustAnchor;
use serde::Deserialize;
use serde_json::Value;
use x509_parser::extensions::GeneralName;

use super::{Compile, Plugin, already_authenticated, conclude};
use crate::exchange::Exchange;
use crate::reply::Reply;

fn username_then_custom_id() -> Vec<String> {
    vec!["username".into(), "custom_id".into()]
}

fn cn() -> String {
    "CN".into()
}

fn ignore_ca_error() -> String {
    "IGNORE_CA_ERROR".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    ca_certificates: Vec<String>,
    anonymous: Option<String>,
    #[serde(default = "username_then_custom_id")]
    consumer_by: Vec<String>,
    #[serde(default)]
    skip_consumer_lookup: bool,
    #[serde(default = "cn")]
    authenticated_group_by: String,
    #[serde(default = "ignore_ca_error")]
    revocation_check_mode: String,
    #[serde(default)]
    allow_partial_chain: bool,
    #[serde(default)]
    send_ca_dn: bool,
    /// Accepted for compatibility; Ward keeps no certificate caches to tune.
    #[serde(rename = "cache_ttl")]
    _cache_ttl: Option<f64>,
    /// Accepted for compatibility; Ward keeps no certificate caches to tune.
    #[serde(rename = "cert_cache_ttl")]
    _cert_cache_ttl: Option<f64>,
    /// Accepted for compatibility; Ward makes no revocation requests.
    #[serde(rename = "http_timeout")]
    _http_timeout: Option<f64>,
}

/// Which consumer field a certificate name is compared with.
#[derive(Clone, Copy)]
enum ConsumerBy {
    Username,
    CustomId,
}

/// A compiled mtls-auth configuration.
pub(crate) struct MtlsAuth {
    anchors: Vec<TrustAnchor<'static>>,
    anonymous: Option<usize>,
    consumer_by: Vec<ConsumerBy>,
}

pub(super) fn compile(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: Config = cx.config(value)?;
    let refusals = [
        (c.skip_consumer_lookup, "skip_consumer_lookup", "is not supported: a certificate must map to a consumer"),
        (c.allow_partial_chain, "allow_partial_chain", "is not supported: chains must end at a configured CA"),
        (c.send_ca_dn, "send_ca_dn", "is not supported"),
        (
            c.revocation_check_mode == "STRICT",
            "revocation_check_mode",
            "STRICT is not supported: Ward does not fetch OCSP or CRLs",
        ),
        (
            c.authenticated_group_by != "CN" && c.authenticated_group_by != "DN",
            "authenticated_group_by",
            "must be CN or DN",
        ),
        (
            !["IGNORE_CA_ERROR", "SKIP", "STRICT"].contains(&c.revocation_check_mode.as_str()),
            "revocation_check_mode",
            "must be IGNORE_CA_ERROR, SKIP or STRICT",
        ),
    ];
    for (refused, field, message) in refusals {
        if refused {
            cx.error(field, message);
        }
    }
    if c.ca_certificates.is_empty() {
        cx.error("ca_certificates", "must list at least one CA certificate id");
    }
    let mut anchors = Vec::new();
    for (i, id) in c.ca_certificates.iter().enumerate() {
        match cx.ca_certificates.get(id) {
            Some(anchor) => anchors.push(anchor.clone()),
            None => cx.error(&format!("ca_certificates[{i}]"), format!("no ca_certificate has the id '{id}'")),
        }
    }
    let mut consumer_by = Vec::new();
    for (i, by) in c.consumer_by.iter().enumerate() {
        match by.as_str() {
            "username" => consumer_by.push(ConsumerBy::Username),
            "custom_id" => consumer_by.push(ConsumerBy::CustomId),
            other => cx.error(&format!("consumer_by[{i}]"), format!("'{other}' is not one of username, custom_id")),
        }
    }
    let anonymous = cx.anonymous(c.anonymous.as_deref());
    Some(Plugin::MtlsAuth(MtlsAuth { anchors, anonymous, consumer_by }))
}

/// The names a certificate may map to a consumer by: its SANs, then its common name.
fn subject_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) | GeneralName::RFC822Name(n) | GeneralName::URI(n) => names.push(n.to_string()),
                _ => {}
            }
        }
    }
    names.extend(cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_string)));
    names
}

impl MtlsAuth {
    pub(super) fn access(&self, ex: &mut Exchange<'_>) -> Result<(), Reply> {
        if already_authenticated(ex, self.anonymous) {
            return Ok(());
        }
        let attempt = self.identify(ex);
        conclude(ex, self.anonymous, attempt)
    }

    fn identify(&self, ex: &Exchange<'_>) -> Result<(usize, String), Reply> {
        let failed = || Reply::error(StatusCode::UNAUTHORIZED, "TLS certificate failed verification");
        let Some(chain) = ex.conn.client_chain.as_deref() else {
            return Err(Reply::error(StatusCode::UNAUTHORIZED, "No required TLS certificate was sent"));
        };
        if !crate::tls::verify_client_chain(chain, &self.anchors) {
            return Err(failed());
        }
        for name in subject_names(&chain[0]) {
            for by in &self.consumer_by {
                let found = match by {
                    ConsumerBy::Username => ex.consumers.by_username(&name),
                    ConsumerBy::CustomId => ex.consumers.by_custom_id(&name),
                };
                if let Some(consumer) = found {
                    return Ok((consumer, name));
                }
            }
        }
        Err(failed())
    }
}
