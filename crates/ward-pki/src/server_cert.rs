//! The control plane's own TLS: its CA, and the certificate its discovery server presents to proxies.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};

use crate::ca::{BACKDATE, Ca, CaError, CaInfo, CaMaterial, self_signed_ca};
use crate::x509;

/// Lifetime of the control plane's CA.
pub const CONTROL_PLANE_CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);

/// A TLS server certificate and its key, both PEM; the key is secret.
pub struct ServerCert {
    /// The leaf followed by the CA certificate.
    pub chain_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

/// Generates the control plane's CA (ECDSA P-256, `O=Ward, CN=Ward control plane`), which proxies
/// are given with `--ca-cert` to authenticate the discovery server.
pub fn generate_control_plane_ca(now: DateTime<Utc>) -> Result<(CaMaterial, CaInfo), CaError> {
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Generate { reason: e.to_string() })?;
    self_signed_ca(key, &[(DnType::CommonName, "Ward control plane")], None, CONTROL_PLANE_CA_LIFETIME, now)
}

impl Ca {
    /// Issues a server certificate for `names` (DNS names or IP addresses) with a fresh key.
    pub fn sign_server_cert(
        &self,
        names: &[String],
        lifetime: Duration,
        now: DateTime<Utc>,
    ) -> Result<ServerCert, CaError> {
        let fail = |e: rcgen::Error| CaError::Generate { reason: e.to_string() };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(fail)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, "Ward");
        params.distinguished_name.push(DnType::CommonName, "Ward discovery server");
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(name.clone().try_into().map_err(fail)?)),
            })
            .collect::<Result<_, CaError>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(SerialNumber::from_slice(&x509::random_serial()));
        params.not_before = x509::to_offset_ceil((now - BACKDATE).max(self.info.not_before));
        params.not_after = x509::to_offset_floor(x509::add(now, lifetime).min(self.info.not_after));
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(fail)?;
        Ok(ServerCert { chain_pem: format!("{}{}", cert.pem(), self.cert_pem()), key_pem: key.serialize_pem() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    #[test]
    fn server_cert_names_hosts_and_addresses_and_chains_to_the_cp_ca() {
        let now = Utc::now();
        let (material, info) = generate_control_plane_ca(now).unwrap();
        assert_eq!(info.subject, "O=Ward, CN=Ward control plane");
        let ca = Ca::load(&material).unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
        let cert = ca.sign_server_cert(&names, Duration::from_secs(3600), now).unwrap();
        let blocks: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(blocks.len(), 2, "leaf and CA");
        let (_, leaf) = X509Certificate::from_der(&blocks[0]).unwrap();
        let sans: Vec<String> = leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(b) if b.len() == 4 => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string(),
                GeneralName::IPAddress(b) => IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(sans, names);
        assert!(!leaf.is_ca());
        assert_eq!(leaf.issuer().to_string(), info.subject);
        assert!(rustls_pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).is_ok());
    }
}
