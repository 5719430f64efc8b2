//! Signing X.509-SVIDs from CSRs, and the SPIFFE X.509-SVID compliance check.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256, PublicKeyData, SanType,
    SerialNumber, SignatureAlgorithm,
};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, SubjectPublicKeyInfo, X509Extension};

use crate::ca::{BACKDATE, Ca, CaError, parse_cert};
use crate::spiffe::SpiffeId;
use crate::x509;

/// The shortest SVID lifetime [`Ca::sign_svid`] accepts.
pub const MIN_SVID_LIFETIME: Duration = Duration::from_secs(10);

/// A signed workload certificate and what the CA decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuedSvid {
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The leaf certificate, DER.
    #[serde(skip)]
    pub cert_der: Vec<u8>,
    /// The chain to present: the leaf followed by intermediates (none today; the CA travels in the trust bundle).
    pub chain_pem: String,
    /// The identity in the certificate.
    pub spiffe_id: SpiffeId,
    /// Serial number, lowercase hex.
    pub serial_hex: String,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// Parts of the CSR the CA did not honour, for the caller to log.
    pub ignored: Vec<String>,
}

/// Why a CSR was not signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    /// The requested lifetime is under [`MIN_SVID_LIFETIME`].
    #[error("lifetime: {secs}s is shorter than the minimum of 10s")]
    LifetimeTooShort {
        /// The rejected lifetime in whole seconds.
        secs: u64,
    },
    /// The identity to grant is a trust domain, not a workload.
    #[error("identity `{id}` has no service path; only workload IDs can be issued")]
    NotAWorkloadId {
        /// The rejected identity.
        id: SpiffeId,
    },
    /// The CSR cannot be decoded.
    #[error("csr: {reason}")]
    CsrParse {
        /// What is wrong with it.
        reason: String,
    },
    /// The CSR's signature does not verify with its own public key.
    #[error("csr: signature does not verify with the request's own public key")]
    CsrSignature,
    /// The CSR's key type cannot be certified.
    #[error("csr: public key algorithm {algorithm} is not supported (ECDSA P-256/P-384, Ed25519 or RSA)")]
    UnsupportedKey {
        /// The key's algorithm OID (and curve).
        algorithm: String,
    },
    /// The CSR asks for an identity other than the one granted.
    #[error("csr: requests identity `{requested}` but the dataplane token grants `{granted}`")]
    IdentityMismatch {
        /// The URI SAN in the CSR.
        requested: String,
        /// The identity the control plane grants.
        granted: SpiffeId,
    },
    /// The CA cannot sign now (for example it has expired).
    #[error("CA {0}")]
    Ca(#[from] CaError),
    /// The crypto library failed to sign.
    #[error("signing failed: {reason}")]
    Sign {
        /// The library's message.
        reason: String,
    },
}

/// A CSR's public key, in the form rcgen writes into a certificate.
struct CsrKey {
    raw: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

impl Ca {
    /// Signs an X.509-SVID for `expected` (the identity the token grants) with the CSR's public key.
    ///
    /// The identity comes from `expected`, never from the CSR: a CSR naming another SPIFFE ID is
    /// refused, and any other SAN, CA bit, key usage, subject or extension it asks for is left out
    /// and listed in [`IssuedSvid::ignored`]. NotAfter is capped at the CA's own NotAfter.
    pub fn sign_svid(
        &self,
        csr_pem: &str,
        expected: &SpiffeId,
        lifetime: Duration,
        now: DateTime<Utc>,
    ) -> Result<IssuedSvid, SvidError> {
        if lifetime < MIN_SVID_LIFETIME {
            return Err(SvidError::LifetimeTooShort { secs: lifetime.as_secs() });
        }
        let Some(service) = expected.service() else {
            return Err(SvidError::NotAWorkloadId { id: expected.clone() });
        };
        self.info.check_valid_at(now)?;

        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| SvidError::CsrParse { reason: format!("not a PEM CERTIFICATE REQUEST: {e}") })?;
        let csr = match X509CertificationRequest::from_der(der.as_ref()) {
            Ok(([], csr)) => csr,
            Ok(_) => {
                return Err(SvidError::CsrParse { reason: "trailing bytes after the request".into() });
            }
            Err(e) => {
                return Err(SvidError::CsrParse { reason: format!("not a valid PKCS#10 request: {e}") });
            }
        };
        csr.verify_signature().map_err(|_| SvidError::CsrSignature)?;
        let key = csr_key(&csr.certification_request_info.subject_pki)?;
        let ignored = ignored_requests(&csr, expected)?;

        let serial = x509::random_serial();
        let not_before = (now - BACKDATE).max(self.info.not_before);
        let not_after = x509::add(now, lifetime).min(self.info.not_after);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, "Ward");
        params.distinguished_name.push(DnType::OrganizationalUnitName, expected.mesh());
        params.distinguished_name.push(DnType::CommonName, service);
        let sign = |e: rcgen::Error| SvidError::Sign { reason: e.to_string() };
        params.subject_alt_names = vec![SanType::URI(expected.as_str().to_string().try_into().map_err(sign)?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = x509::to_offset_ceil(not_before);
        params.not_after = x509::to_offset_floor(not_after);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(sign)?;

        let parsed = parse_cert(cert.der())?;
        let cert_pem = cert.pem();
        Ok(IssuedSvid {
            chain_pem: cert_pem.clone(),
            cert_pem,
            cert_der: cert.der().to_vec(),
            spiffe_id: expected.clone(),
            serial_hex: x509::hex(&serial),
            not_before: x509::from_asn1(parsed.validity().not_before),
            not_after: x509::from_asn1(parsed.validity().not_after),
            ignored,
        })
    }
}

/// Maps the CSR's SubjectPublicKeyInfo to a key rcgen can certify.
fn csr_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<CsrKey, SvidError> {
    let oid = &spki.algorithm.algorithm;
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
    let alg = if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        match &curve {
            Some(c) if *c == OID_EC_P256 => &PKCS_ECDSA_P256_SHA256,
            Some(c) if *c == OID_NIST_EC_P384 => &PKCS_ECDSA_P384_SHA384,
            other => {
                let curve = other.as_ref().map_or("none".to_string(), |c| c.to_id_string());
                return Err(SvidError::UnsupportedKey { algorithm: format!("{oid} (curve {curve})") });
            }
        }
    } else if *oid == OID_SIG_ED25519 {
        &PKCS_ED25519
    } else if *oid == OID_PKCS1_RSAENCRYPTION {
        &PKCS_RSA_SHA256
    } else {
        return Err(SvidError::UnsupportedKey { algorithm: oid.to_id_string() });
    };
    Ok(CsrKey { raw: spki.subject_public_key.data.to_vec(), alg })
}

/// Lists what the CSR asks for beyond `expected`; refuses a request for another SPIFFE ID.
fn ignored_requests(csr: &X509CertificationRequest<'_>, expected: &SpiffeId) -> Result<Vec<String>, SvidError> {
    let mut ignored = Vec::new();
    let info = &csr.certification_request_info;
    if info.subject.iter().next().is_some() {
        ignored.push(format!("subject `{}`", info.subject));
    }
    let extensions: Vec<&X509Extension<'_>> = info
        .iter_attributes()
        .filter_map(|attr| match attr.parsed_attribute() {
            ParsedCriAttribute::ExtensionRequest(req) => Some(req.extensions.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    for ext in extensions {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    if let Some(note) = ignored_san(name, expected)? {
                        ignored.push(note);
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) if bc.ca => ignored.push("basicConstraints CA:true".into()),
            ParsedExtension::BasicConstraints(_) => {}
            ParsedExtension::KeyUsage(ku) if ku.flags != 1 => ignored.push(format!("keyUsage `{ku}`")),
            ParsedExtension::KeyUsage(_) => {}
            ParsedExtension::ExtendedKeyUsage(eku) => {
                let only_server_and_client = eku.server_auth
                    && eku.client_auth
                    && !eku.any
                    && !eku.code_signing
                    && !eku.email_protection
                    && !eku.time_stamping
                    && !eku.ocsp_signing
                    && eku.other.is_empty();
                if !only_server_and_client {
                    ignored.push("extendedKeyUsage other than serverAuth+clientAuth".into());
                }
            }
            _ => ignored.push(format!("extension {}", ext.oid)),
        }
    }
    Ok(ignored)
}

/// `None` when a SAN is the granted identity; a note when it is dropped; an error when it names another SPIFFE ID.
fn ignored_san(name: &GeneralName<'_>, expected: &SpiffeId) -> Result<Option<String>, SvidError> {
    let note = match name {
        GeneralName::URI(uri) if *uri == expected.as_str() => return Ok(None),
        GeneralName::URI(uri) if uri.to_ascii_lowercase().starts_with("spiffe:") => {
            return Err(SvidError::IdentityMismatch { requested: uri.to_string(), granted: expected.clone() });
        }
        GeneralName::URI(uri) => format!("URI SAN {uri}"),
        GeneralName::DNSName(dns) => format!("DNS SAN {dns}"),
        GeneralName::IPAddress(bytes) => match <[u8; 4]>::try_from(*bytes) {
            Ok(v4) => format!("IP SAN {}", IpAddr::from(v4)),
            Err(_) => match <[u8; 16]>::try_from(*bytes) {
                Ok(v6) => format!("IP SAN {}", IpAddr::from(v6)),
                Err(_) => format!("SAN {name}"),
            },
        },
        GeneralName::RFC822Name(email) => format!("email SAN {email}"),
        other => format!("SAN {other}"),
    };
    Ok(Some(note))
}

/// Checks a certificate against Ward's SPIFFE X.509-SVID leaf rules; an empty list means compliant.
pub fn check_svid_compliance(cert_der: &[u8]) -> Vec<String> {
    let cert = match parse_cert(cert_der) {
        Ok(cert) => cert,
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    let mut fail = |p: String| problems.push(p);

    match cert.subject_alternative_name() {
        Ok(Some(san)) => {
            let names = &san.value.general_names;
            let uris: Vec<&str> =
                names.iter().filter_map(|n| if let GeneralName::URI(u) = n { Some(*u) } else { None }).collect();
            if uris.len() != 1 {
                fail(format!("subjectAltName: has {} URI SANs, exactly one is required", uris.len()));
            }
            if names.len() != uris.len() {
                fail("subjectAltName: has SANs other than the URI".into());
            }
            for uri in uris {
                match SpiffeId::parse(uri) {
                    Ok(id) if id.service().is_none() => fail(format!("subjectAltName: `{uri}` has no path")),
                    Ok(_) => {}
                    Err(e) => fail(format!("subjectAltName: {e}")),
                }
            }
        }
        Ok(None) => fail("subjectAltName: missing".into()),
        Err(e) => fail(format!("subjectAltName: {e}")),
    }

    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => fail("basicConstraints: CA is true".into()),
        Ok(Some(bc)) if !bc.critical => fail("basicConstraints: not critical".into()),
        Ok(Some(_)) => {}
        Ok(None) => fail("basicConstraints: missing".into()),
        Err(e) => fail(format!("basicConstraints: {e}")),
    }

    let rsa = cert.public_key().algorithm.algorithm == OID_PKCS1_RSAENCRYPTION;
    match cert.key_usage() {
        Ok(Some(ku)) => {
            let allowed: u16 = if rsa { 0b101 } else { 0b1 };
            if !ku.critical {
                fail("keyUsage: not critical".into());
            }
            if !ku.value.digital_signature() {
                fail("keyUsage: digitalSignature missing".into());
            }
            if ku.value.key_cert_sign() {
                fail("keyUsage: keyCertSign set".into());
            }
            if ku.value.crl_sign() {
                fail("keyUsage: cRLSign set".into());
            }
            if ku.value.flags & !allowed & !0b110_0000 != 0 {
                fail(format!("keyUsage: unexpected usages in `{}`", ku.value));
            }
        }
        Ok(None) => fail("keyUsage: missing".into()),
        Err(e) => fail(format!("keyUsage: {e}")),
    }

    match cert.extended_key_usage() {
        Ok(Some(eku)) => {
            if !eku.value.server_auth || !eku.value.client_auth {
                fail("extendedKeyUsage: serverAuth and clientAuth are both required".into());
            }
        }
        Ok(None) => fail("extendedKeyUsage: missing".into()),
        Err(e) => fail(format!("extendedKeyUsage: {e}")),
    }

    let serial = cert.raw_serial();
    if serial.first().is_some_and(|b| b & 0x80 != 0) {
        fail("serialNumber: negative".into());
    }
    if x509::bit_len(serial) < 64 {
        fail(format!("serialNumber: {} bits, at least 64 are required", x509::bit_len(serial)));
    }

    let has_aki =
        cert.iter_extensions().any(|e| matches!(e.parsed_extension(), ParsedExtension::AuthorityKeyIdentifier(_)));
    if !has_aki {
        fail("authorityKeyIdentifier: missing".into());
    }
    if cert.validity().not_before > cert.validity().not_after {
        fail("validity: NotBefore is after NotAfter".into());
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{BuiltinCaOptions, CaMaterial, generate_builtin};
    use crate::csr::generate_key_and_csr;
    use chrono::TimeDelta;
    use rcgen::KeyPair;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000, 250_000_000).unwrap()
    }

    fn ca(mesh: &str) -> Ca {
        let opts = BuiltinCaOptions { rsa_bits: None, lifetime: Duration::from_secs(365 * 24 * 3600) };
        Ca::load(&generate_builtin(mesh, &opts, now() - TimeDelta::days(1)).unwrap().0).unwrap()
    }

    fn users() -> SpiffeId {
        SpiffeId::for_service("m", "users").unwrap()
    }

    /// A CSR built with rcgen from arbitrary parameters.
    fn custom_csr(params: CertificateParams, key: &KeyPair) -> String {
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn a_plain_csr_gets_a_compliant_svid_with_nothing_ignored() {
        let (_, csr) = generate_key_and_csr(&users()).unwrap();
        let svid = ca("m").sign_svid(&csr, &users(), DAY, now()).unwrap();
        assert_eq!(check_svid_compliance(&svid.cert_der), Vec::<String>::new());
        assert!(svid.ignored.is_empty(), "{:?}", svid.ignored);
        assert_eq!(svid.spiffe_id, users());
        assert_eq!(svid.chain_pem, svid.cert_pem);
        assert_eq!(svid.not_after, DateTime::from_timestamp(now().timestamp(), 0).unwrap() + TimeDelta::days(1));
        assert!(now() - svid.not_before <= TimeDelta::seconds(60));
        assert_eq!(svid.serial_hex.len(), 32);
        let cert = parse_cert(&svid.cert_der).unwrap();
        assert_eq!(x509::hex(cert.raw_serial()), svid.serial_hex);
    }

    #[test]
    fn a_csr_without_any_san_gets_the_granted_identity() {
        let key = KeyPair::generate().unwrap();
        let csr = custom_csr(CertificateParams::default(), &key);
        let svid = ca("m").sign_svid(&csr, &users(), DAY, now()).unwrap();
        assert_eq!(check_svid_compliance(&svid.cert_der), Vec::<String>::new());
        assert_eq!(svid.ignored, vec!["subject `CN=rcgen self signed cert`".to_string()]);
    }

    #[test]
    fn identity_requests_table() {
        let cases: [(&str, Vec<&str>, Result<(), ()>); 5] = [
            ("granted ID", vec!["spiffe://m/users"], Ok(())),
            ("another service", vec!["spiffe://m/items"], Err(())),
            ("another mesh", vec!["spiffe://other/users"], Err(())),
            ("granted plus another", vec!["spiffe://m/users", "spiffe://m/items"], Err(())),
            ("malformed spiffe", vec!["SPIFFE://m/Users/"], Err(())),
        ];
        let ca = ca("m");
        for (name, uris, expected) in cases {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::default();
            params.subject_alt_names = uris.iter().map(|u| SanType::URI(u.to_string().try_into().unwrap())).collect();
            let got = ca.sign_svid(&custom_csr(params, &key), &users(), DAY, now());
            match (got, expected) {
                (Ok(_), Ok(())) => {}
                (Err(SvidError::IdentityMismatch { requested, granted }), Err(())) => {
                    assert_eq!(granted, users(), "{name}");
                    assert_ne!(requested, "spiffe://m/users", "{name}");
                }
                (got, _) => panic!("{name}: {got:?}"),
            }
        }
    }

    #[test]
    fn lifetime_and_identity_preconditions() {
        let (_, csr) = generate_key_and_csr(&users()).unwrap();
        let ca = ca("m");
        let err = ca.sign_svid(&csr, &users(), Duration::from_secs(9), now()).unwrap_err();
        assert_eq!(err.to_string(), "lifetime: 9s is shorter than the minimum of 10s");
        assert!(ca.sign_svid(&csr, &users(), MIN_SVID_LIFETIME, now()).is_ok());
        let td = SpiffeId::trust_domain("m").unwrap();
        assert!(matches!(ca.sign_svid(&csr, &td, DAY, now()), Err(SvidError::NotAWorkloadId { .. })));
    }

    #[test]
    fn an_expired_ca_refuses_and_not_after_is_capped_at_the_ca() {
        let (_, csr) = generate_key_and_csr(&users()).unwrap();
        let ca = ca("m");
        let late = ca.info().not_after + TimeDelta::seconds(1);
        assert!(matches!(ca.sign_svid(&csr, &users(), DAY, late), Err(SvidError::Ca(CaError::Expired { .. }))));
        let near_end = ca.info().not_after - TimeDelta::hours(1);
        let svid = ca.sign_svid(&csr, &users(), DAY, near_end).unwrap();
        assert_eq!(svid.not_after, ca.info().not_after);
    }

    #[test]
    fn garbage_csrs_are_refused() {
        let ca = ca("m");
        for csr in ["", "not pem", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"] {
            let err = ca.sign_svid(csr, &users(), DAY, now()).unwrap_err();
            assert!(matches!(err, SvidError::CsrParse { .. }), "{csr:?}: {err:?}");
            assert!(err.to_string().starts_with("csr: "));
        }
    }

    #[test]
    fn csr_keys_of_each_supported_type_are_certified() {
        let ca = ca("m");
        for alg in [&PKCS_ECDSA_P256_SHA256, &PKCS_ECDSA_P384_SHA384, &PKCS_ED25519] {
            let key = KeyPair::generate_for(alg).unwrap();
            let svid = ca.sign_svid(&custom_csr(CertificateParams::default(), &key), &users(), DAY, now()).unwrap();
            let cert = parse_cert(&svid.cert_der).unwrap();
            assert_eq!(cert.public_key().raw, key.subject_public_key_info().as_slice(), "{alg:?}");
            assert_eq!(check_svid_compliance(&svid.cert_der), Vec::<String>::new());
        }
    }

    #[test]
    fn compliance_flags_a_ca_certificate() {
        let opts = BuiltinCaOptions { rsa_bits: None, lifetime: Duration::from_secs(3600) };
        let CaMaterial { cert_pem, .. } = generate_builtin("m", &opts, now()).unwrap().0;
        let der = x509::cert_der_from_pem(&cert_pem).unwrap();
        let problems = check_svid_compliance(&der);
        for expected in [
            "subjectAltName: `spiffe://m` has no path",
            "basicConstraints: CA is true",
            "keyUsage: keyCertSign set",
            "keyUsage: cRLSign set",
            "extendedKeyUsage: missing",
        ] {
            assert!(problems.iter().any(|p| p == expected), "{expected} not in {problems:?}");
        }
        assert_eq!(check_svid_compliance(b"junk").len(), 1);
    }
}
