//! Certificates for the gateway scenario: a CA and a server certificate, written as PEM files
//! that Ward's gateway configuration and nginx both use.

use std::path::{Path, PathBuf};

/// A server certificate for `name`, signed by a fresh CA.
pub struct ServerCert {
    /// The CA, PEM.
    pub ca_pem: String,
    /// The leaf, PEM.
    pub cert_pem: String,
    /// The leaf's key, PEM.
    pub key_pem: String,
    /// `cert.pem` in the directory given.
    pub cert_file: PathBuf,
    /// `key.pem` in the directory given.
    pub key_file: PathBuf,
}

/// Makes a CA and an ECDSA P-256 server certificate for `name`, and writes the leaf and its
/// key into `dir`.
pub fn server_cert(dir: &Path, name: &str) -> anyhow::Result<ServerCert> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "ward-bench CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem())?;
    std::fs::write(&key_file, key.serialize_pem())?;
    Ok(ServerCert { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem(), cert_file, key_file })
}
