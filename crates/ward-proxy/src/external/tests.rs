use std::sync::Arc;

use rustls::{ServerConfig, SupportedProtocolVersion, server::WebPkiClientVerifier};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};
use ward_proto::discovery::{ExternalEndpoint, SanMatch as ProtoSan};

use super::*;

/// A test CA and the leaf certificates it signs.
struct Pki {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
}

/// A certificate and its key, in PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        Pki { ca_pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) }
    }

    /// A leaf for `names` (DNS or IP SANs) and `uris` (URI SANs).
    fn leaf(&self, names: &[&str], uris: &[&str]) -> Leaf {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        for uri in uris {
            params.subject_alt_names.push(rcgen::SanType::URI(uri.to_string().try_into().unwrap()));
        }
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert: cert.pem(), key: key.serialize_pem() }
    }
}

fn self_signed(names: &[&str]) -> Leaf {
    let c = rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    Leaf { cert: c.cert.pem(), key: c.signing_key.serialize_pem() }
}

/// What the server saw of a completed handshake.
#[derive(Debug)]
struct Seen {
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
    client_cert: Option<Vec<u8>>,
    version: Option<rustls::ProtocolVersion>,
}

/// A TLS echo server on 127.0.0.1 presenting `leaf`, speaking `versions`, requiring a client
/// certificate from `client_ca` when given; reports each completed handshake.
async fn tls_server(
    leaf: &Leaf,
    versions: &[&'static SupportedProtocolVersion],
    client_ca: Option<&str>,
) -> (u16, mpsc::UnboundedReceiver<Seen>) {
    let provider = ward_http::tls::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions).unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca).unwrap() {
                roots.add(cert).unwrap();
            }
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap(),
            )
        }
    };
    let chain = certificates(&leaf.cert).unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let conn = tls.get_ref().1;
                let _ = tx.send(Seen {
                    sni: conn.server_name().map(str::to_string),
                    alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                    client_cert: conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()),
                    version: conn.protocol_version(),
                });
                let (mut r, mut w) = tokio::io::split(tls);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (port, rx)
}

/// A port nothing listens on (a listener bound, then closed).
async fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

fn service(endpoints: &[(&str, u16, u32)], tls: Option<ExternalTls>) -> ExternalService {
    ExternalService {
        name: "pay".into(),
        port: 443,
        protocol: "tcp".into(),
        endpoints: endpoints
            .iter()
            .map(|(address, port, priority)| ExternalEndpoint {
                address: address.to_string(),
                port: u32::from(*port),
                priority: *priority,
            })
            .collect(),
        tls,
        ..Default::default()
    }
}

fn tls(ca_pem: &str, server_name: &str, mode: &str) -> ExternalTls {
    ExternalTls { ca_cert_pem: ca_pem.into(), server_name: server_name.into(), mode: mode.into(), ..Default::default() }
}

/// Connects to `127.0.0.1:port` of a service with `tls`.
async fn attempt(port: u16, tls: ExternalTls) -> Result<(ExternalStream, SocketAddr), ConnectError> {
    let external = External::from_proto(&service(&[("127.0.0.1", port, 0)], Some(tls))).unwrap();
    connect(&external, Duration::from_secs(5)).await
}

async fn echo(stream: &mut ExternalStream) {
    stream.write_all(b"ping").await.unwrap();
    let mut buf = [0; 4];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

fn refused(result: Result<(ExternalStream, SocketAddr), ConnectError>, expected: &str) {
    match result {
        Ok(_) => panic!("connected; expected a refusal with '{expected}'"),
        Err(e) => assert!(e.to_string().contains(expected), "{e} (expected '{expected}')"),
    }
}

#[tokio::test]
async fn secured_with_the_right_ca_and_name_connects() {
    let pki = Pki::new("pay ca");
    let (port, mut seen) = tls_server(&pki.leaf(&["pay.example"], &[]), rustls::ALL_VERSIONS, None).await;
    let (mut stream, address) = attempt(port, tls(&pki.ca_pem, "pay.example", "")).await.unwrap();
    assert_eq!(address, SocketAddr::from(([127, 0, 0, 1], port)));
    echo(&mut stream).await;
    let seen = seen.recv().await.unwrap();
    assert_eq!(seen.sni.as_deref(), Some("pay.example"));
    assert_eq!(seen.alpn, None, "tcp offers no ALPN");
    assert_eq!(seen.version, Some(rustls::ProtocolVersion::TLSv1_3));
}

#[tokio::test]
async fn an_ip_endpoint_without_server_name_sends_no_sni_and_checks_the_ip() {
    let pki = Pki::new("pay ca");
    let (port, mut seen) = tls_server(&pki.leaf(&["127.0.0.1"], &[]), rustls::ALL_VERSIONS, None).await;
    let (mut stream, _) = attempt(port, tls(&pki.ca_pem, "", "Secured")).await.unwrap();
    echo(&mut stream).await;
    assert_eq!(seen.recv().await.unwrap().sni, None);
    let (port, _) = tls_server(&pki.leaf(&["pay.example"], &[]), rustls::ALL_VERSIONS, None).await;
    refused(attempt(port, tls(&pki.ca_pem, "", "Secured")).await, "not valid for name");
}

#[tokio::test]
async fn a_dns_endpoint_is_the_sni_and_name_and_every_address_is_tried() {
    let pki = Pki::new("pay ca");
    let (port, mut seen) = tls_server(&pki.leaf(&["localhost"], &[]), rustls::ALL_VERSIONS, None).await;
    // localhost may resolve to ::1 first, where nothing listens: the next address is tried.
    let external = External::from_proto(&service(&[("localhost", port, 0)], Some(tls(&pki.ca_pem, "", "")))).unwrap();
    let (mut stream, address) = connect(&external, Duration::from_secs(5)).await.unwrap();
    assert_eq!(address, SocketAddr::from(([127, 0, 0, 1], port)));
    echo(&mut stream).await;
    assert_eq!(seen.recv().await.unwrap().sni.as_deref(), Some("localhost"));
}

#[tokio::test]
async fn an_unknown_ca_is_refused_unless_skipped() {
    let (pki, other) = (Pki::new("pay ca"), Pki::new("other ca"));
    let (port, _) = tls_server(&pki.leaf(&["pay.example"], &[]), rustls::ALL_VERSIONS, None).await;
    for mode in ["Secured", "SkipSAN"] {
        refused(attempt(port, tls(&other.ca_pem, "pay.example", mode)).await, "tls to 127.0.0.1");
        refused(attempt(port, tls(&other.ca_pem, "pay.example", mode)).await, "UnknownIssuer");
    }
    for mode in ["SkipCA", "SkipAll"] {
        let (mut stream, _) = attempt(port, tls(&other.ca_pem, "pay.example", mode)).await.unwrap();
        echo(&mut stream).await;
    }
}

#[tokio::test]
async fn a_wrong_name_is_refused_under_secured_and_skip_ca_only() {
    let pki = Pki::new("pay ca");
    let (port, _) = tls_server(&pki.leaf(&["other.example"], &[]), rustls::ALL_VERSIONS, None).await;
    for mode in ["Secured", "SkipCA"] {
        refused(attempt(port, tls(&pki.ca_pem, "pay.example", mode)).await, "not valid for name");
    }
    for mode in ["SkipSAN", "SkipAll"] {
        let (mut stream, _) = attempt(port, tls(&pki.ca_pem, "pay.example", mode)).await.unwrap();
        echo(&mut stream).await;
    }
}

#[tokio::test]
async fn skip_all_accepts_a_self_signed_certificate() {
    let (port, _) = tls_server(&self_signed(&["whatever.example"]), rustls::ALL_VERSIONS, None).await;
    let (mut stream, _) = attempt(port, tls("", "pay.example", "SkipAll")).await.unwrap();
    echo(&mut stream).await;
    let unrelated = Pki::new("unrelated");
    refused(attempt(port, tls(&unrelated.ca_pem, "pay.example", "SkipCA")).await, "not valid for name");
    let (mut stream, _) = attempt(port, tls(&unrelated.ca_pem, "whatever.example", "SkipCA")).await.unwrap();
    echo(&mut stream).await;
}

#[tokio::test]
async fn subject_alt_names_match_exactly_or_by_prefix() {
    let pki = Pki::new("pay ca");
    let spiffe = "spiffe://pay.example/ns/default/sa/api";
    let (port, _) = tls_server(&pki.leaf(&["api.pay.example"], &[spiffe]), rustls::ALL_VERSIONS, None).await;
    let with_sans = |mode: &str, sans: &[(&str, &str)]| {
        let mut t = tls(&pki.ca_pem, "nomatch.example", mode);
        t.subject_alt_names =
            sans.iter().map(|(t, v)| ProtoSan { r#type: t.to_string(), value: v.to_string() }).collect();
        t
    };
    // The SANs replace the server name's check.
    for sans in [
        &[("Exact", spiffe)][..],
        &[("", spiffe)],
        &[("Prefix", "spiffe://pay.example/")],
        &[("Exact", "api.pay.example")],
        &[("Prefix", "api.")],
        &[("Exact", "spiffe://other/x"), ("Prefix", "spiffe://pay.example/ns/")],
    ] {
        let (mut stream, _) = attempt(port, with_sans("Secured", sans)).await.unwrap();
        echo(&mut stream).await;
    }
    for sans in [
        &[("Exact", "spiffe://pay.example/ns/default/sa")][..],
        &[("Prefix", "spiffe://other/")],
        &[("Exact", "pay.example")],
        &[("Prefix", "pay.")],
    ] {
        refused(attempt(port, with_sans("Secured", sans)).await, "no SAN of the certificate");
        refused(attempt(port, with_sans("SkipCA", sans)).await, "no SAN of the certificate");
        let (mut stream, _) = attempt(port, with_sans("SkipSAN", sans)).await.unwrap();
        echo(&mut stream).await;
    }
}

#[tokio::test]
async fn versions_follow_min_and_max() {
    let pki = Pki::new("pay ca");
    let leaf = pki.leaf(&["pay.example"], &[]);
    let (tls12_only, _) = tls_server(&leaf, &[&rustls::version::TLS12], None).await;
    let mut t = tls(&pki.ca_pem, "pay.example", "");
    t.min_version = "TLS13".into();
    refused(attempt(tls12_only, t.clone()).await, "tls to 127.0.0.1");
    t.min_version = "TLS11".into();
    let (mut stream, _) = attempt(tls12_only, t.clone()).await.unwrap();
    echo(&mut stream).await;

    let (both, mut seen) = tls_server(&leaf, rustls::ALL_VERSIONS, None).await;
    t.min_version = "".into();
    t.max_version = "TLS12".into();
    let (mut stream, _) = attempt(both, t).await.unwrap();
    echo(&mut stream).await;
    assert_eq!(seen.recv().await.unwrap().version, Some(rustls::ProtocolVersion::TLSv1_2));
}

#[tokio::test]
async fn the_client_certificate_is_presented() {
    let (pki, clients) = (Pki::new("pay ca"), Pki::new("client ca"));
    let (port, mut seen) =
        tls_server(&pki.leaf(&["pay.example"], &[]), rustls::ALL_VERSIONS, Some(&clients.ca_pem)).await;
    let client = clients.leaf(&["web.example"], &[]);
    let mut t = tls(&pki.ca_pem, "pay.example", "");
    t.client_cert_pem = client.cert.clone();
    t.client_key_pem = client.key;
    let (mut stream, _) = attempt(port, t).await.unwrap();
    echo(&mut stream).await;
    let presented = seen.recv().await.unwrap().client_cert.unwrap();
    assert_eq!(presented, certificates(&client.cert).unwrap()[0].to_vec());
}

#[tokio::test]
async fn alpn_is_offered_per_protocol() {
    let pki = Pki::new("pay ca");
    let (port, mut seen) = tls_server(&pki.leaf(&["pay.example"], &[]), rustls::ALL_VERSIONS, None).await;
    for (protocol, expected) in
        [("tcp", None), ("", None), ("http", Some(ALPN_HTTP1)), ("http2", Some(ALPN_H2)), ("grpc", Some(ALPN_H2))]
    {
        let mut p = service(&[("127.0.0.1", port, 0)], Some(tls(&pki.ca_pem, "pay.example", "")));
        p.protocol = protocol.into();
        let external = External::from_proto(&p).unwrap();
        let (mut stream, _) = connect(&external, Duration::from_secs(5)).await.unwrap();
        assert_eq!(stream.alpn_protocol(), expected, "{protocol}");
        echo(&mut stream).await;
        assert_eq!(seen.recv().await.unwrap().alpn.as_deref(), expected, "{protocol}");
    }
}

#[tokio::test]
async fn plain_endpoints_fail_over_by_priority() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let (closed, closed2) = (closed_port().await, closed_port().await);
    // Priority 2's endpoint is never tried, even though it is closed: 1 answers first.
    let p = service(&[("127.0.0.1", closed2, 2), ("127.0.0.1", open, 1), ("127.0.0.1", closed, 0)], None);
    let external = External::from_proto(&p).unwrap();
    for _ in 0..3 {
        let (mut stream, address) = connect(&external, Duration::from_secs(5)).await.unwrap();
        assert_eq!(address.port(), open);
        assert!(matches!(stream, ExternalStream::Plain(_)));
        echo(&mut stream).await;
    }
    // Within a priority, a failed endpoint is skipped whatever the shuffled order.
    let p = service(&[("127.0.0.1", closed, 0), ("127.0.0.1", open, 0)], None);
    for _ in 0..5 {
        let (_, address) = connect(&External::from_proto(&p).unwrap(), Duration::from_secs(5)).await.unwrap();
        assert_eq!(address.port(), open);
    }

    let p = service(&[("127.0.0.1", closed, 0), ("127.0.0.1", closed2, 1)], None);
    let e = connect(&External::from_proto(&p).unwrap(), Duration::from_secs(5)).await.err().unwrap().to_string();
    assert!(e.starts_with("external service pay: no endpoint could be reached: "), "{e}");
    let (first, second) = (format!("tcp to 127.0.0.1:{closed}: "), format!("tcp to 127.0.0.1:{closed2}: "));
    assert!(e.contains(&first) && e.contains(&second), "{e}");
    assert!(e.find(&first) < e.find(&second), "priority 0 is tried first: {e}");
}

#[tokio::test]
async fn tls_failover_reports_the_handshake_failure() {
    let (pki, other) = (Pki::new("pay ca"), Pki::new("other ca"));
    let (bad, _) = tls_server(&other.leaf(&["pay.example"], &[]), rustls::ALL_VERSIONS, None).await;
    let (good, _) = tls_server(&pki.leaf(&["pay.example"], &[]), rustls::ALL_VERSIONS, None).await;
    let t = tls(&pki.ca_pem, "pay.example", "");
    let p = service(&[("127.0.0.1", bad, 0), ("127.0.0.1", good, 1)], Some(t.clone()));
    let (mut stream, address) = connect(&External::from_proto(&p).unwrap(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(address.port(), good);
    echo(&mut stream).await;
    let p = service(&[("127.0.0.1", bad, 0)], Some(t));
    let e = connect(&External::from_proto(&p).unwrap(), Duration::from_secs(5)).await.err().unwrap().to_string();
    assert!(e.contains(&format!("tls to 127.0.0.1:{bad}: invalid peer certificate: UnknownIssuer")), "{e}");
}

#[tokio::test]
async fn a_denied_service_is_not_connected() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut p = service(&[("127.0.0.1", listener.local_addr().unwrap().port(), 0)], None);
    p.denied = "no MeshTrafficPermission allows it".into();
    let external = External::from_proto(&p).unwrap();
    let e = connect(&external, Duration::from_secs(5)).await.err().unwrap();
    assert_eq!(e.to_string(), "external service pay: denied: no MeshTrafficPermission allows it");
    let p = service(&[], None);
    let e = connect(&External::from_proto(&p).unwrap(), Duration::from_secs(5)).await.err().unwrap();
    assert_eq!(e.to_string(), "external service pay: no endpoints");
}

#[test]
fn from_proto_checks_every_field() {
    let pki = Pki::new("pay ca");
    let client = pki.leaf(&["web.example"], &[]);
    let good = || service(&[("pay.example", 443, 0)], Some(tls(&pki.ca_pem, "pay.example", "")));
    let external = External::from_proto(&good()).unwrap();
    assert_eq!(external.endpoints, [Endpoint { host: "pay.example".into(), port: 443, priority: 0 }]);
    assert_eq!(external.protocol, Protocol::Tcp);
    assert_eq!(external.tls.as_ref().unwrap().mode, VerificationMode::Secured);

    fn tls_of(p: &mut ExternalService) -> &mut ExternalTls {
        p.tls.as_mut().unwrap()
    }
    fn check(mut p: ExternalService, change: impl FnOnce(&mut ExternalService), expected: &str) {
        change(&mut p);
        let e = External::from_proto(&p).expect_err("an error");
        assert!(e.starts_with("external service pay: "), "{e}");
        assert!(e.contains(expected), "{e} (expected '{expected}')");
    }
    check(good(), |p| tls_of(p).ca_cert_pem = "garbage".into(), "tls.ca_cert_pem: no certificate in PEM");
    check(
        good(),
        |p| tls_of(p).ca_cert_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
        "tls.ca_cert_pem: ",
    );
    check(good(), |p| tls_of(p).client_cert_pem = client.cert.clone(), "tls.client_key_pem: missing");
    check(good(), |p| tls_of(p).client_key_pem = client.key.clone(), "tls.client_cert_pem: missing");
    check(
        good(),
        |p| {
            tls_of(p).client_cert_pem = "garbage".into();
            tls_of(p).client_key_pem = client.key.clone();
        },
        "tls.client_cert_pem: no certificate in PEM",
    );
    check(
        good(),
        |p| {
            tls_of(p).client_cert_pem = client.cert.clone();
            tls_of(p).client_key_pem = "garbage".into();
        },
        "tls.client_key_pem: no private key in PEM",
    );
    check(
        good(),
        |p| {
            tls_of(p).client_cert_pem = client.cert.clone();
            tls_of(p).client_key_pem = pki.leaf(&["x"], &[]).key;
        },
        "tls.client_key_pem: ",
    );
    check(good(), |p| tls_of(p).mode = "Strict".into(), "tls.mode: 'Strict': must be one of");
    check(good(), |p| tls_of(p).min_version = "TLS14".into(), "tls.min_version: 'TLS14'");
    check(good(), |p| tls_of(p).max_version = "TLS11".into(), "tls.max_version: 'TLS11'");
    check(
        good(),
        |p| {
            tls_of(p).min_version = "TLS13".into();
            tls_of(p).max_version = "TLS12".into();
        },
        "tls.max_version: TLS12 is below min_version TLS13",
    );
    check(good(), |p| tls_of(p).server_name = "not a name".into(), "tls.server_name: 'not a name'");
    check(
        good(),
        |p| tls_of(p).subject_alt_names.push(ProtoSan { r#type: "Regex".into(), value: "x".into() }),
        "tls.subject_alt_names: type 'Regex'",
    );
    check(
        good(),
        |p| tls_of(p).subject_alt_names.push(ProtoSan { r#type: "Exact".into(), value: "".into() }),
        "tls.subject_alt_names: an entry has no value",
    );
    check(good(), |p| p.protocol = "udp".into(), "protocol: 'udp': must be one of");
    check(good(), |p| p.port = 70000, "port: 70000 is not a port");
    check(good(), |p| p.virtual_ip = "240.0.0.x".into(), "virtual_ip: '240.0.0.x' is not an IP address");
    check(good(), |p| p.endpoints[0].address = "bad host!".into(), "endpoints[0]: 'bad host!' is neither");
    check(good(), |p| p.endpoints[0].port = 0, "endpoints[0].port: 0 is not a port");
    // A bad CA is reported whatever the mode, even one that does not use it.
    let mut p = good();
    tls_of(&mut p).mode = "SkipAll".into();
    tls_of(&mut p).ca_cert_pem = "garbage".into();
    assert!(External::from_proto(&p).is_err());
    // A denied service has no TLS to build.
    let mut p = good();
    p.denied = "denied by MeshTrafficPermission".into();
    let external = External::from_proto(&p).unwrap();
    assert!(external.tls.is_none() && external.denied.is_some());
}

#[test]
fn an_empty_host_store_is_an_error() {
    let e = host_roots(rustls_native_certs::CertificateResult::default()).err().unwrap();
    assert_eq!(e.0, "tls.ca_cert_pem");
    assert!(e.1.contains("no trusted root certificates"), "{}", e.1);
}
