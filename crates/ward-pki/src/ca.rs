//! Mesh certificate authorities: the built-in generator, checks for user-provided CAs, and the signer.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, RsaKeySize, SanType, SerialNumber,
};
use serde::Serialize;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::spiffe::{SpiffeId, SpiffeIdError};
use crate::x509;

/// The shortest lifetime accepted for a built-in CA.
pub const MIN_CA_LIFETIME: Duration = Duration::from_secs(3600);

/// How far a new certificate's NotBefore is set back, to absorb clock skew.
pub(crate) const BACKDATE: TimeDelta = TimeDelta::seconds(60);

/// Options for [`generate_builtin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinCaOptions {
    /// RSA key size (2048, 3072 or 4096); `None` for ECDSA P-256.
    pub rsa_bits: Option<u32>,
    /// How long the root certificate is valid.
    pub lifetime: Duration,
}

/// A CA certificate and its private key, both PEM (the key PKCS#8 when Ward generated it).
#[derive(Clone, PartialEq, Eq)]
pub struct CaMaterial {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA private key, PEM; secret.
    pub key_pem: String,
}

impl fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaMaterial").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// What an operator needs to know about a CA certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaInfo {
    /// SHA-256 of the certificate DER, lowercase hex without colons.
    pub fingerprint_sha256: String,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// Subject distinguished name, e.g. `O=Ward, OU=Mesh, CN=default`.
    pub subject: String,
    /// Whether it is its own issuer and signed with its own key (a root).
    pub self_signed: bool,
}

/// Why a CA could not be generated, loaded or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaError {
    /// The mesh name is not a valid trust domain.
    #[error("mesh: {0}")]
    Mesh(#[from] SpiffeIdError),
    /// `rsa_bits` is not 2048, 3072 or 4096.
    #[error("rsa_bits: {bits} is not supported (use 2048, 3072 or 4096, or omit for ECDSA P-256)")]
    RsaBits {
        /// The rejected size.
        bits: u32,
    },
    /// The requested CA lifetime is below [`MIN_CA_LIFETIME`].
    #[error("lifetime: {secs}s is too short for a CA (minimum 3600s)")]
    LifetimeTooShort {
        /// The rejected lifetime in seconds.
        secs: u64,
    },
    /// The requested CA lifetime ends after the last instant an X.509 time can express.
    #[error("lifetime: {secs}s would end after {}, the last time a certificate can state", x509::rfc3339(&x509::latest()))]
    LifetimeTooLong {
        /// The rejected lifetime in seconds.
        secs: u64,
    },
    /// Key or certificate generation failed inside the crypto library.
    #[error("CA generation failed: {reason}")]
    Generate {
        /// The library's message.
        reason: String,
    },
    /// The certificate PEM or DER cannot be parsed.
    #[error("cert: {reason}")]
    CertParse {
        /// What is wrong with it.
        reason: String,
    },
    /// The private key PEM cannot be parsed or uses an unsupported algorithm.
    #[error(
        "key: not a supported private key PEM (PKCS#8, SEC1 or PKCS#1; ECDSA P-256/P-384, RSA or Ed25519): {reason}"
    )]
    KeyParse {
        /// The library's message.
        reason: String,
    },
    /// The certificate is not a CA.
    #[error("cert: certificate is not a CA ({reason})")]
    NotCa {
        /// Which part of basicConstraints is wrong.
        reason: &'static str,
    },
    /// The certificate may not sign certificates.
    #[error("cert: certificate keyUsage does not include keyCertSign ({reason})")]
    NoKeyCertSign {
        /// Whether keyUsage is absent or lacks the bit.
        reason: &'static str,
    },
    /// The private key is not the certificate's key.
    #[error("key: key does not match the certificate")]
    KeyMismatch,
    /// The certificate's NotAfter has passed.
    #[error("cert: certificate expired at {}", x509::rfc3339(at))]
    Expired {
        /// NotAfter.
        at: DateTime<Utc>,
    },
    /// The certificate's NotBefore is in the future.
    #[error("cert: certificate is not valid before {}", x509::rfc3339(from))]
    NotYetValid {
        /// NotBefore.
        from: DateTime<Utc>,
    },
}

impl CaInfo {
    /// Describes the first certificate in a PEM string.
    pub fn from_pem(cert_pem: &str) -> Result<CaInfo, CaError> {
        let der = x509::cert_der_from_pem(cert_pem).map_err(|reason| CaError::CertParse { reason })?;
        let cert = parse_cert(&der)?;
        Ok(CaInfo::describe(&der, &cert))
    }

    /// Checks that `now` is inside the validity period.
    pub fn check_valid_at(&self, now: DateTime<Utc>) -> Result<(), CaError> {
        if now < self.not_before {
            return Err(CaError::NotYetValid { from: self.not_before });
        }
        if now > self.not_after {
            return Err(CaError::Expired { at: self.not_after });
        }
        Ok(())
    }

    pub(crate) fn describe(der: &[u8], cert: &X509Certificate<'_>) -> CaInfo {
        CaInfo {
            fingerprint_sha256: x509::sha256_hex(der),
            not_before: x509::from_asn1(cert.validity().not_before),
            not_after: x509::from_asn1(cert.validity().not_after),
            subject: cert.subject().to_string(),
            self_signed: cert.subject() == cert.issuer() && cert.verify_signature(None).is_ok(),
        }
    }
}

/// Parses a DER certificate, refusing trailing bytes.
pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, CaError> {
    match X509Certificate::from_der(der) {
        Ok((rest, _)) if !rest.is_empty() => {
            Err(CaError::CertParse { reason: "trailing bytes after the certificate".into() })
        }
        Ok((_, cert)) => Ok(cert),
        Err(e) => Err(CaError::CertParse { reason: format!("not a valid X.509 certificate: {e}") }),
    }
}

/// Checks that a certificate is a CA allowed to sign certificates.
pub(crate) fn check_is_ca(cert: &X509Certificate<'_>) -> Result<(), CaError> {
    let invalid = |e: x509_parser::error::X509Error| CaError::CertParse { reason: e.to_string() };
    match cert.basic_constraints().map_err(invalid)? {
        None => {
            return Err(CaError::NotCa { reason: "no basicConstraints extension" });
        }
        Some(bc) if !bc.value.ca => {
            return Err(CaError::NotCa { reason: "basicConstraints CA is false" });
        }
        Some(_) => {}
    }
    match cert.key_usage().map_err(invalid)? {
        None => Err(CaError::NoKeyCertSign { reason: "no keyUsage extension" }),
        Some(ku) if !ku.value.key_cert_sign() => Err(CaError::NoKeyCertSign { reason: "the bit is not set" }),
        Some(_) => Ok(()),
    }
}

/// Generates a self-signed root CA for a mesh.
pub fn generate_builtin(
    mesh: &str,
    opts: &BuiltinCaOptions,
    now: DateTime<Utc>,
) -> Result<(CaMaterial, CaInfo), CaError> {
    let trust_domain = SpiffeId::trust_domain(mesh)?;
    if opts.lifetime < MIN_CA_LIFETIME {
        return Err(CaError::LifetimeTooShort { secs: opts.lifetime.as_secs() });
    }
    let generate = |e: rcgen::Error| CaError::Generate { reason: e.to_string() };
    let key = match opts.rsa_bits {
        None => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        Some(2048) => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
        Some(3072) => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_3072),
        Some(4096) => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_4096),
        Some(bits) => return Err(CaError::RsaBits { bits }),
    }
    .map_err(generate)?;

    let uri = trust_domain.as_str().to_string().try_into().map_err(generate)?;
    self_signed_ca(
        key,
        &[(DnType::OrganizationalUnitName, "Mesh"), (DnType::CommonName, mesh)],
        Some(uri),
        opts.lifetime,
        now,
    )
}

/// A self-signed CA certificate for `key`: subject `O=Ward` plus `names`, an optional URI SAN,
/// basicConstraints CA, keyUsage keyCertSign, cRLSign and digitalSignature.
pub(crate) fn self_signed_ca(
    key: KeyPair,
    names: &[(DnType, &str)],
    uri_san: Option<rcgen::string::Ia5String>,
    lifetime: Duration,
    now: DateTime<Utc>,
) -> Result<(CaMaterial, CaInfo), CaError> {
    let generate = |e: rcgen::Error| CaError::Generate { reason: e.to_string() };
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "Ward");
    for (ty, value) in names {
        params.distinguished_name.push(ty.clone(), *value);
    }
    params.subject_alt_names = uri_san.into_iter().map(SanType::URI).collect();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(SerialNumber::from_slice(&x509::random_serial()));
    params.not_before = x509::to_offset_ceil(now - BACKDATE);
    let not_after = x509::checked_end(now, lifetime).ok_or(CaError::LifetimeTooLong { secs: lifetime.as_secs() })?;
    params.not_after = x509::to_offset_floor(not_after);
    let cert = params.self_signed(&key).map_err(generate)?;

    let info = CaInfo::describe(cert.der(), &parse_cert(cert.der())?);
    Ok((CaMaterial { cert_pem: cert.pem(), key_pem: key.serialize_pem() }, info))
}

/// Checks a user-provided CA (certificate and key PEM) and describes it.
pub fn validate_provided(cert_pem: &str, key_pem: &str, now: DateTime<Utc>) -> Result<CaInfo, CaError> {
    let ca = Ca::load(&CaMaterial { cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string() })?;
    ca.info.check_valid_at(now)?;
    Ok(ca.info)
}

/// A loaded mesh CA that signs workload certificates; cheap to share (`Send + Sync`, signing takes `&self`).
pub struct Ca {
    pub(crate) issuer: Issuer<'static, KeyPair>,
    pub(crate) info: CaInfo,
    cert_pem: String,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads a CA, checking that the certificate is a CA and the key is its key (validity is checked when signing).
    pub fn load(material: &CaMaterial) -> Result<Ca, CaError> {
        let der = x509::cert_der_from_pem(&material.cert_pem).map_err(|reason| CaError::CertParse { reason })?;
        let cert = parse_cert(&der)?;
        let key = KeyPair::from_pem(&material.key_pem).map_err(|e| CaError::KeyParse { reason: e.to_string() })?;
        check_is_ca(&cert)?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::KeyMismatch);
        }
        let info = CaInfo::describe(&der, &cert);
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| CaError::CertParse { reason: e.to_string() })?;
        Ok(Ca { issuer, info, cert_pem: material.cert_pem.clone() })
    }

    /// The CA certificate's description.
    pub fn info(&self) -> &CaInfo {
        &self.info
    }

    /// The CA certificate, PEM, as loaded.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PKCS_ECDSA_P384_SHA384;
    use x509_parser::prelude::GeneralName;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000, 0).unwrap()
    }

    const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

    fn opts(rsa_bits: Option<u32>) -> BuiltinCaOptions {
        BuiltinCaOptions { rsa_bits, lifetime: TEN_YEARS }
    }

    /// A CA made by rcgen directly, as a user would bring one.
    fn provided(
        alg: &'static rcgen::SignatureAlgorithm,
        is_ca: IsCa,
        key_usages: Vec<KeyUsagePurpose>,
        not_after: DateTime<Utc>,
    ) -> CaMaterial {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "Corp Root");
        params.is_ca = is_ca;
        params.key_usages = key_usages;
        params.not_before = x509::to_offset_floor(now() - TimeDelta::days(30));
        params.not_after = x509::to_offset_floor(not_after);
        let cert = params.self_signed(&key).unwrap();
        CaMaterial { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    fn ca_usages() -> Vec<KeyUsagePurpose> {
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign]
    }

    #[test]
    fn builtin_root_has_the_required_shape() {
        for rsa_bits in [None, Some(2048)] {
            let (material, info) = generate_builtin("default", &opts(rsa_bits), now()).unwrap();
            assert!(material.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 expected");
            let der = x509::cert_der_from_pem(&material.cert_pem).unwrap();
            let cert = parse_cert(&der).unwrap();
            assert_eq!(cert.subject().to_string(), "O=Ward, OU=Mesh, CN=default");
            assert_eq!(info.subject, "O=Ward, OU=Mesh, CN=default");
            assert_eq!(cert.issuer(), cert.subject());

            let san = cert.subject_alternative_name().unwrap().unwrap();
            assert_eq!(san.value.general_names, vec![GeneralName::URI("spiffe://default")]);

            let bc = cert.basic_constraints().unwrap().unwrap();
            assert!(bc.critical && bc.value.ca);
            let ku = cert.key_usage().unwrap().unwrap();
            assert!(ku.critical);
            assert!(ku.value.key_cert_sign() && ku.value.crl_sign() && ku.value.digital_signature());

            assert!(x509::bit_len(cert.raw_serial()) >= 64);
            assert_eq!(info.not_before, now() - BACKDATE);
            assert_eq!(info.not_after, x509::add(now(), TEN_YEARS));
            assert_eq!(info.fingerprint_sha256.len(), 64);
            assert!(info.fingerprint_sha256.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            let algo = cert.public_key().algorithm.algorithm.to_id_string();
            let expected = if rsa_bits.is_some() { "1.2.840.113549.1.1.1" } else { "1.2.840.10045.2.1" };
            assert_eq!(algo, expected);

            let ca = Ca::load(&material).unwrap();
            assert_eq!(ca.info(), &info);
        }
    }

    #[test]
    fn builtin_rejects_bad_options() {
        let err = generate_builtin("default", &opts(Some(1024)), now()).unwrap_err();
        assert_eq!(err, CaError::RsaBits { bits: 1024 });
        assert!(err.to_string().starts_with("rsa_bits: 1024"));
        let short = BuiltinCaOptions { rsa_bits: None, lifetime: Duration::from_secs(60) };
        assert!(matches!(generate_builtin("default", &short, now()), Err(CaError::LifetimeTooShort { secs: 60 })));
        assert!(matches!(generate_builtin("Bad Mesh", &opts(None), now()), Err(CaError::Mesh(_))));
    }

    #[test]
    fn builtin_refuses_a_lifetime_past_what_x509_can_hold() {
        // 70,000,000 h from 2026 ends in the year 10016; written as X.509 it would wrap to the past.
        let long = BuiltinCaOptions { rsa_bits: None, lifetime: Duration::from_secs(70_000_000 * 3600) };
        let err = generate_builtin("default", &long, now()).unwrap_err();
        assert_eq!(err, CaError::LifetimeTooLong { secs: 252_000_000_000 });
        assert_eq!(
            err.to_string(),
            "lifetime: 252000000000s would end after 9999-12-31T23:59:59Z, the last time a certificate can state"
        );
        let to_end = BuiltinCaOptions { rsa_bits: None, lifetime: (x509::latest() - now()).to_std().unwrap() };
        let (_, info) = generate_builtin("default", &to_end, now()).unwrap();
        assert_eq!(info.not_after, x509::latest());
    }

    #[test]
    fn two_builtin_roots_differ() {
        let (_, a) = generate_builtin("m", &opts(None), now()).unwrap();
        let (_, b) = generate_builtin("m", &opts(None), now()).unwrap();
        assert_ne!(a.fingerprint_sha256, b.fingerprint_sha256);
    }

    #[test]
    fn provided_ca_checks_table() {
        let valid_until = now() + TimeDelta::days(365);
        let (other, _) = generate_builtin("x", &opts(None), now()).unwrap();
        let good =
            provided(&PKCS_ECDSA_P256_SHA256, IsCa::Ca(BasicConstraints::Unconstrained), ca_usages(), valid_until);
        let cases: Vec<(&str, CaMaterial, Result<(), &str>)> = vec![
            ("valid P-256", good.clone(), Ok(())),
            (
                "valid P-384",
                provided(&PKCS_ECDSA_P384_SHA384, IsCa::Ca(BasicConstraints::Constrained(0)), ca_usages(), valid_until),
                Ok(()),
            ),
            (
                "valid Ed25519",
                provided(&rcgen::PKCS_ED25519, IsCa::Ca(BasicConstraints::Unconstrained), ca_usages(), valid_until),
                Ok(()),
            ),
            (
                "not a CA",
                provided(&PKCS_ECDSA_P256_SHA256, IsCa::ExplicitNoCa, ca_usages(), valid_until),
                Err("cert: certificate is not a CA (basicConstraints CA is false)"),
            ),
            (
                "no basicConstraints",
                provided(&PKCS_ECDSA_P256_SHA256, IsCa::NoCa, ca_usages(), valid_until),
                Err("cert: certificate is not a CA (no basicConstraints extension)"),
            ),
            (
                "no keyCertSign",
                provided(
                    &PKCS_ECDSA_P256_SHA256,
                    IsCa::Ca(BasicConstraints::Unconstrained),
                    vec![KeyUsagePurpose::DigitalSignature],
                    valid_until,
                ),
                Err("cert: certificate keyUsage does not include keyCertSign (the bit is not set)"),
            ),
            (
                "key mismatch",
                CaMaterial { cert_pem: good.cert_pem.clone(), key_pem: other.key_pem.clone() },
                Err("key: key does not match the certificate"),
            ),
            (
                "expired",
                provided(
                    &PKCS_ECDSA_P256_SHA256,
                    IsCa::Ca(BasicConstraints::Unconstrained),
                    ca_usages(),
                    DateTime::from_timestamp(1_577_836_800, 0).unwrap(),
                ),
                Err("cert: certificate expired at 2020-01-01T00:00:00Z"),
            ),
            (
                "cert garbage",
                CaMaterial { cert_pem: "hello".into(), key_pem: good.key_pem.clone() },
                Err("cert: no PEM CERTIFICATE block found"),
            ),
        ];
        for (name, material, expected) in cases {
            let got = validate_provided(&material.cert_pem, &material.key_pem, now());
            match (got, expected) {
                (Ok(info), Ok(())) => assert_eq!(info.subject, "CN=Corp Root", "{name}"),
                (Err(e), Err(msg)) => assert_eq!(e.to_string(), msg, "{name}"),
                (got, expected) => panic!("{name}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn provided_ca_not_yet_valid_and_bad_key_are_rejected() {
        let good = provided(
            &PKCS_ECDSA_P256_SHA256,
            IsCa::Ca(BasicConstraints::Unconstrained),
            ca_usages(),
            now() + TimeDelta::days(365),
        );
        let early = now() - TimeDelta::days(60);
        assert!(matches!(validate_provided(&good.cert_pem, &good.key_pem, early), Err(CaError::NotYetValid { .. })));
        let err =
            validate_provided(&good.cert_pem, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", now())
                .unwrap_err();
        assert!(matches!(err, CaError::KeyParse { .. }), "{err:?}");
        assert!(err.to_string().starts_with("key: "));
    }

    #[test]
    fn ca_info_describes_any_ca_pem() {
        let (material, info) = generate_builtin("m", &opts(None), now()).unwrap();
        assert_eq!(CaInfo::from_pem(&material.cert_pem).unwrap(), info);
        assert!(matches!(CaInfo::from_pem("nope"), Err(CaError::CertParse { .. })));
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let (material, _) = generate_builtin("m", &opts(None), now()).unwrap();
        let shown = format!("{material:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(shown.contains("<redacted>"));
        let ca = Ca::load(&material).unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }
}
