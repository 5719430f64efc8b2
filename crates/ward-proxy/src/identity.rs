//! The proxy's own identity: a key made in memory (never written anywhere), a CSR naming the
//! SPIFFE ID, and the X.509-SVID the control plane signs for it, checked before it is used.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, pem::PemObject};
use ward_pki::{SpiffeId, TrustBundle, WorkloadKey, generate_key_and_csr};
use ward_proto::discovery::Certificate;

/// A certificate in use, with its key, ready for rustls.
#[derive(Debug)]
pub struct Svid {
    /// Chain and signing key.
    pub certified: Arc<CertifiedKey>,
    /// The identity it proves.
    pub spiffe_id: SpiffeId,
    /// The service it was asked for, whose inbounds present it.
    pub service: String,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// Which CA key signed it (see [`ward_pki::VerifiedSvid::issuer`]).
    pub issuer: String,
    /// The mesh backend whose CA signed it.
    pub backend: String,
}

impl Svid {
    /// Whether it is valid at `now`.
    pub fn valid_at(&self, now: DateTime<Utc>) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// A key waiting for its certificate.
pub struct PendingKey {
    key: WorkloadKey,
    /// The CSR sent for it.
    pub csr_pem: String,
}

/// Why a certificate from the control plane was not installed.
#[derive(Debug, thiserror::Error)]
pub enum SvidRejected {
    /// Key or CSR generation failed.
    #[error(transparent)]
    Csr(#[from] ward_pki::CsrError),
    /// The chain does not parse.
    #[error("certificate chain: {0}")]
    Chain(String),
    /// It certifies another key than the one the proxy made.
    #[error("certificate is for another key than the one this proxy requested")]
    OtherKey,
    /// It does not verify against the mesh's trust bundle, or names another identity.
    #[error("certificate: {0}")]
    Verify(#[from] ward_pki::VerifyError),
    /// It names another identity than the one requested.
    #[error("certificate names {got}, not {expected}")]
    OtherIdentity {
        /// The certificate's SPIFFE ID.
        got: String,
        /// The requested one.
        expected: String,
    },
    /// rustls cannot sign with the key.
    #[error("key: {0}")]
    Key(String),
}

/// Makes a fresh key and a CSR for `id`.
pub fn request(id: &SpiffeId) -> Result<PendingKey, SvidRejected> {
    let (key, csr_pem) = generate_key_and_csr(id)?;
    Ok(PendingKey { key, csr_pem })
}

/// Checks a signed certificate against the pending key, the identity requested for `service`
/// and the trust bundle, and pairs it with the key.
pub fn accept(
    pending: &PendingKey,
    certificate: &Certificate,
    expected: &SpiffeId,
    service: &str,
    bundle: &TrustBundle,
) -> Result<Svid, SvidRejected> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(certificate.chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| SvidRejected::Chain(e.to_string()))?;
    let leaf = chain.first().ok_or_else(|| SvidRejected::Chain("no certificate in the chain".into()))?;
    let verified = bundle.verify_peer(leaf, Utc::now())?;
    let got = verified.spiffe_id;
    if &got != expected {
        return Err(SvidRejected::OtherIdentity { got: got.to_string(), expected: expected.to_string() });
    }
    let signing_key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&pending.key.private_key_der())
        .map_err(|e| SvidRejected::Key(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    if certified.keys_match().is_err() {
        return Err(SvidRejected::OtherKey);
    }
    let at = |unix: i64| DateTime::from_timestamp(unix, 0).unwrap_or_default();
    Ok(Svid {
        certified: Arc::new(certified),
        spiffe_id: got,
        service: service.to_string(),
        serial: certificate.serial.clone(),
        not_before: at(certificate.not_before_unix),
        not_after: at(certificate.not_after_unix),
        issuer: verified.issuer,
        backend: certificate.backend.clone(),
    })
}
