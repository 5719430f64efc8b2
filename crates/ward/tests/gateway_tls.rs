//! The HTTPS listener: certificates chosen by SNI (wildcards too), HTTP/2 by ALPN,
//! TLS 1.2 as the minimum, and mtls-auth mapping client certificates to consumers.

mod common;

use common::{GatewayProcess, TestPki, Upstream, yaml_block};
use serde_json::Value;

fn certificate(leaf: &common::Leaf, snis: &[&str]) -> String {
    format!(
        "- cert: |\n{}  key: |\n{}  snis: [{}]\n",
        yaml_block(&leaf.cert, 4),
        yaml_block(&leaf.key, 4),
        snis.join(", ")
    )
}

/// A client that trusts `ca` and reaches `name` at the gateway's HTTPS port.
fn client_for(gw: &GatewayProcess, ca: &str, name: &str, identity: Option<&common::Leaf>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
        .resolve(name, gw.proxy_ssl);
    if let Some(leaf) = identity {
        let pem = format!("{}{}", leaf.cert, leaf.key);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn certificates_by_sni_and_http2() {
    let upstream = Upstream::start("echo").await;
    let pki = TestPki::new("Test CA");
    let exact = pki.server(&["api.test"]);
    let wild = pki.server(&["*.wild.test"]);
    let config = format!(
        r#"
_format_version: "3.0"
certificates:
{}{}services:
- name: echo
  url: {}
  routes:
  - name: r
    paths: [/]
  - name: only-wild
    snis: ["*.wild.test"]
    paths: [/sni-only]
"#,
        certificate(&exact, &["api.test"]),
        certificate(&wild, &["\"*.wild.test\""]),
        upstream.url()
    );
    let gw = GatewayProcess::start(&config);
    for name in ["api.test", "shop.wild.test"] {
        let client = client_for(&gw, &pki.ca_pem, name, None);
        let url = format!("https://{name}:{}/", gw.proxy_ssl.port());
        let r = client.get(&url).send().await.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "{name}: HTTP/2 by ALPN");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    }
    // A name with no certificate gets the default self-signed one, which this client refuses.
    let client = client_for(&gw, &pki.ca_pem, "other.test", None);
    let err = client.get(format!("https://other.test:{}/", gw.proxy_ssl.port())).send().await.unwrap_err();
    assert!(format!("{err:?}").to_lowercase().contains("certificate"), "{err:?}");
    // Route snis: only requests for *.wild.test reach this route over HTTPS.
    let wild_client = client_for(&gw, &pki.ca_pem, "a.wild.test", None);
    let r = wild_client.get(format!("https://a.wild.test:{}/sni-only", gw.proxy_ssl.port())).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["path"], "/");
    let api_client = client_for(&gw, &pki.ca_pem, "api.test", None);
    let r = api_client.get(format!("https://api.test:{}/sni-only", gw.proxy_ssl.port())).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["path"], "/sni-only", "routed by the catch-all route instead");
    // HTTP/1.1 when the client only offers it.
    let h1 = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap()])
        .resolve("api.test", gw.proxy_ssl)
        .build()
        .unwrap();
    let r = h1.get(format!("https://api.test:{}/", gw.proxy_ssl.port())).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
}

#[tokio::test]
async fn tls_1_2_is_the_minimum() {
    let pki = TestPki::new("Test CA");
    let leaf = pki.server(&["api.test"]);
    let config = format!("_format_version: \"3.0\"\ncertificates:\n{}", certificate(&leaf, &["api.test"]));
    let gw = GatewayProcess::start(&config);
    let handshake = |version: &str| {
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &gw.proxy_ssl.to_string(), "-servername", "api.test", version])
            .args(["-cipher", "DEFAULT@SECLEVEL=0"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("this test needs the openssl command");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let tls12 = handshake("-tls1_2");
    assert!(tls12.contains("Protocol  : TLSv1.2") || tls12.contains("TLSv1.2"), "{tls12}");
    assert!(
        tls12.contains("CN = api.test") || tls12.contains("CN=api.test") || tls12.contains("Verification"),
        "{tls12}"
    );
    let tls11 = handshake("-tls1_1");
    // The client did offer TLS 1.1 (SECLEVEL=0), and the server answered with an alert.
    assert!(
        tls11.contains("SSL alert number") && tls11.contains("Cipher is (NONE)"),
        "the server must refuse TLS 1.1:\n{tls11}"
    );
}

#[tokio::test]
async fn mtls_auth_maps_client_certificates_to_consumers() {
    let upstream = Upstream::start("echo").await;
    let pki = TestPki::new("Clients CA");
    let other = TestPki::new("Someone else's CA");
    let server = pki.server(&["api.test"]);
    let ca_id = "3f1c1a8e-7d51-4c1f-9a0e-0c5f7f1b2a31";
    let config = format!(
        r#"
_format_version: "3.0"
ca_certificates:
- id: {ca_id}
  cert: |
{}certificates:
{}services:
- name: echo
  url: {}
  routes:
  - name: r
    paths: [/]
    plugins:
    - name: mtls-auth
      config: {{ca_certificates: [{ca_id}]}}
consumers:
- username: alice
- username: robert
  custom_id: bob.clients.test
"#,
        yaml_block(&pki.ca_pem, 4),
        certificate(&server, &["api.test"]),
        upstream.url()
    );
    let gw = GatewayProcess::start(&config);
    let url = format!("https://api.test:{}/", gw.proxy_ssl.port());
    let table = [
        (Some(pki.client("alice", &[])), 200, Some("alice")),
        (Some(pki.client("unknown", &["bob.clients.test"])), 200, Some("robert")),
        (Some(pki.client("nobody", &[])), 401, None),
        (Some(other.client("alice", &[])), 401, None),
        (None, 401, None),
    ];
    for (i, (identity, status, consumer)) in table.iter().enumerate() {
        let client = client_for(&gw, &pki.ca_pem, "api.test", identity.as_ref());
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), *status, "case {i}");
        let body: Value = r.json().await.unwrap();
        match consumer {
            Some(name) => assert_eq!(body["headers"]["x-consumer-username"], *name, "case {i}"),
            None => {
                let want = if identity.is_some() {
                    "TLS certificate failed verification"
                } else {
                    "No required TLS certificate was sent"
                };
                assert_eq!(body["message"], want, "case {i}");
            }
        }
    }
    // Plain HTTP has no certificate at all.
    let r = common::http_client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "No required TLS certificate was sent");
}
