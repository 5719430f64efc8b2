//! TLS for the HTTPS listener: certificates chosen by SNI (wildcards too), TLS 1.2 as the
//! minimum, HTTP/2 by ALPN, and client certificates asked for when mtls-auth needs them.
//! Also the CA certificates mtls-auth verifies client certificates against.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DistinguishedName, SignatureScheme};
use rustls_pki_types::TrustAnchor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use ward_http::tls::HandshakeSignatures;

use crate::config::Declaration;
use crate::error::ConfigErrors;

pub(crate) use ward_http::tls::{certificates, provider};

/// A certificate and key as rustls serves them.
fn certified_key(cert: &str, key: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| format!("no private key in PEM: {e}"))?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| e.to_string())?;
    Ok(Arc::new(certified))
}

/// A certificate entity: its main key pair and the alternate (e.g. ECDSA beside RSA).
#[derive(Debug, Clone)]
struct Pair {
    main: Arc<CertifiedKey>,
    alt: Option<Arc<CertifiedKey>>,
}

impl Pair {
    /// The key pair the client can verify: the main one unless only the alternate fits.
    fn choose(&self, schemes: &[SignatureScheme]) -> Arc<CertifiedKey> {
        match &self.alt {
            Some(alt) if self.main.key.choose_scheme(schemes).is_none() && alt.key.choose_scheme(schemes).is_some() => {
                alt.clone()
            }
            _ => self.main.clone(),
        }
    }
}

/// Certificates by SNI: exact names, then `*.suffix`, then `prefix.*`, then the default.
#[derive(Debug)]
pub(crate) struct SniCertificates {
    exact: HashMap<String, Pair>,
    suffix: Vec<(String, Pair)>,
    prefix: Vec<(String, Pair)>,
    default: Pair,
}

impl ResolvesServerCert for SniCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pair_for(hello.server_name()).choose(hello.signature_schemes()))
    }
}

impl SniCertificates {
    /// The certificate for a server name: exact, then the longest wildcard, then the default.
    fn pair_for(&self, server_name: Option<&str>) -> &Pair {
        let Some(name) = server_name.map(|n| n.to_ascii_lowercase()) else { return &self.default };
        let longer = |part: &str| name.len() > part.len();
        self.exact
            .get(&name)
            .or_else(|| self.suffix.iter().find(|(s, _)| name.ends_with(s.as_str()) && longer(s)).map(|(_, p)| p))
            .or_else(|| self.prefix.iter().find(|(p, _)| name.starts_with(p.as_str()) && longer(p)).map(|(_, p)| p))
            .unwrap_or(&self.default)
    }
}

/// The certificate served when no SNI matches (Kong's is self-signed too).
fn default_pair() -> Pair {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("self-signed certificate");
    let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der()).expect("generated key");
    let certified = CertifiedKey::from_der(vec![generated.cert.der().clone()], key, &provider()).expect("key matches");
    Pair { main: Arc::new(certified), alt: None }
}

/// Compiles `certificates` and `snis`, recording problems in `errors`.
pub(crate) fn sni_certificates(decl: &Declaration, errors: &mut ConfigErrors) -> SniCertificates {
    let mut pairs: Vec<Option<Pair>> = Vec::new();
    for e in &decl.certificates {
        let main = certified_key(&e.item.cert, &e.item.key);
        let alt = match (&e.item.cert_alt, &e.item.key_alt) {
            (Some(c), Some(k)) => Some(certified_key(c, k)),
            (None, None) => None,
            _ => {
                errors.add(&e.path, "cert_alt and key_alt go together");
                None
            }
        };
        pairs.push(match (main, alt) {
            (Ok(main), None) => Some(Pair { main, alt: None }),
            (Ok(main), Some(Ok(alt))) => Some(Pair { main, alt: Some(alt) }),
            (Err(e1), _) => {
                errors.add(format!("{}.cert", e.path), e1);
                None
            }
            (_, Some(Err(e2))) => {
                errors.add(format!("{}.cert_alt", e.path), e2);
                None
            }
        });
    }
    let mut certs =
        SniCertificates { exact: HashMap::new(), suffix: Vec::new(), prefix: Vec::new(), default: default_pair() };
    let mut seen = HashMap::new();
    for e in &decl.snis {
        let Some(Some(pair)) = e.links.certificate.map(|c| pairs[c].clone()) else { continue };
        let name = e.item.name.to_ascii_lowercase();
        if let Some(previous) = seen.insert(name.clone(), &e.path) {
            errors.add(format!("{}.name", e.path), format!("'{name}' is already the SNI of {previous}"));
        }
        if let Some(suffix) = name.strip_prefix('*') {
            certs.suffix.push((suffix.to_string(), pair));
        } else if let Some(prefix) = name.strip_suffix('*') {
            certs.prefix.push((prefix.to_string(), pair));
        } else if name.contains('*') {
            errors.add(format!("{}.name", e.path), "a wildcard must be the first or last label");
        } else {
            certs.exact.insert(name, pair);
        }
    }
    // Longer (more specific) wildcards first.
    certs.suffix.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    certs.prefix.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    certs
}

/// Asks every client for a certificate but lets the handshake finish without one: the
/// mtls-auth plugin decides per route, against its own CAs. The client still has to prove
/// it holds the certificate's key (the handshake signature is verified).
#[derive(Debug)]
struct RequestClientCertificate {
    signatures: HandshakeSignatures,
}

impl ClientCertVerifier for RequestClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    ward_http::delegate_handshake_signatures!(signatures);
}

/// The HTTPS listener's TLS configuration: TLS 1.2 and 1.3, `h2` then `http/1.1` by ALPN.
pub(crate) fn server_config(certs: SniCertificates, ask_client_certificates: bool) -> Arc<rustls::ServerConfig> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("TLS 1.2 and 1.3 are supported");
    let builder = if ask_client_certificates {
        let verifier = RequestClientCertificate { signatures: HandshakeSignatures::of(&provider) };
        builder.with_client_cert_verifier(Arc::new(verifier))
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_cert_resolver(Arc::new(certs));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The `ca_certificates` of a configuration, as trust anchors by id.
#[derive(Debug, Default)]
pub(crate) struct CaStore {
    anchors: HashMap<String, TrustAnchor<'static>>,
}

impl CaStore {
    /// Compiles `ca_certificates`: each must be one CA certificate in PEM.
    pub fn compile(decl: &Declaration, errors: &mut ConfigErrors) -> CaStore {
        let mut store = CaStore::default();
        for e in &decl.ca_certificates {
            let field = format!("{}.cert", e.path);
            let der = match certificates(&e.item.cert) {
                Ok(mut certs) if certs.len() == 1 => certs.remove(0),
                Ok(_) => {
                    errors.add(field, "must hold exactly one certificate");
                    continue;
                }
                Err(err) => {
                    errors.add(field, err);
                    continue;
                }
            };
            let is_ca = x509_parser::parse_x509_certificate(&der)
                .ok()
                .and_then(|(_, c)| c.basic_constraints().ok().flatten().map(|b| b.value.ca))
                .unwrap_or(false);
            if !is_ca {
                errors.add(
                    field,
                    "certificate does not appear to be a CA because it is missing the \"CA\" basic constraint",
                );
                continue;
            }
            match webpki::anchor_from_trusted_cert(&der) {
                Ok(anchor) => {
                    store.anchors.insert(e.id.clone(), anchor.to_owned());
                }
                Err(err) => errors.add(field, format!("is not a usable trust anchor: {err}")),
            }
        }
        store
    }

    /// The trust anchor with this id.
    pub fn get(&self, id: &str) -> Option<&TrustAnchor<'static>> {
        self.anchors.get(id)
    }
}

/// Whether a client's chain leads to one of `anchors` and may authenticate a client now.
pub(crate) fn verify_client_chain(chain: &[CertificateDer<'static>], anchors: &[TrustAnchor<'static>]) -> bool {
    let Some((leaf, intermediates)) = chain.split_first() else { return false };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else { return false };
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        anchors,
        intermediates,
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_pair(names: &[&str]) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn sni_picks_exact_then_longest_wildcard_then_default() {
        let (exact, wild, deep, prefix) =
            (pem_pair(&["api.test"]), pem_pair(&["*.test"]), pem_pair(&["*.b.test"]), pem_pair(&["shop.example"]));
        let yaml = |(c, k): &(String, String), sni: &str| {
            let block = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
            format!("- cert: |\n{}  key: |\n{}  snis: [\"{sni}\"]\n", block(c), block(k))
        };
        let text = format!(
            "_format_version: \"3.0\"\ncertificates:\n{}{}{}{}",
            yaml(&exact, "api.test"),
            yaml(&wild, "*.test"),
            yaml(&deep, "*.b.test"),
            yaml(&prefix, "shop.*")
        );
        let (decl, mut errors) = crate::config::parse(&text).unwrap();
        let certs = sni_certificates(&decl, &mut errors);
        assert!(errors.is_empty(), "{errors}");
        let served = |name: Option<&str>| certs.pair_for(name).main.cert[0].clone();
        let der = |(c, _): &(String, String)| certificates(c).unwrap().remove(0);
        let table = [
            (Some("api.test"), der(&exact)),
            (Some("API.test"), der(&exact)),
            (Some("x.test"), der(&wild)),
            (Some("a.b.test"), der(&deep)),
            (Some("shop.example"), der(&prefix)),
        ];
        for (name, want) in table {
            assert_eq!(served(name), want, "{name:?}");
        }
        let default = certs.default.main.cert[0].clone();
        for name in [None, Some("test"), Some("other.example")] {
            assert_eq!(served(name), default, "{name:?}");
        }
    }
}
