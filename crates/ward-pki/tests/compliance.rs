//! End-to-end issuance: every SVID Ward signs is checked by `check_svid_compliance` and,
//! independently, by parsing it here with x509-parser.

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use ward_pki::{
    BuiltinCaOptions, Ca, CaMaterial, IssuedSvid, SpiffeId, SvidError, TrustBundle, check_svid_compliance,
    generate_builtin, generate_key_and_csr, validate_provided,
};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

const DAY: Duration = Duration::from_secs(24 * 3600);
const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn builtin(mesh: &str, rsa_bits: Option<u32>) -> Ca {
    let (material, _) = generate_builtin(mesh, &BuiltinCaOptions { rsa_bits, lifetime: TEN_YEARS }, now()).unwrap();
    Ca::load(&material).unwrap()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
}

/// Checks every SVID rule by hand, without ward-pki's own checker.
fn assert_svid_shape(svid: &IssuedSvid, ca: &Ca, id: &SpiffeId, issued_at: DateTime<Utc>) {
    assert_eq!(check_svid_compliance(&svid.cert_der), Vec::<String>::new());
    let (rest, cert) = X509Certificate::from_der(&svid.cert_der).unwrap();
    assert!(rest.is_empty());

    let san = cert.subject_alternative_name().unwrap().expect("SAN present");
    assert_eq!(san.value.general_names, vec![GeneralName::URI(id.as_str())], "exactly one URI SAN");

    let bc = cert.basic_constraints().unwrap().expect("basicConstraints present");
    assert!(bc.critical, "basicConstraints critical");
    assert!(!bc.value.ca, "leaf is not a CA");

    let ku = cert.key_usage().unwrap().expect("keyUsage present");
    assert!(ku.critical, "keyUsage critical");
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
    assert_eq!(ku.value.flags, 1, "digitalSignature only for an ECDSA leaf key");

    let eku = cert.extended_key_usage().unwrap().expect("EKU present");
    assert!(eku.value.server_auth && eku.value.client_auth);

    let serial = cert.raw_serial();
    assert_eq!(serial[0] & 0x80, 0, "serial positive");
    let first = serial.iter().position(|&b| b != 0).unwrap();
    let bits = (serial.len() - first) * 8 - serial[first].leading_zeros() as usize;
    assert!(bits >= 64, "serial has {bits} bits");

    let not_before = DateTime::from_timestamp(cert.validity().not_before.timestamp(), 0).unwrap();
    let not_after = DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0).unwrap();
    assert!(not_before <= issued_at, "NotBefore {not_before} after issue time {issued_at}");
    assert!(
        issued_at - not_before <= TimeDelta::seconds(60),
        "NotBefore {not_before} more than 60s before {issued_at}"
    );
    assert!((not_after - (issued_at + TimeDelta::days(1))).num_seconds().abs() <= 1);
    assert_eq!((svid.not_before, svid.not_after), (not_before, not_after));

    let ca_der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
    let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
    assert_eq!(cert.issuer(), ca_cert.subject(), "issuer is the CA subject");
    let ski = ca_cert.iter_extensions().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    });
    let aki = cert.iter_extensions().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0.to_vec()),
        _ => None,
    });
    assert!(aki.is_some(), "authorityKeyIdentifier set");
    assert_eq!(aki, ski, "AKI names the CA's key");
    cert.verify_signature(Some(ca_cert.public_key())).expect("signed by the CA");
}

#[test]
fn svids_from_ecdsa_and_rsa_roots_are_compliant() {
    for (name, rsa_bits) in [("ecdsa", None), ("rsa-2048", Some(2048)), ("rsa-3072", Some(3072))] {
        let ca = builtin("default", rsa_bits);
        let bundle = TrustBundle::from_pem("default", ca.cert_pem()).unwrap();
        for service in ["users", "items", "invoices"] {
            let id = SpiffeId::for_service("default", service).unwrap();
            let (key, csr) = generate_key_and_csr(&id).unwrap();
            let at = now();
            let svid = ca.sign_svid(&csr, &id, DAY, at).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_svid_shape(&svid, &ca, &id, at);
            assert!(svid.ignored.is_empty(), "{name}: {:?}", svid.ignored);
            let (_, cert) = X509Certificate::from_der(&svid.cert_der).unwrap();
            assert_eq!(cert.public_key().raw, key.public_key_der().as_slice(), "the proxy's key is certified");
            assert_eq!(bundle.verify_svid(&svid.cert_der, now()).unwrap(), id, "{name}");
        }
    }
}

#[test]
fn extra_sans_and_the_ca_bit_are_ignored_and_listed() {
    let ca = builtin("m", None);
    let id = SpiffeId::for_service("m", "users").unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["users.example.com".to_string(), "evil.example.com".to_string()]).unwrap();
    params.subject_alt_names.push(SanType::URI(id.as_str().to_string().try_into().unwrap()));
    params.subject_alt_names.push(SanType::IpAddress("10.0.0.1".parse().unwrap()));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();

    let at = now();
    let svid = ca.sign_svid(&csr, &id, DAY, at).unwrap();
    assert_svid_shape(&svid, &ca, &id, at);
    for expected in [
        "DNS SAN users.example.com",
        "DNS SAN evil.example.com",
        "IP SAN 10.0.0.1",
        "basicConstraints CA:true",
        "keyUsage `Digital Signature, Key Cert Sign`",
    ] {
        assert!(svid.ignored.iter().any(|i| i == expected), "{expected:?} not in {:?}", svid.ignored);
    }
}

#[test]
fn a_csr_for_another_service_is_refused() {
    let ca = builtin("m", None);
    let granted = SpiffeId::for_service("m", "users").unwrap();
    let (_, csr) = generate_key_and_csr(&SpiffeId::for_service("m", "items").unwrap()).unwrap();
    let err = ca.sign_svid(&csr, &granted, DAY, now()).unwrap_err();
    assert_eq!(err, SvidError::IdentityMismatch { requested: "spiffe://m/items".into(), granted: granted.clone() });
    assert_eq!(
        err.to_string(),
        "csr: requests identity `spiffe://m/items` but the dataplane token grants `spiffe://m/users`"
    );
}

#[test]
fn a_csr_with_a_broken_signature_is_refused() {
    let ca = builtin("m", None);
    let id = SpiffeId::for_service("m", "users").unwrap();
    let (_, csr) = generate_key_and_csr(&id).unwrap();
    let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes()).unwrap().as_ref().to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let err = ca.sign_svid(&pem("CERTIFICATE REQUEST", &der), &id, DAY, now()).unwrap_err();
    assert_eq!(err, SvidError::CsrSignature);
    assert!(ca.sign_svid(&csr, &id, DAY, now()).is_ok(), "the untouched CSR is fine");
}

#[test]
fn a_provided_ca_signs_compliant_svids() {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "Corp");
    params.distinguished_name.push(DnType::CommonName, "Corp Mesh Root");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2040, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    let material = CaMaterial { cert_pem: cert.pem(), key_pem: key.serialize_pem() };

    let info = validate_provided(&material.cert_pem, &material.key_pem, now()).unwrap();
    assert_eq!(info.subject, "O=Corp, CN=Corp Mesh Root");
    let ca = Ca::load(&material).unwrap();
    let id = SpiffeId::for_service("corp", "billing").unwrap();
    let (_, csr) = generate_key_and_csr(&id).unwrap();
    let at = now();
    let svid = ca.sign_svid(&csr, &id, DAY, at).unwrap();
    assert_svid_shape(&svid, &ca, &id, at);
    let bundle = TrustBundle::from_pem("corp", &material.cert_pem).unwrap();
    assert_eq!(bundle.verify_svid(&svid.cert_der, now()).unwrap(), id);
}

#[test]
fn a_ca_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Ca>();
    assert_send_sync::<TrustBundle>();
    assert_send_sync::<ward_pki::SigningKey>();

    let ca = std::sync::Arc::new(builtin("m", None));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let ca = ca.clone();
            std::thread::spawn(move || {
                let id = SpiffeId::for_service("m", &format!("svc-{i}")).unwrap();
                let (_, csr) = generate_key_and_csr(&id).unwrap();
                ca.sign_svid(&csr, &id, DAY, now()).unwrap().serial_hex
            })
        })
        .collect();
    let mut serials: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 4, "serials are unique");
}
