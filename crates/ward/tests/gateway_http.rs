//! The gateway's HTTP plumbing as clients see it: the headers the gateway sets cannot be
//! forged under another spelling, a flood of connections that never finish their headers
//! leaves room for other clients, and SIGTERM or SIGINT lets open requests finish before the
//! process exits.

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{GatewayProcess, TestPki, Upstream, yaml_block};
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A service echoing requests at `/`, behind key-auth; consumer alice holds `alice-key`; and
/// the HTTPS listener's certificate for `api.test`, when given.
fn config(upstream: &str, tls: Option<&common::Leaf>) -> String {
    let certificates = tls.map_or_else(String::new, |leaf| {
        format!(
            "certificates:\n- cert: |\n{}  key: |\n{}  snis: [api.test]\n",
            yaml_block(&leaf.cert, 4),
            yaml_block(&leaf.key, 4)
        )
    });
    format!(
        r#"
_format_version: "3.0"
{certificates}services:
- name: echo
  url: {upstream}
  routes:
  - name: all
    paths: [/]
    plugins:
    - name: key-auth
consumers:
- username: alice
  keyauth_credentials: [{{key: alice-key}}]
"#
    )
}

/// The headers the upstream saw for a request carrying `extra` headers as alice.
async fn seen_by_upstream(gw: &GatewayProcess, extra: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    let mut request = common::http_client().post(gw.url("/")).header("apikey", "alice-key").body("hello");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", gw.log());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["body"], "hello", "the body is framed by Content-Length alone");
    body["headers"].as_object().unwrap().clone()
}

/// Forgeries an application that reads `_` as `-` would take for the gateway's own headers.
const FORGED: [(&str, &str); 5] = [
    ("X_Consumer_Username", "root"),
    ("x_consumer-id", "00000000-0000-0000-0000-000000000000"),
    ("X_Anonymous_Consumer", "false"),
    ("X-Authenticated_Groups", "admin"),
    ("Transfer_Encoding", "chunked"),
];

#[tokio::test]
async fn headers_with_underscores_never_pass_as_the_gateways_own() {
    let upstream = Upstream::start("echo").await;
    let mut sent = FORGED.to_vec();
    sent.push(("x_custom_tag", "kept only when allowed"));

    let strict = GatewayProcess::start(&config(&upstream.url(), None));
    let headers = seen_by_upstream(&strict, &sent).await;
    let underscored: Vec<&String> = headers.keys().filter(|k| k.contains('_')).collect();
    assert!(underscored.is_empty(), "by default no header name with '_' reaches the service: {underscored:?}");
    assert_eq!(headers["x-consumer-username"], "alice");

    let open = GatewayProcess::start_with(&config(&upstream.url(), None), &["--allow-underscores-in-headers"]);
    let headers = seen_by_upstream(&open, &sent).await;
    assert_eq!(headers.get("x_custom_tag").and_then(Value::as_str), Some("kept only when allowed"));
    let folded = |name: &str| name.replace('_', "-");
    let forged: Vec<&String> = headers
        .keys()
        .filter(|k| k.contains('_') && FORGED.iter().any(|(f, _)| folded(&f.to_ascii_lowercase()) == folded(k)))
        .collect();
    assert!(forged.is_empty(), "the gateway's headers are cleared under every spelling: {forged:?}");
    assert_eq!(headers["x-consumer-username"], "alice");
    assert!(!headers.contains_key("x-authenticated-groups"));
}

/// The client preface of HTTP/2, an empty SETTINGS frame, and a HEADERS frame on stream 1
/// without END_HEADERS: a header block that is never finished.
const OPEN_HEADER_BLOCK: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x01\x01\x00\x00\x00\x00\x01\x82";

/// A TLS client offering only `h2`, trusting `ca_pem`.
fn h2_tls(ca_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// How one attacking connection ended: whether the gateway took it (its TLS handshake, or its
/// first bytes, went through), and how long after that the gateway closed it.
#[derive(Debug)]
struct Attack {
    taken: bool,
    closed_after: Option<Duration>,
}

/// Counts the attacking connections whose fate is known: taken by the gateway or not.
type Settled = Arc<AtomicUsize>;

/// Holds the connection open until the server closes it (or 60 s).
async fn hold<S: tokio::io::AsyncRead + Unpin>(mut stream: S) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

/// A TLS connection that opens an HTTP/2 header block and never ends it.
async fn open_header_block(address: SocketAddr, tls: tokio_rustls::TlsConnector, settled: Settled) -> Attack {
    let opened = async {
        let tcp = tokio::net::TcpStream::connect(address).await.ok()?;
        let name = rustls_pki_types::ServerName::try_from("api.test").unwrap();
        let mut stream = tokio::time::timeout(Duration::from_secs(10), tls.connect(name, tcp)).await.ok()?.ok()?;
        stream.write_all(OPEN_HEADER_BLOCK).await.ok()?;
        Some(stream)
    };
    let opened = opened.await;
    settled.fetch_add(1, Ordering::SeqCst);
    match opened {
        Some(stream) => Attack { taken: true, closed_after: hold(stream).await },
        None => Attack { taken: false, closed_after: None },
    }
}

/// An HTTP/1 connection that starts a request head and never ends it (slowloris).
async fn slow_head(address: SocketAddr, settled: Settled) -> Attack {
    let opened = async {
        let mut tcp = tokio::net::TcpStream::connect(address).await.ok()?;
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: api.test\r\nX-Slow: ").await.ok()?;
        Some(tcp)
    };
    let Some(tcp) = opened.await else {
        settled.fetch_add(1, Ordering::SeqCst);
        return Attack { taken: false, closed_after: None };
    };
    // A connection beyond a cap is closed at once; one the gateway took stays open.
    let mut first = [0u8; 1];
    let refused = tokio::time::timeout(Duration::from_millis(200), tcp.peek(&mut first)).await;
    settled.fetch_add(1, Ordering::SeqCst);
    Attack { taken: !matches!(refused, Ok(Ok(0) | Err(_))), closed_after: hold(tcp).await }
}

/// Sends one request as alice from `source`, on a connection of its own; the status and the time taken.
async fn served_from(gw: &GatewayProcess, source: IpAddr) -> (u16, Duration) {
    let client =
        reqwest::Client::builder().no_proxy().local_address(source).timeout(Duration::from_secs(5)).build().unwrap();
    let started = Instant::now();
    let status = match client.get(gw.url("/")).header("apikey", "alice-key").send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    };
    (status, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_flood_leaves_room_for_other_clients() {
    const FLOOD: usize = 300;
    const PER_CLIENT: usize = 60;
    let upstream = Upstream::start("echo").await;
    let pki = TestPki::new("Test CA");
    let leaf = pki.server(&["api.test"]);
    let per_client = PER_CLIENT.to_string();
    let gw = GatewayProcess::start_with(
        &config(&upstream.url(), Some(&leaf)),
        &["--max-connections-per-client", &per_client, "--header-read-timeout", "5s", "--max-connections", "1000"],
    );
    // Fewer file descriptors than the attack has connections, as on a 1,024-fd host under a
    // larger flood (the listener cap is deliberately above it).
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &gw.pid().to_string(), "--nofile=256:256"])
        .status()
        .expect("this test needs prlimit (util-linux)");
    assert!(limited.success());

    // From 127.0.0.1: HTTP/2 over TLS with a header block never ended, and HTTP/1 slowloris.
    let tls = h2_tls(&pki.ca_pem);
    let mut attacks = tokio::task::JoinSet::new();
    let settled = Settled::default();
    for _ in 0..FLOOD {
        attacks.spawn(open_header_block(gw.proxy_ssl, tls.clone(), settled.clone()));
        attacks.spawn(slow_head(gw.proxy, settled.clone()));
    }
    // Until each attacking connection is taken or turned away (a gateway out of descriptors
    // leaves some hanging: then the attack is in full swing after 15 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    while settled.load(Ordering::SeqCst) < 2 * FLOOD && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status: Value =
            common::http_client().get(gw.admin_url("/status")).send().await.unwrap().json().await.unwrap();
        if status["server"]["connections_active"].as_u64().unwrap_or(0) >= 2 * PER_CLIENT as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "the attack holds its share of connections: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Another client is served at once while the attack holds its connections.
    let other: IpAddr = [127, 0, 0, 2].into();
    for _ in 0..5 {
        let (status, took) = served_from(&gw, other).await;
        assert_eq!(status, 200, "a client from another address is served during the attack\n{}", gw.log());
        assert!(took < Duration::from_millis(100), "served within 100 ms during the attack, took {took:?}");
    }

    // The attacking connections the gateway took are closed by the header timeout (5 s), not
    // held until some idle timeout; beyond the per-client cap they were closed at once.
    let results = attacks.join_all().await;
    let taken: Vec<&Attack> = results.iter().filter(|a| a.taken).collect();
    assert!(taken.len() >= 2 * PER_CLIENT, "{} attacking connections were taken", taken.len());
    for attack in taken {
        let closed = attack.closed_after.expect("every attacking connection is closed within 60 s");
        assert!(closed < Duration::from_secs(20), "closed after {closed:?}, the header timeout is 5 s");
    }
    // And the gateway still serves the attacker's address once the flood is over.
    assert_eq!(served_from(&gw, [127, 0, 0, 1].into()).await.0, 200);
}

/// Starts a request the upstream answers after `delay`, and waits until the upstream has it.
async fn slow_request(
    gw: &GatewayProcess,
    upstream: &Upstream,
    delay: Duration,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let before = upstream.count();
    let request = common::http_client()
        .get(gw.url("/slow"))
        .header("apikey", "alice-key")
        .header("x-echo-delay-ms", delay.as_millis().to_string())
        .send();
    let request = tokio::spawn(request);
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.count() == before {
        assert!(Instant::now() < deadline, "the slow request reaches the upstream");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_and_sigint_let_open_requests_finish_then_exit() {
    let upstream = Upstream::start("echo").await;
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut gw = GatewayProcess::start_with(&config(&upstream.url(), None), &["--shutdown-grace", "20s"]);
        let slow = slow_request(&gw, &upstream, Duration::from_millis(1500)).await;
        let signalled = Instant::now();
        gw.signal(signal);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(gw.proxy).is_ok() {
            assert!(Instant::now() < deadline, "{signal}: new connections are refused once draining");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!slow.is_finished(), "{signal}: the listener closed while the request was still open");
        let response = slow.await.unwrap().unwrap_or_else(|e| panic!("{signal}: the open request finishes: {e}"));
        assert_eq!(response.status(), 200, "{signal}");
        let exit = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(20)));
        assert!(exit.is_some_and(|s| s.success()), "{signal}: exits cleanly: {exit:?}\n{}", gw.log());
        assert!(signalled.elapsed() < Duration::from_secs(20), "{signal}: within the grace period");
    }
}
