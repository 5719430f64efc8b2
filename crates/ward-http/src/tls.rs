//! TLS pieces every side of Ward shares: the crypto provider, reading certificates from PEM,
//! and the part of a rustls certificate verifier that checks handshake signatures, which is
//! the same whoever decides whether a certificate is acceptable.

use std::sync::Arc;

use rustls::{
    DigitallySignedStruct, Error, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
};
use rustls_pki_types::{CertificateDer, pem::PemObject};

/// Reads every certificate of a PEM text; none is an error.
pub fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs =
        CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    if certs.is_empty() { Err("no certificate in PEM".into()) } else { Ok(certs) }
}

/// The crypto provider every TLS configuration uses (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Checks the signatures of a TLS handshake with the provider's algorithms.
#[derive(Debug, Clone)]
pub struct HandshakeSignatures(WebPkiSupportedAlgorithms);

impl HandshakeSignatures {
    /// The algorithms of `provider`.
    pub fn of(provider: &CryptoProvider) -> Self {
        HandshakeSignatures(provider.signature_verification_algorithms)
    }

    /// A TLS 1.2 handshake signature.
    pub fn verify_tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    /// A TLS 1.3 handshake signature.
    pub fn verify_tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    /// The schemes these algorithms verify.
    pub fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The three signature methods of a rustls `ServerCertVerifier` or `ClientCertVerifier`,
/// delegated to the [`HandshakeSignatures`] in field `$field` of the verifier.
#[macro_export]
macro_rules! delegate_handshake_signatures {
    ($field:ident) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &::rustls::pki_types::CertificateDer<'_>,
            dss: &::rustls::DigitallySignedStruct,
        ) -> Result<::rustls::client::danger::HandshakeSignatureValid, ::rustls::Error> {
            self.$field.verify_tls12(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &::rustls::pki_types::CertificateDer<'_>,
            dss: &::rustls::DigitallySignedStruct,
        ) -> Result<::rustls::client::danger::HandshakeSignatureValid, ::rustls::Error> {
            self.$field.verify_tls13(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<::rustls::SignatureScheme> {
            self.$field.schemes()
        }
    };
}
