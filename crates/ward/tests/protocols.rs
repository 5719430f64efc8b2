//! What passes through the proxies besides plain requests: gRPC (unary and streaming),
//! WebSocket, opaque TCP, a 1 GiB body, detection without a protocol tag; what is refused:
//! smuggling, slow heads, oversized heads; and draining on SIGTERM.

mod common;

use std::{
    collections::HashMap,
    io::{Read, Write},
    time::{Duration, Instant},
};

use common::{ControlPlane, apps, free_port, mesh::Proxy};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Services of the lab, with the protocol tag of their inbound ("" for none).
const SERVICES: [(&str, &str); 4] = [("web", "http"), ("grpc", "grpc"), ("tcp", "tcp"), ("plain", "")];

/// Mesh `lab`: one proxy per service in front of its application, and a `client` member with
/// an outbound to each, allowed to call them all.
struct Lab {
    cp: ControlPlane,
    client: Proxy,
    outbound: HashMap<&'static str, u16>,
    _proxies: Vec<Proxy>,
    _apps: Vec<apps::App>,
    grpc_health: tonic_health::server::HealthReporter,
}

impl Lab {
    async fn start(root: &std::path::Path, client_args: &[&str]) -> Lab {
        let cp = ControlPlane::start(root);
        cp.apply("type: Mesh\nname: lab\nmtls:\n  enabledBackend: ca\n  backends:\n  - name: ca\n    type: builtin\n---\ntype: MeshTrafficPermission\nmesh: lab\nname: client-calls-all\nspec:\n  targetRef: {kind: Mesh}\n  from:\n  - targetRef: {kind: MeshService, name: client}\n    default: {action: Allow}\n");
        let mut proxies = Vec::new();
        let mut apps_running = Vec::new();
        let mut health = None;
        let mut outbound = HashMap::new();
        for (service, protocol) in SERVICES {
            let app: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
            match service {
                "grpc" => {
                    let (app, reporter) = apps::grpc_health(app).await;
                    apps_running.push(app);
                    health = Some(reporter);
                }
                "tcp" => apps_running.push(apps::tcp_echo(app).await),
                _ => apps_running.push(apps::http_echo(app, service).await),
            }
            let tag = if protocol.is_empty() { String::new() } else { format!(", kuma.io/protocol: {protocol}") };
            let yaml = format!(
                "type: Dataplane\nmesh: lab\nname: {service}-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    servicePort: {}\n    tags: {{kuma.io/service: {service}{tag}}}\n",
                free_port(),
                app.port()
            );
            proxies.push(cp.spawn_proxy(root, &format!("{service}-1"), &yaml, &[]));
            outbound.insert(service, free_port());
        }
        let outbounds: String =
            outbound.iter().map(|(s, p)| format!("  - port: {p}\n    tags: {{kuma.io/service: {s}}}\n")).collect();
        let yaml = format!(
            "type: Dataplane\nmesh: lab\nname: client-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    tags: {{kuma.io/service: client}}\n  outbound:\n{outbounds}",
            free_port()
        );
        let client = cp.spawn_proxy(root, "client-1", &yaml, client_args);
        for p in proxies.iter().chain([&client]) {
            tokio::task::block_in_place(|| p.wait_ready());
        }
        Lab { cp, client, outbound, _proxies: proxies, _apps: apps_running, grpc_health: health.unwrap() }
    }

    fn url(&self, service: &str, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.outbound[service])
    }

    /// Raw bytes to the client's outbound for `service`; what comes back before the connection closes.
    fn raw(&self, service: &str, request: &[u8]) -> String {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", self.outbound[service])).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(request).unwrap();
        let mut response = Vec::new();
        let _ = tcp.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    }
}

/// A request body sent chunk by chunk, never held whole.
fn streamed(chunks: impl IntoIterator<Item = bytes::Bytes, IntoIter: Send + Sync + 'static>) -> reqwest::Body {
    let frames = futures_util::stream::iter(chunks).map(|c| Ok::<_, std::io::Error>(hyper::body::Frame::data(c)));
    reqwest::Body::wrap(http_body_util::StreamBody::new(frames))
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_websocket_tcp_and_detection_pass_through() {
    let root = tempfile::tempdir().unwrap();
    let lab = Lab::start(root.path(), &[]).await;

    // gRPC unary and server streaming, trailers and all (a gRPC status arrives in trailers).
    let channel = tonic::transport::Endpoint::from_shared(lab.url("grpc", "")).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest { service: "ward.test".into() };
    let reply = health.check(request.clone()).await.unwrap().into_inner();
    assert_eq!(reply.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    let missing = health.check(tonic_health::pb::HealthCheckRequest { service: "nope".into() }).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "an error status crosses both proxies in the trailers");
    let mut watch = health.watch(request).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, 1);
    lab.grpc_health.set_service_status("ward.test", tonic_health::ServingStatus::NotServing).await;
    assert_eq!(watch.message().await.unwrap().unwrap().status, 2, "the stream carries the next update");

    // WebSocket: the upgrade crosses both proxies and messages echo back.
    let url = format!("ws://127.0.0.1:{}/socket", lab.outbound["web"]);
    let (mut socket, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(response.status(), 101);
    for text in ["hello", "through two proxies"] {
        socket.send(tokio_tungstenite::tungstenite::Message::text(text)).await.unwrap();
        assert_eq!(socket.next().await.unwrap().unwrap().into_text().unwrap(), text);
    }

    // Opaque TCP.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", lab.outbound["tcp"])).await.unwrap();
    tcp.write_all(b"\x00\x01binary, not HTTP\r\n\r\n").await.unwrap();
    let mut echoed = [0u8; 22];
    tcp.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"\x00\x01binary, not HTTP\r\n\r\n");

    // No protocol tag: HTTP is detected on both sides; a chunked body arrives whole.
    let body = streamed(["ab", "cde", "f"].map(bytes::Bytes::from).to_vec());
    let seen: serde_json::Value =
        http().post(lab.url("plain", "/detected")).body(body).send().await.unwrap().json().await.unwrap();
    assert_eq!((seen["service"].as_str(), seen["bodyBytes"].as_u64()), (Some("plain"), Some(6)));

    // A header a client sends to impersonate a caller is replaced by the proxy.
    let seen: serde_json::Value = http()
        .get(lab.url("web", "/"))
        .header("x-ward-peer-identity", "spiffe://lab/admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["headers"]["x-ward-peer-identity"], "spiffe://lab/client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_one_gib_body_streams_without_growing_the_proxies() {
    let root = tempfile::tempdir().unwrap();
    let lab = Lab::start(root.path(), &[]).await;
    const GIB: u64 = 1 << 30;
    let chunk = bytes::Bytes::from(vec![b'w'; 1 << 20]);
    let body = streamed(std::iter::repeat_n(chunk, 1024));
    let seen: serde_json::Value = http()
        .post(lab.url("web", "/upload"))
        .header("content-length", GIB)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["bodyBytes"], GIB);
    // Buffering the body would take over a GiB; streaming it takes a few buffers.
    let peak = lab.client.peak_rss_kib();
    assert!(peak < 256 * 1024, "the client's proxy peaked at {peak} KiB while streaming 1 GiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_tcp_connection_closes_when_its_permission_goes() {
    let root = tempfile::tempdir().unwrap();
    let lab = Lab::start(root.path(), &[]).await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", lab.outbound["tcp"])).await.unwrap();
    tcp.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tcp.read_exact(&mut buf).await.unwrap();
    lab.cp.ward(&["delete", "mtp", "client-calls-all", "-m", "lab"]).ok();
    let closed = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the connection is closed once the caller lost its permission: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smuggling_slow_and_oversized_heads_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let lab =
        Lab::start(root.path(), &["--header-read-timeout", "1s", "--max-header-bytes", "8192", "--max-headers", "50"])
            .await;
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "CL and TE",
            b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: web\r\n\r\n".to_vec(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "TE not chunked",
            b"POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: gzip, identity\r\n\r\nxx".to_vec(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "two lengths",
            b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx".to_vec(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "oversized head",
            format!("GET / HTTP/1.1\r\nHost: web\r\nX-Big: {}\r\n\r\n", "a".repeat(9000)).into_bytes(),
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
        (
            "too many headers",
            format!("GET / HTTP/1.1\r\nHost: web\r\n{}\r\n", (0..60).map(|i| format!("X-{i}: v\r\n")).collect::<String>()).into_bytes(),
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
    ];
    for (what, request, want) in cases {
        let response = tokio::task::block_in_place(|| lab.raw("web", &request));
        assert!(response.starts_with(want), "{what}: {response}");
        assert!(!response.contains("\"service\""), "{what}: the application never saw it: {response}");
    }
    // Slowloris: a head that never ends is cut off by the header read timeout.
    let started = Instant::now();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", lab.outbound["web"])).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nX-Slow: ").unwrap();
    let mut rest = Vec::new();
    let _ = tokio::task::block_in_place(|| tcp.read_to_end(&mut rest));
    assert!(started.elapsed() < Duration::from_secs(15), "the slow client was cut off");
    assert!(
        String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408 Request Timeout"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    // And a well-formed request on a fresh connection still works.
    assert_eq!(http().get(lab.url("web", "/")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let root = tempfile::tempdir().unwrap();
    let mut lab = Lab::start(root.path(), &["--drain-timeout", "20s"]).await;
    let slow = tokio::spawn(http().get(lab.url("web", "/slow?ms=2000")).send());
    tokio::time::sleep(Duration::from_millis(500)).await;
    lab.client.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = std::net::TcpStream::connect(("127.0.0.1", lab.outbound["web"]));
    assert!(refused.is_err(), "no new connections while draining");
    let response = slow.await.unwrap().expect("the in-flight request completes");
    assert_eq!(response.status(), 200);
    let status = tokio::task::block_in_place(|| lab.client.wait_exit(Duration::from_secs(20)));
    assert!(
        status.is_some_and(|s| s.success()),
        "the proxy exits cleanly after draining: {status:?}\n{}",
        lab.client.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_shows_readiness_metrics_and_config_but_no_key() {
    let root = tempfile::tempdir().unwrap();
    let lab = Lab::start(root.path(), &[]).await;
    assert_eq!(http().get(lab.url("web", "/")).send().await.unwrap().status(), 200);
    assert_eq!(lab.client.admin_get("/ready"), (200, "ready\n".to_string()));
    let metrics = lab.client.admin_get("/metrics").1;
    for line in [
        "ward_requests_total{direction=\"outbound\",source=\"spiffe://lab/client\",destination=\"web\",status=\"200\"} 1",
        "ward_request_duration_seconds_count{direction=\"outbound\",destination=\"web\"} 1",
        "ward_certificate_expiry_timestamp_seconds",
        "ward_control_plane_connected 1",
        "ward_open_connections",
    ] {
        assert!(metrics.contains(line), "missing {line}:\n{metrics}");
    }
    let config = lab.client.admin_get("/config").1;
    assert!(config.contains("\"spiffeId\":\"spiffe://lab/client\""), "{config}");
    assert!(!config.contains("PRIVATE KEY"), "no private key is ever shown");
    let web = lab._proxies.iter().find(|p| p.name == "web-1").unwrap();
    let metrics = web.admin_get("/metrics").1;
    assert!(
        metrics.contains("direction=\"inbound\",source=\"spiffe://lab/client\",destination=\"web\",status=\"200\""),
        "{metrics}"
    );
    assert!(metrics.contains("action=\"Allow\",policy=\"MeshTrafficPermission/client-calls-all\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_limits_and_idle_timeouts_hold() {
    let root = tempfile::tempdir().unwrap();
    let lab = Lab::start(root.path(), &["--max-connections", "2", "--idle-timeout", "1s"]).await;
    let port = lab.outbound["tcp"];
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        tcp.read_exact(&mut buf).await.unwrap();
        held.push(tcp);
    }
    let mut third = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = third.write_all(b"hi").await;
    let mut buf = [0u8; 2];
    let refused = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await;
    assert!(matches!(refused, Ok(Ok(0)) | Ok(Err(_))), "beyond the limit a connection is closed at once: {refused:?}");
    // The held connections go idle and are closed after a second.
    for mut tcp in held {
        let closed = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "an idle connection is closed: {closed:?}");
    }
}
