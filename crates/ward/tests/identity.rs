//! Mesh identity as the control plane enforces it: every SVID follows the SPIFFE rules, tokens
//! grant exactly one dataplane of one service in one mesh, CAs are checked, sealed, rotated.

mod common;

use std::time::Duration;

use common::{
    ControlPlane,
    mesh::{RawStream, raw_stream},
};
use serde_json::{Value, json};
use ward_proto::discovery::control_message::Message;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

fn dataplane(mesh: &str, name: &str, service: &str) -> String {
    json!({"type": "Dataplane", "mesh": mesh, "name": name, "networking": {"address": "127.0.0.1",
        "inbound": [{"port": common::free_port(), "tags": {"kuma.io/service": service}}]}})
    .to_string()
}

fn mesh(name: &str, lifetime: &str) -> String {
    format!(
        "type: Mesh\nname: {name}\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n    dpCert: {{rotation: {{expiration: {lifetime}}}}}\n"
    )
}

/// A CSR for `id` that also asks for a DNS name, another URI and the CA bit.
fn greedy_csr(id: &str) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![
        rcgen::SanType::URI(id.to_string().try_into().unwrap()),
        rcgen::SanType::DnsName("evil.example".try_into().unwrap()),
        rcgen::SanType::URI("https://evil.example/".try_into().unwrap()),
    ];
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "root");
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn plain_csr(id: &str) -> String {
    ward_pki::generate_key_and_csr(&ward_pki::SpiffeId::parse(id).unwrap()).unwrap().1
}

async fn open(cp: &ControlPlane, mesh: &str, name: &str, service: &str) -> RawStream {
    let token = cp.dataplane_token(mesh, name, service, "1h");
    raw_stream(cp, &token, &dataplane(mesh, name, service)).await.expect("registered")
}

fn certificate(answer: Message) -> ward_proto::discovery::Certificate {
    match answer {
        Message::Certificate(c) => c,
        other => panic!("expected a certificate, got {other:?}"),
    }
}

fn der(chain_pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(chain_pem.as_bytes()).unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_issued_svid_follows_the_spiffe_rules() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.apply(&mesh("shop", "1h"));
    let mut stream = open(&cp, "shop", "web-1", "web").await;
    for csr in [plain_csr("spiffe://shop/web"), greedy_csr("spiffe://shop/web")] {
        stream.request_certificate(&csr).await;
        let issued = certificate(stream.next_answer().await.unwrap());
        let der = der(&issued.chain_pem);
        assert_eq!(ward_pki::check_svid_compliance(&der), Vec::<String>::new());
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let sans = &cert.subject_alternative_name().unwrap().unwrap().value.general_names;
        assert_eq!(sans.len(), 1, "exactly one SAN, whatever the CSR asked for: {sans:?}");
        assert!(matches!(sans[0], GeneralName::URI("spiffe://shop/web")));
        assert!(!cert.is_ca());
        let key_usage = cert.key_usage().unwrap().unwrap();
        assert!(
            key_usage.critical
                && key_usage.value.digital_signature()
                && !key_usage.value.key_cert_sign()
                && !key_usage.value.crl_sign()
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(cert.raw_serial().len() * 8 >= 64, "a serial of at least 64 bits");
        let now = chrono::Utc::now().timestamp();
        let (nb, na) = (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp());
        assert!(now - nb <= 62 && now - nb >= 0, "NotBefore backdated by at most a minute: {}", now - nb);
        assert!((na - now - 3600).abs() <= 2, "lifetime from dpCert.rotation.expiration");
        assert_eq!(issued.spiffe_id, "spiffe://shop/web");
    }
    assert!(cp.log().contains("the CSR asked for more than its identity"), "the control plane logs what it ignored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_grant_one_dataplane_of_one_service_in_one_mesh() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.apply(&format!("{}---\n{}", mesh("shop", "1h"), mesh("bank", "1h")));

    // A CSR for another service than the token grants.
    let mut stream = open(&cp, "shop", "web-1", "web").await;
    stream.request_certificate(&plain_csr("spiffe://shop/payments")).await;
    match stream.next_answer().await.unwrap() {
        Message::CertificateRefused(r) => assert!(
            r.reason.contains(
                "requests identity `spiffe://shop/payments` but the dataplane token grants `spiffe://shop/web`"
            ),
            "{}",
            r.reason
        ),
        other => panic!("refused expected, got {other:?}"),
    }

    let web_token = cp.dataplane_token("shop", "web-1", "web", "1h");
    let short = cp.dataplane_token("shop", "web-1", "web", "1s");
    let bank_token = cp.dataplane_token("bank", "web-1", "web", "1h");
    // The web token with its claims changed to grant payments, the signature kept.
    let forged = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = web_token.split('.').collect();
        let claims = String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap().replace("\"web\"", "\"payments\"");
        format!("{}.{}.{}", parts[0], b64.encode(claims), parts[2])
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cases = [
        (
            "another service",
            web_token.as_str(),
            dataplane("shop", "web-1", "payments"),
            "issued for service `web`, not `payments`",
        ),
        (
            "another dataplane",
            web_token.as_str(),
            dataplane("shop", "web-2", "web"),
            "issued for dataplane `web-1`, not `web-2`",
        ),
        ("another mesh", bank_token.as_str(), dataplane("shop", "web-1", "web"), "issued for mesh `bank`, not `shop`"),
        ("expired", short.as_str(), dataplane("shop", "web-1", "web"), "token: expired at"),
        ("forged", forged.as_str(), dataplane("shop", "web-1", "payments"), "token: signature does not verify"),
        ("garbage", "not-a-token", dataplane("shop", "web-1", "web"), "token: malformed"),
    ];
    for (what, token, dp, reason) in cases {
        let status = raw_stream(&cp, token, &dp).await.err().unwrap_or_else(|| panic!("{what}: must be refused"));
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{what}");
        assert!(status.message().contains(reason), "{what}: {}", status.message());
    }

    // Revocation: new streams are refused and the open one is closed.
    let jti = {
        use base64::Engine;
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(web_token.split('.').nth(1).unwrap()).unwrap();
        serde_json::from_slice::<Value>(&payload).unwrap()["jti"].as_str().unwrap().to_string()
    };
    let mut live = raw_stream(&cp, &web_token, &dataplane("shop", "web-1", "web")).await.unwrap();
    assert_eq!(cp.ward(&["revoke", "dataplane-token", &jti]).ok(), format!("dataplane token {jti} revoked\n"));
    let closed = live.next_answer().await.unwrap_err();
    assert!(closed.message().contains("has been revoked"), "{closed:?}");
    let refused = raw_stream(&cp, &web_token, &dataplane("shop", "web-1", "web")).await.err().unwrap();
    assert!(refused.message().contains(&format!("`{jti}` has been revoked")), "{}", refused.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_one_mesh_does_not_validate_in_another() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.apply(&format!("{}---\n{}", mesh("shop", "1h"), mesh("bank", "1h")));
    let mut shop = open(&cp, "shop", "web-1", "web").await;
    shop.request_certificate(&plain_csr("spiffe://shop/web")).await;
    let shop_cert = der(&certificate(shop.next_answer().await.unwrap()).chain_pem);
    let mut bank = open(&cp, "bank", "web-1", "web").await;
    let bank_bundle = loop {
        match bank.inbox.message().await.unwrap().unwrap().message {
            Some(Message::Config(c)) => break c.trust_bundle_pem,
            _ => continue,
        }
    };
    let bank = ward_pki::TrustBundle::from_pem("bank", &bank_bundle).unwrap();
    let err = bank.verify_svid(&shop_cert, chrono::Utc::now()).unwrap_err();
    assert!(matches!(err, ward_pki::VerifyError::UnknownIssuer { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provided_cas_are_checked_before_anything_is_stored() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    let now = chrono::Utc::now();
    let options = |secs| ward_pki::BuiltinCaOptions { rsa_bits: None, lifetime: Duration::from_secs(secs) };
    let (good, _) = ward_pki::generate_builtin("shop", &options(86_400), now).unwrap();
    let (other, _) = ward_pki::generate_builtin("shop", &options(86_400), now).unwrap();
    let (expired, _) = ward_pki::generate_builtin("shop", &options(3600), now - chrono::TimeDelta::days(2)).unwrap();
    let leaf = {
        let ca = ward_pki::Ca::load(&good).unwrap();
        let id = ward_pki::SpiffeId::parse("spiffe://shop/web").unwrap();
        let (key, csr) = ward_pki::generate_key_and_csr(&id).unwrap();
        let cert = ca.sign_svid(&csr, &id, Duration::from_secs(3600), now).unwrap().cert_pem;
        let key_pem = rcgen::KeyPair::try_from(key.private_key_der().secret_der()).unwrap().serialize_pem();
        (cert, key_pem)
    };
    let provided = |cert: &str, key: &str| {
        json!({"type": "Mesh", "name": "shop", "mtls": {"enabledBackend": "ca", "backends": [{"name": "ca", "type": "provided",
            "conf": {"cert": {"inlineString": cert}, "key": {"inlineString": key}}}]}})
        .to_string()
    };
    let cases = [
        (
            "not a CA",
            provided(&leaf.0, &leaf.1),
            "meshes/shop: mtls.backends[0].conf.cert: certificate is not a CA (basicConstraints CA is false)",
        ),
        (
            "key of another CA",
            provided(&good.cert_pem, &other.key_pem),
            "meshes/shop: mtls.backends[0].conf.key: key does not match the certificate",
        ),
        (
            "expired",
            provided(&expired.cert_pem, &expired.key_pem),
            "meshes/shop: mtls.backends[0].conf.cert: certificate expired at",
        ),
        (
            "not PEM",
            provided("hello", &good.key_pem),
            "meshes/shop: mtls.backends[0].conf.cert: no PEM CERTIFICATE block found",
        ),
        (
            "file without --provided-ca-dir",
            json!({"type": "Mesh", "name": "shop", "mtls": {"backends": [{"name": "ca", "type": "provided",
                "conf": {"cert": {"file": "/nonexistent/ca.pem"}, "key": {"inlineString": good.key_pem}}}]}})
            .to_string(),
            "meshes/shop: mtls.backends[0].conf.cert.file: no file is read: the control plane runs without --provided-ca-dir",
        ),
    ];
    for (what, yaml, want) in cases {
        let err = cp.ward_stdin(&["apply", "-f", "-"], &yaml).fails();
        assert!(err.contains(want), "{what}: {err}");
    }
    assert!(cp.ward(&["get", "meshes"]).ok().lines().count() == 1, "nothing was stored");
    cp.apply(&provided(&good.cert_pem, &good.key_pem));
    let table = cp.ward(&["get", "meshes"]).ok();
    let info = ward_pki::CaInfo::from_pem(&good.cert_pem).unwrap();
    assert!(table.contains(&info.fingerprint_sha256[..16]), "get meshes shows the CA fingerprint:\n{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_private_key_is_stored_in_clear_or_returned() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    let (provided, _) = ward_pki::generate_builtin(
        "shop",
        &ward_pki::BuiltinCaOptions { rsa_bits: None, lifetime: Duration::from_secs(86_400) },
        chrono::Utc::now(),
    )
    .unwrap();
    let mesh = json!({"type": "Mesh", "name": "shop", "mtls": {"enabledBackend": "mine", "backends": [
        {"name": "mine", "type": "provided", "conf": {"cert": {"inlineString": provided.cert_pem}, "key": {"inlineString": provided.key_pem}}},
        {"name": "generated", "type": "builtin", "conf": {"caCert": {"RSAbits": 2048}}}]}});
    cp.apply(&mesh.to_string());
    cp.ward(&["generate", "dataplane-token", "-m", "shop", "--name", "a", "--tag", "kuma.io/service=a"]).ok();
    let mut stream = open(&cp, "shop", "web-1", "web").await;
    stream.request_certificate(&plain_csr("spiffe://shop/web")).await;
    certificate(stream.next_answer().await.unwrap());

    let stored = cp.ward(&["get", "mesh", "shop", "-o", "yaml"]).ok();
    assert!(!stored.contains("PRIVATE KEY"), "the API never returns a private key:\n{stored}");
    assert!(
        stored.contains("secret: mesh-ca/shop/mine"),
        "the key is replaced by a reference to its sealed copy:\n{stored}"
    );
    // What `get` returns applies again unchanged.
    cp.ward_stdin(&["apply", "-f", "-"], &stored).ok();
    let mut files = 0;
    for entry in std::fs::read_dir(&cp.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("ward.db") {
            let bytes = std::fs::read(&path).unwrap();
            files += 1;
            for marker in ["PRIVATE KEY", "BEGIN EC", "BEGIN RSA"] {
                assert!(
                    !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                    "{} holds {marker}",
                    path.display()
                );
            }
        }
    }
    assert!(files >= 1, "the store's files were examined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_rotate_and_retire() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.apply(&mesh("shop", "1h"));
    let first = cp.dataplane_token("shop", "web-1", "web", "1h");
    assert!(cp.ward(&["rotate", "signing-key", "-m", "shop"]).ok().contains("older keys still verify their tokens"));
    let second = cp.dataplane_token("shop", "web-1", "web", "1h");
    let kid = |t: &str| {
        use base64::Engine;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t.split('.').next().unwrap()).unwrap();
        serde_json::from_slice::<Value>(&header).unwrap()["kid"].as_str().unwrap().to_string()
    };
    assert_ne!(kid(&first), kid(&second), "new tokens use the newest key");
    for token in [&first, &second] {
        raw_stream(&cp, token, &dataplane("shop", "web-1", "web")).await.expect("both keys verify");
    }
    cp.ward(&["rotate", "signing-key", "-m", "shop", "--retire-older"]).ok();
    for token in [&first, &second] {
        let refused = raw_stream(&cp, token, &dataplane("shop", "web-1", "web")).await.err().unwrap();
        assert!(refused.message().contains("signed by unknown key"), "{}", refused.message());
    }
    let third = cp.dataplane_token("shop", "web-1", "web", "1h");
    raw_stream(&cp, &third, &dataplane("shop", "web-1", "web")).await.expect("the new key verifies");
}

/// A CA certificate and key made with rcgen, as an operator's own CA would be.
fn own_ca(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    (params.not_before, params.not_after) = (rcgen::date_time_ymd(2020, 1, 1), rcgen::date_time_ymd(2090, 1, 1));
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

fn secret(mesh: &str, name: &str, data: &str) -> String {
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode(data);
    format!("type: Secret\nmesh: {mesh}\nname: {name}\ndata: {data}\n")
}

/// A Mesh `shop` whose provided backend takes its certificate and key from Secrets.
fn mesh_from_secrets(cert: &str, key: &str) -> String {
    format!(
        "type: Mesh\nname: shop\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: provided\n    \
         conf:\n      cert: {{secret: {cert}}}\n      key: {{secret: {key}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provided_ca_from_secrets_signs_svids_and_keeps_its_secrets() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    let (cert_pem, key_pem) = own_ca("shop operators' CA");
    cp.apply("type: Mesh\nname: shop\n");
    // Missing Secrets are named, field by field, and nothing is stored.
    let err = cp.ward_stdin(&["apply", "-f", "-"], &mesh_from_secrets("ca-cert", "ca-key")).fails();
    for part in ["cert", "key"] {
        let want = format!(
            "meshes/shop: mtls.backends[0].conf.{part}.secret: Secret \"ca-{part}\" does not exist in the mesh"
        );
        assert!(err.contains(&want), "{err}");
    }
    cp.apply(&format!("{}---\n{}", secret("shop", "ca-cert", &cert_pem), secret("shop", "ca-key", &key_pem)));
    cp.apply(&mesh_from_secrets("ca-cert", "ca-key"));

    let mut stream = open(&cp, "shop", "web-1", "web").await;
    stream.request_certificate(&plain_csr("spiffe://shop/web")).await;
    let issued = certificate(stream.next_answer().await.unwrap());
    let bundle = ward_pki::TrustBundle::from_pem("shop", &cert_pem).unwrap();
    bundle.verify_svid(&der(&issued.chain_pem), chrono::Utc::now()).expect("signed by the CA in the Secrets");

    // Secrets in use: not deleted, not changed; the same data again is fine.
    let err = cp.ward(&["delete", "secret", "ca-key", "-m", "shop"]).fails();
    assert!(err.contains("secrets/ca-key: name: in use by meshes/shop at mtls.backends[0].conf.key.secret"), "{err}");
    let (_, other_key) = own_ca("another");
    let err = cp.ward_stdin(&["apply", "-f", "-"], &secret("shop", "ca-key", &other_key)).fails();
    assert!(err.contains("secrets/ca-key: data: cannot change while Mesh \"shop\" uses it"), "{err}");
    cp.apply(&secret("shop", "ca-key", &key_pem));
    assert!(cp.ward(&["get", "secret", "ca-key", "-m", "shop", "-o", "yaml", "--show-data"]).ok().contains(&{
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&key_pem)
    }));

    // The key is never in the store in clear, nor the Mesh's CA key.
    for entry in std::fs::read_dir(&cp.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("ward.db") {
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.windows(11).any(|w| w == b"PRIVATE KEY"), "{} holds a key", path.display());
        }
    }

    // Once the Mesh no longer names them, they can go; the Mesh goes with its Secrets.
    cp.apply(&mesh("shop", "1h"));
    assert_eq!(cp.ward(&["delete", "secret", "ca-key", "-m", "shop"]).ok(), "Secret ca-key in mesh shop deleted\n");
    cp.ward(&["delete", "mesh", "shop"]).ok();
    cp.apply("type: Mesh\nname: shop\n");
    assert_eq!(cp.ward(&["get", "secrets", "-m", "shop"]).ok(), "MESH   NAME   AGE\n");
}
