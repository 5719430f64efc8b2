//! The proxy side of issuance: an in-memory key and a CSR naming the workload's SPIFFE ID.

use std::fmt;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::spiffe::SpiffeId;

/// A workload's ECDSA P-256 private key. It lives only in process memory: it has no
/// `Serialize`, its `Debug` is redacted, and Ward never writes it to disk.
pub struct WorkloadKey {
    key: KeyPair,
}

impl WorkloadKey {
    /// The key as PKCS#8 DER, solely for handing to rustls in the same process (never to be written to disk).
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key.serialize_der()).into()
    }

    /// The public key as DER SubjectPublicKeyInfo, to match against an issued certificate.
    pub fn public_key_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&self.key)
    }
}

impl fmt::Debug for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkloadKey(<redacted>)")
    }
}

/// Key or CSR generation failed inside the crypto library.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("csr: cannot generate the workload key or request: {reason}")]
pub struct CsrError {
    /// The library's message.
    pub reason: String,
}

/// Generates a fresh ECDSA P-256 key and a PEM CSR whose only SAN is the URI `spiffe_id`.
pub fn generate_key_and_csr(spiffe_id: &SpiffeId) -> Result<(WorkloadKey, String), CsrError> {
    let fail = |e: rcgen::Error| CsrError { reason: e.to_string() };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(spiffe_id.as_str().to_string().try_into().map_err(fail)?)];
    let csr = params.serialize_request(&key).map_err(fail)?;
    Ok((WorkloadKey { key }, csr.pem().map_err(fail)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension};

    #[test]
    fn csr_is_self_signed_p256_with_one_uri_san() {
        let id = SpiffeId::for_service("default", "users").unwrap();
        let (key, pem) = generate_key_and_csr(&id).unwrap();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|d: rustls_pki_types::CertificateSigningRequestDer<'_>| d.as_ref().to_vec())
            .unwrap();
        let (_, csr) = X509CertificationRequest::from_der(&der).unwrap();
        csr.verify_signature().unwrap();
        let spki = &csr.certification_request_info.subject_pki;
        assert_eq!(spki.raw, key.public_key_der().as_slice());
        let params = spki.algorithm.parameters.as_ref().unwrap().as_oid().unwrap();
        assert_eq!(params.to_id_string(), "1.2.840.10045.3.1.7", "P-256");
        assert!(csr.certification_request_info.subject.iter().next().is_none(), "empty subject");

        let exts: Vec<_> = csr.requested_extensions().unwrap().collect();
        assert_eq!(exts.len(), 1);
        let ParsedExtension::SubjectAlternativeName(san) = exts[0] else { panic!("{:?}", exts[0]) };
        assert_eq!(san.general_names, vec![GeneralName::URI("spiffe://default/users")]);
    }

    #[test]
    fn each_call_makes_a_new_key_and_debug_is_redacted() {
        let id = SpiffeId::for_service("m", "a").unwrap();
        let (a, _) = generate_key_and_csr(&id).unwrap();
        let (b, _) = generate_key_and_csr(&id).unwrap();
        assert_ne!(a.public_key_der(), b.public_key_der());
        assert_eq!(format!("{a:?}"), "WorkloadKey(<redacted>)");
        assert!(matches!(a.private_key_der(), PrivateKeyDer::Pkcs8(_)));
    }
}
