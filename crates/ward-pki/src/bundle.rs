//! Trust bundles: the CA certificates a mesh trusts (several at once during CA rotation), and SVID verification.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_parser::prelude::{GeneralName, ParsedExtension};

use crate::ca::{CaError, CaInfo, check_is_ca, parse_cert};
use crate::spiffe::{SpiffeId, SpiffeIdError};
use crate::x509;

/// A mesh's trusted CA certificates, each for one trust domain: the mesh's own (its name), and
/// those a mesh's MeshIdentities and MeshTrusts name. A CA vouches only for IDs in its domain.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    mesh: String,
    cas: Vec<TrustedCa>,
}

#[derive(Debug, Clone)]
struct TrustedCa {
    domain: String,
    der: CertificateDer<'static>,
    anchor: TrustAnchor<'static>,
    info: CaInfo,
}

/// A workload certificate that verified: the identity it proves, and what tells it apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSvid {
    /// Its SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// Its serial number, lowercase hex.
    pub serial: String,
    /// The end of its validity.
    pub not_after: DateTime<Utc>,
    /// Which CA key signed it: its authority key identifier (hex), or, without one, the
    /// issuer's name. CAs of one mesh may share a name, never a key.
    pub issuer: String,
}

/// Why CA certificates could not be added to a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The mesh name is not a valid trust domain.
    #[error("mesh: {0}")]
    Mesh(#[from] SpiffeIdError),
    /// The PEM holds no certificate.
    #[error("bundle: no PEM CERTIFICATE block found")]
    Empty,
    /// One certificate in the PEM is unusable.
    #[error("bundle certificate #{index}: {source}")]
    Cert {
        /// Position in the PEM, from 1.
        index: usize,
        /// What is wrong with it.
        source: CaError,
    },
}

/// Why a workload certificate was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The certificate cannot be parsed.
    #[error("certificate is malformed: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
    /// No trusted CA signed the certificate.
    #[error("certificate issuer `{issuer}` is not a trusted CA of mesh `{mesh}`")]
    UnknownIssuer {
        /// The certificate's issuer name.
        issuer: String,
        /// The bundle's mesh.
        mesh: String,
    },
    /// The certificate's NotAfter has passed.
    #[error("certificate expired at {}", x509::rfc3339(at))]
    Expired {
        /// NotAfter.
        at: DateTime<Utc>,
    },
    /// The certificate's NotBefore is in the future.
    #[error("certificate is not valid before {}", x509::rfc3339(from))]
    NotYetValid {
        /// NotBefore.
        from: DateTime<Utc>,
    },
    /// The CA that signed the certificate is outside its own validity period.
    #[error("issuing CA `{subject}` is not valid now: {source}")]
    CaNotValid {
        /// The CA's subject.
        subject: String,
        /// Expired or not yet valid.
        source: CaError,
    },
    /// The certificate is a CA, not a workload certificate.
    #[error("certificate is a CA, not a workload certificate")]
    NotALeaf,
    /// The chain is invalid for another reason.
    #[error("certificate rejected: {reason}")]
    Rejected {
        /// The verifier's reason.
        reason: String,
    },
    /// The certificate carries no URI SAN.
    #[error("certificate has no SPIFFE ID (no URI SAN)")]
    NoSpiffeId,
    /// The certificate carries more than one URI SAN.
    #[error("certificate has {count} URI SANs; an X.509-SVID has exactly one")]
    MultipleUriSans {
        /// How many.
        count: usize,
    },
    /// The URI SAN is not a valid workload SPIFFE ID.
    #[error("certificate URI SAN `{uri}` is not a workload SPIFFE ID: {reason}")]
    InvalidSpiffeId {
        /// The URI SAN.
        uri: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The SPIFFE ID belongs to another mesh.
    #[error("certificate SPIFFE ID `{id}` is not in trust domain `{expected}`")]
    WrongTrustDomain {
        /// The certificate's SPIFFE ID.
        id: SpiffeId,
        /// The trust domain of the CA it chains to (the bundle's mesh when none).
        expected: String,
    },
}

/// The authority key identifier of `leaf` in hex, or its issuer's name when it has none.
fn issuer_key(leaf: &x509_parser::certificate::X509Certificate<'_>) -> String {
    leaf.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|k| x509::hex(k.0)),
            _ => None,
        })
        .unwrap_or_else(|| leaf.issuer().to_string())
}

impl TrustBundle {
    /// An empty bundle for a mesh.
    pub fn new(mesh: &str) -> Result<Self, BundleError> {
        SpiffeId::trust_domain(mesh)?;
        Ok(TrustBundle { mesh: mesh.to_string(), cas: Vec::new() })
    }

    /// A bundle holding every certificate in a PEM string.
    pub fn from_pem(mesh: &str, pem: &str) -> Result<Self, BundleError> {
        let mut bundle = Self::new(mesh)?;
        bundle.add_pem(pem)?;
        Ok(bundle)
    }

    /// The mesh (trust domain) this bundle is for.
    pub fn mesh(&self) -> &str {
        &self.mesh
    }

    /// Adds every CA certificate in a PEM string to the mesh's own trust domain, all or none;
    /// returns how many were new.
    pub fn add_pem(&mut self, pem: &str) -> Result<usize, BundleError> {
        let domain = self.mesh.clone();
        self.add_domain_pem(&domain, pem)
    }

    /// Adds every CA certificate in a PEM string as a CA of trust domain `domain`, all or none;
    /// returns how many were new.
    pub fn add_domain_pem(&mut self, domain: &str, pem: &str) -> Result<usize, BundleError> {
        SpiffeId::trust_domain(domain)?;
        let mut new = Vec::new();
        for (i, item) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
            let cert_error = |source| BundleError::Cert { index: i + 1, source };
            let der = item.map_err(|e| cert_error(CaError::CertParse { reason: format!("invalid PEM: {e}") }))?;
            let cert = parse_cert(&der).map_err(cert_error)?;
            check_is_ca(&cert).map_err(cert_error)?;
            let info = CaInfo::describe(&der, &cert);
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| cert_error(CaError::CertParse { reason: e.to_string() }))?
                .to_owned();
            new.push(TrustedCa { domain: domain.to_string(), der: der.clone(), anchor, info });
        }
        if new.is_empty() {
            return Err(BundleError::Empty);
        }
        let before = self.cas.len();
        for ca in new {
            if !self
                .cas
                .iter()
                .any(|c| c.domain == ca.domain && c.info.fingerprint_sha256 == ca.info.fingerprint_sha256)
            {
                self.cas.push(ca);
            }
        }
        Ok(self.cas.len() - before)
    }

    /// Removes the CA with this SHA-256 fingerprint; returns whether it was present.
    pub fn remove(&mut self, fingerprint_sha256: &str) -> bool {
        let before = self.cas.len();
        self.cas.retain(|c| c.info.fingerprint_sha256 != fingerprint_sha256);
        self.cas.len() != before
    }

    /// The trusted CAs.
    pub fn cas(&self) -> impl Iterator<Item = &CaInfo> {
        self.cas.iter().map(|c| &c.info)
    }

    /// The trusted CAs, each with the trust domain it vouches for.
    pub fn cas_by_domain(&self) -> impl Iterator<Item = (&str, &CaInfo)> {
        self.cas.iter().map(|c| (c.domain.as_str(), &c.info))
    }

    /// The CA certificates of the mesh's own trust domain as one PEM string.
    pub fn to_pem(&self) -> String {
        self.domain_pem(&self.mesh)
    }

    /// The CA certificates of trust domain `domain` as one PEM string.
    pub fn domain_pem(&self, domain: &str) -> String {
        self.cas.iter().filter(|c| c.domain == domain).map(|c| x509::pem_encode("CERTIFICATE", &c.der)).collect()
    }

    /// Verifies a workload certificate against the bundle at `now` and returns its SPIFFE ID.
    ///
    /// Checks the signature chain to a trusted CA, the leaf's and the CA's validity periods,
    /// that the leaf is not a CA, clientAuth if an EKU is present, and exactly one URI SAN that
    /// is a workload SPIFFE ID in the trust domain of a CA it chains to.
    pub fn verify_svid(&self, leaf_der: &[u8], now: DateTime<Utc>) -> Result<SpiffeId, VerifyError> {
        let leaf = parse_cert(leaf_der).map_err(|e| VerifyError::Malformed { reason: e.to_string() })?;
        let leaf_ref = CertificateDer::from(leaf_der);
        let end_entity =
            webpki::EndEntityCert::try_from(&leaf_ref).map_err(|e| VerifyError::Malformed { reason: e.to_string() })?;
        let anchors: Vec<TrustAnchor<'_>> = self.cas.iter().map(|c| c.anchor.clone()).collect();
        let time = UnixTime::since_unix_epoch(Duration::from_secs(now.timestamp().max(0) as u64));
        let path = end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                &[],
                time,
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| self.chain_error(e, &leaf.issuer().to_string()))?;
        let anchor_spki = path.anchor().subject_public_key_info.as_ref();
        let anchors: Vec<&TrustedCa> =
            self.cas.iter().filter(|c| c.anchor.subject_public_key_info.as_ref() == anchor_spki).collect();
        if let Some(ca) = anchors.first() {
            ca.info
                .check_valid_at(now)
                .map_err(|source| VerifyError::CaNotValid { subject: ca.info.subject.clone(), source })?;
        }
        let id = self.spiffe_id_of(&leaf)?;
        // A CA vouches only for its own trust domain: a federated mesh's CA cannot name ours.
        if !anchors.iter().any(|c| c.domain == id.mesh()) {
            let expected = anchors.first().map_or_else(|| self.mesh.clone(), |c| c.domain.clone());
            return Err(VerifyError::WrongTrustDomain { id, expected });
        }
        Ok(id)
    }

    /// The SPIFFE ID of a workload certificate this bundle already verified (a TLS peer's):
    /// its one URI SAN, in a trust domain of this bundle. Does not check the chain again.
    pub fn spiffe_id(&self, leaf_der: &[u8]) -> Result<SpiffeId, VerifyError> {
        let leaf = parse_cert(leaf_der).map_err(|e| VerifyError::Malformed { reason: e.to_string() })?;
        self.spiffe_id_of(&leaf)
    }

    /// Verifies a peer's leaf as [`TrustBundle::verify_svid`] does, and tells its serial and end
    /// of validity, so a connection can be held to them after its handshake.
    pub fn verify_peer(&self, leaf_der: &[u8], now: DateTime<Utc>) -> Result<VerifiedSvid, VerifyError> {
        self.verify_svid(leaf_der, now)?;
        self.verified_peer(leaf_der)
    }

    /// What [`TrustBundle::verify_peer`] tells of a leaf this bundle already verified (a TLS
    /// peer's, in its handshake), without checking its chain again.
    pub fn verified_peer(&self, leaf_der: &[u8]) -> Result<VerifiedSvid, VerifyError> {
        let leaf = parse_cert(leaf_der).map_err(|e| VerifyError::Malformed { reason: e.to_string() })?;
        Ok(VerifiedSvid {
            spiffe_id: self.spiffe_id_of(&leaf)?,
            serial: x509::hex(leaf.raw_serial()),
            not_after: x509::from_asn1(leaf.validity().not_after),
            issuer: issuer_key(&leaf),
        })
    }

    fn chain_error(&self, e: webpki::Error, issuer: &str) -> VerifyError {
        let at = |t: UnixTime| DateTime::from_timestamp(t.as_secs() as i64, 0).unwrap_or_default();
        match e {
            webpki::Error::CertExpired { not_after, .. } => VerifyError::Expired { at: at(not_after) },
            webpki::Error::CertNotValidYet { not_before, .. } => VerifyError::NotYetValid { from: at(not_before) },
            webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
                VerifyError::UnknownIssuer { issuer: issuer.to_string(), mesh: self.mesh.clone() }
            }
            webpki::Error::CaUsedAsEndEntity => VerifyError::NotALeaf,
            other => VerifyError::Rejected { reason: other.to_string() },
        }
    }

    fn spiffe_id_of(&self, leaf: &x509_parser::certificate::X509Certificate<'_>) -> Result<SpiffeId, VerifyError> {
        let san = leaf.subject_alternative_name().map_err(|e| VerifyError::Malformed { reason: e.to_string() })?;
        let uris: Vec<&str> = san
            .iter()
            .flat_map(|s| s.value.general_names.iter())
            .filter_map(|n| if let GeneralName::URI(u) = n { Some(*u) } else { None })
            .collect();
        let uri = match uris.as_slice() {
            [] => return Err(VerifyError::NoSpiffeId),
            [uri] => *uri,
            more => return Err(VerifyError::MultipleUriSans { count: more.len() }),
        };
        let invalid = |reason: String| VerifyError::InvalidSpiffeId { uri: uri.to_string(), reason };
        let id = SpiffeId::parse(uri).map_err(|e| invalid(e.to_string()))?;
        if id.service().is_none() {
            return Err(invalid("it has no path".into()));
        }
        if id.mesh() != self.mesh && !self.cas.iter().any(|c| c.domain == id.mesh()) {
            return Err(VerifyError::WrongTrustDomain { id, expected: self.mesh.clone() });
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{BuiltinCaOptions, Ca, generate_builtin};
    use crate::csr::generate_key_and_csr;
    use chrono::TimeDelta;
    use rcgen::{CertificateParams, KeyPair, SanType};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000, 0).unwrap()
    }

    fn ca(mesh: &str) -> Ca {
        let opts = BuiltinCaOptions { rsa_bits: None, lifetime: Duration::from_secs(30 * 24 * 3600) };
        Ca::load(&generate_builtin(mesh, &opts, now() - TimeDelta::days(1)).unwrap().0).unwrap()
    }

    fn leaf(ca: &Ca, id: &str, at: DateTime<Utc>) -> Vec<u8> {
        let id = SpiffeId::parse(id).unwrap();
        let (_, csr) = generate_key_and_csr(&id).unwrap();
        ca.sign_svid(&csr, &id, DAY, at).unwrap().cert_der
    }

    #[test]
    fn leaves_verify_only_in_their_own_mesh() {
        let (a, b) = (ca("a"), ca("b"));
        let bundle_a = TrustBundle::from_pem("a", a.cert_pem()).unwrap();
        let bundle_b = TrustBundle::from_pem("b", b.cert_pem()).unwrap();
        let leaf_a = leaf(&a, "spiffe://a/users", now());
        assert_eq!(bundle_a.verify_svid(&leaf_a, now()).unwrap().as_str(), "spiffe://a/users");
        let err = bundle_b.verify_svid(&leaf_a, now()).unwrap_err();
        assert!(matches!(err, VerifyError::UnknownIssuer { .. }), "{err:?}");
        assert_eq!(err.to_string(), "certificate issuer `O=Ward, OU=Mesh, CN=a` is not a trusted CA of mesh `b`");
    }

    #[test]
    fn a_federated_ca_vouches_only_for_its_own_trust_domain() {
        let (own, federated) = (ca("a"), ca("b"));
        let mut bundle = TrustBundle::from_pem("a", own.cert_pem()).unwrap();
        assert_eq!(bundle.add_domain_pem("b.zone.mesh.local", federated.cert_pem()).unwrap(), 1);
        let theirs = leaf(&federated, "spiffe://b.zone.mesh.local/workload/web", now());
        assert_eq!(bundle.verify_svid(&theirs, now()).unwrap().as_str(), "spiffe://b.zone.mesh.local/workload/web");
        for (signer, id) in [(&federated, "spiffe://a/users"), (&own, "spiffe://b.zone.mesh.local/workload/web")] {
            let err = bundle.verify_svid(&leaf(signer, id, now()), now()).unwrap_err();
            assert!(matches!(err, VerifyError::WrongTrustDomain { .. }), "{id}: {err:?}");
        }
        assert_eq!(bundle.to_pem(), own.cert_pem());
        assert_eq!(bundle.domain_pem("b.zone.mesh.local"), federated.cert_pem());
        assert!(matches!(bundle.add_domain_pem("B", federated.cert_pem()), Err(BundleError::Mesh(_))));
    }

    #[test]
    fn rotation_trusts_old_and_new_until_the_old_is_removed() {
        let (old, new) = (ca("m"), ca("m"));
        let mut bundle = TrustBundle::new("m").unwrap();
        assert_eq!(bundle.add_pem(&format!("{}{}", old.cert_pem(), new.cert_pem())).unwrap(), 2);
        assert_eq!(bundle.add_pem(old.cert_pem()).unwrap(), 0, "duplicates are skipped");
        let (old_leaf, new_leaf) = (leaf(&old, "spiffe://m/users", now()), leaf(&new, "spiffe://m/items", now()));
        assert_eq!(bundle.verify_svid(&old_leaf, now()).unwrap().service(), Some("users"));
        assert_eq!(bundle.verify_svid(&new_leaf, now()).unwrap().service(), Some("items"));

        assert!(bundle.remove(&old.info().fingerprint_sha256));
        assert!(!bundle.remove(&old.info().fingerprint_sha256));
        assert!(matches!(bundle.verify_svid(&old_leaf, now()), Err(VerifyError::UnknownIssuer { .. })));
        assert!(bundle.verify_svid(&new_leaf, now()).is_ok());
        assert_eq!(bundle.cas().count(), 1);
        assert_eq!(TrustBundle::from_pem("m", &bundle.to_pem()).unwrap().cas().next(), bundle.cas().next());
    }

    #[test]
    fn validity_periods_are_enforced() {
        let ca = ca("m");
        let bundle = TrustBundle::from_pem("m", ca.cert_pem()).unwrap();
        let leaf = leaf(&ca, "spiffe://m/users", now());
        let late = now() + TimeDelta::days(2);
        let err = bundle.verify_svid(&leaf, late).unwrap_err();
        assert_eq!(err, VerifyError::Expired { at: now() + TimeDelta::days(1) });
        assert!(err.to_string().starts_with("certificate expired at 2025-"), "{err}");
        let early = now() - TimeDelta::hours(1);
        assert!(matches!(bundle.verify_svid(&leaf, early), Err(VerifyError::NotYetValid { .. })));
    }

    #[test]
    fn an_expired_ca_fails_leaves_it_signed() {
        let ca = ca("m");
        let bundle = TrustBundle::from_pem("m", ca.cert_pem()).unwrap();
        // Ward caps leaves at the CA's NotAfter; a leaf made outside Ward may outlive its CA.
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI("spiffe://m/users".to_string().try_into().unwrap())];
        params.not_before = x509::to_offset_floor(now());
        params.not_after = x509::to_offset_floor(ca.info().not_after + TimeDelta::days(10));
        let leaf = params.signed_by(&key, &ca.issuer).unwrap();
        assert!(bundle.verify_svid(leaf.der(), now()).is_ok());
        let after = ca.info().not_after + TimeDelta::days(1);
        let err = bundle.verify_svid(leaf.der(), after).unwrap_err();
        assert!(matches!(err, VerifyError::CaNotValid { source: CaError::Expired { .. }, .. }), "{err:?}");
    }

    #[test]
    fn the_spiffe_id_must_be_single_and_in_the_trust_domain() {
        let ca = ca("m");
        let bundle = TrustBundle::from_pem("m", ca.cert_pem()).unwrap();
        let other = leaf(&ca, "spiffe://other/users", now());
        assert!(matches!(bundle.verify_svid(&other, now()), Err(VerifyError::WrongTrustDomain { .. })));

        type Check = fn(&VerifyError) -> bool;
        let cases: [(Vec<&str>, Check); 3] = [
            (vec![], |e| matches!(e, VerifyError::NoSpiffeId)),
            (vec!["spiffe://m/a", "spiffe://m/b"], |e| matches!(e, VerifyError::MultipleUriSans { count: 2 })),
            (vec!["https://m/a"], |e| matches!(e, VerifyError::InvalidSpiffeId { .. })),
        ];
        for (uris, check) in cases {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::default();
            params.subject_alt_names = uris.iter().map(|u| SanType::URI(u.to_string().try_into().unwrap())).collect();
            params.not_before = x509::to_offset_floor(now() - TimeDelta::hours(1));
            params.not_after = x509::to_offset_floor(now() + TimeDelta::hours(1));
            let cert = params.signed_by(&key, &ca.issuer).unwrap();
            let err = bundle.verify_svid(cert.der(), now()).unwrap_err();
            assert!(check(&err), "{uris:?}: {err:?}");
        }
    }

    #[test]
    fn a_ca_certificate_is_not_accepted_as_a_workload() {
        let ca = ca("m");
        let bundle = TrustBundle::from_pem("m", ca.cert_pem()).unwrap();
        let der = x509::cert_der_from_pem(ca.cert_pem()).unwrap();
        assert!(bundle.verify_svid(&der, now()).is_err());
        assert!(matches!(bundle.verify_svid(b"junk", now()), Err(VerifyError::Malformed { .. })));
    }

    #[test]
    fn only_ca_certificates_enter_a_bundle() {
        let ca = ca("m");
        let leaf_pem = x509::pem_encode("CERTIFICATE", &leaf(&ca, "spiffe://m/users", now()));
        let err = TrustBundle::from_pem("m", &format!("{}{leaf_pem}", ca.cert_pem())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bundle certificate #2: cert: certificate is not a CA (basicConstraints CA is false)"
        );
        assert_eq!(TrustBundle::from_pem("m", "").unwrap_err(), BundleError::Empty);
        assert!(matches!(TrustBundle::new("M"), Err(BundleError::Mesh(_))));
    }
}
