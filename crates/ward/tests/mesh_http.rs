//! The proxies' HTTP plumbing as applications and clients see it: the caller identity header
//! cannot be forged under another spelling, strict HTTP/2 applications accept what the
//! inbound sends them, an HTTP/2 header block left open is cut off by the header timeout, and
//! SIGINT drains like SIGTERM.

mod common;

use std::os::unix::process::CommandExt;
use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{ControlPlane, apps, free_port, mesh::Proxy};
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MESH: &str = "type: Mesh\nname: lab\nmtls:\n  enabledBackend: ca\n  backends:\n  - name: ca\n    type: builtin\n---\ntype: MeshTrafficPermission\nmesh: lab\nname: clients-call-all\nspec:\n  targetRef: {kind: Mesh}\n  from:\n  - targetRef: {kind: MeshService, name: client}\n    default: {action: Allow}\n";

/// A Dataplane of `service` in `mesh` with one inbound in front of the application on `app`.
fn server_dataplane(mesh: &str, service: &str, protocol: &str, app: u16) -> String {
    server_dataplane_on(mesh, service, protocol, app, free_port())
}

/// The same, with the inbound on `port`.
fn server_dataplane_on(mesh: &str, service: &str, protocol: &str, app: u16, port: u16) -> String {
    format!(
        "type: Dataplane\nmesh: {mesh}\nname: {service}-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {port}\n    servicePort: {app}\n    tags: {{kuma.io/service: {service}, kuma.io/protocol: {protocol}}}\n"
    )
}

/// The `client` Dataplane named `name`, with an outbound to each of `services`; their ports.
fn client_dataplane(name: &str, services: &[&'static str]) -> (String, Vec<(&'static str, u16)>) {
    let outbound: Vec<(&str, u16)> = services.iter().map(|s| (*s, free_port())).collect();
    let lines: String =
        outbound.iter().map(|(s, p)| format!("  - port: {p}\n    tags: {{kuma.io/service: {s}}}\n")).collect();
    let yaml = format!(
        "type: Dataplane\nmesh: lab\nname: {name}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    tags: {{kuma.io/service: client}}\n  outbound:\n{lines}",
        free_port()
    );
    (yaml, outbound)
}

fn wait_all_ready(proxies: &[&Proxy]) {
    for p in proxies {
        p.wait_ready();
    }
}

/// The request headers the `web` application saw, sent through the outbound on `port`.
async fn seen_by_app(port: u16, extra: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    let mut request = common::http_client().get(format!("http://127.0.0.1:{port}/"));
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["headers"].as_object().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_caller_identity_cannot_be_forged_under_another_spelling() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.apply(MESH);
    let app = apps::http_echo(([127, 0, 0, 1], free_port()).into(), "web").await;
    let allow = ["--allow-underscores-in-headers"];
    let web = cp.spawn_proxy(root.path(), "web-1", &server_dataplane("lab", "web", "http", app.address.port()), &allow);
    let (strict_yaml, strict_out) = client_dataplane("client-1", &["web"]);
    let strict = cp.spawn_proxy(root.path(), "client-1", &strict_yaml, &[]);
    let (open_yaml, open_out) = client_dataplane("client-2", &["web"]);
    let open = cp.spawn_proxy(root.path(), "client-2", &open_yaml, &allow);
    tokio::task::block_in_place(|| wait_all_ready(&[&web, &strict, &open]));

    let forged = [
        ("x_ward_peer_identity", "spiffe://lab/admin"),
        ("X-Ward_Peer-Identity", "spiffe://lab/admin"),
        ("x_custom_tag", "kept only when allowed"),
    ];
    // By default (client-1's outbound) no header name with '_' goes on.
    let headers = seen_by_app(strict_out[0].1, &forged).await;
    let underscored: Vec<&String> = headers.keys().filter(|k| k.contains('_')).collect();
    assert!(underscored.is_empty(), "{underscored:?}");
    assert_eq!(headers["x-ward-peer-identity"], "spiffe://lab/client");

    // Allowed on both proxies: other names with '_' pass, the identity header under no spelling but Ward's.
    let headers = seen_by_app(open_out[0].1, &forged).await;
    assert_eq!(headers.get("x_custom_tag").and_then(Value::as_str), Some("kept only when allowed"));
    let spellings: Vec<&String> =
        headers.keys().filter(|k| k.replace('_', "-").eq_ignore_ascii_case("x-ward-peer-identity")).collect();
    assert_eq!(spellings, ["x-ward-peer-identity"], "only the proxy's own spelling reaches the application");
    assert_eq!(headers["x-ward-peer-identity"], "spiffe://lab/client");
}

/// A strict HTTP/2 server (hypercorn, on python-h2 with header validation) answering with the
/// Host it was given; killed on drop.
struct Hypercorn {
    child: Child,
    port: u16,
}

/// What the strict server runs: every request gets `host=<Host> version=<HTTP version>`.
const ASGI_APP: &str = r#"
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    host = dict(scope["headers"]).get(b"host", b"")
    body = b"host=" + host + b" version=" + scope["http_version"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
"#;

impl Hypercorn {
    fn start(dir: &Path) -> Self {
        let available = Command::new("python3").args(["-c", "import hypercorn"]).status().is_ok_and(|s| s.success());
        assert!(available, "this test needs hypercorn: pip install hypercorn (.ci/run does so)");
        std::fs::write(dir.join("strict_app.py"), ASGI_APP).unwrap();
        let port = free_port();
        // A process group of its own: hypercorn's worker processes go with it on drop.
        let child = Command::new("python3")
            .args(["-m", "hypercorn", "--bind", &format!("127.0.0.1:{port}"), "strict_app:app"])
            .process_group(0)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hypercorn");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "hypercorn listening on {port} within 20s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Hypercorn { child, port }
    }
}

impl Drop for Hypercorn {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Runs h2load (HTTP/2 prior knowledge) against `port`: its report.
fn h2load(port: u16) -> String {
    let output = Command::new("h2load")
        .args(["-n", "200", "-c", "4", "-m", "10", "-T", "30", &format!("http://127.0.0.1:{port}/")])
        .output()
        .expect("this test needs h2load: apt-get install nghttp2-client (.ci/run does so)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_http2_applications_accept_what_the_inbound_sends() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.apply(MESH);
    let (h2_app, grpc_app) = (Hypercorn::start(root.path()), Hypercorn::start(root.path()));
    let h2 = cp.spawn_proxy(root.path(), "h2app-1", &server_dataplane("lab", "h2app", "http2", h2_app.port), &[]);
    let grpc =
        cp.spawn_proxy(root.path(), "grpcapp-1", &server_dataplane("lab", "grpcapp", "grpc", grpc_app.port), &[]);
    let (client_yaml, outbound) = client_dataplane("client-1", &["h2app", "grpcapp"]);
    let client = cp.spawn_proxy(root.path(), "client-1", &client_yaml, &[]);
    tokio::task::block_in_place(|| wait_all_ready(&[&h2, &grpc, &client]));

    let h2c = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    for (service, port) in outbound {
        let report = tokio::task::block_in_place(|| h2load(port));
        assert!(
            report.contains("200 succeeded") && report.contains("status codes: 200 2xx"),
            "{service}: every request of h2load is answered by the strict server:\n{report}\n{}",
            h2.log()
        );
        // The application sees the caller's Host (once, as :authority).
        let response = h2c
            .get(format!("http://127.0.0.1:{port}/where"))
            .header("host", "shop.example")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{service}: {e}"));
        assert_eq!(response.status(), 200, "{service}");
        assert_eq!(response.text().await.unwrap(), "host=shop.example version=2", "{service}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_http2_header_block_is_cut_off_by_the_header_timeout() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.apply("type: Mesh\nname: open\n");
    let app = apps::http_echo(([127, 0, 0, 1], free_port()).into(), "plain").await;
    let inbound = free_port();
    let yaml = server_dataplane_on("open", "plain", "http2", app.address.port(), inbound);
    let proxy = cp.spawn_proxy(root.path(), "plain-1", &yaml, &["--header-read-timeout", "1s"]);
    tokio::task::block_in_place(|| proxy.wait_ready());
    let address: SocketAddr = ([127, 0, 0, 1], inbound).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(address).await.is_err() {
        assert!(Instant::now() < deadline, "the inbound listens");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The preface, an empty SETTINGS frame, and HEADERS on stream 1 without END_HEADERS.
    let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    tcp.write_all(
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x01\x01\x00\x00\x00\x00\x01\x82",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => break None,
        }
    };
    let closed = closed.expect("the connection is closed within 30 s (the idle timeout is 300 s)");
    assert!(closed < Duration::from_secs(10), "closed after {closed:?}; the header timeout is 1 s");

    // A well-formed HTTP/2 request on a new connection is still served.
    let h2c = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    assert_eq!(h2c.get(format!("http://{address}/")).send().await.unwrap().status(), 200);
}

/// An application that answers at once, but holds `/slow` for 5 s after telling `arrived`.
async fn slow_app(port: u16, arrived: std::sync::Arc<tokio::sync::Notify>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else { continue };
        let arrived = arrived.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            if head.starts_with(b"GET /slow ") {
                arrived.notify_one();
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigint_drains_in_flight_requests_then_exits() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.apply(MESH);
    // The application says when the slow request has reached it: only then is it in flight
    // through both proxies (an open connection alone may not have sent its request yet).
    let (app_port, arrived) = (free_port(), std::sync::Arc::new(tokio::sync::Notify::new()));
    let _app = tokio::spawn(slow_app(app_port, arrived.clone()));
    let web = cp.spawn_proxy(root.path(), "web-1", &server_dataplane("lab", "web", "http", app_port), &[]);
    let (yaml, outbound) = client_dataplane("client-1", &["web"]);
    let mut client = cp.spawn_proxy(root.path(), "client-1", &yaml, &["--shutdown-grace", "20s"]);
    tokio::task::block_in_place(|| wait_all_ready(&[&web, &client]));
    let port = outbound[0].1;

    let slow = tokio::spawn(async move {
        // Ready proxies may not know each other yet: retry until the request reaches web.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let response = common::http_client().get(format!("http://127.0.0.1:{port}/slow")).send().await;
            match response {
                Ok(r) if r.status() == 503 && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    });
    let reached = tokio::time::timeout(Duration::from_secs(10), arrived.notified()).await;
    assert!(reached.is_ok(), "the slow request reaches the application:\n{}", client.log());
    let deadline = Instant::now() + Duration::from_secs(10);
    let signalled = Instant::now();
    client.signal(Signal::SIGINT);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "new connections are refused once draining");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!slow.is_finished(), "the listener closed while the request was still open");
    assert_eq!(slow.await.unwrap().expect("the in-flight request completes").status(), 200);
    let exit = tokio::task::block_in_place(|| client.wait_exit(Duration::from_secs(20)));
    assert!(exit.is_some_and(|s| s.success()), "exits cleanly after draining: {exit:?}\n{}", client.log());
    assert!(signalled.elapsed() < Duration::from_secs(20), "within the grace period");
}
